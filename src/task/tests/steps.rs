//! Step pods: slots, start, results, pods that never ran, a lost workspace node.

use super::*;

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
    let comm_r = crate::sector::CommR::from_bytes([9; 32]);
    let outputs = StepOutputs {
        comm_r: Some(comm_r),
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

    // A pod bound to a node that has not started it within its profile's start timeout is
    // replaced the same way.
    let creating = PodReport::Starting {
        reason: "ContainerCreating: ".into(),
        problem: None,
    };
    let stuck = decide_now(
        task(&spec),
        &status,
        &pod(creating, Some("node-b"), NOW - 601),
    );
    assert_eq!(stuck.status.attempt, 1);
    assert_eq!(stuck.status.avoid_node.as_deref(), Some("node-b"));
    assert!(
        stuck
            .status
            .message
            .unwrap()
            .contains("did not start within 600s")
    );
}

/// A pod the scheduler has not placed, for want of room, waits in its queue however long that
/// takes: a replacement would start at the back of the queue.
#[test]
fn a_pod_queued_for_room_is_never_replaced() {
    let spec = sealer();
    let status = at(State::PC1Done);
    let queued = PodReport::Starting {
        reason: "0/2 nodes are available: 2 Insufficient cpu".into(),
        problem: None,
    };
    let slow = decide_now(task(&spec), &status, &pod(queued.clone(), None, NOW - 30));
    assert_eq!(slow.wake, Wake::After(SLOW_START));
    let message = slow.status.message.unwrap();
    assert!(
        message.contains("Insufficient cpu") && message.contains("scheduler's queue"),
        "{message}"
    );
    let hours = decide_now(task(&spec), &status, &pod(queued, None, NOW - 4 * 3600));
    assert_eq!(hours.status.attempt, 0);
    assert!(!has(&hours, |e| matches!(e, Effect::DeletePod(_))));
    assert!(matches!(hours.wake, Wake::OnChange | Wake::After(_)));
}

/// A failed step is told to the manager as damocles-worker tells it: a ReportState of the state
/// it stays in, event "None", the failure's level and text (what `util sealer sectors` shows).
/// A pod that never ran is no failure of the sector and is not reported.
#[test]
fn a_failed_step_is_reported_to_the_manager_with_its_level() {
    let spec = sealer();
    let status = at(State::PC1Done);
    let reports = |decision: &Decision| -> Vec<crate::manager::wire::ReportStateReq> {
        decision
            .effects
            .iter()
            .filter_map(|e| match e {
                Effect::ReportState(Call::ReportState { sector, report }) => {
                    assert_eq!((sector.miner, sector.number), (SECTOR.miner, SECTOR.number));
                    Some(report.clone())
                }
                _ => None,
            })
            .collect()
    };
    let failed = PodReport::Failed {
        level: FailureLevel::Temporary,
        message: "no space left on device".into(),
        never_ran: false,
    };
    let decision = decide_now(task(&spec), &status, &pod(failed, Some("node-b"), NOW - 5));
    let sent = reports(&decision);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let change = &sent[0].state_change;
    assert_eq!(
        (
            change.prev.as_str(),
            change.next.as_str(),
            change.event.as_str()
        ),
        ("PC1Done", "PC1Done", "None")
    );
    let failure = sent[0].failure.as_ref().unwrap();
    assert_eq!(failure.level, "Temporary");
    assert!(failure.desc.contains("no space left"), "{failure:?}");

    let never = PodReport::Failed {
        level: FailureLevel::Temporary,
        message: "evicted".into(),
        never_ran: true,
    };
    let replaced = decide_now(task(&spec), &status, &pod(never, Some("node-b"), NOW - 5));
    assert!(reports(&replaced).is_empty());
}

