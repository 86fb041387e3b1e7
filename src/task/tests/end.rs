//! The end of a task: ReportFinalized, workspace cleanup, TTL, deletion, unseal hand-back.

use super::*;

#[test]
fn finished_sealing_plans_report_finalized_and_rebuilds_do_not() {
    let spec = sealer();
    let status = at(State::ProofSubmitted);
    let first = decide_now(task(&spec), &status, &Observed::default());
    let poll = asked_call(&first).clone();
    let landed = Ok(Reply::Poll(PollResp {
        state: OnChainState::Landed,
        desc: None,
    }));
    let finished = decide_now(task(&spec), &status, &answered(&poll, landed));
    assert_eq!(finished.status.state, Some(State::Finished));
    assert_eq!(finished.status.phase, Some(Phase::Finished));
    assert!(has(&finished, |e| matches!(
        e,
        Effect::Tell(Call::ReportFinalized(_))
    )));
    for (plan, reports) in [("sealer", true), ("snapup", true), ("rebuild", false)] {
        let spec = self::spec(json!({"plan": plan, "sectorSize": "2KiB"}));
        let rules = Rules::default();
        let observed = Observed::default();
        let turn = Turn {
            task: task(&spec),
            rules: &rules,
            observed: &observed,
            now: NOW,
            status: at(State::Finished),
            effects: Vec::new(),
            reply_taken: false,
        };
        assert_eq!(
            work::prove::finalized_report(&turn).is_some(),
            reports,
            "{plan}"
        );
    }
}

#[test]
fn an_ended_task_removes_its_workspace_and_then_expires() {
    let mut spec = sealer();
    spec.ttl_seconds_after_finished = Some(60);
    let mut status = at(State::Finished);
    status.node = Some("node-a".into());
    let ask = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(asked(&ask), &Question::CleanupPod("t1-cleanup".into()));
    let mut observed = Observed {
        cleanup_pod: Some(CleanupPod::Absent),
        ..Default::default()
    };
    let create = decide_now(task(&spec), &status, &observed);
    assert_eq!(
        create.effects,
        vec![
            Effect::Log {
                warning: false,
                message: "removing the workspace on node node-a".into()
            },
            Effect::CreateCleanupPod {
                name: "t1-cleanup".into(),
                node: "node-a".into()
            }
        ]
    );
    observed.cleanup_pod = Some(CleanupPod::Exited(3));
    let failed = decide_now(task(&spec), &status, &observed);
    assert_eq!(failed.wake, Wake::After(CLEANUP_RETRY));
    observed.cleanup_pod = Some(CleanupPod::Exited(0));
    let cleaned = decide_now(task(&spec), &status, &observed);
    assert!(has(&cleaned, |e| *e == Effect::DeleteTaskPods));
    // Ended 10 s ago with a TTL of 60 s: 50 s to go, then deleted.
    assert_eq!(cleaned.wake, Wake::After(Duration::from_secs(50)));
    let later = decide(
        task(&spec),
        &cleaned.status,
        &Observed::default(),
        NOW + 60,
        &Rules::default(),
    );
    assert!(has(&later, |e| *e == Effect::DeleteTask));
}

#[test]
fn a_deleted_task_is_stopped_told_and_cleaned_before_it_is_released() {
    let spec = sealer();
    let mut deleted = task(&spec);
    deleted.deleted_at = Some(NOW - 5);
    let mut status = at(State::PC1Done);
    status.node = Some("node-a".into());
    status.step_pod = Some("t1-pc1done-0".into());
    let first = decide_now(deleted, &status, &Observed::default());
    assert_eq!(first.status.state, Some(State::Aborted));
    assert!(has(&first, |e| matches!(
        e,
        Effect::Tell(Call::ReportAborted { .. })
    )));
    assert!(has(&first, |e| *e == Effect::DeletePod("t1-pc1done-0".into())));
    let running = Observed {
        cleanup_pod: Some(CleanupPod::Running),
        ..Default::default()
    };
    assert_eq!(
        decide_now(deleted, &first.status, &running).wake,
        Wake::CleanupPending
    );
    let done = Observed {
        cleanup_pod: Some(CleanupPod::Exited(0)),
        ..Default::default()
    };
    assert_eq!(
        decide_now(deleted, &first.status, &done).wake,
        Wake::Release
    );
    deleted.deleted_at = Some(NOW - 601);
    let gave_up = decide_now(deleted, &first.status, &running);
    assert_eq!(gave_up.wake, Wake::Release);
    assert!(event(&gave_up, "WorkspaceLeft"));
}

#[test]
fn an_aborted_unseal_hands_its_request_back() {
    let spec = spec(json!({
        "plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": "baga6ea4seaqa", "size": 2032, "destination": "file:///out"},
        "resumeState": "Aborted"
    }));
    let mut status = at(State::Unsealed);
    status.outputs.as_mut().unwrap().committed = Some(crate::api::CommittedSector {
        comm_r: None,
        instance: "store".into(),
        path: Some("/store".into()),
    });
    let decision = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(decision.status.state, Some(State::Aborted));
    assert!(has(&decision, |e| matches!(
        e,
        Effect::Tell(Call::AchieveUnsealSector { error, .. }) if error.starts_with("aborted")
    )));
}

#[test]
fn an_unseal_allocation_is_kept_when_the_store_lookup_fails() {
    let spec = spec(json!({
        "plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": "baga6ea4seaqa", "size": 2032, "destination": "file:///out"}
    }));
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    status.outputs = Some(Outputs {
        committed: Some(crate::api::CommittedSector {
            comm_r: None,
            instance: "store".into(),
            path: None,
        }),
        ..Default::default()
    });
    status.sector = Some(SECTOR);
    let first = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&first).clone();
    assert_eq!(
        call,
        Call::StoreBasicInfo {
            instance: "store".into()
        }
    );
    let known = Reply::Store(Some(StoreBasicInfo {
        name: "store".into(),
        path: "/mnt/store".into(),
        strict: false,
        read_only: false,
        weight: 1,
        meta: None,
    }));
    let resolved = decide_now(task(&spec), &status, &answered(&call, Ok(known)));
    let committed = resolved.status.outputs.unwrap().committed.unwrap();
    assert_eq!(committed.path.as_deref(), Some("/mnt/store"));
    let failed = decide_now(
        task(&spec),
        &status,
        &answered(&call, Err(temporary("down"))),
    );
    assert_eq!(
        failed.status.sector,
        Some(SECTOR),
        "the allocation stays recorded"
    );
}
