//! The manager's calls as typed methods, for the tests that speak to a manager directly
//! (`tests/manager.rs`): each is one [`Call`] sent with [`ManagerClient::send`] and the reply
//! variant it answers with. The operator itself sends [`Call`]s only.

use damocles_operator::manager::wire::{
    self, AcquireDealsSpec, AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector,
    AllocatedSnapUpSector, CidJson, PollResp, PreCommitOnChainInfo, ProofOnChainInfo,
    ReportStateReq, SectorId, SectorPiece, SectorRebuildInfo, SectorStateResp, SectorUnsealInfo,
    SnapUpOnChainInfo, StoreBasicInfo, SubmitResp, Ticket, WaitSeedResp,
};
use damocles_operator::manager::{Call, ManagerClient, ManagerError, Reply};

/// The reply of the variant the call answers with.
macro_rules! expect {
    ($client:expr, $call:expr, $variant:path) => {{
        let call = $call;
        match $client.send_call(&call).await? {
            $variant(value) => Ok(value),
            other => Err(ManagerError::Malformed {
                method: wire::method(call.method().into()),
                message: format!("unexpected answer {other:?}"),
            }),
        }
    }};
}

#[allow(async_fn_in_trait, dead_code)]
pub trait TypedCalls {
    async fn send_call(&self, call: &Call) -> Result<Reply, ManagerError>;

    async fn allocate_sector(
        &self,
        spec: &AllocateSectorSpec,
    ) -> Result<Option<AllocatedSector>, ManagerError> {
        expect!(self, Call::AllocateSector(spec.clone()), Reply::Sector)
    }

    async fn assign_ticket(&self, sector: SectorId) -> Result<Ticket, ManagerError> {
        expect!(self, Call::AssignTicket(sector), Reply::Ticket)
    }

    async fn submit_pre_commit(
        &self,
        sector: &AllocatedSector,
        info: &PreCommitOnChainInfo,
        reset: bool,
    ) -> Result<SubmitResp, ManagerError> {
        let call = Call::SubmitPreCommit {
            sector: sector.clone(),
            info: info.clone(),
            reset,
        };
        expect!(self, call, Reply::Submit)
    }

    async fn poll_pre_commit_state(&self, sector: SectorId) -> Result<PollResp, ManagerError> {
        expect!(self, Call::PollPreCommitState(sector), Reply::Poll)
    }

    /// Tells the manager where the persisted files are; false means it could not find or check them.
    async fn submit_persisted(
        &self,
        sector: SectorId,
        instance: &str,
        upgrade: bool,
    ) -> Result<bool, ManagerError> {
        let call = Call::SubmitPersistedEx {
            sector,
            instance: instance.to_string(),
            upgrade,
        };
        expect!(self, call, Reply::Persisted)
    }

    async fn wait_seed(
        &self,
        sector: SectorId,
        proof_type: i64,
    ) -> Result<WaitSeedResp, ManagerError> {
        expect!(self, Call::WaitSeed { sector, proof_type }, Reply::Seed)
    }

    async fn submit_proof(
        &self,
        sector: SectorId,
        proof: &ProofOnChainInfo,
        reset: bool,
    ) -> Result<SubmitResp, ManagerError> {
        let call = Call::SubmitProof {
            sector,
            proof: proof.clone(),
            reset,
        };
        expect!(self, call, Reply::Submit)
    }

    async fn poll_proof_state(&self, sector: SectorId) -> Result<PollResp, ManagerError> {
        expect!(self, Call::PollProofState(sector), Reply::Poll)
    }

    async fn report_state(
        &self,
        sector: SectorId,
        report: &ReportStateReq,
    ) -> Result<Option<SectorStateResp>, ManagerError> {
        let call = Call::ReportState {
            sector,
            report: report.clone(),
        };
        expect!(self, call, Reply::State)
    }

    async fn report_finalized(&self, sector: SectorId) -> Result<(), ManagerError> {
        self.send_call(&Call::ReportFinalized(sector))
            .await
            .map(drop)
    }

