//! The `SealingTask` custom resource (`damocles.io/v1alpha1`): types only, plus the CEL rules that the
//! apiserver enforces and their offline twin in [`validate`].

mod cel;
mod pool;
pub mod validate;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strum::Display;

pub use crate::plan::{Allocation, PlanKind, State, Submission};
pub use crate::sector::{Bytes32, CommD, CommR, FailureLevel, SectorRef, SectorSize};
pub use pool::{
    IN_FLIGHT_MAX, Retired, SealingPool, SealingPoolSpec, SealingPoolStatus, TaskTemplate,
};

/// Upper bound of `status.history`: a task passes through at most ~20 states per attempt, and a farm
/// holding thousands of tasks must not carry unbounded status (lotus sectors with 7,980 log entries).
pub const HISTORY_LIMIT: usize = 32;

/// A Filecoin sector to seal, upgrade, rebuild or unseal, driven through its plan's state machine.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "damocles.io",
    version = "v1alpha1",
    kind = "SealingTask",
    doc = "A Filecoin sector task (seal, snap-upgrade, rebuild or unseal) run by damocles-operator",
    namespaced,
    plural = "sealingtasks",
    shortname = "st",
    category = "damocles",
    status = "SealingTaskStatus",
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"Sector","type":"string","jsonPath":".status.sectorName"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.node"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Error","type":"string","priority":1,"jsonPath":".status.lastError.message"}"#,
    selectable = ".spec.plan",
    selectable = ".status.sectorName",
    selectable = ".status.sector.miner",
    selectable = ".status.sector.number",
    selectable = ".status.state",
    selectable = ".status.phase",
    selectable = ".status.node"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = cel::resume_state_in_plan())]
#[x_kube(validation = cel::sector_immutable_once_set())]
#[x_kube(validation = cel::unseal_only_for_unseal_plan())]
#[x_kube(validation = cel::seal_choices_immutable())]
#[x_kube(validation = cel::synthetic_only_for_porep_plans())]
pub struct SealingTaskSpec {
    /// The state machine this task follows: sealer (seal a new sector), snapup (upgrade a CC sector
    /// with deal data), rebuild (re-create a lost sector's files) or unseal (recover a piece). Immutable.
    #[x_kube(validation = cel::immutable("plan"))]
    pub plan: PlanKind,

    /// Sector size: 2KiB and 8MiB are test sizes, 512MiB, 32GiB and 64GiB are production sizes. Immutable.
    #[x_kube(validation = cel::immutable("sectorSize"))]
    pub sector_size: SectorSize,

    /// The sector this task works on. Omit it for sealer and snapup tasks to let the manager allocate
    /// one; once set (by you or by the operator after allocation) it cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<SectorRef>,

    /// Pins the proof type: true asks the manager only for synthetic-PoRep sectors (PC2 is
    /// followed by a SyntheticPoRep step, C1 reads far fewer challenges), false only for
    /// interactive ones. Omitted: the task takes the proof type the manager hands out with the
    /// sector, as damocles-worker does (a new sector gets its miner's current type, a rebuild its
    /// own sealing type), recorded in status.proofType. The manager hands out sectors of miners
    /// whose current type matches, so a pin the miner does not seal waits. true only for sealer
    /// and rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic_po_rep: Option<bool>,

    /// Deals: when enabled, a sealer task asks the manager for deals (AcquireDeals) to fill the
    /// sector; when disabled or omitted it seals a committed-capacity (pledge) sector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deals: Option<Deals>,

    /// The unseal request this task is expected to serve (unseal plan only); it selects nothing.
    /// The manager decides which queued request goes out (AllocateUnsealSector, filtered only by
    /// spec.sector's miner) and takes it off its queue for good, so the task serves whatever it
    /// is handed, as a damocles-worker unseal thread does; one that does not match gets a
    /// Warning Event (UnsealNotAsSelected) naming both. The request (piece, range, destinations)
    /// always comes from the manager, which queues it for a retrieval market.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal: Option<UnsealSelector>,

    /// Resume a paused task, like `damocles-worker worker resume --state X`. Set it to the exact name
    /// of a state of this task's plan to continue from there (usually a rewind, e.g. TreeDBuilt for a
    /// new ticket), to Aborted to end the task at any time (its running step is stopped, the manager is
    /// told and the workspace wiped), or to "" to retry the current state's work. The operator applies
    /// it once, records it in status.lastResume and an Event, and clears it; a refused value is cleared
    /// too, leaving a Warning Event and a ResumeRejected condition that says why, and the task
    /// carries on as it was. See
    /// docs/state-machines.md for each plan's states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub resume_state: Option<String>,

    /// Pause the task. A running step is interrupted (its pod deleted, files kept); setting it back
    /// to false reruns that step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,

