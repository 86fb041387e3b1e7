//! Offline checks of a SealingTask manifest: the same rules as the CRD's CEL validations, with messages
//! that list the valid values. Used by `damocles-operator validate` and by executors that take manifests
//! without an apiserver.

use crate::plan::State;

use super::{PlanKind, SealingTaskSpec};

/// Every rule of the CRD schema the spec breaks, as user-facing messages (empty when valid).
pub fn spec_errors(spec: &SealingTaskSpec) -> Vec<String> {
    let mut errors = Vec::new();
    let plan = spec.plan();
    if let Some(Some(state)) = spec.resume_request()
        && state != State::Aborted.as_str()
        && plan.parse_state(state).is_err()
    {
        errors.push(format!(
            "spec.resumeState: {state:?} is not a state of plan {}; valid values: {}, Aborted, or \"\" to retry the current step",
            plan.kind,
            plan.resumable_state_names().collect::<Vec<_>>().join(", ")
        ));
    }
    if spec.unseal.is_some() != (spec.plan == PlanKind::Unseal) {
        errors.push(
            "spec.unseal: required when plan is unseal and not allowed for other plans".to_string(),
        );
    }
    if spec.pieces.is_some() && !matches!(spec.plan, PlanKind::Sealer | PlanKind::Snapup) {
        errors.push("spec.pieces: only allowed for the sealer and snapup plans".to_string());
    }
    if spec.pieces.is_some() && spec.deals.as_ref().is_some_and(|d| d.enabled) {
        errors.push("spec.pieces: give either pieces or deals.enabled, not both".to_string());
    }
    if let Some(pieces) = &spec.pieces {
        for (i, piece) in pieces.iter().enumerate() {
            if !piece.size.is_power_of_two() || !(128..=1 << 36).contains(&piece.size) {
                errors.push(format!(
                    "spec.pieces[{i}].size: {} is not a padded piece size (a power of two from 128 bytes to 64 GiB)",
                    piece.size
                ));
            }
        }
        let total: u64 = pieces.iter().map(|p| p.size).sum();
        if total > spec.sector_size.bytes() {
            errors.push(format!(
                "spec.pieces: padded sizes add up to {total} bytes, more than the {} sector ({} bytes)",
                spec.sector_size,
                spec.sector_size.bytes()
            ));
        }
    }
    if spec.synthetic_po_rep && !matches!(spec.plan, PlanKind::Sealer | PlanKind::Rebuild) {
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
