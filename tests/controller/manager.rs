//! The manager as the production damocles-manager behaves: a sector aborted at the manager, and
//! a manager that stops answering for minutes.

use super::*;

/// The sector is aborted at the manager (`damocles-manager util sealer sectors abort` calls
/// ReportAborted) while its task is suspended in PC1: the heartbeat of the paused task finds it
/// offline, and the task ends Aborted with the manager's reason and removes its workspace,
/// without a ReportAborted of its own (the manager would answer 11001). A second task's sector
/// is aborted there while its C2 runs, its replica only in the workspace: the heartbeat stops
/// the step at once but keeps the files, pausing the task (FinalizedAtManager) until it is told
/// `resumeState: Aborted`.
#[tokio::test]
async fn a_sector_aborted_at_the_manager_ends_its_task_unless_it_holds_the_only_replica() {
    let scene = Scene::new("mgr-abort").await;
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    // The first PC1 and the first C2 take long enough to be interrupted.
    let slow_once = |step: &str| {
        let once = farm.root.join(format!("{step}-slowed"));
        format!(
            "  {step}:\n    command: [sh, -c, 'if [ ! -e {once} ]; then touch {once}; sleep 120; fi; exec {bin} \"$@\"', {step}]\n",
            once = once.display(),
            bin = env!("CARGO_BIN_EXE_damocles-step"),
        )
    };
    farm.set_steps(&format!("{}{}", slow_once("pc1"), slow_once("c2")));
    let operator = Operator::start_args(
        &scene.ns.name,
        &scene.manager,
        &farm.profiles,
        None,
        &["--manager-heartbeat", "1s"],
    );
    let manager = &scene.manager;
    let abort_at_manager = |sector: damocles_operator::api::SectorRef| async move {
        manager
            .client()
            .report_aborted(
                damocles_operator::manager::wire::SectorId {
                    miner: sector.miner,
                    number: sector.number,
                },
                "aborted via CLI",
            )
            .await
            .unwrap();
    };
    scene.seal("t").await;
    let running = wait_status(tasks, "t", "PC1 running", |s| {
        s.state == Some(State::TicketAssigned) && s.step_pod.is_some()
    })
    .await;
    let status = running.status.unwrap();
    let sector = status.sector.unwrap();
    running_pod(&scene.pods, status.step_pod.as_deref().unwrap()).await;
    patch_spec(tasks, "t", serde_json::json!({"suspend": true})).await;
    wait_status(tasks, "t", "suspended", |s| s.phase == Some(Phase::Paused)).await;
    abort_at_manager(sector).await;

    let aborted = wait_status(tasks, "t", "aborted, workspace cleaned", |s| {
        s.phase == Some(Phase::Aborted)
            && condition(s, "WorkspaceCleaned").is_some_and(|(status, _)| status == "True")
    })
    .await;
    let status = aborted.status.unwrap();
    let last = status.last_error.unwrap();
    assert_eq!(last.level, damocles_operator::api::FailureLevel::Abort);
    assert_eq!(
        last.message,
        "the manager aborted the sector: aborted via CLI"
    );
    assert!(!scene.workspace("t").exists());
    let record = scene.record(sector.number).await;
    assert_eq!(record["aborted"], "aborted via CLI", "{record}");
    let metrics = metrics_text(&operator.metrics).await.unwrap();
    assert!(
        metrics.contains("method=\"ReportState\""),
        "the heartbeat is counted: {metrics}"
    );
    assert!(
        !metrics.contains("method=\"ReportAborted\""),
        "no ReportAborted was sent"
    );

    scene.seal("kept").await;
    let running = wait_status(tasks, "kept", "C2 running", |s| {
        s.state == Some(State::C1Done) && s.step_pod.is_some()
    })
    .await;
    let status = running.status.unwrap();
    let sector = status.sector.unwrap();
    let pod = running_pod(&scene.pods, status.step_pod.as_deref().unwrap()).await;
    let started = std::time::Instant::now();
    abort_at_manager(sector).await;
    let paused = wait_status(tasks, "kept", "paused, its replica kept", |s| {
        s.phase == Some(Phase::Paused)
            && condition(s, "FinalizedAtManager").is_some_and(|(status, _)| status == "True")
    })
    .await;
    assert_eq!(paused.status.unwrap().state, Some(State::C1Done));
    let workspace = scene.workspace("kept");
    assert!(workspace.join("sealed").is_dir(), "the replica is kept");
    wait_for("the C2 pod deleted", Duration::from_secs(30), || async {
        scene
            .pods
            .get_opt(&pod.name_any())
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the step was interrupted, not waited for"
    );
    patch_spec(tasks, "kept", serde_json::json!({"resumeState": "Aborted"})).await;
    wait_status(
        tasks,
        "kept",
        "aborted by the person, workspace cleaned",
        |s| {
            s.phase == Some(Phase::Aborted)
                && condition(s, "WorkspaceCleaned").is_some_and(|(status, _)| status == "True")
        },
    )
    .await;
    assert!(!workspace.exists());
    let record = scene.record(sector.number).await;
    assert_eq!(record["aborted"], "aborted via CLI", "{record}");
}

/// The manager process stops for 2 minutes (connection refused) in the middle of a pipeline:
/// the task neither pauses nor spends a retry; it waits in phase Waiting with the
/// ManagerUnavailable condition and finishes once the manager is back. (One task: the decisions
/// of several are the same core's, table-tested in src/task/tests/manager.rs, and each more task
/// here costs CI a C2.) The dev chain runs 1500 times faster than mainnet
/// (20 ms epochs), so its ticket lifetime is set to mainnet's in wall time (31 hours); otherwise
/// 2 minutes would be 2.5 days of chain and every ticket drawn before the outage would expire.
#[tokio::test]
async fn a_two_minute_manager_outage_pauses_no_task_and_the_task_finishes() {
    let mut scene = Scene::new("outage").await;
    scene.manager = scene.farm.manager_with(&["--ticket-max-age", "5600000"]);
    let tasks = scene.tasks.clone();
    let _operator = Operator::start_args(
        &scene.ns.name,
        &scene.manager,
        &scene.farm.profiles,
        None,
        &["--manager-retry-max", "5s", "--manager-heartbeat", "2s"],
    );
    scene.seal("a").await;
    wait_status(&tasks, "a", "PC1 done", |s| {
        s.history.iter().any(|h| h.state == State::PC1Done)
    })
    .await;
    scene.manager.stop();
    let down = std::time::Instant::now();

    let never_paused = || {
        let tasks = tasks.clone();
        async move {
            let status = tasks.get("a").await.unwrap().status.unwrap_or_default();
            assert_ne!(
                status.phase,
                Some(Phase::Paused),
                "paused: {:?}",
                status.last_error
            );
            assert_eq!(status.last_error, None, "a retry was spent");
            status
        }
    };
    let mut waited = false;
    while down.elapsed() < Duration::from_secs(120) {
        let status = never_paused().await;
        waited |= status.phase == Some(Phase::Waiting)
            && condition(&status, "ManagerUnavailable") == Some(("True".into(), "NoAnswer".into()));
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    assert!(waited, "the task waited for the manager");
    scene.manager.restart();

    wait_phase(&tasks, "a", Phase::Finished, Duration::from_secs(600)).await;
    // Finished is written before the manager is told (crash-schedule.md): the report's answer
    // follows it.
    let done = wait_status(&tasks, "a", "the end reported", |s| {
        condition(s, "ManagerFinalized").is_some()
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(
        condition(&status, "ManagerUnavailable"),
        Some(("False".into(), "Answered".into()))
    );
    assert_eq!(
        condition(&status, "ManagerFinalized"),
        Some(("True".into(), "Reported".into()))
    );
    let record = scene.record(status.sector.unwrap().number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    assert_eq!(record["finalized"], true, "{record}");
}
