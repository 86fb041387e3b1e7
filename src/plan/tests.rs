use std::collections::{BTreeSet, HashSet, VecDeque};

use strum::IntoEnumIterator;

use super::*;

/// The transitions of `seed/task-state-flows.zh.md` (plus the SyntheticPoRep branch that damocles'
/// source has), written out independently of the plan tables they check.
fn seed_transitions(kind: PlanKind) -> Vec<(&'static str, &'static str, &'static str)> {
    match kind {
        PlanKind::Sealer => vec![
            ("Empty", "Allocate", "Allocated"),
            ("Allocated", "AcquireDeals", "DealsAcquired"),
            ("DealsAcquired", "AddPiece", "PieceAdded"),
            ("PieceAdded", "BuildTreeD", "TreeDBuilt"),
            ("TreeDBuilt", "AssignTicket", "TicketAssigned"),
            ("TicketAssigned", "PC1", "PC1Done"),
            ("PC1Done", "PC2", "PC2Done"),
            ("PC1Done", "PC2NeedSyntheticProof", "SyntheticPoRepNeeded"),
            ("SyntheticPoRepNeeded", "SyntheticPoRep", "PC2Done"),
            ("PC2Done", "SubmitPC", "PCSubmitted"),
            ("PCSubmitted", "ReSubmitPC", "PC2Done"),
            ("PCSubmitted", "CheckPC", "PCLanded"),
            ("PCLanded", "Persist", "Persisted"),
            ("Persisted", "SubmitPersistance", "PersistanceSubmitted"),
            ("PersistanceSubmitted", "AssignSeed", "SeedAssigned"),
            ("SeedAssigned", "C1", "C1Done"),
            ("C1Done", "C2", "C2Done"),
            ("C2Done", "SubmitProof", "ProofSubmitted"),
            ("ProofSubmitted", "ReSubmitProof", "C2Done"),
            ("ProofSubmitted", "Finish", "Finished"),
        ],
        PlanKind::Snapup => vec![
            ("Empty", "AllocatedSnapUpSector", "Allocated"),
            ("Allocated", "AddPiece", "PieceAdded"),
            ("PieceAdded", "BuildTreeD", "TreeDBuilt"),
            ("TreeDBuilt", "SnapEncode", "SnapEncoded"),
            ("SnapEncoded", "SnapProve", "SnapProved"),
            ("SnapProved", "Persist", "Persisted"),
            ("Persisted", "RePersist", "SnapProved"),
            ("Persisted", "Finish", "Finished"),
        ],
        PlanKind::Rebuild => vec![
            ("Empty", "AllocatedRebuildSector", "Allocated"),
            ("Allocated", "AddPiece", "PieceAdded"),
            ("PieceAdded", "BuildTreeD", "TreeDBuilt"),
            ("TreeDBuilt", "PC1", "PC1Done"),
            ("PC1Done", "PC2", "PC2Done"),
            ("PC1Done", "PC2NeedSyntheticProof", "SyntheticPoRepNeeded"),
            ("SyntheticPoRepNeeded", "SyntheticPoRep", "PC2Done"),
            ("PC2Done", "CheckSealed", "SealedChecked"),
            ("SealedChecked", "SkipSnap", "SnapDone"),
            ("SealedChecked", "AddPiece", "SnapPieceAdded"),
            ("SnapPieceAdded", "BuildTreeD", "SnapTreeDBuilt"),
            ("SnapTreeDBuilt", "SnapEncode", "SnapEncoded"),
            ("SnapEncoded", "SnapProve", "SnapDone"),
            ("SnapDone", "Persist", "Persisted"),
            ("Persisted", "SubmitPersistance", "Finished"),
        ],
        PlanKind::Unseal => vec![
            ("Empty", "AllocatedUnsealSector", "Allocated"),
            ("Allocated", "UnsealDone", "Unsealed"),
            ("Unsealed", "UploadPieceDone", "Finished"),
        ],
    }
}

fn state(name: &str) -> State {
    name.parse().unwrap_or_else(|_| panic!("{name} is a state"))
}

fn event(name: &str) -> Event {
    name.parse()
        .unwrap_or_else(|_| panic!("{name} is an event"))
}

#[test]
fn every_seed_transition_is_accepted() {
    for kind in PlanKind::iter() {
        for (from, ev, to) in seed_transitions(kind) {
            assert_eq!(
                next(kind, state(from), event(ev)),
                Ok(state(to)),
                "{kind}: {from} --{ev}--> {to}"
            );
        }
    }
}