/// A replaced pod that still runs (its deletion not yet carried out by the kubelet) keeps its
/// replacement from starting: never two pods of a step on one workspace.
#[test]
fn a_replacement_waits_until_the_replaced_pod_has_stopped() {
    let spec = sealer();
    let status = at(State::PC1Done);
    let starting = PodReport::Starting {
        reason: "ContainerCreating: ".into(),
        problem: None,
    };
    let stuck = decide_now(
        task(&spec),
        &status,
        &pod(starting, Some("node-a"), NOW - 601),
    );
    assert_eq!(stuck.status.retiring_pod.as_deref(), Some("t1-pc1done-0"));
    let status = stuck.status;
    let mut observed = pod(PodReport::Running, Some("node-a"), NOW - 601);
    observed
        .pods
        .get_mut("t1-pc1done-0")
        .unwrap()
        .as_mut()
        .unwrap()
        .deleting = true;
    let waiting = decide_now(task(&spec), &status, &observed);
    assert_eq!(waiting.wake, Wake::OnChange);
    assert_eq!(waiting.status.phase, Some(Phase::Waiting));
    assert!(
        waiting
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("waiting for step pod t1-pc1done-0 on node node-a to stop"),
        "{:?}",
        waiting.status.message
    );
    assert!(!has(&waiting, |e| matches!(e, Effect::CreateStepPod(_))));
    // Gone: the replacement (attempt 1) is asked for, and the wait is over.
    observed.pods.insert("t1-pc1done-0".into(), None);
    let going = decide_now(task(&spec), &status, &observed);
    assert_eq!(going.status.retiring_pod, None);
    assert_eq!(asked(&going), &Question::StepPod("t1-pc1done-1".into()));
}

#[test]
fn a_workspace_whose_node_is_gone_pauses_as_critical() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.node = Some("node-a".into());
    let starting = PodReport::Starting {
        reason: "Pending".into(),
        problem: None,
    };
    // Just created: no lookup of the node (most pods start within seconds).
    let fresh = decide_now(task(&spec), &status, &pod(starting.clone(), None, NOW - 5));
    assert!(!matches!(fresh.wake, Wake::Ask(_)), "{:?}", fresh.wake);
    let mut observed = pod(starting, None, NOW - 25);
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

/// Past its PreCommit, a sealer that lost its node is not told to seal again (a new ticket would
/// not match the PreCommit on chain) but to abort and rebuild.
#[test]
fn a_lost_workspace_past_the_precommit_is_not_resealed() {
    let spec = sealer();
    let mut status = at(State::C1Done);
    status.node = Some("node-a".into());
    let mut observed = pod(
        PodReport::Starting {
            reason: "Pending".into(),
            problem: None,
        },
        None,
        NOW - 25,
    );
    observed.pods.insert(
        "t1-c1done-0".into(),
        observed.pods.get("t1-pc1done-0").unwrap().clone(),
    );
    observed.nodes.insert("node-a".into(), false);
    let decision = decide_now(task(&spec), &status, &observed);
    let last = decision.status.last_error.unwrap();
    assert_eq!(last.level, FailureLevel::Critical);
    assert!(
        last.message.contains("its PreCommit is on chain") && !last.message.contains("resume at"),
        "{}",
        last.message
    );
}

