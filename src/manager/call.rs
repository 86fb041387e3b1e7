//! Every damocles-manager method the operator uses, once: its name ([`Method`]), its params
//! ([`Call`]) and its answer ([`Reply`]). The JSON-RPC client and the dev manager both build on
//! these, so a method's name and shape are written in one place.

use serde_json::{Value, json};
use strum::{Display, EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

use crate::plan::{Allocation, ManagerCall, Submission};

use super::wire::{
    AcquireDealsSpec, AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector,
    AllocatedSnapUpSector, CidJson, PollResp, PreCommitOnChainInfo, ProofOnChainInfo,
    ReportStateReq, SectorId, SectorPiece, SectorRebuildInfo, SectorStateResp, SectorUnsealInfo,
    SnapUpOnChainInfo, StoreBasicInfo, SubmitResp, Ticket, WaitSeedResp, WorkerInfo,
};

/// A damocles-manager method, named as on the wire after `Venus.`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Display, EnumString, EnumIter, IntoStaticStr)]
pub enum Method {
    AllocateSector,
    AcquireDeals,
    AssignTicket,
    SubmitPreCommit,
    PollPreCommitState,
    SubmitPersisted,
    SubmitPersistedEx,
    WaitSeed,
    SubmitProof,
    PollProofState,
    ReportState,
    ReportFinalized,
    ReportAborted,
    StoreReserveSpace,
    StoreBasicInfo,
    /// Sic: the manager's method is spelt this way.
    AllocateSanpUpSector,
    SubmitSnapUpProof,
    AllocateRebuildSector,
    AllocateUnsealSector,
    AcquireUnsealDest,
    AchieveUnsealSector,
    WorkerPing,
}

impl From<ManagerCall> for Method {
    fn from(call: ManagerCall) -> Self {
        match call {
            ManagerCall::AllocateSector => Method::AllocateSector,
            ManagerCall::AcquireDeals => Method::AcquireDeals,
            ManagerCall::AssignTicket => Method::AssignTicket,
            ManagerCall::SubmitPreCommit => Method::SubmitPreCommit,
            ManagerCall::PollPreCommitState => Method::PollPreCommitState,
            ManagerCall::StoreReserveSpace => Method::StoreReserveSpace,
            ManagerCall::SubmitPersistedEx => Method::SubmitPersistedEx,
            ManagerCall::WaitSeed => Method::WaitSeed,
            ManagerCall::SubmitProof => Method::SubmitProof,
            ManagerCall::PollProofState => Method::PollProofState,
            ManagerCall::AllocateSanpUpSector => Method::AllocateSanpUpSector,
            ManagerCall::StoreBasicInfo => Method::StoreBasicInfo,
            ManagerCall::SubmitSnapUpProof => Method::SubmitSnapUpProof,
            ManagerCall::AllocateRebuildSector => Method::AllocateRebuildSector,
            ManagerCall::AllocateUnsealSector => Method::AllocateUnsealSector,
            ManagerCall::AcquireUnsealDest => Method::AcquireUnsealDest,
            ManagerCall::AchieveUnsealSector => Method::AchieveUnsealSector,
        }
    }
}

impl From<Submission> for Method {
    fn from(submission: Submission) -> Self {
        submission.call().into()
    }
}

impl From<Allocation> for Method {
    fn from(allocation: Allocation) -> Self {
        allocation.call().into()
    }
}

impl Method {
    /// The plan action that makes this call, if a plan makes it (the end reports and the state
    /// reports are the core's own).
    pub fn plan_call(self) -> Option<ManagerCall> {
        ManagerCall::iter().find(|call| Method::from(*call) == self)
    }

    /// The submission this call is, if it is one ([`Submission`]).
    pub fn submission(self) -> Option<Submission> {
        self.plan_call().and_then(Submission::of)
    }

    /// Whether this call hands the task a sector or a job ([`Allocation`]).
    pub fn is_allocation(self) -> bool {
        self.plan_call().and_then(Allocation::of).is_some()
    }
}

/// A call with its params.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    AllocateSector(AllocateSectorSpec),
    AcquireDeals {
        sector: SectorId,
        spec: AcquireDealsSpec,
    },
    AssignTicket(SectorId),
    SubmitPreCommit {
        sector: AllocatedSector,
        info: PreCommitOnChainInfo,
        reset: bool,
    },
    PollPreCommitState(SectorId),
    SubmitPersistedEx {
        sector: SectorId,
        instance: String,
        upgrade: bool,
    },
    WaitSeed {
        sector: SectorId,
        proof_type: i64,
    },
    SubmitProof {
        sector: SectorId,
        proof: ProofOnChainInfo,
        reset: bool,
    },
    PollProofState(SectorId),
    ReportState {
        sector: SectorId,
        report: ReportStateReq,
    },
    ReportFinalized(SectorId),
    ReportAborted {
        sector: SectorId,
        reason: String,
    },
    StoreReserveSpace {
        sector: SectorId,
        size: u64,
        candidates: Vec<String>,
    },
    StoreBasicInfo {
        instance: String,
    },
    AllocateSanpUpSector(AllocateSnapUpSpec),
    SubmitSnapUpProof {
        sector: SectorId,
        info: SnapUpOnChainInfo,
    },
    AllocateRebuildSector(AllocateSectorSpec),
    AllocateUnsealSector(AllocateSectorSpec),
    AcquireUnsealDest {
        sector: SectorId,
        piece: CidJson,
    },
    AchieveUnsealSector {
        sector: SectorId,
        piece: CidJson,
        /// Empty when the unseal succeeded.
        error: String,
    },
    WorkerPing(WorkerInfo),
}

