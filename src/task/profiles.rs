//! Step profiles: what a step pod of each kind asks for (image, placement, resources, deadline,
//! retries, concurrency, locality). Configuration, not code: a YAML file the chart renders into a
//! ConfigMap and the operator reads at start.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, EnvVar, LocalObjectReference, ResourceRequirements, SeccompProfile,
    SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::{Deserialize, Serialize};

use super::failure::RetryPolicy;
use crate::plan::{Action, Plan, StepKind};

/// Where a step may run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Locality {
    /// On the node that holds the task's workspace (chosen by the scheduler for the first
    /// workspace step, then pinned).
    #[default]
    Workspace,
    /// On any node of the profile: the inputs are small and travel through the persist store.
    Any,
}

/// One profile; every field may be left out to take the default profile's value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepProfile {
    pub image: Option<String>,
    /// The container command (default `damocles-step`); args are set by the operator.
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub affinity: Option<Affinity>,
    pub tolerations: Option<Vec<Toleration>>,
    pub resources: Option<ResourceRequirements>,
    /// activeDeadlineSeconds of the step pod: a step running longer is stopped and retried.
    pub deadline_seconds: Option<i64>,
    /// Failed attempts of a step before a temporary failure counts as permanent.
    pub retry_limit: Option<u32>,
    /// Delay before the first retry, doubled for each further one.
    pub retry_backoff_seconds: Option<u64>,
    /// Most step pods of this kind running at once across the cluster.
    pub concurrency: Option<u32>,
    pub locality: Option<Locality>,
    /// A pod not running after this long (unschedulable, image pull) is replaced without spending
    /// the step's retry budget; one whose image cannot be pulled, or that no node matches, pauses
    /// the task instead.
    pub start_timeout_seconds: Option<u64>,
    /// Secrets for pulling the step image from a private registry.
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// The step pods' PriorityClass: sealing can be made to yield GPUs to WindowPoSt.
    pub priority_class_name: Option<String>,
    /// The step pods' RuntimeClass (`nvidia` on k3s and RKE2 for GPU steps).
    pub runtime_class_name: Option<String>,
    /// The step container's securityContext, replacing the default one (every capability
    /// dropped, no privilege escalation, the runtime's default seccomp profile): e.g. a
    /// `runAsUser` that owns the stores, or a capability a node's setup needs.
    pub security_context: Option<SecurityContext>,
}

/// What a step container runs with unless its profile says otherwise: root (the hostPath
/// workspaces and stores the kubelet creates belong to root), but with no capability, so it
/// cannot reach past its mounts, and no way to gain privileges.
pub fn default_step_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The profiles file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Profiles {
    /// hostPath root of task workspaces on the nodes; each task has `<root>/<namespace>/<name>`.
    #[serde(default = "default_workspace_root")]
    pub workspace_root: String,
    /// hostPath of the Groth parameter cache on proof nodes (mounted read-only).
    #[serde(default = "default_params_path")]
    pub params_path: String,
    /// hostPath of the SDR parent cache (FIL_PROOFS_PARENT_CACHE: 56 GiB at 32GiB, built by
    /// the first PC1 of a size on a node), mounted into step pods so the PC1s of a node share it
    /// instead of each pod building its own. None: filecoin-proofs' default inside the container.
    #[serde(default)]
    pub parent_cache_path: Option<String>,
    /// Node paths of persist stores by the manager's instance name, where they differ from the
    /// path the manager reports.
    #[serde(default)]
    pub store_paths: BTreeMap<String, String>,
    /// Where add-piece fetches deal pieces: an http(s) URL that `<piece CID>` is appended to.
    /// Default: the manager's piece store (`/piecestore/` beside its `/rpc/v0`, which serves
    /// damocles-manager's `[[Common.PieceStores]]` and redirects other pieces to the market), as
    /// damocles-worker fetches them.
    #[serde(default)]
    pub piece_store: Option<String>,
    /// Node directories add-piece looks in first for a deal piece (`<dir>/<cid>`, then
    /// `<dir>/<cid>.car`) before the piece store, as damocles-worker's `local_pieces_dirs`;
    /// mounted read-only into add-piece pods. A deal's bytes are checked against its CID
    /// wherever they come from.
    #[serde(default)]
    pub piece_dirs: Vec<String>,
    /// Hosts (`host` for any port, `host:port` for one) that steps may fetch deal pieces from and
    /// PUT unsealed pieces to: http(s) destinations, `market://` uploads (which carry the market
    /// token) and the piece store's redirects (where the manager sends a piece it does not hold).
    /// The manager's host and the piece store's are always allowed; a market on another host
    /// must be listed.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Node directories that `file://` unseal destinations may name files under. Empty (the
    /// default): the manager's `file://` destinations are refused, since they would write
    /// anywhere on the node.
    #[serde(default)]
    pub delivery_roots: Vec<String>,
    /// Values for every step kind.
    #[serde(default)]
    pub defaults: StepProfile,
    /// Per step kind (kebab-case: add-piece, tree-d, pc1, pc2, c2, ...), over the defaults.
    #[serde(default)]
    pub steps: BTreeMap<StepKind, StepProfile>,
}

