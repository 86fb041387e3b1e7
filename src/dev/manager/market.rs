//! The dev manager's deal market: deals with real piece data (random bytes, CommP computed with
//! filecoin-proofs through damocles-step), bound to a sector by AcquireDeals as damocles-manager
//! binds the deals droplet assigns, and served at `/piecestore/<cid>` as damocles-manager serves
//! its piece stores. A sector's deals also fix its unsealed CID: SubmitPreCommit checks the
//! submitted CommD against it and proofs are verified with it (a sector without deals is
//! committed capacity: the CommD of zeros).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::info;

use super::dispatch::RpcFailure;
use super::server::{Shared, unix_ms};
use super::verify::{run_step, step_request};
use crate::manager::wire::{CidJson, DealInfo, PieceInfo, SectorId, SectorPiece};
use crate::sector::{CommD, SectorRef};
use crate::step::{
    PieceInput, PieceOutput, StepInputs, StepKind, StepOutputs, StepRequest, StepResult,
};

/// A deal the market holds, and the sector it went to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MarketDeal {
    pub deal_id: u64,
    pub piece_cid: String,
    /// Padded.
    pub piece_size: u64,
    pub payload_size: u64,
    pub start_epoch: i64,
    pub end_epoch: i64,
    #[serde(default)]
    pub sector: Option<u64>,
}

impl MarketDeal {
    fn sector_piece(&self, miner: u64) -> SectorPiece {
        let cid = CidJson {
            cid: self.piece_cid.clone(),
        };
        SectorPiece {
            piece: PieceInfo {
                size: self.piece_size,
                piece_cid: cid.clone(),
            },
            deal_info: Some(DealInfo {
                deal_id: self.deal_id,
                // A builtin-market deal is one with a publish message.
                publish_cid: Some(CidJson {
                    cid: format!("bafy2bzacedevmarketdeal{:08}", self.deal_id),
                }),
                piece_cid: Some(cid),
                piece_size: self.piece_size,
                client: "f01234".into(),
                provider: format!("f0{miner}"),
                length: self.piece_size,
                payload_size: self.payload_size,
                start_epoch: self.start_epoch,
                end_epoch: self.end_epoch,
                is_builtin_market: true,
                ..Default::default()
            }),
        }
    }
}

/// A filler piece as droplet lists one: zeros, deal and allocation 0.
fn filler(piece: &PieceOutput) -> SectorPiece {
    let cid = CidJson {
        cid: piece.cid.clone(),
    };
    SectorPiece {
        piece: PieceInfo {
            size: piece.size,
            piece_cid: cid.clone(),
        },
        deal_info: Some(DealInfo {
            piece_cid: Some(cid),
            piece_size: piece.size,
            length: piece.size,
            is_builtin_market: true,
            ..Default::default()
        }),
    }
}

fn piece_dir(shared: &Shared) -> PathBuf {
    shared.config.state_file.with_extension("pieces")
}

