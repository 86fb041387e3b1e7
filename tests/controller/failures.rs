//! Failures: a rejected PreCommit, a deleted task, an expiring ticket, a corrupt deal piece.

use super::*;

/// A PreCommit the manager rejects ends the task: Aborted, the manager told, and the workspace
/// removed from the node by a cleanup pod.
#[tokio::test]
async fn a_rejected_precommit_aborts_the_task_and_wipes_its_workspace() {
    let scene = Scene::new("reject").await;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    manager
        .admin(
            "/admin/faults",
            Some(serde_json::json!({"SubmitPreCommit": {"forceResult": 4, "latencyMs": 3000}})),
        )
        .await;
    let _operator = scene.operator();
    scene.seal("t").await;
    // Deleted 8 s after it ends (as a Job's ttlSecondsAfterFinished).
    patch_spec(
        tasks,
        "t",
        serde_json::json!({"ttlSecondsAfterFinished": 8}),
    )
    .await;
    let workspace = scene.workspace("t");
    // PC2's end, the PreCommit's intent and the wait for its landing are one write, made before
    // the call the manager takes 3 s to refuse.
    let submitting = wait_status(tasks, "t", "the PreCommit submitting", |s| {
        s.state == Some(State::PCSubmitted)
    })
    .await;
    assert_eq!(
        submitting.status.unwrap().submitting,
        Some(damocles_operator::plan::Submission::SubmitPreCommit)
    );
    assert!(
        workspace.join("sealed").is_dir(),
        "the workspace holds the sealed file"
    );

    let aborted = wait_status(tasks, "t", "workspace cleaned", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "WorkspaceCleaned" && c.status == "True")
    })
    .await;
    let status = aborted.status.unwrap();
    assert_eq!(
        (status.state, status.phase),
        (Some(State::Aborted), Some(Phase::Aborted))
    );
    assert_eq!(
        status.last_error.unwrap().level,
        damocles_operator::api::FailureLevel::Abort
    );
    assert!(!workspace.exists(), "{} still exists", workspace.display());
    let record = &scene.record(status.sector.unwrap().number).await;
    assert!(
        record["aborted"].as_str().unwrap().contains("refused"),
        "{record}"
    );
    wait_for(
        "the ended task deleted after its TTL",
        Duration::from_secs(60),
        || async { tasks.get_opt("t").await.ok()?.is_none().then_some(()) },
    )
    .await;
}

/// Deleting a task past its PreCommit does not abandon its sector: the task goes on, saying why.
/// Told to abort (the annotation), the deletion stops its step, tells the manager and removes the
/// workspace before the task goes away (a finalizer).
#[tokio::test]
async fn deleting_a_running_task_stops_it_and_cleans_up_first() {
    let scene = Scene::new("delete").await;
    let tasks = &scene.tasks;
    let pods = &scene.pods;
    let _operator = scene.operator();
    scene.seal("t").await;
    let running = wait_status(tasks, "t", "C2 running", |s| {
        s.state == Some(State::C1Done) && s.step_pod.is_some()
    })
    .await;
    assert!(
        running
            .metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"damocles.io/cleanup".to_string())
    );
    let status = running.status.unwrap();
    running_pod(pods, status.step_pod.as_ref().unwrap()).await;
    let workspace = scene.workspace("t");
    assert!(workspace.is_dir());

    tasks.delete("t", &Default::default()).await.unwrap();
    let held = wait_status(tasks, "t", "the deletion held", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "DeletionHeld" && c.status == "True")
    })
    .await;
    assert_ne!(held.status.unwrap().phase, Some(Phase::Aborted));
    allow_abort_on_delete(tasks, "t").await;
    wait_gone(tasks, "t").await;
    assert!(!workspace.exists(), "{} still exists", workspace.display());
    let record = &scene.record(status.sector.unwrap().number).await;
    assert!(
        record["aborted"].as_str().unwrap().contains("deleted"),
        "{record}"
    );
    wait_for("its pods gone", Duration::from_secs(30), || async {
        let list = pods.list(&ListParams::default()).await.ok()?;
        list.items.is_empty().then_some(())
    })
    .await;
}

