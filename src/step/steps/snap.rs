//! Snap-up: encode the new data into a CC replica, prove and verify the update.

use std::fs::File;

use base64::Engine as _;

use filecoin_proofs_api::update;

use crate::sector::{CommD, CommR};
use crate::step::params::Circuit;
use crate::step::proofs::update_proof;
use crate::step::workspace::{
    SectorFiles, check_dir, check_size, commit, create_dir, digest_file, partial_path, write_atomic,
};
use crate::step::{StepError, StepKind, StepOutputs, StepRequest, params};

#[allow(unused_imports)]
use super::{files::*, piece::*, porep::*};
use crate::step::run::*;

pub(in crate::step) fn cc_sector(
    request: &StepRequest,
) -> Result<&crate::step::SealedFiles, StepError> {
    let cc = need(request, "ccSector", &request.inputs.cc_sector)?;
    check_size("CC sector replica", &cc.sealed, request.sector_size.bytes())?;
    check_dir("CC sector cache directory", &cc.cache)?;
    Ok(cc)
}

pub(in crate::step) fn snap_encode(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let cc = cc_sector(request)?;
    let pieces = piece_infos(&read_pieces(files)?)?;
    let staged = files.staged();
    check_size("staged deal data", &staged, request.sector_size.bytes())?;
    let (update, update_cache) = (files.update(), files.update_cache());
    create_dir(update.parent().expect("update file has a directory"))?;
    let (partial, partial_cache) = (partial_path(&update), partial_path(&update_cache));
    create_dir(&partial_cache)?;
    File::create(&partial)
        .and_then(|f| f.set_len(request.sector_size.bytes()))
        .map_err(|e| StepError::permanent(format!("cannot create {}: {e}", partial.display())))?;
    let encoded = update::empty_sector_update_encode_into(
        update_proof(request.sector_size),
        &partial,
        &partial_cache,
        &cc.sealed,
        &cc.cache,
        &staged,
        &pieces,
    )
    .map_err(proof_error("snap encode"))?;
    commit(&partial_cache, &update_cache, StepKind::SnapEncode)?;
    commit(&partial, &update, StepKind::SnapEncode)?;
    Ok(StepOutputs {
        comm_r: Some(CommR::from_bytes(encoded.comm_r_new)),
        comm_d: Some(CommD::from_bytes(encoded.comm_d_new)),
        files: vec![named("update", digest_file(&update)?)],
        ..Default::default()
    })
}

pub(in crate::step) fn snap_prove(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let cc = cc_sector(request)?;
    let comm_r_old = need(request, "ccSector.commR", &cc.comm_r)?.bytes();
    let (comm_r_new, comm_d_new) = (comm_r(request)?, comm_d(request)?);
    check_size(
        "updated replica",
        &files.update(),
        request.sector_size.bytes(),
    )?;
    check_dir("updated replica cache", &files.update_cache())?;
    params::announce_test_parameters(request.sector_size, Circuit::EmptySectorUpdate);
    let proof_type = update_proof(request.sector_size);
    let proof = update::generate_empty_sector_update_proof(
        proof_type,
        comm_r_old,
        comm_r_new,
        comm_d_new,
        &cc.sealed,
        &cc.cache,
        files.update(),
        files.update_cache(),
    )
    .map_err(proof_error("snap prove"))?;
    let valid = update::verify_empty_sector_update_proof(
        proof_type, &proof.0, comm_r_old, comm_r_new, comm_d_new,
    )
    .map_err(proof_error("verifying the new snap proof"))?;
    if !valid {
        return Err(StepError::temporary(
            "snap-prove produced a proof that does not verify; rerun it",
        ));
    }
    let file = write_atomic(
        &files.output("snap-proof.bin"),
        &proof.0,
        StepKind::SnapProve,
    )?;
    Ok(StepOutputs {
        files: vec![named(crate::step::PROOF_ROLE, file)],
        proof: Some(base64::engine::general_purpose::STANDARD.encode(&proof.0)),
        verified: Some(true),
        ..Default::default()
    })
}

pub(in crate::step) fn verify_snap(request: &StepRequest) -> StepOutcome {
    let proof = read_proof(request)?;
    let cc = need(request, "ccSector", &request.inputs.cc_sector)?;
    params::announce_test_parameters(request.sector_size, Circuit::EmptySectorUpdate);
    let verified = update::verify_empty_sector_update_proof(
        update_proof(request.sector_size),
        &proof,
        need(request, "ccSector.commR", &cc.comm_r)?.bytes(),
        comm_r(request)?,
        comm_d(request)?,
    );
    verdict(verified)
}
