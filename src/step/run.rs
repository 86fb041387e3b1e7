//! The steps themselves: each reads its inputs, checks them before heavy work, calls filecoin-proofs,
//! and writes its outputs crash-safely (see [`super::workspace`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use base64::Engine as _;

use filecoin_proofs_api::seal::{self, SealCommitPhase1Output, SealPreCommitPhase1Output};
use filecoin_proofs_api::{
    Commitment, PieceInfo, RegisteredSealProof, UnpaddedByteIndex, UnpaddedBytesAmount, update,
};
use tracing::{info, warn};

use super::params::Circuit;
use super::proofs::{
    data_cid, parse_data_cid, parse_sealed_cid, prover_id, sealed_cid, sector_id, update_proof,
};
use super::workspace::{
    self, SectorFiles, check_dir, check_input, check_size, commit, create_dir, digest_file,
    partial_path, remove_any, write_atomic,
};
use super::{
    Bytes32, FileDigest, NamedFile, PieceOutput, REQUEST_VERSION, StepError, StepFailure, StepKind,
    StepOutputs, StepRequest, StepResult, params,
};

type StepOutcome = Result<StepOutputs, StepError>;

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
        }
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
const SYNTHETIC_PROOFS_FILE: &str = "syn-porep-vanilla-proofs.dat";

/// Cache files PC2 writes next to PC1's layers: tree-c, tree-r-last, p_aux and t_aux.
fn pc2_cache_files(cache: &Path) -> Vec<PathBuf> {
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
fn proof_error(what: &str) -> impl FnOnce(anyhow::Error) -> StepError + '_ {
    move |err| StepError::permanent(format!("{what} failed: {err:#}"))
}

fn need<'a, T>(
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

fn ticket(request: &StepRequest) -> Result<[u8; 32], StepError> {
    need(request, "ticket", &request.inputs.ticket).map(|t| t.0)
}

fn comm_d(request: &StepRequest) -> Result<Commitment, StepError> {
    Ok(parse_data_cid(
        "inputs.commD",
        need(request, "commD", &request.inputs.comm_d)?,
    )?)
}

fn comm_r(request: &StepRequest) -> Result<Commitment, StepError> {
    Ok(parse_sealed_cid(
        "inputs.commR",
        need(request, "commR", &request.inputs.comm_r)?,
    )?)
}

fn unpadded(padded: u64) -> u64 {
    padded / 128 * 127
}

