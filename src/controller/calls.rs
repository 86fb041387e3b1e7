//! Manager-only actions, done inline by the controller: each call's answer becomes a driver
//! [`Outcome`] and, where it establishes something, an entry in the task's status.

use std::time::Duration;

use base64::Engine as _;

use crate::api::{FailureLevel, Randomness, SealingTask, SealingTaskStatus, SectorRef, StoreRef};
use crate::manager::wire::{
    AcquireDealsSpec, AllocateSectorSpec, AllocatedSector, Bytes, PreCommitOnChainInfo,
    ProofOnChainInfo, SectorId, Ticket, seal_proof_type,
};
use crate::manager::{ManagerClient, ManagerError, PollOutcome, SubmitOutcome};
use crate::plan::ManagerCall;
use crate::plan::driver::Outcome;
use crate::step::commitments::{parse_data_cid, parse_sealed_cid};

/// Calls whose repetition the manager may count as a second submission: the intent is recorded in
/// status before they are made.
pub fn is_submission(call: ManagerCall) -> bool {
    matches!(
        call,
        ManagerCall::SubmitPreCommit | ManagerCall::SubmitProof | ManagerCall::SubmitSnapUpProof
    )
}

/// How the controller paces its manager calls.
#[derive(Clone, Debug)]
pub struct CallSettings {
    /// How long to wait between polls of the chain (PreCommit and proof landing).
    pub poll_interval: Duration,
    /// Store instances to reserve space in (empty: any).
    pub store_candidates: Vec<String>,
}

fn failed(level: FailureLevel, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        level,
        message: message.into(),
    }
}

fn manager_failed(err: ManagerError) -> Outcome {
    failed(err.level(), err.to_string())
}

/// A sector in the manager's wire form.
pub fn sector_id(sector: SectorRef) -> SectorId {
    SectorId {
        miner: sector.miner,
        number: sector.number,
    }
}

fn randomness(ticket: &[u8; 32], epoch: i64) -> Randomness {
    Randomness {
        value: hex::encode(ticket),
        epoch,
    }
}

fn missing(what: &str) -> Outcome {
    failed(
        FailureLevel::Permanent,
        format!("the task has no {what} yet; resume at the state that produces it"),
    )
}

fn submitted(outcome: SubmitOutcome, desc: Option<String>) -> Outcome {
    let desc = desc.unwrap_or_default();
    match outcome {
        SubmitOutcome::Accepted => Outcome::Done,
        SubmitOutcome::FilesMissed => Outcome::FilesMissed,
        SubmitOutcome::Failed(level) => failed(level, format!("the manager refused: {desc}")),
    }
}

fn polled(outcome: PollOutcome, poll_interval: Duration, desc: Option<String>) -> Outcome {
    match outcome {
        PollOutcome::Landed => Outcome::Done,
        PollOutcome::Wait => Outcome::NotYet(poll_interval),
        PollOutcome::Resubmit => Outcome::Resubmit,
        PollOutcome::Failed(level) => failed(
            level,
            format!("on chain: {}", desc.unwrap_or_else(|| "failed".into())),
        ),
    }
}

