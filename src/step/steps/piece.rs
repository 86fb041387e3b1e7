//! add-piece and tree-d: the sector's data and its CommD.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use filecoin_proofs_api::seal::{self};
use filecoin_proofs_api::{PieceInfo, UnpaddedBytesAmount};

use crate::sector::CommD;
use crate::step::destination::{host_allowed, host_of};
use crate::step::proofs::{data_cid, parse_data_cid};
use crate::step::workspace::{
    SectorFiles, check_size, commit, confine, create_dir, digest_file, partial_path,
};
use crate::step::{PieceInput, PieceOutput, StepError, StepKind, StepOutputs, StepRequest};

#[allow(unused_imports)]
use super::{files::*, porep::*, snap::*};
use crate::step::run::*;

pub(in crate::step) fn open_source(
    request: &StepRequest,
    source: &str,
) -> Result<Box<dyn Read>, StepError> {
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
        open_file(confine(root, Path::new(path.trim_start_matches('/')))?)
    } else if source.starts_with("http://") || source.starts_with("https://") {
        fetch_piece(source, &request.inputs.allowed_hosts)
    } else {
        Err(StepError::permanent(format!(
            "piece source {source:?} is not store://, file:// or http(s)://"
        )))
    }
}

/// How many redirects a piece fetch follows (ureq's default limit), each to an allowed host.
const PIECE_REDIRECTS: usize = 10;

/// GETs a piece as damocles-worker's fetcher does: the piece store without credentials; when it
/// redirects (damocles-manager sends a piece it does not hold to the market's
/// `/resource?resource-id=<cid>`), the new location with the market token, if one is set. Every
/// URL, the first and each redirect, must be on a host of `allowed`: the token goes only where
/// the admin said. Any status but 2xx is an error naming it.
fn fetch_piece(source: &str, allowed: &[String]) -> Result<Box<dyn Read>, StepError> {
    let get = |url: &str, token: Option<&str>| {
        if !host_allowed(allowed, url) {
            return Err(StepError::permanent(format!(
                "piece {url}: host {} is not in the allowed hosts {allowed:?} \
                 (profiles.allowedHosts; a market the manager redirects to must be listed)",
                host_of(url).unwrap_or_default()
            )));
        }
        let mut request = http_agent(0).get(url);
        if let Some(token) = token {
            request = request
                .header("Authorization", format!("Bearer {token}"))
                .header("X-VENUS-API-NAMESPACE", "v1.IMarket");
        }
        request
            .call()
            .map_err(|e| StepError::temporary(format!("cannot fetch piece {url}: {e}")))
    };
    let token = std::env::var(crate::step::destination::MARKET_TOKEN_ENV)
        .ok()
        .filter(|t| !t.is_empty());
    let mut response = get(source, None)?;
    let mut url = source.to_string();
    let mut redirects = 0;
    while response.status().is_redirection() {
        redirects += 1;
        if redirects > PIECE_REDIRECTS {
            return Err(StepError::permanent(format!(
                "piece {source}: more than {PIECE_REDIRECTS} redirects"
            )));
        }
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| {
                StepError::permanent(format!("piece {url}: a redirect without a Location"))
            })?;
        url = ureq::http::Uri::try_from(url.as_str())
            .ok()
            .and_then(|base| join_location(&base, location))
            .unwrap_or_else(|| location.to_string());
        response = get(&url, token.as_deref())?;
    }
    let status = response.status();
    if !status.is_success() {
        let level = if status.is_server_error() {
            StepError::temporary
        } else {
            StepError::permanent
        };
        return Err(level(format!("cannot fetch piece {url}: HTTP {status}")));
    }
    Ok(Box::new(crate::step::stall::watched(
        format!("piece {url}"),
        response.into_body().into_reader(),
    )))
}

/// A redirect's Location against the URL it answered: absolute as it is, a path on the same
/// scheme and authority.
fn join_location(base: &ureq::http::Uri, location: &str) -> Option<String> {
    if location.contains("://") {
        return Some(location.to_string());
    }
    let scheme = base.scheme_str()?;
    let authority = base.authority()?;
    location
        .starts_with('/')
        .then(|| format!("{scheme}://{authority}{location}"))
}

/// Counts the bytes a piece source gave, to tell a short payload from a complete one.
struct CountingReader<'a, R> {
    inner: R,
    count: &'a mut u64,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.count += n as u64;
        Ok(n)
    }
}

