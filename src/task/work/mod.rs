//! Manager calls, one file per sealing phase: the request each call builds from status, the answer
//! it expects, what it writes back, its guards and its idempotence check. A call's work may span
//! several decisions (ask, then read the answer); what it establishes stays only when it is done.

pub mod allocate;
pub mod persist;
pub mod precommit;
pub mod prove;
pub mod report;
pub mod snap;
pub mod submit;
pub mod unseal;

use std::time::Duration;

use super::condition::MANAGER_UNAVAILABLE;
use super::status::{set_condition, set_phase, time_at};
use super::{CallFailure, Progress, Question, Turn, Wake};
use crate::api::Phase;
use crate::api::{CommittedSector, Randomness};
use crate::manager::wire::SectorId;
use crate::manager::{Call, Method, Reply};
use crate::plan::ManagerCall;
use crate::plan::cursor::Outcome;
use crate::sector::{FailureLevel, SectorRef};

/// The first wait after the manager stops answering; each later one is as long as the outage
/// so far, up to `Rules::manager_retry_max`.
pub const MANAGER_RETRY_MIN: Duration = Duration::from_secs(5);

/// A sector in the manager's wire form.
pub fn sector_id(sector: SectorRef) -> SectorId {
    SectorId {
        miner: sector.miner,
        number: sector.number,
    }
}

pub(crate) fn failed(level: FailureLevel, message: impl Into<String>) -> Outcome {
    Outcome::Failed {
        level,
        message: message.into(),
    }
}

fn call_failed(failure: CallFailure) -> Outcome {
    failed(failure.level, failure.message)
}

fn unexpected(method: Method, reply: &Reply) -> Outcome {
    failed(
        FailureLevel::Permanent,
        format!("{method}: the manager's answer does not fit the call: {reply:?}"),
    )
}

fn missing(what: &str) -> Outcome {
    failed(
        FailureLevel::Permanent,
        format!("the task has no {what} yet; resume at the state that produces it"),
    )
}

pub(crate) fn randomness(value: &[u8; 32], epoch: i64) -> Randomness {
    Randomness {
        value: crate::sector::Bytes32(*value),
        epoch,
        assigned_at: None,
    }
}