/// Does `call` for `task`, recording what it establishes in `status`.
pub async fn call(
    manager: &ManagerClient,
    settings: &CallSettings,
    task: &SealingTask,
    status: &mut SealingTaskStatus,
    call: ManagerCall,
) -> Outcome {
    if matches!(
        call,
        ManagerCall::AllocateSanpUpSector
            | ManagerCall::StoreBasicInfo
            | ManagerCall::SubmitSnapUpProof
            | ManagerCall::AllocateRebuildSector
            | ManagerCall::AllocateUnsealSector
            | ManagerCall::AcquireUnsealDest
            | ManagerCall::AchieveUnsealSector
    ) {
        return failed(
            FailureLevel::Permanent,
            format!(
                "the {} plan's manager call {call} is not supported by this operator version yet",
                task.spec.plan
            ),
        );
    }
    let spec = &task.spec;
    let proof_type = seal_proof_type(spec.sector_size, spec.synthetic_po_rep);
    if call == ManagerCall::AllocateSector {
        if status.sector.is_some() {
            return Outcome::Done;
        }
        let allocation = AllocateSectorSpec {
            allowed_miners: spec.sector.map(|s| vec![s.miner]),
            allowed_proof_types: Some(vec![proof_type]),
        };
        return match manager.allocate_sector(&allocation).await {
            Ok(Some(allocated)) => {
                status.sector = Some(SectorRef {
                    miner: allocated.id.miner,
                    number: allocated.id.number,
                });
                Outcome::Done
            }
            Ok(None) => Outcome::NotYet(settings.poll_interval),
            Err(err) => manager_failed(err),
        };
    }
    let Some(sector) = status.sector.or(spec.sector) else {
        return missing("sector");
    };
    let id = sector_id(sector);
    let outputs = status.outputs.get_or_insert_with(Default::default);
    match call {
        ManagerCall::AcquireDeals => {
            if !spec.deals.as_ref().is_some_and(|d| d.enabled) {
                return Outcome::Done;
            }
            match manager
                .acquire_deals(id, &AcquireDealsSpec::default())
                .await
            {
                Ok(pieces) if pieces.is_empty() => Outcome::Done,
                Ok(pieces) => failed(
                    FailureLevel::Permanent,
                    format!(
                        "the manager offered {} deal pieces; fetching deal data from the manager's \
                         market is not supported yet: give the pieces in spec.pieces",
                        pieces.len()
                    ),
                ),
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::AssignTicket => match manager.assign_ticket(id).await {
            Ok(ticket) => {
                outputs.ticket = Some(randomness(&ticket.ticket.0, ticket.epoch));
                Outcome::Done
            }
            Err(err) => manager_failed(err),
        },
        ManagerCall::SubmitPreCommit => {
            let (Some(comm_r), Some(comm_d), Some(ticket)) =
                (&outputs.comm_r, &outputs.comm_d, &outputs.ticket)
            else {
                return missing("CommR, CommD and ticket");
            };
            let info = match precommit_info(comm_r, comm_d, ticket) {
                Ok(info) => info,
                Err(message) => return failed(FailureLevel::Permanent, message),
            };
            let allocated = AllocatedSector { id, proof_type };
            match manager.submit_pre_commit(&allocated, &info, false).await {
                Ok(resp) => submitted(resp.res.into(), resp.desc),
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::PollPreCommitState => match manager.poll_pre_commit_state(id).await {
            Ok(resp) => polled(resp.state.into(), settings.poll_interval, resp.desc),
            Err(err) => manager_failed(err),
        },
        ManagerCall::StoreReserveSpace => {
            if outputs.store.is_some() {
                return Outcome::Done;
            }
            let size = spec.sector_size.bytes();
            match manager
                .store_reserve_space(id, size, &settings.store_candidates)
                .await
            {
                Ok(Some(store)) => {
                    outputs.store = Some(StoreRef {
                        name: store.name,
                        path: store.path,
                    });
                    Outcome::Done
                }
                Ok(None) => Outcome::NotYet(settings.poll_interval),
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::SubmitPersistedEx => {
            let Some(store) = &outputs.store else {
                return missing("persist store");
            };
            match manager.submit_persisted(id, &store.name, false).await {
                Ok(true) => Outcome::Done,
                Ok(false) => Outcome::FilesMissed,
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::WaitSeed => match manager.wait_seed(id, proof_type).await {
            Ok(resp) => match resp.seed {
                Some(seed) => {
                    outputs.seed = Some(randomness(&seed.seed.0, seed.epoch));
                    Outcome::Done
                }
                None if resp.should_wait => {
                    Outcome::NotYet(Duration::from_secs(resp.delay.clamp(1, 3600) as u64))
                }
                None => failed(
                    FailureLevel::Temporary,
                    "the manager gave no seed and no reason to wait",
                ),
            },
            Err(err) => manager_failed(err),
        },
        ManagerCall::SubmitProof => {
            let Some(proof) = outputs.proof.as_ref().and_then(|p| p.data.as_ref()) else {
                return missing("proof");
            };
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(proof) else {
                return failed(
                    FailureLevel::Permanent,
                    "status.outputs.proof.data is not base64",
                );
            };
            let info = ProofOnChainInfo {
                proof: Bytes(bytes),
            };
            match manager.submit_proof(id, &info, false).await {
                Ok(resp) => submitted(resp.res.into(), resp.desc),
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::PollProofState => match manager.poll_proof_state(id).await {
            Ok(resp) => polled(resp.state.into(), settings.poll_interval, resp.desc),
            Err(err) => manager_failed(err),
        },
        ManagerCall::AllocateSector
        | ManagerCall::AllocateSanpUpSector
        | ManagerCall::StoreBasicInfo
        | ManagerCall::SubmitSnapUpProof
        | ManagerCall::AllocateRebuildSector
        | ManagerCall::AllocateUnsealSector
        | ManagerCall::AcquireUnsealDest
        | ManagerCall::AchieveUnsealSector => unreachable!("handled above"),
    }
}

/// After a restart with a submission's intent recorded: whether the manager already has it.
pub async fn already_submitted(
    manager: &ManagerClient,
    id: SectorId,
    call: ManagerCall,
) -> Result<bool, ManagerError> {
    use crate::manager::wire::OnChainState;
    let state = match call {
        ManagerCall::SubmitPreCommit => manager.poll_pre_commit_state(id).await?.state,
        ManagerCall::SubmitProof => manager.poll_proof_state(id).await?.state,
        // No poll for upgrades: resubmitting is answered DuplicateSubmit, counted as accepted.
        _ => return Ok(false),
    };
    Ok(state != OnChainState::NotFound)
}

fn precommit_info(
    comm_r: &str,
    comm_d: &str,
    ticket: &Randomness,
) -> Result<PreCommitOnChainInfo, String> {
    let value: [u8; 32] = hex::decode(&ticket.value)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("status.outputs.ticket is not 32 bytes of hex")?;
    Ok(PreCommitOnChainInfo {
        comm_r: parse_sealed_cid("commR", comm_r).map_err(|e| e.message)?,
        comm_d: parse_data_cid("commD", comm_d).map_err(|e| e.message)?,
        ticket: Ticket {
            ticket: crate::manager::wire::Randomness(value),
            epoch: ticket.epoch,
        },
        deals: vec![],
    })
}
