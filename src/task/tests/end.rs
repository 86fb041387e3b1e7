//! The end of a task: ReportFinalized, workspace cleanup, TTL, deletion, unseal hand-back.

use super::*;

#[test]
fn a_landed_proof_finishes_the_sector_and_asks_to_report_it_finalized() {
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
    assert_eq!(asked_call(&finished), &Call::ReportFinalized(SECTOR_ID));
}

fn finalized_condition(status: &SealingTaskStatus) -> Option<(String, String)> {
    condition_of(status, condition::MANAGER_FINALIZED)
}

/// A finished task of `plan` whose ReportFinalized went unanswered: its spec, the status it
/// ended with, the call and the decision on the outage.
fn unanswered_report(plan: &str) -> (SealingTaskSpec, SealingTaskStatus, Call, Decision) {
    let spec = self::spec(json!({"plan": plan, "sectorSize": "2KiB"}));
    let mut ended = at(State::Finished);
    ended.node = Some("node-a".into());
    let ask = decide_now(task(&spec), &ended, &Observed::default());
    let call = asked_call(&ask).clone();
    assert_eq!(call, Call::ReportFinalized(SECTOR_ID), "{plan}");
    // No answer: the cleanup goes on and the report is tried again later.
    let outage = CallFailure {
        unavailable: true,
        code: None,
        ..temporary("cannot reach the manager")
    };
    let unanswered = decide_now(task(&spec), &ended, &answered(&call, Err(outage)));
    assert_eq!(
        asked(&unanswered),
        &Question::CleanupPod("t1-cleanup".into())
    );
    assert_eq!(
        finalized_condition(&unanswered.status),
        Some(("False".into(), "NotAnswered".into()))
    );
    (spec, ended, call, unanswered)
}

#[test]
fn every_finished_plan_reports_finalized_as_a_call_retried_until_answered() {
    for plan in ["sealer", "snapup", "rebuild", "unseal"] {
        let (spec, _, call, unanswered) = unanswered_report(plan);
        let waiting = decide_now(task(&spec), &unanswered.status, &Observed::default());
        assert_eq!(
            asked(&waiting),
            &Question::CleanupPod("t1-cleanup".into()),
            "{plan}: not asked again before the retry time"
        );
        let later = decide_at(
            task(&spec),
            &unanswered.status,
            &answered(&call, Ok(Reply::Done)),
            NOW + 61,
        );
        // The answer waits in memory for the cleanup's write, which records it with its own.
        assert_eq!(
            later.status, unanswered.status,
            "{plan}: nothing to write yet"
        );
        assert_eq!(
            finalized_condition(&known(&later)),
            Some(("True".into(), "Reported".into())),
            "{plan}"
        );
        assert_eq!(known(&later).not_before, None);
        // Told once: the next decision does not ask again.
        let memory = Observed {
            remembered: remembered(&later),
            ..Default::default()
        };
        let done = decide_now(task(&spec), &later.status, &memory);
        assert_eq!(asked(&done), &Question::CleanupPod("t1-cleanup".into()));
        let cleaned = Observed {
            cleanup_pod: Some(CleanupPod::Exited(0)),
            ..memory.clone()
        };
        let cleaned = decide_now(task(&spec), &later.status, &cleaned);
        assert_eq!(
            finalized_condition(&cleaned.status),
            Some(("True".into(), "Reported".into())),
            "{plan}: written with the workspace's removal"
        );
        assert!(has(&cleaned, |e| *e == Effect::DeleteTaskPods));
    }
}

#[test]
fn a_report_finalized_answer_lost_late_or_already_offline_is_settled() {
    for plan in ["sealer", "snapup", "rebuild", "unseal"] {
        let (spec, ended, call, unanswered) = unanswered_report(plan);
        // An answer kept in memory only (above) is lost with a restart: asked again, and
        // answered "already offline" (below).
        let restarted = decide_at(
            task(&spec),
            &unanswered.status,
            &Observed::default(),
            NOW + 62,
        );
        assert_eq!(asked_call(&restarted), &call, "{plan}");
        // With the workspace removed already, no write follows: the answer is written at once.
        let mut removed = unanswered.status.clone();
        status::set_condition(
            &mut removed,
            condition::WORKSPACE_CLEANED,
            "True",
            "Removed",
            "gone",
            NOW,
        );
        let answered_late = decide_at(
            task(&spec),
            &removed,
            &answered(&call, Ok(Reply::Done)),
            NOW + 61,
        );
        assert_eq!(
            finalized_condition(&answered_late.status),
            Some(("True".into(), "Reported".into())),
            "{plan}"
        );
        assert!(remembered(&answered_late).is_empty());

        // 11001: the manager holds the sector offline already; nothing left to tell.
        let offline = CallFailure {
            code: Some(11001),
            level: FailureLevel::Permanent,
            ..temporary("error code 11001: sector state not found")
        };
        let already = decide_now(task(&spec), &ended, &answered(&call, Err(offline)));
        assert_eq!(
            finalized_condition(&known(&already)),
            Some(("True".into(), "AlreadyOffline".into()))
        );
    }
}

