//! Two replicas: only the leader acts; the standby takes over.

use super::*;

/// Two replicas share a leader-election Lease: the standby writes nothing while the leader works,
/// and when the leader dies mid-task (no clean hand-over) the standby takes over and carries the
/// task on until its PreCommit lands, without a second submission, and a pool's tasks without a
/// duplicate. (Exactly-once proofs across
/// restarts are tests/controller/restart.rs's; this test stops before C2.)
#[tokio::test]
async fn of_two_replicas_only_the_leader_acts_and_the_standby_takes_over() {
    let scene = Scene::new("leader").await;
    let start = |instance: &str| {
        Operator::start_args(
            &scene.ns.name,
            &scene.manager,
            &scene.farm.profiles,
            None,
            &["--instance", instance, "--leader-election-duration", "6s"],
        )
    };
    let leader = start("replica-a");
    wait_for("replica-a leads", Duration::from_secs(60), || async {
        (metric(&leader, "damocles_leader").await? == 1.0).then_some(())
    })
    .await;
    let standby = start("replica-b");
    wait_for("replica-b stands by", Duration::from_secs(60), || async {
        let ready = reqwest::get(format!("http://{}/readyz", standby.metrics))
            .await
            .ok()?;
        (ready.status().is_success() && ready.text().await.ok()?.contains("standby")).then_some(())
    })
    .await;
    scene.seal("t").await;
    // A pool beside it (unseal tasks, which wait at the manager): the leader creates its two.
    super::pool::create_pool(
        &scene,
        "u",
        serde_json::json!({"template": {"plan": "unseal", "sectorSize": "2KiB"}, "inFlight": 2}),
    )
    .await;
    wait_for(
        "the leader's pool tasks",
        Duration::from_secs(60),
        || async {
            let pool = super::pool::pools(&scene).get("u").await.ok()?;
            (pool.status?.created == 2).then_some(())
        },
    )
    .await;
    wait_status(&scene.tasks, "t", "the task past PC2", |s| {
        s.history.iter().any(|h| h.state == State::PC2Done)
    })
    .await;
    assert_eq!(metric(&standby, "damocles_leader").await, Some(0.0));
    assert_eq!(
        metric(&standby, "damocles_api_writes_total").await,
        Some(0.0),
        "the standby wrote nothing"
    );
    assert!(metric(&leader, "damocles_api_writes_total").await.unwrap() > 0.0);

    drop(leader);
    wait_for(
        "replica-b leads and writes",
        Duration::from_secs(120),
        || async {
            let leads = metric(&standby, "damocles_leader").await? == 1.0;
            (leads && metric(&standby, "damocles_api_writes_total").await? > 0.0).then_some(())
        },
    )
    .await;
    let task = wait_status(&scene.tasks, "t", "the PreCommit landed", |s| {
        s.history.iter().any(|h| h.state == State::PCLanded)
    })
    .await;
    // The new leader created no duplicate of the pool's tasks.
    let pool = super::pool::pools(&scene).get("u").await.unwrap();
    assert_eq!(pool.status.unwrap().created, 2);
    let names: Vec<String> = super::pool::pool_tasks(&scene, "u")
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert_eq!(names, ["u-0", "u-1"]);
    let sector = task.status.unwrap().sector.unwrap();
    let record = scene.record(sector.number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["messages"]["SubmitPreCommit"], 1, "{record}");
    delete_and_wait(&scene.tasks, "t").await;
}
