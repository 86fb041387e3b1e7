//! PC1, PC2, synthetic proofs, C1, C2 and verify-seal: the PoRep steps on filecoin-proofs.

use std::fs::{self, File};

use base64::Engine as _;

use filecoin_proofs_api::seal::{self, SealCommitPhase1Output, SealPreCommitPhase1Output};
use tracing::warn;

use crate::sector::{CommD, CommR};
use crate::step::params::Circuit;
use crate::step::proofs::{prover_id, sector_id};
use crate::step::workspace::{
    SectorFiles, check_dir, check_input, check_size, commit, create_dir, digest_file, partial_path,
    remove_any, write_atomic,
};
use crate::step::{StepError, StepKind, StepOutputs, StepRequest, params};

#[allow(unused_imports)]
use super::{files::*, piece::*, snap::*};
use crate::step::run::*;

pub(in crate::step) fn pc1(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let ticket = ticket(request)?;
    let pieces = piece_infos(&read_pieces(files)?)?;
    let staged = files.staged();
    check_size("staged sector data", &staged, request.sector_size.bytes())?;
    create_dir(&files.cache())?;
    // PC1 insists on copying the data into a replica file; PC2 makes its own copy, so this one is scratch.
    let scratch = files.scratch().join(StepKind::Pc1.to_string());
    create_dir(&scratch)?;
    let replica = scratch.join("replica");
    File::create(&replica)
        .map_err(|e| StepError::permanent(format!("cannot create {}: {e}", replica.display())))?;
    let output = seal::seal_pre_commit_phase1(
        request.seal_proof(),
        files.cache(),
        &staged,
        &replica,
        prover_id(request.sector.miner),
        sector_id(request.sector),
        ticket,
        &pieces,
    )
    .map_err(proof_error("PC1"))?;
    let comm_d = CommD::from_bytes(output.comm_d);
    let file = write_json(&files.output("pc1.json"), &output, StepKind::Pc1)?;
    remove_any(&scratch)?;
    Ok(StepOutputs {
        comm_d: Some(comm_d),
        files: vec![named("pc1-output", file)],
        ..Default::default()
    })
}

pub(in crate::step) fn pc2(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let phase1: SealPreCommitPhase1Output = read_json("PC1 output", &files.output("pc1.json"))?;
    same_proof("the PC1 output", phase1.registered_proof, request)?;
    let staged = files.staged();
    check_size("staged sector data", &staged, request.sector_size.bytes())?;
    check_dir("PC1 cache directory", &files.cache())?;
    // Encode a copy: if this process dies mid-PC2, the staged data and the layers are intact for a rerun.
    let sealed = files.sealed();
    create_dir(sealed.parent().expect("sealed file has a directory"))?;
    let partial = partial_path(&sealed);
    fs::copy(&staged, &partial).map_err(|e| {
        StepError::temporary(format!(
            "cannot copy {} to {}: {e}",
            staged.display(),
            partial.display()
        ))
    })?;
    let output = seal::seal_pre_commit_phase2(phase1, files.cache(), &partial)
        .map_err(proof_error("PC2"))?;
    commit(&partial, &sealed, StepKind::Pc2)?;
    Ok(StepOutputs {
        comm_r: Some(CommR::from_bytes(output.comm_r)),
        comm_d: Some(CommD::from_bytes(output.comm_d)),
        files: vec![named("sealed", digest_file(&sealed)?)],
        ..Default::default()
    })
}

pub(in crate::step) fn pre_commit_output(
    request: &StepRequest,
) -> Result<seal::SealPreCommitPhase2Output, StepError> {
    Ok(seal::SealPreCommitPhase2Output {
        registered_proof: request.seal_proof(),
        comm_r: comm_r(request)?,
        comm_d: comm_d(request)?,
    })
}

pub(in crate::step) fn check_sealed(
    request: &StepRequest,
    files: &SectorFiles,
) -> Result<(), StepError> {
    check_size(
        "sealed replica",
        &files.sealed(),
        request.sector_size.bytes(),
    )?;
    check_dir("sector cache directory", &files.cache())
}

