//! Submissions (intent first, polled after a restart) and the ticket guard.

use super::*;

pub(super) fn pc2_done() -> SealingTaskStatus {
    let mut status = at(State::PC2Done);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.comm_r = Some(crate::sector::CommR::from_bytes([3; 32]));
    outputs.comm_d = Some(crate::sector::CommD::from_bytes([4; 32]));
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