fn read_json<T: serde::de::DeserializeOwned>(what: &str, path: &Path) -> Result<T, StepError> {
    let bytes = fs::read(path).map_err(|e| {
        StepError::critical(format!(
            "{what} {} is missing or unreadable: {e}",
            path.display()
        ))
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| StepError::critical(format!("{what} {} is corrupt: {e}", path.display())))
}

fn write_json<T: serde::Serialize>(
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

fn named(role: &str, file: FileDigest) -> NamedFile {
    NamedFile {
        role: role.to_string(),
        file,
    }
}

fn same_proof(
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

// ---- add-piece and tree-d -------------------------------------------------------------------------

fn open_source(request: &StepRequest, source: &str) -> Result<Box<dyn Read>, StepError> {
    let open_file = |path: PathBuf| -> Result<Box<dyn Read>, StepError> {
        let file = File::open(&path).map_err(|e| {
            StepError::critical(format!(
                "piece source {} cannot be read: {e}",
                path.display()
            ))
        })?;
        Ok(Box::new(BufReader::new(file)))
    };
    if let Some(path) = source.strip_prefix("file://") {
        open_file(PathBuf::from(path))
    } else if let Some(path) = source.strip_prefix("store://") {
        let root = need(
            request,
            "persist (the persist store root)",
            &request.persist,
        )?;
        open_file(root.join(path.trim_start_matches('/')))
    } else if source.starts_with("http://") || source.starts_with("https://") {
        let response = ureq::get(source)
            .call()
            .map_err(|e| StepError::temporary(format!("cannot fetch piece {source}: {e}")))?;
        Ok(Box::new(response.into_body().into_reader()))
    } else {
        Err(StepError::permanent(format!(
            "piece source {source:?} is not store://, file:// or http(s)://"
        )))
    }
}

/// Zero pieces that fill `remaining` padded bytes after `used`, smallest first, so each starts
/// aligned to its own size (as lotus and damocles fill a sector).
fn filler_sizes(used: u64, sector: u64) -> Vec<u64> {
    let mut remaining = sector - used;
    let mut sizes = vec![];
    while remaining > 0 {
        let size = 1u64 << remaining.trailing_zeros();
        sizes.push(size);
        remaining -= size;
    }
    sizes
}

/// Pieces as recorded in `outputs/pieces.json`.
fn read_pieces(files: &SectorFiles) -> Result<Vec<PieceOutput>, StepError> {
    read_json("piece list", &files.output("pieces.json"))
}

fn piece_infos(pieces: &[PieceOutput]) -> Result<Vec<PieceInfo>, StepError> {
    pieces
        .iter()
        .map(|p| {
            Ok(PieceInfo {
                commitment: parse_data_cid("piece cid", &p.cid)?,
                size: UnpaddedBytesAmount(unpadded(p.size)),
            })
        })
        .collect()
}

fn add_piece(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let proof = request.seal_proof();
    let sector = request.sector_size.bytes();
    let mut plan: Vec<(u64, Option<&str>, Option<&str>)> = vec![];
    let mut used = 0u64;
    for (index, piece) in request.inputs.pieces.iter().enumerate() {
        if !piece.size.is_power_of_two() || piece.size < 128 {
            return Err(StepError::permanent(format!(
                "inputs.pieces[{index}].size {} is not a power of two of at least 128 bytes",
                piece.size
            )));
        }
        used = used.next_multiple_of(piece.size) + piece.size;
        plan.push((piece.size, piece.source.as_deref(), piece.cid.as_deref()));
    }
    if used > sector {
        return Err(StepError::permanent(format!(
            "the pieces need {used} padded bytes with alignment; a {} sector holds {sector}",
            request.sector_size
        )));
    }
    let staged = files.staged();
    create_dir(staged.parent().expect("staged file has a directory"))?;
    let partial = partial_path(&staged);
    // add-piece reads back what it wrote for alignment, so the target is the plain file.
    let mut target = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(|e| StepError::permanent(format!("cannot create {}: {e}", partial.display())))?;
    let mut added: Vec<UnpaddedBytesAmount> = vec![];
    let mut outputs = vec![];
    let mut add = |size: u64,
                   mut source: Box<dyn Read>,
                   expected: Option<&str>|
     -> Result<(), StepError> {
        let unpadded_size = unpadded(size);
        // Streamed: a piece file shorter than its slot is zero-filled; a longer one is refused below.
        let body = (&mut source)
            .take(unpadded_size)
            .chain(io::repeat(0))
            .take(unpadded_size);
        let (info, _) = seal::add_piece(
            proof,
            body,
            &mut target,
            UnpaddedBytesAmount(unpadded_size),
            &added,
        )
        .map_err(proof_error("add piece"))?;
        let mut extra = [0u8; 1];
        if source
            .read(&mut extra)
            .map_err(|e| StepError::temporary(format!("cannot read piece: {e}")))?
            > 0
        {
            return Err(StepError::permanent(format!(
                "a piece source holds more than the {unpadded_size} unpadded bytes of its {size}-byte piece"
            )));
        }
        let cid = data_cid(&info.commitment);
        if let Some(expected) = expected
            && expected != cid
        {
            return Err(StepError::permanent(format!(
                "piece {expected} does not match its bytes: they have piece CID {cid}"
            )));
        }
        added.push(info.size);
        outputs.push(PieceOutput { cid, size });
        Ok(())
    };
    for (size, source, cid) in plan {
        let reader: Box<dyn Read> = match source {
            Some(source) => open_source(request, source)?,
            None => Box::new(io::repeat(0).take(unpadded(size))),
        };
        add(size, reader, cid)?;
    }
    for size in filler_sizes(used, sector) {
        add(size, Box::new(io::repeat(0).take(unpadded(size))), None)?;
    }
    drop(target);
    check_size("staged sector data", &partial, sector)?;
    commit(&partial, &staged, StepKind::AddPiece)?;
    let list = write_json(&files.output("pieces.json"), &outputs, StepKind::AddPiece)?;
    Ok(StepOutputs {
        pieces: outputs,
        files: vec![
            named("staged", digest_file(&staged)?),
            named("pieces", list),
        ],
        ..Default::default()
    })
}

fn tree_d(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let pieces = read_pieces(files)?;
    check_size(
        "staged sector data",
        &files.staged(),
        request.sector_size.bytes(),
    )?;
    let comm_d = seal::compute_comm_d(request.seal_proof(), &piece_infos(&pieces)?)
        .map_err(proof_error("computing CommD"))?;
    Ok(StepOutputs {
        comm_d: Some(data_cid(&comm_d)),
        ..Default::default()
    })
}

// ---- PC1, PC2, synthetic proofs, C1, C2 -------------------------------------------------------------

fn pc1(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
    let comm_d = data_cid(&output.comm_d);
    let file = write_json(&files.output("pc1.json"), &output, StepKind::Pc1)?;
    remove_any(&scratch)?;
    Ok(StepOutputs {
        comm_d: Some(comm_d),
        files: vec![named("pc1-output", file)],
        ..Default::default()
    })
}

fn pc2(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
        comm_r: Some(sealed_cid(&output.comm_r)),
        comm_d: Some(data_cid(&output.comm_d)),
        files: vec![named("sealed", digest_file(&sealed)?)],
        ..Default::default()
    })
}

fn pre_commit_output(request: &StepRequest) -> Result<seal::SealPreCommitPhase2Output, StepError> {
    Ok(seal::SealPreCommitPhase2Output {
        registered_proof: request.seal_proof(),
        comm_r: comm_r(request)?,
        comm_d: comm_d(request)?,
    })
}

fn check_sealed(request: &StepRequest, files: &SectorFiles) -> Result<(), StepError> {
    check_size(
        "sealed replica",
        &files.sealed(),
        request.sector_size.bytes(),
    )?;
    check_dir("sector cache directory", &files.cache())
}

fn synthetic_proofs(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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

fn c1(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
        files: vec![named(super::C1_OUTPUT_ROLE, file)],
        ..Default::default()
    })
}

