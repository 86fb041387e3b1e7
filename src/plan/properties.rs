//! Property tests of the plan cursor: random walks through every plan, each action coming to a
//! random outcome, from any state a resume may put a task in.

use std::time::Duration;

use proptest::prelude::*;
use strum::IntoEnumIterator;

use super::cursor::{self, Facts, Next, Outcome, Position};
use super::{Plan, PlanKind, State};
use crate::sector::FailureLevel;

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        6 => Just(Outcome::Done),
        1 => (1u64..600).prop_map(|s| Outcome::NotYet(Duration::from_secs(s))),
        1 => Just(Outcome::Resubmit),
        1 => Just(Outcome::FilesMissed),
        1 => prop_oneof![
            Just(FailureLevel::Temporary),
            Just(FailureLevel::Permanent),
            Just(FailureLevel::Critical),
            Just(FailureLevel::Abort),
        ]
        .prop_map(|level| Outcome::Failed {
            level,
            message: "random".into()
        }),
    ]
}

fn walk() -> impl Strategy<Value = (PlanKind, usize, Facts, Vec<Outcome>)> {
    (
        prop_oneof![
            Just(PlanKind::Sealer),
            Just(PlanKind::Snapup),
            Just(PlanKind::Rebuild),
            Just(PlanKind::Unseal),
        ],
        0usize..32,
        (any::<bool>(), any::<bool>()).prop_map(|(synthetic, upgraded)| Facts {
            synthetic,
            upgraded,
        }),
        prop::collection::vec(outcome(), 1..200),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// From any state of a plan, whatever each action comes to: the cursor never errs on a
    /// position it produced, never leaves the plan, enters states only along the plan's
    /// transitions, and answers Terminal only in a terminal state.
    #[test]
    fn a_random_walk_never_leaves_its_plan((kind, start, facts, outcomes) in walk()) {
        let plan: &Plan = kind.plan();
        let states: Vec<State> = plan.states.iter().map(|s| s.state).collect();
        let mut position = Position::start_of(states[start % states.len()]);
        let mut decision = cursor::current(plan, position, facts).expect("a start of the plan");
        for outcome in outcomes {
            prop_assert!(plan.has_state(decision.position.state));
            match decision.next.clone() {
                Next::Act(_) => {
                    position = decision.position;
                    decision = cursor::after(plan, position, facts, outcome)
                        .map_err(|e| TestCaseError::fail(format!("{e} at {position:?}")))?;
                }
                Next::Enter { event, state } => {
                    prop_assert_eq!(plan.next(decision.position.state, event), Ok(state));
                    position = Position::start_of(state);
                    decision = cursor::current(plan, position, facts)
                        .map_err(|e| TestCaseError::fail(format!("{e} at {position:?}")))?;
                }
                Next::Wait(_) | Next::Fail { .. } => {
                    // The task core retries the same action (or resumes the state's start).
                    decision = cursor::current(plan, Position::start_of(decision.position.state), facts)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                Next::Terminal => {
                    prop_assert!(decision.position.state.is_terminal());
                    break;
                }
            }
        }
    }
}

/// Every state of every plan is a start the cursor accepts.
#[test]
fn every_state_is_a_start() {
    for kind in PlanKind::iter() {
        let plan = kind.plan();
        for spec in plan.states {
            cursor::current(plan, Position::start_of(spec.state), Facts::default())
                .unwrap_or_else(|e| panic!("{kind} {}: {e}", spec.state));
        }
    }
}