/// A call's answer, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// None: nothing to hand out now.
    Sector(Option<AllocatedSector>),
    Deals(Vec<SectorPiece>),
    Ticket(Ticket),
    Submit(SubmitResp),
    Poll(PollResp),
    /// SubmitPersistedEx: false when the manager could not find or check the files.
    Persisted(bool),
    Seed(WaitSeedResp),
    State(Option<SectorStateResp>),
    /// Calls whose answer carries nothing (ReportFinalized, ReportAborted, AchieveUnsealSector,
    /// WorkerPing).
    Done,
    /// None: no such store, or no store with room.
    Store(Option<StoreBasicInfo>),
    SnapUpSector(Option<AllocatedSnapUpSector>),
    RebuildSector(Option<SectorRebuildInfo>),
    UnsealSector(Option<SectorUnsealInfo>),
    Destinations(Vec<String>),
}

impl Call {
    pub fn method(&self) -> Method {
        match self {
            Call::AllocateSector(_) => Method::AllocateSector,
            Call::AcquireDeals { .. } => Method::AcquireDeals,
            Call::AssignTicket(_) => Method::AssignTicket,
            Call::SubmitPreCommit { .. } => Method::SubmitPreCommit,
            Call::PollPreCommitState(_) => Method::PollPreCommitState,
            Call::SubmitPersistedEx { .. } => Method::SubmitPersistedEx,
            Call::WaitSeed { .. } => Method::WaitSeed,
            Call::SubmitProof { .. } => Method::SubmitProof,
            Call::PollProofState(_) => Method::PollProofState,
            Call::ReportState { .. } => Method::ReportState,
            Call::ReportFinalized(_) => Method::ReportFinalized,
            Call::ReportAborted { .. } => Method::ReportAborted,
            Call::StoreReserveSpace { .. } => Method::StoreReserveSpace,
            Call::StoreBasicInfo { .. } => Method::StoreBasicInfo,
            Call::AllocateSanpUpSector(_) => Method::AllocateSanpUpSector,
            Call::SubmitSnapUpProof { .. } => Method::SubmitSnapUpProof,
            Call::AllocateRebuildSector(_) => Method::AllocateRebuildSector,
            Call::AllocateUnsealSector(_) => Method::AllocateUnsealSector,
            Call::AcquireUnsealDest { .. } => Method::AcquireUnsealDest,
            Call::AchieveUnsealSector { .. } => Method::AchieveUnsealSector,
            Call::WorkerPing(_) => Method::WorkerPing,
        }
    }

    /// The positional params of the newest API shape.
    pub fn params(&self) -> Vec<Value> {
        match self {
            // One param in every release (a second, niporep, exists only on damocles' unreleased felix/niporep branch).
            Call::AllocateSector(spec) => vec![json!(spec)],
            Call::AcquireDeals { sector, spec } => vec![json!(sector), json!(spec)],
            Call::AssignTicket(sector)
            | Call::PollPreCommitState(sector)
            | Call::PollProofState(sector)
            | Call::ReportFinalized(sector) => vec![json!(sector)],
            Call::SubmitPreCommit {
                sector,
                info,
                reset,
            } => vec![json!(sector), json!(info), json!(reset)],
            Call::SubmitPersistedEx {
                sector,
                instance,
                upgrade,
            } => vec![json!(sector), json!(instance), json!(upgrade)],
            Call::WaitSeed { sector, proof_type } => vec![json!(sector), json!(proof_type)],
            Call::SubmitProof {
                sector,
                proof,
                reset,
            } => vec![json!(sector), json!(proof), json!(reset)],
            Call::ReportState { sector, report } => vec![json!(sector), json!(report)],
            Call::ReportAborted { sector, reason } => vec![json!(sector), json!(reason)],
            Call::StoreReserveSpace {
                sector,
                size,
                candidates,
            } => vec![json!(sector), json!(size), json!(candidates)],
            Call::StoreBasicInfo { instance } => vec![json!(instance)],
            Call::AllocateSanpUpSector(spec) => vec![json!(spec)],
            Call::SubmitSnapUpProof { sector, info } => vec![json!(sector), json!(info)],
            Call::AllocateRebuildSector(spec) | Call::AllocateUnsealSector(spec) => {
                vec![json!(spec)]
            }
            Call::AcquireUnsealDest { sector, piece } => vec![json!(sector), json!(piece)],
            Call::AchieveUnsealSector {
                sector,
                piece,
                error,
            } => vec![json!(sector), json!(piece), json!(error)],
            Call::WorkerPing(info) => vec![json!(info)],
        }
    }

