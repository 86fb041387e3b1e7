//! The dev manager's HTTP side: damocles-manager's `/rpc/v0` over [`ChainState`], a clock that turns
//! wall time into epochs, a state file that survives restarts, real proof verification through
//! `damocles-step verify-seal`, and an admin API for fault injection and inspection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::chain::UnsealJob;
use super::chain::{ChainError, ChainRules, ChainState};
use super::lifecycle::{SnapUpChecks, reserve_space};
use crate::manager::Method;
use crate::manager::wire::{
    AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, CidJson, ERR_INVALID_PARAMS,
    ERR_METHOD_NOT_FOUND, ERR_SECTOR_STATE_NOT_FOUND, PreCommitOnChainInfo, ProofOnChainInfo,
    ReportStateReq, Request, SectorId, SectorStateResp, SnapUpOnChainInfo, StoreBasicInfo,
};
use crate::sector::SectorRef;
use crate::sector::cid::{data_cid, sealed_cid};
use crate::step::workspace::SectorFiles;
use crate::step::{
    Bytes32, FileDigest, REQUEST_VERSION, SealedFiles, StepInputs, StepKind, StepRequest,
    StepResult,
};

/// How the dev manager runs.
#[derive(Clone, Debug)]
pub struct DevManagerConfig {
    pub listen: SocketAddr,
    pub rules: ChainRules,
    pub block_time: Duration,
    /// The chain's head at genesis (a fresh state file).
    pub start_epoch: i64,
    pub state_file: PathBuf,
    /// The damocles-step binary that verifies proofs.
    pub step_bin: PathBuf,
    /// Persist stores handed out by StoreReserveSpace; their paths are as step pods see them.
    pub stores: Vec<StoreBasicInfo>,
    /// Where store paths are found on this machine (the dev node's --host-root), to check that
    /// persisted files exist; none skips the check.
    pub store_check_root: Option<PathBuf>,
}

/// Parses `NAME=PATH` into a writable store.
pub fn parse_store(text: &str) -> Result<StoreBasicInfo, String> {
    let (name, path) = text
        .split_once('=')
        .filter(|(name, path)| !name.is_empty() && path.starts_with('/'))
        .ok_or_else(|| format!("{text:?} is not NAME=/ABSOLUTE/PATH"))?;
    Ok(StoreBasicInfo {
        name: name.to_string(),
        path: path.to_string(),
        strict: false,
        read_only: false,
        weight: 1,
        meta: None,
    })
}

/// What the state file holds.
#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Persisted {
    genesis_unix_ms: u64,
    start_epoch: i64,
    chain: ChainState,
}

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
}

struct Shared {
    config: DevManagerConfig,
    genesis_unix_ms: u64,
    start_epoch: i64,
    chain: Mutex<ChainState>,
    faults: Mutex<HashMap<String, Fault>>,
    // Serializes writes of the state file.
    save: tokio::sync::Mutex<()>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    fn chain(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.chain.lock().expect("chain lock")
    }

    /// A copy of one sector's record.
    fn record(&self, sector: SectorId) -> Result<super::chain::SectorRecord, ChainError> {
        self.chain()
            .sectors
            .get(&sector.number)
            .cloned()
            .ok_or(ChainError::UnknownSector(sector))
    }

    fn head(&self) -> i64 {
        let elapsed = unix_ms().saturating_sub(self.genesis_unix_ms) as u128;
        self.start_epoch + (elapsed / self.config.block_time.as_millis().max(1)) as i64
    }

    fn store(&self, instance: &str) -> Option<StoreBasicInfo> {
        self.config
            .stores
            .iter()
            .find(|s| s.name == instance)
            .cloned()
    }

    /// Whether the replica and cache of `sector` are in store `instance` (the updated ones for an
    /// upgrade); true when file checks are off.
    fn files_present(&self, sector: SectorId, instance: &str, upgrade: bool) -> bool {
        let Some(root) = &self.config.store_check_root else {
            return true;
        };
        let Some(store) = self.store(instance) else {
            warn!(
                instance,
                "files reported in a store this manager does not know"
            );
            return false;
        };
        let local = root.join(store.path.trim_start_matches('/'));
        let files = SectorFiles::new(
            &local,
            SectorRef {
                miner: sector.miner,
                number: sector.number,
            },
        );
        let (replica, cache) = if upgrade {
            (files.update(), files.update_cache())
        } else {
            (files.sealed(), files.cache())
        };
        let present = replica.is_file() && cache.join("p_aux").is_file();
        if !present {
            warn!(?sector, replica = %replica.display(), "persisted files are missing");
        }
        present
    }