/// The operator is told epochs are 100 ms, so with its margin at 2800 epochs a ticket older than
/// (3780 - 2800 - 900) x 100 ms = 8 s is too old for PC2 or the PreCommit. The first PC2 is slowed
/// by 10 s, so the task must go back for a new ticket, and its second PreCommit (the first never
/// sent) is accepted. Ages are whole seconds (status timestamps), and a loaded machine takes about
/// a second per step pod, so the window must be several seconds wide for the second ticket to be
/// used in time (a 1.6 s window failed in CI, drawing 8 tickets).
#[tokio::test]
async fn a_ticket_about_to_expire_sends_the_task_back_for_a_new_one() {
    let scene = Scene::new("ticket").await;
    let ns = &scene.ns;
    let farm = &scene.farm;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    let once = farm.root.join("pc2-slowed");
    let mut profiles = std::fs::read_to_string(&farm.profiles).unwrap();
    profiles.push_str(&format!(
        "steps:\n  pc2:\n    command: [sh, -c, 'if [ ! -e {once} ]; then touch {once}; sleep 10; fi; exec {step} \"$@\"', pc2]\n",
        once = once.display(),
        step = env!("CARGO_BIN_EXE_damocles-step"),
    ));
    std::fs::write(&farm.profiles, profiles).unwrap();
    let _operator = Operator::start_args(
        &ns.name,
        manager,
        &farm.profiles,
        None,
        &["--block-time", "100ms", "--ticket-margin", "2800"],
    );
    scene.seal("t").await;
    let landed = wait_status(tasks, "t", "the PreCommit landed", |s| {
        s.history.iter().any(|h| h.state == State::PCLanded)
    })
    .await;
    let status = landed.status.unwrap();
    let tickets = status
        .history
        .iter()
        .filter(|h| h.state == State::TicketAssigned)
        .count();
    assert_eq!(tickets, 2, "{:?}", status.history);
    assert!(once.exists(), "the first PC2 was slowed");
    let record = &scene.record(status.sector.unwrap().number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    allow_abort_on_delete(tasks, "t").await;
    tasks.delete("t", &Default::default()).await.unwrap();
}

/// A deal piece whose bytes are not the ones its CID commits to (a corrupt piece store) stops
/// the task before PC1: paused with a permanent error naming the piece, nothing sealed.
#[tokio::test]
async fn a_deal_piece_whose_bytes_do_not_match_its_cid_pauses_the_task_naming_it() {
    let scene = Scene::new("bad-piece").await;
    let deal = scene.manager.add_deal(2000).await;
    let cid = deal["pieceCid"].as_str().unwrap().to_string();
    // The manager's piece store now serves other bytes of the same length under that CID.
    let stored = scene.farm.root.join("manager.pieces").join(&cid);
    let mut bytes = std::fs::read(&stored).unwrap();
    assert_eq!(bytes.len(), 2000);
    bytes[7] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();

    let _operator = scene.operator();
    create_example(
        &scene.tasks,
        "sealer-2kib.yaml",
        "t",
        serde_json::json!({"deals": {"enabled": true}}),
    )
    .await;
    let paused = wait_status(&scene.tasks, "t", "paused", |s| {
        s.phase == Some(Phase::Paused)
    })
    .await;
    let status = paused.status.unwrap();
    let error = status.last_error.unwrap();
    assert_eq!(error.level, damocles_operator::api::FailureLevel::Permanent);
    assert!(
        error
            .message
            .contains(&format!("piece {cid} does not match its bytes")),
        "{}",
        error.message
    );
    let visited: Vec<State> = status.history.iter().map(|h| h.state).collect();
    assert!(!visited.contains(&State::PC1Done), "{visited:?}");
}

/// A pod that someone else made with the name of a task's next step pod, even one that succeeded
/// with a result, is not the task's: the task does not adopt it or read its result, and pauses
/// naming it. Once it is deleted, a resume runs the task's own pod.
#[tokio::test]
async fn a_step_pod_name_taken_by_another_owner_is_not_adopted() {
    let scene = Scene::new("foreign").await;
    let tasks = &scene.tasks;
    let forged = serde_json::json!({
        "version": 1, "step": "add-piece", "sector": {"miner": 1000, "number": 1},
        "outputs": {"commD": "baga6ea4seaqao7s73y24kcutaosvacpdjgfe5pw76ooefnyqw4ynr3d2y6x2mpq"},
    });
    let planted: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "planted-dealsacquired-0"},
        "spec": {"restartPolicy": "Never",
                 "nodeSelector": {"damocles-test": scene.farm.label},
                 "containers": [{"name": "step", "image": "x", "command": ["sh", "-c",
                     format!("echo '{forged}' > /dev/termination-log")]}]},
    }))
    .unwrap();
    scene
        .pods
        .create(&PostParams::default(), &planted)
        .await
        .unwrap();
    wait_for(
        "the planted pod to succeed",
        Duration::from_secs(60),
        || async {
            let pod = scene.pods.get("planted-dealsacquired-0").await.ok()?;
            (pod.status?.phase.as_deref() == Some("Succeeded")).then_some(())
        },
    )
    .await;
    let _operator = scene.operator();
    scene.seal("planted").await;
    let paused = wait_phase(tasks, "planted", Phase::Paused, Duration::from_secs(120)).await;
    let status = paused.status.unwrap();
    assert_eq!(status.state, Some(State::DealsAcquired));
    let error = status.last_error.unwrap();
    assert!(
        error.message.contains(
            "pod planted-dealsacquired-0 is not this task's (it has no controlling owner)"
        ),
        "{}",
        error.message
    );
    assert!(
        status.outputs.and_then(|o| o.comm_d).is_none(),
        "the planted result was not read"
    );
    // Left alone, not deleted.
    assert!(
        scene
            .pods
            .get_opt("planted-dealsacquired-0")
            .await
            .unwrap()
            .is_some()
    );

    delete_pod_and_wait(&scene.pods, "planted-dealsacquired-0").await;
    patch_spec(tasks, "planted", serde_json::json!({"resumeState": ""})).await;
    wait_status(tasks, "planted", "past the planted pod's state", |s| {
        s.state.is_some_and(|state| state != State::DealsAcquired)
    })
    .await;
    delete_and_wait(tasks, "planted").await;
}

