//! The manager as a party to the task: an outage waited out without spending retries, and a
//! sector aborted at the manager ending the task.

use super::*;

fn heartbeat_rules() -> Rules {
    Rules {
        manager_heartbeat: Some(Duration::from_secs(60)),
        manager_retry_max: Duration::from_secs(40),
        ..Rules::default()
    }
}

fn unavailable(message: &str) -> CallFailure {
    CallFailure {
        level: FailureLevel::Temporary,
        message: message.into(),
        code: None,
        unavailable: true,
        never_sent: false,
    }
}

#[test]
fn an_outage_is_waited_out_with_a_growing_back_off_and_spends_no_retry() {
    let spec = sealer();
    let rules = Rules {
        manager_retry_max: Duration::from_secs(40),
        ..Rules::default()
    };
    let status = at(State::PCSubmitted);
    let poll = Call::PollPreCommitState(SECTOR_ID);
    let down = answered(&poll, Err(unavailable("cannot reach the manager")));
    let first = decide_now(task(&spec), &status, &down);
    assert_eq!(first.wake, Wake::After(work::MANAGER_RETRY_MIN));
    assert_eq!(first.status.phase, Some(Phase::Waiting));
    assert_eq!(first.status.last_error, None, "no failure recorded");
    assert_eq!(first.status.attempt, 0);
    assert!(!has(&first, |e| matches!(e, Effect::Failure { .. })));
    assert!(event(&first, condition::MANAGER_UNAVAILABLE));
    assert_eq!(
        condition_of(&first.status, condition::MANAGER_UNAVAILABLE),
        Some(("True".into(), "NoAnswer".into()))
    );
    assert!(
        first
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("waiting for the manager")
    );

    // Before the retry time nothing is asked.
    let early = decide_at(task(&spec), &first.status, &Observed::default(), NOW + 2);
    assert_eq!(early.wake, Wake::After(Duration::from_secs(3)));
    // Each later wait is as long as the outage so far, up to the cap.
    let again = decide_at(task(&spec), &first.status, &down, NOW + 20);
    assert_eq!(again.wake, Wake::After(Duration::from_secs(20)));
    assert!(
        !event(&again, condition::MANAGER_UNAVAILABLE),
        "one Event per outage"
    );
    let capped = decide(task(&spec), &again.status, &down, NOW + 500, &rules);
    assert_eq!(capped.wake, Wake::After(Duration::from_secs(40)));
    assert_eq!(capped.status.last_error, None);

    // The manager answers: the task goes on and the outage is over.
    let pending = Ok(Reply::Poll(PollResp {
        state: OnChainState::Pending,
        desc: None,
    }));
    let back = decide_at(
        task(&spec),
        &capped.status,
        &answered(&poll, pending),
        NOW + 541,
    );
    assert_eq!(
        condition_of(&back.status, condition::MANAGER_UNAVAILABLE),
        Some(("False".into(), "Answered".into()))
    );
    assert!(event(&back, "ManagerAvailable"));
    assert_eq!(back.wake, Wake::After(Rules::default().poll_interval));

    // An answered error is a failure as before, not an outage.
    let refused = answered(&poll, Err(temporary("a logic error")));
    let failed = decide_now(task(&spec), &status, &refused);
    assert_eq!(
        failed.status.last_error.as_ref().map(|e| e.attempts),
        Some(1)
    );
    assert_eq!(
        condition_of(&failed.status, condition::MANAGER_UNAVAILABLE),
        None
    );
}

