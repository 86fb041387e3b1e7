//! The manager client against the embedded dev manager, over loopback JSON-RPC, with real 2KiB
//! proofs checked by filecoin-proofs. Needs the proofs feature (damocles-step verifies).
#![cfg(feature = "proofs")]

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use damocles_operator::api::{FailureLevel, SectorRef, SectorSize};
use damocles_operator::manager::wire::{
    AllocateSectorSpec, AllocatedSector, Bytes, OnChainState, PreCommitOnChainInfo,
    ProofOnChainInfo, ReportStateReq, SectorId, SectorStateChange, SubmitResp, SubmitResult,
    Ticket, WorkerIdentifier,
};
use damocles_operator::manager::{ManagerClient, ManagerError, SubmitOutcome};
use damocles_operator::sector::CommR;
use damocles_operator::step::bench::Chain;
use damocles_operator::step::{Bytes32, StepKind, StepResult};
use serde_json::json;
use support::calls::TypedCalls;
use support::dev_manager::DevManager;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "damocles-manager-test-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec() -> AllocateSectorSpec {
    AllocateSectorSpec {
        allowed_miners: Some(vec![1000]),
        allowed_proof_types: Some(vec![5]),
    }
}

fn fake_info(ticket: Ticket) -> PreCommitOnChainInfo {
    PreCommitOnChainInfo {
        comm_r: [3; 32],
        comm_d: [4; 32],
        ticket,
        deals: vec![],
    }
}

