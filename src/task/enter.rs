//! Entering a state: the history, the attempt counter, what a new state starts without, the phase
//! and message, the conditions.

use super::status::set_phase;
use super::{Effect, Turn};
use crate::api::{HISTORY_LIMIT, HistoryEntry, Phase, State};
use crate::manager::Call;
use crate::manager::wire::{ReportStateReq, SectorFailure, SectorStateChange, WorkerIdentifier};
use crate::plan::Event;

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
            None,
        ))
    }

    pub(super) fn report_call(
        &self,
        sector: crate::manager::wire::SectorId,
        prev: String,
        next: String,
        event: String,
        failure: Option<SectorFailure>,
    ) -> Call {
        Call::ReportState {
            sector,
            report: ReportStateReq {
                worker: WorkerIdentifier {
                    instance: self.rules.instance.clone(),
                    location: format!("{}/{}", self.task.namespace, self.task.name),
                },
                state_change: SectorStateChange { prev, next, event },
                failure,
            },
        }
    }
}
