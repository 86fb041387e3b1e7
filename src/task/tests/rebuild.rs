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