/// Runs damocles-step's add-piece and tree-d on `pieces` for a sector of `proof_type`: the
/// pieces' CIDs (fillers appended) and the sector's CommD.
pub(super) async fn sector_data(
    shared: &Shared,
    proof_type: i64,
    pieces: Vec<PieceInput>,
) -> Result<(Vec<PieceOutput>, CommD), RpcFailure> {
    let dir = shared
        .config
        .state_file
        .with_extension("data")
        .join(format!("{}-{}", unix_ms(), rand_suffix()));
    let sector = SectorRef {
        miner: shared.config.rules.miner,
        number: 0,
    };
    let result = async {
        let inputs = StepInputs {
            pieces,
            ..Default::default()
        };
        let added = step_request(proof_type, sector, StepKind::AddPiece, &dir, inputs)?;
        let pieces = step_outputs(shared, &added).await?.pieces;
        let tree_d = step_request(
            proof_type,
            sector,
            StepKind::TreeD,
            &dir,
            Default::default(),
        )?;
        let comm_d = step_outputs(shared, &tree_d).await?.comm_d;
        comm_d
            .map(|comm_d| (pieces, comm_d))
            .ok_or_else(|| RpcFailure::logic("tree-d gave no CommD".into()))
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn rand_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    u64::from_le_bytes(bytes)
}

/// What a step that must succeed produced; its failure, or its not running, as an error.
async fn step_outputs(shared: &Shared, request: &StepRequest) -> Result<StepOutputs, RpcFailure> {
    match run_step(shared, request).await? {
        (
            Some(StepResult {
                failure: Some(failed),
                ..
            }),
            _,
        ) => Err(RpcFailure::logic(format!(
            "{} failed: {}",
            request.step, failed.message
        ))),
        (Some(result), _) => Ok(result.outputs),
        (None, output) => Err(RpcFailure::logic(format!(
            "{} did not run ({:?}): {}",
            request.step,
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ))),
    }
}

/// The CommD of a committed-capacity sector of `proof_type` (zeros), computed once.
pub(super) async fn zero_comm_d(shared: &Shared, proof_type: i64) -> Result<CommD, RpcFailure> {
    if let Some(known) = shared.zero_comm_d.lock().expect("lock").get(&proof_type) {
        return Ok(*known);
    }
    let (_, comm_d) = sector_data(shared, proof_type, vec![]).await?;
    shared
        .zero_comm_d
        .lock()
        .expect("lock")
        .insert(proof_type, comm_d);
    Ok(comm_d)
}

/// The deals that go into sector `number`: those already bound to it (a crash after binding)
/// and free ones, in the market's order, as long as they fit with their alignment.
fn fitting_deals(deals: &[MarketDeal], number: u64, capacity: u64) -> Vec<MarketDeal> {
    let mut used = 0u64;
    let mut taken = vec![];
    for deal in deals {
        if deal.sector.is_some_and(|s| s != number) {
            continue;
        }
        let end = used.next_multiple_of(deal.piece_size) + deal.piece_size;
        if end <= capacity {
            used = end;
            taken.push(deal.clone());
        }
    }
    taken
}

/// A sector's piece list as the market gives it (the deals, then fillers up to the sector's
/// size) and the CommD those pieces give, computed from the stored piece bytes.
async fn sector_pieces(
    shared: &Shared,
    proof_type: i64,
    deals: &[MarketDeal],
) -> Result<(Vec<SectorPiece>, CommD), RpcFailure> {
    let dir = piece_dir(shared);
    let inputs = deals
        .iter()
        .map(|d| PieceInput {
            cid: Some(d.piece_cid.clone()),
            size: d.piece_size,
            source: Some(format!("file://{}", dir.join(&d.piece_cid).display())),
            payload_size: Some(d.payload_size),
        })
        .collect();
    let (outputs, comm_d) = sector_data(shared, proof_type, inputs).await?;
    let miner = shared.config.rules.miner;
    let pieces = deals
        .iter()
        .map(|d| d.sector_piece(miner))
        .chain(outputs[deals.len()..].iter().map(filler))
        .collect();
    Ok((pieces, comm_d))
}

/// AllocateSanpUpSector: a committed-capacity sector to upgrade with the market's free deals;
/// null without deals (damocles-manager never hands out an upgrade without them) or without a
/// sector to upgrade.
pub(super) async fn allocate_snapup(
    shared: &Shared,
    spec: &crate::manager::wire::AllocateSnapUpSpec,
) -> Result<Option<crate::manager::wire::AllocatedSnapUpSector>, RpcFailure> {
    let rules = shared.config.rules.clone();
    let head = shared.head();
    let Some((sector_size, _)) = crate::manager::wire::sector_of_proof_type(rules.proof_type)
    else {
        return Err(RpcFailure::logic(format!(
            "unsupported proof type {}",
            rules.proof_type
        )));
    };
    let (number, deals) = {
        let chain = shared.chain();
        let Some(number) = chain.snapup_candidate(&rules, spec, head) else {
            return Ok(None);
        };
        (
            number,
            fitting_deals(&chain.deals, number, sector_size.bytes()),
        )
    };
    if deals.is_empty() {
        return Ok(None);
    }
    let (pieces, comm_d) = sector_pieces(shared, rules.proof_type, &deals).await?;
    let allocated = {
        let mut chain = shared.chain();
        // Another call may have taken the sector or a deal meanwhile: then nothing is handed out.
        let still_free = chain.snapup_candidate(&rules, spec, head) == Some(number)
            && fitting_deals(&chain.deals, number, sector_size.bytes()) == deals;
        if !still_free {
            return Ok(None);
        }
        for deal in chain.deals.iter_mut() {
            if deals.iter().any(|d| d.deal_id == deal.deal_id) {
                deal.sector = Some(number);
            }
        }
        chain.allocate_snapup(&rules, number, head, pieces, comm_d.bytes())
    };
    Ok(allocated)
}

/// AcquireDeals: the sector's pieces if it has them; else the market's unassigned deals that fit,
/// bound to it, with filler pieces after them; null when the market has none (a CC sector).
pub(super) async fn acquire_deals(
    shared: &Shared,
    sector: SectorId,
) -> Result<Option<Vec<SectorPiece>>, RpcFailure> {
    let rules = shared.config.rules.clone();
    let (proof_type, deals) = {
        let mut chain = shared.chain();
        let record = chain.online(&rules, sector).map_err(RpcFailure::from)?;
        if !record.pieces.is_empty() {
            return Ok(Some(record.pieces.clone()));
        }
        let proof_type = record.proof_type;
        let Some((sector_size, _)) = crate::manager::wire::sector_of_proof_type(proof_type) else {
            return Err(RpcFailure::logic(format!(
                "unsupported proof type {proof_type}"
            )));
        };
        let deals = fitting_deals(&chain.deals, sector.number, sector_size.bytes());
        for deal in chain.deals.iter_mut() {
            if deals.iter().any(|d| d.deal_id == deal.deal_id) {
                deal.sector = Some(sector.number);
            }
        }
        (proof_type, deals)
    };
    if deals.is_empty() {
        return Ok(None);
    }
    let (pieces, comm_d) = sector_pieces(shared, proof_type, &deals).await?;
    {
        let mut chain = shared.chain();
        let record = chain.online(&rules, sector).map_err(RpcFailure::from)?;
        record.pieces = pieces.clone();
        record.unsealed = Some(comm_d.bytes());
    }
    info!(?sector, deals = deals.len(), %comm_d, "bound deals to the sector");
    Ok(Some(pieces))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct NewDeal {
    /// Random bytes of the deal.
    payload_size: u64,
    /// Padded piece size; default the smallest that holds the payload.
    #[serde(default)]
    piece_size: Option<u64>,
}

/// `POST /admin/deals`: a deal of random bytes, its CommP computed with filecoin-proofs, ready
/// for AcquireDeals. Answers the deal.
pub(super) async fn add_deal(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<NewDeal>,
) -> (StatusCode, Json<Value>) {
    let bad = |message: String| (StatusCode::BAD_REQUEST, Json(json!({"error": message})));
    let smallest = (request.payload_size.div_ceil(127) * 128)
        .max(128)
        .next_power_of_two();
    let piece_size = request.piece_size.unwrap_or(smallest);
    if request.payload_size == 0 || !piece_size.is_power_of_two() || piece_size < smallest {
        return bad(format!(
            "a payload of {} bytes needs a padded piece size of at least {smallest} (a power of two)",
            request.payload_size
        ));
    }
    let dir = piece_dir(&shared);
    let staged = dir.join(format!("new-{}-{}", unix_ms(), rand_suffix()));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        let mut payload = vec![0u8; request.payload_size as usize];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut payload)?;
        std::fs::write(&staged, payload)
    });
    if let Err(err) = written {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("cannot write the piece: {err}")})),
        );
    }
    let input = PieceInput {
        cid: None,
        size: piece_size,
        source: Some(format!("file://{}", staged.display())),
        payload_size: Some(request.payload_size),
    };
    let cid = match sector_data(&shared, shared.config.rules.proof_type, vec![input]).await {
        Ok((pieces, _)) => pieces[0].cid.clone(),
        Err(err) => {
            let _ = std::fs::remove_file(&staged);
            return bad(format!(
                "the piece does not fit this manager's sectors: {}",
                err.message
            ));
        }
    };
    if let Err(err) = std::fs::rename(&staged, dir.join(&cid)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("cannot store the piece: {err}")})),
        );
    }
    let head = shared.head();
    let deal = {
        let mut chain = shared.chain();
        let deal = MarketDeal {
            deal_id: chain.deals.len() as u64 + 1,
            piece_cid: cid,
            piece_size,
            payload_size: request.payload_size,
            start_epoch: head + 10_000,
            end_epoch: head + 1_500_000,
            sector: None,
        };
        chain.deals.push(deal.clone());
        deal
    };
    if let Err(err) = shared.save().await {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("{err:#}")})),
        );
    }
    info!(deal = deal.deal_id, piece = %deal.piece_cid, payload = deal.payload_size, "added a deal");
    (StatusCode::OK, Json(json!(deal)))
}

