//! Submissions (the manager asked first, the intent recorded, reset when it holds no live
//! message) and the ticket guard.

use super::*;

pub(super) fn pc2_done() -> SealingTaskStatus {
    let mut status = at(State::PC2Done);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.comm_r = Some(crate::sector::CommR::from_bytes([3; 32]));
    outputs.comm_d = Some(crate::sector::CommD::from_bytes([4; 32]));
    status
}

fn poll_answer(state: OnChainState) -> Result<Reply, CallFailure> {
    Ok(Reply::Poll(PollResp { state, desc: None }))
}

fn submit_answer(res: SubmitResult, desc: Option<&str>) -> Result<Reply, CallFailure> {
    Ok(Reply::Submit(SubmitResp {
        res,
        desc: desc.map(str::to_string),
    }))
}

/// A first PreCommit of a task in PC2Done: the manager holds no message for it (Failed), so the
/// decision asks SubmitPreCommit.
fn sending_precommit(spec: &SealingTaskSpec) -> Decision {
    let poll = Call::PollPreCommitState(work::sector_id(SECTOR));
    decide_now(
        task(spec),
        &pc2_done(),
        &answered(&poll, poll_answer(OnChainState::Failed)),
    )
}

fn reset_of(call: &Call) -> bool {
    match call {
        Call::SubmitPreCommit { reset, .. } | Call::SubmitProof { reset, .. } => *reset,
        other => panic!("not a submission: {other:?}"),
    }
}

#[test]
fn a_submission_asks_the_manager_first_and_records_its_intent_before_it_is_sent() {
    let spec = sealer();
    let first = decide_now(task(&spec), &pc2_done(), &Observed::default());
    let poll = asked_call(&first).clone();
    assert_eq!(poll, Call::PollPreCommitState(work::sector_id(SECTOR)));
    assert_eq!(first.status.submitting, None);
    // damocles-manager answers Failed for a sector it has no message for: a first submission,
    // sent with reset (which a manager holding nothing ignores).
    let decision = decide_now(
        task(&spec),
        &pc2_done(),
        &answered(&poll, poll_answer(OnChainState::Failed)),
    );
    // The intent is written as the wait the PreCommit starts: PCSubmitted, waiting on the
    // chain, in the one write before the call.
    assert_eq!(
        decision.status.submitting,
        Some(Submission::SubmitPreCommit)
    );
    assert_eq!(decision.status.state, Some(State::PCSubmitted));
    assert_eq!(decision.status.phase, Some(Phase::Waiting));
    assert_eq!(decision.effects.last(), Some(&Effect::WriteStatus));
    let call = asked_call(&decision).clone();
    assert_eq!(call.method(), Method::SubmitPreCommit);
    assert!(reset_of(&call));
    // Accepted, nothing changes but the next question: the wait as written.
    let after = decide_now(
        task(&spec),
        &decision.status,
        &answered(&call, submit_answer(SubmitResult::Accepted, None)),
    );
    assert_eq!(after.status, decision.status);
    assert_eq!(
        asked_call(&after),
        &Call::PollPreCommitState(work::sector_id(SECTOR))
    );
    let waiting = decide_now(
        task(&spec),
        &after.status,
        &answered(asked_call(&after), poll_answer(OnChainState::Pending)),
    );
    assert_eq!(waiting.status, decision.status, "the wait needs no write");
    assert!(matches!(waiting.wake, Wake::After(_)));
    // Landed, the next state clears the intent.
    let landed = decide_now(
        task(&spec),
        &after.status,
        &answered(asked_call(&after), poll_answer(OnChainState::Landed)),
    );
    assert_eq!(landed.status.state, Some(State::PCLanded));
    assert_eq!(landed.status.submitting, None);
    // A live message the task did not send since it entered PC2Done (a rewind by hand): sent
    // without reset, so a different PreCommit is answered Mismatched instead of passing.
    let held = decide_now(
        task(&spec),
        &pc2_done(),
        &answered(&poll, poll_answer(OnChainState::Landed)),
    );
    assert!(!reset_of(asked_call(&held)));
}

#[test]
fn after_a_restart_a_recorded_submission_is_polled_before_it_is_sent_again() {
    let spec = sealer();
    let mut status = pc2_done();
    status.submitting = Some(Submission::SubmitPreCommit);
    let first = decide_now(task(&spec), &status, &Observed::default());
    let poll = asked_call(&first).clone();
    assert_eq!(poll, Call::PollPreCommitState(work::sector_id(SECTOR)));
    for state in [
        OnChainState::Pending,
        OnChainState::Packed,
        OnChainState::Landed,
    ] {
        let found = decide_now(task(&spec), &status, &answered(&poll, poll_answer(state)));
        assert_eq!(found.status.state, Some(State::PCSubmitted), "{state:?}");
    }
    // Never arrived, or its message failed (damocles-manager says Failed for both; older
    // managers NotFound for the first): sent once more, with reset.
    for state in [OnChainState::Failed, OnChainState::NotFound] {
        let lost = decide_now(task(&spec), &status, &answered(&poll, poll_answer(state)));
        let call = asked_call(&lost);
        assert_eq!(call.method(), Method::SubmitPreCommit, "{state:?}");
        assert!(reset_of(call), "{state:?}");
        assert_eq!(lost.status.state, Some(State::PCSubmitted), "{state:?}");
        assert!(has(&lost, |e| *e == Effect::WriteStatus), "{state:?}");
    }
}

