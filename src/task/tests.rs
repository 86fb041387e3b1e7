//! Table tests of the task core: given a status, what was observed and the time, the decision.
//! Every rule the controller once held is here; the end-to-end tests prove only the wiring.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use super::*;
use crate::api::{HistoryEntry, Outputs, Randomness, SealingTaskSpec, StoreRef};
use crate::manager::wire::{
    AllocatedSector, OnChainState, PollResp, StoreBasicInfo, SubmitResp, SubmitResult,
};
use crate::manager::{Call, Method, Reply};
use crate::step::{NamedFile, StepOutputs, StepResult};

const NOW: i64 = 1_800_000_000;
const SECTOR: SectorRef = SectorRef {
    miner: 1000,
    number: 7,
};

fn spec(value: serde_json::Value) -> SealingTaskSpec {
    serde_json::from_value(value).unwrap()
}

fn sealer() -> SealingTaskSpec {
    spec(json!({"plan": "sealer", "sectorSize": "2KiB"}))
}

fn task(spec: &SealingTaskSpec) -> Task<'_> {
    Task {
        namespace: "farm",
        name: "t1",
        spec,
        generation: Some(1),
        deleted_at: None,
    }
}

fn time(at: i64) -> Time {
    Time(Timestamp::from_second(at).unwrap())
}