/// The piece CID a piece-store name stands for (`<cid>` or `<cid>.car`), or a 400 answer.
#[allow(clippy::result_large_err)]
fn piece_name(name: &str) -> Result<String, Response> {
    let cid = name.strip_suffix(".car").unwrap_or(name);
    let valid = cid.len() > 10
        && cid.starts_with("baga")
        && cid
            .chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c));
    if valid {
        Ok(cid.to_string())
    } else {
        Err((
            StatusCode::BAD_REQUEST,
            format!("invalid piece cid {cid:?}"),
        )
            .into_response())
    }
}

/// A file's bytes, or None when it does not exist.
async fn read_piece(path: PathBuf) -> Option<Vec<u8>> {
    tokio::task::spawn_blocking(move || std::fs::read(path))
        .await
        .ok()?
        .ok()
}

/// Writes a request body to `path` through a temporary file and a rename, so a reader never sees
/// half a piece and a failed upload leaves the old bytes. (Plain file writes: a test stand-in.)
async fn write_piece(path: PathBuf, body: Body) -> Result<u64, String> {
    use futures::StreamExt;
    use std::io::Write;
    let dir = path.parent().expect("pieces live in a directory");
    std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let partial = path.with_extension(format!("partial-{}", rand_suffix()));
    let mut file = std::fs::File::create(&partial)
        .map_err(|e| format!("create {}: {e}", partial.display()))?;
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    let result = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| format!("read the body: {e}"))?;
            file.write_all(&chunk)
                .map_err(|e| format!("write {}: {e}", partial.display()))?;
            written += chunk.len() as u64;
        }
        file.sync_all()
            .map_err(|e| format!("sync {}: {e}", partial.display()))?;
        std::fs::rename(&partial, &path).map_err(|e| format!("rename to {}: {e}", path.display()))
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    result.map(|()| written)
}

