//! Unseal: the request and its destinations come from the manager; spec.unseal only says what
//! the task expects.

use super::*;
use crate::manager::wire::{AllocatedSector, CidJson, SectorPrivateInfo, SectorUnsealInfo, Ticket};
use crate::task::work::allocate::UNSEAL_NOT_AS_SELECTED;
use crate::task::work::unseal::{DeliveryRules, undeliverable};

const PIECE: &str = "baga6ea4seaqpiece";

fn handed_out(piece: &str, offset: u64) -> SectorUnsealInfo {
    SectorUnsealInfo {
        sector: AllocatedSector {
            id: SECTOR_ID,
            proof_type: 5,
        },
        piece_cid: CidJson { cid: piece.into() },
        offset,
        size: 1016,
        private_info: SectorPrivateInfo {
            access_instance: "store-1".into(),
        },
        ticket: Ticket {
            ticket: crate::manager::wire::Randomness([1; 32]),
            epoch: 9100,
        },
        comm_d: [2; 32],
        dest: None,
        state: None,
        error_info: String::new(),
    }
}

fn allocated(spec: &SealingTaskSpec, info: SectorUnsealInfo) -> Decision {
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    let ask = decide_now(task(spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    assert!(matches!(call, Call::AllocateUnsealSector(_)), "{call:?}");
    decide_now(
        task(spec),
        &status,
        &answered(&call, Ok(Reply::UnsealSector(Some(info)))),
    )
}

/// Nothing to unseal yet: the intent is cleared, and the task does not ask again before the
/// poll interval, even when woken sooner (by the watch event of that very status write).
#[test]
fn an_unseal_task_with_nothing_handed_out_asks_again_only_after_the_poll_interval() {
    let spec = spec(json!({"plan": "unseal", "sectorSize": "2KiB"}));
    let mut status = at(State::Empty);
    status.sector = None;
    status.outputs = None;
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    let none = decide_now(
        task(&spec),
        &ask.status,
        &answered(&call, Ok(Reply::UnsealSector(None))),
    );
    assert_eq!(none.status.allocating, None);
    let poll = Rules::default().poll_interval;
    assert_eq!(none.wake, Wake::After(poll));
    let woken = decide_now(task(&spec), &none.status, &Observed::default());
    assert!(
        matches!(woken.wake, Wake::After(_)),
        "no new question: {:?}",
        woken.wake
    );
    let later = decide_at(
        task(&spec),
        &none.status,
        &Observed::default(),
        NOW + poll.as_secs() as i64,
    );
    assert!(matches!(asked_call(&later), Call::AllocateUnsealSector(_)));
}

/// Without a selector the task takes what the manager hands out, records it, and delivers to
/// exactly the manager's destinations (a market token is not kept in the status).
#[test]
fn an_unseal_task_takes_the_managers_request_and_destinations() {
    let spec = spec(json!({"plan": "unseal", "sectorSize": "2KiB"}));
    let decision = allocated(&spec, handed_out(PIECE, 1016));
    let taken = decision.status.outputs.as_ref().unwrap().unseal.clone();
    assert_eq!(
        taken,
        Some(crate::api::UnsealTaken {
            piece_cid: PIECE.into(),
            offset: 1016,
            size: 1016,
            destinations: vec![],
        })
    );

    let mut status = at(State::Unsealed);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.unseal = taken;
    outputs.committed = Some(crate::api::CommittedSector {
        comm_r: None,
        instance: "store-1".into(),
        path: Some("/mnt/store-1".into()),
    });
    let ask = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&ask).clone();
    assert_eq!(
        call,
        Call::AcquireUnsealDest {
            sector: SECTOR_ID,
            piece: CidJson { cid: PIECE.into() }
        }
    );
    let given = vec![
        format!("market://retrievals/{PIECE}?token=s3cret&host=10.0.0.2:41235&scheme=http"),
        "store://store-1/retrieved/piece".to_string(),
        format!("store:///{PIECE}"),
    ];
    let rules = Rules {
        profiles: Profiles {
            piece_store: Some("http://manager:1789/piecestore/".into()),
            allowed_hosts: vec!["manager".into(), "10.0.0.2:41235".into()],
            delivery_roots: vec!["/srv/retrieved".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let observed = answered(&call, Ok(Reply::Destinations(given)));
    let decision = decide(task(&spec), &status, &observed, NOW, &rules);
    let recorded = &decision
        .status
        .outputs
        .as_ref()
        .unwrap()
        .unseal
        .as_ref()
        .unwrap();
    assert_eq!(
        recorded.destinations[0],
        format!("market://retrievals/{PIECE}?token=redacted&host=10.0.0.2:41235&scheme=http")
    );
    assert!(
        !serde_json::to_string(&decision.status)
            .unwrap()
            .contains("s3cret"),
        "the market token stays out of the status"
    );

    the_steps_deliver_as_recorded(&spec, &decision.status, &rules);
}

/// The upload and unseal steps of an unseal task whose destinations are recorded in `status`:
/// they get the destinations, stores, range and allowlists the task checked.
fn the_steps_deliver_as_recorded(
    spec: &SealingTaskSpec,
    status: &SealingTaskStatus,
    rules: &Rules,
) {
    let recorded = status.outputs.as_ref().unwrap().unseal.as_ref().unwrap();
    let request =
        crate::task::steps::step_request(task(spec), status, StepKind::Upload, &rules.profiles)
            .unwrap();
    assert_eq!(request.inputs.destinations, recorded.destinations);
    assert_eq!(
        request.inputs.stores,
        [("store-1".to_string(), "/mnt/store-1".into())].into()
    );
    assert_eq!(
        request.inputs.piece_store.as_deref(),
        Some("http://manager:1789/piecestore/")
    );
    // The step checks again what the task checked: it gets the same allowlists.
    assert_eq!(request.inputs.allowed_hosts, ["manager", "10.0.0.2:41235"]);
    assert_eq!(
        request.inputs.delivery_roots,
        [std::path::PathBuf::from("/srv/retrieved")]
    );
    let unseal =
        crate::task::steps::step_request(task(spec), status, StepKind::Unseal, &rules.profiles)
            .unwrap();
    assert_eq!(
        unseal.inputs.unseal,
        Some(crate::step::UnsealRange {
            offset: 1016,
            size: 1016
        })
    );
}

/// A list the task could never deliver to pauses it before a byte moves, saying why, without
/// the token; the manager is not told the unseal is done.
#[test]
fn destinations_that_cannot_be_delivered_pause_the_task() {
    let roots = [std::path::PathBuf::from("/srv/retrieved")];
    let hosts = ["fine".to_string(), "market:41235".to_string()];
    let rules = DeliveryRules {
        stores: &["store-1"],
        piece_store: true,
        allowed_hosts: &hosts,
        delivery_roots: &roots,
    };
    assert!(
        undeliverable(&[], &rules)
            .unwrap()
            .contains("gave no destination")
    );
    let problem = undeliverable(
        &[
            "store://store-9/x".into(),
            "ftp://host/x".into(),
            "market://s/p?host=h&scheme=http&token=s3cret".into(),
            "http://fine/x".into(),
            "market://s/p?host=market:41235&scheme=http&token=s3cret".into(),
        ],
        &rules,
    )
    .unwrap();
    assert!(
        problem.contains("store store-9") && problem.contains("storePaths"),
        "{problem}"
    );
    assert!(problem.contains("unsupported scheme ftp"), "{problem}");
    assert!(
        problem.contains("host h is not in profiles.allowedHosts"),
        "{problem}"
    );
    assert!(
        !problem.contains("s3cret")
            && !problem.contains("http://fine")
            && !problem.contains("host market:41235"),
        "only the refused are named: {problem}"
    );
    let no_piece_store = DeliveryRules {
        piece_store: false,
        ..rules
    };
    assert!(
        undeliverable(&[format!("store:///{PIECE}")], &no_piece_store)
            .unwrap()
            .contains("pieceStore")
    );
    assert_eq!(
        undeliverable(&["file:///srv/retrieved/piece".into()], &rules),
        None
    );
    for outside in [
        "file:///var/lib/damocles/store/sealed/s-t01000-1",
        "file:///etc/cron.d/job",
        "http://169.254.169.254/latest",
    ] {
        let problem = undeliverable(&[outside.into()], &rules).unwrap();
        assert!(
            problem.contains("deliveryRoots") || problem.contains("allowedHosts"),
            "{outside}: {problem}"
        );
    }
    let no_roots = DeliveryRules {
        delivery_roots: &[],
        ..rules
    };
    assert!(
        undeliverable(&["file:///srv/retrieved/piece".into()], &no_roots)
            .unwrap()
            .contains("not under profiles.deliveryRoots ([])")
    );

    let spec = spec(json!({"plan": "unseal", "sectorSize": "2KiB"}));
    let mut status = at(State::Unsealed);
    let outputs = status.outputs.as_mut().unwrap();
    outputs.unseal = Some(crate::api::UnsealTaken {
        piece_cid: PIECE.into(),
        offset: 0,
        size: 1016,
        destinations: vec![],
    });
    let call = Call::AcquireUnsealDest {
        sector: SECTOR_ID,
        piece: CidJson { cid: PIECE.into() },
    };
    let decision = decide_now(
        task(&spec),
        &status,
        &answered(&call, Ok(Reply::Destinations(vec![]))),
    );
    let error = decision.status.last_error.unwrap();
    assert_eq!(error.level, FailureLevel::Permanent);
    assert!(
        error.message.contains("gave no destination"),
        "{}",
        error.message
    );
}

/// A request the selector does not match is served all the same: the manager took it off its
/// queue for this task, failing it would destroy it (a failed request is never queued again) and
/// leave its sector online marked Unsealing. The task records it, says so in a Warning Event,
/// and goes on: nothing is handed back, nothing pauses.
#[test]
fn a_request_the_selector_does_not_match_is_served_not_failed() {
    let spec = spec(json!({"plan": "unseal", "sectorSize": "2KiB",
        "sector": {"miner": 1000, "number": 9},
        "unseal": {"pieceCid": PIECE, "offset": 0}}));
    let decision = allocated(&spec, handed_out("baga6ea4seaqother", 0));
    assert!(
        !has(&decision, |e| matches!(
            e,
            Effect::Tell(Call::AchieveUnsealSector { .. })
        )),
        "the request is not handed back as failed"
    );
    assert_eq!(decision.status.last_error, None);
    assert_eq!(decision.status.sector, Some(SECTOR));
    assert_eq!(decision.status.proof_type, Some(5));
    assert!(
        matches!(asked_call(&decision), Call::StoreBasicInfo { .. }),
        "it goes on to find the sector's store"
    );
    let taken = decision.status.outputs.clone().unwrap().unseal.unwrap();
    assert_eq!(taken.piece_cid, "baga6ea4seaqother");
    assert!(event(&decision, UNSEAL_NOT_AS_SELECTED));
    let warning = decision
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Event { note, .. } => Some(note.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        warning.contains(PIECE) && warning.contains("in sector 9") && warning.contains("serves it"),
        "{warning}"
    );

    // The piece (and no sector asked for) matches, and the range the selector leaves open is
    // taken as given.
    let spec = super::spec(json!({"plan": "unseal", "sectorSize": "2KiB",
        "unseal": {"pieceCid": PIECE, "offset": 0}}));
    let decision = allocated(&spec, handed_out(PIECE, 0));
    assert!(decision.status.last_error.is_none());
    assert!(!event(&decision, UNSEAL_NOT_AS_SELECTED));
    assert_eq!(
        decision.status.outputs.unwrap().unseal.unwrap().piece_cid,
        PIECE
    );
}
