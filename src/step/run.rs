//! Running a step: the completion marker and input digest that make a rerun reuse or redo it, the
//! outputs a rerun removes first, and the helpers every step shares. The steps themselves, each
//! reading its inputs, checking them before heavy work, calling filecoin-proofs and writing its
//! outputs crash-safely (see [`super::workspace`]), are in [`super::steps`].

use std::fs::{self};
use std::path::{Path, PathBuf};
use std::time::Instant;

use filecoin_proofs_api::{Commitment, RegisteredSealProof};
use tracing::{info, warn};

use super::workspace::{self, SectorFiles, write_atomic};
use super::{
    Bytes32, FileDigest, NamedFile, REQUEST_VERSION, StepError, StepFailure, StepKind, StepOutputs,
    StepRequest, StepResult,
};
use crate::sector::{CommD, CommR};

use super::steps::{files::*, piece::*, porep::*, snap::*};

pub(in crate::step) type StepOutcome = Result<StepOutputs, StepError>;

/// The lock file every damocles-step run takes in its workspace.
pub const WORKSPACE_LOCK: &str = ".damocles-step.lock";

/// Takes the workspace's lock (flock; released when the process ends, however it ends), or says
/// who holds it.
fn lock_workspace(workspace: &Path) -> Result<fs::File, StepError> {
    fs::create_dir_all(workspace).map_err(|e| {
        StepError::permanent(format!(
            "cannot create the workspace {}: {e}",
            workspace.display()
        ))
    })?;
    let path = workspace.join(WORKSPACE_LOCK);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StepError::temporary(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StepError::temporary(format!(
            "another damocles-step holds the lock on the workspace {} (an earlier pod of this \
             task still running?): this run did nothing",
            workspace.display()
        ))),
        Err(fs::TryLockError::Error(e)) => Err(StepError::temporary(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Runs the request's step, then each of its `then` steps while they succeed, each as
/// [`execute`] runs one; their results go in the first one's `then`.
pub fn execute_all(request: &StepRequest) -> StepResult {
    let alone = |step| StepRequest {
        step,
        then: Vec::new(),
        ..request.clone()
    };
    let mut result = execute(&alone(request.step));
    if result.failure.is_some() {
        return result;
    }
    for &step in &request.then {
        let next = execute(&alone(step));
        let failed = next.failure.is_some();
        result.then.push(next);
        if failed {
            break;
        }
    }
    result
}

/// Runs one step to completion, or returns the recorded result of an identical completed run.
/// Never panics on bad input: every failure comes back as a result with its level.
pub fn execute(request: &StepRequest) -> StepResult {
    let started = Instant::now();
    let files = SectorFiles::new(&request.workspace, request.sector);
    let step = request.step;
    let digest = workspace::input_digest(&files, &digest_view(request), &upstream(request));
    let finish = |outcome: StepOutcome, reused: bool| {
        let (failure, outputs) = match outcome {
            Ok(outputs) => (None, outputs),
            Err(err) => (
                Some(StepFailure {
                    level: err.level,
                    message: err.message,
                }),
                StepOutputs::default(),
            ),
        };
        StepResult {
            version: REQUEST_VERSION,
            step,
            sector: request.sector,
            failure,
            outputs,
            reused,
            duration_ms: started.elapsed().as_millis() as u64,
            in_log: None,
            then: Vec::new(),
        }
    };

    // Held until this run ends: a second damocles-step on the same workspace (a replacement pod
    // started while the old one still runs) must not write the same files.
    let _lock = match lock_workspace(&request.workspace) {
        Ok(lock) => lock,
        Err(err) => return finish(Err(err), false),
    };
    if let Some(recorded) = workspace::completed(&files, step, &digest) {
        info!(%step, sector = %request.sector, "already completed with the same inputs; returning its recorded result");
        return finish(Ok(recorded.outputs), true);
    }
    if let Err(err) = workspace::discard(&files, step, &owned_outputs(request, &files)) {
        return finish(Err(err), false);
    }
    info!(%step, sector = %request.sector, size = %request.sector_size, "starting");
    let outcome = run_step(request, &files);
    let mut result = match outcome {
        // A verify step that ran and found the proof invalid did its work, but the task cannot go on.
        Ok(outputs) if outputs.verified == Some(false) => {
            let mut result = finish(Ok(outputs), false);
            result.failure = Some(StepFailure {
                level: crate::sector::FailureLevel::Permanent,
                message: format!("{step}: the proof does not verify"),
            });
            return result;
        }
        other => finish(other, false),
    };
    if result.failure.is_none()
        && let Err(err) = workspace::mark_complete(&files, step, &digest, &result)
    {
        result.failure = Some(StepFailure {
            level: err.level,
            message: err.message,
        });
    }
    match &result.failure {
        None => info!(%step, sector = %request.sector, ms = result.duration_ms, "done"),
        Some(failure) => {
            warn!(%step, sector = %request.sector, level = %failure.level, "failed: {}", failure.message)
        }
    }
    result
}

/// The part of a request a step's outputs depend on (not where it reports to).
fn digest_view(request: &StepRequest) -> serde_json::Value {
    let mut view = request.clone();
    view.termination_message_path = None;
    view.then = Vec::new();
    serde_json::to_value(view).expect("requests serialize")
}

/// Steps whose outputs this step reads from the workspace.
fn upstream(request: &StepRequest) -> Vec<StepKind> {
    use StepKind::*;
    match request.step {
        AddPiece | C2 | Unseal | VerifySeal | VerifySnap => vec![],
        TreeD | SnapEncode => vec![AddPiece],
        Pc1 => vec![AddPiece, TreeD],
        Pc2 => vec![Pc1],
        SyntheticProofs => vec![Pc2],
        C1 if request.synthetic_po_rep => vec![Pc2, SyntheticProofs],
        C1 => vec![Pc2],
        SnapProve => vec![SnapEncode],
        Persist => vec![Pc2, SnapEncode],
        Upload => vec![Unseal],
    }
}

/// Files and directories a step creates; a rerun removes them (and their partial twins) first.
fn owned_outputs(request: &StepRequest, files: &SectorFiles) -> Vec<PathBuf> {
    use StepKind::*;
    let mut paths = match request.step {
        AddPiece => vec![files.staged(), files.output("pieces.json")],
        TreeD => vec![],
        Pc1 => vec![files.cache(), files.output("pc1.json")],
        Pc2 => {
            let mut paths = vec![files.sealed()];
            paths.extend(pc2_cache_files(&files.cache()));
            paths
        }
        SyntheticProofs => vec![files.cache().join(SYNTHETIC_PROOFS_FILE)],
        C1 => vec![files.output("c1.json")],
        C2 => vec![files.output("proof.bin")],
        SnapEncode => vec![files.update(), files.update_cache()],
        SnapProve => vec![files.output("snap-proof.bin")],
        Unseal => vec![files.output("unsealed-piece")],
        // Persist and upload write outside the workspace, each file atomically: nothing to discard.
        Persist | Upload | VerifySeal | VerifySnap => vec![],
    };
    paths.push(files.scratch().join(request.step.to_string()));
    paths
}

/// What filecoin-proofs' synthetic PoRep writes into the cache directory.
pub(in crate::step) const SYNTHETIC_PROOFS_FILE: &str = "syn-porep-vanilla-proofs.dat";

/// Cache files PC2 writes next to PC1's layers: tree-c, tree-r-last, p_aux and t_aux.
pub(in crate::step) fn pc2_cache_files(cache: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(cache) else {
        return vec![];
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("sc-02-data-tree-c")
                || name.starts_with("sc-02-data-tree-r-last")
                || name == "p_aux"
                || name == "t_aux"
        })
        .collect()
}

fn run_step(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    // filecoin-proofs reports some bad inputs by panicking; those are this request's fault, not a crash.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match request.step {
        StepKind::AddPiece => add_piece(request, files),
        StepKind::TreeD => tree_d(request, files),
        StepKind::Pc1 => pc1(request, files),
        StepKind::Pc2 => pc2(request, files),
        StepKind::SyntheticProofs => synthetic_proofs(request, files),
        StepKind::C1 => c1(request, files),
        StepKind::C2 => c2(request, files),
        StepKind::SnapEncode => snap_encode(request, files),
        StepKind::SnapProve => snap_prove(request, files),
        StepKind::Unseal => unseal(request, files),
        StepKind::Persist => persist(request, files),
        StepKind::Upload => upload(request, files),
        StepKind::VerifySeal => verify_seal(request),
        StepKind::VerifySnap => verify_snap(request),
    }));
    outcome.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".into());
        Err(StepError::permanent(format!(
            "filecoin-proofs panicked: {message}"
        )))
    })
}

