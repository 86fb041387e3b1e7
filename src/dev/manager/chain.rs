//! The dev manager's record of a simulated chain: the pure rules, no I/O and no clock. The server
//! passes the current epoch in and persists the state after each change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manager::wire::{
    AllocateSectorSpec, AllocatedSector, OnChainState, PollResp, PreCommitOnChainInfo, Randomness,
    SectorId, Seed, SubmitResp, SubmitResult, Ticket, WaitSeedResp,
};

/// The chain parameters the dev manager simulates, in epochs (Filecoin mainnet values by default).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainRules {
    pub miner: u64,
    /// Seal proof type handed out (5: StackedDrg2KiBV1_1).
    pub proof_type: i64,
    /// A ticket is drawn this many epochs below the head (SealRandomnessLookback).
    pub ticket_lookback: i64,
    /// A PreCommit whose ticket is older than head - this is rejected (2880 + 900 on mainnet).
    pub ticket_max_age: i64,
    /// Epochs between a PreCommit submission and it landing.
    pub precommit_landing: i64,
    /// Epochs between the PreCommit landing and the seed (PreCommitChallengeDelay).
    pub seed_delay: i64,
    /// Epochs between a proof submission and it landing.
    pub proof_landing: i64,
    /// Seconds per epoch, to turn epochs into WaitSeed's delay.
    pub block_seconds: f64,
}

impl Default for ChainRules {
    fn default() -> Self {
        Self {
            miner: 1000,
            proof_type: 5,
            ticket_lookback: 900,
            ticket_max_age: 2880 + 900,
            precommit_landing: 3,
            seed_delay: 150,
            proof_landing: 3,
            block_seconds: 30.0,
        }
    }
}

/// Why the manager refuses a call outright (a JSON-RPC error, not a result code).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error("sector state not found: {0:?}")]
    UnknownSector(SectorId),
    #[error("{0}")]
    NotReady(String),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SectorRecord {
    pub proof_type: i64,
    pub ticket: Option<Ticket>,
    pub precommit: Option<PreCommitRecord>,
    pub persisted: Option<String>,
    pub seed: Option<Seed>,
    pub proof: Option<ProofRecord>,
    pub finalized: bool,
    pub aborted: Option<String>,
    /// State changes the worker reported, newest last (capped).
    pub reports: Vec<String>,
    /// How many times each submitting method was called for this sector.
    pub submissions: BTreeMap<String, u32>,
    /// Handed out by AllocateSanpUpSector (a sector is upgraded at most once).
    #[serde(default)]
    pub snapup_allocated: bool,
    #[serde(default)]
    pub upgrade: Option<UpgradeRecord>,
    #[serde(default)]
    pub rebuild: Option<RebuildMark>,
    /// Rebuilds completed (SubmitPersistedEx after a rebuild allocation).
    #[serde(default)]
    pub rebuilds: u32,
}

/// An accepted empty-sector-update.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    pub comm_r: [u8; 32],
    pub comm_d: [u8; 32],
    pub pieces: Vec<String>,
    pub access_instance: String,
    pub proof_sha256: String,
    pub submitted_epoch: i64,
}

/// A sector marked for rebuild (admin API), and whether a worker took it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RebuildMark {
    pub allocated: bool,
}

/// A queued request to recover a piece from a sector (admin API).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnsealJob {
    pub sector: u64,
    pub piece_cid: String,
    pub offset: u64,
    pub size: u64,
    pub dest: Vec<String>,
    pub allocated: bool,
    /// Set when the worker reported it: "" for success, else the error.
    pub achieved: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PreCommitRecord {
    pub info: PreCommitOnChainInfo,
    pub submitted_epoch: i64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProofRecord {
    /// sha256 of the proof bytes, to tell a duplicate from a different proof.
    pub sha256: String,
    pub submitted_epoch: i64,
}

const REPORTS_KEPT: usize = 64;

/// Everything the dev manager remembers; serialized to its state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainState {
    pub next_number: u64,
    pub sectors: BTreeMap<u64, SectorRecord>,
    #[serde(default)]
    pub unseals: Vec<UnsealJob>,
}