fn c2(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
        files: vec![named(super::PROOF_ROLE, file)],
        proof: Some(base64::engine::general_purpose::STANDARD.encode(&output.proof)),
        verified: Some(true),
        ..Default::default()
    })
}

fn read_proof(request: &StepRequest) -> Result<Vec<u8>, StepError> {
    let proof = need(request, "proof", &request.inputs.proof)?;
    check_input("proof", proof)?;
    fs::read(&proof.path).map_err(|e| {
        StepError::critical(format!("cannot read proof {}: {e}", proof.path.display()))
    })
}

/// The outcome of a verify step. A proof the verifier cannot even parse fails to verify: that is the
/// proof's fault, not the verifier's.
fn verdict(checked: anyhow::Result<bool>) -> StepOutcome {
    let verified = checked.unwrap_or_else(|err| {
        warn!("the proof cannot be checked: {err:#}");
        false
    });
    Ok(StepOutputs {
        verified: Some(verified),
        ..Default::default()
    })
}

fn verify_seal(request: &StepRequest) -> StepOutcome {
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

// ---- snapup -----------------------------------------------------------------------------------------

fn cc_sector(request: &StepRequest) -> Result<&super::SealedFiles, StepError> {
    let cc = need(request, "ccSector", &request.inputs.cc_sector)?;
    check_size("CC sector replica", &cc.sealed, request.sector_size.bytes())?;
    check_dir("CC sector cache directory", &cc.cache)?;
    Ok(cc)
}

fn snap_encode(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
        comm_r: Some(sealed_cid(&encoded.comm_r_new)),
        comm_d: Some(data_cid(&encoded.comm_d_new)),
        files: vec![named("update", digest_file(&update)?)],
        ..Default::default()
    })
}

