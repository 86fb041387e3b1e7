//! Rebuild of a snap-upgraded sector: sealed again as committed capacity, then upgraded again
//! with the manager's deals, persisted and reported as the upgraded replica.

use super::*;
use crate::manager::wire::{
    AllocatedSector, CidJson, DealInfo, PieceInfo, SectorPiece, SectorPublicInfo,
    SectorRebuildInfo, Ticket,
};
use crate::sector::CommR;

fn rebuild() -> SealingTaskSpec {
    spec(json!({"plan": "rebuild", "sectorSize": "2KiB", "sector": {"miner": 1000, "number": 7}}))
}

fn upgraded_info() -> SectorRebuildInfo {
    SectorRebuildInfo {
        sector: AllocatedSector {
            id: SECTOR_ID,
            proof_type: 5,
        },
        ticket: Ticket {
            ticket: crate::manager::wire::Randomness([1; 32]),
            epoch: 9100,
        },
        pieces: None,
        pieces_v2: Some(vec![SectorPiece {
            piece: PieceInfo {
                size: 2048,
                piece_cid: CidJson {
                    cid: "baga6ea4seaqdeal".into(),
                },
            },
            deal_info: Some(DealInfo {
                deal_id: 3,
                payload_size: 2000,
                is_builtin_market: true,
                ..Default::default()
            }),
        }]),
        is_snap_up: true,
        upgrade_public: Some(SectorPublicInfo {
            comm_r: [3; 32],
            sealed_cid: CidJson {
                cid: "bagboea4b5abc".into(),
            },
            activation: 100,
            expiration: 200,
        }),
    }
}

fn allocated_status() -> SealingTaskStatus {
    let spec = rebuild();
    let mut status = at(State::Empty);
    status.outputs = None;
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    assert!(matches!(call, Call::AllocateRebuildSector(_)), "{call:?}");
    let reply = Reply::RebuildSector(Some(upgraded_info()));
    decide_now(task(&spec), &status, &answered(&call, Ok(reply))).status
}

#[test]
fn an_upgraded_sector_is_sealed_again_as_committed_capacity_then_upgraded_with_its_deals() {
    let spec = rebuild();
    let mut status = allocated_status();
    let key = CommR::from_bytes([3; 32]);
    let outputs = status.outputs.clone().unwrap();
    assert_eq!(outputs.sector_key, Some(key), "UpgradePublic's CommR");
    assert_eq!(outputs.pieces.len(), 1);
    assert_eq!(status.state, Some(State::Allocated));

    let request = |status: &SealingTaskStatus, step| {
        crate::task::steps::step_request(task(&spec), status, step, &Profiles::default()).unwrap()
    };
    assert_eq!(
        request(&status, StepKind::AddPiece).inputs.pieces,
        vec![],
        "the re-seal is committed capacity"
    );
    status.state = Some(State::SealedChecked);
    let pieces = request(&status, StepKind::AddPiece).inputs.pieces;
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].cid.as_deref(), Some("baga6ea4seaqdeal"));
    assert_eq!(pieces[0].payload_size, Some(2000));

    status.state = Some(State::SnapTreeDBuilt);
    let cc = request(&status, StepKind::SnapEncode)
        .inputs
        .cc_sector
        .unwrap();
    assert_eq!(cc.comm_r, Some(key));
    assert_eq!(
        cc.sealed,
        std::path::PathBuf::from("/var/lib/damocles/workspace/farm/t1/sealed/s-t01000-7"),
        "the replica sealed again in the task's workspace"
    );
}

#[test]
fn a_resealed_key_other_than_the_managers_pauses_the_rebuild() {
    let spec = rebuild();
    let mut status = allocated_status();
    status.state = Some(State::PC1Done);
    let sealed = |comm_r: [u8; 32]| {
        pod(
            succeeded(StepOutputs {
                comm_r: Some(CommR::from_bytes(comm_r)),
                ..Default::default()
            }),
            Some("node-a"),
            NOW - 100,
        )
    };
    let wrong = decide_now(task(&spec), &status, &sealed([4; 32]));
    let error = wrong.status.last_error.unwrap();
    assert_eq!(error.level, FailureLevel::Permanent);
    assert!(error.message.contains("sector key"), "{}", error.message);
    let right = decide_now(task(&spec), &status, &sealed([3; 32]));
    assert_eq!(right.status.state, Some(State::PC2Done));
    assert!(right.status.last_error.is_none());
}

#[test]
fn a_rebuilt_upgraded_sector_is_reported_by_its_updated_replica() {
    let spec = rebuild();
    let mut status = allocated_status();
    status.state = Some(State::Persisted);
    status.action_index = 0;
    status.outputs.as_mut().unwrap().store = Some(StoreRef {
        name: "store-1".into(),
        path: "/mnt/store-1".into(),
    });
    let ask = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(
        asked_call(&ask),
        &Call::SubmitPersistedEx {
            sector: SECTOR_ID,
            instance: "store-1".into(),
            upgrade: true
        }
    );
}

