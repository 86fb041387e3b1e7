//! unseal, persist and upload: moving a sector's files and pieces where they belong.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use filecoin_proofs_api::seal::{self};
use filecoin_proofs_api::{UnpaddedByteIndex, UnpaddedBytesAmount};

use crate::step::destination::{
    Destination, MARKET_TOKEN_ENV, REDACTED_TOKEN, delivery_root, host_allowed, redact,
};
use crate::step::proofs::{prover_id, sector_id};
use crate::step::workspace::{
    SectorFiles, check_dir, check_size, commit, confine, create_dir, digest_file, partial_path,
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
    // Every replica the workspace holds: a sealer's or rebuild's sealed one, a snapup's updated
    // one, and both for the rebuild of an upgraded sector (its sealed replica is the sector key
    // the update was encoded into, kept so the sector stays whole).
    let replicas = [
        (files.sealed(), files.cache(), store.sealed(), store.cache()),
        (
            files.update(),
            files.update_cache(),
            store.update(),
            store.update_cache(),
        ),
    ];
    let present: Vec<_> = replicas
        .into_iter()
        .filter(|(replica, ..)| replica.exists())
        .collect();
    if present.is_empty() {
        return Err(StepError::critical(format!(
            "neither {} nor {} exists: no replica to persist",
            files.sealed().display(),
            files.update().display()
        )));
    }
    let mut outputs = vec![];
    for (replica, cache, store_replica, store_cache) in present {
        check_size("replica", &replica, request.sector_size.bytes())?;
        let cache_files = persisted_cache_files(&cache)?;
        if !cache_files.iter().any(|p| p.ends_with("p_aux")) {
            return Err(StepError::critical(format!(
                "{} has no p_aux: PC2 did not finish",
                cache.display()
            )));
        }
        outputs.push(named(
            "replica",
            copy_checked(&replica, &store_replica, StepKind::Persist)?,
        ));
        for file in cache_files {
            let target = store_cache.join(file.file_name().expect("cache entries have names"));
            outputs.push(named(
                "cache",
                copy_checked(&file, &target, StepKind::Persist)?,
            ));
        }
    }
    Ok(StepOutputs {
        files: outputs,
        ..Default::default()
    })
}

/// Delivers the unsealed piece to every destination the manager gave, in its order, as
/// damocles-worker's unseal upload does: a failure stops at that destination (the earlier ones
/// are delivered again on the retry; every delivery overwrites). Failure levels follow the
/// worker: an http(s) or piece-store PUT that fails is temporary, a market that answers anything
/// but 200 is permanent, as is a destination the step cannot reach.
pub(in crate::step) fn upload(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    if request.inputs.destinations.is_empty() {
        return Err(StepError::permanent(
            "the upload request has no inputs.destinations (the manager gave none)",
        ));
    }
    let source = files.output("unsealed-piece");
    let digest = digest_file(&source)?;
    let mut delivered = vec![];
    let inputs = &request.inputs;
    for text in &inputs.destinations {
        let destination =
            Destination::parse(text).map_err(|e| StepError::permanent(e.to_string()))?;
        // The task checked the same before it ran this step; a request made otherwise is held
        // to the same allowlists.
        if let Some(why) = destination.forbidden(&inputs.allowed_hosts, &inputs.delivery_roots) {
            return Err(StepError::permanent(format!("{destination}: {why}")));
        }
        deliver(request, &source, &destination)?;
        tracing::info!(%destination, bytes = digest.size, "delivered the unsealed piece");
        delivered.push(redact(text));
    }
    Ok(StepOutputs {
        delivered,
        files: vec![named("uploaded", digest)],
        ..Default::default()
    })
}

fn deliver(
    request: &StepRequest,
    source: &Path,
    destination: &Destination,
) -> Result<(), StepError> {
    match destination {
        Destination::Http(url) => put(source, url, None, false),
        Destination::PieceStore { piece } => {
            let store = need(request, "pieceStore", &request.inputs.piece_store)?;
            let url = format!("{store}{piece}");
            if !host_allowed(&request.inputs.allowed_hosts, &url) {
                return Err(StepError::permanent(format!(
                    "{destination}: the piece store {store} is not in inputs.allowedHosts"
                )));
            }
            put(source, &url, None, false)
        }
        Destination::Market { endpoint, token } => {
            let token = if token == REDACTED_TOKEN {
                std::env::var(MARKET_TOKEN_ENV)
                    .ok()
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        StepError::permanent(format!(
                            "{destination} needs the market's token: the task records the \
                             manager's destinations without it, so set {MARKET_TOKEN_ENV} in the \
                             upload step's env (the Secret with droplet's token, as for deal \
                             pieces)"
                        ))
                    })?
            } else {
                token.clone()
            };
            put(source, endpoint, Some(&token), true)
        }
        Destination::File(path) => {
            let roots = &request.inputs.delivery_roots;
            let root = delivery_root(roots, path).ok_or_else(|| {
                StepError::permanent(format!("{destination}: not under {roots:?}"))
            })?;
            let relative = path.strip_prefix(root).expect("under its root");
            let target = confine(root, relative)?;
            copy_checked(source, &target, StepKind::Upload).map(|_| ())
        }
        Destination::Store { instance, path } => {
            let root = request.inputs.stores.get(instance).ok_or_else(|| {
                StepError::permanent(format!(
                    "{destination}: store {instance} is not mounted for this step"
                ))
            })?;
            let target = confine(root, Path::new(path))?;
            copy_checked(source, &target, StepKind::Upload).map(|_| ())
        }
    }
}

/// PUTs the file with its length (as reqwest sends a file in damocles-worker). `market`: only
/// 200 is success and any other answer permanent (the market refused it); otherwise any 2xx, and
/// other answers are temporary.
fn put(source: &Path, url: &str, token: Option<&str>, market: bool) -> Result<(), StepError> {
    let file = File::open(source)
        .map_err(|e| StepError::critical(format!("cannot read {}: {e}", source.display())))?;
    let length = file
        .metadata()
        .map_err(|e| StepError::critical(format!("cannot read {}: {e}", source.display())))?
        .len();
    // No redirects: a redirected PUT would send the piece (and the market's token) to a host
    // nobody checked; damocles-worker's streamed PUT does not follow one either.
    let mut request = http_agent(0)
        .put(url)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Length", length.to_string());
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let shown = redact(url);
    let file = crate::step::stall::watched(format!("upload to {shown}"), file);
    let mut response = request
        .send(ureq::SendBody::from_owned_reader(file))
        .map_err(|e| StepError::temporary(format!("cannot upload to {shown}: {e}")))?;
    let status = response.status();
    let delivered = if market {
        status == 200
    } else {
        status.is_success()
    };
    if delivered {
        return Ok(());
    }
    let body = response.body_mut().read_to_string().unwrap_or_default();
    let level = if market {
        StepError::permanent
    } else {
        StepError::temporary
    };
    Err(level(format!(
        "upload to {shown}: HTTP {status}: {}",
        body.trim()
    )))
}
