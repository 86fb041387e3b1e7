//! The dev manager's record of a simulated chain: the pure rules, no I/O and no clock. The server
//! passes the current epoch in and persists the state after each change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manager::wire::{
    AllocateSectorSpec, AllocatedSector, ERR_SECTOR_STATE_NOT_FOUND, OnChainState, PollResp,
    PreCommitOnChainInfo, Randomness, SectorId, Seed, SubmitResp, SubmitResult, Ticket,
    WaitSeedResp,
};

/// The chain parameters the dev manager simulates, in epochs (Filecoin mainnet values by default).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainRules {
    pub miner: u64,
    /// The miner's seal proof type at start (5: StackedDrg2KiBV1_1); `/admin/miner` changes it
    /// as turning the miner's UseSyntheticPoRep on or off does.
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

impl ChainError {
    /// The JSON-RPC error damocles-manager answers with: its code and its message.
    pub fn rpc(&self) -> (i64, String) {
        match self {
            // damocles-manager's text (sealer.go sectorStateErr): the sector is not named.
            ChainError::UnknownSector(_) => (
                ERR_SECTOR_STATE_NOT_FOUND,
                format!("error code {ERR_SECTOR_STATE_NOT_FOUND}: sector state not found"),
            ),
            // A logic error (code 1): the call may succeed later.
            ChainError::NotReady(message) => (1, message.clone()),
        }
    }
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
    /// Offline, in damocles-manager's words: ReportFinalized or ReportAborted moved the sector out
    /// of the sealing state store. Only a rebuild, an unseal or a snap-up brings it back online.
    pub finalized: bool,
    pub aborted: Option<String>,
    /// Handed out by AllocateUnsealSector; cleared by the ReportFinalized that ends the unseal.
    #[serde(default)]
    pub unsealing: bool,
    /// The sector's deals are kept as a v0.9-era manager kept them (the legacy `Deals` key), so
    /// a rebuild hands them out as `Pieces`, not `PiecesV2`.
    #[serde(default)]
    pub legacy_deals: bool,
    /// State changes the worker reported, newest last (capped).
    pub reports: Vec<String>,
    /// How many times each submitting method was called for this sector.
    pub submissions: BTreeMap<String, u32>,
    /// How many chain messages each submitting method sent (a resubmission without reset sends
    /// none).
    #[serde(default)]
    pub messages: BTreeMap<String, u32>,
    /// Handed out by AllocateSanpUpSector (a sector is upgraded at most once).
    #[serde(default)]
    pub snapup_allocated: bool,
    #[serde(default)]
    pub upgrade: Option<UpgradeRecord>,
    #[serde(default)]
    pub rebuild: Option<RebuildMark>,
    /// Rebuild marks ended by ReportFinalized (a rebuild finished, or given up by its task).
    #[serde(default)]
    pub rebuilds: u32,
    /// Its pieces, deals and fillers, as AcquireDeals bound them (the market module).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<crate::manager::wire::SectorPiece>,
    /// The unsealed CID (CommD) its deals give; None for committed capacity (zeros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsealed: Option<[u8; 32]>,
    /// The CommD the pieces of its snap-up give, which the update proof is checked with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_unsealed: Option<[u8; 32]>,
    /// The public info of the committed-capacity sector a snap-up was handed out with (its
    /// sector key), kept as damocles-manager keeps UpgradePublic for a later rebuild.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade_public: Option<crate::manager::wire::SectorPublicInfo>,
    /// The snap-up's commit job ended (the upgrade is final) and took the sector offline.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub upgrade_settled: bool,
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
    #[serde(flatten)]
    pub message: Message,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProofRecord {
    /// sha256 of the proof bytes, to tell a duplicate from a different proof.
    pub sha256: String,
    #[serde(flatten)]
    pub message: Message,
}

/// The chain message an accepted submission became.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub submitted_epoch: i64,
    /// Set when the message failed on chain (fault injection): its receipt. A failed message
    /// never lands; only a resubmission with reset sends a new one.
    #[serde(default)]
    pub failed: Option<String>,
}

