//! Failures: how many attempts a state's work has had, whether a failure is retried after a
//! back-off, pauses the task for a person, or ends it; and what ending a task tells the manager.

use std::time::Duration;

use super::condition::FAILED;
use super::status::{set_condition, set_phase, time_at};
use super::{Effect, Turn, Wake};
use crate::api::{LastError, Phase, State};
use crate::sector::FailureLevel;

/// How temporary failures are retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Failed attempts of one state's work before a temporary failure counts as permanent.
    pub limit: u32,
    /// Delay before the first retry; doubled for each further one.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            limit: 5,
            initial_backoff: Duration::from_secs(60),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

/// What a failure does to the task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureDecision {
    /// Try the same work again after this long.
    Retry(Duration),
    /// Stop for a person (permanent and critical failures, temporary ones past the limit); the
    /// level says which, after the limit a temporary failure is reported as permanent.
    Pause(FailureLevel),
    /// End the task: tell the manager, wipe the workspace.
    Abort,
}

/// `failed_attempts` counts this failure too.
pub fn on_failure(
    level: FailureLevel,
    failed_attempts: u32,
    policy: &RetryPolicy,
) -> FailureDecision {
    match level {
        FailureLevel::Temporary if failed_attempts < policy.limit => {
            let doublings = failed_attempts.saturating_sub(1).min(20);
            let delay = policy
                .initial_backoff
                .saturating_mul(1 << doublings)
                .min(policy.max_backoff);
            FailureDecision::Retry(delay)
        }
        FailureLevel::Temporary => FailureDecision::Pause(FailureLevel::Permanent),
        FailureLevel::Permanent | FailureLevel::Critical => FailureDecision::Pause(level),
        FailureLevel::Abort => FailureDecision::Abort,
    }
}