/// `GET /piecestore/<cid>` (or `<cid>.car`): a piece's bytes, as damocles-manager serves its
/// piece stores. A name that is no piece CID is 400; a piece this manager does not hold is
/// redirected to the market's `/resource?resource-id=<cid>`, as damocles-manager redirects it (it
/// never answers 404 itself).
pub(super) async fn get_piece(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
) -> Response {
    let cid = match piece_name(&name) {
        Ok(cid) => cid,
        Err(answer) => return answer,
    };
    match read_piece(piece_dir(&shared).join(&cid)).await {
        Some(bytes) => (StatusCode::OK, Body::from(bytes)).into_response(),
        None => (
            StatusCode::FOUND,
            [("Location", format!("/resource?resource-id={cid}"))],
        )
            .into_response(),
    }
}

/// `PUT /piecestore/<cid>`: stores a piece (what a `store:///<cid>` unseal destination does), as
/// damocles-manager writes it to its first writable piece store; 200 with an empty body.
pub(super) async fn put_piece(
    State(shared): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Body,
) -> Response {
    let cid = match piece_name(&name) {
        Ok(cid) => cid,
        Err(answer) => return answer,
    };
    match write_piece(piece_dir(&shared).join(&cid), body).await {
        Ok(bytes) => {
            info!(piece = %cid, bytes, "piece stored (PUT /piecestore)");
            StatusCode::OK.into_response()
        }
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("put piece data: {err}"),
        )
            .into_response(),
    }
}