pub(in crate::step) fn synthetic_proofs(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    if !request.synthetic_po_rep {
        return Err(StepError::permanent(
            "synthetic-proofs needs a synthetic PoRep sector (syntheticPoRep: true)",
        ));
    }
    check_sealed(request, files)?;
    let pieces = piece_infos(&read_pieces(files)?)?;
    seal::generate_synth_proofs(
        files.cache(),
        files.sealed(),
        prover_id(request.sector.miner),
        sector_id(request.sector),
        ticket(request)?,
        pre_commit_output(request)?,
        &pieces,
    )
    .map_err(proof_error("generating synthetic proofs"))?;
    let file = digest_file(&files.cache().join(SYNTHETIC_PROOFS_FILE))?;
    Ok(StepOutputs {
        files: vec![named("synthetic-proofs", file)],
        ..Default::default()
    })
}

pub(in crate::step) fn c1(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let seed = need(request, "seed", &request.inputs.seed)?.0;
    check_sealed(request, files)?;
    let pieces = piece_infos(&read_pieces(files)?)?;
    let output = seal::seal_commit_phase1(
        files.cache(),
        files.sealed(),
        prover_id(request.sector.miner),
        sector_id(request.sector),
        ticket(request)?,
        seed,
        pre_commit_output(request)?,
        &pieces,
    )
    .map_err(proof_error("C1"))?;
    // C2 on another node reads it from the shared directory; otherwise it stays in the workspace.
    let path = match &request.share {
        Some(share) => share.join("c1.json"),
        None => files.output("c1.json"),
    };
    let file = write_json(&path, &output, StepKind::C1)?;
    Ok(StepOutputs {
        files: vec![named(crate::step::C1_OUTPUT_ROLE, file)],
        ..Default::default()
    })
}

pub(in crate::step) fn c2(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let input = need(request, "c1Output", &request.inputs.c1_output)?;
    check_input("C1 output", input)?;
    let phase1: SealCommitPhase1Output = read_json("C1 output", &input.path)?;
    same_proof("the C1 output", phase1.registered_proof, request)?;
    params::announce_test_parameters(request.sector_size, Circuit::Porep);
    let (comm_r, comm_d, ticket, seed) = (phase1.comm_r, phase1.comm_d, phase1.ticket, phase1.seed);
    let prover = prover_id(request.sector.miner);
    let output = seal::seal_commit_phase2(phase1, prover, sector_id(request.sector))
        .map_err(proof_error("C2"))?;
    // A proof the chain would reject costs a PreCommit deposit: check it before anyone submits it.
    let valid = seal::verify_seal(
        request.seal_proof(),
        comm_r,
        comm_d,
        prover,
        sector_id(request.sector),
        ticket,
        seed,
        &output.proof,
    )
    .map_err(proof_error("verifying the new proof"))?;
    if !valid {
        return Err(StepError::temporary(
            "C2 produced a proof that does not verify; rerun C2",
        ));
    }
    let file = write_atomic(&files.output("proof.bin"), &output.proof, StepKind::C2)?;
    Ok(StepOutputs {
        files: vec![named(crate::step::PROOF_ROLE, file)],
        proof: Some(base64::engine::general_purpose::STANDARD.encode(&output.proof)),
        verified: Some(true),
        ..Default::default()
    })
}

pub(in crate::step) fn read_proof(request: &StepRequest) -> Result<Vec<u8>, StepError> {
    let proof = need(request, "proof", &request.inputs.proof)?;
    check_input("proof", proof)?;
    fs::read(&proof.path).map_err(|e| {
        StepError::critical(format!("cannot read proof {}: {e}", proof.path.display()))
    })
}

/// The outcome of a verify step. A proof the verifier cannot even parse fails to verify: that is the
/// proof's fault, not the verifier's.
pub(in crate::step) fn verdict(checked: anyhow::Result<bool>) -> StepOutcome {
    let verified = checked.unwrap_or_else(|err| {
        warn!("the proof cannot be checked: {err:#}");
        false
    });
    Ok(StepOutputs {
        verified: Some(verified),
        ..Default::default()
    })
}

pub(in crate::step) fn verify_seal(request: &StepRequest) -> StepOutcome {
    let proof = read_proof(request)?;
    params::announce_test_parameters(request.sector_size, Circuit::Porep);
    let verified = seal::verify_seal(
        request.seal_proof(),
        comm_r(request)?,
        comm_d(request)?,
        prover_id(request.sector.miner),
        sector_id(request.sector),
        ticket(request)?,
        need(request, "seed", &request.inputs.seed)?.0,
        &proof,
    );
    verdict(verified)
}