    /// Makes a submission a resubmission with reset (the manager replaces what it holds and
    /// sends a new message); other calls have no reset.
    pub fn set_reset(&mut self) {
        if let Call::SubmitPreCommit { reset, .. } | Call::SubmitProof { reset, .. } = self {
            *reset = true;
        }
    }

    /// The params of the older API shape, for methods whose param count changed between manager
    /// releases: tried when the manager answers the newest shape with invalid-params.
    pub fn older_params(&self) -> Option<Vec<Value>> {
        match self {
            Call::WaitSeed { sector, .. } => Some(vec![json!(sector)]),
            _ => None,
        }
    }

    /// The sector this call is about, if it names one.
    pub fn sector(&self) -> Option<SectorId> {
        match self {
            Call::AcquireDeals { sector, .. }
            | Call::SubmitPersistedEx { sector, .. }
            | Call::WaitSeed { sector, .. }
            | Call::SubmitProof { sector, .. }
            | Call::ReportState { sector, .. }
            | Call::ReportAborted { sector, .. }
            | Call::StoreReserveSpace { sector, .. }
            | Call::SubmitSnapUpProof { sector, .. }
            | Call::AcquireUnsealDest { sector, .. }
            | Call::AchieveUnsealSector { sector, .. } => Some(*sector),
            Call::AssignTicket(sector)
            | Call::PollPreCommitState(sector)
            | Call::PollProofState(sector)
            | Call::ReportFinalized(sector) => Some(*sector),
            Call::SubmitPreCommit { sector, .. } => Some(sector.id),
            Call::AllocateSector(_)
            | Call::StoreBasicInfo { .. }
            | Call::AllocateSanpUpSector(_)
            | Call::AllocateRebuildSector(_)
            | Call::AllocateUnsealSector(_)
            | Call::WorkerPing(_) => None,
        }
    }

    /// Decodes the manager's `result` for this call.
    pub fn reply(
        &self,
        result: Value,
    ) -> Result<Reply, serde_path_to_error::Error<serde_json::Error>> {
        fn de<T: serde::de::DeserializeOwned>(
            value: Value,
        ) -> Result<T, serde_path_to_error::Error<serde_json::Error>> {
            serde_path_to_error::deserialize(value)
        }
        Ok(match self.method() {
            Method::AllocateSector => Reply::Sector(de(result)?),
            Method::AcquireDeals => Reply::Deals(de::<Option<_>>(result)?.unwrap_or_default()),
            Method::AssignTicket => Reply::Ticket(de(result)?),
            Method::SubmitPreCommit | Method::SubmitProof | Method::SubmitSnapUpProof => {
                Reply::Submit(de(result)?)
            }
            Method::PollPreCommitState | Method::PollProofState => Reply::Poll(de(result)?),
            Method::SubmitPersisted | Method::SubmitPersistedEx => Reply::Persisted(de(result)?),
            Method::WaitSeed => Reply::Seed(de(result)?),
            Method::ReportState => Reply::State(de(result)?),
            Method::ReportFinalized
            | Method::ReportAborted
            | Method::AchieveUnsealSector
            | Method::WorkerPing => Reply::Done,
            Method::StoreReserveSpace | Method::StoreBasicInfo => Reply::Store(de(result)?),
            Method::AllocateSanpUpSector => Reply::SnapUpSector(de(result)?),
            Method::AllocateRebuildSector => Reply::RebuildSector(de(result)?),
            Method::AllocateUnsealSector => Reply::UnsealSector(de(result)?),
            Method::AcquireUnsealDest => {
                Reply::Destinations(de::<Option<_>>(result)?.unwrap_or_default())
            }
        })
    }
}

/// The manager, as the controller uses it: one call at a time, answered or failed.
pub trait Manager: Send + Sync {
    fn call(
        &self,
        call: &Call,
    ) -> impl std::future::Future<Output = Result<Reply, super::ManagerError>> + Send;
}
