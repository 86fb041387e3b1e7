//! Manager calls, one file per sealing phase: the request each call builds from status, the answer
//! it expects, what it writes back, its guards and its idempotence check. A call's work may span
//! several decisions (ask, then read the answer); what it establishes stays only when it is done.

pub mod allocate;
pub mod persist;
pub mod precommit;
pub mod prove;
pub mod report;
pub mod snap;
pub mod unseal;

use std::time::Duration;

use super::condition::MANAGER_UNAVAILABLE;
use super::enter::{set_condition, set_phase, time_at};
use super::{CallFailure, Question, Step, Turn, Wake};
use crate::api::Phase;
use crate::api::{CommittedSector, Randomness};
use crate::manager::wire::{OnChainState, SectorId};
use crate::manager::{Call, Method, PollOutcome, Reply, SubmitOutcome};
use crate::plan::cursor::{self, Decision, Next, Outcome};
use crate::plan::{Action, ManagerCall};
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

/// Calls whose repetition the manager may count as a second submission: the intent is recorded in
/// status before they are made, and a restart asks the manager before making them again.
pub fn is_submission(method: Method) -> bool {
    matches!(
        method,
        Method::SubmitPreCommit | Method::SubmitProof | Method::SubmitSnapUpProof
    )
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
        value: hex::encode(value),
        epoch,
        assigned_at: None,
    }
}

fn submitted(method: Method, outcome: SubmitOutcome, desc: Option<String>) -> Outcome {
    let desc = desc.unwrap_or_default();
    match outcome {
        SubmitOutcome::Accepted => Outcome::Done,
        SubmitOutcome::FilesMissed => Outcome::FilesMissed,
        // damocles-worker aborts the sector on every Rejected. A proof that does not verify
        // (damocles-manager's ErrInvalidProof) is usually a compute error that a new C2 fixes,
        // and aborting would throw away a PreCommit already on chain: pause for a person.
        SubmitOutcome::Failed(FailureLevel::Abort)
            if method == Method::SubmitProof && desc.starts_with(INVALID_PROOF_PREFIX) =>
        {
            failed(
                FailureLevel::Permanent,
                format!(
                    "the manager refused the proof: {desc}; compute it again with \
                     spec.resumeState: C1Done (C2 runs again), or abort the task"
                ),
            )
        }
        SubmitOutcome::Failed(level) => failed(level, format!("the manager refused: {desc}")),
    }
}

/// How damocles-manager's SubmitProof Desc starts for a proof that does not verify
/// (commitmgr/check.go ErrInvalidProof: "invalid proof (compute error?)").
const INVALID_PROOF_PREFIX: &str = "invalid proof";

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

/// The poll that tells whether a submission reached the manager; none for upgrades, which have
/// no poll.
fn submission_poll(method: Method, sector: SectorId) -> Option<Call> {
    match method {
        Method::SubmitPreCommit => Some(Call::PollPreCommitState(sector)),
        Method::SubmitProof => Some(Call::PollProofState(sector)),
        _ => None,
    }
}

/// damocles-manager's answer to a SubmitSnapUpProof for a sector whose upgrade it is already
/// committing (snapup_commit.go: one commit job per sector), which is what a resubmission after
/// a restart meets: the upgrade reached it, nothing is left to do.
fn upgrade_already_committing(method: Method, failure: &CallFailure) -> bool {
    method == Method::SubmitSnapUpProof
        && failure.code == Some(1)
        && failure.message.ends_with("duplicate commit job")
}

/// Whether the manager holds a live message for a submission, by its poll. damocles-manager
/// answers Failed both when it has no message (never submitted, or refused) and when its message
/// failed on chain, and a resubmission without reset is then answered Accepted with nothing sent
/// (commitmgr.go): only a submission with reset sends a new message. NotFound is older managers'
/// and the mock's word for never submitted.
fn manager_holds(poll: Method, reply: &Result<Reply, CallFailure>) -> Result<bool, Outcome> {
    match reply {
        Ok(Reply::Poll(answer)) => Ok(!matches!(
            answer.state,
            OnChainState::Failed | OnChainState::NotFound
        )),
        Ok(other) => Err(unexpected(poll, other)),
        Err(failure) => Err(call_failed(failure.clone())),
    }
}

