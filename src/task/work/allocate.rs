//! Empty and Allocated: the manager hands the task its sector (a new one, a CC sector to upgrade,
//! one to rebuild, an unseal job) and, for the sealer, its deals.

use super::{call_failed, failed, randomness, sector_id, unexpected};
use crate::api::{
    CommittedSector, DealPiece, PlanKind, SealingTaskSpec, SectorRef, UnsealSelector, UnsealTaken,
};
use crate::manager::wire::{
    AcquireDealsSpec, AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, CidJson, SectorId,
    SectorPiece, SectorUnsealInfo, seal_proof_type, seal_proof_types, sector_of_proof_type,
};
use crate::manager::{Call, Method, Reply};
use crate::plan::cursor::Outcome;
use crate::plan::{Allocation, ManagerCall};
use crate::sector::FailureLevel;
use crate::sector::{CommD, CommR};
use crate::task::{Progress, Turn};

/// What the task may be allocated: the miner of spec.sector; every proof type of its size that
/// this operator seals, or the one spec.syntheticPoRep pins.
pub fn allocation_spec(spec: &SealingTaskSpec) -> AllocateSectorSpec {
    AllocateSectorSpec {
        allowed_miners: spec.sector.map(|s| vec![s.miner]),
        allowed_proof_types: Some(seal_proof_types(spec.sector_size, spec.synthetic_po_rep)),
    }
}