fn default_workspace_root() -> String {
    "/var/lib/damocles/workspace".into()
}

fn default_params_path() -> String {
    "/var/tmp/filecoin-proof-parameters".into()
}

impl Default for Profiles {
    fn default() -> Self {
        serde_saphyr::from_str("{}").expect("an empty profiles file parses")
    }
}

/// A step kind's profile with the defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    pub image: String,
    pub command: Vec<String>,
    pub env: Vec<EnvVar>,
    pub node_selector: Option<BTreeMap<String, String>>,
    pub affinity: Option<Affinity>,
    pub tolerations: Option<Vec<Toleration>>,
    pub resources: Option<ResourceRequirements>,
    pub deadline_seconds: Option<i64>,
    pub retry: RetryPolicy,
    pub concurrency: Option<u32>,
    pub locality: Locality,
    pub start_timeout: Duration,
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    pub priority_class_name: Option<String>,
    pub runtime_class_name: Option<String>,
    pub security_context: SecurityContext,
}

/// Where a task's workspace node may be: what its first step pod asks of the scheduler.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub node_selector: Option<BTreeMap<String, String>>,
    pub tolerations: Option<Vec<Toleration>>,
    /// The largest cpu and memory requests of the workspace steps, as written in their profiles.
    pub requests: BTreeMap<String, Quantity>,
}

/// The resources the first workspace step pod asks for on behalf of the steps pinned after it.
/// Not GPUs (or other devices): a GPU held through add-piece is a GPU no PC2 or C2 can use.
const RESERVED: [&str; 2] = ["cpu", "memory"];

impl Placement {
    /// `resources` asking for at least this placement's requests: a larger request replaces the
    /// profile's own, and a limit below it is raised to it (a request over its limit is invalid).
    pub fn reserve(&self, resources: Option<ResourceRequirements>) -> Option<ResourceRequirements> {
        if self.requests.is_empty() {
            return resources;
        }
        let mut resources = resources.unwrap_or_default();
        for (name, wanted) in &self.requests {
            let at_least = |q: Option<&Quantity>| {
                q.and_then(|q| quantity(&q.0).ok())
                    .is_some_and(|q| q >= quantity(&wanted.0).unwrap_or(f64::MAX))
            };
            if at_least(requested(Some(&resources), name)) {
                continue;
            }
            resources
                .requests
                .get_or_insert_with(BTreeMap::new)
                .insert(name.clone(), wanted.clone());
            if let Some(limits) = resources.limits.as_mut()
                && limits.contains_key(name)
                && !at_least(limits.get(name))
            {
                limits.insert(name.clone(), wanted.clone());
            }
        }
        Some(resources)
    }
}

/// A Kubernetes quantity (`100m`, `4`, `64Gi`, `1.5G`, `2e3`) as a number of units (cores,
/// bytes, devices).
pub fn quantity(text: &str) -> Result<f64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a quantity"))?;
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .and_then(|e| e.parse::<i32>().ok());
    let scale = match (suffix, exponent) {
        (_, Some(exponent)) => 10f64.powi(exponent),
        ("", _) => 1.0,
        ("m", _) => 1e-3,
        ("k", _) => 1e3,
        ("M", _) => 1e6,
        ("G", _) => 1e9,
        ("T", _) => 1e12,
        ("P", _) => 1e15,
        ("E", _) => 1e18,
        ("Ki", _) => 1024.0,
        ("Mi", _) => 1024f64.powi(2),
        ("Gi", _) => 1024f64.powi(3),
        ("Ti", _) => 1024f64.powi(4),
        ("Pi", _) => 1024f64.powi(5),
        ("Ei", _) => 1024f64.powi(6),
        (other, _) => return Err(format!("{text:?}: unknown quantity suffix {other:?}")),
    };
    Ok(number * scale)
}