/// A task in `state` since 10 s ago, with its sector and a ticket drawn then.
fn at(state: State) -> SealingTaskStatus {
    SealingTaskStatus {
        state: Some(state),
        phase: Some(Phase::Running),
        sector: Some(SECTOR),
        history: vec![HistoryEntry {
            state,
            entered: time(NOW - 10),
            duration_seconds: None,
        }],
        outputs: Some(Outputs {
            ticket: Some(Randomness {
                value: "01".repeat(32),
                epoch: 9100,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn decide_now(task: Task<'_>, status: &SealingTaskStatus, observed: &Observed) -> Decision {
    decide(task, status, observed, NOW, &Rules::default())
}

fn asked(decision: &Decision) -> &Question {
    match &decision.wake {
        Wake::Ask(question) => question,
        other => panic!("expected a question, got {other:?}"),
    }
}

fn asked_call(decision: &Decision) -> &Call {
    match asked(decision) {
        Question::Manager(call) => call,
        other => panic!("expected a manager call, got {other:?}"),
    }
}

fn answered(call: &Call, reply: Result<Reply, CallFailure>) -> Observed {
    Observed {
        reply: Some((call.clone(), reply)),
        ..Default::default()
    }
}

fn temporary(message: &str) -> CallFailure {
    CallFailure {
        level: FailureLevel::Temporary,
        message: message.into(),
    }
}

fn has(decision: &Decision, wanted: impl Fn(&Effect) -> bool) -> bool {
    decision.effects.iter().any(wanted)
}

fn event(decision: &Decision, reason: &str) -> bool {
    has(
        decision,
        |e| matches!(e, Effect::Event { reason: r, .. } if r == reason),
    )
}

fn pod(report: PodReport, node: Option<&str>, created: i64) -> Observed {
    let mut observed = Observed::default();
    observed.pods.insert(
        "t1-pc1done-0".into(),
        Some(StepPod {
            report,
            node: node.map(str::to_string),
            created: Some(created),
            deleting: false,
        }),
    );
    observed
}

fn succeeded(outputs: StepOutputs) -> PodReport {
    PodReport::Succeeded(Box::new(StepResult {
        version: 1,
        step: StepKind::Pc2,
        sector: SECTOR,
        failure: None,
        outputs,
        reused: false,
        duration_ms: 1500,
    }))
}

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

fn pc2_done() -> SealingTaskStatus {
    let mut status = at(State::PC2Done);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.comm_r = Some(crate::sector::cid::sealed_cid(&[3; 32]));
    outputs.comm_d = Some(crate::sector::cid::data_cid(&[4; 32]));
    status
}

#[test]
fn a_submission_records_its_intent_first() {
    let spec = sealer();
    let decision = decide_now(task(&spec), &pc2_done(), &Observed::default());
    assert_eq!(
        decision.status.submitting.as_deref(),
        Some("SubmitPreCommit")
    );
    assert_eq!(decision.effects, vec![Effect::WriteStatus]);
    let call = asked_call(&decision).clone();
    assert_eq!(call.method(), Method::SubmitPreCommit);
    let accepted = Reply::Submit(SubmitResp {
        res: SubmitResult::Accepted,
        desc: None,
    });
    let after = decide_now(
        task(&spec),
        &decision.status,
        &answered(&call, Ok(accepted)),
    );
    assert_eq!(after.status.state, Some(State::PCSubmitted));
    assert_eq!(after.status.submitting, None);
    assert_eq!(
        asked_call(&after),
        &Call::PollPreCommitState(work::sector_id(SECTOR))
    );
}

#[test]
fn after_a_restart_a_recorded_submission_is_polled_before_it_is_sent_again() {
    let spec = sealer();
    let mut status = pc2_done();
    status.submitting = Some("SubmitPreCommit".into());
    let first = decide_now(task(&spec), &status, &Observed::default());
    let poll = asked_call(&first).clone();
    assert_eq!(poll, Call::PollPreCommitState(work::sector_id(SECTOR)));
    let pending = |state| Ok(Reply::Poll(PollResp { state, desc: None }));
    let found = decide_now(
        task(&spec),
        &status,
        &answered(&poll, pending(OnChainState::Pending)),
    );
    assert_eq!(found.status.state, Some(State::PCSubmitted));
    let lost = decide_now(
        task(&spec),
        &status,
        &answered(&poll, pending(OnChainState::NotFound)),
    );
    assert_eq!(asked_call(&lost).method(), Method::SubmitPreCommit);
    assert!(lost.effects.is_empty(), "the intent is already written");
}

#[test]
fn a_rejected_precommit_aborts_and_tells_the_manager() {
    let spec = sealer();
    let status = {
        let mut s = pc2_done();
        s.submitting = None;
        s
    };
    let first = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&first).clone();
    let rejected = Reply::Submit(SubmitResp {
        res: SubmitResult::Rejected,
        desc: Some("bad".into()),
    });
    let decision = decide_now(task(&spec), &first.status, &answered(&call, Ok(rejected)));
    assert_eq!(decision.status.state, Some(State::Aborted));
    assert_eq!(decision.status.phase, Some(Phase::Aborted));
    assert!(has(&decision, |e| matches!(
        e,
        Effect::Tell(Call::ReportAborted { .. })
    )));
    assert!(event(&decision, "Aborted"));
    assert!(has(&decision, |e| *e == Effect::WriteStatus));
}

/// A task in `state` whose ticket was drawn 2600 epochs ago (the margin starts at 2580).
fn ticket_drawn_long_ago(state: State) -> SealingTaskStatus {
    let mut status = at(state);
    let drawn = time(NOW - 30 * 2600);
    if state == State::TicketAssigned {
        status.history[0].entered = drawn;
    } else {
        status.history.insert(
            0,
            HistoryEntry {
                state: State::TicketAssigned,
                entered: drawn,
                duration_seconds: Some(1),
            },
        );
    }
    status
}

#[test]
fn an_expiring_ticket_rewinds_to_the_state_that_draws_it() {
    let spec = sealer();
    let decision = decide_now(
        task(&spec),
        &ticket_drawn_long_ago(State::TicketAssigned),
        &Observed::default(),
    );
    assert_eq!(decision.status.state, Some(State::TreeDBuilt));
    assert_eq!(decision.status.outputs.as_ref().unwrap().ticket, None);
    assert!(event(&decision, "TicketExpiring"));
    assert!(has(&decision, |e| *e == Effect::WriteStatus));
    // A fresh ticket is fine; a rebuild's ticket never expires this way.
    let fresh = decide_now(
        task(&spec),
        &at(State::TicketAssigned),
        &Observed::default(),
    );
    assert_eq!(fresh.status.state, Some(State::TicketAssigned));
    let abort = Rules {
        on_ticket_expiry: TicketExpiry::Abort,
        ..Rules::default()
    };
    let aborted = decide(
        task(&spec),
        &ticket_drawn_long_ago(State::PC1Done),
        &Observed::default(),
        NOW,
        &abort,
    );
    assert_eq!(aborted.status.state, Some(State::Aborted));
}

#[test]
fn a_precommit_that_reached_the_manager_is_not_rewound_for_an_old_ticket() {
    let spec = sealer();
    let mut status = ticket_drawn_long_ago(State::PC2Done);
    status.outputs = pc2_done().outputs;
    status.submitting = Some("SubmitPreCommit".into());
    let first = decide_now(task(&spec), &status, &Observed::default());
    let poll = asked_call(&first).clone();
    assert_eq!(poll.method(), Method::PollPreCommitState);
    let reply = |state| Ok(Reply::Poll(PollResp { state, desc: None }));
    let landed = decide_now(
        task(&spec),
        &status,
        &answered(&poll, reply(OnChainState::Landed)),
    );
    assert_eq!(landed.status.state, Some(State::PCSubmitted));
    let never = decide_now(
        task(&spec),
        &status,
        &answered(&poll, reply(OnChainState::NotFound)),
    );
    assert_eq!(never.status.state, Some(State::TreeDBuilt));
}

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
    assert_eq!(asked(&resumed), &Question::StepPod("t1-pc1done-1".into()));
    assert!(event(&resumed, "Unsuspended"));
}

#[test]
fn a_step_starts_when_a_slot_is_free_and_waits_when_none_is() {
    let rules = Rules {
        profiles: Profiles::parse("steps: {pc2: {concurrency: 1}}").unwrap(),
        ..Rules::default()
    };
    let spec = sealer();
    let status = at(State::PC1Done);
    let mut observed = Observed::default();
    observed.pods.insert("t1-pc1done-0".into(), None);
    let first = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(
        asked(&first),
        &Question::Slot {
            step: StepKind::Pc2,
            cap: 1
        }
    );
    observed.slot = Some((StepKind::Pc2, Err(SlotsFull { holders: 1, cap: 1 })));
    let full = decide(task(&spec), &status, &observed, NOW, &rules);
    assert_eq!(full.wake, Wake::After(SLOT_RECHECK));
    assert!(
        full.status
            .message
            .unwrap()
            .contains("waiting for a pc2 slot (1 of 1")
    );
    observed.slot = Some((StepKind::Pc2, Ok(())));
    let started = decide(task(&spec), &status, &observed, NOW, &rules);
    let Some(Effect::CreateStepPod(pod)) = started.effects.first() else {
        panic!("{:?}", started.effects);
    };
    assert_eq!(pod.name, "t1-pc1done-0");
    assert_eq!(pod.request.step, StepKind::Pc2);
    assert_eq!(started.status.step_pod.as_deref(), Some("t1-pc1done-0"));
    assert_eq!(started.status.phase, Some(Phase::Running));
    assert_eq!(started.wake, Wake::OnChange);
}

#[test]
fn a_finished_step_adds_its_outputs_and_the_plan_goes_on() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.step_pod = Some("t1-pc1done-0".into());
    let comm_r = crate::sector::cid::sealed_cid(&[9; 32]);
    let outputs = StepOutputs {
        comm_r: Some(comm_r.clone()),
        files: vec![NamedFile {
            role: "sealed".into(),
            file: crate::step::FileDigest {
                path: "/w/sealed".into(),
                sha256: "00".into(),
                size: 2048,
            },
        }],
        ..Default::default()
    };
    let observed = pod(succeeded(outputs), Some("node-a"), NOW - 100);
    let decision = decide_now(task(&spec), &status, &observed);
    assert_eq!(
        decision.status.outputs.clone().unwrap().comm_r,
        Some(comm_r)
    );
    assert_eq!(decision.status.node.as_deref(), Some("node-a"));
    assert_eq!(decision.status.state, Some(State::PC2Done));
    assert!(has(&decision, |e| *e == Effect::ReleaseSlot));
    assert!(has(&decision, |e| matches!(
        e,
        Effect::StepFinished {
            step: StepKind::Pc2,
            ..
        }
    )));
}

#[test]
fn pods_that_never_ran_are_replaced_without_spending_retries() {
    let spec = sealer();
    let status = at(State::PC1Done);
    let never = PodReport::Failed {
        level: FailureLevel::Temporary,
        message: "evicted".into(),
        never_ran: true,
    };
    let decision = decide_now(task(&spec), &status, &pod(never, Some("node-b"), NOW - 5));
    assert_eq!(decision.status.attempt, 1);
    assert_eq!(decision.status.avoid_node.as_deref(), Some("node-b"));
    assert_eq!(decision.status.last_error, None);
    assert!(has(&decision, |e| *e
        == Effect::DeletePod("t1-pc1done-0".into())));

    // A pod not started within its profile's start timeout is replaced the same way.
    let starting = PodReport::Starting {
        reason: "ErrImagePull: no such image".into(),
    };
    let slow = decide_now(task(&spec), &status, &pod(starting.clone(), None, NOW - 30));
    assert_eq!(slow.wake, Wake::After(SLOW_START));
    assert!(slow.status.message.unwrap().contains("ErrImagePull"));
    let stuck = decide_now(task(&spec), &status, &pod(starting, None, NOW - 601));
    assert_eq!(stuck.status.attempt, 1);
    assert!(
        stuck
            .status
            .message
            .unwrap()
            .contains("did not start within 600s")
    );
}

#[test]
fn a_workspace_whose_node_is_gone_pauses_as_critical() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.node = Some("node-a".into());
    let starting = PodReport::Starting {
        reason: "Pending".into(),
    };
    let mut observed = pod(starting, None, NOW - 5);
    let first = decide_now(task(&spec), &status, &observed);
    assert_eq!(asked(&first), &Question::NodeExists("node-a".into()));
    observed.nodes.insert("node-a".into(), false);
    let decision = decide_now(task(&spec), &status, &observed);
    assert_eq!(decision.status.phase, Some(Phase::Paused));
    let last = decision.status.last_error.unwrap();
    assert_eq!(last.level, FailureLevel::Critical);
    assert!(
        last.message.contains("resume at DealsAcquired"),
        "{}",
        last.message
    );
}

#[test]
fn a_lost_running_pod_is_started_again() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.step_pod = Some("t1-pc1done-0".into());
    let mut observed = Observed::default();
    observed.pods.insert("t1-pc1done-0".into(), None);
    let decision = decide_now(task(&spec), &status, &observed);
    assert!(event(&decision, "StepPodLost"));
    assert_eq!(decision.status.attempt, 1);
    assert_eq!(decision.status.step_pod, None);
}

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

#[test]
fn the_persist_store_is_reserved_once() {
    let spec = sealer();
    let mut status = at(State::PCLanded);
    let first = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(asked_call(&first).method(), Method::StoreReserveSpace);
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