async fn until_landed(client: &ManagerClient, sector: SectorId, proof: bool) {
    let started = Instant::now();
    loop {
        let poll = if proof {
            client.poll_proof_state(sector).await
        } else {
            client.poll_pre_commit_state(sector).await
        };
        if poll.unwrap().state == OnChainState::Landed {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never landed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn seed(client: &ManagerClient, sector: SectorId) -> damocles_operator::manager::wire::Seed {
    loop {
        let wait = client.wait_seed(sector, 5).await.unwrap();
        if let Some(seed) = wait.seed {
            return seed;
        }
        assert!(wait.should_wait && wait.delay >= 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn every_method_over_loopback() {
    let dir = temp_dir("methods");
    let manager = DevManager::start(&dir.join("state.json"), &[]);
    let client = manager.client();
    let sector = client
        .allocate_sector(&spec())
        .await
        .unwrap()
        .expect("a sector");
    assert_eq!(
        sector.id,
        SectorId {
            miner: 1000,
            number: 1
        }
    );
    let other_miner = AllocateSectorSpec {
        allowed_miners: Some(vec![2000]),
        allowed_proof_types: None,
    };
    assert_eq!(client.allocate_sector(&other_miner).await.unwrap(), None);

    let ticket = client.assign_ticket(sector.id).await.unwrap();
    let info = fake_info(ticket.clone());
    let first = client
        .submit_pre_commit(&sector, &info, false)
        .await
        .unwrap();
    assert_eq!(first.res, SubmitResult::Accepted);
    let again = client
        .submit_pre_commit(&sector, &info, false)
        .await
        .unwrap();
    assert_eq!(
        again,
        SubmitResp {
            res: SubmitResult::Accepted,
            desc: None
        },
        "an identical resubmission: Accepted, as damocles-manager answers it"
    );
    assert_eq!(SubmitOutcome::from(again.res), SubmitOutcome::Accepted);
    until_landed(&client, sector.id, false).await;
    assert!(
        client
            .submit_persisted(sector.id, "persist-1", false)
            .await
            .unwrap()
    );
    seed(&client, sector.id).await;
    let never = client.poll_proof_state(sector.id).await.unwrap();
    assert_eq!(
        (never.state, never.desc.as_deref()),
        (
            OnChainState::Failed,
            Some("attempt to publish message but failed")
        ),
        "a proof never submitted polls Failed, as damocles-manager answers it"
    );

    // Bytes that are no proof: checked with filecoin-proofs and Rejected with damocles-manager's
    // ErrInvalidProof text.
    let junk = ProofOnChainInfo {
        proof: Bytes(vec![7; 192]),
    };
    let resp = client.submit_proof(sector.id, &junk, false).await.unwrap();
    assert_eq!(resp.res, SubmitResult::Rejected);
    assert_eq!(resp.desc.as_deref(), Some("invalid proof (compute error?)"));

    let report = ReportStateReq {
        worker: WorkerIdentifier {
            instance: "operator".into(),
            location: "ns/task".into(),
        },
        state_change: SectorStateChange {
            prev: "Empty".into(),
            next: "Allocated".into(),
            event: "Allocate".into(),
        },
        failure: None,
    };
    let state = client
        .report_state(sector.id, &report)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.id, state.finalized, state.abort_reason.as_deref()),
        (sector.id, false, Some(""))
    );
    client.report_finalized(sector.id).await.unwrap();
    let state = client
        .report_state(sector.id, &report)
        .await
        .unwrap()
        .unwrap();
    assert!(state.finalized);
    let offline = client.report_finalized(sector.id).await.unwrap_err();
    assert!(
        matches!(offline, ManagerError::Rpc { code: 11001, .. }),
        "a finalized sector is offline: {offline}"
    );
    let second = client.allocate_sector(&spec()).await.unwrap().unwrap();
    client
        .report_aborted(second.id, "operator: user abort")
        .await
        .unwrap();
    // As after `damocles-manager util sealer sectors abort`: the sector is offline, ReportState
    // records nothing and answers finalized with the reason; online calls find no sector.
    let state = client
        .report_state(second.id, &report)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (state.finalized, state.abort_reason.as_deref()),
        (true, Some("operator: user abort"))
    );
    for err in [
        client.report_aborted(second.id, "again").await.unwrap_err(),
        client.poll_pre_commit_state(second.id).await.unwrap_err(),
        client.assign_ticket(second.id).await.map(drop).unwrap_err(),
    ] {
        assert!(
            matches!(err, ManagerError::Rpc { code: 11001, .. }),
            "{err}"
        );
    }

    let unknown = SectorId {
        miner: 1000,
        number: 77,
    };
    let err = client.assign_ticket(unknown).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::Rpc { code: 11001, .. }),
        "{err}"
    );
    assert_eq!(err.level(), FailureLevel::Permanent);

    let state = manager.admin("/admin/state", None).await;
    assert_eq!(
        state["chain"]["sectors"]["1"]["submissions"]["SubmitPreCommit"],
        2
    );
    assert_eq!(
        state["chain"]["sectors"]["2"]["aborted"],
        "operator: user abort"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn run_step(chain: &mut Chain, step: StepKind) -> StepResult {
    let mut request = chain.request(step);
    let result_path = chain.base.workspace.join(format!("{step}.result.json"));
    request.termination_message_path = Some(result_path.clone());
    let request_path = chain.base.workspace.join(format!("{step}.request.json"));
    std::fs::create_dir_all(&chain.base.workspace).unwrap();
    std::fs::write(&request_path, serde_json::to_vec(&request).unwrap()).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_damocles-step"))
        .args(["run", "--request"])
        .arg(&request_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{step} failed");
    let result: StepResult = serde_json::from_slice(&std::fs::read(result_path).unwrap()).unwrap();
    chain.absorb(&result);
    result
}

async fn submit(client: &ManagerClient, sector: SectorId, proof: Vec<u8>) -> SubmitResult {
    let info = ProofOnChainInfo {
        proof: Bytes(proof),
    };
    client.submit_proof(sector, &info, false).await.unwrap().res
}

/// A real 2KiB CC sector at the dev manager: sealed, PreCommitted, persisted and proven (a
/// tampered proof refused, a resubmission a duplicate), landed on the dev chain.
struct ProvenSector {
    dir: PathBuf,
    manager: DevManager,
    client: ManagerClient,
    sector: AllocatedSector,
    sector_ref: SectorRef,
    ticket: Ticket,
    info: PreCommitOnChainInfo,
    chain: Chain,
    /// The manager's store as the host sees it: where Persist put the sector's files.
    store_dir: PathBuf,
}

async fn proven_sector(name: &str) -> ProvenSector {
    let dir = temp_dir(name);
    let host = dir.join("host");
    let manager = DevManager::start(
        &dir.join("state.json"),
        &[
            "--store",
            "store-1=/store",
            "--check-files-under",
            host.to_str().unwrap(),
        ],
    );
    let client = manager.client();
    let sector: AllocatedSector = client.allocate_sector(&spec()).await.unwrap().unwrap();
    assert!(
        client
            .acquire_deals(sector.id, &Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    let ticket = client.assign_ticket(sector.id).await.unwrap();

    let sector_ref = SectorRef {
        miner: sector.id.miner,
        number: sector.id.number,
    };
    let mut chain = Chain::new(
        &dir.join("workspace"),
        sector_ref,
        SectorSize::Size2KiB,
        false,
    );
    chain.gathered.ticket = Some(Bytes32(ticket.ticket.0));
    for step in [
        StepKind::AddPiece,
        StepKind::TreeD,
        StepKind::Pc1,
        StepKind::Pc2,
    ] {
        run_step(&mut chain, step);
    }
    let info = PreCommitOnChainInfo {
        comm_r: chain.gathered.comm_r.unwrap().bytes(),
        comm_d: chain.gathered.comm_d.unwrap().bytes(),
        ticket: ticket.clone(),
        deals: vec![],
    };
    assert_eq!(
        client
            .submit_pre_commit(&sector, &info, false)
            .await
            .unwrap()
            .res,
        SubmitResult::Accepted
    );
    until_landed(&client, sector.id, false).await;

    let store = client
        .store_reserve_space(sector.id, 2048, &[])
        .await
        .unwrap()
        .expect("a store");
    assert_eq!(
        (store.name.as_str(), store.path.as_str()),
        ("store-1", "/store")
    );
    assert_eq!(client.store_basic_info("nope").await.unwrap(), None);
    assert!(
        !client
            .submit_persisted(sector.id, "store-1", false)
            .await
            .unwrap(),
        "nothing persisted yet"
    );
    let store_dir = host.join("store");
    chain.base.persist = Some(store_dir.clone());
    run_step(&mut chain, StepKind::Persist);
    assert!(
        client
            .submit_persisted(sector.id, "store-1", false)
            .await
            .unwrap()
    );

    let seed = seed(&client, sector.id).await;
    chain.gathered.seed = Some(Bytes32(seed.seed.0));
    run_step(&mut chain, StepKind::C1);
    let c2 = run_step(&mut chain, StepKind::C2);
    let proof = std::fs::read(&c2.outputs.file("proof").unwrap().path).unwrap();
    let mut tampered = proof.clone();
    tampered[0] ^= 0x80;
    assert_eq!(
        submit(&client, sector.id, tampered.clone()).await,
        SubmitResult::Rejected,
        "a proof that does not verify"
    );
    assert_eq!(
        submit(&client, sector.id, proof.clone()).await,
        SubmitResult::Accepted
    );
    // Submitted again after a crash: Accepted, and nothing is sent again.
    assert_eq!(
        submit(&client, sector.id, proof).await,
        SubmitResult::Accepted
    );
    assert_eq!(
        submit(&client, sector.id, tampered).await,
        SubmitResult::MismatchedSubmission,
        "a different proof once one is recorded"
    );
    until_landed(&client, sector.id, true).await;

    ProvenSector {
        dir,
        manager,
        client,
        sector,
        sector_ref,
        ticket,
        info,
        chain,
        store_dir,
    }
}

/// Whether the dev manager holds sector 1 offline (finalized).
async fn finalized(manager: &DevManager) -> bool {
    manager.admin("/admin/state", None).await["chain"]["sectors"]["1"]["finalized"] == true
}

/// One real 2KiB sector through its life at the dev manager: sealed and proven (a tampered proof
/// refused), persisted (missing files refused), unsealed, rebuilt.
#[tokio::test]
async fn a_real_sector_is_proven_unsealed_and_rebuilt() {
    let ProvenSector {
        dir,
        manager,
        client,
        sector,
        ticket,
        info,
        chain,
        ..
    } = proven_sector("proof").await;
    assert!(!finalized(&manager).await);

    // Unseal: queued at the manager, handed out with the sector's sealing facts, only once the
    // sector is finalized (offline): a sector still online loses the request (production's
    // AllocateUnsealSector dequeues first).
    let piece_cid = chain.gathered.comm_d.unwrap().to_string();
    let queue = json!({"number": sector.id.number, "pieceCid": piece_cid, "size": 2032,
                       "dest": ["file:///tmp/out"]});
    manager.admin("/admin/unseal", Some(queue.clone())).await;
    let err = client.allocate_unseal_sector(&spec()).await.unwrap_err();
    assert!(
        matches!(&err, ManagerError::Rpc { code: 1, message, .. } if message.contains("load sector state")),
        "{err}"
    );
    assert_eq!(client.allocate_unseal_sector(&spec()).await.unwrap(), None);
    client.report_finalized(sector.id).await.unwrap();
    assert!(finalized(&manager).await);
    manager.admin("/admin/unseal", Some(queue)).await;
    let unseal = client
        .allocate_unseal_sector(&spec())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(unseal.sector.id, sector.id);
    assert_eq!(
        (unseal.ticket.clone(), unseal.comm_d),
        (ticket.clone(), info.comm_d)
    );
    assert_eq!(unseal.private_info.access_instance, "store-1");
    assert_eq!(unseal.state, Some(json!("unsealing")));
    assert!(!finalized(&manager).await, "back online for the unseal");
    assert_eq!(
        client
            .acquire_unseal_dest(sector.id, &unseal.piece_cid)
            .await
            .unwrap(),
        vec!["file:///tmp/out"]
    );
    client
        .achieve_unseal_sector(sector.id, &unseal.piece_cid, "")
        .await
        .unwrap();
    assert_eq!(client.allocate_unseal_sector(&spec()).await.unwrap(), None);
    let refused = manager
        .admin("/admin/rebuild", Some(json!({"number": sector.id.number})))
        .await;
    assert!(
        refused["error"].as_str().unwrap().contains("not finalized"),
        "an unseal under way: {refused}"
    );
    client.report_finalized(sector.id).await.unwrap();
    let record = &manager.admin("/admin/state", None).await["chain"]["sectors"]["1"];
    assert_eq!(
        (&record["finalized"], &record["unsealing"]),
        (&json!(true), &json!(false))
    );

    // Rebuild (twice): marked lost, handed out once with the original ticket, done when the
    // worker reports it finalized.
    let refused = manager
        .admin("/admin/rebuild", Some(json!({"number": 99})))
        .await;
    assert!(
        refused["error"].as_str().unwrap().contains("not found"),
        "{refused}"
    );
    for round in 1..=2 {
        manager
            .admin("/admin/rebuild", Some(json!({"number": sector.id.number})))
            .await;
        let rebuild = client
            .allocate_rebuild_sector(&spec())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                rebuild.sector.id,
                rebuild.ticket.clone(),
                rebuild.is_snap_up
            ),
            (sector.id, ticket.clone(), false)
        );
        assert_eq!(rebuild.pieces_v2, None, "a committed-capacity sector");
        assert_eq!(client.allocate_rebuild_sector(&spec()).await.unwrap(), None);
        assert!(
            client
                .submit_persisted(sector.id, "store-1", false)
                .await
                .unwrap()
        );
        client.report_finalized(sector.id).await.unwrap();
        let record = &manager.admin("/admin/state", None).await["chain"]["sectors"]["1"];
        assert_eq!(
            (&record["rebuilds"], &record["finalized"]),
            (&json!(round), &json!(true))
        );
        assert!(record["rebuild"].is_null(), "{record}");
    }

    let state = manager.admin("/admin/state", None).await;
    let record = &state["chain"]["sectors"]["1"];
    assert_eq!(record["submissions"]["SubmitProof"], 4);
    assert_eq!(state["chain"]["unseals"][0]["achieved"], "");
    std::fs::remove_dir_all(dir).unwrap();
}

/// A proven CC sector snap-upgraded with deal data and a real update proof (a tampered one
/// refused, files not yet persisted refused, a resubmission a duplicate).
#[tokio::test]
#[ignore = "long run (scripts/test-long): needs the empty-sector-update parameters"]
async fn a_real_proven_sector_is_snap_upgraded() {
    let ProvenSector {
        dir,
        manager,
        client,
        sector,
        sector_ref,
        info,
        store_dir,
        ..
    } = proven_sector("snap").await;
    assert_eq!(
        client
            .allocate_snapup_sector(&Default::default())
            .await
            .unwrap(),
        None,
        "a sector still being sealed is not a candidate"
    );
    client.report_finalized(sector.id).await.unwrap();
    assert_eq!(
        client
            .allocate_snapup_sector(&Default::default())
            .await
            .unwrap(),
        None,
        "no upgrade without deals, as damocles-manager"
    );

    // Snap-upgrade with a deal of random bytes from the market and a real update proof.
    let deal = manager.add_deal(2000).await;
    let cid = deal["pieceCid"].as_str().unwrap().to_string();
    let snap = client
        .allocate_snapup_sector(&Default::default())
        .await
        .unwrap()
        .expect("the committed sector");
    assert_eq!(
        (snap.sector.id, snap.public.comm_r),
        (sector.id, info.comm_r)
    );
    let pieces: Vec<_> = snap.pieces.clone().unwrap_or_default();
    assert_eq!(pieces.len(), 1, "{pieces:?}");
    assert_eq!(pieces[0].piece.piece_cid.cid, cid);
    assert_eq!(pieces[0].payload_size(), Some(2000));
    let mut snap_chain = Chain::new(&dir.join("snap"), sector_ref, SectorSize::Size2KiB, false);
    snap_chain.base.persist = Some(store_dir.clone());
    snap_chain.gathered.pieces = vec![damocles_operator::step::PieceInput {
        cid: Some(cid.clone()),
        size: 2048,
        source: Some(format!("{}{cid}", client.piece_store())),
        payload_size: Some(2000),
    }];
    // The piece comes from the dev manager's piece store, as profiles.allowedHosts allows.
    snap_chain.gathered.allowed_hosts = vec!["127.0.0.1".into()];
    let store_files = damocles_operator::step::workspace::SectorFiles::new(&store_dir, sector_ref);
    snap_chain.gathered.cc_sector = Some(damocles_operator::step::SealedFiles {
        sealed: store_files.sealed(),
        cache: store_files.cache(),
        comm_r: Some(CommR::from_bytes(snap.public.comm_r)),
        comm_d: None,
        ticket: None,
    });
    for step in [
        StepKind::AddPiece,
        StepKind::SnapEncode,
        StepKind::SnapProve,
    ] {
        run_step(&mut snap_chain, step);
    }
    let snap_proof = std::fs::read(&snap_chain.gathered.proof.as_ref().unwrap().path).unwrap();
    let new_comm_r = snap_chain.gathered.comm_r.unwrap().bytes();
    let new_comm_d = snap_chain.gathered.comm_d.unwrap().bytes();
    let snap_info = |proof: Vec<u8>| damocles_operator::manager::wire::SnapUpOnChainInfo {
        comm_r: new_comm_r,
        comm_d: new_comm_d,
        access_instance: "store-1".into(),
        pieces: vec![damocles_operator::manager::wire::CidJson { cid: cid.clone() }],
        proof: Bytes(proof),
    };
    let submit_snap = |proof| {
        let info = snap_info(proof);
        let client = &client;
        async move {
            client
                .submit_snapup_proof(sector.id, &info)
                .await
                .unwrap()
                .res
        }
    };
    assert_eq!(
        submit_snap(snap_proof.clone()).await,
        SubmitResult::FilesMissed
    );
    run_step(&mut snap_chain, StepKind::Persist);
    let mut tampered = snap_proof.clone();
    tampered[0] ^= 0x80;
    assert_eq!(
        submit_snap(tampered).await,
        SubmitResult::MismatchedSubmission
    );
    assert_eq!(
        submit_snap(snap_proof.clone()).await,
        SubmitResult::Accepted
    );
    // A repeat while the manager's commit job runs: its logic error, never DuplicateSubmit.
    let err = client
        .submit_snapup_proof(sector.id, &snap_info(snap_proof))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ManagerError::Rpc { code: 1, message, .. } if message == "commit snapup sector: duplicate commit job"),
        "{err}"
    );

    let state = manager.admin("/admin/state", None).await;
    let record = &state["chain"]["sectors"]["1"];
    assert_eq!(record["submissions"]["SubmitSnapUpProof"], 4);
    assert!(record["upgrade"].is_object(), "{record}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn an_expired_ticket_is_rejected() {
    let dir = temp_dir("expired");
    let manager = DevManager::start(&dir.join("state.json"), &["--ticket-max-age", "3"]);
    let client = manager.client();
    let sector = client.allocate_sector(&spec()).await.unwrap().unwrap();
    let ticket = client.assign_ticket(sector.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = client
        .submit_pre_commit(&sector, &fake_info(ticket), false)
        .await
        .unwrap();
    assert_eq!(resp.res, SubmitResult::Rejected);
    assert!(
        resp.desc
            .as_deref()
            .unwrap_or_default()
            .contains("ticket expired"),
        "{resp:?}"
    );
    assert_eq!(
        SubmitOutcome::from(resp.res),
        SubmitOutcome::Failed(FailureLevel::Abort)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn a_restarted_dev_manager_keeps_its_state() {
    let dir = temp_dir("restart");
    let state = dir.join("state.json");
    let manager = DevManager::start(&state, &[]);
    let client = manager.client();
    let sector = client.allocate_sector(&spec()).await.unwrap().unwrap();
    let ticket = client.assign_ticket(sector.id).await.unwrap();
    client
        .submit_pre_commit(&sector, &fake_info(ticket.clone()), false)
        .await
        .unwrap();
    drop(manager); // SIGKILL: no chance to save anything more
    // What a kill in the middle of a later save leaves: part of its line, never answered.
    std::io::Write::write_all(
        &mut std::fs::OpenOptions::new()
            .append(true)
            .open(&state)
            .unwrap(),
        br#"{"genesisUnixMs":1,"startEpoch":10000,"chain":{"sec"#,
    )
    .unwrap();

    let manager = DevManager::start(&state, &[]);
    let client = manager.client();
    assert_eq!(
        client
            .allocate_sector(&spec())
            .await
            .unwrap()
            .unwrap()
            .id
            .number,
        2,
        "numbers continue"
    );
    until_landed(&client, sector.id, false).await;
    let again = client
        .submit_pre_commit(&sector, &fake_info(ticket), false)
        .await
        .unwrap();
    assert_eq!(again.res, SubmitResult::Accepted);
    assert_eq!(
        client.poll_pre_commit_state(sector.id).await.unwrap().state,
        OnChainState::Landed,
        "the PreCommit survived the restart"
    );
    let state = manager.admin("/admin/state", None).await;
    assert_eq!(
        state["chain"]["sectors"]["1"]["submissions"]["SubmitPreCommit"],
        2
    );
    assert_eq!(manager.state, dir.join("state.json"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn injected_faults_and_unknown_result_codes_are_clear_errors() {
    let dir = temp_dir("faults");
    let manager = DevManager::start(&dir.join("state.json"), &[]);
    let client = manager.client();
    let sector = client.allocate_sector(&spec()).await.unwrap().unwrap();
    manager
        .admin(
            "/admin/faults",
            Some(json!({"AssignTicket": {"failNext": 1}, "SubmitPreCommit": {"forceResult": 9}})),
        )
        .await;
    let err = client.assign_ticket(sector.id).await.unwrap_err();
    assert!(err.to_string().contains("injected failure"), "{err}");
    assert_eq!(err.level(), FailureLevel::Temporary);
    let ticket = client
        .assign_ticket(sector.id)
        .await
        .expect("only the next call failed");

    let err = client
        .submit_pre_commit(&sector, &fake_info(ticket), false)
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("unknown SubmitResult 9"), "{err}");
    assert_eq!(err.level(), FailureLevel::Permanent);

    manager
        .admin(
            "/admin/faults",
            Some(json!({"PollPreCommitState": {"latencyMs": 1500}})),
        )
        .await;
    let impatient = ManagerClient::new(&manager.address, None, Duration::from_millis(300)).unwrap();
    let err = impatient
        .poll_pre_commit_state(sector.id)
        .await
        .unwrap_err();
    assert!(matches!(err, ManagerError::Timeout { .. }), "{err}");
    assert_eq!(err.level(), FailureLevel::Temporary);
    assert!(err.is_unavailable());
    assert!(
        !client
            .assign_ticket(SectorId {
                miner: 1000,
                number: 99
            })
            .await
            .unwrap_err()
            .is_unavailable(),
        "an answered error is no outage"
    );

    // Outages: a proxy answering 503 without a JSON-RPC body, then a manager that takes the
    // connection and never answers; both are unavailable, and it answers again after.
    manager
        .admin(
            "/admin/outage",
            Some(json!({"seconds": 1, "mode": "unavailable"})),
        )
        .await;
    let err = client.poll_pre_commit_state(sector.id).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::Http { status: 503, .. }),
        "{err}"
    );
    assert!(err.is_unavailable());
    manager
        .admin("/admin/outage", Some(json!({"seconds": 2, "mode": "hang"})))
        .await;
    let err = impatient.assign_ticket(sector.id).await.unwrap_err();
    assert!(matches!(err, ManagerError::Timeout { .. }), "{err}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    client
        .assign_ticket(sector.id)
        .await
        .expect("the manager answers once the outage is over");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An HTTP 200 response with a JSON `body`, for [`canned_http`] (kept for the test's lifetime).
fn json_answer(body: String) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

/// Serves one canned HTTP response per connection on a loopback port.
fn canned_http(response: &'static str) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut buffer = [0u8; 65536];
            let _ = stream.read(&mut buffer);
            let _ = stream.write_all(response.as_bytes());
        }
    });
    address
}

#[tokio::test]
async fn answers_that_are_not_json_rpc_are_clear_errors() {
    let sector = SectorId {
        miner: 1000,
        number: 1,
    };
    let proxy_page = canned_http(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/html\r\ncontent-length: 24\r\nconnection: close\r\n\r\n<html>bad gateway</html>",
    );
    let client = ManagerClient::new(&proxy_page, None, Duration::from_secs(5)).unwrap();
    let err = client.assign_ticket(sector).await.unwrap_err();
    assert!(
        matches!(err, ManagerError::Http { status: 502, .. }),
        "{err}"
    );
    assert_eq!(
        err.level(),
        FailureLevel::Temporary,
        "a proxy in trouble: retry"
    );

    let html = canned_http(
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 15\r\nconnection: close\r\n\r\n<html>hi</html>",
    );
    let client = ManagerClient::new(&html, None, Duration::from_secs(5)).unwrap();
    let err = client.assign_ticket(sector).await.unwrap_err();
    assert!(matches!(err, ManagerError::Malformed { .. }), "{err}");
    assert!(err.to_string().contains("<html>hi</html>"), "{err}");
    assert_eq!(err.level(), FailureLevel::Permanent);

    let wrong_shape = canned_http(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 51\r\nconnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"Ticket\":\"AQID\"}}",
    );
    let client = ManagerClient::new(&wrong_shape, None, Duration::from_secs(5)).unwrap();
    let err = client.assign_ticket(sector).await.unwrap_err().to_string();
    assert!(
        err.contains("Venus.AssignTicket") && err.contains("3 bytes, expected 32"),
        "{err}"
    );

    // An answer past the client's limit is refused unread; a huge error message is shortened.
    let huge = json_answer(" ".repeat(6 << 20));
    let client = ManagerClient::new(&canned_http(huge), None, Duration::from_secs(30)).unwrap();
    let err = client.assign_ticket(sector).await.unwrap_err().to_string();
    assert!(
        err.contains("larger than 4 MiB"),
        "{}",
        &err[..err.len().min(300)]
    );
    let message = "x".repeat(100_000);
    let long_error = json_answer(format!(
        r#"{{"jsonrpc":"2.0","id":1,"error":{{"code":1,"message":"{message}"}}}}"#
    ));
    let client =
        ManagerClient::new(&canned_http(long_error), None, Duration::from_secs(5)).unwrap();
    let err = client.assign_ticket(sector).await.unwrap_err().to_string();
    assert!(err.len() < 1024, "shortened to {} bytes", err.len());
}

/// Posts one raw JSON-RPC body to the dev manager: the HTTP status and the decoded answer.
async fn raw_rpc(manager: &DevManager, body: String) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(format!("http://{}/rpc/v0", manager.address))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A JSON-RPC error go-jsonrpc answers before any method runs: HTTP 500, then its code and message.
async fn protocol_error(manager: &DevManager, body: String) -> (i64, String) {
    let (status, answer) = raw_rpc(manager, body).await;
    assert_eq!(status, 500, "{answer}");
    (
        answer["error"]["code"].as_i64().unwrap(),
        answer["error"]["message"].as_str().unwrap().to_string(),
    )
}

/// The answers go-jsonrpc v0.1.9 (the production manager's RPC server) gives to requests that
/// never reach a method, and the manager's own error and ReportState shapes, byte for byte where
/// ../shared/research/damocles-manager.md has them (E1, E2, E4, E6).
#[tokio::test]
async fn protocol_answers_are_the_production_managers() {
    let dir = temp_dir("protocol");
    let manager = DevManager::start(&dir.join("state.json"), &[]);
    let spec = json!({"AllowedMiners": [1000], "AllowedProofTypes": [5]});
    let request = |method: &str, params: serde_json::Value| {
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string()
    };

    // E1: one param in every release; the unreleased [spec, niporep] shape is refused.
    assert_eq!(
        protocol_error(
            &manager,
            request("Venus.AllocateSector", json!([spec, false]))
        )
        .await,
        (
            -32602,
            "(error code -32602) wrong param count (method 'Venus.AllocateSector'): 2 != 1".into()
        )
    );
    let (status, answer) = raw_rpc(&manager, request("Venus.AllocateSector", json!([spec]))).await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["result"]["ID"],
        json!({"Miner": 1000, "Number": 1}),
        "{answer}"
    );
    let sector = json!({"Miner": 1000, "Number": 1});

    // E2: WaitSeed takes [sector, proof type] (v0.11.0+).
    assert_eq!(
        protocol_error(&manager, request("Venus.WaitSeed", json!([sector]))).await,
        (
            -32602,
            "(error code -32602) wrong param count (method 'Venus.WaitSeed'): 1 != 2".into()
        )
    );

    // Only the Venus namespace; a method name alone is not found.
    assert_eq!(
        protocol_error(&manager, request("AssignTicket", json!([sector]))).await,
        (
            -32601,
            "(error code -32601) method 'AssignTicket' not found".into()
        )
    );
    assert_eq!(
        protocol_error(&manager, request("Venus.NoSuchMethod", json!([]))).await,
        (
            -32601,
            "(error code -32601) method 'Venus.NoSuchMethod' not found".into()
        )
    );

    // A param of the wrong type is a parse error naming the param's type (Go's %T).
    let (code, message) =
        protocol_error(&manager, request("Venus.AssignTicket", json!(["1000-1"]))).await;
    assert_eq!(code, -32700);
    assert!(
        message.starts_with(
            "(error code -32700) unmarshaling params for 'Venus.AssignTicket' (param: *SectorId): "
        ),
        "{message}"
    );
    let (code, message) = protocol_error(&manager, "{not json".into()).await;
    assert_eq!(code, -32700);
    assert!(
        message.starts_with("(error code -32700) unmarshaling request: "),
        "{message}"
    );

    // E4: an unknown sector is the manager's own error: HTTP 200, code 11001, its exact text.
    let unknown = json!({"Miner": 1000, "Number": 77});
    let (status, answer) = raw_rpc(
        &manager,
        request("Venus.PollPreCommitState", json!([unknown])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"jsonrpc": "2.0", "id": 1,
               "error": {"code": 11001, "message": "error code 11001: sector state not found"}})
    );

    // E6: AbortReason is a Go string, "" for a sector nobody aborted.
    let report = json!({
        "Worker": {"Instance": "operator-0", "Location": "default/task-a"},
        "StateChange": {"Prev": "Empty", "Next": "Allocated", "Event": "Allocate"},
        "Failure": null,
    });
    let (status, answer) = raw_rpc(
        &manager,
        request("Venus.ReportState", json!([sector, report])),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        answer["result"],
        json!({"Id": sector, "Finalized": false, "AbortReason": ""})
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tokens_come_from_files_and_bad_files_are_named() {
    let dir = temp_dir("token");
    let good = dir.join("token");
    std::fs::write(&good, "s3cret\n").unwrap();
    assert_eq!(
        damocles_operator::manager::client::read_token(&good).unwrap(),
        "s3cret"
    );
    let empty = dir.join("empty");
    std::fs::write(&empty, "  \n").unwrap();
    let err = damocles_operator::manager::client::read_token(&empty)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("empty") && err.contains(empty.to_str().unwrap()),
        "{err}"
    );
    let err = damocles_operator::manager::client::read_token(&dir.join("missing"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// The piece store answers as damocles-manager's (`/piecestore/<cid>`: GET, PUT, a miss
/// redirected to the market, a name that is no CID 400) and the market as droplet's resource
/// endpoint (only with its token); unseal destinations are checked as checkDestURL checks them.
#[tokio::test]
async fn the_piece_store_and_the_market_answer_as_production() {
    let dir = temp_dir("piecestore");
    let manager = DevManager::start(&dir.join("state.json"), &[]);
    damocles_operator::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("http://{}", manager.address);
    let cid = "baga6ea4seaqstoredpiece";
    let bytes: Vec<u8> = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();

    let put = http
        .put(format!("{base}/piecestore/{cid}"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got = http
        .get(format!("{base}/piecestore/{cid}.car"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.bytes().await.unwrap(), bytes);
    let bad = http
        .put(format!("{base}/piecestore/not-a-cid"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let missing = "baga6ea4seaqmissingpiece";
    let miss = http
        .get(format!("{base}/piecestore/{missing}"))
        .send()
        .await
        .unwrap();
    assert_eq!(miss.status(), 302, "never 404: the market may hold it");
    assert_eq!(
        miss.headers()["location"],
        format!("/resource?resource-id={missing}").as_str()
    );

    let resource = |query: String| format!("{base}/resource?{query}");
    let bearer = format!("Bearer {}", support::dev_manager::MARKET_TOKEN);
    let anonymous = http
        .get(resource(format!("resource-id={cid}")))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let delivered = "baga6ea4seaqdeliveredpiece";
    let put = http
        .put(resource(format!(
            "resource-id={delivered}&store=retrievals"
        )))
        .header("Authorization", &bearer)
        .body(bytes[..1000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let got = http
        .get(resource(format!("resource-id={delivered}")))
        .header("Authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap(), bytes[..1000]);
    assert_eq!(
        std::fs::read(dir.join(format!("state.market/retrievals/{delivered}"))).unwrap(),
        bytes[..1000]
    );

    let refused = manager
        .admin(
            "/admin/unseal",
            Some(json!({"number": 1, "pieceCid": cid, "size": 1016, "dest": ["ftp://x/y"]})),
        )
        .await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("unsupported scheme"),
        "{refused}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
