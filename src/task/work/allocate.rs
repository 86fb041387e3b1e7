//! Empty and Allocated: the manager hands the task its sector (a new one, a CC sector to upgrade,
//! one to rebuild, an unseal job) and, for the sealer, its deals.

use super::{call_failed, failed, randomness, sector_id, unexpected};
use crate::api::{
    CommittedSector, DealPiece, SealingTaskSpec, SectorRef, UnsealSelector, UnsealTaken,
};
use crate::manager::wire::{
    AcquireDealsSpec, AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, CidJson, SectorId,
    SectorPiece, SectorUnsealInfo, seal_proof_type,
};
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::sector::FailureLevel;
use crate::sector::{CommD, CommR};
use crate::task::{Effect, Step, Turn};

/// What the task may be allocated: the miner of spec.sector, the task's proof type.
pub fn allocation_spec(spec: &SealingTaskSpec) -> AllocateSectorSpec {
    AllocateSectorSpec {
        allowed_miners: spec.sector.map(|s| vec![s.miner]),
        allowed_proof_types: Some(vec![seal_proof_type(
            spec.sector_size,
            spec.synthetic_po_rep,
        )]),
    }
}

/// The pieces the manager listed for the sector, as the task records them.
fn deal_pieces(pieces: Option<&Vec<SectorPiece>>) -> Vec<DealPiece> {
    pieces
        .into_iter()
        .flatten()
        .map(DealPiece::from_manager)
        .collect()
}

/// The piece an unseal task asks for, as the manager names it.
pub fn unseal_piece(unseal: &crate::api::UnsealTaken) -> CidJson {
    CidJson {
        cid: unseal.piece_cid.clone(),
    }
}

/// Whether the request the manager handed out is the one the task's selector asks for.
fn selected(
    selector: Option<&UnsealSelector>,
    sector: Option<SectorId>,
    info: &SectorUnsealInfo,
) -> bool {
    sector.is_none_or(|id| id == info.sector.id)
        && selector.is_none_or(|wanted| {
            wanted.piece_cid == info.piece_cid.cid
                && wanted.offset.is_none_or(|offset| offset == info.offset)
                && wanted.size.is_none_or(|size| size == info.size)
        })
}

