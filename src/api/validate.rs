//! Offline checks of a SealingTask manifest: the same rules as the CRD's CEL validations, with messages
//! that list the valid values. Used by `damocles-operator validate` and by executors that take manifests
//! without an apiserver.

use crate::plan::State;

use super::{PlanKind, SealingTaskSpec};

/// Every rule of the CRD schema the spec breaks, as user-facing messages (empty when valid).
pub fn spec_errors(spec: &SealingTaskSpec) -> Vec<String> {
    let mut errors = Vec::new();
    let plan = spec.plan();
    if let Some(super::ResumeRequest::To(state)) = spec.resume_request()
        && state != State::Aborted.as_str()
        && plan.parse_state(state).is_err()
    {
        errors.push(format!(
            "spec.resumeState: {state:?} is not a state of plan {}; valid values: {}, Aborted, or \"\" to retry the current step",
            plan.kind,
            plan.resumable_state_names().collect::<Vec<_>>().join(", ")
        ));
    }
    if spec.unseal.is_some() && spec.plan != PlanKind::Unseal {
        errors.push(
            "spec.unseal: names the unseal request a task expects and is only allowed when plan is unseal"
                .to_string(),
        );
    }
    if spec.synthetic_po_rep == Some(true)
        && !matches!(spec.plan, PlanKind::Sealer | PlanKind::Rebuild)
    {
        errors.push("spec.syntheticPoRep: only the sealer and rebuild plans run PoRep".to_string());
    }
    errors
}

/// A SealingTask found in a manifest, with the document it came from (1-based).
#[derive(Debug)]
pub struct ManifestTask {
    pub document: usize,
    pub task: super::SealingTask,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(String),
    #[error("document {document}: {path}: {message}")]
    Field {
        document: usize,
        path: String,
        message: String,
    },
}

/// Fields earlier versions took that are gone, with what replaces them: the apiserver would
/// drop them without a word (or kubectl refuse them as unknown), so `validate` says why.
fn retired_field(document: &serde_json::Value) -> Option<(&'static str, &'static str)> {
    let spec = document.get("spec")?;
    if spec.get("pieces").is_some() {
        return Some((
            "spec.pieces",
            "removed: deal data comes from the manager only, as in damocles (set \
             spec.deals.enabled: true for AcquireDeals; snapup and rebuild get their pieces \
             when the manager allocates the sector)",
        ));
    }
    if spec
        .get("unseal")
        .and_then(|u| u.get("destination"))
        .is_some()
    {
        return Some((
            "spec.unseal.destination",
            "removed: the piece goes to the destinations the manager gives (AcquireUnsealDest); \
             spec.unseal only selects which queued request the task takes",
        ));
    }
    None
}

/// Parses every SealingTask in a (multi-document) YAML manifest, one result per SealingTask document;
/// other kinds are skipped. Field errors name the field path and, for enums, list the valid values.
pub fn parse_manifest(
    text: &str,
) -> Result<Vec<Result<ManifestTask, ManifestError>>, ManifestError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| ManifestError::Yaml(e.to_string()))?;
    Ok(documents
        .into_iter()
        .enumerate()
        .filter(|(_, document)| {
            document.get("kind").and_then(|k| k.as_str()) == Some("SealingTask")
        })
        .map(|(index, document)| {
            if let Some((path, message)) = retired_field(&document) {
                return Err(ManifestError::Field {
                    document: index + 1,
                    path: path.to_string(),
                    message: message.to_string(),
                });
            }
            serde_path_to_error::deserialize(document)
                .map(|task| ManifestTask {
                    document: index + 1,
                    task,
                })
                .map_err(|e| ManifestError::Field {
                    document: index + 1,
                    path: e.path().to_string(),
                    message: e.inner().to_string(),
                })
        })
        .collect())
}