    /// Delete the task this many seconds after it ends (Finished or Aborted) and its workspace is
    /// cleaned, as a Job's ttlSecondsAfterFinished does. Omitted: the task stays as the farm's
    /// record of the sector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = u32::MAX))]
    pub ttl_seconds_after_finished: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
pub struct Deals {
    /// Ask the manager for deals to put into the sector (AcquireDeals).
    #[serde(default)]
    pub enabled: bool,
}

/// Which queued unseal request a task takes: the piece, and its range when given.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnsealSelector {
    /// CID (CommP) of the piece to recover.
    #[schemars(regex(pattern = r"^baga6ea4sea[a-z2-7]+$"), length(max = 128))]
    pub piece_cid: String,
    /// Offset of the piece in the sector, in unpadded bytes. Omitted: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Unpadded size of the piece in bytes. Omitted: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub size: Option<u64>,
}

/// An unseal request as the manager handed it out.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnsealTaken {
    /// CID (CommP) of the piece to recover.
    pub piece_cid: String,
    /// Offset of the piece in the sector, in unpadded bytes.
    pub offset: u64,
    /// Unpadded size of the piece in bytes.
    pub size: u64,
    /// Where the piece goes, as the manager gave it (AcquireUnsealDest): every one of them gets
    /// the bytes before the manager is told the unseal is done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub destinations: Vec<String>,
}

/// Observed state of a SealingTask, written only by the operator.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealingTaskStatus {
    /// Current state of the task's plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,

    /// Coarse lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The sector the task works on, as allocated by the manager (or given in spec.sector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector: Option<SectorRef>,

    /// The seal proof type (abi.RegisteredSealProof) the manager handed out with the sector, which
    /// every proof step and submission of the task uses: 5-9 StackedDrg<size>V1_1, 10-14 its
    /// synthetic-PoRep variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_type: Option<i64>,

    /// The sector as damocles names its files, `s-t0<miner>-<number>` (the Sector column). Tasks
    /// are selected by sector with `kubectl get st --field-selector status.sectorName=s-t01000-42`
    /// (or `status.sector.number=42`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub sector_name: Option<String>,

    /// Index of the next action of the current state's work (see docs/state-machines.md); omitted
    /// at 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = u32::MAX))]
    pub action_index: u32,

    /// Restarts of step work so far (retries, replaced pods, revisited states); step pods are named
    /// `<task>-<state>-<attempt>`, so each start has a name of its own.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = u32::MAX))]
    pub attempt: u32,

    /// The work is not retried or polled again before this time (a back-off or a chain wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,

    /// A non-idempotent manager call (SubmitPreCommit, SubmitProof, SubmitSnapUpProof) that was
    /// started: set before the call, kept through the wait it starts (PCSubmitted,
    /// ProofSubmitted) and cleared by the next state. After a restart the operator checks with
    /// the manager instead of submitting blindly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitting: Option<Submission>,

    /// An allocation (AllocateSanpUpSector, AllocateRebuildSector, AllocateUnsealSector,
    /// AllocateSector) asked of the manager and not yet answered: the manager hands each job out
    /// once, so after a restart here the task pauses instead of asking blindly for another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocating: Option<Allocation>,

    /// What the task is doing or waiting for, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The spec generation the operator last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Progressing, Paused, Failed and ResumeRejected conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub conditions: Vec<Condition>,

    /// The most recent failure, kept until the state it happened in is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,

    /// The node that holds the task's workspace; workspace steps are pinned to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// A node where a step pod of this task did not start (image pull, node trouble): the next
    /// pod of a step that is not pinned to the workspace prefers another node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoid_node: Option<String>,

    /// Name of the step pod currently running for this task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub step_pod: Option<String>,

    /// A step pod this task stopped (deleted, replaced) that may still be running: the next
    /// step pod starts only once it is gone, so two pods never work on one workspace at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub retiring_pod: Option<String>,

    /// Results established so far (commitments, randomness, proof).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Outputs>,

    /// The most recent states entered, oldest first, bounded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = HISTORY_LIMIT))]
    pub history: Vec<HistoryEntry>,

    /// The last resume that was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resume: Option<ResumeRecord>,
}