/// filecoin-proofs errors: the inputs were checked first, so what is left is the computation failing.
pub(in crate::step) fn proof_error(what: &str) -> impl FnOnce(anyhow::Error) -> StepError + '_ {
    move |err| StepError::permanent(format!("{what} failed: {err:#}"))
}

/// An HTTP client that hands every status back to the step (it grades them itself), following at
/// most `max_redirects` redirects. A peer that does not take the connection within
/// [`CONNECT_TIMEOUT`] or answer within [`ANSWER_TIMEOUT`] (after an upload: a market storing
/// the piece) fails the step as temporary; a body that stops moving is the stall watchdog's
/// ([`crate::step::stall`]).
pub(in crate::step) fn http_agent(max_redirects: u32) -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .max_redirects(max_redirects)
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(ANSWER_TIMEOUT))
            .build(),
    )
}

pub(in crate::step) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
pub(in crate::step) const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

pub(in crate::step) fn need<'a, T>(
    request: &'a StepRequest,
    field: &str,
    value: &'a Option<T>,
) -> Result<&'a T, StepError> {
    value.as_ref().ok_or_else(|| {
        StepError::permanent(format!(
            "the {} request has no inputs.{field}",
            request.step
        ))
    })
}

pub(in crate::step) fn ticket(request: &StepRequest) -> Result<[u8; 32], StepError> {
    need(request, "ticket", &request.inputs.ticket).map(|t| t.0)
}