    async fn save(&self) -> anyhow::Result<()> {
        let _guard = self.save.lock().await;
        let persisted = Persisted {
            genesis_unix_ms: self.genesis_unix_ms,
            start_epoch: self.start_epoch,
            chain: self.chain.lock().expect("chain lock").clone(),
        };
        write_atomic(
            &self.config.state_file,
            &serde_json::to_vec_pretty(&persisted)?,
        )
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::File::open(&partial)?.sync_all()?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("cannot rename into {}", path.display()))?;
    Ok(())
}

/// Starts serving; returns the bound address (the port may have been 0) and the server task.
pub async fn start(
    config: DevManagerConfig,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let persisted: Persisted = match std::fs::read(&config.state_file) {
        Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
            format!("the state file {} is corrupt", config.state_file.display())
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Persisted {
            genesis_unix_ms: unix_ms(),
            start_epoch: config.start_epoch,
            chain: ChainState::default(),
        },
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot read {}", config.state_file.display()));
        }
    };
    let shared = Arc::new(Shared {
        genesis_unix_ms: persisted.genesis_unix_ms,
        start_epoch: persisted.start_epoch,
        chain: Mutex::new(persisted.chain),
        faults: Mutex::default(),
        save: tokio::sync::Mutex::new(()),
        config,
    });
    shared.save().await?;
    let app = Router::new()
        .route(crate::manager::wire::RPC_PATH, post(rpc))
        .route("/admin/faults", post(set_faults).get(get_faults))
        .route("/admin/state", get(get_state))
        .route("/admin/rebuild", post(mark_rebuild))
        .route("/admin/unseal", post(queue_unseal))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(shared.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", shared.config.listen))?;
    let address = listener.local_addr()?;
    info!(%address, miner = shared.config.rules.miner, head = shared.head(), state = %shared.config.state_file.display(),
          "dev manager serving damocles-manager's API on /rpc/v0 (a simulated chain: for tests and demos)");
    Ok((
        address,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    ))
}

async fn set_faults(
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

async fn get_faults(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!(*shared.faults.lock().expect("faults lock")))
}

async fn get_state(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let chain = shared.chain().clone();
    Json(json!({"head": shared.head(), "rules": shared.config.rules, "chain": chain}))
}

type AdminReply = (StatusCode, Json<Value>);

async fn admin_change(
    shared: &Shared,
    change: impl FnOnce(&mut ChainState, &ChainRules, i64) -> Result<(), ChainError>,
) -> AdminReply {
    let head = shared.head();
    let changed = change(&mut shared.chain(), &shared.config.rules, head);
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
struct RebuildRequest {
    number: u64,
}

/// Marks a committed sector's files as lost, so AllocateRebuildSector hands it out.
async fn mark_rebuild(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<RebuildRequest>,
) -> AdminReply {
    let miner = shared.config.rules.miner;
    admin_change(&shared, |chain, rules, head| {
        chain.mark_rebuild(
            rules,
            SectorId {
                miner,
                number: request.number,
            },
            head,
        )
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UnsealQueueRequest {
    number: u64,
    piece_cid: String,
    #[serde(default)]
    offset: u64,
    size: u64,
    dest: Vec<String>,
}

/// Queues a piece to recover, so AllocateUnsealSector hands it out.
async fn queue_unseal(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<UnsealQueueRequest>,
) -> AdminReply {
    let job = UnsealJob {
        sector: request.number,
        piece_cid: request.piece_cid,
        offset: request.offset,
        size: request.size,
        dest: request.dest,
        allocated: false,
        achieved: None,
    };
    admin_change(&shared, |chain, rules, head| {
        chain.queue_unseal(rules, job, head)
    })
    .await
}

fn rpc_error(id: &Value, code: i64, message: String) -> (StatusCode, Json<Value>) {
    // Like go-jsonrpc: protocol errors are HTTP 500, method errors HTTP 200.
    let status = if code < 0 {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})),
    )
}

async fn rpc(State(shared): State<Arc<Shared>>, body: String) -> (StatusCode, Json<Value>) {
    let request: Request = match serde_json::from_str(&body) {
        Ok(request) => request,
        Err(err) => {
            return rpc_error(
                &Value::Null,
                -32700,
                format!("cannot parse the request: {err}"),
            );
        }
    };
    let id = json!(request.id);
    let name = request
        .method
        .strip_prefix("Venus.")
        .unwrap_or(&request.method)
        .to_string();
    let fault = shared
        .faults
        .lock()
        .expect("faults lock")
        .get(&name)
        .cloned();
    if let Some(fault) = &fault {
        if fault.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(fault.latency_ms)).await;
        }
        if fault.fail_next > 0 {
            if let Some(f) = shared.faults.lock().expect("faults lock").get_mut(&name) {
                f.fail_next -= 1;
            }
            return rpc_error(
                &id,
                1,
                format!("injected failure of {name} (dev manager fault injection)"),
            );
        }
    }
    // A forced answer to a submission stands for a manager that refused it: nothing is recorded.
    if let Some(code) = fault.as_ref().and_then(|f| f.force_result)
        && name.starts_with("Submit")
        && name != "SubmitPersistedEx"
    {
        let desc = format!("result {code} forced by dev manager fault injection");
        return (
            StatusCode::OK,
            Json(json!({"jsonrpc": "2.0", "id": id, "result": {"Res": code, "Desc": desc}})),
        );
    }
    match dispatch(&shared, &name, request.params).await {
        Ok(mut result) => {
            if let Some(code) = fault.and_then(|f| f.force_result) {
                for key in ["Res", "State"] {
                    if let Some(slot) = result.get_mut(key) {
                        *slot = json!(code);
                    }
                }
            }
            (
                StatusCode::OK,
                Json(json!({"jsonrpc": "2.0", "id": id, "result": result})),
            )
        }
        Err(RpcFailure { code, message }) => rpc_error(&id, code, message),
    }
}