/// What a task waiting for an allocation with a pinned proof type is told: the manager hands out
/// only sectors of miners whose current type is the pinned one, so the wait may never end.
pub fn pinned_wait(spec: &SealingTaskSpec) -> Option<String> {
    let synthetic = spec.synthetic_po_rep?;
    let pinned = seal_proof_type(spec.sector_size, synthetic);
    Some(format!(
        "spec.syntheticPoRep: {synthetic} asks only for proof type {pinned}, and the manager \
         hands out sectors of miners whose current seal proof type is that one (their \
         UseSyntheticPoRep setting): if the miner seals the other type, nothing will come; \
         without spec.syntheticPoRep a task takes the type the manager hands out"
    ))
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

/// The Warning Event reason of an unseal task handed a request other than its selector names.
pub const UNSEAL_NOT_AS_SELECTED: &str = "UnsealNotAsSelected";

/// What a task whose selector the handed-out request does not match is told.
fn not_as_selected(
    selector: Option<&UnsealSelector>,
    sector: Option<SectorId>,
    info: &SectorUnsealInfo,
) -> String {
    let wanted = selector
        .map(|w| {
            let range = |v: Option<u64>| v.map_or("any".to_string(), |v| v.to_string());
            format!(
                "piece {} ({}+{})",
                w.piece_cid,
                range(w.offset),
                range(w.size)
            )
        })
        .unwrap_or_else(|| "any piece".to_string());
    let sector = sector.map_or(String::new(), |id| format!(" in sector {}", id.number));
    format!(
        "the manager handed out the unseal of piece {} ({}+{}) in sector {}, but this task's \
         spec asks for {wanted}{sector}; the task serves it: the manager took the request off its \
         queue for this task and would never hand it out again (the manager chooses which queued \
         request goes out; a selector cannot)",
        info.piece_cid.cid, info.offset, info.size, info.sector.id.number,
    )
}

impl Turn<'_> {
    pub(super) fn allocate(&mut self, call: ManagerCall) -> Progress {
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
    ) -> Progress {
        let method = call.method();
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return self.allocation_intent(method, ask),
        };
        // The intent stays while the manager may have handed something out unheard: asked and
        // unanswered (a timeout, a connection broken mid-call). A call that never reached it (a
        // manager restarting refuses connections) lost nothing: asked again, it is asked anew.
        let unheard = matches!(&reply, Err(failure) if failure.unavailable && !failure.never_sent);
        if !unheard {
            self.status.allocating = None;
        }
        Progress::Outcome(match reply.map(pick) {
            Ok(Ok(Some(allocated))) => take(self, allocated),
            Ok(Ok(None)) => {
                let poll = self.rules.poll_interval;
                if method != Method::AllocateSector {
                    // Clearing the intent is a status write, whose own watch event wakes the
                    // task at once: without a time to ask again, it would ask the manager (and
                    // write twice) as fast as the apiserver answers instead of once a poll.
                    let next = self.now + poll.as_secs() as i64;
                    self.status.not_before = Some(crate::task::status::time_at(next));
                }
                Outcome::NotYet(poll)
            }
            Ok(Err(other)) => unexpected(method, &other),
            Err(failure) => call_failed(failure),
        })
    }

    /// Before an allocation is asked: its intent, written first. Found already written (the
    /// operator stopped, or the manager did not answer, between the question and the record of
    /// its answer), the job the manager may have handed out is not known here, and the task
    /// pauses: a rebuild, an upgrade or an unseal is handed out once. A sealer's AllocateSector
    /// records no intent: asked again, it costs an unused sector number.
    fn allocation_intent(&mut self, method: Method, ask: Progress) -> Progress {
        if method == Method::AllocateSector {
            return ask;
        }
        let allocation = method.plan_call().and_then(Allocation::of);
        if allocation.is_some() && self.status.allocating != allocation {
            self.status.allocating = allocation;
            self.write();
            return ask;
        }
        Progress::Outcome(failed(
            FailureLevel::Permanent,
            format!(
                "{method} was asked and its answer never recorded (the operator stopped, or the \
                 manager did not answer, in between): the manager may have handed this task a job \
                 it will not hand out again. Check the manager's queue (queue the job again if it \
                 is gone), then resume this task to ask again"
            ),
        ))
    }

    fn allocate_sector(&mut self) -> Progress {
        if self.status.sector.is_some() {
            return Progress::Outcome(Outcome::Done);
        }
        let call = Call::AllocateSector(allocation_spec(self.task.spec));
        self.allocation(
            call,
            |reply| match reply {
                Reply::Sector(sector) => Ok(sector),
                other => Err(Box::new(other)),
            },
            |turn, allocated| turn.take_sector(&allocated).unwrap_or(Outcome::Done),
        )
    }

    /// Records the sector the manager handed out and its proof type, which the task seals with
    /// from then on (a rebuild's is the type the sector was sealed with, whatever the miner seals
    /// now). One other than spec.sector names is kept all the same (the manager handed it to this
    /// task and will not hand it out again), and the returned failure pauses the task once the
    /// rest of the answer is recorded: resumed, the task works on it; deleted, it hands it back
    /// (see `hand_back_advice`). So is one of a proof type this operator cannot seal.
    fn take_sector(&mut self, sector: &AllocatedSector) -> Option<Outcome> {
        let given = SectorRef {
            miner: sector.id.miner,
            number: sector.id.number,
        };
        self.status.sector = Some(given);
        if let Some(unsealable) = self.take_proof_type(sector) {
            return Some(unsealable);
        }
        let wanted = self.task.spec.sector.filter(|wanted| *wanted != given)?;
        Some(failed(
            FailureLevel::Permanent,
            format!(
                "the manager handed out sector {given} but spec.sector asks for {wanted}; the \
                 task keeps {given}: resume it to work on {given}, or {}",
                self.hand_back_advice(given.miner, given.number),
            ),
        ))
    }

    /// What deleting the task does with a sector it was handed and cannot work on. A rebuild's
    /// sector is proven on chain: it is reported finalized, never aborted (which would release
    /// its active deals), so the manager takes it offline with its rebuild mark cleared.
    fn hand_back_advice(&self, miner: u64, number: u64) -> String {
        match self.task.spec.plan {
            PlanKind::Rebuild => format!(
                "delete it to hand it back (reported finalized, its deals kept); `damocles-manager \
                 util sealer sectors rebuild {miner} {number}` marks it for rebuild again"
            ),
            _ => "delete it to hand it back".to_string(),
        }
    }

    /// Records the proof type the sector was handed out with; the failure that pauses the task
    /// when it is not one this operator seals at the task's size (the sector is kept: deleting
    /// the task hands it back).
    fn take_proof_type(&mut self, sector: &AllocatedSector) -> Option<Outcome> {
        let size = self.task.spec.sector_size;
        if sector_of_proof_type(sector.proof_type).is_none_or(|(of, _)| of != size) {
            let given = sector.id;
            return Some(failed(
                FailureLevel::Permanent,
                format!(
                    "the manager handed out sector {} of miner {} with seal proof type {}, which \
                     is not one this operator seals at {size} (asked for {:?}); the task keeps \
                     the sector: {}",
                    given.number,
                    given.miner,
                    sector.proof_type,
                    seal_proof_types(size, self.task.spec.synthetic_po_rep),
                    self.hand_back_advice(given.miner, given.number),
                ),
            ));
        }
        self.status.proof_type = Some(sector.proof_type);
        None
    }

    /// A CC sector to upgrade. Allocated once: after a restart the recorded one is kept.
    fn allocate_snapup(&mut self) -> Progress {
        if self.status.sector.is_some() && self.committed().is_some() {
            return Progress::Outcome(Outcome::Done);
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
                let mismatch = turn.take_sector(&allocated.sector);
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
                mismatch.unwrap_or(Outcome::Done)
            },
        )
    }

    /// A sector marked for rebuild, with its original ticket.
    fn allocate_rebuild(&mut self) -> Progress {
        let has_ticket = self
            .status
            .outputs
            .as_ref()
            .is_some_and(|o| o.ticket.is_some());
        if self.status.sector.is_some() && has_ticket {
            return Progress::Outcome(Outcome::Done);
        }
        let call = Call::AllocateRebuildSector(allocation_spec(self.task.spec));
        self.allocation(
            call,
            |reply| match reply {
                Reply::RebuildSector(info) => Ok(info),
                other => Err(Box::new(other)),
            },
            |turn, info| {
                let mismatch = turn.take_sector(&info.sector);
                let outputs = turn.status.outputs.get_or_insert_with(Default::default);
                outputs.ticket = Some(randomness(&info.ticket.ticket.0, info.ticket.epoch));
                // As damocles-worker: a sector sealed by a v0.9-era manager has its deals as
                // legacy Pieces, sealed in when given; PiecesV2 otherwise.
                outputs.pieces = match info.pieces.filter(|legacy| !legacy.is_empty()) {
                    Some(legacy) => legacy
                        .into_iter()
                        .map(|deal| DealPiece::from_manager(&SectorPiece::from(deal)))
                        .collect(),
                    None => deal_pieces(info.pieces_v2.as_ref()),
                };
                // As damocles-worker: an UpgradePublic makes it a snap-upgraded sector (IsSnapUp
                // is not read); its pieces are then the upgrade's deals.
                outputs.sector_key = info
                    .upgrade_public
                    .as_ref()
                    .map(|public| CommR::from_bytes(public.comm_r));
                mismatch.unwrap_or(Outcome::Done)
            },
        )
    }

    /// The unseal the manager has queued for this task's piece, with the sector's sealing facts;
    /// then the path of the store that holds the sector.
    fn allocate_unseal(&mut self) -> Progress {
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
                // The manager dequeued this request for this task and will not hand it out again
                // (a failed one is never queued again, and its sector is now online marked
                // Unsealing): the task serves it whatever its selector says, as a damocles-worker
                // unseal thread serves what it is handed.
                let asked = turn.task.spec.sector.map(sector_id);
                if !selected(selector.as_ref(), asked, &info) {
                    let message = not_as_selected(selector.as_ref(), asked, &info);
                    turn.event(true, UNSEAL_NOT_AS_SELECTED, message.clone());
                    turn.log(true, message);
                }
                turn.status.sector = Some(SectorRef {
                    miner: info.sector.id.miner,
                    number: info.sector.id.number,
                });
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
                // After the job is recorded, so that an abort hands it back.
                turn.take_proof_type(&info.sector).unwrap_or(Outcome::Done)
            },
        );
        match taken {
            // The store path comes from a second call; a failure there keeps the allocation.
            Progress::Outcome(Outcome::Done) => self.resolve_store(),
            other => other,
        }
    }

    fn acquire_deals(&mut self) -> Progress {
        if !self.task.spec.deals.as_ref().is_some_and(|d| d.enabled) {
            return Progress::Outcome(Outcome::Done);
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
        Progress::Outcome(match reply {
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
