//! The dev manager's HTTP side: damocles-manager's `/rpc/v0` over [`ChainState`], a clock that turns
//! wall time into epochs and a state file that survives restarts. The routes live in `admin` (fault
//! injection and inspection) and `dispatch` (the JSON-RPC methods, with proofs checked by `verify`
//! through `damocles-step`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use super::admin::{
    OutageMode, get_faults, get_state, mark_rebuild, queue_unseal, set_faults, set_outage,
};
use super::chain::{ChainError, ChainRules, ChainState};
use super::dispatch::rpc;
use super::journal::Journal;
use crate::manager::wire::{SectorId, StoreBasicInfo};
use crate::sector::SectorRef;
use crate::step::workspace::SectorFiles;

pub use super::admin::Fault;

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
    /// The market's (droplet's) API token: `/resource` (this manager plays the market) takes
    /// only it, and `market://` unseal destinations get it appended as damocles-manager appends
    /// its market token. None: no market API (market:// destinations are refused).
    pub market_token: Option<String>,
    /// Benchmarks only (with `dev-node --instant-steps`): every PoRep and snap-up proof is taken as
    /// valid without running the verifier. The tests never set it.
    pub unverified_proofs: bool,
    /// fsync the state file before answering a change, so a machine crash (not only a killed
    /// process) loses no answered change. Off, as damocles-manager's badger store is by default
    /// (SyncWrites false); a killed manager loses nothing either way.
    pub sync_writes: bool,
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

pub(super) struct Shared {
    pub(super) config: DevManagerConfig,
    genesis_unix_ms: u64,
    start_epoch: i64,
    chain: Mutex<ChainState>,
    pub(super) faults: Mutex<HashMap<String, Fault>>,
    /// Until when, and how, `/rpc/v0` does not answer (admin API).
    pub(super) outage: Mutex<Option<(std::time::Instant, OutageMode)>>,
    /// The CommD of a committed-capacity sector, by proof type (computed on first use).
    pub(super) zero_comm_d: Mutex<HashMap<i64, crate::sector::CommD>>,
    /// The address it listens on (known once bound): the market address of market:// unseal
    /// destinations.
    pub(super) address: std::sync::OnceLock<SocketAddr>,
    /// The state file; its lock serializes saves.
    save: tokio::sync::Mutex<Journal>,
    /// Changes made to the chain, counted as each caller asks to save them, and how many of them
    /// the state file holds: a group commit (one write serves every change made before it).
    changes: std::sync::atomic::AtomicU64,
    saved: std::sync::atomic::AtomicU64,
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Shared {
    pub(super) fn chain(&self) -> std::sync::MutexGuard<'_, ChainState> {
        self.chain.lock().expect("chain lock")
    }

    /// A copy of one sector's record.
    pub(super) fn record(
        &self,
        sector: SectorId,
    ) -> Result<super::chain::SectorRecord, ChainError> {
        self.chain()
            .sectors
            .get(&sector.number)
            .cloned()
            .ok_or(ChainError::UnknownSector(sector))
    }

    pub(super) fn head(&self) -> i64 {
        let elapsed = unix_ms().saturating_sub(self.genesis_unix_ms) as u128;
        self.start_epoch + (elapsed / self.config.block_time.as_millis().max(1)) as i64
    }

    pub(super) fn store(&self, instance: &str) -> Option<StoreBasicInfo> {
        self.config
            .stores
            .iter()
            .find(|s| s.name == instance)
            .cloned()
    }

    /// Whether the replica and cache of `sector` are in store `instance` (the updated ones for an
    /// upgrade); true when file checks are off.
    pub(super) fn files_present(&self, sector: SectorId, instance: &str, upgrade: bool) -> bool {
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

    /// Appends the state to the state file before the caller answers (synced with
    /// `sync_writes`): a manager killed after answering has the change when it starts again.
    /// Callers queued behind one save share the next (a group commit), so a
    /// busy manager writes its whole state once per batch of calls, not once per call: with a
    /// thousand sectors, once per call would make the manager the bottleneck of a benchmark.
    pub(super) async fn save(&self) -> anyhow::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        let mine = self.changes.fetch_add(1, SeqCst) + 1;
        let mut journal = self.save.lock().await;
        if self.saved.load(SeqCst) >= mine {
            return Ok(());
        }
        // Every change counted so far was made before it was counted, so the copy below holds it.
        let covered = self.changes.load(SeqCst);
        let started = std::time::Instant::now();
        let persisted = Persisted {
            genesis_unix_ms: self.genesis_unix_ms,
            start_epoch: self.start_epoch,
            chain: self.chain.lock().expect("chain lock").clone(),
        };
        journal.append(&serde_json::to_vec(&persisted)?)?;
        self.saved.store(covered, SeqCst);
        debug!(
            changes = covered,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "state saved"
        );
        Ok(())
    }
}

/// Starts serving; returns the bound address (the port may have been 0) and the server task.
pub async fn start(
    config: DevManagerConfig,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let persisted = Journal::load(&config.state_file)?.unwrap_or_else(|| Persisted {
        genesis_unix_ms: unix_ms(),
        start_epoch: config.start_epoch,
        chain: ChainState::default(),
    });
    let journal = Journal::new(&config.state_file, config.sync_writes);
    let shared = Arc::new(Shared {
        genesis_unix_ms: persisted.genesis_unix_ms,
        start_epoch: persisted.start_epoch,
        chain: Mutex::new(persisted.chain),
        faults: Mutex::default(),
        outage: Mutex::default(),
        zero_comm_d: Mutex::default(),
        address: std::sync::OnceLock::new(),
        save: tokio::sync::Mutex::new(journal),
        changes: Default::default(),
        saved: Default::default(),
        config,
    });
    shared.save().await?;
    let app = Router::new()
        .route(crate::manager::wire::RPC_PATH, post(rpc))
        .route("/admin/faults", post(set_faults).get(get_faults))
        .route("/admin/state", get(get_state))
        .route("/admin/rebuild", post(mark_rebuild))
        .route("/admin/unseal", post(queue_unseal))
        .route("/admin/finalize", post(super::admin::finalize))
        .route("/admin/miner", post(super::admin::set_miner))
        .route("/admin/release-snapup", post(super::admin::release_snapup))
        .route("/admin/outage", post(set_outage))
        .route("/admin/deals", post(super::market::add_deal))
        .route(
            "/piecestore/{name}",
            get(super::market::get_piece).put(super::market::put_piece),
        )
        .route(
            "/resource",
            get(super::market::get_resource).put(super::market::put_resource),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(shared.config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", shared.config.listen))?;
    let address = listener.local_addr()?;
    let _ = shared.address.set(address);
    info!(%address, miner = shared.config.rules.miner, head = shared.head(), state = %shared.config.state_file.display(),
          "dev manager serving damocles-manager's API on /rpc/v0 (a simulated chain: for tests and demos)");
    Ok((
        address,
        tokio::spawn(async move { axum::serve(listener, app).await }),
    ))
}
