//! Proof verification for the dev manager: submitted PoRep and snap-up proofs are checked with
//! filecoin-proofs by running `damocles-step verify-seal` / `verify-snap`; the runner the market
//! uses for CommP and CommD as well.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::dispatch::RpcFailure;
use super::server::{Shared, unix_ms};
use crate::manager::wire::{SectorId, SnapUpOnChainInfo};
use crate::sector::SectorRef;
use crate::sector::{CommD, CommR};
use crate::step::{
    Bytes32, FileDigest, REQUEST_VERSION, SealedFiles, StepInputs, StepKind, StepRequest,
    StepResult,
};

/// Verifies a PoRep proof with filecoin-proofs, through `damocles-step verify-seal`.
pub(super) async fn verify(
    shared: &Shared,
    sector: SectorId,
    proof: &[u8],
) -> Result<bool, RpcFailure> {
    if shared.config.unverified_proofs {
        return Ok(!proof.is_empty());
    }
    let record = shared.record(sector)?;
    let (Some(precommit), Some(seed)) = (record.precommit, record.seed) else {
        return Err(RpcFailure::logic(format!(
            "{sector:?} has no PreCommit and seed to check a proof against"
        )));
    };
    // The chain verifies with the unsealed CID the sector's deals give, or the CommD of zeros
    // for a CC sector (its PreCommit carries none), whatever CommD the worker sealed with.
    let comm_d = match record.unsealed {
        Some(unsealed) => CommD::from_bytes(unsealed),
        None => super::market::zero_comm_d(shared, record.proof_type).await?,
    };
    let inputs = StepInputs {
        ticket: Some(Bytes32(precommit.info.ticket.ticket.0)),
        seed: Some(Bytes32(seed.seed.0)),
        comm_r: Some(CommR::from_bytes(precommit.info.comm_r)),
        comm_d: Some(comm_d),
        ..Default::default()
    };
    run_verifier(
        shared,
        sector,
        record.proof_type,
        StepKind::VerifySeal,
        inputs,
        proof,
    )
    .await
}

/// Verifies an empty-sector-update proof against the sector's old CommR, through `verify-snap`.
pub(super) async fn verify_snap(
    shared: &Shared,
    sector: SectorId,
    info: &SnapUpOnChainInfo,
) -> Result<bool, RpcFailure> {
    if shared.config.unverified_proofs {
        return Ok(!info.proof.0.is_empty());
    }
    let record = shared.record(sector)?;
    let Some(precommit) = record.precommit else {
        return Err(RpcFailure::logic(format!(
            "{sector:?} has no PreCommit: not a committed sector"
        )));
    };
    // The chain checks the update against the CommD of the pieces the upgrade was given.
    let comm_d = record.upgrade_unsealed.unwrap_or(info.comm_d);
    let inputs = StepInputs {
        comm_r: Some(CommR::from_bytes(info.comm_r)),
        comm_d: Some(CommD::from_bytes(comm_d)),
        // verify-snap reads only the old CommR; the paths are not opened.
        cc_sector: Some(SealedFiles {
            sealed: PathBuf::from("/unused"),
            cache: PathBuf::from("/unused"),
            comm_r: Some(CommR::from_bytes(precommit.info.comm_r)),
            comm_d: None,
            ticket: None,
        }),
        ..Default::default()
    };
    run_verifier(
        shared,
        sector,
        record.proof_type,
        StepKind::VerifySnap,
        inputs,
        &info.proof.0,
    )
    .await
}

async fn run_verifier(
    shared: &Shared,
    sector: SectorId,
    proof_type: i64,
    step: StepKind,
    mut inputs: StepInputs,
    proof: &[u8],
) -> Result<bool, RpcFailure> {
    let dir = shared
        .config
        .state_file
        .with_extension("verify")
        .join(format!("{}-{}", sector.number, unix_ms()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| RpcFailure::logic(format!("cannot create {}: {e}", dir.display())))?;
    let proof_path = dir.join("proof.bin");
    std::fs::write(&proof_path, proof)
        .map_err(|e| RpcFailure::logic(format!("cannot write the proof: {e}")))?;
    inputs.proof = Some(FileDigest {
        path: proof_path,
        sha256: hex::encode(Sha256::digest(proof)),
        size: proof.len() as u64,
    });
    let sector_ref = SectorRef {
        miner: sector.miner,
        number: sector.number,
    };
    let request = step_request(proof_type, sector_ref, step, &dir, inputs)?;
    let ran = run_step(shared, &request).await;
    let _ = std::fs::remove_dir_all(&dir);
    let (result, output) = ran?;
    match result.and_then(|r| r.outputs.verified) {
        Some(verified) => {
            info!(?sector, %step, verified, "checked a submitted proof with filecoin-proofs");
            Ok(verified)
        }
        None => {
            warn!(?sector, stderr = %String::from_utf8_lossy(&output.stderr), "proof verification did not run");
            Err(RpcFailure::logic(format!(
                "the proof could not be checked ({} exited {:?}); try again",
                shared.config.step_bin.display(),
                output.status.code()
            )))
        }
    }
}

/// A request for `step` on `sector` of `proof_type`'s size, working in `dir`, its result file
/// there too.
pub(super) fn step_request(
    proof_type: i64,
    sector: SectorRef,
    step: StepKind,
    dir: &Path,
    inputs: StepInputs,
) -> Result<StepRequest, RpcFailure> {
    let (sector_size, synthetic) = crate::manager::wire::sector_of_proof_type(proof_type)
        .ok_or_else(|| RpcFailure::logic(format!("unsupported proof type {proof_type}")))?;
    Ok(StepRequest {
        version: REQUEST_VERSION,
        step,
        sector,
        sector_size,
        synthetic_po_rep: synthetic,
        workspace: dir.to_path_buf(),
        persist: None,
        share: None,
        termination_message_path: Some(dir.join(format!("{step}.result.json"))),
        inputs,
        then: Vec::new(),
    })
}

/// Runs `damocles-step run` on `request` (written into its workspace): the result it wrote, if
/// any, and the process's output.
pub(super) async fn run_step(
    shared: &Shared,
    request: &StepRequest,
) -> Result<(Option<StepResult>, std::process::Output), RpcFailure> {
    let dir = &request.workspace;
    std::fs::create_dir_all(dir)
        .map_err(|e| RpcFailure::logic(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.request.json", request.step));
    std::fs::write(
        &path,
        serde_json::to_vec(request).expect("requests serialize"),
    )
    .map_err(|e| RpcFailure::logic(format!("cannot write {}: {e}", path.display())))?;
    let output = tokio::process::Command::new(&shared.config.step_bin)
        .args(["run", "--request"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|e| {
            RpcFailure::logic(format!(
                "cannot run {}: {e}",
                shared.config.step_bin.display()
            ))
        })?;
    // The whole result is the step's standard output; the termination message may only point
    // to it (a result over 4 KiB).
    let result = serde_json::from_slice(output.stdout.trim_ascii()).ok();
    Ok((result, output))
}
