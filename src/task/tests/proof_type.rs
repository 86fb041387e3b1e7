//! The seal proof type: asked for in every variant of the task's size (or the one it pins), taken
//! from what the manager hands out, and used by every proof step and submission after that.

use super::*;
use crate::manager::wire::{AllocatedSector, Randomness as WireRandomness, SectorRebuildInfo};

fn rebuild() -> SealingTaskSpec {
    spec(json!({"plan": "rebuild", "sectorSize": "2KiB"}))
}

fn rebuild_info(proof_type: i64) -> SectorRebuildInfo {
    SectorRebuildInfo {
        sector: AllocatedSector {
            id: SECTOR_ID,
            proof_type,
        },
        ticket: crate::manager::wire::Ticket {
            ticket: WireRandomness([1; 32]),
            epoch: 9100,
        },
        pieces: None,
        pieces_v2: None,
        is_snap_up: false,
        upgrade_public: None,
    }
}

fn unallocated() -> SealingTaskStatus {
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    status
}

fn allowed_types(call: &Call) -> Option<Vec<i64>> {
    match call {
        Call::AllocateSector(spec) | Call::AllocateRebuildSector(spec) => {
            spec.allowed_proof_types.clone()
        }
        other => panic!("not an allocation: {other:?}"),
    }
}

/// The allocation answered with `reply` (the task asked first).
fn allocated(spec: &SealingTaskSpec, reply: Reply) -> Decision {
    let ask = decide_now(task(spec), &unallocated(), &Observed::default());
    let call = asked_call(&ask).clone();
    decide_now(task(spec), &unallocated(), &answered(&call, Ok(reply)))
}

/// A sector sealed as StackedDrg2KiBV1_1 (5) of a miner that has since turned synthetic PoRep on:
/// damocles-manager hands the rebuild out by the miner's current type (10) but with the sector's
/// own type, and only a task that asked for both variants gets it. It reseals with the sector's
/// type, so the same replica id and CommR; handed a synthetic sector, it runs the synthetic step.
#[test]
fn a_rebuild_asks_for_both_variants_and_reseals_with_the_type_it_is_handed() {
    let spec = rebuild();
    let ask = decide_now(task(&spec), &unallocated(), &Observed::default());
    assert_eq!(allowed_types(asked_call(&ask)), Some(vec![5, 10]));

    for (handed, synthetic) in [(5, false), (10, true)] {
        let decision = allocated(&spec, Reply::RebuildSector(Some(rebuild_info(handed))));
        let mut status = decision.status;
        assert_eq!(status.proof_type, Some(handed));
        assert_eq!(
            status.state,
            Some(State::Allocated),
            "{:?}",
            status.last_error
        );
        let request = crate::task::steps::step_request(
            task(&spec),
            &status,
            StepKind::Pc1,
            &Profiles::default(),
        )
        .unwrap();
        assert_eq!(request.synthetic_po_rep, synthetic, "type {handed}");
        // PC2 done, the plan branches on the type handed out, not on the spec.
        status.state = Some(State::PC1Done);
        status.action_index = 0;
        let pc2 = pod(
            succeeded(StepOutputs {
                comm_r: Some(crate::sector::CommR::from_bytes([3; 32])),
                ..Default::default()
            }),
            Some("node-a"),
            NOW - 100,
        );
        let after = decide_now(task(&spec), &status, &pc2);
        let expected = if synthetic {
            State::SyntheticPoRepNeeded
        } else {
            State::PC2Done
        };
        assert_eq!(after.status.state, Some(expected), "type {handed}");
    }
}

/// A sealer takes its miner's current type: the PreCommit and WaitSeed carry it.
#[test]
fn a_sealer_submits_and_waits_with_the_type_it_was_handed() {
    let spec = sealer();
    let decision = allocated(
        &spec,
        Reply::Sector(Some(AllocatedSector {
            id: SECTOR_ID,
            proof_type: 10,
        })),
    );
    assert_eq!(decision.status.proof_type, Some(10));

    let mut status = super::submit::pc2_done();
    status.proof_type = Some(10);
    let poll = Call::PollPreCommitState(work::sector_id(SECTOR));
    let failed = Ok(Reply::Poll(crate::manager::wire::PollResp {
        state: crate::manager::wire::OnChainState::Failed,
        desc: None,
    }));
    let submit = decide_now(task(&spec), &status, &answered(&poll, failed));
    match asked_call(&submit) {
        Call::SubmitPreCommit { sector, .. } => assert_eq!(sector.proof_type, 10),
        other => panic!("{other:?}"),
    }
    status.state = Some(State::PersistanceSubmitted);
    let wait = decide_now(task(&spec), &status, &Observed::default());
    match asked_call(&wait) {
        Call::WaitSeed { proof_type, .. } => assert_eq!(*proof_type, 10),
        other => panic!("{other:?}"),
    }
}

/// A pinned type asks only for it; while nothing comes, the task says why it may never come.
#[test]
fn a_pinned_type_is_the_only_one_asked_for_and_the_wait_says_so() {
    let spec = spec(json!({"plan": "sealer", "sectorSize": "2KiB", "syntheticPoRep": true}));
    let ask = decide_now(task(&spec), &unallocated(), &Observed::default());
    let call = asked_call(&ask).clone();
    assert_eq!(allowed_types(&call), Some(vec![10]));
    let waiting = decide_now(
        task(&spec),
        &unallocated(),
        &answered(&call, Ok(Reply::Sector(None))),
    );
    assert_eq!(waiting.status.phase, Some(Phase::Waiting));
    let message = waiting.status.message.unwrap();
    assert!(
        message.contains("spec.syntheticPoRep: true asks only for proof type 10")
            && message.contains("UseSyntheticPoRep"),
        "{message}"
    );
    // Unpinned, the wait is plain.
    let plain = sealer();
    let ask = decide_now(task(&plain), &unallocated(), &Observed::default());
    let call = asked_call(&ask).clone();
    let waiting = decide_now(
        task(&plain),
        &unallocated(),
        &answered(&call, Ok(Reply::Sector(None))),
    );
    assert_eq!(
        waiting.status.message.as_deref(),
        Some("Empty: waiting on manager AllocateSector")
    );
}

/// A type this operator does not seal at the task's size (another size, NI-PoRep): the sector is
/// kept (deleting the task hands it back) and the task pauses naming the type.
#[test]
fn a_type_this_operator_cannot_seal_pauses_and_keeps_the_sector() {
    let spec = rebuild();
    for handed in [8, 18] {
        let decision = allocated(&spec, Reply::RebuildSector(Some(rebuild_info(handed))));
        assert_eq!(decision.status.sector, Some(SECTOR));
        assert_eq!(decision.status.proof_type, None);
        let error = decision.status.last_error.unwrap();
        assert_eq!(error.level, FailureLevel::Permanent);
        assert!(
            error
                .message
                .contains(&format!("with seal proof type {handed}, which is not one")),
            "{}",
            error.message
        );
    }
}

/// A task allocated before the type was recorded keeps sealing with the one it asked for.
#[test]
fn a_task_allocated_before_the_type_was_recorded_keeps_its_spec_type() {
    let spec = spec(json!({"plan": "sealer", "sectorSize": "2KiB", "syntheticPoRep": true}));
    let status = at(State::PC1Done);
    assert_eq!(crate::task::proof_type(&spec, &status), 10);
    assert_eq!(crate::task::proof_type(&sealer(), &status), 5);
}
