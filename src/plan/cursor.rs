//! The plan cursor: given where a task stands in its plan and what its last action came to, which
//! action or transition comes next. Pure. The rest of the task's rules (failures, resume, manager
//! answers, step results) are in [`crate::task`], which walks the plan with this cursor.

use std::time::Duration;

use super::{Action, Event, Plan, State};
use crate::sector::FailureLevel;

/// Where a task is: its state and the index of the next action of that state's work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub state: State,
    pub action: usize,
}

impl Position {
    pub fn start_of(state: State) -> Self {
        Self { state, action: 0 }
    }
}

/// Facts about the task that choose between a state's forward transitions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// The task seals with a synthetic-PoRep proof type (PC2 is followed by SyntheticPoRep).
    pub synthetic: bool,
    /// A rebuild of a snap-upgraded sector (its deal pieces must be encoded again).
    pub upgraded: bool,
}

/// What an executor learned by doing an action.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The action completed.
    Done,
    /// Not yet (a PreCommit not landed, a seed not drawn): ask again after this long.
    NotYet(Duration),
    /// The chain message failed: submit it again.
    Resubmit,
    /// The manager cannot find the persisted files: persist them again.
    FilesMissed,
    Failed {
        level: FailureLevel,
        message: String,
    },
}

/// What the executor does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Next {
    /// Do this action (at `position.action` of the state's work).
    Act(Action),
    /// The state's work is done: fire `event` and enter `state`.
    Enter { event: Event, state: State },
    /// Ask the same action again after this long; nothing failed.
    Wait(Duration),
    /// The action failed; the task core decides whether to retry, pause or abort.
    Fail {
        level: FailureLevel,
        message: String,
    },
    /// The task is Finished or Aborted.
    Terminal,
}

/// The cursor's answer with the position it leaves the task at.
#[derive(Clone, Debug, PartialEq)]
pub struct At {
    pub position: Position,
    pub next: Next,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("{state} is not a state of plan {plan}")]
    NotAState { plan: super::PlanKind, state: State },
    #[error("{state} has {count} actions; there is no action {index}")]
    NoSuchAction {
        state: State,
        index: usize,
        count: usize,
    },
    #[error("plan {plan} has no forward transition from {state}")]
    NoForwardTransition { plan: super::PlanKind, state: State },
}

/// Transitions that go back to redo earlier work; never taken on success.
const BACKWARD: [Event; 3] = [Event::ReSubmitPC, Event::ReSubmitProof, Event::RePersist];

/// What to do at `position` before anything has been tried there.
pub fn current(plan: &Plan, position: Position, facts: Facts) -> Result<At, CursorError> {
    let spec = plan.state(position.state).ok_or(CursorError::NotAState {
        plan: plan.kind,
        state: position.state,
    })?;
    if position.state.is_terminal() {
        return Ok(At {
            position,
            next: Next::Terminal,
        });
    }
    let next = match spec.actions.get(position.action) {
        Some(action) => Next::Act(*action),
        None if position.action == spec.actions.len() => forward(plan, position.state, facts)?,
        None => {
            return Err(CursorError::NoSuchAction {
                state: position.state,
                index: position.action,
                count: spec.actions.len(),
            });
        }
    };
    Ok(At { position, next })
}

/// What to do after the action at `position` came to `outcome`.
pub fn after(
    plan: &Plan,
    position: Position,
    facts: Facts,
    outcome: Outcome,
) -> Result<At, CursorError> {
    let stay = |next| At { position, next };
    match outcome {
        Outcome::Done => current(
            plan,
            Position {
                state: position.state,
                action: position.action + 1,
            },
            facts,
        ),
        Outcome::NotYet(delay) => Ok(stay(Next::Wait(delay))),
        Outcome::Failed { level, message } => Ok(stay(Next::Fail { level, message })),
        Outcome::Resubmit => Ok(stay(
            backward(plan, position.state, &[Event::ReSubmitPC, Event::ReSubmitProof]).unwrap_or(
                Next::Fail {
                    level: FailureLevel::Permanent,
                    message: format!("the manager asked to resubmit from {}, which this plan cannot do", position.state),
                },
            ),
        )),
        Outcome::FilesMissed => Ok(stay(backward(plan, position.state, &[Event::RePersist]).unwrap_or_else(|| {
            let persist = plan
                .states
                .iter()
                .find(|s| s.actions.contains(&Action::File(super::StepKind::Persist)))
                .map(|s| s.state.to_string())
                .unwrap_or_default();
            Next::Fail {
                level: FailureLevel::Permanent,
                message: format!(
                    "the manager cannot find the persisted files; resume at {persist} to persist them again"
                ),
            }
        }))),
    }
}

fn backward(plan: &Plan, state: State, events: &[Event]) -> Option<Next> {
    plan.transitions_from(state)
        .find(|t| events.contains(&t.event))
        .map(|t| Next::Enter {
            event: t.event,
            state: t.to,
        })
}