/// What a pod of `resources` requests of `name`: its request, else its limit (the apiserver
/// defaults one to the other).
pub fn requested<'a>(
    resources: Option<&'a ResourceRequirements>,
    name: &str,
) -> Option<&'a Quantity> {
    let resources = resources?;
    resources
        .requests
        .as_ref()
        .and_then(|r| r.get(name))
        .or_else(|| resources.limits.as_ref().and_then(|l| l.get(name)))
}

impl Profiles {
    pub fn parse(text: &str) -> Result<Self, String> {
        let profiles: Profiles = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (name, path) in [
            ("workspaceRoot", &profiles.workspace_root),
            ("paramsPath", &profiles.params_path),
        ]
        .into_iter()
        .chain(
            profiles
                .parent_cache_path
                .iter()
                .map(|path| ("parentCachePath", path)),
        )
        .chain(profiles.piece_dirs.iter().map(|path| ("pieceDirs", path)))
        .chain(
            profiles
                .delivery_roots
                .iter()
                .map(|path| ("deliveryRoots", path)),
        ) {
            if !path.starts_with('/') {
                return Err(format!("{name} {path:?} must be an absolute path"));
            }
            if path.split('/').any(|part| part == "..") {
                return Err(format!("{name} {path:?} must not contain .."));
            }
        }
        for root in &profiles.delivery_roots {
            if root.trim_end_matches('/').is_empty() {
                return Err(format!(
                    "deliveryRoots {root:?} is the node's whole filesystem; name the directories \
                     unsealed pieces may be written to"
                ));
            }
        }
        let all = std::iter::once(("defaults".to_string(), &profiles.defaults))
            .chain(profiles.steps.iter().map(|(step, p)| (step.to_string(), p)));
        for (name, profile) in all {
            let Some(resources) = &profile.resources else {
                continue;
            };
            let amounts = [
                ("requests", &resources.requests),
                ("limits", &resources.limits),
            ];
            for (kind, amounts) in amounts {
                for (resource, amount) in amounts.iter().flatten() {
                    quantity(&amount.0)
                        .map_err(|e| format!("{name}: resources.{kind}.{resource}: {e}"))?;
                }
            }
        }
        for host in &profiles.allowed_hosts {
            crate::step::destination::check_allowed_host(host)
                .map_err(|reason| format!("allowedHosts {host:?}: {reason}"))?;
        }
        let unpinned = std::iter::once(("defaults".to_string(), &profiles.defaults, None))
            .chain(
                profiles
                    .steps
                    .iter()
                    .map(|(step, p)| (step.to_string(), p, Some(*step))),
            )
            .find(|(_, p, step)| {
                p.locality == Some(Locality::Any)
                    && !step.is_some_and(StepKind::may_leave_workspace)
            })
            .map(|(name, p, _)| (name, p));
        if let Some(store) = &profiles.piece_store
            && !(store.starts_with("http://") || store.starts_with("https://"))
        {
            return Err(format!(
                "pieceStore {store:?} must be an http(s) URL (the piece CID is appended to it)"
            ));
        }
        if let Some((name, _)) = unpinned {
            // C2 reads only C1's output, which C1 then writes to the persist store; every other
            // step reads the task's workspace, and on another node would find it missing.
            return Err(format!(
                "{name}: locality any is only for c2 (whose input, C1's output, travels through \
                 the persist store); {name} reads the task's workspace, so it runs on the task's \
                 node (leave locality out)"
            ));
        }
        Ok(profiles)
    }

    /// Where steps of this kind run (the step's own setting, else the defaults').
    pub fn locality(&self, step: StepKind) -> Locality {
        self.steps
            .get(&step)
            .and_then(|p| p.locality)
            .or(self.defaults.locality)
            .unwrap_or_default()
    }