/// A cleanup pod bound to a node that is gone never runs: the task counts the workspace as gone
/// with the node instead of waiting for it.
#[test]
fn a_cleanup_on_a_node_that_is_gone_does_not_wait_forever() {
    let spec = sealer();
    let mut status = reported(at(State::Finished));
    status.node = Some("node-a".into());
    let mut observed = Observed {
        cleanup_pod: Some(CleanupPod::Running {
            created: Some(NOW - 30),
        }),
        ..Default::default()
    };
    // Just created: the node is not looked up yet, the task looks again when it would be.
    let fresh = Observed {
        cleanup_pod: Some(CleanupPod::Running {
            created: Some(NOW - 5),
        }),
        ..Default::default()
    };
    let waiting = decide_now(task(&spec), &status, &fresh);
    assert_eq!(waiting.wake, Wake::After(Duration::from_secs(15)));
    let ask = decide_now(task(&spec), &status, &observed);
    assert_eq!(asked(&ask), &Question::NodeExists("node-a".into()));
    observed.nodes.insert("node-a".into(), false);
    let gone = decide_now(task(&spec), &status, &observed);
    let cleaned = gone
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "WorkspaceCleaned")
        .unwrap();
    assert_eq!(
        (cleaned.status.as_str(), cleaned.reason.as_str()),
        ("True", "NodeGone")
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
fn a_pod_that_can_never_start_pauses_the_task_naming_why() {
    let spec = sealer();
    let status = at(State::PC1Done);
    let unpullable = PodReport::Starting {
        reason: "ImagePullBackOff: Back-off pulling image".into(),
        problem: Some(StartProblem::ImagePull {
            image: "registry.example/damocles-step:9".into(),
        }),
    };
    // Within the start timeout kubelet keeps trying: the task waits.
    let early = decide_now(
        task(&spec),
        &status,
        &pod(unpullable.clone(), None, NOW - 30),
    );
    assert_eq!(early.wake, Wake::After(SLOW_START));
    // A pod free to go elsewhere gets one try on another node (that node's registry access may
    // be the trouble); pinned to its workspace, or after that try, the task pauses.
    let bound = pod(unpullable.clone(), Some("node-b"), NOW - 601);
    let moved = decide_now(task(&spec), &status, &bound);
    assert_eq!(moved.status.avoid_node.as_deref(), Some("node-b"));
    assert_eq!(moved.status.last_error, None);
    let mut tried = status.clone();
    tried.avoid_node = Some("node-b".into());
    let stuck = decide_now(
        task(&spec),
        &tried,
        &pod(unpullable.clone(), Some("node-c"), NOW - 601),
    );
    assert_eq!(stuck.status.phase, Some(Phase::Paused));
    let mut pinned = status.clone();
    pinned.node = Some("node-a".into());
    let mut on_workspace = pod(unpullable.clone(), Some("node-a"), NOW - 601);
    on_workspace.nodes.insert("node-a".into(), true);
    let stuck = decide_now(task(&spec), &pinned, &on_workspace);
    assert_eq!(stuck.status.phase, Some(Phase::Paused));
    let stuck = decide_now(task(&spec), &status, &pod(unpullable, None, NOW - 601));
    assert_eq!(stuck.status.phase, Some(Phase::Paused));
    assert!(has(&stuck, |e| *e == Effect::DeletePod("t1-pc1done-0".into())));
    let last = stuck.status.last_error.unwrap();
    assert_eq!(last.level, FailureLevel::Permanent);
    assert!(
        last.message
            .contains("image registry.example/damocles-step:9 cannot be pulled"),
        "{}",
        last.message
    );
    let failed = stuck
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::FAILED)
        .unwrap();
    assert!(failed.message.contains("registry.example/damocles-step:9"));

    let unfit = PodReport::Starting {
        reason: "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector"
            .into(),
        problem: Some(StartProblem::NoFittingNode),
    };
    let stuck = decide_now(task(&spec), &status, &pod(unfit, None, NOW - 601));
    assert_eq!(stuck.status.phase, Some(Phase::Paused));
    assert!(
        stuck
            .status
            .last_error
            .unwrap()
            .message
            .contains("no node can run the pc2 pod")
    );
}

/// The manager's deals (AcquireDeals) are recorded with the task, and add-piece fetches each
/// deal's payload from the piece store while a filler piece stays zeros, every CID checked.
#[test]
fn deals_from_the_manager_are_recorded_and_fetched_from_the_piece_store() {
    use crate::manager::wire::{CidJson, DealInfo, PieceInfo, SectorPiece};
    let spec = spec(json!({"plan": "sealer", "sectorSize": "2KiB", "deals": {"enabled": true}}));
    let status = at(State::Allocated);
    let decision = decide_now(task(&spec), &status, &Observed::default());
    let call = asked_call(&decision).clone();
    assert!(matches!(call, Call::AcquireDeals { .. }), "{call:?}");
    let piece = |cid: &str, deal_id: u64, payload_size: u64| SectorPiece {
        piece: PieceInfo {
            size: 1024,
            piece_cid: CidJson { cid: cid.into() },
        },
        deal_info: Some(DealInfo {
            deal_id,
            payload_size,
            is_builtin_market: true,
            ..Default::default()
        }),
    };
    let reply = Reply::Deals(vec![
        piece("baga6ea4seaqdeal", 12, 1000),
        piece("baga6ea4seaqfiller", 0, 0),
    ]);
    let decision = decide_now(task(&spec), &status, &answered(&call, Ok(reply)));
    let pieces = &decision.status.outputs.as_ref().unwrap().pieces;
    assert_eq!(pieces.len(), 2);
    assert_eq!(
        (pieces[0].payload_size, pieces[0].deal_id),
        (Some(1000), Some(12))
    );
    assert_eq!((pieces[1].payload_size, pieces[1].deal_id), (None, None));

    let profiles = Profiles {
        piece_store: Some("http://manager:1789/piecestore/".into()),
        ..Default::default()
    };
    let request = crate::task::steps::step_request(
        task(&spec),
        &decision.status,
        StepKind::AddPiece,
        &profiles,
    )
    .unwrap();
    let inputs: Vec<_> = request
        .inputs
        .pieces
        .iter()
        .map(|p| {
            (
                p.cid.as_deref(),
                p.size,
                p.source.as_deref(),
                p.payload_size,
            )
        })
        .collect();
    assert_eq!(
        inputs,
        [
            (
                Some("baga6ea4seaqdeal"),
                1024,
                Some("http://manager:1789/piecestore/baga6ea4seaqdeal"),
                Some(1000)
            ),
            (Some("baga6ea4seaqfiller"), 1024, None, None),
        ]
    );
}