impl Turn<'_> {
    /// The executor's answer to `call`, if it just made it (taken: it answers this call only);
    /// otherwise the question to ask.
    fn answer(&mut self, call: &Call) -> Result<Result<Reply, CallFailure>, Step> {
        match &self.observed.reply {
            Some((asked, reply)) if asked == call && !self.reply_taken => {
                self.reply_taken = true;
                Ok(reply.clone())
            }
            _ => Err(Step::Wake(Wake::Ask(Question::Manager(Box::new(
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
    pub(super) fn manager_action(&mut self, call: ManagerCall) -> Step {
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
        if let Step::Outcome(outcome) = &step
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
                Step::Wake(self.manager_unavailable(method, &failure))
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
    fn need_sector(&self) -> Result<SectorId, Step> {
        self.sector_id()
            .ok_or_else(|| Step::Outcome(missing("sector")))
    }

    /// A non-idempotent call (`request` built without reset). The manager is asked first what it
    /// holds (PreCommit and proof; upgrades have no poll): no live message (never sent, refused,
    /// or failed on chain) means the submission goes out with reset, which is how
    /// damocles-worker resubmits after a failed message and is a first submission to a manager
    /// that has none. A live message after a restart mid-submission (the intent recorded) means
    /// it is done; without the intent it goes out without reset, so a different submission is
    /// answered Mismatched instead of passing silently. The intent is written before the call.
    ///
    /// A submission with a poll is written as the wait it starts: the task enters the next state
    /// (PCSubmitted, ProofSubmitted), waiting on the chain, with the intent, in one write before
    /// the call, so an accepted submission needs no write of its own. A restart finds it there
    /// and polls: a message the manager holds is waited on, none is sent again from the state
    /// before (the poll's Resubmit). An answer other than accepted takes the task back to the
    /// submitting state (see [`Turn::answered_from_before`]), where it is handled as before.
    fn submission(&mut self, call: ManagerCall, mut request: Call) -> Step {
        let method = request.method();
        if let Some(reply) = self.answered(method, true) {
            return Step::Outcome(match reply {
                Ok(Reply::Submit(resp)) => submitted(method, resp.res.into(), resp.desc),
                Ok(other) => unexpected(method, &other),
                Err(failure) if upgrade_already_committing(method, &failure) => {
                    self.log(
                        false,
                        format!("the manager is already committing this upgrade ({call})"),
                    );
                    Outcome::Done
                }
                Err(failure) => call_failed(failure),
            });
        }
        let recovering = self.status.submitting.as_deref() == Some(<&str>::from(call));
        let poll = request.sector().and_then(|s| submission_poll(method, s));
        let waits_on_chain = poll.is_some();
        if let Some(poll) = poll {
            let reply = match self.answer(&poll) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            match manager_holds(poll.method(), &reply) {
                Ok(true) if recovering => {
                    self.log(false, format!("the manager already has this {call}"));
                    return Step::Outcome(Outcome::Done);
                }
                Ok(true) => {}
                Ok(false) => request.set_reset(),
                Err(outcome) => return Step::Outcome(outcome),
            }
        }
        if waits_on_chain {
            self.enter_submitted();
        }
        if waits_on_chain || !recovering {
            self.status.submitting = Some(call.to_string());
            self.write();
        }
        Step::Wake(Wake::Ask(Question::Manager(Box::new(request))))
    }

    /// Enters the state a submission leads to, waiting on the chain as its poll will (see
    /// [`Turn::submission`]).
    fn enter_submitted(&mut self) {
        let plan = self.task.spec.plan();
        if let Ok(Decision {
            next: Next::Enter { event, state },
            ..
        }) = cursor::after(plan, self.position(), self.facts(), Outcome::Done)
        {
            self.enter(Some(event), state);
            let message = self.waiting_for();
            set_phase(&mut self.status, Phase::Waiting, message, self.now);
        }
    }

    /// The manager's answer to a submission made from the state before this one (written as
    /// this state's wait, see [`Turn::submission`]). Accepted, it is taken and this state's work
    /// goes on; any other answer takes the task back to the submitting state, the intent kept
    /// (a call left unanswered may have reached the manager), whose work then reads it: true.
    pub(in crate::task) fn answered_from_before(&mut self) -> bool {
        let Some((asked, reply)) = &self.observed.reply else {
            return false;
        };
        let method = asked.method();
        if self.reply_taken
            || !is_submission(method)
            || self.status.submitting.as_deref() != Some(<&str>::from(method))
        {
            return false;
        }
        let plan = self.task.spec.plan();
        let submits = |action: &Action| matches!(action, Action::Manager(call) if <&str>::from(*call) == <&str>::from(method));
        let Some(from) = plan
            .states
            .iter()
            .find(|spec| spec.actions.iter().any(submits))
            .map(|spec| spec.state)
        else {
            return false;
        };
        if from == self.position().state {
            return false;
        }
        let accepted = matches!(reply, Ok(Reply::Submit(resp))
            if submitted(method, resp.res.into(), resp.desc.clone()) == Outcome::Done);
        if accepted {
            self.reply_taken = true;
            return false;
        }
        let submitting = self.status.submitting.take();
        self.enter(None, from);
        self.status.submitting = submitting;
        true
    }

    /// Polls the chain (PollPreCommitState, PollProofState): landed, not yet, resubmit, failed.
    fn poll(&mut self, call: Call) -> Step {
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        let submission = match call.method() {
            Method::PollPreCommitState => Some(Method::SubmitPreCommit),
            Method::PollProofState => Some(Method::SubmitProof),
            _ => None,
        };
        let intent = submission
            .is_some_and(|method| self.status.submitting.as_deref() == Some(<&str>::from(method)));
        Step::Outcome(match reply {
            // The intent is written as this wait before the call (see `submission`): a message
            // an older manager never got is NotFound there, and is sent from the state before.
            Ok(Reply::Poll(poll)) if intent && poll.state == OnChainState::NotFound => {
                Outcome::Resubmit
            }
            Ok(Reply::Poll(poll)) => polled(poll.state.into(), self.rules.poll_interval, poll.desc),
            Ok(other) => unexpected(call.method(), &other),
            Err(failure) => call_failed(failure),
        })
    }

    /// Fills in the path of the store that holds the committed sector's files (StoreBasicInfo).
    fn resolve_store(&mut self) -> Step {
        let Some(committed) = self.committed().cloned() else {
            return Step::Outcome(missing("committed sector"));
        };
        if committed.path.is_some() {
            return Step::Outcome(Outcome::Done);
        }
        let call = Call::StoreBasicInfo {
            instance: committed.instance.clone(),
        };
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        Step::Outcome(match reply {
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