    /// `default_backoff`: the operator's --retry-backoff, when neither profile sets one.
    pub fn resolve(&self, step: StepKind, default_backoff: Duration) -> Resolved {
        let own = self.steps.get(&step).cloned().unwrap_or_default();
        let base = &self.defaults;
        macro_rules! pick {
            ($field:ident) => {
                own.$field.clone().or_else(|| base.$field.clone())
            };
        }
        let mut env = base.env.clone();
        for var in own.env {
            env.retain(|v| v.name != var.name);
            env.push(var);
        }
        let defaults = RetryPolicy::default();
        Resolved {
            image: pick!(image).unwrap_or_else(|| "damocles-step:latest".into()),
            command: pick!(command).unwrap_or_else(|| vec!["damocles-step".into()]),
            env,
            node_selector: pick!(node_selector),
            affinity: pick!(affinity),
            tolerations: pick!(tolerations),
            resources: pick!(resources),
            deadline_seconds: pick!(deadline_seconds),
            retry: RetryPolicy {
                limit: pick!(retry_limit).unwrap_or(defaults.limit),
                initial_backoff: pick!(retry_backoff_seconds)
                    .map(Duration::from_secs)
                    .unwrap_or(default_backoff),
                max_backoff: defaults.max_backoff,
            },
            concurrency: pick!(concurrency),
            locality: self.locality(step),
            start_timeout: Duration::from_secs(pick!(start_timeout_seconds).unwrap_or(600)),
            image_pull_secrets: pick!(image_pull_secrets),
            priority_class_name: pick!(priority_class_name),
            runtime_class_name: pick!(runtime_class_name),
            security_context: pick!(security_context).unwrap_or_else(default_step_security),
        }
    }

    /// Where a task's workspace may live: a node that every workspace step of its plan can run on.
    /// The first step pod of a task (which chooses the node) carries the node selectors and
    /// tolerations of all of them, so a plan with a GPU PC2 starts on a GPU node instead of being
    /// stranded at PC2 on a node without one, and their largest cpu and memory requests, so it
    /// starts where PC1 has room now instead of being pinned to a node whose core complexes are
    /// all taken while others idle. A label two steps require with different values is an error
    /// in the profiles.
    pub fn workspace_placement(
        &self,
        plan: &Plan,
        default_backoff: Duration,
    ) -> Result<Placement, String> {
        let mut selector: Option<BTreeMap<String, String>> = None;
        let mut owner: BTreeMap<String, StepKind> = BTreeMap::new();
        let mut tolerations: Option<Vec<Toleration>> = None;
        let mut requests: BTreeMap<String, (f64, Quantity)> = BTreeMap::new();
        let steps = plan
            .states
            .iter()
            .flat_map(|s| s.actions)
            .filter_map(|a| match a {
                Action::Proof(step) | Action::File(step) => Some(*step),
                Action::Manager(_) => None,
            });
        for step in steps {
            let profile = self.resolve(step, default_backoff);
            if profile.locality != Locality::Workspace {
                continue;
            }
            for (label, value) in profile.node_selector.iter().flatten() {
                let selector = selector.get_or_insert_with(BTreeMap::new);
                match selector.get(label) {
                    Some(existing) if existing != value => {
                        return Err(format!(
                            "the {} and {step} profiles need node label {label}={existing} and \
                             {label}={value}; a task's workspace steps run on one node, so their \
                             node selectors must agree",
                            owner[label]
                        ));
                    }
                    _ => {
                        selector.insert(label.clone(), value.clone());
                        owner.entry(label.clone()).or_insert(step);
                    }
                }
            }
            for toleration in profile.tolerations.iter().flatten() {
                let all = tolerations.get_or_insert_with(Vec::new);
                if !all.contains(toleration) {
                    all.push(toleration.clone());
                }
            }
            for name in RESERVED {
                let Some(asked) = requested(profile.resources.as_ref(), name) else {
                    continue;
                };
                let amount = quantity(&asked.0)
                    .map_err(|e| format!("the {step} profile's {name} request: {e}"))?;
                if requests.get(name).is_none_or(|(most, _)| amount > *most) {
                    requests.insert(name.to_string(), (amount, asked.clone()));
                }
            }
        }
        Ok(Placement {
            node_selector: selector,
            tolerations,
            requests: requests.into_iter().map(|(k, (_, q))| (k, q)).collect(),
        })
    }