#[test]
fn plans_list_exactly_the_seed_transitions_in_order() {
    for plan in Plan::all() {
        let listed: Vec<(&str, &str, &str)> = plan
            .transitions
            .iter()
            .map(|t| (t.from.as_str(), <&str>::from(t.event), t.to.as_str()))
            .collect();
        assert_eq!(listed, seed_transitions(plan.kind), "{}", plan.kind);
    }
}

#[test]
fn every_pair_not_in_the_plan_is_rejected() {
    for kind in PlanKind::iter() {
        let allowed: HashSet<(State, Event)> = seed_transitions(kind)
            .into_iter()
            .map(|(from, ev, _)| (state(from), event(ev)))
            .collect();
        let mut rejected = 0;
        for s in State::iter() {
            for e in Event::iter() {
                if allowed.contains(&(s, e)) {
                    continue;
                }
                let err =
                    next(kind, s, e).expect_err(&format!("{kind}: {s} --{e}--> must be rejected"));
                match err {
                    PlanError::NotAState { .. } => assert!(!kind.plan().has_state(s)),
                    PlanError::NoTransition { allowed, .. } => {
                        assert!(!allowed.contains(&e));
                        assert!(err_text(kind, s, e).contains("allows"));
                    }
                }
                rejected += 1;
            }
        }
        assert_eq!(
            rejected,
            State::iter().count() * Event::iter().count() - allowed.len()
        );
    }
}

fn err_text(kind: PlanKind, s: State, e: Event) -> String {
    next(kind, s, e).unwrap_err().to_string()
}

#[test]
fn rejection_names_the_allowed_events() {
    let text = err_text(PlanKind::Sealer, State::PCSubmitted, Event::SubmitPC);
    assert_eq!(
        text,
        "plan sealer has no transition from PCSubmitted on event SubmitPC; from PCSubmitted it allows: ReSubmitPC, CheckPC"
    );
    let text = err_text(PlanKind::Unseal, State::PC1Done, Event::PC2);
    assert!(
        text.starts_with("PC1Done is not a state of plan unseal; its states are: Empty, Allocated"),
        "{text}"
    );
    let text = err_text(PlanKind::Sealer, State::Finished, Event::Finish);
    assert!(text.ends_with("allows: none (terminal state)"), "{text}");
}

fn reachable(plan: &Plan, start: State, forward: bool) -> HashSet<State> {
    let mut seen = HashSet::from([start]);
    let mut queue = VecDeque::from([start]);
    while let Some(s) = queue.pop_front() {
        for t in plan.transitions {
            let (a, b) = if forward {
                (t.from, t.to)
            } else {
                (t.to, t.from)
            };
            if a == s && seen.insert(b) {
                queue.push_back(b);
            }
        }
    }
    seen
}

#[test]
fn every_state_is_reachable_from_empty_and_can_finish() {
    for plan in Plan::all() {
        let from_empty = reachable(plan, INITIAL, true);
        let to_finished = reachable(plan, State::Finished, false);
        for spec in plan.states {
            if spec.state == State::Aborted {
                // Reached through the implicit abort edge from every state; it is an end, not a way on.
                assert!(plan.transitions_from(State::Aborted).next().is_none());
                continue;
            }
            assert!(
                from_empty.contains(&spec.state),
                "{}: {} unreachable",
                plan.kind,
                spec.state
            );
            assert!(
                to_finished.contains(&spec.state),
                "{}: {} cannot finish",
                plan.kind,
                spec.state
            );
        }
        for t in plan.transitions {
            assert!(
                plan.has_state(t.from) && plan.has_state(t.to),
                "{}: {t:?}",
                plan.kind
            );
        }
    }
}

#[test]
fn states_and_work_are_consistent() {
    for plan in Plan::all() {
        let names: Vec<&str> = plan.state_names().collect();
        assert_eq!(names.first(), Some(&"Empty"));
        assert_eq!(&names[names.len() - 2..], ["Finished", "Aborted"]);
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len(), "{}: duplicate state", plan.kind);
        for spec in plan.states {
            assert_eq!(
                spec.actions.is_empty(),
                spec.state.is_terminal(),
                "{}: {}",
                plan.kind,
                spec.state
            );
            for need in spec.needs {
                // Whatever a state needs, an earlier state of the same plan produces.
                let producer = plan.producer_of(*need).unwrap_or_else(|| {
                    panic!(
                        "{}: {} needs {need}, which nothing produces",
                        plan.kind, spec.state
                    )
                });
                assert!(
                    reachable(plan, producer, true).contains(&spec.state),
                    "{}: {} needs {need} from {producer}, which does not lead there",
                    plan.kind,
                    spec.state
                );
            }
        }
    }
}