fn forward(plan: &Plan, state: State, facts: Facts) -> Result<Next, CursorError> {
    let candidates: Vec<_> = plan
        .transitions_from(state)
        .filter(|t| !BACKWARD.contains(&t.event))
        .collect();
    let wanted = |event: Event| candidates.iter().find(|t| t.event == event).copied();
    let chosen = match candidates.as_slice() {
        [only] => Some(*only),
        _ if wanted(Event::PC2NeedSyntheticProof).is_some() => wanted(if facts.synthetic {
            Event::PC2NeedSyntheticProof
        } else {
            Event::PC2
        }),
        _ if wanted(Event::SkipSnap).is_some() => wanted(if facts.upgraded {
            Event::AddPiece
        } else {
            Event::SkipSnap
        }),
        _ => None,
    };
    chosen
        .map(|t| Next::Enter {
            event: t.event,
            state: t.to,
        })
        .ok_or(CursorError::NoForwardTransition {
            plan: plan.kind,
            state,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{ManagerCall, PlanKind, StepKind};

    fn at(state: State, action: usize) -> Position {
        Position { state, action }
    }

    /// Drives a plan from Empty with every action succeeding; returns the states entered.
    fn happy_path(kind: PlanKind, facts: Facts) -> Vec<State> {
        let plan = kind.plan();
        let mut position = Position::start_of(State::Empty);
        let mut states = vec![position.state];
        let mut decision = current(plan, position, facts).unwrap();
        for _ in 0..100 {
            match decision.next {
                Next::Act(_) => {
                    decision = after(plan, decision.position, facts, Outcome::Done).unwrap();
                }
                Next::Enter { state, .. } => {
                    position = Position::start_of(state);
                    states.push(state);
                    decision = current(plan, position, facts).unwrap();
                }
                Next::Terminal => return states,
                other => panic!("unexpected {other:?}"),
            }
        }
        panic!("no end: {states:?}")
    }

    #[test]
    fn every_plan_reaches_finished_when_everything_succeeds() {
        use State::*;
        assert_eq!(
            happy_path(PlanKind::Sealer, Facts::default()),
            [
                Empty,
                Allocated,
                DealsAcquired,
                PieceAdded,
                TreeDBuilt,
                TicketAssigned,
                PC1Done,
                PC2Done,
                PCSubmitted,
                PCLanded,
                Persisted,
                PersistanceSubmitted,
                SeedAssigned,
                C1Done,
                C2Done,
                ProofSubmitted,
                Finished
            ]
        );
        let synthetic = happy_path(
            PlanKind::Sealer,
            Facts {
                synthetic: true,
                ..Default::default()
            },
        );
        assert!(synthetic.contains(&SyntheticPoRepNeeded));
        assert!(!happy_path(PlanKind::Rebuild, Facts::default()).contains(&SnapPieceAdded));
        assert!(
            happy_path(
                PlanKind::Rebuild,
                Facts {
                    upgraded: true,
                    ..Default::default()
                }
            )
            .contains(&SnapEncoded)
        );
        assert_eq!(
            happy_path(PlanKind::Snapup, Facts::default()).last(),
            Some(&Finished)
        );
        assert_eq!(
            happy_path(PlanKind::Unseal, Facts::default()),
            [Empty, Allocated, Unsealed, Finished]
        );
    }

    #[test]
    fn actions_of_a_state_run_in_order() {
        let plan = PlanKind::Unseal.plan();
        let facts = Facts::default();
        let first = current(plan, at(State::Unsealed, 0), facts).unwrap();
        assert_eq!(
            first.next,
            Next::Act(Action::Manager(ManagerCall::AcquireUnsealDest))
        );
        let second = after(plan, first.position, facts, Outcome::Done).unwrap();
        assert_eq!(
            (second.position, second.next),
            (
                at(State::Unsealed, 1),
                Next::Act(Action::File(StepKind::Upload))
            )
        );
        assert!(matches!(
            current(plan, at(State::Unsealed, 9), facts),
            Err(CursorError::NoSuchAction { index: 9, .. })
        ));
        assert!(matches!(
            current(plan, at(State::PC1Done, 0), facts),
            Err(CursorError::NotAState { .. })
        ));
    }

    #[test]
    fn chain_answers_lead_back_or_wait() {
        let sealer = PlanKind::Sealer.plan();
        let facts = Facts::default();
        let resubmit = after(
            sealer,
            at(State::ProofSubmitted, 0),
            facts,
            Outcome::Resubmit,
        )
        .unwrap();
        assert_eq!(
            resubmit.next,
            Next::Enter {
                event: Event::ReSubmitProof,
                state: State::C2Done
            }
        );
        let wait = after(
            sealer,
            at(State::PCSubmitted, 0),
            facts,
            Outcome::NotYet(Duration::from_secs(30)),
        )
        .unwrap();
        assert_eq!(
            (wait.position, wait.next),
            (
                at(State::PCSubmitted, 0),
                Next::Wait(Duration::from_secs(30))
            )
        );
        let snapup = PlanKind::Snapup.plan();
        assert_eq!(
            after(snapup, at(State::Persisted, 0), facts, Outcome::FilesMissed)
                .unwrap()
                .next,
            Next::Enter {
                event: Event::RePersist,
                state: State::SnapProved
            }
        );
        // The sealer plan has no RePersist edge: a person resumes at the persist state.
        match after(sealer, at(State::Persisted, 0), facts, Outcome::FilesMissed)
            .unwrap()
            .next
        {
            Next::Fail { level, message } => {
                assert_eq!(level, FailureLevel::Permanent);
                assert!(message.contains("resume at PCLanded"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