#[test]
fn an_aborted_unseal_or_rebuild_reports_finalized_and_other_aborts_report_aborted() {
    let spec = self::spec(json!({"plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": "baga6ea4seaq", "offset": 0, "size": 2032}}));
    let mut aborted = at(State::Aborted);
    aborted.node = Some("node-a".into());
    let ask = decide_now(task(&spec), &aborted, &Observed::default());
    assert_eq!(asked_call(&ask), &Call::ReportFinalized(SECTOR_ID));
    // A rebuilt sector is proven on chain: ReportAborted would release its active deals.
    let rebuild = self::spec(json!({"plan": "rebuild", "sectorSize": "2KiB"}));
    let ask = decide_now(task(&rebuild), &aborted, &Observed::default());
    assert_eq!(asked_call(&ask), &Call::ReportFinalized(SECTOR_ID));
    let sealer = sealer();
    aborted.last_error = Some(crate::api::LastError {
        level: FailureLevel::Abort,
        state: State::PC1Done,
        message: "why".into(),
        attempts: 1,
        time: time(NOW - 5),
    });
    let ask = decide_now(task(&sealer), &aborted, &Observed::default());
    assert_eq!(
        asked_call(&ask),
        &Call::ReportAborted {
            sector: SECTOR_ID,
            reason: "why".into()
        },
        "any other aborted plan reports the sector aborted, with the recorded reason"
    );
}

#[test]
fn an_ended_task_removes_its_workspace_and_then_expires() {
    let mut spec = sealer();
    spec.ttl_seconds_after_finished = Some(60);
    let mut status = reported(at(State::Finished));
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
    // The pods go before the condition is written: a crash between the two cleans again
    // instead of leaving the step pods to a task that counts itself clean.
    assert_eq!(
        cleaned.effects,
        vec![Effect::DeleteTaskPods, Effect::WriteStatus],
        "{:?}",
        cleaned.effects
    );
    // Ended 10 s ago with a TTL of 60 s: 50 s to go, then deleted.
    assert_eq!(cleaned.wake, Wake::After(Duration::from_secs(50)));
    let later = decide_at(task(&spec), &cleaned.status, &Observed::default(), NOW + 60);
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
    assert_eq!(
        asked_call(&first),
        &Call::ReportAborted {
            sector: SECTOR_ID,
            reason: "the SealingTask was deleted".into()
        }
    );
    assert!(has(&first, |e| *e == Effect::DeletePod("t1-pc1done-0".into())));
    let call = asked_call(&first).clone();
    let told = decide_now(deleted, &first.status, &answered(&call, Ok(Reply::Done)));
    assert_eq!(asked(&told), &Question::CleanupPod("t1-cleanup".into()));
    let mut running = Observed {
        cleanup_pod: Some(CleanupPod::Running {
            created: Some(NOW - 30),
        }),
        remembered: remembered(&told),
        ..Default::default()
    };
    // A running cleanup pod's node is looked up: gone, the workspace went with it.
    assert_eq!(
        asked(&decide_now(deleted, &told.status, &running)),
        &Question::NodeExists("node-a".into())
    );
    running.nodes.insert("node-a".into(), true);
    let first = told;
    assert_eq!(
        decide_now(deleted, &first.status, &running).wake,
        Wake::CleanupPending
    );
    let done = Observed {
        cleanup_pod: Some(CleanupPod::Exited(0)),
        remembered: running.remembered.clone(),
        ..Default::default()
    };
    let released = decide_now(deleted, &first.status, &done);
    assert_eq!(released.wake, Wake::Release);
    assert_eq!(
        condition_of(&released.status, condition::MANAGER_FINALIZED),
        Some(("True".into(), "Reported".into())),
        "the report's answer is written with the cleanup, before the task goes"
    );
    deleted.deleted_at = Some(NOW - 601);
    let gave_up = decide_now(deleted, &first.status, &running);
    assert_eq!(gave_up.wake, Wake::Release);
    assert!(event(&gave_up, "WorkspaceLeft"));
}

