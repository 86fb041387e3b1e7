//! The submission protocol: how a call the manager may count twice (a PreCommit, a proof, an
//! upgrade) is made exactly once across crashes, restarts and lost answers.
//!
//! 1. **Ask first.** Before a submission the manager is asked what it holds (its poll; upgrades
//!    have none). No live message (never sent, refused, or failed on chain) means the submission
//!    goes out with reset, as damocles-worker resubmits after a failed message.
//! 2. **Intent, and the wait, before the call.** The intent (`status.submitting`) is written before
//!    the call. A submission with a poll is written as the wait it starts: the task enters the
//!    next state (PCSubmitted, ProofSubmitted), waiting on the chain, in the same write, so an
//!    accepted submission needs no write of its own.
//! 3. **Any other answer goes back.** An answer other than accepted takes the task back to the
//!    submitting state, the intent kept, where it is handled as a failure there
//!    ([`Turn::answered_from_before`]).
//! 4. **A restart polls.** Found in the wait state, the task polls: a message the manager holds is
//!    waited on; none is sent again from the state before (the poll's Resubmit). Found in the
//!    submitting state with the intent, a live message means the submission reached it.

use std::time::Duration;

use super::{call_failed, failed, unexpected};
use crate::manager::wire::OnChainState;
use crate::manager::{Call, Method, PollOutcome, Reply, SubmitOutcome};
use crate::plan::cursor::{self, At, Next, Outcome};
use crate::plan::{Action, Submission};
use crate::sector::FailureLevel;
use crate::task::status::set_phase;
use crate::task::{CallFailure, Progress, Question, Turn, Wake};

use crate::api::Phase;

/// How damocles-manager's SubmitProof Desc starts for a proof that does not verify
/// (commitmgr/check.go ErrInvalidProof: "invalid proof (compute error?)").
const INVALID_PROOF_PREFIX: &str = "invalid proof";

fn submitted(submission: Submission, outcome: SubmitOutcome, desc: Option<String>) -> Outcome {
    let desc = desc.unwrap_or_default();
    match outcome {
        SubmitOutcome::Accepted => Outcome::Done,
        SubmitOutcome::FilesMissed => Outcome::FilesMissed,
        // damocles-worker aborts the sector on every Rejected. A proof that does not verify
        // (damocles-manager's ErrInvalidProof) is usually a compute error that a new C2 fixes,
        // and aborting would throw away a PreCommit already on chain: pause for a person.
        SubmitOutcome::Failed(FailureLevel::Abort)
            if submission == Submission::SubmitProof && desc.starts_with(INVALID_PROOF_PREFIX) =>
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

/// The poll call that tells whether `submission` of `request`'s sector reached the manager.
fn poll_call(submission: Submission, request: &Call) -> Option<Call> {
    let sector = request.sector()?;
    match Method::from(submission.poll()?) {
        Method::PollPreCommitState => Some(Call::PollPreCommitState(sector)),
        Method::PollProofState => Some(Call::PollProofState(sector)),
        _ => None,
    }
}

/// damocles-manager's answer to a SubmitSnapUpProof for a sector whose upgrade it is already
/// committing (snapup_commit.go: one commit job per sector), which is what a resubmission after
/// a restart meets: the upgrade reached it, nothing is left to do.
fn upgrade_already_committing(submission: Submission, failure: &CallFailure) -> bool {
    submission == Submission::SubmitSnapUpProof
        && failure.code == Some(1)
        && failure.message.ends_with("duplicate commit job")
}

/// Whether the manager holds a live message for a submission, by its poll. damocles-manager
/// answers Failed both when it has no message (never submitted, or refused) and when its message
/// failed on chain, and a resubmission without reset is then answered Accepted with nothing sent
/// (commitmgr.go): only a submission with reset sends a new message. NotFound is older managers'
/// and the mock's word for never submitted.
pub(super) fn manager_holds(
    poll: Method,
    reply: &Result<Reply, CallFailure>,
) -> Result<bool, Outcome> {
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
    /// Makes `submission` (`request` built without reset) by the protocol of this module.
    pub(super) fn submission(&mut self, submission: Submission, mut request: Call) -> Progress {
        let method = Method::from(submission);
        if let Some(reply) = self.answered(method, true) {
            return Progress::Outcome(match reply {
                Ok(Reply::Submit(resp)) => submitted(submission, resp.res.into(), resp.desc),
                Ok(other) => unexpected(method, &other),
                Err(failure) if upgrade_already_committing(submission, &failure) => {
                    self.log(
                        false,
                        format!("the manager is already committing this upgrade ({submission})"),
                    );
                    Outcome::Done
                }
                Err(failure) => call_failed(failure),
            });
        }
        let recovering = self.status.submitting == Some(submission);
        let poll = poll_call(submission, &request);
        let waits_on_chain = poll.is_some();
        if let Some(poll) = poll {
            let reply = match self.answer(&poll) {
                Ok(reply) => reply,
                Err(ask) => return ask,
            };
            match manager_holds(poll.method(), &reply) {
                Ok(true) if recovering => {
                    self.log(false, format!("the manager already has this {submission}"));
                    return Progress::Outcome(Outcome::Done);
                }
                Ok(true) => {}
                Ok(false) => request.set_reset(),
                Err(outcome) => return Progress::Outcome(outcome),
            }
        }
        if waits_on_chain {
            self.enter_submitted();
        }
        if waits_on_chain || !recovering {
            self.status.submitting = Some(submission);
            self.write();
        }
        Progress::Wake(Wake::Ask(Question::Manager(Box::new(request))))
    }

    /// Enters the state a submission leads to, waiting on the chain as its poll will.
    fn enter_submitted(&mut self) {
        let plan = self.task.spec.plan();
        if let Ok(At {
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
    /// this state's wait). Accepted, it is taken and this state's work goes on; any other answer
    /// takes the task back to the submitting state, the intent kept (a call left unanswered may
    /// have reached the manager), whose work then reads it: true.
    pub(in crate::task) fn answered_from_before(&mut self) -> bool {
        let Some((asked, reply)) = &self.observed.reply else {
            return false;
        };
        let Some(submission) = asked.method().submission() else {
            return false;
        };
        if self.reply_taken || self.status.submitting != Some(submission) {
            return false;
        }
        let plan = self.task.spec.plan();
        let submits = |action: &Action| *action == Action::Manager(submission.call());
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
            if submitted(submission, resp.res.into(), resp.desc.clone()) == Outcome::Done);
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
    pub(super) fn poll(&mut self, call: Call) -> Progress {
        let reply = match self.answer(&call) {
            Ok(reply) => reply,
            Err(ask) => return ask,
        };
        let intent = call
            .method()
            .plan_call()
            .and_then(Submission::polled_by)
            .is_some_and(|submission| self.status.submitting == Some(submission));
        Progress::Outcome(match reply {
            // The intent is written as this wait before the call: a message an older manager
            // never got is NotFound there, and is sent from the state before.
            Ok(Reply::Poll(poll)) if intent && poll.state == OnChainState::NotFound => {
                Outcome::Resubmit
            }
            Ok(Reply::Poll(poll)) => polled(poll.state.into(), self.rules.poll_interval, poll.desc),
            Ok(other) => unexpected(call.method(), &other),
            Err(failure) => call_failed(failure),
        })
    }
}