struct RpcFailure {
    code: i64,
    message: String,
}

impl From<ChainError> for RpcFailure {
    fn from(err: ChainError) -> Self {
        let code = match err {
            ChainError::UnknownSector(_) => ERR_SECTOR_STATE_NOT_FOUND,
            ChainError::NotReady(_) => 1,
        };
        RpcFailure {
            code,
            message: err.to_string(),
        }
    }
}

fn param<T: serde::de::DeserializeOwned>(
    params: &[Value],
    index: usize,
    method: &str,
) -> Result<T, RpcFailure> {
    serde_json::from_value(params[index].clone()).map_err(|e| RpcFailure {
        code: ERR_INVALID_PARAMS,
        message: format!("{method}: param {index}: {e}"),
    })
}

fn expect_params(params: &[Value], count: usize, method: &str) -> Result<(), RpcFailure> {
    if params.len() != count {
        return Err(RpcFailure {
            code: ERR_INVALID_PARAMS,
            message: format!(
                "wrong param count (method 'Venus.{method}'): {} != {count}",
                params.len()
            ),
        });
    }
    Ok(())
}

async fn dispatch(shared: &Shared, name: &str, params: Vec<Value>) -> Result<Value, RpcFailure> {
    let rules = &shared.config.rules;
    let head = shared.head();
    let p = &params;
    let method: Option<Method> = name.parse().ok();
    let value = match method {
        Some(Method::AllocateSector) => {
            // Both API shapes: [spec] and [spec, niporep].
            if p.len() != 1 && p.len() != 2 {
                expect_params(p, 2, name)?;
            }
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate(rules, &spec))
        }
        Some(Method::AssignTicket) => {
            expect_params(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .assign_ticket(rules, param(p, 0, name)?, head)?
            )
        }
        Some(Method::SubmitPreCommit) => {
            expect_params(p, 3, name)?;
            let sector: AllocatedSector = param(p, 0, name)?;
            let info: PreCommitOnChainInfo = param(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .submit_pre_commit(rules, &sector, &info, head)?
            )
        }
        Some(Method::PollPreCommitState) => {
            expect_params(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .poll_pre_commit(rules, param(p, 0, name)?, head)?
            )
        }
        Some(Method::SubmitPersistedEx | Method::SubmitPersisted) => {
            let extended = name == "SubmitPersistedEx";
            expect_params(p, if extended { 3 } else { 2 }, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let instance: String = param(p, 1, name)?;
            let upgrade: bool = if extended { param(p, 2, name)? } else { false };
            let present = shared.files_present(sector, &instance, upgrade);
            json!(
                shared
                    .chain()
                    .submit_persisted(rules, sector, &instance, present)?
            )
        }
        Some(Method::AcquireDeals) => {
            expect_params(p, 2, name)?;
            shared.chain().acquire_deals(rules, param(p, 0, name)?)?;
            Value::Null
        }
        Some(Method::StoreReserveSpace) => {
            expect_params(p, 3, name)?;
            let _: SectorId = param(p, 0, name)?;
            let candidates: Option<Vec<String>> = param(p, 2, name)?;
            json!(reserve_space(
                &shared.config.stores,
                &candidates.unwrap_or_default()
            ))
        }
        Some(Method::StoreBasicInfo) => {
            expect_params(p, 1, name)?;
            let instance: String = param(p, 0, name)?;
            json!(shared.store(&instance))
        }
        Some(Method::AllocateSanpUpSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSnapUpSpec = param(p, 0, name)?;
            json!(shared.chain().allocate_snapup(rules, &spec, head))
        }
        Some(Method::SubmitSnapUpProof) => {
            expect_params(p, 2, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let info: SnapUpOnChainInfo = param(p, 1, name)?;
            let checks = SnapUpChecks {
                proof_sha256: hex::encode(Sha256::digest(&info.proof.0)),
                files_present: shared.files_present(sector, &info.access_instance, true),
                verified: verify_snap(shared, sector, &info).await?,
            };
            json!(
                shared
                    .chain()
                    .submit_snapup(rules, sector, &info, &checks, head)?
            )
        }
        Some(Method::AllocateRebuildSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate_rebuild(rules, &spec))
        }
        Some(Method::AllocateUnsealSector) => {
            expect_params(p, 1, name)?;
            let spec: AllocateSectorSpec = param(p, 0, name)?;
            json!(shared.chain().allocate_unseal(rules, &spec))
        }
        Some(Method::AcquireUnsealDest) => {
            expect_params(p, 2, name)?;
            let cid: CidJson = param(p, 1, name)?;
            json!(
                shared
                    .chain()
                    .unseal_dest(rules, param(p, 0, name)?, &cid.cid)?
            )
        }
        Some(Method::AchieveUnsealSector) => {
            expect_params(p, 3, name)?;
            let cid: CidJson = param(p, 1, name)?;
            let error: String = param(p, 2, name)?;
            shared
                .chain()
                .achieve_unseal(rules, param(p, 0, name)?, &cid.cid, &error)?;
            Value::Null
        }
        Some(Method::WaitSeed) => {
            if p.len() != 1 && p.len() != 2 {
                expect_params(p, 2, name)?;
            }
            json!(shared.chain().wait_seed(rules, param(p, 0, name)?, head)?)
        }
        Some(Method::SubmitProof) => {
            expect_params(p, 3, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let proof: ProofOnChainInfo = param(p, 1, name)?;
            let sha256 = hex::encode(Sha256::digest(&proof.proof.0));
            let verified = verify(shared, sector, &proof.proof.0).await?;
            json!(
                shared
                    .chain()
                    .submit_proof(rules, sector, &sha256, verified, head)?
            )
        }
        Some(Method::PollProofState) => {
            expect_params(p, 1, name)?;
            json!(shared.chain().poll_proof(rules, param(p, 0, name)?, head)?)
        }
        Some(Method::ReportState) => {
            expect_params(p, 2, name)?;
            let sector: SectorId = param(p, 0, name)?;
            let report: ReportStateReq = param(p, 1, name)?;
            let mut text = format!(
                "{} -> {} ({})",
                report.state_change.prev, report.state_change.next, report.state_change.event
            );
            if let Some(failure) = &report.failure {
                text.push_str(&format!(" failure {}: {}", failure.level, failure.desc));
            }
            let mut chain = shared.chain();
            let record = chain.report(rules, sector, text)?;
            json!(SectorStateResp {
                id: sector,
                finalized: record.finalized,
                abort_reason: record.aborted.clone()
            })
        }
        Some(Method::ReportFinalized) => {
            expect_params(p, 1, name)?;
            shared.chain().finalize(rules, param(p, 0, name)?)?;
            Value::Null
        }
        Some(Method::ReportAborted) => {
            expect_params(p, 2, name)?;
            let reason: String = param(p, 1, name)?;
            shared.chain().abort(rules, param(p, 0, name)?, &reason)?;
            Value::Null
        }
        None if name == "Version" => json!(concat!(
            "damocles-operator dev-manager ",
            env!("CARGO_PKG_VERSION")
        )),
        _ => {
            return Err(RpcFailure {
                code: ERR_METHOD_NOT_FOUND,
                message: format!(
                    "method 'Venus.{name}' not found (the dev manager serves the sealer API only)"
                ),
            });
        }
    };
    let read_only = matches!(
        method,
        None | Some(
            Method::StoreBasicInfo
                | Method::StoreReserveSpace
                | Method::AcquireUnsealDest
                | Method::PollPreCommitState
                | Method::PollProofState
        )
    );
    if !read_only {
        shared.save().await.map_err(|e| RpcFailure {
            code: 1,
            message: format!("cannot save state: {e:#}"),
        })?;
    }
    Ok(value)
}

/// Verifies a PoRep proof with filecoin-proofs, through `damocles-step verify-seal`.
async fn verify(shared: &Shared, sector: SectorId, proof: &[u8]) -> Result<bool, RpcFailure> {
    let record = shared.record(sector)?;
    let (Some(precommit), Some(seed)) = (record.precommit, record.seed) else {
        return Err(not_ready(format!(
            "{sector:?} has no PreCommit and seed to check a proof against"
        )));
    };
    let inputs = StepInputs {
        ticket: Some(Bytes32(precommit.info.ticket.ticket.0)),
        seed: Some(Bytes32(seed.seed.0)),
        comm_r: Some(sealed_cid(&precommit.info.comm_r)),
        comm_d: Some(data_cid(&precommit.info.comm_d)),
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
async fn verify_snap(
    shared: &Shared,
    sector: SectorId,
    info: &SnapUpOnChainInfo,
) -> Result<bool, RpcFailure> {
    let record = shared.record(sector)?;
    let Some(precommit) = record.precommit else {
        return Err(not_ready(format!(
            "{sector:?} has no PreCommit: not a committed sector"
        )));
    };
    let inputs = StepInputs {
        comm_r: Some(sealed_cid(&info.comm_r)),
        comm_d: Some(data_cid(&info.comm_d)),
        // verify-snap reads only the old CommR; the paths are not opened.
        cc_sector: Some(SealedFiles {
            sealed: PathBuf::from("/unused"),
            cache: PathBuf::from("/unused"),
            comm_r: Some(sealed_cid(&precommit.info.comm_r)),
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

fn not_ready(message: String) -> RpcFailure {
    RpcFailure { code: 1, message }
}

async fn run_verifier(
    shared: &Shared,
    sector: SectorId,
    proof_type: i64,
    step: StepKind,
    mut inputs: StepInputs,
    proof: &[u8],
) -> Result<bool, RpcFailure> {
    let (sector_size, synthetic) = crate::manager::wire::sector_of_proof_type(proof_type)
        .ok_or_else(|| not_ready(format!("unsupported proof type {proof_type}")))?;
    let dir = shared
        .config
        .state_file
        .with_extension("verify")
        .join(format!("{}-{}", sector.number, unix_ms()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| not_ready(format!("cannot create {}: {e}", dir.display())))?;
    let proof_path = dir.join("proof.bin");
    std::fs::write(&proof_path, proof)
        .map_err(|e| not_ready(format!("cannot write the proof: {e}")))?;
    inputs.proof = Some(FileDigest {
        path: proof_path,
        sha256: hex::encode(Sha256::digest(proof)),
        size: proof.len() as u64,
    });
    let request = StepRequest {
        version: REQUEST_VERSION,
        step,
        sector: SectorRef {
            miner: sector.miner,
            number: sector.number,
        },
        sector_size,
        synthetic_po_rep: synthetic,
        workspace: dir.clone(),
        persist: None,
        share: None,
        termination_message_path: Some(dir.join("result.json")),
        inputs,
    };
    let request_path = dir.join("request.json");
    std::fs::write(
        &request_path,
        serde_json::to_vec(&request).expect("requests serialize"),
    )
    .map_err(|e| not_ready(format!("cannot write the verify request: {e}")))?;
    let output = tokio::process::Command::new(&shared.config.step_bin)
        .args(["run", "--request"])
        .arg(&request_path)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .map_err(|e| {
            not_ready(format!(
                "cannot run {}: {e}",
                shared.config.step_bin.display()
            ))
        })?;
    let result: Option<StepResult> = std::fs::read(dir.join("result.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_dir_all(&dir);
    match result.and_then(|r| r.outputs.verified) {
        Some(verified) => {
            info!(?sector, %step, verified, "checked a submitted proof with filecoin-proofs");
            Ok(verified)
        }
        None => {
            warn!(?sector, stderr = %String::from_utf8_lossy(&output.stderr), "proof verification did not run");
            Err(not_ready(format!(
                "the proof could not be checked ({} exited {:?}); try again",
                shared.config.step_bin.display(),
                output.status.code()
            )))
        }
    }
}