/// A v0.9-era sector's deals come as legacy `Pieces`: sealed in, as damocles-worker seals them
/// (not rebuilt as committed capacity, which would be another replica).
#[test]
fn a_rebuild_seals_in_the_legacy_deals_of_a_v0_9_sector() {
    use crate::manager::wire::{LegacyDeal, LegacyPieceInfo};
    let spec = rebuild();
    let mut info = upgraded_info();
    info.upgrade_public = None;
    info.is_snap_up = false;
    info.pieces_v2 = None;
    info.pieces = Some(vec![LegacyDeal {
        id: 11,
        payload_size: 900,
        piece: LegacyPieceInfo {
            size: 1024,
            offset: 0,
            cid: CidJson {
                cid: "baga6ea4seaqlegacy".into(),
            },
        },
    }]);
    let mut status = at(State::Empty);
    status.outputs = None;
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    let reply = Reply::RebuildSector(Some(info));
    let status = decide_now(task(&spec), &status, &answered(&call, Ok(reply))).status;
    let pieces = crate::task::steps::step_request(
        task(&spec),
        &status,
        StepKind::AddPiece,
        &Profiles::default(),
    )
    .unwrap()
    .inputs
    .pieces;
    assert_eq!(pieces.len(), 1);
    assert_eq!(pieces[0].cid.as_deref(), Some("baga6ea4seaqlegacy"));
    assert_eq!(pieces[0].payload_size, Some(900));
}

/// A sector the manager handed out is the task's even when it is not the one spec.sector asked
/// for: the answer is recorded (and written at once), the task pauses naming both, and a resume
/// goes on with it instead of asking for another one-time hand-out.
#[test]
fn a_handed_out_sector_other_than_spec_sector_is_kept_not_lost() {
    let mut spec = rebuild();
    spec.sector = Some(SectorRef {
        miner: 1000,
        number: 8,
    });
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    let reply = Reply::RebuildSector(Some(upgraded_info()));
    let decision = decide_now(task(&spec), &status, &answered(&call, Ok(reply)));
    assert_eq!(
        decision.status.sector,
        Some(SectorRef {
            miner: 1000,
            number: 7
        })
    );
    let outputs = decision.status.outputs.clone().unwrap();
    assert!(outputs.ticket.is_some() && outputs.sector_key.is_some());
    let error = decision.status.last_error.clone().unwrap();
    assert_eq!(error.level, FailureLevel::Permanent);
    assert!(
        error.message.contains("handed out sector s-t01000-7")
            && error.message.contains("delete it to hand"),
        "{}",
        error.message
    );
    assert!(has(&decision, |e| matches!(e, Effect::WriteStatus)));
}

/// A snap-up handed out without deals aborts as damocles-worker's does, and the sector it was
/// handed is reported aborted (handed back), not forgotten.
#[test]
fn a_snapup_handed_out_without_deals_reports_its_sector_aborted() {
    use crate::manager::wire::{AllocatedSnapUpSector, SectorPrivateInfo};
    let spec = spec(json!({"plan": "snapup", "sectorSize": "2KiB"}));
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    let info = upgraded_info();
    let reply = Reply::SnapUpSector(Some(AllocatedSnapUpSector {
        sector: info.sector,
        pieces: None,
        public: info.upgrade_public.unwrap(),
        private: SectorPrivateInfo {
            access_instance: "store-1".into(),
        },
    }));
    let aborted = decide_now(task(&spec), &status, &answered(&call, Ok(reply)));
    assert_eq!(aborted.status.sector.map(|s| s.number), Some(7));
    assert_eq!(
        aborted.status.last_error.as_ref().unwrap().level,
        FailureLevel::Abort
    );
    let mut status = aborted.status;
    let reports_abort = |decision: &Decision| {
        matches!(&decision.wake, Wake::Ask(Question::Manager(call))
            if matches!(call.as_ref(), Call::ReportAborted { sector, .. } if sector.number == 7))
    };
    let mut next = decide_now(task(&spec), &status, &Observed::default());
    // Past the Aborted state's own bookkeeping, the sector is reported aborted.
    for _ in 0..4 {
        if reports_abort(&next) {
            break;
        }
        status = next.status;
        next = decide_now(task(&spec), &status, &Observed::default());
    }
    assert!(reports_abort(&next), "{:?}", next.wake);
}

/// An allocation's intent is written before it is asked. Found written with no answer recorded
/// (the operator stopped in between), a rebuild pauses rather than take a second job, and a
/// resume asks again; a sealer simply asks again.
#[test]
fn an_allocation_asked_but_never_recorded_pauses_a_one_time_job() {
    let spec = rebuild();
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    let asking = decide_now(task(&spec), &status, &Observed::default());
    assert_eq!(
        asking.status.allocating,
        Some(crate::plan::Allocation::AllocateRebuildSector)
    );
    assert_eq!(asking.effects.first(), Some(&Effect::WriteStatus));
    assert!(matches!(
        asked_call(&asking),
        Call::AllocateRebuildSector(_)
    ));

    // Restarted: the intent is there, the answer is not.
    let restarted = decide_now(task(&spec), &asking.status, &Observed::default());
    let error = restarted.status.last_error.clone().unwrap();
    assert_eq!(error.level, FailureLevel::Permanent);
    assert!(
        error
            .message
            .contains("AllocateRebuildSector was asked and its answer never recorded"),
        "{}",
        error.message
    );
    let mut resumed_spec = rebuild();
    resumed_spec.resume_state = Some(String::new());
    let resumed = decide_now(task(&resumed_spec), &restarted.status, &Observed::default());
    assert!(matches!(
        asked_call(&resumed),
        Call::AllocateRebuildSector(_)
    ));

    // Answered (here: nothing to rebuild), the intent is done with.
    let call = asked_call(&asking).clone();
    let answered = decide_now(
        task(&spec),
        &asking.status,
        &answered(&call, Ok(Reply::RebuildSector(None))),
    );
    assert_eq!(answered.status.allocating, None);

    // A sealer's lost answer costs only a sector number: no intent, it asks again.
    let sealer = sealer();
    let asking = decide_now(task(&sealer), &status, &Observed::default());
    assert_eq!(asking.status.allocating, None);
    assert!(matches!(asked_call(&asking), Call::AllocateSector(_)));
}
