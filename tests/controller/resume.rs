//! A person's hand: pod loss, suspend, refused and applied resumes, abort.

use super::*;

/// A C2 pod is interrupted in every way a user can. Its profile holds each C2 ten minutes before
/// damocles-step starts (the same image and arguments, a `sleep` in front), so every interruption
/// lands on a running pod and no proof the test throws away is computed.
#[tokio::test]
async fn a_running_step_survives_pod_loss_and_obeys_suspend_refused_resume_and_abort() {
    let scene = Scene::with_nodes("interrupt", &[(&unique("worker"), "")], |_| {
        format!(
            "  c2:\n    command: [sh, -c, 'sleep 600; exec {step} \"$@\"', c2]\n",
            step = env!("CARGO_BIN_EXE_damocles-step"),
        )
    })
    .await;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    let pods = &scene.pods;
    let _operator = scene.operator();
    scene.seal("t").await;

    // A step pod deleted mid-run is replaced under the next attempt's name, the budget untouched.
    let c2 = wait_status(tasks, "t", "C2 started", |s| {
        s.state == Some(State::C1Done) && s.step_pod.is_some()
    })
    .await;
    let first = c2.status.unwrap().step_pod.unwrap();
    running_pod(pods, &first).await;
    pods.delete(&first, &Default::default()).await.unwrap();
    let replaced = wait_status(tasks, "t", "C2 restarted", |s| {
        s.step_pod.as_deref().is_some_and(|p| p != first)
    })
    .await;
    let status = replaced.status.unwrap();
    assert_eq!(status.state, Some(State::C1Done));
    assert!(
        status.last_error.is_none(),
        "no retry budget spent: {:?}",
        status.last_error
    );
    let second = status.step_pod.unwrap();
    running_pod(pods, &second).await;

    // Suspend stops the step and keeps the state; unsuspending runs it again.
    patch_spec(tasks, "t", serde_json::json!({"suspend": true})).await;
    wait_status(tasks, "t", "suspended", |s| s.phase == Some(Phase::Paused)).await;
    wait_for(
        "the suspended step's pod gone",
        Duration::from_secs(30),
        || async { pods.get_opt(&second).await.ok()?.is_none().then_some(()) },
    )
    .await;
    patch_spec(tasks, "t", serde_json::json!({"suspend": false})).await;
    let resumed = wait_status(tasks, "t", "running again", |s| {
        s.phase == Some(Phase::Running) && s.step_pod.as_deref().is_some_and(|p| p != second)
    })
    .await;
    let third = resumed.status.unwrap().step_pod.unwrap();

    // A resume into the current state is refused: a condition, the value cleared, nothing else.
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "C1Done"})).await;
    wait_status(tasks, "t", "ResumeRejected", |s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == "ResumeRejected" && c.status == "True")
    })
    .await;
    let refused = resume_cleared(tasks, "t").await;
    let status = refused.status.unwrap();
    assert_eq!(
        (status.state, status.step_pod.as_deref()),
        (Some(State::C1Done), Some(third.as_str()))
    );

    // Aborted works at any time: the running step is stopped, the manager told, the spec cleared.
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "Aborted"})).await;
    wait_phase(tasks, "t", Phase::Aborted, Duration::from_secs(60)).await;
    // Applied once (recorded in status first, so a crash cannot lose it), then cleared.
    let aborted = resume_cleared(tasks, "t").await;
    let status = aborted.status.unwrap();
    assert_eq!(status.last_resume.unwrap().to, State::Aborted);
    wait_for(
        "the aborted step's pod gone",
        Duration::from_secs(30),
        || async { pods.get_opt(&third).await.ok()?.is_none().then_some(()) },
    )
    .await;
    let sector = status.sector.unwrap();
    let chain = manager.admin("/admin/state", None).await;
    let reason = &chain["chain"]["sectors"][sector.number.to_string()]["aborted"];
    assert!(reason.as_str().unwrap().contains("resumeState"), "{reason}");
}

/// Runs `kubectl damocles ARGS` in the scene's namespace, as the cluster's admin.
fn plugin(scene: &Scene, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_kubectl-damocles"))
        .args(["--namespace", &scene.ns.name])
        .args(args)
        .env("KUBECONFIG", &crate::support::cluster::cluster().kubeconfig)
        .output()
        .expect("kubectl-damocles runs")
}

/// A permanent failure pauses the task with its files; a rewind to TreeDBuilt gets a new ticket
/// and the task finishes, although its PreCommit and its proof messages each fail on chain once:
/// each is resubmitted with reset, as damocles-manager needs (without reset it answers Accepted
/// and sends nothing, and the task would poll Failed forever).
#[tokio::test]
async fn a_paused_task_is_rewound_by_resume_state_and_finishes() {
    let scene = Scene::new("rewind").await;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    manager
        .admin(
            "/admin/faults",
            Some(serde_json::json!({"SubmitPreCommit": {"forceResult": 3}})),
        )
        .await;
    let _operator = scene.operator();
    scene.seal("t").await;
    let paused = wait_phase(tasks, "t", Phase::Paused, Duration::from_secs(120)).await;
    let status = paused.status.unwrap();
    assert_eq!(status.state, Some(State::PC2Done));
    let error = status.last_error.unwrap();
    assert_eq!(error.level, damocles_operator::api::FailureLevel::Permanent);
    let first_ticket = status.outputs.unwrap().ticket.unwrap();

    manager
        .admin(
            "/admin/faults",
            Some(serde_json::json!({
                "SubmitPreCommit": {"failOnChain": 1},
                "SubmitProof": {"failOnChain": 1},
            })),
        )
        .await;
    // `kubectl damocles why` says what failed and where it may resume; a resume the operator
    // would refuse is refused before anything is patched; an accepted one is applied.
    let why = plugin(&scene, &["why", "t"]);
    assert!(why.status.success(), "{why:?}");
    let report = String::from_utf8_lossy(&why.stdout);
    assert!(
        report.contains(&error.message)
            && report.contains("valid now:")
            && report.contains("TreeDBuilt"),
        "{report}"
    );
    let refused = plugin(&scene, &["resume", "t", "--state", "C1Done"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("not resumed, nothing was changed"),
        "{stderr}"
    );
    let unchanged = tasks.get("t").await.unwrap();
    assert_eq!(unchanged.spec.resume_state, None, "nothing patched");
    let resumed = plugin(&scene, &["resume", "t", "--state", "TreeDBuilt"]);
    assert!(resumed.status.success(), "{resumed:?}");
    wait_status(tasks, "t", "the resume applied", |s| {
        s.last_resume.is_some()
    })
    .await;
    let done = wait_phase(tasks, "t", Phase::Finished, Duration::from_secs(600)).await;
    assert_eq!(done.spec.resume_state, None);
    let status = done.status.unwrap();
    let resume = status.last_resume.unwrap();
    assert_eq!(
        (resume.from, resume.to),
        (State::PC2Done, State::TreeDBuilt)
    );
    let ticket = status.outputs.unwrap().ticket.unwrap();
    assert!(
        ticket.epoch > first_ticket.epoch,
        "a new ticket: {ticket:?} after {first_ticket:?}"
    );
    let record = scene.record(status.sector.unwrap().number).await;
    for method in ["SubmitPreCommit", "SubmitProof"] {
        assert_eq!(
            (&record["submissions"][method], &record["messages"][method]),
            (&serde_json::json!(2), &serde_json::json!(2)),
            "{method}: one message failed on chain, one resubmitted with reset: {record}"
        );
    }
}