/// A `/resource` request the market takes: its piece (`resource-id`) and, for a PUT, `store`.
struct ResourceRequest {
    cid: String,
    store: Option<String>,
}

/// Reads a `/resource` request as droplet does: the market token first (401), then the query
/// (400 without a piece CID).
#[allow(clippy::result_large_err)]
fn resource_request(
    shared: &Shared,
    headers: &HeaderMap,
    query: Option<String>,
) -> Result<ResourceRequest, Response> {
    market_auth(shared, headers)?;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let value = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let resource_id = value("resource-id")
        .ok_or_else(|| (StatusCode::BAD_REQUEST, "no resource-id").into_response())?;
    Ok(ResourceRequest {
        cid: piece_name(&resource_id)?,
        store: value("store"),
    })
}

/// Where the market keeps the stores `market://<store>/<cid>` uploads deliver to.
fn market_dir(shared: &Shared) -> PathBuf {
    shared.config.state_file.with_extension("market")
}

/// The market store of that name, when the name is one.
fn market_store(shared: &Shared, store: &str) -> Option<PathBuf> {
    let valid = !store.is_empty()
        && store
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    valid.then(|| market_dir(shared).join(store))
}

/// The market's answer to a request without its token: 401, as droplet's resource endpoint.
#[allow(clippy::result_large_err)]
fn market_auth(shared: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match (&shared.config.market_token, given) {
        (Some(token), Some(given)) if token == given => Ok(()),
        _ => Err((StatusCode::UNAUTHORIZED, "missing or wrong market token").into_response()),
    }
}

/// `GET /resource?resource-id=<cid>`: the market (droplet) serving a piece, with its token: one
/// of its deals' pieces, or one an unseal delivered to a market store.
pub(super) async fn get_resource(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let cid = match resource_request(&shared, &headers, query) {
        Ok(request) => request.cid,
        Err(answer) => return answer,
    };
    let mut places = vec![piece_dir(&shared).join(&cid)];
    if let Ok(entries) = std::fs::read_dir(market_dir(&shared)) {
        places.extend(entries.flatten().map(|entry| entry.path().join(&cid)));
    }
    for place in places {
        if let Some(bytes) = read_piece(place).await {
            return (StatusCode::OK, Body::from(bytes)).into_response();
        }
    }
    (StatusCode::NOT_FOUND, format!("resource {cid} not found")).into_response()
}

/// `PUT /resource?resource-id=<cid>&store=<store>` with the market token: what a
/// `market://<store>/<cid>` unseal destination delivers to (droplet's resource endpoint).
pub(super) async fn put_resource(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Response {
    let ResourceRequest { cid, store: named } = match resource_request(&shared, &headers, query) {
        Ok(request) => request,
        Err(answer) => return answer,
    };
    let Some(store) = named
        .as_deref()
        .and_then(|store| market_store(&shared, store))
    else {
        return (
            StatusCode::BAD_REQUEST,
            format!("no valid piece store named in {named:?}"),
        )
            .into_response();
    };
    match write_piece(store.join(&cid), body).await {
        Ok(bytes) => {
            info!(piece = %cid, bytes, store = ?named, "the market received a piece");
            StatusCode::OK.into_response()
        }
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err).into_response(),
    }
}

/// An unseal destination as damocles-manager's checkDestURL takes it: http(s), file and store
/// unchanged; market gets the market's host, scheme and token (this manager plays the market);
/// anything else is refused.
pub(super) fn check_destination(shared: &Shared, dest: &str) -> Result<String, String> {
    let scheme = dest.split_once("://").map(|(scheme, _)| scheme);
    match scheme {
        Some("http" | "https" | "file" | "store") => Ok(dest.to_string()),
        Some("market") => {
            let token =
                shared.config.market_token.as_ref().ok_or_else(|| {
                    format!("{dest}: no market API is configured (--market-token)")
                })?;
            let address = shared
                .address
                .get()
                .ok_or("the manager is not listening yet")?;
            let separator = if dest.contains('?') { '&' } else { '?' };
            Ok(format!(
                "{dest}{separator}token={token}&host={address}&scheme=http"
            ))
        }
        _ => Err(format!("{dest}: unsupported scheme")),
    }
}
