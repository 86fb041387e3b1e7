//! Entering a state: the history, the attempt counter, what a new state starts without, the phase
//! and message, the conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::condition::{PAUSED, PROGRESSING, READY};
use super::{Effect, Turn};
use crate::api::{HISTORY_LIMIT, HistoryEntry, Phase, SealingTaskStatus, State};
use crate::manager::Call;
use crate::manager::wire::{ReportStateReq, SectorStateChange, WorkerIdentifier};
use crate::plan::Event;

/// A status timestamp for `at` (seconds since the epoch).
pub fn time_at(at: i64) -> Time {
    Time(Timestamp::from_second(at).expect("a valid time"))
}

/// Sets a condition and returns it; its transition time moves only when its status changes.
/// The most of a message the task keeps in its status (phase message, conditions, lastError):
/// error texts can come from the manager or a step, and the status must stay a small object.
pub const STATUS_TEXT_LIMIT: usize = 4096;

/// `text`, cut at `limit` bytes (on a character boundary) and marked when it was cut.
pub fn bounded(text: &str, limit: usize) -> String {
    const MARK: &str = " [truncated]";
    if text.len() <= limit {
        return text.to_string();
    }
    let mut end = limit.saturating_sub(MARK.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

pub fn set_condition<'a>(
    status: &'a mut SealingTaskStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> &'a mut Condition {
    let message = &bounded(message, STATUS_TEXT_LIMIT);
    let conditions = &mut status.conditions;
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(index) => index,
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: value.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: time_at(now),
                observed_generation: None,
            });
            return conditions.last_mut().expect("just pushed");
        }
    };
    let existing = &mut conditions[index];
    if existing.status != value {
        existing.status = value.into();
        existing.last_transition_time = time_at(now);
    }
    existing.reason = reason.into();
    existing.message = message.into();
    existing
}

/// Whether a condition of this type is True.
pub fn condition_true(status: &SealingTaskStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets the phase and message, and the Ready, Progressing and Paused conditions that follow.
pub fn set_phase(
    status: &mut SealingTaskStatus,
    phase: Phase,
    message: impl Into<String>,
    now: i64,
) {
    let message = bounded(&message.into(), STATUS_TEXT_LIMIT);
    let (ready, progressing, paused) = match phase {
        Phase::Finished => ("True", "False", "False"),
        Phase::Paused => ("False", "False", "True"),
        Phase::Aborted => ("False", "False", "False"),
        _ => ("False", "True", "False"),
    };
    let reason = phase.to_string();
    set_condition(status, READY, ready, &reason, &message, now);
    set_condition(status, PROGRESSING, progressing, &reason, &message, now);
    set_condition(status, PAUSED, paused, &reason, &message, now);
    status.phase = Some(phase);
    status.message = Some(message);
}

impl Turn<'_> {
    /// Enters `state`. With an `event` it is a step of the plan, written with the work that
    /// follows; without one (a resume, a rewind, an abort) it is written at once.
    pub fn enter(&mut self, event: Option<Event>, state: State) {
        let previous = self.status.state;
        let entered = self.time();
        let status = &mut self.status;
        if let Some(last) = status.history.last_mut() {
            last.duration_seconds = Some(entered.0.as_second() - last.entered.0.as_second());
        }
        status.history.push(HistoryEntry {
            state,
            entered,
            duration_seconds: None,
        });
        if status.history.len() > HISTORY_LIMIT {
            let excess = status.history.len() - HISTORY_LIMIT;
            status.history.drain(..excess);
        }
        let revisit = status
            .history
            .iter()
            .rev()
            .skip(1)
            .any(|h| h.state == state);
        status.state = Some(state);
        status.action_index = 0;
        if revisit {
            // Pod names carry the attempt: a state entered again needs names of its own.
            status.attempt += 1;
        }
        status.not_before = None;
        status.submitting = None;
        status.allocating = None;
        if state != State::Aborted {
            // An abort keeps the failure that caused it on record.
            status.last_error = None;
        }
        // A finished step's pod stays (its logs with it) until the task ends; see cleanup.
        status.step_pod = None;
        status.avoid_node = None;
        let phase = match state {
            State::Finished => Phase::Finished,
            State::Aborted => Phase::Aborted,
            _ => Phase::Running,
        };
        let message = match self.task.spec.plan().state(state) {
            Some(spec) if !state.is_terminal() => format!("{state}: {}", spec.summary),
            Some(spec) => spec.summary.to_string(),
            None => state.to_string(),
        };
        set_phase(&mut self.status, phase, message, self.now);
        self.effects.push(Effect::Transition {
            from: previous,
            event,
            to: state,
        });
        match event {
            Some(event) => {
                if let Some(report) = self.state_report(previous, state, event) {
                    self.effects.push(Effect::ReportState(report));
                }
            }
            // Resumes, rewinds and aborts have Events of their own.
            None if state.is_terminal() || previous.is_some() => self.write(),
            None => {}
        }
    }

    /// The ReportState damocles-worker sends for a state change.
    fn state_report(&self, from: Option<State>, to: State, event: Event) -> Option<Call> {
        let sector = self.sector_id()?;
        Some(self.report_call(
            sector,
            from.map(|s| s.to_string()).unwrap_or_default(),
            to.to_string(),
            event.to_string(),
        ))
    }

    pub(super) fn report_call(
        &self,
        sector: crate::manager::wire::SectorId,
        prev: String,
        next: String,
        event: String,
    ) -> Call {
        Call::ReportState {
            sector,
            report: ReportStateReq {
                worker: WorkerIdentifier {
                    instance: self.rules.instance.clone(),
                    location: format!("{}/{}", self.task.namespace, self.task.name),
                },
                state_change: SectorStateChange { prev, next, event },
                failure: None,
            },
        }
    }
}
