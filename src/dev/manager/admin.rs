//! The dev manager's admin API under `/admin/`: fault injection, a view of the whole state, and
//! marking sectors to rebuild or pieces to unseal.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::chain::{ChainError, ChainRules, ChainState, UnsealJob};
use super::server::Shared;
use crate::manager::wire::SectorId;

/// Faults to inject into one method (admin API or flags).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// Fail this many next calls with a JSON-RPC error.
    #[serde(default)]
    pub fail_next: u32,
    /// Answer after this delay.
    #[serde(default)]
    pub latency_ms: u64,
    /// Answer with this raw result code: a submission (`Res`) is then not recorded, as if the
    /// manager refused it; a poll's `State` is replaced.
    #[serde(default)]
    pub force_result: Option<u64>,
    /// SubmitPreCommit and SubmitProof: the next this many messages sent fail on chain (as one
    /// out of gas or funds does): polled Failed with the receipt until resubmitted with reset.
    #[serde(default)]
    pub fail_on_chain: u32,
}

pub(super) async fn set_faults(
    State(shared): State<Arc<Shared>>,
    Json(faults): Json<HashMap<String, Fault>>,
) -> Json<Value> {
    let mut current = shared.faults.lock().expect("faults lock");
    for (method, fault) in faults {
        let method = method.trim_start_matches("Venus.").to_string();
        if fault == Fault::default() {
            current.remove(&method);
        } else {
            current.insert(method, fault);
        }
    }
    Json(json!(*current))
}

/// How the manager is out: it takes connections and never answers, or something in front of it
/// answers HTTP 503 without a JSON-RPC body. (For connection refused, stop the process.)
#[derive(Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum OutageMode {
    Hang,
    Unavailable,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct OutageRequest {
    seconds: u64,
    mode: OutageMode,
}

/// Stops `/rpc/v0` answering for a while; the admin API and the chain's clock go on.
pub(super) async fn set_outage(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<OutageRequest>,
) -> Json<Value> {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(request.seconds);
    *shared.outage.lock().expect("outage lock") = Some((until, request.mode));
    Json(json!({"ok": true, "seconds": request.seconds}))
}

pub(super) async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(*shared.faults.lock().expect("faults lock")))
}

pub(super) async fn get_state(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let chain = shared.chain().clone();
    Json(json!({"head": shared.head(), "rules": shared.config.rules, "chain": chain}))
}

type AdminReply = (StatusCode, Json<Value>);

async fn admin_change(
    shared: &Shared,
    change: impl FnOnce(&mut ChainState, &ChainRules, i64) -> Result<(), ChainError>,
) -> AdminReply {
    let head = shared.head();
    let changed = {
        let mut chain = shared.chain();
        chain.settle_upgrades(&shared.config.rules, head);
        change(&mut chain, &shared.config.rules, head)
    };
    if let Err(err) = changed {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": err.to_string()})),
        );
    }
    match shared.save().await {
        Ok(()) => (StatusCode::OK, Json(json!({"ok": true}))),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("{err:#}")})),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SectorRequest {
    number: u64,
}

impl SectorRequest {
    /// The sector of this manager's miner the request names.
    fn id(&self, shared: &Shared) -> SectorId {
        SectorId {
            miner: shared.config.rules.miner,
            number: self.number,
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RebuildRequest {
    number: u64,
    /// Keep the sector's deals as a v0.9-era manager did (legacy `Deals`), as if it had been
    /// sealed then: its rebuild gets them as `Pieces`.
    #[serde(default)]
    legacy_deals: bool,
}

/// Marks a committed sector's files as lost, so AllocateRebuildSector hands it out.
pub(super) async fn mark_rebuild(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<RebuildRequest>,
) -> AdminReply {
    let id = SectorRequest {
        number: request.number,
    }
    .id(&shared);
    admin_change(&shared, |chain, rules, head| {
        chain.mark_rebuild_as(rules, id, head, request.legacy_deals)
    })
    .await
}

/// Gives back an upgrade handed out to a worker that lost it (ChainState::release_snapup).
pub(super) async fn release_snapup(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<SectorRequest>,
) -> AdminReply {
    let id = request.id(&shared);
    admin_change(&shared, |chain, rules, _| chain.release_snapup(rules, id)).await
}

/// Takes an online sector offline, as ReportFinalized does: what a farm admin does by hand
/// (`damocles-manager util sealer sectors finalize`) after a rebuild or unseal job was handed to a
/// worker that lost it, before queueing the job again (a job is only handed out for an offline
/// sector).
pub(super) async fn finalize(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<SectorRequest>,
) -> AdminReply {
    let id = request.id(&shared);
    admin_change(&shared, |chain, rules, _| chain.finalize(rules, id)).await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct MinerRequest {
    use_synthetic_po_rep: bool,
}

/// Changes the miner's UseSyntheticPoRep: from then on it seals new sectors with the other
/// variant, and allocations filter by it (sectors sealed before keep their type).
pub(super) async fn set_miner(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<MinerRequest>,
) -> AdminReply {
    admin_change(&shared, |chain, rules, _| {
        chain.set_synthetic(rules, request.use_synthetic_po_rep)
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct UnsealQueueRequest {
    number: u64,
    piece_cid: String,
    #[serde(default)]
    offset: u64,
    size: u64,
    dest: Vec<String>,
}

/// Queues a piece to recover, so AllocateUnsealSector hands it out.
pub(super) async fn queue_unseal(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<UnsealQueueRequest>,
) -> AdminReply {
    let mut dest = vec![];
    for given in &request.dest {
        match super::market::check_destination(&shared, given) {
            Ok(checked) => dest.push(checked),
            Err(err) => {
                return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({"error": format!("check dest url: {err}")})),
                );
            }
        }
    }
    let job = UnsealJob {
        sector: request.number,
        piece_cid: request.piece_cid,
        offset: request.offset,
        size: request.size,
        dest,
        allocated: false,
        achieved: None,
    };
    admin_change(&shared, |chain, rules, head| {
        chain.queue_unseal(rules, job, head)
    })
    .await
}