fn snap_prove(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let cc = cc_sector(request)?;
    let comm_r_old = parse_sealed_cid(
        "inputs.ccSector.commR",
        need(request, "ccSector.commR", &cc.comm_r)?,
    )?;
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
        files: vec![named(super::PROOF_ROLE, file)],
        proof: Some(base64::engine::general_purpose::STANDARD.encode(&proof.0)),
        verified: Some(true),
        ..Default::default()
    })
}

fn verify_snap(request: &StepRequest) -> StepOutcome {
    let proof = read_proof(request)?;
    let cc = need(request, "ccSector", &request.inputs.cc_sector)?;
    params::announce_test_parameters(request.sector_size, Circuit::EmptySectorUpdate);
    let verified = update::verify_empty_sector_update_proof(
        update_proof(request.sector_size),
        &proof,
        parse_sealed_cid(
            "inputs.ccSector.commR",
            need(request, "ccSector.commR", &cc.comm_r)?,
        )?,
        comm_r(request)?,
        comm_d(request)?,
    );
    verdict(verified)
}

// ---- unseal, persist, upload ------------------------------------------------------------------------

fn unseal(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let sealed = need(request, "sealed", &request.inputs.sealed)?;
    let range = *need(request, "unseal", &request.inputs.unseal)?;
    let capacity = unpadded(request.sector_size.bytes());
    if range.size == 0
        || range
            .offset
            .checked_add(range.size)
            .is_none_or(|end| end > capacity)
    {
        return Err(StepError::permanent(format!(
            "unseal range {}+{} is outside the {capacity} unpadded bytes of a {} sector",
            range.offset, range.size, request.sector_size
        )));
    }
    let comm_d = parse_data_cid(
        "inputs.sealed.commD",
        need(request, "sealed.commD", &sealed.comm_d)?,
    )?;
    let ticket = need(request, "sealed.ticket", &sealed.ticket)?.0;
    check_size(
        "sealed replica",
        &sealed.sealed,
        request.sector_size.bytes(),
    )?;
    check_dir("sector cache directory", &sealed.cache)?;
    let path = files.output("unsealed-piece");
    create_dir(&files.outputs())?;
    let partial = partial_path(&path);
    let mut out =
        BufWriter::new(File::create(&partial).map_err(|e| {
            StepError::permanent(format!("cannot create {}: {e}", partial.display()))
        })?);
    let replica = File::open(&sealed.sealed).map_err(|e| {
        StepError::critical(format!("cannot open {}: {e}", sealed.sealed.display()))
    })?;
    let written = seal::unseal_range(
        request.seal_proof(),
        &sealed.cache,
        replica,
        &mut out,
        prover_id(request.sector.miner),
        sector_id(request.sector),
        comm_d,
        ticket,
        UnpaddedByteIndex(range.offset),
        UnpaddedBytesAmount(range.size),
    )
    .map_err(proof_error("unseal"))?;
    out.into_inner()
        .map_err(|e| StepError::permanent(format!("cannot write {}: {e}", partial.display())))?;
    if written.0 != range.size {
        return Err(StepError::permanent(format!(
            "unseal wrote {} bytes, asked for {}",
            written.0, range.size
        )));
    }
    commit(&partial, &path, StepKind::Unseal)?;
    Ok(StepOutputs {
        files: vec![named("unsealed-piece", digest_file(&path)?)],
        ..Default::default()
    })
}

/// Copies a file crash-safely and checks the copy against the source digest.
fn copy_checked(source: &Path, target: &Path, step: StepKind) -> Result<FileDigest, StepError> {
    let expected = digest_file(source)?;
    create_dir(target.parent().expect("copies go into a directory"))?;
    let partial = partial_path(target);
    fs::copy(source, &partial).map_err(|e| {
        StepError::temporary(format!(
            "cannot copy {} to {}: {e}",
            source.display(),
            partial.display()
        ))
    })?;
    commit(&partial, target, step)?;
    let copied = digest_file(target)?;
    if copied.sha256 != expected.sha256 || copied.size != expected.size {
        return Err(StepError::temporary(format!(
            "the copy {} does not match its source {} (sha256 {} vs {})",
            target.display(),
            source.display(),
            copied.sha256,
            expected.sha256
        )));
    }
    Ok(copied)
}