impl Message {
    fn new(head: i64, fail_on_chain: Option<String>) -> Self {
        Message {
            submitted_epoch: head,
            failed: fail_on_chain,
        }
    }

    /// The epoch it lands at, `delay` epochs after it was sent; never, if it failed.
    pub fn lands_at(&self, delay: i64) -> Option<i64> {
        self.failed
            .is_none()
            .then_some(self.submitted_epoch + delay)
    }

    /// Whether it is on chain at `head`.
    pub fn landed(&self, delay: i64, head: i64) -> bool {
        self.lands_at(delay).is_some_and(|epoch| head >= epoch)
    }
}

/// How a submission is made: with reset (replace what the manager holds and send a new
/// message), and the receipt its message is to fail with on chain (fault injection).
#[derive(Clone, Debug, Default)]
pub struct Submit {
    pub reset: bool,
    pub fail_on_chain: Option<String>,
}

/// damocles-manager's Desc for a proof that does not verify (commitmgr check.go ErrInvalidProof).
pub const INVALID_PROOF: &str = "invalid proof (compute error?)";

/// damocles-manager's answer to a poll of a submission it has no message for (never submitted,
/// or refused): `Failed`, never `NotFound` (commitmgr.go errMsgPublishAttemptFailed).
pub const PUBLISH_ATTEMPT_FAILED: &str = "attempt to publish message but failed";

const REPORTS_KEPT: usize = 64;

/// Epochs after a snap-up's proof lands until damocles-manager's commit job ends and takes the
/// sector offline (chain finality).
pub const UPGRADE_FINALITY: i64 = 900;

/// Everything the dev manager remembers; serialized to its state file.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChainState {
    /// The miner's current seal proof type, once an admin changed it (UseSyntheticPoRep);
    /// ChainRules::proof_type until then.
    #[serde(default)]
    pub proof_type: Option<i64>,
    pub next_number: u64,
    pub sectors: BTreeMap<u64, SectorRecord>,
    #[serde(default)]
    pub unseals: Vec<UnsealJob>,
    /// The deal market.
    #[serde(default)]
    pub deals: Vec<super::market::MarketDeal>,
    /// The workers that pinged, by name, as `damocles-manager util worker list` lists them.
    #[serde(default)]
    pub workers: BTreeMap<String, WorkerPingRecord>,
}