    async fn report_aborted(&self, sector: SectorId, reason: &str) -> Result<(), ManagerError> {
        let call = Call::ReportAborted {
            sector,
            reason: reason.to_string(),
        };
        self.send_call(&call).await.map(drop)
    }

    /// Deals for a sector; empty for a pledge sector or when the manager has none.
    async fn acquire_deals(
        &self,
        sector: SectorId,
        spec: &AcquireDealsSpec,
    ) -> Result<Vec<SectorPiece>, ManagerError> {
        let call = Call::AcquireDeals {
            sector,
            spec: spec.clone(),
        };
        expect!(self, call, Reply::Deals)
    }

    /// Reserves `size` bytes in one of `candidates` (all stores when empty); none when no store has room.
    async fn store_reserve_space(
        &self,
        sector: SectorId,
        size: u64,
        candidates: &[String],
    ) -> Result<Option<StoreBasicInfo>, ManagerError> {
        let call = Call::StoreReserveSpace {
            sector,
            size,
            candidates: candidates.to_vec(),
        };
        expect!(self, call, Reply::Store)
    }

    /// A store instance by name; none when the manager has no such store.
    async fn store_basic_info(
        &self,
        instance: &str,
    ) -> Result<Option<StoreBasicInfo>, ManagerError> {
        let call = Call::StoreBasicInfo {
            instance: instance.to_string(),
        };
        expect!(self, call, Reply::Store)
    }

    /// A committed-capacity sector to upgrade; none when the manager has none for this spec.
    async fn allocate_snapup_sector(
        &self,
        spec: &AllocateSnapUpSpec,
    ) -> Result<Option<AllocatedSnapUpSector>, ManagerError> {
        expect!(
            self,
            Call::AllocateSanpUpSector(spec.clone()),
            Reply::SnapUpSector
        )
    }

    async fn submit_snapup_proof(
        &self,
        sector: SectorId,
        info: &SnapUpOnChainInfo,
    ) -> Result<SubmitResp, ManagerError> {
        let call = Call::SubmitSnapUpProof {
            sector,
            info: info.clone(),
        };
        expect!(self, call, Reply::Submit)
    }

    /// A sector marked for rebuild, with its original ticket and pieces; none when nothing is marked.
    async fn allocate_rebuild_sector(
        &self,
        spec: &AllocateSectorSpec,
    ) -> Result<Option<SectorRebuildInfo>, ManagerError> {
        expect!(
            self,
            Call::AllocateRebuildSector(spec.clone()),
            Reply::RebuildSector
        )
    }

    /// A queued unseal request with the sector's sealing facts; none when nothing is queued.
    async fn allocate_unseal_sector(
        &self,
        spec: &AllocateSectorSpec,
    ) -> Result<Option<SectorUnsealInfo>, ManagerError> {
        expect!(
            self,
            Call::AllocateUnsealSector(spec.clone()),
            Reply::UnsealSector
        )
    }

    /// Where the unsealed piece should go (file://, http(s)://, store:// URLs).
    async fn acquire_unseal_dest(
        &self,
        sector: SectorId,
        piece_cid: &CidJson,
    ) -> Result<Vec<String>, ManagerError> {
        let call = Call::AcquireUnsealDest {
            sector,
            piece: piece_cid.clone(),
        };
        expect!(self, call, Reply::Destinations)
    }

    /// Reports an unseal done (`error` empty) or failed.
    async fn achieve_unseal_sector(
        &self,
        sector: SectorId,
        piece_cid: &CidJson,
        error: &str,
    ) -> Result<(), ManagerError> {
        let call = Call::AchieveUnsealSector {
            sector,
            piece: piece_cid.clone(),
            error: error.to_string(),
        };
        self.send_call(&call).await.map(drop)
    }
}

impl TypedCalls for ManagerClient {
    async fn send_call(&self, call: &Call) -> Result<Reply, ManagerError> {
        self.send(call).await
    }
}
