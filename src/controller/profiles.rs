//! Step profiles: what a step pod of each kind asks for (image, placement, resources, deadline,
//! retries, concurrency, locality). Configuration, not code: a YAML file the chart renders into a
//! ConfigMap and the operator reads at start.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, ResourceRequirements, Toleration};
use serde::{Deserialize, Serialize};

use crate::plan::StepKind;
use crate::plan::driver::RetryPolicy;

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
    /// the step's retry budget.
    pub start_timeout_seconds: Option<u64>,
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
    /// Node paths of persist stores by the manager's instance name, where they differ from the
    /// path the manager reports.
    #[serde(default)]
    pub store_paths: BTreeMap<String, String>,
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
}

#[derive(Debug, thiserror::Error)]
pub enum ProfilesError {
    #[error("cannot read the step profiles {path}: {message}")]
    Read { path: String, message: String },
    #[error("step profiles {path}: {message}")]
    Invalid { path: String, message: String },
}

impl Profiles {
    pub fn load(path: &Path) -> Result<Self, ProfilesError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfilesError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text).map_err(|message| ProfilesError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let profiles: Profiles = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        for (name, path) in [
            ("workspaceRoot", &profiles.workspace_root),
            ("paramsPath", &profiles.params_path),
        ] {
            if !path.starts_with('/') {
                return Err(format!("{name} {path:?} must be an absolute path"));
            }
        }
        Ok(profiles)
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
            locality: pick!(locality).unwrap_or_default(),
            start_timeout: Duration::from_secs(pick!(start_timeout_seconds).unwrap_or(600)),
        }
    }

    /// The default profile alone, for the operator's own pods (workspace cleanup).
    pub fn defaults_only(&self, default_backoff: Duration) -> Resolved {
        Profiles {
            steps: BTreeMap::new(),
            ..self.clone()
        }
        .resolve(StepKind::Persist, default_backoff)
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
    locality: any
    concurrency: 1
"#,
        )
        .unwrap();
        let c2 = profiles.resolve(StepKind::C2, Duration::from_secs(60));
        assert_eq!(c2.image, "ghcr.io/example/damocles-step:1");
        assert_eq!(c2.locality, Locality::Any);
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
    }
}
