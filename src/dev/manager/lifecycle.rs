//! What the dev manager does with sectors after sealing: snap-upgrades, rebuilds and unseals, served
//! from its own record of sealed sectors. Pure like [`super::chain`]: the server checks files and
//! proofs and passes the verdicts in.

use super::chain::{
    ChainError, ChainRules, ChainState, RebuildMark, SectorRecord, UnsealJob, UpgradeRecord,
};
use crate::manager::wire::{
    AllocateSectorSpec, AllocateSnapUpSpec, AllocatedSector, AllocatedSnapUpSector, CidJson,
    LegacyDeal, LegacyPieceInfo, SectorId, SectorPrivateInfo, SectorPublicInfo, SectorRebuildInfo,
    SectorUnsealInfo, SnapUpOnChainInfo, StoreBasicInfo, SubmitResp, SubmitResult,
};
use crate::sector::CommR;

/// Sector lifetime handed out as the expiration of a committed sector (540 days of 30 s epochs).
const SECTOR_LIFETIME_EPOCHS: i64 = 540 * 2880;

/// A committed sector: its proof landed and its files were persisted.
fn committed(record: &SectorRecord, rules: &ChainRules, head: i64) -> Option<(i64, String)> {
    let activation = record
        .proof
        .as_ref()?
        .message
        .lands_at(rules.proof_landing)?;
    if head < activation || record.aborted.is_some() {
        return None;
    }
    Some((activation, record.persisted.clone()?))
}

fn public_info(
    record: &SectorRecord,
    rules: &ChainRules,
    head: i64,
) -> Option<(SectorPublicInfo, String)> {
    let (activation, instance) = committed(record, rules, head)?;
    let comm_r = record.precommit.as_ref()?.info.comm_r;
    Some((
        SectorPublicInfo {
            comm_r,
            sealed_cid: CidJson {
                cid: CommR::from_bytes(comm_r).to_string(),
            },
            activation,
            expiration: activation + SECTOR_LIFETIME_EPOCHS,
        },
        instance,
    ))
}

/// Sector `number` as an allocation hands it out, with `proof_type`: damocles-manager gives a
/// rebuild the sector's own type (sealer_cli.go), but a snap-up and an unseal the miner's current
/// one (snapup_allocator.go, unseal.go), whatever the sector was sealed with.
fn allocated(rules: &ChainRules, number: u64, proof_type: i64) -> AllocatedSector {
    AllocatedSector {
        id: SectorId {
            miner: rules.miner,
            number,
        },
        proof_type,
    }
}

/// `pieces` as a v0.9-era manager kept them: deal id, payload size, padded size, offset and CID.
fn legacy_deals(pieces: &[crate::manager::wire::SectorPiece]) -> Vec<LegacyDeal> {
    let mut offset = 0;
    pieces
        .iter()
        .map(|piece| {
            let deal = piece.deal_info.as_ref();
            let legacy = LegacyDeal {
                id: deal.map_or(0, |d| d.deal_id),
                payload_size: deal.map_or(0, |d| d.payload_size),
                piece: LegacyPieceInfo {
                    size: piece.piece.size,
                    offset,
                    cid: piece.piece.piece_cid.clone(),
                },
            };
            offset += piece.piece.size;
            legacy
        })
        .collect()
}

/// What the server found out about a submitted snap-upgrade.
pub struct SnapUpChecks {
    pub proof_sha256: String,
    /// The update proof verified against the old and new commitments.
    pub verified: bool,
    /// The updated replica is in the store named by AccessInstance.
    pub files_present: bool,
}

impl ChainState {
    /// The sector AllocateSanpUpSector would hand out: the oldest committed, finalized,
    /// never-upgraded committed-capacity sector (one without deals).
    pub fn snapup_candidate(
        &self,
        rules: &ChainRules,
        spec: &AllocateSnapUpSpec,
        head: i64,
    ) -> Option<u64> {
        if !self.admits(&spec.sector, rules) {
            return None;
        }
        self.sectors.iter().find_map(|(number, record)| {
            let eligible = !record.snapup_allocated
                && record.upgrade.is_none()
                && record.rebuild.is_none()
                && record.finalized
                && record.unsealed.is_none();
            (eligible && public_info(record, rules, head).is_some()).then_some(*number)
        })
    }