/// Written as PCSubmitted before the call, a PreCommit the manager does not take (or does not
/// answer) goes back to PC2Done, where the answer is handled as it always was; the intent is kept
/// while the call may have reached the manager. A restart in PCSubmitted polls and, when the
/// manager holds nothing, goes back to send it.
#[test]
fn a_submission_written_as_its_wait_goes_back_when_the_manager_does_not_take_it() {
    let spec = sealer();
    let poll = Call::PollPreCommitState(work::sector_id(SECTOR));
    let intent = sending_precommit(&spec);
    assert_eq!(intent.status.state, Some(State::PCSubmitted));
    let call = asked_call(&intent).clone();

    let mismatched = submit_answer(SubmitResult::MismatchedSubmission, Some("other commR"));
    let refused = decide_now(task(&spec), &intent.status, &answered(&call, mismatched));
    assert_eq!(refused.status.state, Some(State::PC2Done));
    assert_eq!(refused.status.phase, Some(Phase::Paused));
    assert!(has(&refused, |e| *e == Effect::WriteStatus));

    let unanswered = decide_now(
        task(&spec),
        &intent.status,
        &answered(
            &call,
            Err(CallFailure {
                unavailable: true,
                ..temporary("connection reset")
            }),
        ),
    );
    assert_eq!(unanswered.status.state, Some(State::PC2Done));
    assert_eq!(unanswered.status.phase, Some(Phase::Waiting));
    assert_eq!(
        unanswered.status.submitting,
        Some(Submission::SubmitPreCommit),
        "it may have reached the manager"
    );

    // A restart before the call: PCSubmitted polls, finds nothing, goes back and sends it.
    let restarted = decide_now(
        task(&spec),
        &intent.status,
        &answered(&poll, poll_answer(OnChainState::NotFound)),
    );
    assert_eq!(restarted.status.state, Some(State::PC2Done));
    assert_eq!(asked_call(&restarted), &poll, "asked again before sending");
    // ...and after the call: the manager holds it, the wait goes on.
    let held = decide_now(
        task(&spec),
        &intent.status,
        &answered(&poll, poll_answer(OnChainState::Pending)),
    );
    assert_eq!(held.status, intent.status);
}

#[test]
fn a_message_failed_on_chain_is_resubmitted_with_reset() {
    let spec = sealer();
    let mut status = pc2_done();
    status.state = Some(State::PCSubmitted);
    let poll = Call::PollPreCommitState(work::sector_id(SECTOR));
    let failed = decide_now(
        task(&spec),
        &status,
        &answered(&poll, poll_answer(OnChainState::Failed)),
    );
    assert_eq!(failed.status.state, Some(State::PC2Done));
    assert_eq!(
        asked_call(&failed),
        &poll,
        "asked again before resubmitting"
    );
    let resubmit = decide_now(
        task(&spec),
        &failed.status,
        &answered(&poll, poll_answer(OnChainState::Failed)),
    );
    let call = asked_call(&resubmit);
    assert_eq!(call.method(), Method::SubmitPreCommit);
    assert!(reset_of(call));
}

#[test]
fn a_rejected_precommit_aborts_and_tells_the_manager() {
    let spec = sealer();
    let first = sending_precommit(&spec);
    let call = asked_call(&first).clone();
    let rejected = submit_answer(SubmitResult::Rejected, Some("bad"));
    let decision = decide_now(task(&spec), &first.status, &answered(&call, rejected));
    assert_eq!(decision.status.state, Some(State::Aborted));
    assert_eq!(decision.status.phase, Some(Phase::Aborted));
    assert_eq!(
        asked_call(&decision),
        &Call::ReportAborted {
            sector: SECTOR_ID,
            reason: "the manager refused: bad".into()
        }
    );
    assert!(event(&decision, "Aborted"));
    assert!(has(&decision, |e| *e == Effect::WriteStatus));
}