/// Zero pieces that fill `remaining` padded bytes after `used`, smallest first, so each starts
/// aligned to its own size (as lotus and damocles fill a sector).
pub(in crate::step) fn filler_sizes(used: u64, sector: u64) -> Vec<u64> {
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
pub(in crate::step) fn read_pieces(files: &SectorFiles) -> Result<Vec<PieceOutput>, StepError> {
    read_json("piece list", &files.output("pieces.json"))
}

/// A deal piece in the local piece directories, as damocles-worker's local piece store finds it:
/// `<dir>/<cid>`, then `<dir>/<cid>.car`, directory by directory. Only a well-formed piece CID
/// is looked up: the manager's text is never joined to a directory as a path.
fn local_piece(dirs: &[PathBuf], cid: &str) -> Option<PathBuf> {
    parse_data_cid("piece cid", cid).ok()?;
    dirs.iter()
        .flat_map(|dir| [dir.join(cid), dir.join(format!("{cid}.car"))])
        .find(|path| path.is_file())
}

pub(in crate::step) fn piece_infos(pieces: &[PieceOutput]) -> Result<Vec<PieceInfo>, StepError> {
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

pub(in crate::step) fn add_piece(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let proof = request.seal_proof();
    let sector = request.sector_size.bytes();
    let mut plan: Vec<&PieceInput> = vec![];
    let mut used = 0u64;
    for (index, piece) in request.inputs.pieces.iter().enumerate() {
        if !piece.size.is_power_of_two() || piece.size < 128 {
            return Err(StepError::permanent(format!(
                "inputs.pieces[{index}].size {} is not a power of two of at least 128 bytes",
                piece.size
            )));
        }
        if let Some(payload) = piece.payload_size
            && payload > unpadded(piece.size)
        {
            return Err(StepError::permanent(format!(
                "inputs.pieces[{index}]: a payload of {payload} bytes does not fit a {}-byte piece",
                piece.size
            )));
        }
        used = used.next_multiple_of(piece.size) + piece.size;
        plan.push(piece);
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
                   expected: Option<&str>,
                   payload: Option<u64>|
     -> Result<(), StepError> {
        let unpadded_size = unpadded(size);
        // Streamed: a piece file shorter than its slot is zero-filled; a longer one is refused below.
        // A deal's payload is read to its exact length, then zero-filled, as damocles-worker does.
        let mut read = 0u64;
        let counted = CountingReader {
            inner: (&mut source).take(payload.unwrap_or(unpadded_size)),
            count: &mut read,
        };
        let body = crate::step::stall::Consuming(counted.chain(io::repeat(0)).take(unpadded_size));
        let (info, _) = seal::add_piece(
            proof,
            body,
            &mut target,
            UnpaddedBytesAmount(unpadded_size),
            &added,
        )
        .map_err(proof_error("add piece"))?;
        if let Some(payload) = payload
            && read < payload
        {
            return Err(StepError::permanent(format!(
                "piece {}: its source ended after {read} of the deal's {payload} payload bytes",
                expected.unwrap_or("without a CID")
            )));
        }
        let mut extra = [0u8; 1];
        if payload.is_none()
            && source
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
    for piece in plan {
        let local = piece
            .cid
            .as_deref()
            .filter(|_| piece.source.is_some())
            .and_then(|cid| local_piece(&request.inputs.piece_dirs, cid));
        let reader: Box<dyn Read> = match (local, piece.source.as_deref()) {
            (Some(path), _) => {
                tracing::info!(piece = ?piece.cid, path = %path.display(), "piece found in a local piece directory");
                Box::new(BufReader::new(File::open(&path).map_err(|e| {
                    StepError::critical(format!("piece {} cannot be read: {e}", path.display()))
                })?))
            }
            (None, Some(source)) => open_source(request, source)?,
            (None, None) => Box::new(io::repeat(0).take(unpadded(piece.size))),
        };
        let payload = piece.payload_size.filter(|_| piece.source.is_some());
        add(piece.size, reader, piece.cid.as_deref(), payload)?;
    }
    for size in filler_sizes(used, sector) {
        add(
            size,
            Box::new(io::repeat(0).take(unpadded(size))),
            None,
            None,
        )?;
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

pub(in crate::step) fn tree_d(request: &StepRequest, files: &SectorFiles) -> StepOutcome {
    let pieces = read_pieces(files)?;
    check_size(
        "staged sector data",
        &files.staged(),
        request.sector_size.bytes(),
    )?;
    let comm_d = seal::compute_comm_d(request.seal_proof(), &piece_infos(&pieces)?)
        .map_err(proof_error("computing CommD"))?;
    Ok(StepOutputs {
        comm_d: Some(CommD::from_bytes(comm_d)),
        ..Default::default()
    })
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