/// A request too long for the pod's environment (Linux caps one variable at 128 KiB) pauses the
/// task naming its size, instead of a pod that can never start.
#[test]
fn a_step_request_too_big_for_the_environment_pauses_the_task() {
    let spec = spec(json!({"plan": "sealer", "sectorSize": "2KiB", "deals": {"enabled": true}}));
    let mut status = at(State::DealsAcquired);
    status.outputs.as_mut().unwrap().pieces = (0..2000)
        .map(|i| crate::api::DealPiece {
            cid: format!("baga6ea4seaq{i:0>100}"),
            size: 128,
            payload_size: Some(100),
            deal_id: Some(i),
        })
        .collect();
    let mut observed = Observed::default();
    observed.pods.insert("t1-dealsacquired-0".into(), None);
    let decision = decide_now(task(&spec), &status, &observed);
    let last = decision.status.last_error.clone().unwrap();
    assert_eq!(last.level, FailureLevel::Permanent);
    assert!(
        last.message
            .contains("more than the 102400 a step pod's environment carries"),
        "{}",
        last.message
    );
    assert!(!has(&decision, |e| matches!(e, Effect::CreateStepPod(_))));
}

/// The node a first workspace step runs on is kept in memory while the pod runs, written with
/// the next write the task makes; after a restart the pod says it again, and a task stopped
/// meanwhile finds its workspace from the stopped pod.
#[test]
fn a_running_first_step_costs_no_write_for_its_node() {
    let spec = sealer();
    let mut status = at(State::PC1Done);
    status.step_pod = Some("t1-pc1done-0".into());
    status::set_phase(
        &mut status,
        Phase::Running,
        "PC1Done: running pc2 in pod t1-pc1done-0",
        NOW - 10,
    );
    let running = pod(PodReport::Running, Some("node-a"), NOW - 5);
    let seen = decide_now(task(&spec), &status, &running);
    assert_eq!(seen.status, status, "nothing to write while the pod runs");
    assert_eq!(known(&seen).node.as_deref(), Some("node-a"));

    // Aborted while it runs: the abort's write carries the node, and the cleanup goes there.
    let mut aborted = spec.clone();
    aborted.resume_state = Some("Aborted".into());
    let mut remembered_run = running.clone();
    remembered_run.remembered = remembered(&seen);
    let stopped = decide_now(task(&aborted), &status, &remembered_run);
    assert_eq!(stopped.status.state, Some(State::Aborted));
    assert_eq!(stopped.status.node.as_deref(), Some("node-a"));

    // The same after a restart, the memory lost: the stopped pod is asked where it ran.
    let mut restarted = decide_now(task(&aborted), &status, &Observed::default());
    let mut observed = Observed::default();
    for _ in 0..4 {
        match &restarted.wake {
            Wake::Ask(Question::StepPod(name)) => {
                assert_eq!(name, "t1-pc1done-0");
                observed.pods.insert(
                    name.clone(),
                    Some(StepPod {
                        report: PodReport::Running,
                        node: Some("node-a".into()),
                        created: Some(NOW - 5),
                        deleting: true,
                    }),
                );
            }
            Wake::Ask(Question::Manager(call)) => {
                observed.reply = Some(((**call).clone(), Ok(Reply::Done)));
            }
            _ => break,
        }
        restarted = decide_now(task(&aborted), &restarted.status, &observed);
        observed.reply = None;
    }
    assert_eq!(restarted.status.node.as_deref(), Some("node-a"));
    assert_eq!(
        asked(&restarted),
        &Question::CleanupPod("t1-cleanup".into())
    );
}