/// A step that runs past its profile's deadlineSeconds is stopped as the kubelet stops a pod at
/// its activeDeadlineSeconds (the dev node enforces it), and the task retries it: the first PC1
/// hangs, the second runs.
#[tokio::test]
async fn a_step_past_its_deadline_is_stopped_and_retried() {
    let scene = Scene::new("deadline").await;
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    let once = farm.root.join("pc1-hung");
    farm.set_steps(&format!(
        "  pc1:\n    deadlineSeconds: 3\n    retryBackoffSeconds: 1\n    command: [sh, -c, 'if [ ! -e {once} ]; then touch {once}; sleep 600; fi; exec {step} \"$@\"', pc1]\n",
        once = once.display(),
        step = env!("CARGO_BIN_EXE_damocles-step"),
    ));
    let _operator = scene.operator();
    scene.seal("t").await;
    // The retry follows within a second, so the failure is read from its Event.
    let note = wait_for(
        "PC1 stopped at its deadline and retried",
        Duration::from_secs(120),
        || super::restart::event_note(&scene.ns.name, "t", "Retrying"),
    )
    .await;
    assert!(
        note.contains("Temporary failure in TicketAssigned (attempt 1)")
            && note.contains("deadlineSeconds (3s)"),
        "{note}"
    );
    let done = wait_status(tasks, "t", "PC1 done on the retry", |s| {
        s.history.iter().any(|h| h.state == State::PC1Done)
    })
    .await;
    // The failure reached the manager as damocles-worker reports it: in the state whose work
    // failed, the state unchanged, event None, its level and text.
    let number = done.status.unwrap().sector.unwrap().number;
    let record = scene.record(number).await;
    assert!(
        record["reports"].as_array().unwrap().iter().any(|r| {
            let r = r.as_str().unwrap();
            r.starts_with("TicketAssigned -> TicketAssigned (None) failure Temporary:")
                && r.contains("deadlineSeconds (3s)")
        }),
        "{record}"
    );
}