impl Turn<'_> {
    /// The executor's answer to `call`, if it just made it (taken: it answers this call only);
    /// otherwise the question to ask.
    fn answer(&mut self, call: &Call) -> Result<Result<Reply, CallFailure>, Progress> {
        match &self.observed.reply {
            Some((asked, reply)) if asked == call && !self.reply_taken => {
                self.reply_taken = true;
                Ok(reply.clone())
            }
            _ => Err(Progress::Wake(Wake::Ask(Question::Manager(Box::new(
                call.clone(),
            ))))),
        }
    }

    /// The answer to the last call, if it was a call of `method` and is not yet taken; `take`
    /// takes it.
    fn answered(&mut self, method: Method, take: bool) -> Option<Result<Reply, CallFailure>> {
        match &self.observed.reply {
            Some((asked, reply)) if asked.method() == method && !self.reply_taken => {
                self.reply_taken |= take;
                Some(reply.clone())
            }
            _ => None,
        }
    }

    /// Does the manager-call action `call` of the current state.
    pub(super) fn manager_action(&mut self, call: ManagerCall) -> Progress {
        let before = self.status.clone();
        let taken_before = self.reply_taken;
        let step = match call {
            ManagerCall::AllocateSector
            | ManagerCall::AllocateSanpUpSector
            | ManagerCall::AllocateRebuildSector
            | ManagerCall::AllocateUnsealSector
            | ManagerCall::AcquireDeals => self.allocate(call),
            ManagerCall::AssignTicket
            | ManagerCall::SubmitPreCommit
            | ManagerCall::PollPreCommitState => self.precommit(call),
            ManagerCall::StoreReserveSpace | ManagerCall::SubmitPersistedEx => self.persist(call),
            ManagerCall::WaitSeed | ManagerCall::SubmitProof | ManagerCall::PollProofState => {
                self.prove(call)
            }
            ManagerCall::StoreBasicInfo | ManagerCall::SubmitSnapUpProof => self.snap(call),
            ManagerCall::AcquireUnsealDest | ManagerCall::AchieveUnsealSector => self.unseal(call),
        };
        if let Progress::Outcome(outcome) = &step
            && *outcome != Outcome::Done
        {
            // What an unfinished call established is asked for again with the next try; but a
            // sector the manager handed out is the task's whatever comes next (it will not be
            // handed out again), with what came with it: kept, so a pause can be resumed and an
            // abort reports it.
            let handed_out = (self.status.sector != before.sector)
                .then(|| (self.status.sector, self.status.outputs.clone()));
            let answered_allocation = self.status.allocating.is_none();
            let not_before = self.status.not_before.clone();
            self.status = before.clone();
            if let Some((sector, outputs)) = handed_out {
                self.status.sector = sector;
                self.status.outputs = outputs;
            }
            if answered_allocation {
                self.status.allocating = None;
            }
            if answered_allocation && before.allocating.is_some() {
                // With the time to ask again, when nothing was handed out (see allocation).
                self.status.not_before = not_before;
            }
        }
        // A sector the manager handed out is written before the next effect outside the
        // operator: forgotten in a crash, it would be allocated again. So are the ticket and the
        // reserved store: asked again they may differ
        // (a ticket follows the chain head, a store its free space), while a step pod created
        // with the first answer survives the crash and is adopted by its name (the crash
        // schedule found a PC1 pod sealing with one ticket and the status holding another).
        // Everything else a call establishes is the same when asked again (deals bound to the
        // sector, the seed, the unseal destinations), so it is written with the work that follows.
        let volatile = |status: &crate::api::SealingTaskStatus| {
            let outputs = status.outputs.as_ref();
            (
                outputs.and_then(|o| o.ticket.clone()),
                outputs.and_then(|o| o.store.clone()),
            )
        };
        if self.status.sector != before.sector {
            self.status.sector_name = self.status.sector.map(|sector| sector.to_string());
            self.write();
        } else if volatile(&self.status) != volatile(&before) {
            self.write();
        }
        let reply = match &self.observed.reply {
            Some((asked, reply)) if self.reply_taken && !taken_before => {
                Some((asked.method(), reply.clone()))
            }
            _ => None,
        };
        match reply {
            Some((method, Err(failure))) if failure.unavailable => {
                Progress::Wake(self.manager_unavailable(method, &failure))
            }
            Some((method, _)) => {
                self.manager_answered(method);
                step
            }
            None => step,
        }
    }

    /// The manager did not answer `method`: the task waits in phase Waiting, its retries
    /// untouched, and tries again after a back-off that grows with the outage (from
    /// MANAGER_RETRY_MIN up to `manager_retry_max`).
    fn manager_unavailable(&mut self, method: Method, failure: &CallFailure) -> Wake {
        let state = self.position().state;
        let since = self.outage_since();
        let outage = self.seconds_since(since);
        let longest = self.rules.manager_retry_max.max(MANAGER_RETRY_MIN);
        let delay = Duration::from_secs(outage)
            .max(MANAGER_RETRY_MIN)
            .min(longest);
        if since.is_none() {
            self.event(
                true,
                MANAGER_UNAVAILABLE,
                format!("{method}: {}", failure.message),
            );
        }
        set_condition(
            &mut self.status,
            MANAGER_UNAVAILABLE,
            "True",
            "NoAnswer",
            &failure.message,
            self.now,
        );
        self.status.not_before = Some(time_at(self.now + delay.as_secs() as i64));
        let message = format!(
            "{state}: waiting for the manager ({method} unanswered, outage {outage}s), next try \
             in {}s: {}",
            delay.as_secs(),
            failure.message
        );
        set_phase(&mut self.status, Phase::Waiting, message.clone(), self.now);
        self.log(true, message);
        self.write();
        Wake::After(delay)
    }

    /// When the outage the task is waiting out began (the ManagerUnavailable condition's
    /// transition to True), if it is waiting one out.
    fn outage_since(&self) -> Option<i64> {
        self.status
            .conditions
            .iter()
            .find(|c| c.type_ == MANAGER_UNAVAILABLE && c.status == "True")
            .map(|c| c.last_transition_time.0.as_second())
    }

    /// The manager answered: an outage recorded on the task is over.
    fn manager_answered(&mut self, method: Method) {
        let Some(since) = self.outage_since() else {
            return;
        };
        let message = format!(
            "the manager answers again ({method}) after {}s without answers",
            (self.now - since).max(0)
        );
        set_condition(
            &mut self.status,
            MANAGER_UNAVAILABLE,
            "False",
            "Answered",
            &message,
            self.now,
        );
        self.event(false, "ManagerAvailable", message.clone());
        self.log(false, message);
        self.write();
    }

    /// The task's sector, or the outcome that says it has none yet.
    fn need_sector(&self) -> Result<SectorId, Progress> {
        self.sector_id()
            .ok_or_else(|| Progress::Outcome(missing("sector")))
    }

    /// Fills in the path of the store that holds the committed sector's files (StoreBasicInfo).
    fn resolve_store(&mut self) -> Progress {
        let Some(committed) = self.committed().cloned() else {
            return Progress::Outcome(missing("committed sector"));
        };
        if committed.path.is_some() {
            return Progress::Outcome(Outcome::Done);
        }
        let call = Call::StoreBasicInfo {
            instance: committed.instance.clone(),
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Progress::Outcome(match reply {
            Ok(Reply::Store(Some(store))) => {
                if let Some(committed) = self.committed_mut() {
                    committed.path = Some(store.path);
                }
                Outcome::Done
            }
            Ok(Reply::Store(None)) => failed(
                FailureLevel::Permanent,
                format!(
                    "the manager does not know store instance {:?} that holds the sector's files",
                    committed.instance
                ),
            ),
            Ok(other) => unexpected(Method::StoreBasicInfo, &other),
            Err(failure) => call_failed(failure),
        })
    }

    fn committed(&self) -> Option<&CommittedSector> {
        self.status.outputs.as_ref()?.committed.as_ref()
    }

    fn committed_mut(&mut self) -> Option<&mut CommittedSector> {
        self.status.outputs.as_mut()?.committed.as_mut()
    }
}