#[test]
fn the_heartbeat_ends_a_task_whose_sector_the_manager_aborted() {
    let spec = sealer();
    let rules = heartbeat_rules();
    let mut status = at(State::PC1Done);
    status.history.insert(
        0,
        HistoryEntry {
            state: State::TicketAssigned,
            entered: time(NOW - 100),
            duration_seconds: Some(90),
        },
    );
    status.step_pod = Some("t1-pc1done-0".into());
    let first = decide(task(&spec), &status, &Observed::default(), NOW, &rules);
    let Question::SectorState(call) = asked(&first) else {
        panic!("expected the heartbeat, got {:?}", first.wake);
    };
    let Call::ReportState { sector, report } = call.as_ref() else {
        panic!("expected a ReportState, got {call:?}");
    };
    assert_eq!(*sector, SECTOR_ID);
    assert_eq!(
        (
            report.state_change.prev.as_str(),
            report.state_change.next.as_str()
        ),
        ("TicketAssigned", "PC1Done"),
        "the state's own transition, sent again"
    );

    // Online: the step goes on, and the task wakes to ask again.
    let mut observed = pod(PodReport::Running, Some("node-a"), NOW - 5);
    observed.sector_state = Some(Ok(Reply::State(Some(
        crate::manager::wire::SectorStateResp {
            id: SECTOR_ID,
            finalized: false,
            abort_reason: Some(String::new()),
        },
    ))));
    let running = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(running.wake, Wake::After(Duration::from_secs(60)));
    assert_eq!(running.status.state, Some(State::PC1Done));
    // One sent moments ago (a step boundary right after a heartbeat): none asked, the step's
    // pod looked at straight away, the timed wake still set.
    let recent = Observed {
        heartbeat_recent: true,
        ..pod(PodReport::Running, Some("node-a"), NOW - 5)
    };
    let skipped = decide(task(&spec), &status, &recent, NOW, &rules);
    assert_eq!(skipped.wake, Wake::After(Duration::from_secs(60)));
    assert!(!matches!(skipped.wake, Wake::Ask(Question::SectorState(_))));

    // Aborted at the manager: the step pod goes, no ReportAborted (the sector is offline there).
    observed.sector_state = Some(Ok(Reply::State(Some(
        crate::manager::wire::SectorStateResp {
            id: SECTOR_ID,
            finalized: true,
            abort_reason: Some("aborted via CLI".into()),
        },
    ))));
    let aborted = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(aborted.status.state, Some(State::Aborted));
    assert!(has(&aborted, |e| *e == Effect::DeletePod("t1-pc1done-0".into())));
    assert!(!has(&aborted, |e| matches!(e, Effect::Tell(_))));
    let last = aborted.status.last_error.unwrap();
    assert_eq!(last.level, FailureLevel::Abort);
    assert_eq!(
        last.message,
        "the manager aborted the sector: aborted via CLI"
    );

    // A heartbeat without an answer changes nothing.
    observed.sector_state = Some(Err(unavailable("timeout")));
    let unanswered = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(unanswered.status.state, Some(State::PC1Done));
    // Off (the default): no heartbeat, a running step waits for its pod.
    let off = decide_now(
        task(&spec),
        &status,
        &pod(PodReport::Running, None, NOW - 5),
    );
    assert_eq!(off.wake, Wake::OnChange);
}

fn manager_says(finalized: bool, reason: &str) -> Option<Result<Reply, CallFailure>> {
    Some(Ok(Reply::State(Some(
        crate::manager::wire::SectorStateResp {
            id: SECTOR_ID,
            finalized,
            abort_reason: Some(reason.into()),
        },
    ))))
}

/// One `Finalized: true` answer for a sector whose only replica the workspace holds (a sealer
/// from PC2 on, a snap-up from its encode on) does not wipe it: a manager restored from an old
/// backup answers so for every sector under way. The step stops, the task pauses with its files
/// and says what to do; the same answer again changes nothing; the manager holding it online
/// again is recorded; `resumeState: Aborted` ends it as any abort.
#[test]
fn a_finalized_answer_keeps_a_replica_only_the_workspace_holds() {
    let rules = heartbeat_rules();
    let snapup = spec(json!({"plan": "snapup", "sectorSize": "2KiB"}));
    for (spec, state) in [(sealer(), State::C1Done), (snapup, State::SnapEncoded)] {
        let mut status = at(state);
        status.step_pod = Some("t1-pc1done-0".into());
        let mut observed = pod(PodReport::Running, Some("node-a"), NOW - 5);
        observed.sector_state = manager_says(true, "aborted via CLI");
        let kept = decide(task(&spec), &status, &observed, NOW, &rules);
        assert_eq!(
            (kept.status.state, kept.status.phase),
            (Some(state), Some(Phase::Paused))
        );
        let (value, reason) = condition_of(&kept.status, condition::FINALIZED_AT_MANAGER).unwrap();
        assert_eq!((value.as_str(), reason.as_str()), ("True", "ReplicaKept"));
        assert!(has(&kept, |e| *e == Effect::DeletePod("t1-pc1done-0".into())));
        assert!(!has(&kept, |e| matches!(
            e,
            Effect::CreateCleanupPod { .. }
        )));
        let message = kept.status.last_error.as_ref().unwrap().message.clone();
        assert!(
            message.contains("aborted (aborted via CLI)")
                && message.contains("only replica")
                && message.contains("resumeState: Aborted"),
            "{message}"
        );
        // Paused, it still hears the manager at each heartbeat.
        assert_eq!(kept.wake, Wake::After(Duration::from_secs(60)));

        let paused = kept.status;
        let mut again = Observed {
            sector_state: manager_says(true, "aborted via CLI"),
            ..Observed::default()
        };
        let same = decide(task(&spec), &paused, &again, NOW + 60, &rules);
        assert_eq!(same.status, paused);
        assert!(!has(&same, |e| matches!(e, Effect::WriteStatus)));
        assert_eq!(same.wake, Wake::After(Duration::from_secs(60)));

        again.sector_state = manager_says(false, "");
        let online = decide(task(&spec), &paused, &again, NOW + 120, &rules);
        let (value, reason) =
            condition_of(&online.status, condition::FINALIZED_AT_MANAGER).unwrap();
        assert_eq!((value.as_str(), reason.as_str()), ("False", "Online"));
        assert_eq!(
            online.status.phase,
            Some(Phase::Paused),
            "still the person's call"
        );

        let mut ended = spec.clone();
        ended.resume_state = Some("Aborted".into());
        let aborted = decide(
            task(&ended),
            &paused,
            &Observed::default(),
            NOW + 60,
            &rules,
        );
        assert_eq!(aborted.status.state, Some(State::Aborted));
    }
}