#[test]
fn a_proof_the_manager_finds_invalid_pauses_for_a_new_c2_instead_of_aborting() {
    let spec = sealer();
    let mut status = pc2_done();
    status.state = Some(State::C2Done);
    status.outputs.as_mut().unwrap().proof = Some(crate::api::Artifact {
        location: "/ws/proof".into(),
        sha256: "00".into(),
        size: 3,
        data: Some("AQID".into()),
    });
    let poll = Call::PollProofState(work::sector_id(SECTOR));
    let first = decide_now(
        task(&spec),
        &status,
        &answered(&poll, poll_answer(OnChainState::Failed)),
    );
    let call = asked_call(&first).clone();
    assert_eq!(call.method(), Method::SubmitProof);
    let invalid = submit_answer(
        SubmitResult::Rejected,
        Some("invalid proof (compute error?)"),
    );
    let decision = decide_now(task(&spec), &first.status, &answered(&call, invalid));
    assert_eq!(decision.status.phase, Some(Phase::Paused));
    assert_eq!(decision.status.state, Some(State::C2Done));
    let message = decision.status.message.clone().unwrap();
    assert!(
        message.contains("invalid proof") && message.contains("C1Done"),
        "{message}"
    );
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

/// The ticket's age comes from when it was handed out, recorded with it: a history trimmed of
/// its TicketAssigned entry (32 states kept) does not switch the guard off.
#[test]
fn a_ticket_is_aged_from_its_record_not_the_trimmed_history() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.history.retain(|h| h.state != State::TicketAssigned);
    let ticket = status.outputs.as_mut().unwrap().ticket.as_mut().unwrap();
    ticket.assigned_at = Some(time(NOW - 30 * 2600));
    let decision = decide_now(task(&spec), &status, &Observed::default());
    assert!(event(&decision, "TicketExpiring"));
    assert_eq!(decision.status.state, Some(State::TreeDBuilt));

    // AssignTicket records when.
    let mut drawing = at(State::TreeDBuilt);
    drawing.outputs.as_mut().unwrap().ticket = None;
    let ask = decide_now(task(&spec), &drawing, &Observed::default());
    let call = asked_call(&ask).clone();
    let ticket = crate::manager::wire::Ticket {
        ticket: crate::manager::wire::Randomness([7; 32]),
        epoch: 9200,
    };
    let drawn = decide_now(
        task(&spec),
        &drawing,
        &answered(&call, Ok(Reply::Ticket(ticket))),
    );
    // Written before the PC1 pod that seals with it is created: asked again after a crash, the
    // manager would draw another ticket while that pod lives on.
    let order: Vec<&str> = drawn
        .effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::WriteStatus => Some("write"),
            Effect::CreateStepPod(_) => Some("pod"),
            _ => None,
        })
        .collect();
    assert_eq!(order.first(), Some(&"write"), "{:?}", drawn.effects);
    let recorded = drawn.status.outputs.unwrap().ticket.unwrap();
    assert_eq!(recorded.assigned_at, Some(time(NOW)));
}

#[test]
fn a_precommit_that_reached_the_manager_is_not_rewound_for_an_old_ticket() {
    let spec = sealer();
    let mut status = ticket_drawn_long_ago(State::PC2Done);
    status.outputs = pc2_done().outputs;
    status.submitting = Some(Submission::SubmitPreCommit);
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
    for state in [OnChainState::Failed, OnChainState::NotFound] {
        let never = decide_now(task(&spec), &status, &answered(&poll, reply(state)));
        assert_eq!(never.status.state, Some(State::TreeDBuilt), "{state:?}");
    }
}

#[test]
fn an_upgrade_the_manager_is_already_committing_is_done() {
    let spec = spec(json!({"plan": "snapup", "sectorSize": "2KiB"}));
    let mut status = at(State::Persisted);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.comm_r = Some(crate::sector::CommR::from_bytes([3; 32]));
    outputs.comm_d = Some(crate::sector::CommD::from_bytes([4; 32]));
    outputs.store = Some(StoreRef {
        name: "persist".into(),
        path: "/persist".into(),
    });
    outputs.proof = Some(crate::api::Artifact {
        location: "/ws/proof".into(),
        sha256: "00".into(),
        size: 3,
        data: Some("AQID".into()),
    });
    let first = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&first).clone();
    assert_eq!(call.method(), Method::SubmitSnapUpProof);
    assert_eq!(first.status.submitting, Some(Submission::SubmitSnapUpProof));
    // A restart after the upgrade reached the manager: its one commit job per sector refuses
    // the repeat (damocles-manager never answers DuplicateSubmit here).
    let duplicate = CallFailure {
        code: Some(1),
        ..temporary(
            "Venus.SubmitSnapUpProof: the manager returned error 1: commit snapup sector: \
             duplicate commit job",
        )
    };
    let done = decide_now(task(&spec), &first.status, &answered(&call, Err(duplicate)));
    assert_eq!(done.status.state, Some(State::Finished));
    // Any other logic error is a temporary failure.
    let other = decide_now(
        task(&spec),
        &first.status,
        &answered(
            &call,
            Err(temporary("commit snapup sector: sector is not upgraded")),
        ),
    );
    assert_eq!(
        other.status.last_error.map(|e| e.level),
        Some(FailureLevel::Temporary)
    );
}