#[test]
fn work_matches_the_spec() {
    let sealer = PlanKind::Sealer.plan();
    let work = |s: State| sealer.state(s).unwrap().actions.to_vec();
    assert_eq!(
        work(State::Empty),
        [Action::Manager(ManagerCall::AllocateSector)]
    );
    assert_eq!(work(State::TicketAssigned), [Action::Proof(StepKind::Pc1)]);
    assert_eq!(
        work(State::PCLanded),
        [
            Action::Manager(ManagerCall::StoreReserveSpace),
            Action::File(StepKind::Persist)
        ]
    );
    let snapup = PlanKind::Snapup.plan();
    assert_eq!(
        snapup.state(State::Empty).unwrap().actions,
        [Action::Manager(ManagerCall::AllocateSanpUpSector)]
    );
    let unseal = PlanKind::Unseal.plan();
    assert_eq!(
        unseal.state(State::Unsealed).unwrap().actions,
        [
            Action::Manager(ManagerCall::AcquireUnsealDest),
            Action::File(StepKind::Upload),
            Action::Manager(ManagerCall::AchieveUnsealSector)
        ]
    );
    // rebuild reuses the original ticket: no AssignTicket anywhere in it.
    let rebuild = PlanKind::Rebuild.plan();
    assert!(rebuild.states.iter().all(|s| {
        !s.actions
            .contains(&Action::Manager(ManagerCall::AssignTicket))
    }));
}

// ---- resume rules, one test per rule ----

fn everything() -> BTreeSet<Output> {
    Output::iter().collect()
}

#[test]
fn resume_accepts_an_exact_state_name_of_the_plan() {
    assert_eq!(
        validate_resume(
            PlanKind::Sealer,
            State::PC2Done,
            Some("TreeDBuilt"),
            &everything()
        ),
        Ok(ResumeAction::Goto(State::TreeDBuilt))
    );
}

#[test]
fn resume_refuses_names_that_are_not_exact() {
    for name in ["treedbuilt", "TreeDBuilt ", "TreeD", ""] {
        let err = validate_resume(PlanKind::Sealer, State::PC2Done, Some(name), &everything())
            .unwrap_err();
        assert!(
            matches!(err, ResumeError::UnknownState { .. }),
            "{name:?}: {err:?}"
        );
    }
}

#[test]
fn resume_refuses_a_state_of_another_plan_and_lists_the_valid_ones() {
    let err = validate_resume(
        PlanKind::Sealer,
        State::PC2Done,
        Some("SnapEncoded"),
        &everything(),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("\"SnapEncoded\" is not a state of plan sealer; use one of: Empty, Allocated, DealsAcquired"), "{text}");
    assert!(
        text.ends_with("ProofSubmitted, Finished, or Aborted"),
        "{text}"
    );
}

#[test]
fn resume_into_the_current_state_is_an_error() {
    let err = validate_resume(
        PlanKind::Sealer,
        State::PC2Done,
        Some("PC2Done"),
        &everything(),
    )
    .unwrap_err();
    assert_eq!(
        err,
        ResumeError::SameAsCurrent {
            current: State::PC2Done
        }
    );
    assert!(err.to_string().contains("resume without a state"));
}

#[test]
fn resume_without_a_state_retries_the_current_step() {
    assert_eq!(
        validate_resume(PlanKind::Unseal, State::Allocated, None, &BTreeSet::new()),
        Ok(ResumeAction::RetryCurrent(State::Allocated))
    );
}

#[test]
fn resume_to_aborted_is_always_allowed_on_a_live_task() {
    for plan in Plan::all() {
        for spec in plan.states.iter().filter(|s| !s.state.is_terminal()) {
            assert_eq!(
                validate_resume(plan.kind, spec.state, Some("Aborted"), &BTreeSet::new()),
                Ok(ResumeAction::Abort),
                "{} {}",
                plan.kind,
                spec.state
            );
        }
    }
}