/// Whether an allocation spec admits this manager's miner and proof type (empty lists admit all).
pub(super) fn spec_allows(spec: &AllocateSectorSpec, rules: &ChainRules) -> bool {
    let miner_ok = spec
        .allowed_miners
        .as_ref()
        .is_none_or(|m| m.is_empty() || m.contains(&rules.miner));
    let proof_ok = spec
        .allowed_proof_types
        .as_ref()
        .is_none_or(|p| p.is_empty() || p.contains(&rules.proof_type));
    miner_ok && proof_ok
}

/// Deterministic chain randomness for an epoch (top two bits clear: a field element).
pub fn randomness(domain: &str, sector: SectorId, epoch: i64) -> Randomness {
    let digest = Sha256::new()
        .chain_update(domain)
        .chain_update(sector.miner.to_le_bytes())
        .chain_update(sector.number.to_le_bytes())
        .chain_update(epoch.to_le_bytes())
        .finalize();
    let mut bytes: [u8; 32] = digest.into();
    bytes[31] &= 0x3f;
    Randomness(bytes)
}

impl ChainState {
    pub(super) fn sector(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
    ) -> Result<&mut SectorRecord, ChainError> {
        if id.miner != rules.miner {
            return Err(ChainError::UnknownSector(id));
        }
        self.sectors
            .get_mut(&id.number)
            .ok_or(ChainError::UnknownSector(id))
    }

    pub(super) fn count(record: &mut SectorRecord, method: &str) {
        *record.submissions.entry(method.to_string()).or_default() += 1;
    }

    /// A new sector number, or none when the spec does not allow this manager's miner or proof type.
    pub fn allocate(
        &mut self,
        rules: &ChainRules,
        spec: &AllocateSectorSpec,
    ) -> Option<AllocatedSector> {
        if !spec_allows(spec, rules) {
            return None;
        }
        self.next_number += 1;
        let number = self.next_number;
        self.sectors.insert(
            number,
            SectorRecord {
                proof_type: rules.proof_type,
                ..Default::default()
            },
        );
        Some(AllocatedSector {
            id: SectorId {
                miner: rules.miner,
                number,
            },
            proof_type: rules.proof_type,
        })
    }

