//! Resume rules, as damocles-worker's `worker resume --state X` applies them, with one change: a rewind
//! target whose inputs are gone is refused (the task carries on as it was) instead of aborting the
//! task.

use std::collections::BTreeSet;

use super::{Output, PlanKind, State};

/// What an accepted resume does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeAction {
    /// No state was given: run the current state's work again.
    RetryCurrent(State),
    /// Continue from another state of the plan (usually a rewind).
    Goto(State),
    /// End the task: report the abort to the manager and wipe its workspace.
    Abort,
}

impl ResumeAction {
    /// The state the task is in after the resume is applied.
    pub fn target(self) -> State {
        match self {
            ResumeAction::RetryCurrent(state) | ResumeAction::Goto(state) => state,
            ResumeAction::Abort => State::Aborted,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    #[error("the task already ended in {current}; a finished or aborted task cannot be resumed")]
    TaskEnded { current: State },
    #[error(
        "{given:?} is not a state of plan {plan}; use one of: {}, or Aborted",
        valid.join(", ")
    )]
    UnknownState {
        plan: PlanKind,
        given: String,
        valid: Vec<&'static str>,
    },
    #[error("the task is already in {current}; to retry its current step, resume without a state")]
    SameAsCurrent { current: State },
    #[error(
        "cannot resume into {target}: its work needs {missing}, which this task no longer has \
         (it is produced in {producer}); nothing was changed. Resume into {producer} or earlier instead"
    )]
    MissingInput {
        target: State,
        missing: Output,
        producer: State,
    },
}

/// Checks a resume request against damocles' rules.
///
/// - `target` must be the exact name of a state of `plan`, or `Aborted` (always allowed on a live task);
/// - resuming into the current state is an error; `None` retries the current state's work;
/// - every output the target's work needs must be in `available`, otherwise the error names the
///   missing output and the state that produces it.
pub fn validate_resume(
    plan: PlanKind,
    current: State,
    target: Option<&str>,
    available: &BTreeSet<Output>,
) -> Result<ResumeAction, ResumeError> {
    if current.is_terminal() {
        return Err(ResumeError::TaskEnded { current });
    }
    let plan = plan.plan();
    let Some(name) = target else {
        return Ok(ResumeAction::RetryCurrent(current));
    };
    if name == State::Aborted.as_str() {
        return Ok(ResumeAction::Abort);
    }
    let target = plan
        .parse_state(name)
        .map_err(|_| ResumeError::UnknownState {
            plan: plan.kind,
            given: name.to_string(),
            valid: plan.resumable_state_names().collect(),
        })?;
    if target == current {
        return Err(ResumeError::SameAsCurrent { current });
    }
    let spec = plan
        .state(target)
        .expect("parse_state only returns the plan's states");
    if let Some(&missing) = spec.needs.iter().find(|o| !available.contains(o)) {
        return Err(ResumeError::MissingInput {
            target,
            missing,
            producer: plan
                .producer_of(missing)
                .expect("every output a plan needs is produced by one of its states (tested)"),
        });
    }
    Ok(ResumeAction::Goto(target))
}
