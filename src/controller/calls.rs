//! Manager-only actions, done inline by the controller: each call's answer becomes a driver
//! [`Outcome`] and, where it establishes something, an entry in the task's status.

use std::time::Duration;

use base64::Engine as _;

use crate::api::{
    CommittedSector, FailureLevel, Outputs, Randomness, SealingTask, SealingTaskStatus, SectorRef,
    StoreRef,
};
use crate::manager::wire::{
    AcquireDealsSpec, AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, Bytes, CidJson,
    PreCommitOnChainInfo, ProofOnChainInfo, SectorId, SnapUpOnChainInfo, Ticket, seal_proof_type,
};
use crate::manager::{ManagerClient, ManagerError, PollOutcome, SubmitOutcome};
use crate::plan::ManagerCall;
use crate::plan::driver::Outcome;
use crate::step::commitments::{data_cid, parse_data_cid, parse_sealed_cid, sealed_cid};

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
    let spec = &task.spec;
    let proof_type = seal_proof_type(spec.sector_size, spec.synthetic_po_rep);
    if call == ManagerCall::AllocateSector {
        if status.sector.is_some() {
            return Outcome::Done;
        }
        return match manager.allocate_sector(&allocation_spec(task)).await {
            Ok(Some(allocated)) => take_sector(task, status, &allocated)
                .err()
                .unwrap_or(Outcome::Done),
            Ok(None) => Outcome::NotYet(settings.poll_interval),
            Err(err) => manager_failed(err),
        };
    }
    match call {
        ManagerCall::AllocateSanpUpSector => {
            return allocate_snapup(manager, settings, task, status).await;
        }
        ManagerCall::AllocateRebuildSector => {
            return allocate_rebuild(manager, settings, task, status).await;
        }
        ManagerCall::AllocateUnsealSector => {
            return allocate_unseal(manager, settings, task, status).await;
        }
        _ => {}
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
            let Some(bytes) = proof_bytes(outputs) else {
                return missing("proof");
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
        ManagerCall::StoreBasicInfo => {
            let Some(committed) = outputs.committed.as_mut() else {
                return missing("committed sector to upgrade");
            };
            resolve_store(manager, committed).await
        }
        ManagerCall::SubmitSnapUpProof => {
            let (Some(comm_r), Some(comm_d), Some(store)) =
                (&outputs.comm_r, &outputs.comm_d, &outputs.store)
            else {
                return missing("new CommR, CommD and persist store");
            };
            let Some(proof) = proof_bytes(outputs) else {
                return missing("upgrade proof");
            };
            let info = match (
                parse_sealed_cid("commR", comm_r),
                parse_data_cid("commD", comm_d),
            ) {
                (Ok(comm_r), Ok(comm_d)) => SnapUpOnChainInfo {
                    comm_r,
                    comm_d,
                    access_instance: store.name.clone(),
                    pieces: spec
                        .pieces
                        .iter()
                        .flatten()
                        .map(|p| CidJson { cid: p.cid.clone() })
                        .collect(),
                    proof: Bytes(proof),
                },
                (Err(e), _) | (_, Err(e)) => return failed(FailureLevel::Permanent, e.message),
            };
            match manager.submit_snapup_proof(id, &info).await {
                Ok(resp) => submitted(resp.res.into(), resp.desc),
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::AcquireUnsealDest => {
            let Some(unseal) = &spec.unseal else {
                return missing("unseal request (spec.unseal)");
            };
            let piece = unseal_piece(unseal);
            match manager.acquire_unseal_dest(id, &piece).await {
                Ok(destinations) => {
                    if !destinations.is_empty() && !destinations.contains(&unseal.destination) {
                        tracing::info!(
                            task = %task.metadata.name.as_deref().unwrap_or_default(),
                            ?destinations,
                            "the manager also lists these destinations; the piece goes to spec.unseal.destination {}",
                            unseal.destination
                        );
                    }
                    Outcome::Done
                }
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::AchieveUnsealSector => {
            let Some(unseal) = &spec.unseal else {
                return missing("unseal request (spec.unseal)");
            };
            let piece = unseal_piece(unseal);
            match manager.achieve_unseal_sector(id, &piece, "").await {
                Ok(()) => Outcome::Done,
                Err(err) => manager_failed(err),
            }
        }
        ManagerCall::AllocateSector
        | ManagerCall::AllocateSanpUpSector
        | ManagerCall::AllocateRebuildSector
        | ManagerCall::AllocateUnsealSector => unreachable!("handled above"),
    }
}

/// The proof in status, decoded; none when absent or not base64 (a hand-edited status).
fn proof_bytes(outputs: &Outputs) -> Option<Vec<u8>> {
    let data = outputs.proof.as_ref()?.data.as_ref()?;
    base64::engine::general_purpose::STANDARD.decode(data).ok()
}

/// Fills in the path of the store that holds the committed sector's files (StoreBasicInfo).
async fn resolve_store(manager: &ManagerClient, committed: &mut CommittedSector) -> Outcome {
    if committed.path.is_some() {
        return Outcome::Done;
    }
    match manager.store_basic_info(&committed.instance).await {
        Ok(Some(store)) => {
            committed.path = Some(store.path);
            Outcome::Done
        }
        Ok(None) => failed(
            FailureLevel::Permanent,
            format!(
                "the manager does not know store instance {:?} that holds the sector's files",
                committed.instance
            ),
        ),
        Err(err) => manager_failed(err),
    }
}

/// The piece an unseal task asks for, as the manager names it.
pub fn unseal_piece(unseal: &crate::api::UnsealRequest) -> CidJson {
    CidJson {
        cid: unseal.piece_cid.clone(),
    }
}

/// Deal pieces from the manager: the operator cannot fetch deal data from the market yet, so it
/// only takes sectors without them.
fn no_deal_pieces(what: &str, count: usize) -> Result<(), Outcome> {
    if count == 0 {
        return Ok(());
    }
    Err(failed(
        FailureLevel::Permanent,
        format!(
            "the manager handed out {what} with {count} deal pieces; fetching deal data from the \
             manager's market is not supported yet"
        ),
    ))
}

fn allocation_spec(task: &SealingTask) -> AllocateSectorSpec {
    let spec = &task.spec;
    AllocateSectorSpec {
        allowed_miners: spec.sector.map(|s| vec![s.miner]),
        allowed_proof_types: Some(vec![seal_proof_type(
            spec.sector_size,
            spec.synthetic_po_rep,
        )]),
    }
}

/// Records the sector the manager handed out; one other than spec.sector names is refused.
fn take_sector(
    task: &SealingTask,
    status: &mut SealingTaskStatus,
    sector: &AllocatedSector,
) -> Result<(), Outcome> {
    let given = SectorRef {
        miner: sector.id.miner,
        number: sector.id.number,
    };
    if let Some(wanted) = task.spec.sector
        && wanted != given
    {
        return Err(failed(
            FailureLevel::Permanent,
            format!(
                "the manager handed out sector {given} but spec.sector asks for {wanted}; ask the \
                 manager to release {given}"
            ),
        ));
    }
    status.sector = Some(given);
    Ok(())
}

/// A CC sector to upgrade. Allocated once: after a restart the recorded one is kept.
async fn allocate_snapup(
    manager: &ManagerClient,
    settings: &CallSettings,
    task: &SealingTask,
    status: &mut SealingTaskStatus,
) -> Outcome {
    if status.sector.is_some()
        && status
            .outputs
            .as_ref()
            .is_some_and(|o| o.committed.is_some())
    {
        return Outcome::Done;
    }
    let spec = AllocateSnapUpSpec {
        sector: allocation_spec(task),
        deals: AcquireDealsSpec::default(),
    };
    match manager.allocate_snapup_sector(&spec).await {
        Ok(Some(allocated)) => {
            if let Err(outcome) = take_sector(task, status, &allocated.sector) {
                return outcome;
            }
            status
                .outputs
                .get_or_insert_with(Default::default)
                .committed = Some(CommittedSector {
                comm_r: Some(sealed_cid(&allocated.public.comm_r)),
                instance: allocated.private.access_instance,
                path: None,
            });
            let pieces = allocated.pieces.as_ref().map_or(0, Vec::len);
            no_deal_pieces("the sector to upgrade", pieces)
                .err()
                .unwrap_or(Outcome::Done)
        }
        Ok(None) => Outcome::NotYet(settings.poll_interval),
        Err(err) => manager_failed(err),
    }
}

/// A sector marked for rebuild, with its original ticket.
async fn allocate_rebuild(
    manager: &ManagerClient,
    settings: &CallSettings,
    task: &SealingTask,
    status: &mut SealingTaskStatus,
) -> Outcome {
    if status.sector.is_some() && status.outputs.as_ref().is_some_and(|o| o.ticket.is_some()) {
        return Outcome::Done;
    }
    match manager
        .allocate_rebuild_sector(&allocation_spec(task))
        .await
    {
        Ok(Some(info)) => {
            if let Err(outcome) = take_sector(task, status, &info.sector) {
                return outcome;
            }
            status.outputs.get_or_insert_with(Default::default).ticket =
                Some(randomness(&info.ticket.ticket.0, info.ticket.epoch));
            let pieces = info.pieces_v2.as_ref().map_or(0, Vec::len);
            if let Err(outcome) = no_deal_pieces("the sector to rebuild", pieces) {
                return outcome;
            }
            if info.is_snap_up {
                return failed(
                    FailureLevel::Permanent,
                    "the sector to rebuild was snap-upgraded; rebuilding upgraded sectors needs \
                     their deal data, which this operator version cannot fetch yet",
                );
            }
            Outcome::Done
        }
        Ok(None) => Outcome::NotYet(settings.poll_interval),
        Err(err) => manager_failed(err),
    }
}

/// The unseal the manager has queued for this task's piece, with the sector's sealing facts.
async fn allocate_unseal(
    manager: &ManagerClient,
    settings: &CallSettings,
    task: &SealingTask,
    status: &mut SealingTaskStatus,
) -> Outcome {
    let Some(wanted) = &task.spec.unseal else {
        return missing("unseal request (spec.unseal)");
    };
    let outputs = status.outputs.get_or_insert_with(Default::default);
    if let Some(committed) = outputs.committed.as_mut() {
        // Allocated before a failure or restart: only the store path may be missing.
        return resolve_store(manager, committed).await;
    }
    let info = match manager.allocate_unseal_sector(&allocation_spec(task)).await {
        Ok(Some(info)) => info,
        Ok(None) => return Outcome::NotYet(settings.poll_interval),
        Err(err) => return manager_failed(err),
    };
    let asked = task.spec.sector.map(sector_id);
    if info.piece_cid.cid != wanted.piece_cid
        || asked.is_some_and(|id| id != info.sector.id)
        || (info.offset, info.size) != (wanted.offset, wanted.size)
    {
        let message = format!(
            "the manager handed out the unseal of piece {} ({}+{}) in sector {}, but this task asks \
             for piece {} ({}+{}); it was handed back to the manager as failed",
            info.piece_cid.cid,
            info.offset,
            info.size,
            info.sector.id.number,
            wanted.piece_cid,
            wanted.offset,
            wanted.size
        );
        if let Err(err) = manager
            .achieve_unseal_sector(info.sector.id, &info.piece_cid, &message)
            .await
        {
            tracing::warn!("AchieveUnsealSector for a foreign unseal: {err}");
        }
        return failed(FailureLevel::Permanent, message);
    }
    if let Err(outcome) = take_sector(task, status, &info.sector) {
        return outcome;
    }
    let outputs = status.outputs.get_or_insert_with(Default::default);
    outputs.ticket = Some(randomness(&info.ticket.ticket.0, info.ticket.epoch));
    outputs.comm_d = Some(data_cid(&info.comm_d));
    outputs.committed = Some(CommittedSector {
        comm_r: None,
        instance: info.private_info.access_instance,
        path: None,
    });
    // The store path comes from a second call; a failure there keeps the allocation recorded.
    Box::pin(allocate_unseal(manager, settings, task, status)).await
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