    /// Hands out sector `number` for an upgrade with `pieces` (the deals the market bound to it,
    /// fillers after them), brought back online as damocles-manager does; `unsealed` is the
    /// CommD those pieces give, which the chain checks the update proof with.
    pub fn allocate_snapup(
        &mut self,
        rules: &ChainRules,
        number: u64,
        head: i64,
        pieces: Vec<crate::manager::wire::SectorPiece>,
        unsealed: [u8; 32],
    ) -> Option<AllocatedSnapUpSector> {
        let current = self.miner_proof_type(rules);
        let record = self.sectors.get_mut(&number)?;
        let (public, instance) = public_info(record, rules, head)?;
        record.snapup_allocated = true;
        record.finalized = false;
        // damocles-manager keeps the upgrade's pieces as the sector's pieces from now on.
        record.pieces = pieces.clone();
        record.upgrade_unsealed = Some(unsealed);
        record.upgrade_public = Some(public.clone());
        Some(AllocatedSnapUpSector {
            sector: allocated(rules, number, current),
            pieces: Some(pieces),
            public,
            private: SectorPrivateInfo {
                access_instance: instance,
            },
        })
    }

    /// A handed-out upgrade whose worker lost it, given back as a farm admin does with
    /// damocles-manager (`util sealer sectors abort`, `util market release-deals`, then
    /// `util sealer snap fetch` to list the sector as a candidate again): the sector offline as
    /// the committed-capacity sector it was, its deals free for another sector.
    pub fn release_snapup(&mut self, rules: &ChainRules, id: SectorId) -> Result<(), ChainError> {
        let record = self.online(rules, id)?;
        if record.upgrade.is_some() {
            return Err(ChainError::NotReady(format!(
                "{id:?}: its upgrade proof was accepted and is being committed, not lost"
            )));
        }
        if !record.snapup_allocated {
            return Err(ChainError::NotReady(format!(
                "{id:?} was not handed out for a snap upgrade"
            )));
        }
        record.snapup_allocated = false;
        record.finalized = true;
        record.pieces.clear();
        record.upgrade_unsealed = None;
        record.upgrade_public = None;
        for deal in self.deals.iter_mut() {
            if deal.sector == Some(id.number) {
                deal.sector = None;
            }
        }
        Ok(())
    }

    pub fn submit_snapup(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        info: &SnapUpOnChainInfo,
        checks: &SnapUpChecks,
        head: i64,
    ) -> Result<SubmitResp, ChainError> {
        let SnapUpChecks {
            proof_sha256,
            verified,
            files_present,
        } = checks;
        let record = self.online(rules, id)?;
        Self::count(record, "SubmitSnapUpProof");
        let result = |res, desc: Option<&str>| {
            Ok(SubmitResp {
                res,
                desc: desc.map(str::to_string),
            })
        };
        if record.upgrade.is_some() {
            // damocles-manager starts a commit job for an accepted upgrade and refuses a second
            // one for the sector, identical or not, with a logic error (snapup_commit.go
            // Commit); it never answers DuplicateSubmit. The dev manager's job never ends (the
            // production one takes the sector offline once the upgrade is final).
            return Err(ChainError::NotReady(
                "commit snapup sector: duplicate commit job".into(),
            ));
        }
        if !record.snapup_allocated {
            return result(
                SubmitResult::Rejected,
                Some("this sector was not allocated for a snap upgrade"),
            );
        }
        // sealer.go SubmitSnapUpProof: the proof is there, the pieces are the sector's, in order.
        if info.proof.0.is_empty() {
            return result(SubmitResult::Rejected, Some("empty proof is invalid"));
        }
        if record.pieces.len() != info.pieces.len() {
            return result(
                SubmitResult::Rejected,
                Some(&format!(
                    "pieces count not match: {} != {}",
                    record.pieces.len(),
                    info.pieces.len()
                )),
            );
        }
        let mismatched = record
            .pieces
            .iter()
            .zip(&info.pieces)
            .position(|(ours, theirs)| ours.piece.piece_cid != *theirs);
        if let Some(index) = mismatched {
            return result(
                SubmitResult::Rejected,
                Some(&format!(
                    "piece cid not match at #{index}: {} != {}",
                    record.pieces[index].piece.piece_cid.cid, info.pieces[index].cid
                )),
            );
        }
        if !*files_present {
            return result(SubmitResult::FilesMissed, Some("not all files persisted"));
        }
        if !*verified {
            return result(
                SubmitResult::MismatchedSubmission,
                Some("the update proof does not verify against the old and new commitments"),
            );
        }
        record.upgrade = Some(UpgradeRecord {
            comm_r: info.comm_r,
            comm_d: info.comm_d,
            pieces: info.pieces.iter().map(|c| c.cid.clone()).collect(),
            access_instance: info.access_instance.clone(),
            proof_sha256: proof_sha256.clone(),
            submitted_epoch: head,
        });
        result(SubmitResult::Accepted, None)
    }