    pub fn assign_ticket(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<Ticket, ChainError> {
        let record = self.sector(rules, id)?;
        let epoch = head - rules.ticket_lookback;
        let ticket = Ticket {
            ticket: randomness("ticket", id, epoch),
            epoch,
        };
        record.ticket = Some(ticket.clone());
        Ok(ticket)
    }

    pub fn submit_pre_commit(
        &mut self,
        rules: &ChainRules,
        sector: &AllocatedSector,
        info: &PreCommitOnChainInfo,
        head: i64,
    ) -> Result<SubmitResp, ChainError> {
        let record = self.sector(rules, sector.id)?;
        Self::count(record, "SubmitPreCommit");
        let result = |res, desc: &str| {
            Ok(SubmitResp {
                res,
                desc: (!desc.is_empty()).then(|| desc.to_string()),
            })
        };
        if let Some(existing) = &record.precommit {
            return if existing.info == *info {
                result(SubmitResult::DuplicateSubmit, "")
            } else {
                result(
                    SubmitResult::MismatchedSubmission,
                    "a different PreCommit was already submitted",
                )
            };
        }
        if record.ticket.as_ref() != Some(&info.ticket) {
            return result(
                SubmitResult::MismatchedSubmission,
                "the ticket is not the one assigned to this sector",
            );
        }
        if info.ticket.epoch < head - rules.ticket_max_age {
            return result(
                SubmitResult::Rejected,
                &format!(
                    "ticket expired: epoch {} is older than {} (head {head} - {})",
                    info.ticket.epoch,
                    head - rules.ticket_max_age,
                    rules.ticket_max_age
                ),
            );
        }
        if info.comm_r == [0; 32] || info.comm_d == [0; 32] {
            return result(SubmitResult::Rejected, "CommR and CommD must not be zero");
        }
        record.precommit = Some(PreCommitRecord {
            info: info.clone(),
            submitted_epoch: head,
        });
        result(SubmitResult::Accepted, "")
    }

    /// Not submitted: NotFound; submitted: Pending until `delay` epochs later, then Landed.
    fn poll(submitted_epoch: Option<i64>, delay: i64, head: i64) -> PollResp {
        let state = match submitted_epoch {
            None => OnChainState::NotFound,
            Some(epoch) if head >= epoch + delay => OnChainState::Landed,
            Some(_) => OnChainState::Pending,
        };
        PollResp { state, desc: None }
    }

    pub fn poll_pre_commit(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<PollResp, ChainError> {
        let record = self.sector(rules, id)?;
        let submitted = record.precommit.as_ref().map(|p| p.submitted_epoch);
        Ok(Self::poll(submitted, rules.precommit_landing, head))
    }

    pub fn submit_persisted(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        instance: &str,
        files_present: bool,
    ) -> Result<bool, ChainError> {
        let record = self.sector(rules, id)?;
        Self::count(record, "SubmitPersisted");
        if !files_present {
            return Ok(false);
        }
        record.persisted = Some(instance.to_string());
        if record.rebuild.as_ref().is_some_and(|mark| mark.allocated) {
            record.rebuild = None;
            record.rebuilds += 1;
        }
        Ok(true)
    }

    pub fn wait_seed(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<WaitSeedResp, ChainError> {
        let record = self.sector(rules, id)?;
        let Some(precommit) = &record.precommit else {
            return Err(ChainError::NotReady(format!(
                "no PreCommit on chain for {id:?}"
            )));
        };
        let seed_epoch = precommit.submitted_epoch + rules.precommit_landing + rules.seed_delay;
        if head < seed_epoch {
            let seconds = ((seed_epoch - head) as f64 * rules.block_seconds)
                .ceil()
                .max(1.0) as i64;
            return Ok(WaitSeedResp {
                should_wait: true,
                delay: seconds,
                seed: None,
            });
        }
        let seed = Seed {
            seed: randomness("seed", id, seed_epoch),
            epoch: seed_epoch,
        };
        record.seed = Some(seed.clone());
        Ok(WaitSeedResp {
            should_wait: false,
            delay: 0,
            seed: Some(seed),
        })
    }

    /// `verified`: what the dev manager's proof check said about these bytes.
    pub fn submit_proof(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        proof_sha256: &str,
        verified: bool,
        head: i64,
    ) -> Result<SubmitResp, ChainError> {
        let record = self.sector(rules, id)?;
        Self::count(record, "SubmitProof");
        if let Some(existing) = &record.proof {
            let (res, desc) = if existing.sha256 == proof_sha256 {
                (SubmitResult::DuplicateSubmit, None)
            } else {
                (
                    SubmitResult::MismatchedSubmission,
                    Some("a different proof was already accepted".to_string()),
                )
            };
            return Ok(SubmitResp { res, desc });
        }
        if record.seed.is_none() {
            return Err(ChainError::NotReady(format!(
                "no seed was handed out for {id:?}"
            )));
        }
        if !verified {
            // Recoverable by a person: rerun C2 (resume) and submit the new proof.
            return Ok(SubmitResp {
                res: SubmitResult::MismatchedSubmission,
                desc: Some(
                    "the proof does not verify against the sector's PreCommit and seed".into(),
                ),
            });
        }
        record.proof = Some(ProofRecord {
            sha256: proof_sha256.to_string(),
            submitted_epoch: head,
        });
        Ok(SubmitResp {
            res: SubmitResult::Accepted,
            desc: None,
        })
    }

    pub fn poll_proof(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<PollResp, ChainError> {
        let record = self.sector(rules, id)?;
        let submitted = record.proof.as_ref().map(|p| p.submitted_epoch);
        Ok(Self::poll(submitted, rules.proof_landing, head))
    }

    pub fn report(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        text: String,
    ) -> Result<&SectorRecord, ChainError> {
        let record = self.sector(rules, id)?;
        record.reports.push(text);
        if record.reports.len() > REPORTS_KEPT {
            record.reports.remove(0);
        }
        Ok(record)
    }

    pub fn finalize(&mut self, rules: &ChainRules, id: SectorId) -> Result<(), ChainError> {
        self.sector(rules, id)?.finalized = true;
        Ok(())
    }

    pub fn abort(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        reason: &str,
    ) -> Result<(), ChainError> {
        self.sector(rules, id)?.aborted = Some(reason.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (ChainRules, ChainState, AllocatedSector) {
        let rules = ChainRules::default();
        let mut state = ChainState::default();
        let sector = state
            .allocate(&rules, &AllocateSectorSpec::default())
            .unwrap();
        (rules, state, sector)
    }

    fn info(ticket: Ticket) -> PreCommitOnChainInfo {
        PreCommitOnChainInfo {
            comm_r: [1; 32],
            comm_d: [2; 32],
            ticket,
            deals: vec![],
        }
    }

    #[test]
    fn allocation_hands_out_increasing_numbers_for_this_miner_only() {
        let (rules, mut state, first) = setup();
        let second = state
            .allocate(&rules, &AllocateSectorSpec::default())
            .unwrap();
        assert_eq!((first.id.number, second.id.number), (1, 2));
        let other = AllocateSectorSpec {
            allowed_miners: Some(vec![2000]),
            allowed_proof_types: None,
        };
        assert_eq!(state.allocate(&rules, &other), None);
    }

    #[test]
    fn a_sector_goes_from_ticket_to_landed_proof() {
        let (rules, mut state, sector) = setup();
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        assert_eq!(ticket.epoch, 10_000 - 900);
        let resp = state
            .submit_pre_commit(&rules, &sector, &info(ticket.clone()), 10_010)
            .unwrap();
        assert_eq!(resp.res, SubmitResult::Accepted);
        let again = state
            .submit_pre_commit(&rules, &sector, &info(ticket.clone()), 10_011)
            .unwrap();
        assert_eq!(again.res, SubmitResult::DuplicateSubmit);
        let mut different = info(ticket);
        different.comm_r = [9; 32];
        assert_eq!(
            state
                .submit_pre_commit(&rules, &sector, &different, 10_011)
                .unwrap()
                .res,
            SubmitResult::MismatchedSubmission
        );
        assert_eq!(state.sectors[&1].submissions["SubmitPreCommit"], 3);

        assert_eq!(
            state
                .poll_pre_commit(&rules, sector.id, 10_012)
                .unwrap()
                .state,
            OnChainState::Pending
        );
        assert_eq!(
            state
                .poll_pre_commit(&rules, sector.id, 10_013)
                .unwrap()
                .state,
            OnChainState::Landed
        );
        let wait = state.wait_seed(&rules, sector.id, 10_013).unwrap();
        assert!(wait.should_wait && wait.delay == 150 * 30, "{wait:?}");
        let seed = state
            .wait_seed(&rules, sector.id, 10_163)
            .unwrap()
            .seed
            .unwrap();
        assert_eq!(seed.epoch, 10_163);

        let bad = state
            .submit_proof(&rules, sector.id, "aa", false, 10_170)
            .unwrap();
        assert_eq!(bad.res, SubmitResult::MismatchedSubmission);
        assert_eq!(
            state
                .submit_proof(&rules, sector.id, "bb", true, 10_170)
                .unwrap()
                .res,
            SubmitResult::Accepted
        );
        assert_eq!(
            state
                .submit_proof(&rules, sector.id, "bb", true, 10_171)
                .unwrap()
                .res,
            SubmitResult::DuplicateSubmit
        );
        assert_eq!(
            state.poll_proof(&rules, sector.id, 10_173).unwrap().state,
            OnChainState::Landed
        );
    }

    #[test]
    fn an_expired_ticket_is_rejected_and_unknown_sectors_are_errors() {
        let (rules, mut state, sector) = setup();
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        let resp = state
            .submit_pre_commit(&rules, &sector, &info(ticket), 10_000 + 2880 + 1)
            .unwrap();
        assert_eq!(resp.res, SubmitResult::Rejected);
        assert!(resp.desc.unwrap().contains("ticket expired"));
        let unknown = SectorId {
            miner: 1000,
            number: 99,
        };
        assert_eq!(
            state.assign_ticket(&rules, unknown, 1),
            Err(ChainError::UnknownSector(unknown))
        );
        assert!(matches!(
            state.wait_seed(&rules, sector.id, 20_000),
            Err(ChainError::NotReady(_))
        ));
    }
}
