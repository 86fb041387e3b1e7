//! A person's hand on the task: spec.resumeState (retry, rewind, abort) and spec.suspend.

use std::collections::BTreeSet;

use super::condition::{FAILED, PAUSED, RESUME_REJECTED, SUSPENDED};
use super::status::set_phase;
use super::{Effect, Turn, Wake};
use crate::api::{Phase, PlanKind, ResumeRecord, ResumeRequest, SealingTaskStatus, State};
use crate::plan::{Output, ResumeAction, validate_resume};

/// What the task has established so far, for the resume rules. A sector counts only once the
/// manager allocated it to this task: a spec.sector someone wrote is a filter for the allocation,
/// never a reason to skip it.
pub fn available_outputs(plan: PlanKind, status: &SealingTaskStatus) -> BTreeSet<Output> {
    let plan = plan.plan();
    let current = status.state.unwrap_or(State::Empty);
    let mut available: BTreeSet<_> = status
        .history
        .iter()
        .filter(|h| h.state != current)
        .filter_map(|h| plan.state(h.state))
        .flat_map(|s| s.produces.iter().copied())
        .collect();
    // The oldest history may have been trimmed; these outputs are recorded in status.
    if status.sector.is_some() {
        available.insert(Output::Sector);
        available.insert(Output::Deals);
    }
    if status.outputs.as_ref().is_some_and(|o| o.ticket.is_some()) {
        available.insert(Output::Ticket);
    }
    available
}

/// The resume targets valid for a task in `current` with `available` outputs, in words.
pub fn valid_targets(plan: PlanKind, current: State, available: &BTreeSet<Output>) -> String {
    let states: Vec<&str> = plan
        .plan()
        .states
        .iter()
        .filter(|s| !s.state.is_terminal() && s.state != current)
        .filter(|s| s.needs.iter().all(|o| available.contains(o)))
        .map(|s| s.state.as_str())
        .collect();
    let mut hint = String::from("\"\" retries its work");
    if !states.is_empty() {
        hint.push_str(&format!(", {} go there", states.join(", ")));
    }
    hint.push_str(", Aborted ends the task");
    hint
}

impl Turn<'_> {
    fn suspended(&self) -> bool {
        self.status.phase == Some(Phase::Paused)
            && self
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == PAUSED && c.reason == SUSPENDED)
    }

    /// Applies spec.resumeState once and clears it. Some ends this decision.
    pub(super) fn resume(&mut self, request: ResumeRequest<'_>) -> Option<Wake> {
        let generation = self.task.generation;
        let applied = self
            .status
            .last_resume
            .as_ref()
            .is_some_and(|r| r.generation.is_some() && r.generation == generation);
        let refused = self.status.conditions.iter().any(|c| {
            c.type_ == RESUME_REJECTED && c.status == "True" && c.observed_generation == generation
        });
        if applied || refused {
            // Done before a crash or a conflicting edit; only the clearing is left.
            self.effects.push(Effect::ClearResumeRequest);
            return None;
        }
        let current = self.position().state;
        let available = available_outputs(self.task.spec.plan, &self.status);
        let action =
            match validate_resume(self.task.spec.plan, current, request.target(), &available) {
                Ok(action) => action,
                Err(err) => {
                    let message = err.to_string();
                    super::status::set_condition(
                        &mut self.status,
                        RESUME_REJECTED,
                        "True",
                        "InvalidResumeState",
                        &message,
                        self.now,
                    )
                    .observed_generation = generation;
                    self.write();
                    self.event(true, RESUME_REJECTED, message.clone());
                    self.log(true, format!("resume refused: {message}"));
                    self.effects.push(Effect::ClearResumeRequest);
                    return None;
                }
            };
        let target = action.target();
        self.log(false, format!("resume from {current} to {target}"));
        self.delete_step_pod();
        self.status
            .conditions
            .retain(|c| c.type_ != RESUME_REJECTED && c.type_ != FAILED);
        self.status.last_resume = Some(ResumeRecord {
            from: current,
            to: target,
            at: self.time(),
            generation,
        });
        self.status.last_error = None;
        self.status.not_before = None;
        self.status.submitting = None;
        // A resume is the person's word that the manager's queue was checked.
        self.status.allocating = None;
        match action {
            ResumeAction::RetryCurrent(_) => {
                self.status.action_index = 0;
                self.status.attempt += 1;
                let message = format!("{current}: retrying its work (resume)");
                set_phase(&mut self.status, Phase::Running, message, self.now);
                self.write();
            }
            ResumeAction::Goto(state) => {
                self.status.attempt += 1;
                let plan = self.task.spec.plan();
                if plan.at_or_before(state, plan.first_workspace_state()) {
                    // Starting the workspace over: the scheduler may pick any node again.
                    self.status.node = None;
                }
                self.enter(None, state);
            }
            ResumeAction::Abort => {
                self.abort(&format!("aborted by spec.resumeState in {current}"));
            }
        }
        self.event(false, "Resumed", format!("{current} -> {target}"));
        self.effects.push(Effect::ClearResumeRequest);
        None
    }

    pub(super) fn suspend(&mut self) {
        if self.suspended() {
            return;
        }
        if self.status.phase == Some(Phase::Paused) {
            // Paused for a failure: it stays paused for that failure, so that unsuspending it
            // does not run it again without the resume a person owes it.
            return;
        }
        let state = self.position().state;
        self.delete_step_pod();
        self.effects.push(Effect::ReleaseSlot);
        let message = format!("{state}: suspended (spec.suspend); files kept");
        set_phase(&mut self.status, Phase::Paused, message.clone(), self.now);
        super::status::set_condition(
            &mut self.status,
            PAUSED,
            "True",
            SUSPENDED,
            &message,
            self.now,
        );
        self.write();
        self.event(
            false,
            SUSPENDED,
            format!("suspended in {state}; its running step was stopped"),
        );
    }

    /// Unsuspended: the interrupted work runs again under a new pod name.
    pub(super) fn unsuspend_if_suspended(&mut self) {
        if !self.suspended() {
            return;
        }
        let state = self.position().state;
        self.status.attempt += 1;
        self.status.step_pod = None;
        let message = format!("{state}: resumed after suspend");
        set_phase(&mut self.status, Phase::Running, message, self.now);
        self.write();
        self.event(
            false,
            "Unsuspended",
            format!("rerunning the work of {state}"),
        );
    }

    /// The resume targets valid now, for a paused task's message.
    pub(super) fn resume_targets(&self) -> String {
        let available = available_outputs(self.task.spec.plan, &self.status);
        valid_targets(self.task.spec.plan, self.position().state, &available)
    }
}