/// A task paused for a person still sends its heartbeat: a sector the manager aborts meanwhile
/// ends it (its workspace removed) instead of waiting for someone to look.
#[test]
fn a_paused_task_hears_a_manager_side_abort() {
    let rules = heartbeat_rules();
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.phase = Some(Phase::Paused);
    let asks = decide(task(&spec), &status, &Observed::default(), NOW, &rules);
    assert!(
        matches!(asks.wake, Wake::Ask(Question::SectorState(_))),
        "{:?}",
        asks.wake
    );
    let observed = Observed {
        sector_state: manager_says(true, "aborted via CLI"),
        ..Observed::default()
    };
    let aborted = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(aborted.status.state, Some(State::Aborted));
    // Without the heartbeat (off), a paused task waits for a change.
    let off = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(off.wake, Wake::OnChange);
    // Suspended, the same.
    let mut suspended = spec.clone();
    suspended.suspend = true;
    let asks = decide(task(&suspended), &status, &Observed::default(), NOW, &rules);
    assert!(matches!(asks.wake, Wake::Ask(Question::SectorState(_))));
}

/// A manager restarting refuses connections. A one-time allocation (an upgrade, a rebuild, an
/// unseal job) that never reached it lost nothing: it is asked again after the outage's back-off,
/// never paused. One that may have reached it (timed out) still pauses at the next try, as the
/// job the manager handed out may be lost with its answer.
#[test]
fn a_one_time_allocation_that_never_reached_the_manager_is_asked_again() {
    for plan in ["snapup", "rebuild", "unseal"] {
        let spec = spec(json!({"plan": plan, "sectorSize": "2KiB"}));
        let mut status = at(State::Empty);
        status.sector = None;
        status.outputs = None;
        let asking = decide_now(task(&spec), &status, &Observed::default());
        let call = asked_call(&asking).clone();
        assert!(asking.status.allocating.is_some(), "{plan}");

        let refused = CallFailure {
            never_sent: true,
            ..unavailable("cannot reach the manager: connection refused")
        };
        let waiting = decide_now(task(&spec), &asking.status, &answered(&call, Err(refused)));
        assert_eq!(
            waiting.status.allocating, None,
            "{plan}: nothing was handed out"
        );
        assert_eq!(waiting.status.phase, Some(Phase::Waiting), "{plan}");
        let later = decide_at(
            task(&spec),
            &waiting.status,
            &Observed::default(),
            NOW + 3600,
        );
        assert_eq!(asked_call(&later), &call, "{plan}: asked again");
        assert_eq!(later.status.allocating, asking.status.allocating, "{plan}");
        assert_eq!(later.effects.first(), Some(&Effect::WriteStatus), "{plan}");

        let timed_out = unavailable("no answer from the manager within 30s");
        let unheard = decide_now(
            task(&spec),
            &asking.status,
            &answered(&call, Err(timed_out)),
        );
        assert_eq!(
            unheard.status.allocating, asking.status.allocating,
            "{plan}"
        );
        let next = decide_at(
            task(&spec),
            &unheard.status,
            &Observed::default(),
            NOW + 3600,
        );
        assert_eq!(next.status.phase, Some(Phase::Paused), "{plan}");
    }
}