#[test]
fn resume_refuses_a_target_whose_inputs_are_gone_and_names_the_output() {
    // PC1 layers are deleted once the replica is sealed; rewinding to PC1Done would need them.
    let available: BTreeSet<Output> = everything()
        .into_iter()
        .filter(|o| *o != Output::PC1Layers)
        .collect();
    let err = validate_resume(
        PlanKind::Sealer,
        State::PCSubmitted,
        Some("PC1Done"),
        &available,
    )
    .unwrap_err();
    assert_eq!(
        err,
        ResumeError::MissingInput {
            target: State::PC1Done,
            missing: Output::PC1Layers,
            producer: State::TicketAssigned
        }
    );
    let text = err.to_string();
    assert!(text.contains("needs PC1Layers"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(
        text.contains("Resume into TicketAssigned or earlier"),
        "{text}"
    );
    // Rewinding further, to where the layers are recomputed, is fine.
    assert_eq!(
        validate_resume(
            PlanKind::Sealer,
            State::PCSubmitted,
            Some("TreeDBuilt"),
            &available
        ),
        Ok(ResumeAction::Goto(State::TreeDBuilt))
    );
}

#[test]
fn resume_forward_past_missing_outputs_is_refused() {
    let available = BTreeSet::from([Output::Sector, Output::Deals]);
    let err = validate_resume(
        PlanKind::Sealer,
        State::DealsAcquired,
        Some("C2Done"),
        &available,
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ResumeError::MissingInput {
                missing: Output::Proof,
                producer: State::C1Done,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn an_ended_task_cannot_be_resumed() {
    for current in TERMINAL {
        let err = validate_resume(PlanKind::Sealer, current, Some("TreeDBuilt"), &everything())
            .unwrap_err();
        assert_eq!(err, ResumeError::TaskEnded { current });
        assert!(validate_resume(PlanKind::Sealer, current, None, &everything()).is_err());
    }
}

// ---- names and rendering ----

#[test]
fn unknown_names_list_the_valid_values() {
    assert_eq!(
        PlanKind::parse("sealing").unwrap_err().to_string(),
        "unknown plan \"sealing\"; valid values: sealer, snapup, rebuild, unseal"
    );
    let text = PlanKind::Unseal
        .plan()
        .parse_state("PC1Done")
        .unwrap_err()
        .to_string();
    assert_eq!(
        text,
        "unknown state of plan unseal \"PC1Done\"; valid values: Empty, Allocated, Unsealed, Finished, Aborted"
    );
}

#[test]
fn json_has_the_documented_shape_and_event_names() {
    let value: serde_json::Value = serde_json::from_str(&render::json(Plan::all())).unwrap();
    let plans = value["plans"].as_array().unwrap();
    assert_eq!(value.as_object().unwrap().len(), 1);
    let names: Vec<&str> = plans.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sealer", "snapup", "rebuild", "unseal"]);
    let sealer = &plans[0];
    let keys: BTreeSet<&str> = sealer
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["name", "initial", "terminal", "states", "transitions"])
    );
    assert_eq!(sealer["initial"], "Empty");
    assert_eq!(
        sealer["terminal"],
        serde_json::json!(["Finished", "Aborted"])
    );
    assert_eq!(
        sealer["transitions"][0],
        serde_json::json!({"from": "Empty", "event": "Allocate", "to": "Allocated"})
    );
    let events: BTreeSet<&str> = plans
        .iter()
        .flat_map(|p| p["transitions"].as_array().unwrap())
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    let expected: BTreeSet<&str> = [
        "Allocate",
        "AcquireDeals",
        "AddPiece",
        "BuildTreeD",
        "AssignTicket",
        "PC1",
        "PC2",
        "SubmitPC",
        "ReSubmitPC",
        "CheckPC",
        "Persist",
        "SubmitPersistance",
        "AssignSeed",
        "C1",
        "C2",
        "SubmitProof",
        "ReSubmitProof",
        "Finish",
        "AllocatedSnapUpSector",
        "SnapEncode",
        "SnapProve",
        "RePersist",
        "AllocatedRebuildSector",
        "CheckSealed",
        "SkipSnap",
        "AllocatedUnsealSector",
        "UnsealDone",
        "UploadPieceDone",
        "PC2NeedSyntheticProof",
        "SyntheticPoRep",
    ]
    .into();
    assert_eq!(events, expected);
    // The implicit abort edges are not listed.
    assert!(plans.iter().all(|p| {
        p["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["to"] != "Aborted")
    }));
}

#[test]
fn dot_and_markdown_cover_every_transition() {
    let dot = render::dot(Plan::all());
    let markdown = render::markdown(Plan::all());
    for plan in Plan::all() {
        for t in plan.transitions {
            assert!(dot.contains(&format!(
                "{0}_{1} -> {0}_{2} [label=\"{3}\"]",
                plan.kind, t.from, t.to, t.event
            )));
            assert!(markdown.contains(&format!("    {} --> {}: {}", t.from, t.to, t.event)));
        }
    }
    assert!(markdown.contains("resumeState\":\"Aborted\""));
    assert!(markdown.contains("resumeState\":\"TreeDBuilt\""));
}
