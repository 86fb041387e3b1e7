//! The `SealingPool` custom resource: keeps a number of SealingTasks of one kind in flight, as
//! damocles-worker's sealing threads keep sectors flowing. Types only; the decisions are in
//! [`crate::pool`].

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Deals, PlanKind, SealingTaskSpec, SectorSize, cel};

/// The most tasks a pool keeps in flight: more than any farm's hardware seals at once.
pub const IN_FLIGHT_MAX: u32 = 10_000;

/// Keeps `inFlight` SealingTasks made from `template` running, up to `total`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "damocles.io",
    version = "v1alpha1",
    kind = "SealingPool",
    doc = "Keeps a number of SealingTasks of one plan in flight (damocles-operator)",
    namespaced,
    plural = "sealingpools",
    shortname = "sp",
    category = "damocles",
    status = "SealingPoolStatus",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.template.plan"}"#,
    printcolumn = r#"{"name":"Size","type":"string","jsonPath":".spec.template.sectorSize"}"#,
    printcolumn = r#"{"name":"Want","type":"integer","jsonPath":".spec.inFlight"}"#,
    printcolumn = r#"{"name":"Active","type":"integer","jsonPath":".status.active"}"#,
    printcolumn = r#"{"name":"Paused","type":"integer","jsonPath":".status.paused"}"#,
    printcolumn = r#"{"name":"Finished","type":"integer","jsonPath":".status.finished"}"#,
    printcolumn = r#"{"name":"Created","type":"integer","jsonPath":".status.created"}"#,
    printcolumn = r#"{"name":"Total","type":"integer","jsonPath":".spec.total"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SealingPoolSpec {
    /// What each task of the pool is: its plan, sector size and seal choices. Every task gets its
    /// sector from the manager (AllocateSector for sealer, AllocateSanpUpSector for snapup, the
    /// manager's rebuild and unseal queues for rebuild and unseal). A change applies to the tasks
    /// created after it.
    pub template: TaskTemplate,

    /// How many of the pool's tasks to keep running at once. A task counts until it is Finished
    /// or Aborted; a Paused one counts too (it holds a sector and a workspace) unless
    /// releasePausedSlots is true. 0 creates no more tasks.
    #[schemars(range(max = IN_FLIGHT_MAX))]
    pub in_flight: u32,

    /// How many tasks the pool creates in all, Finished and Aborted ones included (raise it to
    /// replace aborted ones). Omitted: no limit, the pool keeps sealing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub total: Option<u32>,

    /// Create no more tasks; the ones in flight carry on (suspend a task itself to stop its step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// A Paused task does not count toward inFlight, so the pool starts another beside it. Off by
    /// default: a paused task still holds its workspace and, past PreCommit, a deposit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release_paused_slots: bool,

    /// How many Finished tasks to keep (as a CronJob's successfulJobsHistoryLimit); older ones are
    /// deleted once their workspace is cleaned. Omitted: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = IN_FLIGHT_MAX))]
    pub finished_history_limit: Option<u32>,

    /// How many Aborted tasks to keep; older ones are deleted once their workspace is cleaned.
    /// Omitted: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = IN_FLIGHT_MAX))]
    pub aborted_history_limit: Option<u32>,
}

/// The SealingTask spec each task of a pool starts with.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::synthetic_only_for_porep_plans())]
pub struct TaskTemplate {
    /// The plan of every task: sealer, snapup, rebuild or unseal.
    pub plan: PlanKind,

    /// Sector size: 2KiB and 8MiB are test sizes, 512MiB, 32GiB and 64GiB are production sizes.
    pub sector_size: SectorSize,

    /// Pins the tasks' proof type (true: synthetic PoRep, false: interactive); omitted, each task
    /// takes the type the manager hands out. true only for sealer and rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_po_rep: Option<bool>,

    /// Ask the manager for deals to fill each sector (sealer); omitted: committed capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deals: Option<Deals>,
}

impl TaskTemplate {
    /// The spec of a new task of the pool.
    pub fn task_spec(&self) -> SealingTaskSpec {
        SealingTaskSpec {
            plan: self.plan,
            sector_size: self.sector_size,
            sector: None,
            synthetic_po_rep: self.synthetic_po_rep,
            deals: self.deals.clone(),
            unseal: None,
            resume_state: None,
            suspend: false,
            ttl_seconds_after_finished: None,
        }
    }
}

/// What the pool made and where its tasks are, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealingPoolStatus {
    /// Tasks created so far; the next one is named `<pool>-<created>`.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub created: u32,
    /// Tasks that count toward inFlight now.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub active: u32,
    /// Tasks Paused now (a person owes them a resume: `kubectl get st -l damocles.io/pool=<pool>`).
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub paused: u32,
    /// Tasks that reached Finished, those deleted by the history limit included.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub finished: u32,
    /// Tasks that reached Aborted, those deleted by the history limit included.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub aborted: u32,
    /// Finished and Aborted tasks the pool deleted (counted in finished and aborted above).
    #[serde(default, skip_serializing_if = "Retired::is_empty")]
    pub retired: Retired,
    /// Tasks the pool is deleting (already counted in retired): written before the delete, so a
    /// restart neither counts them twice nor forgets them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub retiring: Vec<String>,
    /// What the pool is doing, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub message: Option<String>,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the pool last created a task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_created: Option<Time>,
}

/// Counts of the tasks a pool deleted, by how they ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct Retired {
    /// Finished tasks deleted.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub finished: u32,
    /// Aborted tasks deleted.
    #[serde(default)]
    #[schemars(range(max = u32::MAX))]
    pub aborted: u32,
}

impl Retired {
    fn is_empty(&self) -> bool {
        *self == Retired::default()
    }
}