pub(in crate::step) fn comm_d(request: &StepRequest) -> Result<Commitment, StepError> {
    need(request, "commD", &request.inputs.comm_d).map(CommD::bytes)
}

pub(in crate::step) fn comm_r(request: &StepRequest) -> Result<Commitment, StepError> {
    need(request, "commR", &request.inputs.comm_r).map(CommR::bytes)
}

pub(in crate::step) fn unpadded(padded: u64) -> u64 {
    padded / 128 * 127
}

pub(in crate::step) fn read_json<T: serde::de::DeserializeOwned>(
    what: &str,
    path: &Path,
) -> Result<T, StepError> {
    let bytes = fs::read(path).map_err(|e| {
        StepError::critical(format!(
            "{what} {} is missing or unreadable: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StepError::critical(format!("{what} {} is corrupt: {e}", path.display())))
}

pub(in crate::step) fn write_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
    step: StepKind,
) -> Result<FileDigest, StepError> {
    write_atomic(
        path,
        &serde_json::to_vec(value).expect("step outputs serialize"),
        step,
    )
}

pub(in crate::step) fn named(role: &str, file: FileDigest) -> NamedFile {
    NamedFile {
        role: role.to_string(),
        file,
    }
}

pub(in crate::step) fn same_proof(
    what: &str,
    found: RegisteredSealProof,
    request: &StepRequest,
) -> Result<(), StepError> {
    let expected = request.seal_proof();
    if found != expected {
        return Err(StepError::permanent(format!(
            "{what} was made for proof type {found:?}, but this request is for {expected:?} \
             (sectorSize {}, syntheticPoRep {})",
            request.sector_size, request.synthetic_po_rep
        )));
    }
    Ok(())
}

/// Ticket or seed as the JSON of a request (tests and the bench build requests with these).
pub fn randomness(byte: u8) -> Bytes32 {
    let mut value = [byte; 32];
    // Randomness is a field element: the top two bits must be clear.
    value[31] &= 0x3f;
    Bytes32(value)
}
