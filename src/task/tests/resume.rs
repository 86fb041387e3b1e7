//! spec.resumeState and spec.suspend.

use super::*;

#[test]
fn a_refused_resume_is_recorded_once_cleared_and_the_task_goes_on() {
    let mut spec = sealer();
    spec.resume_state = Some("Finished".into());
    let status = at(State::C1Done);
    let decision = decide_now(task(&spec), &status, &Observed::default());
    let refused = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::RESUME_REJECTED)
        .expect("a ResumeRejected condition");
    assert_eq!(refused.observed_generation, Some(1));
    assert!(refused.message.contains("Finished"), "{}", refused.message);
    assert!(event(&decision, condition::RESUME_REJECTED));
    assert!(has(&decision, |e| *e == Effect::ClearResumeRequest));
    // ...and in the same decision the task carries on with its C2.
    assert_eq!(asked(&decision), &Question::StepPod("t1-c1done-0".into()));
    assert_eq!(decision.status.phase, Some(Phase::Running));

    // Seen again (the clearing failed), it is only cleared: no second Event.
    let again = decide_now(task(&spec), &decision.status, &Observed::default());
    assert!(!event(&again, condition::RESUME_REJECTED));
    assert!(has(&again, |e| *e == Effect::ClearResumeRequest));
}

#[test]
fn an_accepted_resume_rewinds_and_forgets_the_node_when_the_workspace_starts_over() {
    let mut spec = sealer();
    let mut status = at(State::PC1Done);
    status.phase = Some(Phase::Paused);
    status.node = Some("node-a".into());
    status.step_pod = Some("t1-pc1done-0".into());
    for (state, keep) in [(State::TreeDBuilt, true), (State::DealsAcquired, false)] {
        spec.resume_state = Some(state.to_string());
        let mut history = at(State::PieceAdded).history;
        history.extend(status.history.clone());
        let status = SealingTaskStatus {
            history,
            ..status.clone()
        };
        let decision = decide_now(task(&spec), &status, &Observed::default());
        let resumed = decision.status.last_resume.as_ref().unwrap();
        assert_eq!((resumed.from, resumed.to), (State::PC1Done, state));
        assert_eq!(decision.status.node.is_some(), keep, "{state}");
        assert!(has(&decision, |e| *e
            == Effect::DeletePod("t1-pc1done-0".into())));
        assert!(has(&decision, |e| *e == Effect::ClearResumeRequest));
        assert!(event(&decision, "Resumed"));
    }
}

/// A task paused for a failure stays paused for it across a suspend and an unsuspend: only a
/// resume runs it again.
#[test]
fn suspending_a_failed_task_does_not_unpause_it() {
    let mut spec = sealer();
    let mut status = at(State::PC1Done);
    let failed = decide_now(
        task(&spec),
        &status,
        &pod(
            PodReport::Failed {
                level: FailureLevel::Permanent,
                message: "bad proof type".into(),
                never_ran: false,
            },
            Some("node-a"),
            NOW - 5,
        ),
    );
    assert_eq!(failed.status.phase, Some(Phase::Paused));
    status = failed.status;
    spec.suspend = true;
    let suspended = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(
        suspended.status.message, status.message,
        "the failure stays"
    );
    spec.suspend = false;
    let unsuspended = decide_now(task(&spec), &suspended.status, &Observed::default());
    assert_eq!(unsuspended.status.phase, Some(Phase::Paused));
    assert_eq!(unsuspended.wake, Wake::OnChange);
    assert!(!event(&unsuspended, "Unsuspended"));
}

#[test]
fn suspend_stops_the_step_and_unsuspend_reruns_it_under_a_new_name() {
    let mut spec = sealer();
    spec.suspend = true;
    let mut status = at(State::PC1Done);
    status.step_pod = Some("t1-pc1done-0".into());
    let suspended = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(suspended.status.phase, Some(Phase::Paused));
    assert!(has(&suspended, |e| *e == Effect::ReleaseSlot));
    assert!(has(&suspended, |e| *e
        == Effect::DeletePod("t1-pc1done-0".into())));
    let twice = decide_now(task(&spec), &suspended.status, &Observed::default());
    assert!(twice.effects.is_empty());
    spec.suspend = false;
    let resumed = decide_now(task(&spec), &suspended.status, &Observed::default());
    assert_eq!(resumed.status.attempt, 1);
    // The stopped pod first: its replacement starts only once it is gone.
    assert_eq!(asked(&resumed), &Question::StepPod("t1-pc1done-0".into()));
    assert!(event(&resumed, "Unsuspended"));
    let mut gone = Observed::default();
    gone.pods.insert("t1-pc1done-0".into(), None);
    let next = decide_now(task(&spec), &resumed.status, &gone);
    assert_eq!(asked(&next), &Question::StepPod("t1-pc1done-1".into()));
}

/// A new task naming someone's sector cannot skip allocation with a resumeState: no state past
/// Empty is open to it, its first call is the plan's allocation, and Aborted at creation tells
/// the manager nothing about that sector.
#[test]
fn a_new_task_naming_a_sector_cannot_skip_allocation() {
    for (plan, target, allocate) in [
        ("sealer", "TreeDBuilt", Method::AllocateSector),
        ("sealer", "DealsAcquired", Method::AllocateSector),
        ("snapup", "TreeDBuilt", Method::AllocateSanpUpSector),
        ("rebuild", "TreeDBuilt", Method::AllocateRebuildSector),
        ("unseal", "Allocated", Method::AllocateUnsealSector),
    ] {
        let spec = spec(json!({"plan": plan, "sectorSize": "2KiB",
            "sector": {"miner": 1000, "number": 7}, "resumeState": target}));
        let fresh = SealingTaskStatus::default();
        let decision = decide_now(task(&spec), &fresh, &Observed::default());
        assert_eq!(
            condition_of(&decision.status, condition::RESUME_REJECTED).map(|c| c.0),
            Some("True".into()),
            "{plan} {target}"
        );
        assert_eq!(asked_call(&decision).method(), allocate, "{plan} {target}");
        assert_eq!(decision.status.sector, None);
    }
    let spec = spec(json!({"plan": "sealer", "sectorSize": "2KiB",
        "sector": {"miner": 1000, "number": 7}, "resumeState": "Aborted"}));
    let aborted = decide_now(
        task(&spec),
        &SealingTaskStatus::default(),
        &Observed::default(),
    );
    assert_eq!(aborted.status.state, Some(State::Aborted));
    let told = aborted.effects.iter().any(|e| matches!(e, Effect::Tell(_)))
        || matches!(&aborted.wake, Wake::Ask(Question::Manager(_)));
    assert!(
        !told,
        "nothing is said about a sector the task never owned: {aborted:?}"
    );
}
