//! What the manager hears of a sector's life besides the plan's own calls: the heartbeat that
//! finds a sector aborted at the manager, and the ReportFinalized or ReportAborted that ends
//! every task.

use std::time::Duration;

use super::sector_id;
use crate::api::{PlanKind, State};
use crate::manager::wire::ERR_SECTOR_STATE_NOT_FOUND;
use crate::manager::{Call, Reply};
use crate::task::condition::{FINALIZED_AT_MANAGER, MANAGER_FINALIZED, UNSEAL_HANDED_BACK};
use crate::task::status::{condition_true, set_condition, time_at};
use crate::task::{CallFailure, EndReport, Question, Remembered, Turn, Wake};

impl Turn<'_> {
    /// The ReportState of the state the task is in, sent again: the manager records the same
    /// latest state and answers whether it still holds the sector online. A state entered by a
    /// resume or rewind has no plan transition to name; it is reported as a heartbeat.
    fn current_state_report(&self) -> Option<Call> {
        let sector = self.status.sector.map(sector_id)?;
        let state = self.position().state;
        let previous = self.status.history.iter().rev().nth(1).map(|h| h.state);
        let event = previous.and_then(|from| {
            self.task
                .spec
                .plan()
                .transitions_from(from)
                .find(|t| t.to == state)
                .map(|t| (from, t.event))
        });
        let (prev, event) = match event {
            Some((from, event)) => (from.to_string(), event.to_string()),
            None => (state.to_string(), "Heartbeat".to_string()),
        };
        Some(self.report_call(sector, prev, state.to_string(), event, None))
    }

    /// When due (`manager_heartbeat` set, none sent in the last half of it): asks the manager
    /// how the sector stands. A sector it finalized (aborted from its CLI) ends the task here,
    /// its step interrupted, unless the workspace holds the sector's only replica (then the task
    /// pauses for a person); damocles-worker finds out only at its next state change. A heartbeat
    /// without an answer changes nothing: the plan's next call meets the same manager. Not one
    /// per reconcile: each step boundary would then wait on a manager round trip (the scale
    /// benchmark's slowest transitions), while the timed wake of a running step still sends one
    /// every `manager_heartbeat`.
    pub(in crate::task) fn heartbeat(&mut self) -> Option<Wake> {
        self.rules.manager_heartbeat?;
        if self.observed.heartbeat_recent && self.observed.sector_state.is_none() {
            return None;
        }
        let call = self.current_state_report()?;
        match &self.observed.sector_state {
            None => Some(Wake::Ask(Question::SectorState(Box::new(call)))),
            Some(Ok(Reply::State(Some(state)))) if state.finalized => {
                let reason = state.abort_reason.clone().unwrap_or_default();
                if self.holds_only_replica() {
                    return self.keep_replica_finalized_at_manager(&reason);
                }
                self.aborted_by_manager(&reason);
                Some(self.ended())
            }
            Some(Ok(Reply::State(Some(_)))) => {
                if condition_true(&self.status, FINALIZED_AT_MANAGER) {
                    let message = "the manager holds the sector online again";
                    set_condition(
                        &mut self.status,
                        FINALIZED_AT_MANAGER,
                        "False",
                        "Online",
                        message,
                        self.now,
                    );
                    self.log(false, message);
                    self.write();
                }
                None
            }
            Some(_) => None,
        }
    }

    /// The workspace holds a replica nothing else has: a sealer's or rebuild's from PC2 on
    /// (hours of PC1 and, past the PreCommit, a deposit on chain), a snap-up's from its encode
    /// on.
    fn holds_only_replica(&self) -> bool {
        let plan = self.task.spec.plan();
        let state = self.position().state;
        [State::PC2Done, State::SnapEncoded]
            .into_iter()
            .any(|from| plan.state(from).is_some() && plan.at_or_before(from, state))
    }

    /// A heartbeat answered `Finalized: true` for a sector whose only replica this workspace
    /// holds. One wrong answer (a manager restored from an old backup, pointed at another
    /// database) must not wipe hours of sealing: the step is stopped and the task paused with
    /// the files kept until a person ends it (resumeState Aborted) or repairs the manager and
    /// resumes. Once paused for it, later heartbeats that say the same change nothing.
    fn keep_replica_finalized_at_manager(&mut self, reason: &str) -> Option<Wake> {
        if self.status.phase == Some(crate::api::Phase::Paused)
            && condition_true(&self.status, FINALIZED_AT_MANAGER)
        {
            return None;
        }
        let state = self.position().state;
        let said = if reason.is_empty() {
            "finalized".to_string()
        } else {
            format!("aborted ({reason})")
        };
        let message = format!(
            "the manager says the sector is {said}, but this task's workspace holds its only \
             replica ({state}): the files are kept. If the sector is to go, set \
             spec.resumeState: Aborted; if the manager's state is wrong, repair it and resume"
        );
        set_condition(
            &mut self.status,
            FINALIZED_AT_MANAGER,
            "True",
            "ReplicaKept",
            &message,
            self.now,
        );
        self.delete_step_pod();
        self.effects.push(crate::task::Effect::ReleaseSlot);
        Some(self.fail(crate::sector::FailureLevel::Permanent, message))
    }

    /// The report an ended task owes the manager, for a sector this task was handed.
    /// ReportFinalized after every plan (the manager clears the sector's rebuild or unseal mark
    /// and takes it offline; without it the next rebuild or unseal of that sector fails), and
    /// after an aborted unseal or rebuild, whose sector is proven on chain: damocles-manager's
    /// ReportAborted would release its deals, active on chain, and clear a snapped sector's
    /// upgrade record, after which it can never be set for rebuild again. ReportAborted, with
    /// the reason the task recorded, after a sealer's or snap-up's abort (the deals it acquired
    /// go back to the market, the sector offline).
    fn end_report(&self) -> Option<Call> {
        let sector = self.status.sector.map(sector_id)?;
        match (self.position().state, self.task.spec.plan) {
            (State::Finished, _) | (State::Aborted, PlanKind::Unseal | PlanKind::Rebuild) => {
                Some(Call::ReportFinalized(sector))
            }
            (State::Aborted, _) => Some(Call::ReportAborted {
                sector,
                reason: self.abort_reason(),
            }),
            _ => None,
        }
    }

    /// The reason an aborted task recorded, as the manager is told it.
    fn abort_reason(&self) -> String {
        self.status
            .last_error
            .as_ref()
            .map_or_else(|| "aborted".to_string(), |e| e.message.clone())
    }

    /// The manager's answer to `call`, a call retried until answered: Err with the wake to ask
    /// it (or to wait for the back-off in status.notBefore) while there is none.
    fn answer_of_retried(&mut self, call: Call) -> Result<Result<Reply, CallFailure>, Wake> {
        if let Some(reply) = self.answered(call.method(), true) {
            return Ok(reply);
        }
        if let Some(at) = &self.status.not_before {
            let wait = at.0.as_second() - self.now;
            if wait > 0 {
                return Err(Wake::After(Duration::from_secs(wait as u64)));
            }
        }
        // What the task has come to is written before the manager hears of it: an operator
        // stopped after the report but before writing would find the sector offline at its next
        // heartbeat and take its own ReportFinalized for an abort at the manager (the crash
        // schedule found a finished sealer aborted so).
        self.write();
        Err(Wake::Ask(Question::Manager(Box::new(call))))
    }

    /// A retried call not answered: `message` logged, asked again after manager_retry_max.
    fn retry_later(&mut self, message: String) -> Wake {
        let retry = self.rules.manager_retry_max;
        self.status.not_before = Some(time_at(self.now + retry.as_secs() as i64));
        self.log(true, message);
        self.write();
        Wake::After(retry)
    }

    /// A retried call answered: recorded as the condition `type_` True, the back-off cleared.
    fn answered_retried(&mut self, type_: &str, reason: &str, message: String) {
        set_condition(&mut self.status, type_, "True", reason, &message, self.now);
        self.status.not_before = None;
        self.log(false, message);
        self.write();
    }

    /// An aborted unseal first reports its request failed (AchieveUnsealSector with the reason:
    /// the manager marks it Failed and never queues it again, so the market hears it failed
    /// rather than waiting on it); retried while the manager does not answer,
    /// done once it answers (a refusal means it no longer holds the request). The
    /// UnsealHandedBack condition records it. None once done, or where there is none.
    fn hand_back_unseal(&mut self) -> Option<Wake> {
        if self.position().state != State::Aborted
            || condition_true(&self.status, UNSEAL_HANDED_BACK)
        {
            return None;
        }
        let reason = self.abort_reason();
        let call = super::unseal::hand_back(self, &reason)?;
        let method = call.method();
        let reply = match self.answer_of_retried(call) {
            Ok(reply) => reply,
            Err(wake) => return Some(wake),
        };
        let (reason, message) = match reply {
            Ok(_) => (
                "HandedBack",
                "the unseal request went back to the manager as failed".to_string(),
            ),
            Err(failure) if failure.unavailable => {
                let retry = self.rules.manager_retry_max.as_secs();
                let message = format!("{method}: {}; trying again in {retry}s", failure.message);
                return Some(self.retry_later(message));
            }
            Err(failure) => (
                "NotHeld",
                format!(
                    "the manager no longer holds the unseal request: {}",
                    failure.message
                ),
            ),
        };
        self.answered_retried(UNSEAL_HANDED_BACK, reason, message);
        None
    }

    /// Makes the end report as a call retried until answered; the ManagerFinalized condition
    /// records it. None once told (or nothing to tell); a wake to retry at while the manager does
    /// not answer, which does not hold up the workspace cleanup.
    pub(in crate::task) fn report_end(&mut self) -> Option<Wake> {
        let call = self.end_report()?;
        if condition_true(&self.status, MANAGER_FINALIZED) {
            return None;
        }
        if let Some(wake) = self.hand_back_unseal() {
            return Some(wake);
        }
        let method = call.method();
        let reply = match self.answer_of_retried(call) {
            Ok(reply) => reply,
            Err(wake) => return Some(wake),
        };
        let (reason, message) = match reply {
            Ok(_) => (
                "Reported",
                "the manager was told the sector is finalized".to_string(),
            ),
            // The manager no longer holds the sector online: it was finalized already (an
            // earlier report whose answer was lost, or an abort at the manager).
            Err(failure) if failure.code == Some(ERR_SECTOR_STATE_NOT_FOUND) => (
                "AlreadyOffline",
                "the manager already holds the sector offline (finalized)".to_string(),
            ),
            Err(failure) => {
                let retry = self.rules.manager_retry_max.as_secs();
                let message = format!("{method}: {}; trying again in {retry}s", failure.message);
                set_condition(
                    &mut self.status,
                    MANAGER_FINALIZED,
                    "False",
                    "NotAnswered",
                    &message,
                    self.now,
                );
                return Some(self.retry_later(message));
            }
        };
        if self.workspace_cleaned() {
            self.answered_retried(MANAGER_FINALIZED, reason, message);
        } else {
            // The workspace cleanup's end is written next: the answer goes with it.
            self.log(false, message.clone());
            self.remember(Remembered {
                end_report: Some(EndReport {
                    reason: reason.to_string(),
                    message,
                    at: self.now,
                }),
                ..Remembered::default()
            });
        }
        None
    }
}