/// Coarse lifecycle phase of a task.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema, Display)]
pub enum Phase {
    /// Accepted, nothing started yet.
    Pending,
    /// A step or manager call is in progress.
    Running,
    /// Waiting for something outside the task: a concurrency slot, a back-off, the chain.
    Waiting,
    /// Stopped by a permanent or critical failure or by spec.suspend; files are kept. Resume with
    /// spec.resumeState (or unsuspend).
    Paused,
    /// The plan completed.
    Finished,
    /// The task ended without completing.
    Aborted,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// temporary: retried after a back-off; permanent, critical: the task pauses; abort: it ends.
    pub level: FailureLevel,
    /// The state whose work failed.
    pub state: State,
    /// What went wrong, for a person.
    pub message: String,
    /// How many attempts of this state's work have failed.
    #[schemars(range(max = u32::MAX))]
    pub attempts: u32,
    /// When the failure happened.
    pub time: Time,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Outputs {
    /// Unsealed sector commitment as a CID (baga6ea4sea...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_d: Option<CommD>,
    /// Sealed sector commitment as a CID (bagboea4b5abc...); for snapup, the new replica's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_r: Option<CommR>,
    /// PC1 ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<Randomness>,
    /// C1 interactive seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Randomness>,
    /// The proof (C2 or snap-prove output).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof: Option<Artifact>,
    /// C1's output, input to C2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c1_output: Option<Artifact>,
    /// The persist store the manager reserved space in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreRef>,
    /// The committed sector the task starts from, as the manager described it: for snapup the
    /// committed-capacity sector to upgrade, for unseal the sealed sector to read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub committed: Option<CommittedSector>,
    /// The sector's pieces as the manager listed them (AcquireDeals, AllocateSanpUpSector,
    /// AllocateRebuildSector), in sector order: deals and the market's filler pieces. Empty for
    /// a committed-capacity sector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub pieces: Vec<DealPiece>,
    /// For the rebuild of a snap-upgraded sector: the CommR of its committed-capacity replica (the
    /// sector key; the manager's UpgradePublic), which the rebuild seals again and then encodes
    /// the upgrade's deals into. Omitted for any other task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sector_key: Option<CommR>,
    /// The unseal request the manager handed this task (unseal plan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseal: Option<UnsealTaken>,
}

/// A piece of the sector as the manager listed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DealPiece {
    /// Piece CID (CommP); the piece's bytes are checked against it before PC1.
    #[schemars(length(max = 128))]
    pub cid: String,
    /// Padded size in bytes.
    pub size: u64,
    /// The deal's payload, fetched from the piece store and zero-padded to the piece's size;
    /// omitted for a filler piece, which is zeros.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_size: Option<u64>,
    /// The deal's id (builtin market), for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deal_id: Option<u64>,
}

impl DealPiece {
    pub fn from_manager(piece: &crate::manager::wire::SectorPiece) -> DealPiece {
        DealPiece {
            cid: piece.piece.piece_cid.cid.clone(),
            size: piece.piece.size,
            payload_size: piece.payload_size(),
            deal_id: piece
                .deal_info
                .as_ref()
                .map(|d| d.deal_id)
                .filter(|id| *id != 0),
        }
    }
}

/// A committed sector's files in a persist store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CommittedSector {
    /// Its sealed commitment as a CID, when the manager gave it (snapup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm_r: Option<CommR>,
    /// The store instance that holds its files.
    pub instance: String,
    /// That instance's path on the nodes, once the manager told it (StoreBasicInfo).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A persist store instance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct StoreRef {
    /// The manager's name for the store instance.
    pub name: String,
    /// Its path on the nodes.
    pub path: String,
}

/// Chain randomness and the epoch it was drawn at.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Randomness {
    /// 32 bytes, hex.
    pub value: Bytes32,
    /// Chain epoch the randomness was drawn at.
    pub epoch: i64,
    /// When the manager handed it out (a ticket): its age decides whether PC1, PC2 and the
    /// PreCommit may still use it.
    #[serde(
        default,
        rename = "assignedAt",
        skip_serializing_if = "Option::is_none"
    )]
    pub assigned_at: Option<Time>,
}

/// A file produced by a step, too large for status.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct Artifact {
    /// Path of the file in the workspace or persist store.
    pub location: String,
    /// sha256 of the file, hex.
    pub sha256: String,
    /// Size in bytes.
    #[serde(default)]
    pub size: u64,
    /// The bytes themselves, base64, for small artifacts the operator hands to the manager (proofs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// The state entered.
    pub state: State,
    /// When the task entered the state.
    pub entered: Time,
    /// Seconds spent in the state; absent for the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeRecord {
    /// The state the task was in.
    pub from: State,
    /// The state it was resumed into (the same state for a retry, Aborted for an abort).
    pub to: State,
    /// When the resume was applied.
    pub at: Time,
    /// The spec generation that asked for it: a resume is applied once per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

impl SealingTaskSpec {
    /// The plan this task follows.
    pub fn plan(&self) -> &'static crate::plan::Plan {
        self.plan.plan()
    }

    /// The pending resume request, if any.
    pub fn resume_request(&self) -> Option<ResumeRequest<'_>> {
        self.resume_state.as_deref().map(|state| match state {
            "" => ResumeRequest::Retry,
            state => ResumeRequest::To(state),
        })
    }
}

/// What `spec.resumeState` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResumeRequest<'a> {
    /// `""`: the current state's work again.
    Retry,
    /// A state of the task's plan, or `Aborted` (checked against the plan's rules).
    To(&'a str),
}

impl<'a> ResumeRequest<'a> {
    /// The state asked for; none for a retry.
    pub fn target(self) -> Option<&'a str> {
        match self {
            ResumeRequest::Retry => None,
            ResumeRequest::To(state) => Some(state),
        }
    }
}