    /// The default profile alone, for the operator's own pods (workspace cleanup).
    pub fn defaults_only(&self, default_backoff: Duration) -> Resolved {
        Profiles {
            steps: BTreeMap::new(),
            ..self.clone()
        }
        .resolve(StepKind::Persist, default_backoff)
    }

    /// Allows steps to reach the host of `url` (the manager's, the piece store's): what
    /// damocles-worker reaches without being told.
    pub fn allow_host_of(&mut self, url: &str) {
        if let Some(host) = crate::step::destination::host_of(url)
            && !self.allowed_hosts.contains(&host)
        {
            self.allowed_hosts.push(host);
        }
    }

    /// The node path of a store, given the path the manager reported.
    pub fn store_path<'a>(&'a self, name: &str, reported: &'a str) -> &'a str {
        self.store_paths
            .get(name)
            .map(String::as_str)
            .unwrap_or(reported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_profiles_override_the_defaults_field_by_field() {
        let profiles = Profiles::parse(
            r#"
workspaceRoot: /data/workspace
defaults:
  image: ghcr.io/example/damocles-step:1
  env: [{name: RUST_LOG, value: info}, {name: A, value: "1"}]
  retryLimit: 2
steps:
  c2:
    nodeSelector: {damocles.io/gpu: "true"}
    resources: {limits: {nvidia.com/gpu: "1"}}
    env: [{name: A, value: "2"}]
    concurrency: 1
"#,
        )
        .unwrap();
        let c2 = profiles.resolve(StepKind::C2, Duration::from_secs(60));
        assert_eq!(c2.image, "ghcr.io/example/damocles-step:1");
        assert_eq!(c2.locality, Locality::Workspace);
        assert_eq!(c2.concurrency, Some(1));
        assert_eq!(c2.retry.limit, 2);
        assert_eq!(
            c2.env
                .iter()
                .map(|v| (v.name.as_str(), v.value.as_deref().unwrap()))
                .collect::<Vec<_>>(),
            [("RUST_LOG", "info"), ("A", "2")]
        );
        let pc1 = profiles.resolve(StepKind::Pc1, Duration::from_secs(7));
        assert_eq!(pc1.node_selector, None);
        assert_eq!(pc1.locality, Locality::Workspace);
        assert_eq!(pc1.retry.initial_backoff, Duration::from_secs(7));
        assert_eq!(pc1.command, ["damocles-step"]);
        assert_eq!(profiles.workspace_root, "/data/workspace");
        assert_eq!(profiles.params_path, "/var/tmp/filecoin-proof-parameters");
    }

    #[test]
    fn mistakes_are_named() {
        let err = Profiles::parse("steps: {pc3: {}}").unwrap_err();
        assert!(err.contains("pc3"), "{err}");
        let err = Profiles::parse("defaults: {imagee: x}").unwrap_err();
        assert!(err.contains("imagee"), "{err}");
        let err = Profiles::parse("workspaceRoot: data").unwrap_err();
        assert!(err.contains("absolute"), "{err}");
        let err = Profiles::parse("pieceDirs: [/mnt/pieces, pieces]").unwrap_err();
        assert!(
            err.contains("pieceDirs \"pieces\" must be an absolute path"),
            "{err}"
        );
        let err = Profiles::parse("steps: {pc2: {locality: any}}").unwrap_err();
        assert!(err.contains("pc2: locality any is only for c2"), "{err}");
        let err = Profiles::parse("defaults: {locality: any}").unwrap_err();
        assert!(
            err.contains("defaults: locality any is only for c2"),
            "{err}"
        );
        let c2_anywhere = Profiles::parse("steps: {c2: {locality: any}}").unwrap();
        assert_eq!(c2_anywhere.locality(StepKind::C2), Locality::Any);
        assert_eq!(c2_anywhere.locality(StepKind::C1), Locality::Workspace);
    }

    #[test]
    fn the_workspace_node_satisfies_every_workspace_step_of_the_plan() {
        let profiles = Profiles::parse(
            r#"
defaults:
  nodeSelector: {farm: a}
steps:
  pc2:
    nodeSelector: {farm: a, gpu: "true"}
    tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  c2:
    nodeSelector: {farm: a, gpu: "true"}
"#,
        )
        .unwrap();
        let backoff = Duration::from_secs(60);
        let Placement {
            node_selector: selector,
            tolerations,
            requests,
        } = profiles
            .workspace_placement(crate::plan::PlanKind::Sealer.plan(), backoff)
            .unwrap();
        assert_eq!(
            selector.unwrap(),
            BTreeMap::from([("farm".into(), "a".into()), ("gpu".into(), "true".into())])
        );
        assert_eq!(tolerations.unwrap().len(), 1);
        assert!(requests.is_empty());

        let conflicting = Profiles::parse(
            "steps:\n  pc1: {nodeSelector: {gpu: a}}\n  pc2: {nodeSelector: {gpu: b}}\n",
        )
        .unwrap();
        let err = conflicting
            .workspace_placement(crate::plan::PlanKind::Sealer.plan(), backoff)
            .unwrap_err();
        assert!(err.contains("gpu=a and gpu=b"), "{err}");
    }

    /// The first pod asks for PC1's cores and memory (the largest of the plan's workspace steps,
    /// resource by resource), never for the GPU steps' GPUs, and keeps a larger request of its
    /// own; a limit below the reservation is raised to it.
    #[test]
    fn the_first_pod_reserves_the_largest_cpu_and_memory_of_the_pinned_steps() {
        let profiles = Profiles::parse(
            r#"
steps:
  add-piece:
    resources: {requests: {memory: 1Gi, ephemeral-storage: 10Gi}, limits: {memory: 2Gi}}
  pc1:
    resources: {requests: {cpu: "8", memory: 64Gi}}
  pc2:
    resources: {requests: {cpu: 2000m, memory: 96Gi}, limits: {nvidia.com/gpu: "1"}}
  c2:
    locality: any
    resources: {requests: {memory: 512Gi}, limits: {nvidia.com/gpu: "1"}}
"#,
        )
        .unwrap();
        let backoff = Duration::from_secs(60);
        let placement = profiles
            .workspace_placement(crate::plan::PlanKind::Sealer.plan(), backoff)
            .unwrap();
        let q = |text: &str| Quantity(text.into());
        // C2 runs anywhere: its memory is no concern of the workspace node.
        assert_eq!(
            placement.requests,
            BTreeMap::from([("cpu".into(), q("8")), ("memory".into(), q("96Gi"))])
        );
        let add_piece = profiles.resolve(StepKind::AddPiece, backoff);
        let reserved = placement.reserve(add_piece.resources).unwrap();
        assert_eq!(
            reserved.requests.unwrap(),
            BTreeMap::from([
                ("cpu".into(), q("8")),
                ("ephemeral-storage".into(), q("10Gi")),
                ("memory".into(), q("96Gi")),
            ])
        );
        assert_eq!(
            reserved.limits.unwrap(),
            BTreeMap::from([("memory".into(), q("96Gi"))])
        );
        let big = ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), q("16"))])),
            ..Default::default()
        };
        assert_eq!(
            placement.reserve(Some(big)).unwrap().requests.unwrap()["cpu"],
            q("16")
        );
        let none = Profiles::parse("{}").unwrap();
        let placement = none
            .workspace_placement(crate::plan::PlanKind::Sealer.plan(), backoff)
            .unwrap();
        assert_eq!(placement.reserve(None), None);
    }

    #[test]
    fn quantities_read_as_kubernetes_writes_them() {
        assert_eq!(quantity("100m").unwrap(), 0.1);
        assert_eq!(quantity("64Gi").unwrap(), 64.0 * (1u64 << 30) as f64);
        assert_eq!(quantity("2").unwrap(), 2.0);
        assert_eq!(quantity("1.5G").unwrap(), 1.5e9);
        assert_eq!(quantity("2e3").unwrap(), 2000.0);
        assert!(quantity("2Qi").unwrap_err().contains("suffix"));
        assert!(quantity("lots").unwrap_err().contains("not a quantity"));
        let err =
            Profiles::parse("steps:\n  pc1: {resources: {requests: {cpu: eight}}}\n").unwrap_err();
        assert!(err.contains("pc1") && err.contains("eight"), "{err}");
    }
}
