//! Walking the plan: allocation, manager work chaining through states, waits, failures.

use super::*;

#[test]
fn a_new_task_enters_empty_and_asks_for_a_sector() {
    let spec = sealer();
    let decision = decide_now(
        task(&spec),
        &SealingTaskStatus::default(),
        &Observed::default(),
    );
    assert_eq!(decision.status.state, Some(State::Empty));
    assert_eq!(decision.status.history.len(), 1);
    assert!(matches!(asked_call(&decision), Call::AllocateSector(_)));
    // The first entry is written together with the work that follows, not on its own.
    assert!(!has(&decision, |e| *e == Effect::WriteStatus));
}

#[test]
fn an_allocated_sector_is_written_before_the_next_call_and_manager_work_chains() {
    let spec = sealer();
    let first = decide_now(
        task(&spec),
        &SealingTaskStatus::default(),
        &Observed::default(),
    );
    let call = asked_call(&first).clone();
    let allocated = Reply::Sector(Some(AllocatedSector {
        id: work::sector_id(SECTOR),
        proof_type: 5,
    }));
    let second = decide_now(task(&spec), &first.status, &answered(&call, Ok(allocated)));
    assert_eq!(second.status.sector, Some(SECTOR));
    assert_eq!(second.status.sector_name, Some(SECTOR.to_string()));
    assert!(has(&second, |e| *e == Effect::WriteStatus));
    // Allocated -> DealsAcquired (no deals asked for) -> the add-piece step's pod is looked up.
    assert_eq!(second.status.state, Some(State::DealsAcquired));
    assert_eq!(
        asked(&second),
        &Question::StepPod("t1-dealsacquired-0".into())
    );
    assert!(has(&second, |e| matches!(
        e,
        Effect::Transition {
            event: Some(crate::plan::Event::Allocate),
            to: State::Allocated,
            ..
        }
    )));
}

#[test]
fn nothing_to_hand_out_waits_a_poll_interval() {
    let spec = sealer();
    let first = decide_now(
        task(&spec),
        &SealingTaskStatus::default(),
        &Observed::default(),
    );
    let call = asked_call(&first).clone();
    let decision = decide_now(
        task(&spec),
        &first.status,
        &answered(&call, Ok(Reply::Sector(None))),
    );
    assert_eq!(decision.wake, Wake::After(Rules::default().poll_interval));
    assert_eq!(decision.status.phase, Some(Phase::Waiting));
    assert_eq!(
        decision.status.message.as_deref(),
        Some("Empty: waiting on manager AllocateSector")
    );
}

#[test]
fn temporary_failures_back_off_and_then_pause() {
    let spec = sealer();
    let status = at(State::TreeDBuilt);
    let first = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&first).clone();
    assert_eq!(call, Call::AssignTicket(work::sector_id(SECTOR)));
    let retry = decide_now(
        task(&spec),
        &status,
        &answered(&call, Err(temporary("down"))),
    );
    assert_eq!(retry.wake, Wake::After(Duration::from_secs(60)));
    assert_eq!(retry.status.not_before, Some(time(NOW + 60)));
    assert_eq!(retry.status.attempt, status.attempt + 1);
    assert_eq!(retry.status.phase, Some(Phase::Waiting));
    assert!(event(&retry, "Retrying"));
    assert_eq!(retry.status.last_error.as_ref().unwrap().attempts, 1);

    // Before not_before nothing happens at all.
    let early = decide_now(task(&spec), &retry.status, &Observed::default());
    assert_eq!(early.wake, Wake::After(Duration::from_secs(60)));
    assert!(early.effects.is_empty());

    // The fifth failure of the same state pauses as permanent, with the valid resume targets.
    let mut worn = status.clone();
    worn.last_error = retry.status.last_error.clone();
    worn.last_error.as_mut().unwrap().attempts = 4;
    let paused = decide_now(task(&spec), &worn, &answered(&call, Err(temporary("down"))));
    assert_eq!(paused.wake, Wake::OnChange);
    assert_eq!(paused.status.phase, Some(Phase::Paused));
    let last = paused.status.last_error.as_ref().unwrap();
    assert_eq!((last.level, last.attempts), (FailureLevel::Permanent, 5));
    let failed = paused
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed");
    assert_eq!(failed.map(|c| c.status.as_str()), Some("True"));
    let message = paused.status.message.clone().unwrap();
    assert!(message.contains("Aborted ends the task"), "{message}");
    assert!(event(&paused, "Paused"));
}

#[test]
fn the_persist_store_is_reserved_once() {
    let spec = sealer();
    let mut status = at(State::PCLanded);
    let first = decide_now(task(&spec), &status, &Observed::default());
    assert!(
        matches!(
            asked_call(&first),
            Call::StoreReserveSpace { size: 4096, .. }
        ),
        "twice the 2KiB sector, as damocles-worker asks: {:?}",
        asked_call(&first)
    );
    status.outputs.as_mut().unwrap().store = Some(StoreRef {
        name: "persist".into(),
        path: "/persist".into(),
    });
    let reserved = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(
        asked(&reserved),
        &Question::StepPod("t1-pclanded-0".into()),
        "straight to the persist step"
    );
}
