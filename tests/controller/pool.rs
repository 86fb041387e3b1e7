//! SealingPools: tasks kept in flight up to a total, history kept as asked, nothing extra across a
//! restart. The CI test uses unseal tasks, which wait at the manager (nothing is queued) and so
//! stay in flight until the test aborts them: no proofs. The long run seals four sectors.

use super::*;
use damocles_operator::api::{SealingPool, SealingPoolStatus};

pub(super) fn pools(scene: &Scene) -> Api<SealingPool> {
    Api::namespaced(scene.client.clone(), &scene.ns.name)
}

pub(super) async fn create_pool(scene: &Scene, name: &str, spec: serde_json::Value) {
    let pool: SealingPool = serde_json::from_value(serde_json::json!({
        "apiVersion": "damocles.io/v1alpha1",
        "kind": "SealingPool",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    pools(scene)
        .create(&PostParams::default(), &pool)
        .await
        .unwrap();
}

/// The pool's tasks (by its label), by name, with their phase.
pub(super) async fn pool_tasks(scene: &Scene, pool: &str) -> Vec<(String, Option<Phase>)> {
    let selector = format!("damocles.io/pool={pool}");
    let mut tasks: Vec<(String, Option<Phase>)> = scene
        .tasks
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|t| (t.name_any(), t.status.and_then(|s| s.phase)))
        .collect();
    tasks.sort_by(|a, b| a.0.cmp(&b.0));
    tasks
}

fn in_flight(tasks: &[(String, Option<Phase>)]) -> usize {
    tasks
        .iter()
        .filter(|(_, phase)| !matches!(phase, Some(Phase::Finished | Phase::Aborted)))
        .count()
}

async fn wait_pool<F>(scene: &Scene, name: &str, what: &str, check: F) -> SealingPoolStatus
where
    F: Fn(&SealingPoolStatus) -> bool,
{
    wait_for(what, Duration::from_secs(120), || async {
        let pool = pools(scene).get(name).await.ok()?;
        pool.status.filter(|s| check(s))
    })
    .await
}

/// Aborts the pool task `name` and waits until it is Aborted. It may be Paused first: an
/// operator killed between writing an AllocateUnsealSector intent and recording the manager's
/// answer finds the intent on restart and pauses the task (the job may have been handed out).
async fn abort(scene: &Scene, name: &str) {
    patch_spec(
        &scene.tasks,
        name,
        serde_json::json!({"resumeState": "Aborted"}),
    )
    .await;
    wait_status(&scene.tasks, name, &format!("{name} aborted"), |s| {
        s.phase == Some(Phase::Aborted)
    })
    .await;
}

/// A pool of unseal tasks: exactly inFlight in flight, replaced as they end up to the total, the
/// aborted history trimmed to its limit, scaled up with a patch, and across an operator restart
/// not one task more.
#[tokio::test]
async fn a_pool_keeps_its_tasks_in_flight_up_to_its_total_across_a_restart() {
    let scene = Scene::new("pool").await;
    let operator = scene.operator();
    create_pool(
        &scene,
        "u",
        serde_json::json!({
            "template": {"plan": "unseal", "sectorSize": "2KiB"},
            "inFlight": 2,
            "total": 5,
            "abortedHistoryLimit": 1,
        }),
    )
    .await;
    wait_pool(&scene, "u", "two tasks created", |s| {
        s.created == 2 && s.active == 2
    })
    .await;
    // Nothing more arrives while the two wait at the manager, nor after a restart.
    tokio::time::sleep(Duration::from_secs(3)).await;
    drop(operator);
    let operator = scene.operator();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tasks = pool_tasks(&scene, "u").await;
    let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["u-0", "u-1"], "{tasks:?}");
    let task = scene.tasks.get("u-0").await.unwrap();
    assert_eq!(
        task.owner_references()[0].kind,
        "SealingPool",
        "owned by the pool"
    );
    assert_eq!(task.spec.plan, damocles_operator::api::PlanKind::Unseal);

    // An aborted task is replaced; of two aborted, the older goes (history limit 1), counted.
    abort(&scene, "u-0").await;
    wait_pool(&scene, "u", "u-2 replaces u-0", |s| s.created == 3).await;
    abort(&scene, "u-1").await;
    wait_gone(&scene.tasks, "u-0").await;
    let status = wait_pool(&scene, "u", "u-0 retired", |s| {
        s.created == 4 && s.retired.aborted == 1
    })
    .await;
    assert_eq!((status.aborted, status.active), (2, 2), "{status:?}");
    assert_eq!(in_flight(&pool_tasks(&scene, "u").await), 2);

    // Scaled to three: one more, which is the fifth and last.
    pools(&scene)
        .patch(
            "u",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&serde_json::json!({"spec": {"inFlight": 3}})),
        )
        .await
        .unwrap();
    wait_pool(&scene, "u", "u-4 created", |s| s.created == 5).await;
    for name in ["u-2", "u-3", "u-4"] {
        abort(&scene, name).await;
    }
    let status = wait_pool(&scene, "u", "every task ended", |s| {
        s.aborted == 5 && s.retiring.is_empty() && s.retired.aborted == 4
    })
    .await;
    assert!(
        status.message.as_deref().unwrap().starts_with("done"),
        "{status:?}"
    );
    let tasks = pool_tasks(&scene, "u").await;
    assert_eq!(
        tasks,
        [("u-4".to_string(), Some(Phase::Aborted))],
        "the newest aborted task kept, no sixth task"
    );
    drop(operator);
}

/// A pool of two sealers in flight seals four sectors (each proof verified by the manager), never
/// more than two at once, keeps the two newest as its history, and an operator restart midway
/// creates nothing extra.
#[tokio::test]
#[ignore = "long run (scripts/test-long): four 2KiB C2s"]
async fn a_pool_of_two_seals_four_sectors() {
    let scene = Scene::new("pool-seal").await;
    let mut operator = Some(scene.operator());
    create_pool(
        &scene,
        "cc",
        serde_json::json!({
            "template": {"plan": "sealer", "sectorSize": "2KiB"},
            "inFlight": 2,
            "total": 4,
            "finishedHistoryLimit": 2,
        }),
    )
    .await;
    let mut most = 0;
    let mut restarted = false;
    let deadline = std::time::Instant::now() + Duration::from_secs(1800);
    let status = loop {
        let tasks = pool_tasks(&scene, "cc").await;
        most = most.max(in_flight(&tasks));
        let finished = tasks
            .iter()
            .filter(|(_, phase)| *phase == Some(Phase::Finished))
            .count();
        if finished >= 1 && !restarted {
            // Once the first sector is sealed: a restart while the others are in flight.
            drop(operator.take());
            operator = Some(scene.operator());
            restarted = true;
        }
        let status = pools(&scene).get("cc").await.unwrap().status;
        if let Some(status) = status.filter(|s| s.finished == 4 && s.retiring.is_empty()) {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "four sectors not sealed in time: {tasks:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(most <= 2, "at most two in flight, saw {most}");
    assert_eq!((status.created, status.aborted), (4, 0), "{status:?}");
    let tasks = pool_tasks(&scene, "cc").await;
    let names: Vec<&str> = tasks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["cc-2", "cc-3"], "the two newest kept: {tasks:?}");
    // The manager's records: four sectors, each proved once.
    let chain = scene.manager.admin("/admin/state", None).await;
    let sectors = chain["chain"]["sectors"].as_object().unwrap();
    assert_eq!(sectors.len(), 4, "{chain}");
    for (number, record) in sectors {
        assert!(record["proof"].is_object(), "sector {number}: {record}");
        assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    }
    assert!(restarted);
    drop(operator);
}