    /// Marks a committed sector for rebuild (what `damocles-manager util sealer sectors rebuild`
    /// does): like SectorSetForRebuild, only a finalized (offline) sector, brought back online.
    pub fn mark_rebuild(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<(), ChainError> {
        self.mark_rebuild_as(rules, id, head, false)
    }

    /// [`Self::mark_rebuild`], with the sector's deals kept as a v0.9-era manager kept them
    /// when `legacy_deals` (as if it had been sealed then): its rebuild gets them as `Pieces`.
    pub fn mark_rebuild_as(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
        legacy_deals: bool,
    ) -> Result<(), ChainError> {
        let record = self.sector(rules, id)?;
        if committed(record, rules, head).is_none() {
            return Err(ChainError::NotReady(format!(
                "{id:?} is not a committed sector (proof landed, files persisted): nothing to rebuild"
            )));
        }
        if !record.finalized {
            return Err(ChainError::NotReady(format!(
                "{id:?} is still in the sealing state store (not finalized): it cannot be set \
                 for rebuild"
            )));
        }
        record.finalized = false;
        record.rebuild = Some(RebuildMark { allocated: false });
        record.legacy_deals |= legacy_deals;
        Ok(())
    }

    /// The oldest sector marked for rebuild and not yet taken, with its original ticket.
    pub fn allocate_rebuild(
        &mut self,
        rules: &ChainRules,
        spec: &AllocateSectorSpec,
    ) -> Option<SectorRebuildInfo> {
        if !self.admits(spec, rules) {
            return None;
        }
        let (number, record) = self.sectors.iter_mut().find(|(_, record)| {
            record.rebuild.as_ref().is_some_and(|mark| !mark.allocated)
                && record.precommit.is_some()
        })?;
        record.rebuild = Some(RebuildMark { allocated: true });
        Some(SectorRebuildInfo {
            sector: allocated(rules, *number, record.proof_type),
            ticket: record.precommit.as_ref()?.info.ticket.clone(),
            // damocles-manager sends each list only when it has entries (sealer_cli.go): null
            // for a committed-capacity sector; for an upgraded one, the upgrade's deals
            // (AllocateSanpUpSector replaced the pieces).
            pieces: (record.legacy_deals && !record.pieces.is_empty())
                .then(|| legacy_deals(&record.pieces)),
            pieces_v2: (!record.legacy_deals && !record.pieces.is_empty())
                .then(|| record.pieces.clone()),
            is_snap_up: record.upgrade.is_some(),
            upgrade_public: record
                .upgrade_public
                .clone()
                .filter(|_| record.upgrade.is_some()),
        })
    }

    /// Queues a piece to recover (what a retrieval market's unseal request does).
    pub fn queue_unseal(
        &mut self,
        rules: &ChainRules,
        mut job: UnsealJob,
        head: i64,
    ) -> Result<(), ChainError> {
        let id = SectorId {
            miner: rules.miner,
            number: job.sector,
        };
        let record = self.sector(rules, id)?;
        if committed(record, rules, head).is_none() {
            return Err(ChainError::NotReady(format!(
                "{id:?} is not a committed sector: nothing to unseal"
            )));
        }
        job.allocated = false;
        job.achieved = None;
        self.unseals.push(job);
        Ok(())
    }

    /// The oldest queued unseal not yet taken, with the sector's sealing facts. As
    /// damocles-manager's AllocateUnsealSector, the job is taken off the queue first and the
    /// sector then loaded from the offline store: a sector still online fails the call (code 1)
    /// and the job is lost. The sector comes back online, marked unsealing.
    pub fn allocate_unseal(
        &mut self,
        rules: &ChainRules,
        spec: &AllocateSectorSpec,
    ) -> Result<Option<SectorUnsealInfo>, ChainError> {
        if !self.admits(spec, rules) {
            return Ok(None);
        }
        let Some(index) = self.unseals.iter().position(|job| !job.allocated) else {
            return Ok(None);
        };
        self.unseals[index].allocated = true;
        let job = self.unseals[index].clone();
        let id = SectorId {
            miner: rules.miner,
            number: job.sector,
        };
        let current = self.miner_proof_type(rules);
        let record = self.sector(rules, id)?;
        let precommit = match &record.precommit {
            Some(precommit) if record.finalized => precommit.clone(),
            _ => {
                self.unseals.remove(index);
                return Err(ChainError::NotReady(format!(
                    "load sector state: {id:?} is not in the offline store (not finalized)"
                )));
            }
        };
        record.finalized = false;
        record.unsealing = true;
        Ok(Some(SectorUnsealInfo {
            sector: allocated(rules, job.sector, current),
            piece_cid: CidJson {
                cid: job.piece_cid.clone(),
            },
            offset: job.offset,
            size: job.size,
            private_info: SectorPrivateInfo {
                access_instance: record.persisted.clone().unwrap_or_default(),
            },
            ticket: precommit.info.ticket.clone(),
            comm_d: precommit.info.comm_d,
            dest: Some(job.dest.clone()),
            state: Some(serde_json::json!("unsealing")),
            error_info: String::new(),
        }))
    }

    fn unseal_job(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        piece_cid: &str,
    ) -> Result<&mut UnsealJob, ChainError> {
        self.sector(rules, id)?;
        self.unseals
            .iter_mut()
            .find(|job| job.sector == id.number && job.piece_cid == piece_cid && job.allocated)
            .ok_or_else(|| {
                ChainError::NotReady(format!(
                    "no allocated unseal of piece {piece_cid} in {id:?}"
                ))
            })
    }

    pub fn unseal_dest(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        piece_cid: &str,
    ) -> Result<Vec<String>, ChainError> {
        Ok(self.unseal_job(rules, id, piece_cid)?.dest.clone())
    }

    pub fn achieve_unseal(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        piece_cid: &str,
        error: &str,
    ) -> Result<(), ChainError> {
        Self::count(self.sector(rules, id)?, "AchieveUnsealSector");
        self.unseal_job(rules, id, piece_cid)?.achieved = Some(error.to_string());
        Ok(())
    }
}

/// The store to reserve space in: the first of `candidates` this manager knows, or its first store
/// when no candidate is named.
pub fn reserve_space(stores: &[StoreBasicInfo], candidates: &[String]) -> Option<StoreBasicInfo> {
    stores
        .iter()
        .find(|store| {
            !store.read_only && (candidates.is_empty() || candidates.contains(&store.name))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::wire::{Bytes, PreCommitOnChainInfo, Ticket};

    /// A sector taken through PreCommit, persistence and a landed proof, at head 10_200.
    fn committed_sector() -> (ChainRules, ChainState, SectorId) {
        let rules = ChainRules::default();
        let mut state = ChainState::default();
        let sector = state
            .allocate(&rules, &AllocateSectorSpec::default())
            .unwrap();
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        let info = PreCommitOnChainInfo {
            comm_r: [1; 32],
            comm_d: [2; 32],
            ticket,
            deals: vec![],
        };
        state
            .submit_pre_commit(&rules, &sector, &info, Default::default(), 10_001)
            .unwrap();
        state
            .submit_persisted(&rules, sector.id, "store-1", false, true)
            .unwrap();
        state.wait_seed(&rules, sector.id, 10_160).unwrap();
        state
            .submit_proof(&rules, sector.id, "aa", true, Default::default(), 10_170)
            .unwrap();
        (rules, state, sector.id)
    }

    /// A committed sector its sealer reported finalized: offline at the manager.
    fn finalized_sector() -> (ChainRules, ChainState, SectorId) {
        let (rules, mut state, id) = committed_sector();
        state.finalize(&rules, id).unwrap();
        (rules, state, id)
    }

    fn deal_piece() -> crate::manager::wire::SectorPiece {
        crate::manager::wire::SectorPiece {
            piece: crate::manager::wire::PieceInfo {
                size: 2048,
                piece_cid: CidJson {
                    cid: "baga6ea4seaqdeal".into(),
                },
            },
            deal_info: None,
        }
    }

    fn snap_info() -> SnapUpOnChainInfo {
        SnapUpOnChainInfo {
            comm_r: [5; 32],
            comm_d: [6; 32],
            access_instance: "store-1".into(),
            pieces: vec![deal_piece().piece.piece_cid],
            proof: Bytes(vec![1, 2, 3]),
        }
    }

    #[test]
    fn only_committed_sectors_are_upgraded_and_each_once() {
        let (rules, state, _) = committed_sector();
        let spec = AllocateSnapUpSpec::default();
        assert_eq!(
            state.snapup_candidate(&rules, &spec, 10_200),
            None,
            "not finalized yet"
        );
        let (rules, mut state, id) = finalized_sector();
        let spec = AllocateSnapUpSpec::default();
        assert_eq!(
            state.snapup_candidate(&rules, &spec, 10_172),
            None,
            "the proof has not landed yet"
        );
        let number = state.snapup_candidate(&rules, &spec, 10_200).unwrap();
        let snap = state
            .allocate_snapup(&rules, number, 10_200, vec![deal_piece()], [9; 32])
            .unwrap();
        assert_eq!(snap.sector.id, id);
        assert_eq!(snap.pieces, Some(vec![deal_piece()]));
        assert!(!state.sectors[&id.number].finalized, "back online");
        assert_eq!(snap.public.comm_r, [1; 32]);
        assert_eq!(snap.private.access_instance, "store-1");
        assert_eq!(state.snapup_candidate(&rules, &spec, 10_200), None);
        // Lost by its worker and given back by the admin: a candidate again, then handed out
        // again as before.
        state.release_snapup(&rules, id).unwrap();
        assert!(state.sectors[&id.number].finalized, "offline again");
        assert!(state.sectors[&id.number].upgrade_public.is_none());
        assert_eq!(state.snapup_candidate(&rules, &spec, 10_200), Some(number));
        let again = state
            .allocate_snapup(&rules, number, 10_200, vec![deal_piece()], [9; 32])
            .unwrap();
        assert_eq!(again, snap);

        let submit = |state: &mut ChainState, sha: &str, verified, files_present| {
            let checks = SnapUpChecks {
                proof_sha256: sha.into(),
                verified,
                files_present,
            };
            state
                .submit_snapup(&rules, id, &snap_info(), &checks, 10_300)
                .unwrap()
                .res
        };
        assert_eq!(
            submit(&mut state, "p", true, false),
            SubmitResult::FilesMissed
        );
        assert_eq!(
            submit(&mut state, "p", false, true),
            SubmitResult::MismatchedSubmission
        );
        assert_eq!(submit(&mut state, "p", true, true), SubmitResult::Accepted);
        for sha in ["p", "q"] {
            let repeat = SnapUpChecks {
                proof_sha256: sha.into(),
                verified: true,
                files_present: true,
            };
            assert_eq!(
                state.submit_snapup(&rules, id, &snap_info(), &repeat, 10_300),
                Err(ChainError::NotReady(
                    "commit snapup sector: duplicate commit job".into()
                )),
                "a commit job runs: a repeat is refused, identical or not"
            );
        }
        assert_eq!(
            state.sectors[&id.number].submissions["SubmitSnapUpProof"],
            5
        );
        assert!(matches!(
            state.release_snapup(&rules, id),
            Err(ChainError::NotReady(m)) if m.contains("accepted")
        ));
        assert!(matches!(
            state.mark_rebuild(&rules, id, 10_400),
            Err(ChainError::NotReady(m)) if m.contains("not finalized")
        ));
        state.finalize(&rules, id).unwrap();
        assert!(
            !state.sectors[&id.number].finalized,
            "ReportFinalized leaves an upgraded sector online while its commit job runs"
        );
        let final_at = 10_300 + rules.proof_landing + crate::dev::manager::chain::UPGRADE_FINALITY;
        state.settle_upgrades(&rules, final_at - 1);
        assert!(!state.sectors[&id.number].finalized);
        state.settle_upgrades(&rules, final_at);
        assert!(
            state.sectors[&id.number].finalized,
            "the job ends once the upgrade is final and takes the sector offline"
        );
        state.mark_rebuild(&rules, id, final_at).unwrap();
        let info = state
            .allocate_rebuild(&rules, &AllocateSectorSpec::default())
            .unwrap();
        assert!(info.is_snap_up);
        assert_eq!(
            info.upgrade_public.map(|p| p.comm_r),
            state.sectors[&id.number]
                .precommit
                .as_ref()
                .map(|p| p.info.comm_r),
            "UpgradePublic is the committed-capacity sector's public info"
        );
    }

    #[test]
    fn a_rebuild_hands_out_the_original_ticket_once_and_ends_with_report_finalized() {
        let (rules, mut state, id) = committed_sector();
        let spec = AllocateSectorSpec::default();
        assert!(
            matches!(
                state.mark_rebuild(&rules, id, 10_200),
                Err(ChainError::NotReady(m)) if m.contains("not finalized")
            ),
            "a sector still being sealed cannot be set for rebuild"
        );
        state.finalize(&rules, id).unwrap();
        for round in 1..=2 {
            assert_eq!(state.allocate_rebuild(&rules, &spec), None);
            state.mark_rebuild(&rules, id, 10_200).unwrap();
            let rebuild = state.allocate_rebuild(&rules, &spec).unwrap();
            assert_eq!(rebuild.sector.id, id);
            assert_eq!(rebuild.ticket.epoch, 10_000 - 900);
            assert_eq!(rebuild.pieces_v2, None, "a committed-capacity sector");
            assert_eq!(state.allocate_rebuild(&rules, &spec), None, "taken once");
            state
                .submit_persisted(&rules, id, "store-2", false, true)
                .unwrap();
            assert_eq!(state.sectors[&id.number].rebuilds, round - 1);
            state.finalize(&rules, id).unwrap();
            let record = &state.sectors[&id.number];
            assert_eq!((record.rebuilds, record.finalized), (round, true));
            assert_eq!(record.rebuild, None);
            assert_eq!(
                state.finalize(&rules, id),
                Err(ChainError::UnknownSector(id)),
                "a second ReportFinalized finds the sector offline"
            );
        }
    }

    /// WorkerPing as damocles-manager answers it: a name and a Dest are required; a second ping
    /// of the same worker replaces the first.
    #[test]
    fn a_worker_ping_is_recorded_by_name_and_refused_without_name_or_dest() {
        use crate::manager::wire::WorkerInfo;
        let mut state = ChainState::default();
        let info = |name: &str, dest: &str| WorkerInfo {
            name: name.into(),
            dest: dest.into(),
            ..Default::default()
        };
        assert_eq!(
            state.worker_ping(info("", "10.0.0.7:17890"), 1),
            Err(ChainError::NotReady("worker name is required".into()))
        );
        assert_eq!(
            state.worker_ping(info("op-0", ""), 1),
            Err(ChainError::NotReady("worker dest is required".into()))
        );
        state
            .worker_ping(info("op-0", "10.0.0.7:17890"), 1)
            .unwrap();
        state
            .worker_ping(info("op-0", "10.0.0.8:17890"), 2)
            .unwrap();
        assert_eq!(state.workers.len(), 1);
        assert_eq!(state.workers["op-0"].info.dest, "10.0.0.8:17890");
        assert_eq!(state.workers["op-0"].last_ping, 2);
    }

    /// A sector kept as a v0.9-era manager kept it: its rebuild gets the deals as `Pieces`, in
    /// the legacy shape with their padded offsets, and no `PiecesV2`.
    #[test]
    fn a_legacy_sectors_rebuild_hands_out_its_deals_as_legacy_pieces() {
        use crate::manager::wire::{DealInfo, PieceInfo, SectorPiece};
        let (rules, mut state, id) = committed_sector();
        let piece = |cid: &str, deal_id, payload_size| SectorPiece {
            piece: PieceInfo {
                size: 1024,
                piece_cid: CidJson { cid: cid.into() },
            },
            deal_info: Some(DealInfo {
                deal_id,
                payload_size,
                is_builtin_market: true,
                ..Default::default()
            }),
        };
        state.sectors.get_mut(&id.number).unwrap().pieces = vec![
            piece("baga6ea4seaqa", 3, 1000),
            piece("baga6ea4seaqb", 4, 900),
        ];
        state.finalize(&rules, id).unwrap();
        state.mark_rebuild_as(&rules, id, 10_200, true).unwrap();
        let info = state
            .allocate_rebuild(&rules, &AllocateSectorSpec::default())
            .unwrap();
        assert_eq!(info.pieces_v2, None);
        let legacy = info.pieces.unwrap();
        let shape: Vec<(u64, u64, u64, &str)> = legacy
            .iter()
            .map(|d| {
                (
                    d.id,
                    d.payload_size,
                    d.piece.offset,
                    d.piece.cid.cid.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            [
                (3, 1000, 0, "baga6ea4seaqa"),
                (4, 900, 1024, "baga6ea4seaqb")
            ]
        );
    }

    /// As damocles-manager: once the miner turns synthetic PoRep on, allocations filter by its
    /// new type (a spec naming only the old type gets nothing, not even a rebuild of a sector
    /// sealed with it), new sectors get the new type, and a rebuild keeps the sector's own.
    #[test]
    fn a_miner_turning_synthetic_on_changes_what_is_handed_out_but_not_a_rebuilds_type() {
        let (rules, mut state, id) = committed_sector();
        state.finalize(&rules, id).unwrap();
        state.mark_rebuild(&rules, id, 10_200).unwrap();
        state.set_synthetic(&rules, true).unwrap();
        let only = |types: &[i64]| AllocateSectorSpec {
            allowed_miners: None,
            allowed_proof_types: Some(types.to_vec()),
        };
        assert_eq!(state.allocate_rebuild(&rules, &only(&[5])), None);
        let rebuild = state.allocate_rebuild(&rules, &only(&[5, 10])).unwrap();
        assert_eq!((rebuild.sector.id, rebuild.sector.proof_type), (id, 5));
        assert_eq!(state.allocate(&rules, &only(&[5])), None);
        let fresh = state.allocate(&rules, &only(&[5, 10])).unwrap();
        assert_eq!(fresh.proof_type, 10);
        assert_eq!(state.sectors[&fresh.id.number].proof_type, 10);
        state.set_synthetic(&rules, false).unwrap();
        assert_eq!(state.allocate(&rules, &only(&[5])).unwrap().proof_type, 5);
    }

    #[test]
    fn unseals_are_queued_allocated_and_achieved() {
        let (rules, mut state, id) = committed_sector();
        let spec = AllocateSectorSpec::default();
        let cid = "baga6ea4seaqpiece";
        let job = UnsealJob {
            sector: id.number,
            piece_cid: cid.into(),
            offset: 0,
            size: 127,
            dest: vec!["file:///out".into()],
            allocated: false,
            achieved: None,
        };
        state.queue_unseal(&rules, job.clone(), 10_200).unwrap();
        assert!(
            matches!(state.allocate_unseal(&rules, &spec), Err(ChainError::NotReady(m)) if m.contains("load sector state")),
            "a sector still online cannot be unsealed"
        );
        assert_eq!(
            state.allocate_unseal(&rules, &spec),
            Ok(None),
            "the job is lost"
        );
        state.finalize(&rules, id).unwrap();
        state.queue_unseal(&rules, job, 10_200).unwrap();
        assert!(state.unseal_dest(&rules, id, cid).is_err(), "not allocated");
        let unseal = state.allocate_unseal(&rules, &spec).unwrap().unwrap();
        assert_eq!(
            (unseal.sector.id, unseal.size, unseal.comm_d),
            (id, 127, [2; 32])
        );
        assert_eq!(unseal.state, Some(serde_json::json!("unsealing")));
        assert_eq!(
            unseal.ticket,
            Ticket {
                ticket: crate::dev::manager::chain::randomness("ticket", id, 9_100),
                epoch: 9_100
            }
        );
        assert_eq!(state.allocate_unseal(&rules, &spec), Ok(None));
        assert_eq!(
            state.unseal_dest(&rules, id, cid).unwrap(),
            vec!["file:///out"]
        );
        state.achieve_unseal(&rules, id, cid, "").unwrap();
        assert_eq!(state.unseals[0].achieved.as_deref(), Some(""));
        let record = &state.sectors[&id.number];
        assert!(record.unsealing && !record.finalized);
        state.finalize(&rules, id).unwrap();
        let record = &state.sectors[&id.number];
        assert!(!record.unsealing && record.finalized);
    }

    #[test]
    fn an_offline_sector_answers_finalized_and_refuses_online_calls() {
        let (rules, mut state, id) = committed_sector();
        let deal = |deal_id, sector| crate::dev::manager::market::MarketDeal {
            deal_id,
            piece_cid: format!("baga6ea4seaq{deal_id}"),
            piece_size: 2048,
            payload_size: 1000,
            start_epoch: 20_000,
            end_epoch: 600_000,
            sector,
        };
        state.deals = vec![deal(1, Some(id.number)), deal(2, Some(id.number + 1))];
        state.report(&rules, id, "a -> b (c)".into()).unwrap();
        state.abort(&rules, id, "aborted via CLI").unwrap();
        // As damocles-manager's ReportAborted: the deals go back to the market, even a proven
        // sector's.
        assert_eq!(
            state.deals.iter().map(|d| d.sector).collect::<Vec<_>>(),
            vec![None, Some(id.number + 1)]
        );
        let record = state.report(&rules, id, "b -> c (d)".into()).unwrap();
        assert!(record.finalized);
        assert_eq!(record.aborted.as_deref(), Some("aborted via CLI"));
        assert_eq!(
            record.reports,
            vec!["a -> b (c)"],
            "nothing recorded offline"
        );
        let unknown = Err(ChainError::UnknownSector(id));
        assert_eq!(state.abort(&rules, id, "again").map(drop), unknown);
        assert_eq!(state.finalize(&rules, id), unknown);
        assert_eq!(state.poll_proof(&rules, id, 10_300).map(drop), unknown);
        assert_eq!(state.wait_seed(&rules, id, 10_300).map(drop), unknown);
    }

    #[test]
    fn reserve_space_takes_a_writable_candidate() {
        let store = |name: &str, read_only| StoreBasicInfo {
            name: name.into(),
            path: format!("/stores/{name}"),
            strict: false,
            read_only,
            weight: 1,
            meta: None,
        };
        let stores = [store("ro", true), store("a", false), store("b", false)];
        assert_eq!(reserve_space(&stores, &[]).unwrap().name, "a");
        assert_eq!(reserve_space(&stores, &["b".into()]).unwrap().name, "b");
        assert_eq!(reserve_space(&stores, &["ro".into()]), None);
    }
}