/// The pod that chooses the task's node asks for PC1's cores and memory, so it lands where PC1
/// has room now; the pods pinned after it ask only for their own.
#[test]
fn the_first_pod_asks_for_the_room_pc1_needs_and_later_pods_for_their_own() {
    let rules = Rules {
        profiles: Profiles::parse(
            "steps: {pc1: {resources: {requests: {cpu: '8', memory: 64Gi}}}, \
             pc2: {resources: {limits: {nvidia.com/gpu: '1'}}}}",
        )
        .unwrap(),
        ..Rules::default()
    };
    let spec = sealer();
    let requests = |state: State, node: Option<&str>| {
        let mut status = at(state);
        status.node = node.map(Into::into);
        let mut observed = Observed::default();
        observed
            .pods
            .insert(crate::task::steps::pod_name("t1", state, 0), None);
        let decision = decide(task(&spec), &status, &observed, NOW, &rules);
        let resources = created_pod(&decision).profile.resources.clone();
        resources.and_then(|r| r.requests).unwrap_or_default()
    };
    let first = requests(State::DealsAcquired, None);
    assert_eq!(first["cpu"].0, "8");
    assert_eq!(first["memory"].0, "64Gi");
    assert!(!first.contains_key("nvidia.com/gpu"));
    assert!(requests(State::PC1Done, Some("node-a")).is_empty());
}

/// Tree-d runs in the add-piece pod (it only computes CommD from the pieces add-piece wrote):
/// its result there takes the task on to the ticket without a pod of its own; one that failed
/// there gets its own pod; a farm that gives tree-d a profile of its own gets it its own pod.
#[test]
fn tree_d_runs_in_the_add_piece_pod_unless_its_profile_differs() {
    let spec = sealer();
    let status = at(State::DealsAcquired);
    let mut observed = Observed::default();
    observed.pods.insert("t1-dealsacquired-0".into(), None);
    let started = decide_now(task(&spec), &status, &observed);
    let pod = created_pod(&started);
    assert_eq!(pod.request.step, StepKind::AddPiece);
    assert_eq!(pod.request.then, [StepKind::TreeD]);

    let own = Rules {
        profiles: Profiles::parse("steps: {tree-d: {resources: {requests: {cpu: '4'}}}}").unwrap(),
        ..Rules::default()
    };
    let alone = decide(task(&spec), &status, &observed, NOW, &own);
    assert!(created_pod(&alone).request.then.is_empty());

    let mut running = status.clone();
    running.step_pod = Some("t1-dealsacquired-0".into());
    let finished = |tree_d: Option<&str>| {
        let along = StepResult {
            failure: tree_d.map(|message| crate::step::StepFailure {
                level: FailureLevel::Temporary,
                message: message.into(),
            }),
            ..result_of(
                StepKind::TreeD,
                StepOutputs {
                    comm_d: Some(crate::sector::CommD::from_bytes([4; 32])),
                    ..Default::default()
                },
            )
        };
        let mut observed = Observed::default();
        observed.pods.insert(
            "t1-dealsacquired-0".into(),
            Some(StepPod {
                report: PodReport::Succeeded(Box::new(StepResult {
                    then: vec![along],
                    ..result_of(StepKind::AddPiece, StepOutputs::default())
                })),
                node: Some("node-a".into()),
                created: Some(NOW - 5),
                deleting: false,
            }),
        );
        decide_now(task(&spec), &running, &observed)
    };
    let ran = finished(None);
    assert_eq!(ran.status.state, Some(State::TreeDBuilt));
    assert_eq!(asked_call(&ran).method(), Method::AssignTicket);
    assert_eq!(
        ran.status.outputs.as_ref().unwrap().comm_d,
        Some(crate::sector::CommD::from_bytes([4; 32]))
    );
    assert!(has(&ran, |e| matches!(
        e,
        Effect::StepFinished {
            step: StepKind::TreeD,
            ..
        }
    )));
    let failed = finished(Some("no pieces.json"));
    assert_eq!(failed.status.state, Some(State::PieceAdded));
    assert_eq!(asked(&failed), &Question::StepPod("t1-pieceadded-0".into()));
}