/// A worker's last WorkerPing and when it came (Unix seconds), as damocles-manager keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkerPingRecord {
    pub info: crate::manager::wire::WorkerInfo,
    pub last_ping: i64,
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
    /// A worker's ping (Sealer.WorkerPing): refused without a name or a Dest, as production
    /// refuses it; recorded under its name otherwise, replacing what it sent before.
    pub fn worker_ping(
        &mut self,
        info: crate::manager::wire::WorkerInfo,
        now: i64,
    ) -> Result<(), ChainError> {
        if info.name.is_empty() {
            return Err(ChainError::NotReady("worker name is required".into()));
        }
        if info.dest.is_empty() {
            return Err(ChainError::NotReady("worker dest is required".into()));
        }
        self.workers.insert(
            info.name.clone(),
            WorkerPingRecord {
                info,
                last_ping: now,
            },
        );
        Ok(())
    }

    /// The seal proof type the miner seals new sectors with now (damocles-manager derives it from
    /// the miner's UseSyntheticPoRep, pkg/chain/miner_api.go).
    pub fn miner_proof_type(&self, rules: &ChainRules) -> i64 {
        self.proof_type.unwrap_or(rules.proof_type)
    }

    /// Whether an allocation spec admits this manager's miner and its *current* proof type, as
    /// damocles-manager's miner selector filters (empty lists admit all): a rebuild or unseal of a
    /// sector sealed with another type is handed out by the miner's type, not the sector's.
    pub(super) fn admits(&self, spec: &AllocateSectorSpec, rules: &ChainRules) -> bool {
        let miner_ok = spec
            .allowed_miners
            .as_ref()
            .is_none_or(|m| m.is_empty() || m.contains(&rules.miner));
        let current = self.miner_proof_type(rules);
        let proof_ok = spec
            .allowed_proof_types
            .as_ref()
            .is_none_or(|p| p.is_empty() || p.contains(&current));
        miner_ok && proof_ok
    }

    /// Turns the miner's synthetic PoRep on or off: new sectors get the other V1_1 variant of its
    /// size; sealed ones keep theirs.
    pub fn set_synthetic(&mut self, rules: &ChainRules, synthetic: bool) -> Result<(), ChainError> {
        let Some((size, _)) = crate::manager::wire::sector_of_proof_type(rules.proof_type) else {
            return Err(ChainError::NotReady(format!(
                "the dev manager's proof type {} is not a V1_1 seal proof type",
                rules.proof_type
            )));
        };
        self.proof_type = Some(crate::manager::wire::seal_proof_type(size, synthetic));
        Ok(())
    }

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

    /// A sector in the sealing state store: damocles-manager answers 11001 for a sector it only
    /// holds offline (finalized or aborted), as for one it never had.
    pub(super) fn online(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
    ) -> Result<&mut SectorRecord, ChainError> {
        let record = self.sector(rules, id)?;
        if record.finalized {
            return Err(ChainError::UnknownSector(id));
        }
        Ok(record)
    }

    pub(super) fn count(record: &mut SectorRecord, method: &str) {
        *record.submissions.entry(method.to_string()).or_default() += 1;
    }

    /// A submission of `method` became a new chain message: counted, and answered Accepted.
    fn sent(record: &mut SectorRecord, method: &str) -> Result<(SubmitResp, bool), ChainError> {
        *record.messages.entry(method.to_string()).or_default() += 1;
        Ok((
            SubmitResp {
                res: SubmitResult::Accepted,
                desc: None,
            },
            true,
        ))
    }

    /// A new sector number, or none when the spec does not allow this manager's miner or proof type.
    pub fn allocate(
        &mut self,
        rules: &ChainRules,
        spec: &AllocateSectorSpec,
    ) -> Option<AllocatedSector> {
        if !self.admits(spec, rules) {
            return None;
        }
        let proof_type = self.miner_proof_type(rules);
        self.next_number += 1;
        let number = self.next_number;
        self.sectors.insert(
            number,
            SectorRecord {
                proof_type,
                ..Default::default()
            },
        );
        Some(AllocatedSector {
            id: SectorId {
                miner: rules.miner,
                number,
            },
            proof_type,
        })
    }

    pub fn assign_ticket(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<Ticket, ChainError> {
        let record = self.online(rules, id)?;
        let epoch = head - rules.ticket_lookback;
        let ticket = Ticket {
            ticket: randomness("ticket", id, epoch),
            epoch,
        };
        record.ticket = Some(ticket.clone());
        Ok(ticket)
    }

    /// As damocles-manager's commitmgr SubmitPreCommit: without `reset`, a PreCommit already
    /// recorded answers Accepted when identical (nothing is sent again, a failed message stays
    /// failed) and Mismatched when not; with `reset`, the new one replaces it, is checked again
    /// and sent as a new message. Returns whether a new message was sent.
    pub fn submit_pre_commit(
        &mut self,
        rules: &ChainRules,
        sector: &AllocatedSector,
        info: &PreCommitOnChainInfo,
        submit: Submit,
        head: i64,
    ) -> Result<(SubmitResp, bool), ChainError> {
        let Submit {
            reset,
            fail_on_chain,
        } = submit;
        let record = self.online(rules, sector.id)?;
        Self::count(record, "SubmitPreCommit");
        let result = |res, desc: &str| {
            Ok((
                SubmitResp {
                    res,
                    desc: (!desc.is_empty()).then(|| desc.to_string()),
                },
                false,
            ))
        };
        if let Some(existing) = &record.precommit {
            if !reset {
                return if existing.info == *info {
                    result(SubmitResult::Accepted, "")
                } else {
                    result(SubmitResult::MismatchedSubmission, "")
                };
            }
            // checkPrecommit finds a PreCommit already on chain: accepted, nothing sent.
            if existing.message.landed(rules.precommit_landing, head) {
                return result(SubmitResult::Accepted, "");
            }
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
        // commitmgr checkPrecommit: a sector with deals must carry the CommD its pieces give
        // (ErrBadCommD, answered as a mismatch); a CC sector's is checked by the proof.
        if let Some(unsealed) = record.unsealed
            && unsealed != info.comm_d
        {
            return result(
                SubmitResult::MismatchedSubmission,
                &format!(
                    "on chain CommD differs from sector: {} != {}",
                    crate::sector::CommD::from_bytes(unsealed),
                    crate::sector::CommD::from_bytes(info.comm_d)
                ),
            );
        }
        record.precommit = Some(PreCommitRecord {
            info: info.clone(),
            message: Message::new(head, fail_on_chain),
        });
        Self::sent(record, "SubmitPreCommit")
    }

    /// As damocles-manager answers a poll: no message is Failed (never NotFound), a failed one
    /// Failed with its receipt, a sent one Pending until `delay` epochs later, then Landed.
    fn poll(message: Option<&Message>, delay: i64, head: i64) -> PollResp {
        let (state, desc) = match message {
            None => (OnChainState::Failed, PUBLISH_ATTEMPT_FAILED.to_string()),
            Some(Message {
                failed: Some(receipt),
                ..
            }) => (OnChainState::Failed, receipt.clone()),
            Some(message) if message.landed(delay, head) => (
                OnChainState::Landed,
                format!(
                    "dev chain receipt: exit code 0 at epoch {}",
                    message.submitted_epoch + delay
                ),
            ),
            Some(_) => {
                return PollResp {
                    state: OnChainState::Pending,
                    desc: None,
                };
            }
        };
        PollResp {
            state,
            desc: Some(desc),
        }
    }

    pub fn poll_pre_commit(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<PollResp, ChainError> {
        let record = self.online(rules, id)?;
        let message = record.precommit.as_ref().map(|p| &p.message);
        Ok(Self::poll(message, rules.precommit_landing, head))
    }

    pub fn submit_persisted(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        instance: &str,
        upgrade: bool,
        files_present: bool,
    ) -> Result<bool, ChainError> {
        let record = self.online(rules, id)?;
        Self::count(record, "SubmitPersisted");
        if !files_present {
            return Ok(false);
        }
        // damocles-manager records an upgraded replica's store as the upgrade's access instance.
        match (&mut record.upgrade, upgrade) {
            (Some(upgraded), true) => upgraded.access_instance = instance.to_string(),
            _ => record.persisted = Some(instance.to_string()),
        }
        Ok(true)
    }

    pub fn wait_seed(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<WaitSeedResp, ChainError> {
        let record = self.online(rules, id)?;
        let Some(landed) = record
            .precommit
            .as_ref()
            .and_then(|p| p.message.lands_at(rules.precommit_landing))
        else {
            // sealer.go WaitSeed: a logic error (code 1).
            return Err(ChainError::NotReady(format!(
                "precommit info not found on chain. sid: {id:?}"
            )));
        };
        let seed_epoch = landed + rules.seed_delay;
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

    /// The answer to a proof submission that needs no verification, in damocles-manager's order
    /// (commitmgr SubmitProof, then checkCommit): no PreCommit recorded, a proof already recorded
    /// (without `reset`: identical Accepted, different Mismatched, both before any check), no
    /// seed, a PreCommit not on chain. None: the proof must be verified.
    pub fn proof_answer_before_verify(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        proof_sha256: &str,
        reset: bool,
        head: i64,
    ) -> Result<Option<SubmitResp>, ChainError> {
        let record = self.online(rules, id)?;
        let answer = |res, desc: Option<&str>| {
            Some(SubmitResp {
                res,
                desc: desc.map(str::to_string),
            })
        };
        let Some(precommit) = &record.precommit else {
            return Ok(answer(
                SubmitResult::Rejected,
                Some("pre-commit info not found on chain"),
            ));
        };
        if let Some(existing) = &record.proof
            && !reset
        {
            return Ok(if existing.sha256 == proof_sha256 {
                answer(SubmitResult::Accepted, None)
            } else {
                answer(SubmitResult::MismatchedSubmission, None)
            });
        }
        if record.seed.is_none() {
            return Ok(answer(
                SubmitResult::Rejected,
                Some("seed epoch was not set"),
            ));
        }
        if !precommit.message.landed(rules.precommit_landing, head) {
            return Ok(answer(
                SubmitResult::Rejected,
                Some("precommit info not found on-chain"),
            ));
        }
        Ok(None)
    }

    /// A proof submission (counted): the answer before verification if there is one, else
    /// Rejected when `verified` says the proof does not verify (damocles-manager's
    /// ErrInvalidProof; nothing recorded), else recorded and sent. `verified` is read only when
    /// no earlier answer applies (the caller asks `proof_answer_before_verify` first and skips the
    /// verification then). Returns whether a new message was sent.
    pub fn submit_proof(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        proof_sha256: &str,
        verified: bool,
        submit: Submit,
        head: i64,
    ) -> Result<(SubmitResp, bool), ChainError> {
        let Submit {
            reset,
            fail_on_chain,
        } = submit;
        Self::count(self.online(rules, id)?, "SubmitProof");
        if let Some(answer) =
            self.proof_answer_before_verify(rules, id, proof_sha256, reset, head)?
        {
            return Ok((answer, false));
        }
        if !verified {
            return Ok((
                SubmitResp {
                    res: SubmitResult::Rejected,
                    desc: Some(INVALID_PROOF.to_string()),
                },
                false,
            ));
        }
        let record = self.online(rules, id)?;
        record.proof = Some(ProofRecord {
            sha256: proof_sha256.to_string(),
            message: Message::new(head, fail_on_chain),
        });
        Self::sent(record, "SubmitProof")
    }

    pub fn poll_proof(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        head: i64,
    ) -> Result<PollResp, ChainError> {
        let record = self.online(rules, id)?;
        let message = record.proof.as_ref().map(|p| &p.message);
        Ok(Self::poll(message, rules.proof_landing, head))
    }

    /// As damocles-manager's ReportState: an online sector records the change; an offline one
    /// records nothing and answers finalized, with the abort reason if it was aborted. A
    /// manager-side abort is seen that way.
    pub fn report(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        text: String,
    ) -> Result<&SectorRecord, ChainError> {
        let record = self.sector(rules, id)?;
        if !record.finalized {
            record.reports.push(text);
            if record.reports.len() > REPORTS_KEPT {
                record.reports.remove(0);
            }
        }
        Ok(record)
    }

    /// Ends the snap-up commit jobs whose upgrade is final at `head`: as damocles-manager's job,
    /// it takes the sector offline (finalized), after which a rebuild or unseal may have it. A
    /// sector online for a rebuild or unseal of the upgrade stays as it is.
    pub fn settle_upgrades(&mut self, rules: &ChainRules, head: i64) {
        for record in self.sectors.values_mut() {
            let final_at = record
                .upgrade
                .as_ref()
                .map(|u| u.submitted_epoch + rules.proof_landing + UPGRADE_FINALITY);
            if final_at.is_some_and(|epoch| head >= epoch)
                && !record.finalized
                && !record.upgrade_settled
                && record.rebuild.is_none()
                && !record.unsealing
            {
                record.finalized = true;
                record.upgrade_settled = true;
            }
        }
    }

    /// As damocles-manager's ReportFinalized (sealer.go): the end of an unseal clears its flag,
    /// else the end of a rebuild its mark; an upgraded sector otherwise stays online. The sector
    /// goes offline; a second report finds it no longer online (11001).
    pub fn finalize(&mut self, rules: &ChainRules, id: SectorId) -> Result<(), ChainError> {
        let record = self.online(rules, id)?;
        if record.unsealing {
            record.unsealing = false;
        } else if record.rebuild.take().is_some() {
            record.rebuilds += 1;
        } else if record.upgrade.is_some() && !record.upgrade_settled {
            // Its commit job is still running: the job takes it offline (settle_upgrades).
            return Ok(());
        }
        record.finalized = true;
        Ok(())
    }

    /// As damocles-manager's ReportAborted, which `damocles-manager util sealer sectors abort`
    /// also calls: the reason is kept, the sector's deals are released to the market (whatever
    /// stage the sector is at, a proven one included), an upgrade's commitment is cancelled and
    /// its record (UpgradePublic) dropped, and the sector goes offline.
    pub fn abort(
        &mut self,
        rules: &ChainRules,
        id: SectorId,
        reason: &str,
    ) -> Result<(), ChainError> {
        let record = self.online(rules, id)?;
        record.aborted = Some(reason.to_string());
        record.upgrade = None;
        record.upgrade_public = None;
        record.finalized = true;
        for deal in self.deals.iter_mut() {
            if deal.sector == Some(id.number) {
                deal.sector = None;
            }
        }
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
    fn a_sector_goes_from_ticket_to_landed_proof_with_production_answers() {
        let (rules, mut state, sector) = setup();
        let poll =
            |state: &mut ChainState, head| state.poll_pre_commit(&rules, sector.id, head).unwrap();
        assert_eq!(
            poll(&mut state, 10_000),
            PollResp {
                state: OnChainState::Failed,
                desc: Some(PUBLISH_ATTEMPT_FAILED.into())
            },
            "never submitted: Failed, as damocles-manager answers, not NotFound"
        );
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        assert_eq!(ticket.epoch, 10_000 - 900);
        let submit = |state: &mut ChainState, info: &PreCommitOnChainInfo, reset, head| {
            state
                .submit_pre_commit(
                    &rules,
                    &sector,
                    info,
                    Submit {
                        reset,
                        fail_on_chain: None,
                    },
                    head,
                )
                .unwrap()
        };
        let accepted = SubmitResp {
            res: SubmitResult::Accepted,
            desc: None,
        };
        assert_eq!(
            submit(&mut state, &info(ticket.clone()), false, 10_010),
            (accepted.clone(), true)
        );
        assert_eq!(
            submit(&mut state, &info(ticket.clone()), false, 10_011),
            (accepted.clone(), false),
            "an identical resubmission is Accepted and sends nothing"
        );
        let mut different = info(ticket);
        different.comm_r = [9; 32];
        assert_eq!(
            submit(&mut state, &different, false, 10_011).0,
            SubmitResp {
                res: SubmitResult::MismatchedSubmission,
                desc: None
            }
        );
        assert_eq!(state.sectors[&1].submissions["SubmitPreCommit"], 3);
        assert_eq!(poll(&mut state, 10_012).state, OnChainState::Pending);
        let landed = poll(&mut state, 10_013);
        assert_eq!(landed.state, OnChainState::Landed);
        assert!(landed.desc.is_some(), "a landed poll carries the receipt");
        let wait = state.wait_seed(&rules, sector.id, 10_013).unwrap();
        assert!(wait.should_wait && wait.delay == 150 * 30, "{wait:?}");
        let seed = state
            .wait_seed(&rules, sector.id, 10_163)
            .unwrap()
            .seed
            .unwrap();
        assert_eq!(seed.epoch, 10_163);

        let prove = |state: &mut ChainState, sha256, verified, reset, head| {
            state
                .submit_proof(
                    &rules,
                    sector.id,
                    sha256,
                    verified,
                    Submit {
                        reset,
                        fail_on_chain: None,
                    },
                    head,
                )
                .unwrap()
        };
        assert_eq!(
            state.poll_proof(&rules, sector.id, 10_170).unwrap().state,
            OnChainState::Failed
        );
        let (bad, sent) = prove(&mut state, "aa", false, false, 10_170);
        assert_eq!(
            (bad.res, bad.desc.as_deref(), sent),
            (SubmitResult::Rejected, Some(INVALID_PROOF), false)
        );
        assert_eq!(
            prove(&mut state, "bb", true, false, 10_170),
            (accepted.clone(), true)
        );
        assert_eq!(
            prove(&mut state, "bb", false, false, 10_171),
            (accepted, false),
            "the same proof again: Accepted before any verification"
        );
        assert_eq!(
            prove(&mut state, "cc", true, false, 10_171).0.res,
            SubmitResult::MismatchedSubmission
        );
        assert_eq!(
            state.poll_proof(&rules, sector.id, 10_173).unwrap().state,
            OnChainState::Landed
        );
    }

    fn resubmit() -> Submit {
        Submit {
            reset: true,
            fail_on_chain: None,
        }
    }

    #[test]
    fn a_message_failed_on_chain_stays_failed_until_resubmitted_with_reset() {
        let (rules, mut state, sector) = setup();
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        let receipt = "exit code SysErrInsufficientFunds (6)".to_string();
        let (first, sent) = state
            .submit_pre_commit(
                &rules,
                &sector,
                &info(ticket.clone()),
                Submit {
                    reset: false,
                    fail_on_chain: Some(receipt.clone()),
                },
                10_001,
            )
            .unwrap();
        assert_eq!((first.res, sent), (SubmitResult::Accepted, true));
        let failed = state.poll_pre_commit(&rules, sector.id, 10_100).unwrap();
        assert_eq!(
            (failed.state, failed.desc),
            (OnChainState::Failed, Some(receipt))
        );
        assert!(matches!(
            state.wait_seed(&rules, sector.id, 20_000),
            Err(ChainError::NotReady(_))
        ));
        let (again, sent) = state
            .submit_pre_commit(
                &rules,
                &sector,
                &info(ticket.clone()),
                Submit::default(),
                10_101,
            )
            .unwrap();
        assert_eq!((again.res, sent), (SubmitResult::Accepted, false));
        assert_eq!(
            state
                .poll_pre_commit(&rules, sector.id, 10_200)
                .unwrap()
                .state,
            OnChainState::Failed,
            "without reset nothing is sent again"
        );
        let (reset, sent) = state
            .submit_pre_commit(&rules, &sector, &info(ticket.clone()), resubmit(), 10_201)
            .unwrap();
        assert_eq!((reset.res, sent), (SubmitResult::Accepted, true));
        assert_eq!(
            state
                .poll_pre_commit(&rules, sector.id, 10_204)
                .unwrap()
                .state,
            OnChainState::Landed
        );
        let (landed, sent) = state
            .submit_pre_commit(&rules, &sector, &info(ticket), resubmit(), 10_205)
            .unwrap();
        assert_eq!(
            (landed.res, sent),
            (SubmitResult::Accepted, false),
            "a reset of a PreCommit on chain sends nothing"
        );
    }

    #[test]
    fn a_proof_is_answered_in_damocles_managers_order() {
        let (rules, mut state, sector) = setup();
        let early = |state: &mut ChainState, head| {
            state
                .proof_answer_before_verify(&rules, sector.id, "aa", false, head)
                .unwrap()
                .map(|answer| (answer.res, answer.desc.unwrap_or_default()))
        };
        let rejected = |desc: &str| Some((SubmitResult::Rejected, desc.to_string()));
        assert_eq!(
            early(&mut state, 10_000),
            rejected("pre-commit info not found on chain")
        );
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        state
            .submit_pre_commit(&rules, &sector, &info(ticket), Submit::default(), 10_001)
            .unwrap();
        assert_eq!(
            early(&mut state, 10_002),
            rejected("seed epoch was not set")
        );
        state.wait_seed(&rules, sector.id, 10_160).unwrap();
        assert_eq!(early(&mut state, 10_160), None, "to be verified");
    }

    #[test]
    fn an_expired_ticket_is_rejected_and_unknown_sectors_are_errors() {
        let (rules, mut state, sector) = setup();
        let ticket = state.assign_ticket(&rules, sector.id, 10_000).unwrap();
        let (resp, _) = state
            .submit_pre_commit(
                &rules,
                &sector,
                &info(ticket),
                Submit::default(),
                10_000 + 2880 + 1,
            )
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