/// Cache files a sealed sector needs in long-term storage (damocles keeps the same set).
fn persisted_cache_files(cache: &Path) -> Result<Vec<PathBuf>, StepError> {
    let entries = fs::read_dir(cache).map_err(|e| {
        StepError::critical(format!(
            "sector cache directory {} is unreadable: {e}",
            cache.display()
        ))
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name == "p_aux" || name == "t_aux" || name.starts_with("sc-02-data-tree-r-last")
        })
        .collect();
    paths.sort();
    Ok(paths)
}

fn persist(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let root = need(
        request,
        "persist (the persist store root)",
        &request.persist,
    )?;
    let store = SectorFiles::new(root, request.sector);
    // A snapup persists the updated replica; a sealer or rebuild the sealed one.
    let (replica, cache, store_replica, store_cache) = if files.update().exists() {
        (
            files.update(),
            files.update_cache(),
            store.update(),
            store.update_cache(),
        )
    } else {
        (files.sealed(), files.cache(), store.sealed(), store.cache())
    };
    check_size("replica", &replica, request.sector_size.bytes())?;
    let cache_files = persisted_cache_files(&cache)?;
    if !cache_files.iter().any(|p| p.ends_with("p_aux")) {
        return Err(StepError::critical(format!(
            "{} has no p_aux: PC2 did not finish",
            cache.display()
        )));
    }
    let mut outputs = vec![named(
        "replica",
        copy_checked(&replica, &store_replica, StepKind::Persist)?,
    )];
    for file in cache_files {
        let target = store_cache.join(file.file_name().expect("cache entries have names"));
        outputs.push(named(
            "cache",
            copy_checked(&file, &target, StepKind::Persist)?,
        ));
    }
    Ok(StepOutputs {
        files: outputs,
        ..Default::default()
    })
}

fn upload(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let destination = need(request, "destination", &request.inputs.destination)?;
    let source = files.output("unsealed-piece");
    let digest = digest_file(&source)?;
    if let Some(path) = destination.strip_prefix("file://") {
        copy_checked(&source, Path::new(path), StepKind::Upload)?;
    } else if let Some(path) = destination.strip_prefix("store://") {
        let root = need(
            request,
            "persist (the persist store root)",
            &request.persist,
        )?;
        copy_checked(
            &source,
            &root.join(path.trim_start_matches('/')),
            StepKind::Upload,
        )?;
    } else if destination.starts_with("http://") || destination.starts_with("https://") {
        let bytes = fs::read(&source)
            .map_err(|e| StepError::critical(format!("cannot read {}: {e}", source.display())))?;
        ureq::put(destination)
            .header("Content-Type", "application/octet-stream")
            .send(&bytes[..])
            .map_err(|e| StepError::temporary(format!("cannot upload to {destination}: {e}")))?;
    } else {
        return Err(StepError::permanent(format!(
            "upload destination {destination:?} is not file://, store:// or http(s)://"
        )));
    }
    Ok(StepOutputs {
        destination: Some(destination.clone()),
        files: vec![named("uploaded", digest)],
        ..Default::default()
    })
}

/// Ticket or seed as the JSON of a request (tests and the bench build requests with these).
pub fn randomness(byte: u8) -> Bytes32 {
    let mut value = [byte; 32];
    // Randomness is a field element: the top two bits must be clear.
    value[31] &= 0x3f;
    Bytes32(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_are_powers_of_two_aligned_to_their_offset() {
        assert_eq!(filler_sizes(0, 2048), vec![2048]);
        assert_eq!(filler_sizes(128, 2048), vec![128, 256, 512, 1024]);
        let mut offset = 512;
        for size in filler_sizes(512, 2048) {
            assert_eq!(offset % size, 0);
            offset += size;
        }
        assert_eq!(offset, 2048);
    }
}