impl Turn<'_> {
    pub(super) fn allocate(&mut self, call: ManagerCall) -> Step {
        match call {
            ManagerCall::AllocateSector => self.allocate_sector(),
            ManagerCall::AllocateSanpUpSector => self.allocate_snapup(),
            ManagerCall::AllocateRebuildSector => self.allocate_rebuild(),
            ManagerCall::AllocateUnsealSector => self.allocate_unseal(),
            _ => self.acquire_deals(),
        }
    }

    /// Answers `call` with `take` once the manager answered; None from the manager means nothing
    /// to hand out now.
    fn allocation<T>(
        &mut self,
        call: Call,
        pick: fn(Reply) -> Result<Option<T>, Box<Reply>>,
        take: impl FnOnce(&mut Self, T) -> Outcome,
    ) -> Step {
        let method = call.method();
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Step::Outcome(match reply.map(pick) {
            Ok(Ok(Some(allocated))) => take(self, allocated),
            Ok(Ok(None)) => Outcome::NotYet(self.rules.poll_interval),
            Ok(Err(other)) => unexpected(method, &other),
            Err(failure) => call_failed(failure),
        })
    }

    fn allocate_sector(&mut self) -> Step {
        if self.status.sector.is_some() {
            return Step::Outcome(Outcome::Done);
        }
        let call = Call::AllocateSector(allocation_spec(self.task.spec));
        self.allocation(
            call,
            |reply| match reply {
                Reply::Sector(sector) => Ok(sector),
                other => Err(Box::new(other)),
            },
            |turn, allocated| match turn.take_sector(&allocated) {
                Ok(()) => Outcome::Done,
                Err(outcome) => outcome,
            },
        )
    }

    /// Records the sector the manager handed out; one other than spec.sector names is refused.
    fn take_sector(&mut self, sector: &AllocatedSector) -> Result<(), Outcome> {
        let given = SectorRef {
            miner: sector.id.miner,
            number: sector.id.number,
        };
        if let Some(wanted) = self.task.spec.sector
            && wanted != given
        {
            return Err(failed(
                FailureLevel::Permanent,
                format!(
                    "the manager handed out sector {given} but spec.sector asks for {wanted}; ask \
                     the manager to release {given}"
                ),
            ));
        }
        self.status.sector = Some(given);
        Ok(())
    }

    /// A CC sector to upgrade. Allocated once: after a restart the recorded one is kept.
    fn allocate_snapup(&mut self) -> Step {
        if self.status.sector.is_some() && self.committed().is_some() {
            return Step::Outcome(Outcome::Done);
        }
        let call = Call::AllocateSanpUpSector(AllocateSnapUpSpec {
            sector: allocation_spec(self.task.spec),
            deals: AcquireDealsSpec::default(),
        });
        self.allocation(
            call,
            |reply| match reply {
                Reply::SnapUpSector(sector) => Ok(sector),
                other => Err(Box::new(other)),
            },
            |turn, allocated| {
                if let Err(outcome) = turn.take_sector(&allocated.sector) {
                    return outcome;
                }
                turn.status
                    .outputs
                    .get_or_insert_with(Default::default)
                    .committed = Some(CommittedSector {
                    comm_r: Some(CommR::from_bytes(allocated.public.comm_r)),
                    instance: allocated.private.access_instance,
                    path: None,
                });
                let outputs = turn.status.outputs.get_or_insert_with(Default::default);
                outputs.pieces = deal_pieces(allocated.pieces.as_ref());
                if outputs.pieces.is_empty() {
                    // damocles-worker aborts too: an upgrade without deals has nothing to add.
                    return failed(
                        FailureLevel::Abort,
                        "the manager handed out a sector to upgrade without deal pieces",
                    );
                }
                Outcome::Done
            },
        )
    }

    /// A sector marked for rebuild, with its original ticket.
    fn allocate_rebuild(&mut self) -> Step {
        let has_ticket = self
            .status
            .outputs
            .as_ref()
            .is_some_and(|o| o.ticket.is_some());
        if self.status.sector.is_some() && has_ticket {
            return Step::Outcome(Outcome::Done);
        }
        let call = Call::AllocateRebuildSector(allocation_spec(self.task.spec));
        self.allocation(
            call,
            |reply| match reply {
                Reply::RebuildSector(info) => Ok(info),
                other => Err(Box::new(other)),
            },
            |turn, info| {
                if let Err(outcome) = turn.take_sector(&info.sector) {
                    return outcome;
                }
                let outputs = turn.status.outputs.get_or_insert_with(Default::default);
                outputs.ticket = Some(randomness(&info.ticket.ticket.0, info.ticket.epoch));
                outputs.pieces = deal_pieces(info.pieces_v2.as_ref());
                // As damocles-worker: an UpgradePublic makes it a snap-upgraded sector (IsSnapUp
                // is not read); its pieces are then the upgrade's deals.
                outputs.sector_key = info
                    .upgrade_public
                    .as_ref()
                    .map(|public| CommR::from_bytes(public.comm_r));
                Outcome::Done
            },
        )
    }

    /// The unseal the manager has queued for this task's piece, with the sector's sealing facts;
    /// then the path of the store that holds the sector.
    fn allocate_unseal(&mut self) -> Step {
        let selector = self.task.spec.unseal.clone();
        if self.committed().is_some() {
            // Allocated before a failure or restart: only the store path may be missing.
            return self.resolve_store();
        }
        let call = Call::AllocateUnsealSector(allocation_spec(self.task.spec));
        let taken = self.allocation(
            call,
            |reply| match reply {
                Reply::UnsealSector(info) => Ok(info),
                other => Err(Box::new(other)),
            },
            |turn, info| {
                let asked = turn.task.spec.sector.map(sector_id);
                if !selected(selector.as_ref(), asked, &info) {
                    let wanted = selector
                        .as_ref()
                        .map(|w| {
                            let range =
                                |v: Option<u64>| v.map_or("any".to_string(), |v| v.to_string());
                            format!(
                                "piece {} ({}+{})",
                                w.piece_cid,
                                range(w.offset),
                                range(w.size)
                            )
                        })
                        .unwrap_or_else(|| "any piece".to_string());
                    let sector =
                        asked.map_or(String::new(), |id| format!(" in sector {}", id.number));
                    let message = format!(
                        "the manager handed out the unseal of piece {} ({}+{}) in sector {}, but \
                         this task asks for {wanted}{sector}; it was handed back to the manager \
                         as failed",
                        info.piece_cid.cid, info.offset, info.size, info.sector.id.number,
                    );
                    turn.effects.push(Effect::Tell(Call::AchieveUnsealSector {
                        sector: info.sector.id,
                        piece: info.piece_cid.clone(),
                        error: message.clone(),
                    }));
                    return failed(FailureLevel::Permanent, message);
                }
                if let Err(outcome) = turn.take_sector(&info.sector) {
                    return outcome;
                }
                let outputs = turn.status.outputs.get_or_insert_with(Default::default);
                outputs.ticket = Some(randomness(&info.ticket.ticket.0, info.ticket.epoch));
                outputs.comm_d = Some(CommD::from_bytes(info.comm_d));
                outputs.unseal = Some(UnsealTaken {
                    piece_cid: info.piece_cid.cid.clone(),
                    offset: info.offset,
                    size: info.size,
                    destinations: vec![],
                });
                outputs.committed = Some(CommittedSector {
                    comm_r: None,
                    instance: info.private_info.access_instance,
                    path: None,
                });
                Outcome::Done
            },
        );
        match taken {
            // The store path comes from a second call; a failure there keeps the allocation.
            Step::Outcome(Outcome::Done) => self.resolve_store(),
            other => other,
        }
    }

    fn acquire_deals(&mut self) -> Step {
        if !self.task.spec.deals.as_ref().is_some_and(|d| d.enabled) {
            return Step::Outcome(Outcome::Done);
        }
        let sector = match self.need_sector() {
            Ok(sector) => sector,
            Err(missing) => return missing,
        };
        let call = Call::AcquireDeals {
            sector,
            spec: AcquireDealsSpec::default(),
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Step::Outcome(match reply {
            Ok(Reply::Deals(pieces)) => {
                self.status
                    .outputs
                    .get_or_insert_with(Default::default)
                    .pieces = deal_pieces(Some(&pieces));
                Outcome::Done
            }
            Ok(other) => unexpected(Method::AcquireDeals, &other),
            Err(failure) => call_failed(failure),
        })
    }
}
