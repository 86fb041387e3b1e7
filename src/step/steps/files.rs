//! unseal, persist and upload: moving a sector's files and pieces where they belong.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use filecoin_proofs_api::seal::{self};
use filecoin_proofs_api::{UnpaddedByteIndex, UnpaddedBytesAmount};

use crate::step::proofs::{prover_id, sector_id};
use crate::step::workspace::{
    SectorFiles, check_dir, check_size, commit, create_dir, digest_file, partial_path,
};
use crate::step::{FileDigest, StepError, StepKind, StepOutputs, StepRequest};

#[allow(unused_imports)]
use super::{piece::*, porep::*, snap::*};
use crate::step::run::*;

pub(in crate::step) fn unseal(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
    let comm_d = need(request, "sealed.commD", &sealed.comm_d)?.bytes();
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
pub(in crate::step) fn copy_checked(
    source: &Path,
    target: &Path,
    step: StepKind,
) -> Result<FileDigest, StepError> {
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
pub(in crate::step) fn persisted_cache_files(cache: &Path) -> Result<Vec<PathBuf>, StepError> {
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

pub(in crate::step) fn persist(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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

pub(in crate::step) fn upload(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
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