/// A sealer deleted after its PreCommit went out is not abandoned: it goes on (here, polling
/// the chain) and says so once; the annotation lets the deletion abort it instead.
#[test]
fn a_sealer_deleted_past_its_precommit_finishes_first_unless_told_to_abort() {
    let spec = sealer();
    let mut deleted = task(&spec);
    deleted.deleted_at = Some(NOW - 5);
    let status = at(State::PCSubmitted);
    let held = decide_now(deleted, &status, &Observed::default());
    assert_ne!(held.status.state, Some(State::Aborted));
    assert!(matches!(asked_call(&held), Call::PollPreCommitState(_)));
    assert!(event(&held, "DeletionHeld"));
    let held_condition = held
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "DeletionHeld")
        .unwrap();
    assert_eq!(held_condition.status, "True");
    assert!(
        held_condition
            .message
            .contains("damocles.io/abort-on-delete=true"),
        "{}",
        held_condition.message
    );
    let again = decide_now(deleted, &held.status, &Observed::default());
    assert!(!event(&again, "DeletionHeld"), "said once");

    deleted.abort_on_delete = true;
    let aborted = decide_now(deleted, &held.status, &Observed::default());
    assert_eq!(aborted.status.state, Some(State::Aborted));
    assert!(matches!(asked_call(&aborted), Call::ReportAborted { .. }));

    // Before its PreCommit, a deletion stops it at once.
    let early = decide_now(
        Task {
            abort_on_delete: false,
            ..deleted
        },
        &at(State::PC2Done),
        &Observed::default(),
    );
    assert_eq!(early.status.state, Some(State::Aborted));
}

#[test]
fn an_aborted_unseal_hands_its_request_back() {
    let spec = spec(json!({
        "plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": "baga6ea4seaqa", "size": 2032},
        "resumeState": "Aborted"
    }));
    let mut status = at(State::Unsealed);
    status.outputs.as_mut().unwrap().unseal = Some(crate::api::UnsealTaken {
        piece_cid: "baga6ea4seaqa".into(),
        offset: 0,
        size: 2032,
        destinations: vec![],
    });
    status.outputs.as_mut().unwrap().committed = Some(crate::api::CommittedSector {
        comm_r: None,
        instance: "store".into(),
        path: Some("/store".into()),
    });
    let decision = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(decision.status.state, Some(State::Aborted));
    let call = asked_call(&decision).clone();
    assert!(
        matches!(&call, Call::AchieveUnsealSector { error, .. } if error.starts_with("aborted")),
        "{call:?}"
    );
    // Not answered: asked again after a back-off, before anything else is reported.
    let mut down = temporary("connection refused");
    down.unavailable = true;
    let waiting = decide_now(task(&spec), &decision.status, &answered(&call, Err(down)));
    assert!(matches!(waiting.wake, Wake::After(_)), "{:?}", waiting.wake);
    let later = decide_at(
        task(&spec),
        &waiting.status,
        &Observed::default(),
        NOW + 3600,
    );
    assert_eq!(asked_call(&later), &call);
    // Answered: recorded, then the sector's ReportFinalized.
    let handed = decide_at(
        task(&spec),
        &later.status,
        &answered(&call, Ok(Reply::Done)),
        NOW + 3600,
    );
    assert!(
        handed
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "UnsealHandedBack" && c.status == "True")
    );
    assert_eq!(asked_call(&handed), &Call::ReportFinalized(SECTOR_ID));
}

#[test]
fn an_unseal_allocation_is_kept_when_the_store_lookup_fails() {
    let spec = spec(json!({
        "plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": "baga6ea4seaqa", "size": 2032}
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

/// A huge error text (a manager's or a step's) is cut in the status, marked, on a character
/// boundary; a short one is kept whole.
#[test]
fn error_texts_in_the_status_are_bounded() {
    use crate::task::status::{STATUS_TEXT_LIMIT, bounded};
    assert_eq!(bounded("short", 10), "short");
    let long = "é".repeat(STATUS_TEXT_LIMIT);
    let cut = bounded(&long, STATUS_TEXT_LIMIT);
    assert!(cut.len() <= STATUS_TEXT_LIMIT && cut.ends_with(" [truncated]"));
    let mut status = at(State::PC1Done);
    status::set_phase(&mut status, Phase::Paused, "x".repeat(100_000), NOW);
    assert!(status.message.as_ref().unwrap().len() <= STATUS_TEXT_LIMIT);
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.message.len() <= STATUS_TEXT_LIMIT)
    );
}