impl Turn<'_> {
    /// The retry policy of the work the task is at: its step's profile, or the operator's
    /// default back-off for manager calls.
    fn retry_policy(&self) -> RetryPolicy {
        match self.task.spec.plan().step_at(self.position()) {
            Some(step) => {
                self.rules
                    .profiles
                    .resolve(step, self.rules.retry_backoff)
                    .retry
            }
            None => RetryPolicy {
                initial_backoff: self.rules.retry_backoff,
                ..Default::default()
            },
        }
    }

    /// The ReportState damocles-worker sends after a failed step: the state unchanged, event
    /// "None" (the worker formats its event after taking it), the failure's level and text, so
    /// that `damocles-manager util sealer sectors` shows it.
    fn report_failure(&mut self, level: FailureLevel, message: &str) {
        let Some(sector) = self.sector_id() else {
            return;
        };
        let state = self.position().state.to_string();
        let failure = crate::manager::wire::SectorFailure {
            level: format!("{level:?}"),
            desc: super::status::bounded(message, super::status::STATUS_TEXT_LIMIT),
        };
        let report = self.report_call(sector, state.clone(), state, "None".into(), Some(failure));
        self.effects.push(Effect::ReportState(report));
    }

    /// The work of the current state failed.
    pub fn fail(&mut self, level: FailureLevel, message: String) -> Wake {
        let state = self.position().state;
        let attempts = match &self.status.last_error {
            Some(last) if last.state == state => last.attempts + 1,
            _ => 1,
        };
        let decision = on_failure(level, attempts, &self.retry_policy());
        self.effects.push(Effect::Failure {
            level,
            retry: matches!(decision, FailureDecision::Retry(_)),
        });
        self.status.last_error = Some(LastError {
            level,
            state,
            message: super::status::bounded(&message, super::status::STATUS_TEXT_LIMIT),
            attempts,
            time: self.time(),
        });
        self.log(
            true,
            format!("{state}: {level} failure (attempt {attempts}, {decision:?}): {message}"),
        );
        // An abort's reason goes with its ReportAborted, which the manager keeps; state reports
        // are sent without waiting, so one racing it could reach an offline sector and be lost.
        if level != FailureLevel::Abort {
            self.report_failure(level, &message);
        }
        match decision {
            FailureDecision::Retry(delay) => {
                self.delete_step_pod();
                self.status.attempt += 1;
                self.status.not_before = Some(time_at(self.now + delay.as_secs() as i64));
                let phase = format!(
                    "{state}: {level} failure, retry {attempts} in {}s: {message}",
                    delay.as_secs()
                );
                set_phase(&mut self.status, Phase::Waiting, phase, self.now);
                self.write();
                self.event(
                    true,
                    "Retrying",
                    format!("{level} failure in {state} (attempt {attempts}): {message}"),
                );
                Wake::After(delay)
            }
            FailureDecision::Pause(level) => {
                if let Some(last) = self.status.last_error.as_mut() {
                    last.level = level;
                }
                let paused = format!(
                    "{state}: paused by a {level} failure: {message}; fix the cause and set \
                     spec.resumeState ({})",
                    self.resume_targets()
                );
                set_condition(
                    &mut self.status,
                    FAILED,
                    "True",
                    &level.to_string(),
                    &message,
                    self.now,
                );
                set_phase(&mut self.status, Phase::Paused, paused, self.now);
                self.write();
                self.event(
                    true,
                    "Paused",
                    format!("{level} failure in {state}: {message}"),
                );
                self.paused_wake()
            }
            FailureDecision::Abort => {
                self.abort(&message);
                self.ended()
            }
        }
    }

    /// Ends the task: stops its step, records why (the reason ReportAborted then gives the
    /// manager, see work::report), hands an unseal's request back, records Aborted.
    pub fn abort(&mut self, reason: &str) {
        let state = self.position().state;
        match self.status.last_error.as_mut() {
            // The failure that decided the abort.
            Some(last)
                if last.message
                    == super::status::bounded(reason, super::status::STATUS_TEXT_LIMIT) =>
            {
                last.level = FailureLevel::Abort
            }
            _ => {
                self.status.last_error = Some(LastError {
                    level: FailureLevel::Abort,
                    state,
                    message: super::status::bounded(reason, super::status::STATUS_TEXT_LIMIT),
                    attempts: 1,
                    time: self.time(),
                });
            }
        }
        // An unseal's request goes back to the manager with the end report (work::report),
        // retried until answered.
        self.stop(reason, None);
    }

    /// The manager finalized the sector itself (`damocles-manager util sealer sectors abort`):
    /// the task ends as damocles-worker ends it, without a ReportAborted (the sector is offline
    /// at the manager, which would answer 11001).
    pub fn aborted_by_manager(&mut self, reason: &str) {
        let message = if reason.is_empty() {
            "the manager finalized the sector while this task was working on it".to_string()
        } else {
            format!("the manager aborted the sector: {reason}")
        };
        self.effects.push(Effect::Failure {
            level: FailureLevel::Abort,
            retry: false,
        });
        self.status.last_error = Some(LastError {
            level: FailureLevel::Abort,
            state: self.position().state,
            message: super::status::bounded(&message, super::status::STATUS_TEXT_LIMIT),
            attempts: 1,
            time: self.time(),
        });
        self.log(true, message.clone());
        set_condition(
            &mut self.status,
            super::condition::MANAGER_FINALIZED,
            "True",
            "AbortedAtManager",
            "the manager finalized the sector itself: nothing to report",
            self.now,
        );
        self.stop(&message, None);
    }

    fn stop(&mut self, reason: &str, report: Option<crate::manager::Call>) {
        let state = self.position().state;
        self.delete_step_pod();
        self.effects.push(Effect::ReleaseSlot);
        if let Some(call) = report {
            self.effects.push(Effect::Tell(call));
        }
        self.event(true, "Aborted", format!("abort in {state}: {reason}"));
        self.enter(None, State::Aborted);
    }
}
