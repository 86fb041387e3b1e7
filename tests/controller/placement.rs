//! Where step pods run: C2 on the GPU node, concurrency caps, a first pod that never starts.

use super::*;

/// A farm of a PC1 box (hugepages, no GPU) and a GPU box, with C2 on `locality: any`, a GPU
/// request and a concurrency cap of one: each task's workspace goes to the PC1 box (what its
/// workspace steps need), C1 leaves its output in the persist store, C2 runs on the GPU box only,
/// the second C2 waits its turn, and the transfer files go when the tasks end. The first task
/// finishes (its C2 read its C1 output across nodes); the second is deleted once its C2 runs, so
/// the suite computes one proof here, not two.
#[tokio::test]
async fn c2_runs_on_the_gpu_node_away_from_the_workspace_and_concurrency_caps_hold() {
    let pc1_node = unique("pc1");
    let gpu_node = unique("gpu");
    let scene = Scene::with_nodes(
        "gpu",
        &[
            (&pc1_node, "label:damocles.io/hugepages=true"),
            (&gpu_node, "nvidia.com/gpu=2,label:damocles.io/gpu=true"),
        ],
        |label| {
            format!(
                "  pc1:\n    nodeSelector: {{damocles-test: {label}, damocles.io/hugepages: \"true\"}}\n  c2:\n    nodeSelector: {{damocles-test: {label}, damocles.io/gpu: \"true\"}}\n    resources: {{limits: {{nvidia.com/gpu: \"1\"}}}}\n    concurrency: 1\n    locality: any\n"
            )
        },
    )
    .await;
    let (tasks, pods, farm) = (&scene.tasks, &scene.pods, &scene.farm);
    let _operator = scene.operator();
    scene.seal("one").await;
    scene.seal("two").await;

    // Watch every step pod and both tasks until one has finished and cleaned up and the other's
    // C2 runs on the GPU box.
    let mut nodes_by_step = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let mut c2_pods = std::collections::BTreeMap::new();
    let (mut most_c2_at_once, mut waited_for_slot) = (0, false);
    let started = std::time::Instant::now();
    loop {
        let pods = pods.list(&ListParams::default()).await.unwrap().items;
        let tasks = tasks.list(&ListParams::default()).await.unwrap().items;
        let step_of = |p: &Pod| {
            p.labels()
                .get("damocles.io/step")
                .cloned()
                .unwrap_or_default()
        };
        let c2: Vec<&Pod> = pods.iter().filter(|p| step_of(p) == "c2").collect();
        let live = c2
            .iter()
            .filter(|p| {
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                !matches!(phase, Some("Succeeded" | "Failed"))
            })
            .count();
        most_c2_at_once = most_c2_at_once.max(live);
        for pod in &c2 {
            c2_pods.insert(pod.name_any(), pod.spec.clone().unwrap());
        }
        for pod in &pods {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                nodes_by_step.entry(step_of(pod)).or_default().insert(node);
            }
        }
        let phase = |t: &SealingTask| t.status.as_ref().and_then(|s| s.phase);
        waited_for_slot |= tasks.iter().any(|t| {
            phase(t) == Some(Phase::Waiting)
                && t.status
                    .as_ref()
                    .and_then(|s| s.message.as_deref())
                    .is_some_and(|m| m.contains("waiting for a c2 slot"))
        });
        if let Some(paused) = tasks.iter().find(|t| phase(t) == Some(Phase::Paused)) {
            panic!("{} paused: {:?}", paused.name_any(), paused.status);
        }
        let cleaned = |t: &SealingTask| {
            t.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "WorkspaceCleaned" && c.status == "True")
            })
        };
        let finished = tasks
            .iter()
            .find(|t| phase(t) == Some(Phase::Finished) && cleaned(t));
        let second_c2_running = c2.iter().any(|p| {
            let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
            let task = p.labels().get("damocles.io/task");
            phase == Some("Running") && finished.is_some_and(|f| task != Some(&f.name_any()))
        });
        if tasks.len() == 2 && finished.is_some() && second_c2_running {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "timed out waiting for one task to finish and the other's C2 to run"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(most_c2_at_once, 1, "the C2 cap of one held");
    assert!(waited_for_slot, "one task waited for the C2 slot");
    for (step, nodes) in &nodes_by_step {
        let expected = if step == "c2" { &gpu_node } else { &pc1_node };
        assert_eq!(
            nodes,
            &BTreeSet::from([expected.clone()]),
            "where the {step} pods ran"
        );
    }
    assert!(!c2_pods.is_empty());
    for (name, spec) in &c2_pods {
        let limits = spec.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("nvidia.com/gpu"))
            .map(|q| q.0.as_str());
        assert_eq!(limits, Some("1"), "{name}");
        let volumes = spec.volumes.as_deref().unwrap_or_default();
        let workspace = volumes.iter().find(|v| v.name == "workspace").unwrap();
        assert!(
            workspace.empty_dir.is_some() && workspace.host_path.is_none(),
            "{name}: scratch, not the task's workspace"
        );
    }
    let transfer = farm.store().join("transfer");
    let mut c1_outputs = vec![];
    for name in ["one", "two"] {
        let status = tasks.get(name).await.unwrap().status.unwrap();
        assert_eq!(status.node.as_deref(), Some(pc1_node.as_str()));
        let c1 = status.outputs.unwrap().c1_output.unwrap();
        assert!(
            Path::new(&c1.location).starts_with(&transfer),
            "C1 wrote {} for the C2 on the GPU node",
            c1.location
        );
        c1_outputs.push((status.phase, c1.location));
    }
    for name in ["one", "two"] {
        if tasks.get(name).await.unwrap().status.unwrap().phase != Some(Phase::Finished) {
            delete_and_wait(tasks, name).await;
        }
    }
    for (phase, location) in c1_outputs {
        assert!(
            !Path::new(&location).exists(),
            "{location} removed when its task ended ({phase:?}, or deleted)"
        );
    }
    assert_eq!(
        std::fs::read_dir(&transfer).unwrap().count(),
        0,
        "nothing left in {}",
        transfer.display()
    );
}

/// A first step pod bound to a node where it cannot start (every image pull there fails) is
/// replaced after the profile's start timeout, without spending the retry budget, by one that
/// prefers another node; the workspace is then that node's.
#[tokio::test]
async fn a_first_pod_that_never_starts_is_replaced_on_another_node() {
    let broken = unique("broken");
    let healthy = unique("healthy");
    // Only the broken node at first, so the scheduler has nowhere else to put the first pod.
    let scene = Scene::with_nodes("nostart", &[(&broken, "pull=fail")], |_| {
        "  add-piece:\n    startTimeoutSeconds: 3\n".into()
    })
    .await;
    let (tasks, pods) = (&scene.tasks, &scene.pods);
    let _operator = scene.operator();
    scene.seal("t").await;

    let first = wait_for(
        "the first pod stuck pulling",
        Duration::from_secs(120),
        || async {
            let pod = pods.list(&ListParams::default()).await.ok()?.items.pop()?;
            let waiting = pod.status.as_ref()?.container_statuses.as_ref()?[0]
                .state
                .as_ref()?
                .waiting
                .clone()?;
            // kubelet (and the dev node) reports ErrImagePull, then ImagePullBackOff.
            matches!(
                waiting.reason.as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
            .then_some(pod)
        },
    )
    .await;
    assert_eq!(
        first.spec.as_ref().unwrap().node_name.as_deref(),
        Some(broken.as_str())
    );
    let stuck = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(stuck.node, None, "no workspace yet: nothing ran");
    let _healthy_node = scene.add_node(&healthy, "").await;

    let moved = wait_status(tasks, "t", "a workspace node chosen", |s| s.node.is_some()).await;
    let status = moved.status.unwrap();
    assert_eq!(status.node.as_deref(), Some(healthy.as_str()));
    assert_eq!(status.last_error, None, "no retry budget spent: {status:?}");
    let replacement = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|p| {
            let (step, _attempt) = first
                .name_any()
                .rsplit_once('-')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap();
            p.name_any() != first.name_any() && p.name_any().starts_with(&format!("{step}-"))
        })
        .expect("a replacement pod for the same step");
    assert_eq!(
        replacement.spec.as_ref().unwrap().node_name.as_deref(),
        Some(healthy.as_str())
    );
    let preferred = replacement
        .spec
        .unwrap()
        .affinity
        .unwrap()
        .node_affinity
        .unwrap()
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(
        preferred[0].preference.match_fields.as_ref().unwrap()[0].values,
        Some(vec![broken.clone()])
    );

    delete_and_wait(tasks, "t").await;
}

/// A step image the registry does not have: the dev node reports ErrImagePull, then
/// ImagePullBackOff, as kubelet does. The PC2 pod is pinned to the task's workspace, where
/// another pod would meet the same image: past its start timeout the task pauses with the image
/// named, instead of replacing the pod forever.
#[tokio::test]
async fn a_step_image_that_cannot_be_pulled_pauses_the_task_naming_it() {
    const MISSING: &str = "registry.example/damocles-step:missing";
    let scene = Scene::with_dev_node_args(
        "unpullable",
        &[(&unique("worker"), "")],
        |_| format!("  pc2:\n    image: {MISSING}\n    startTimeoutSeconds: 3\n"),
        &["--missing-image", MISSING],
    )
    .await;
    let tasks = &scene.tasks;
    let _operator = scene.operator();
    scene.seal("t").await;
    let paused = wait_phase(tasks, "t", Phase::Paused, Duration::from_secs(240)).await;
    let status = paused.status.unwrap();
    assert_eq!(status.state, Some(State::PC1Done));
    let last = status.last_error.unwrap();
    assert_eq!(last.level, damocles_operator::api::FailureLevel::Permanent);
    assert!(last.message.contains(MISSING), "{}", last.message);
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("a Failed condition");
    assert!(failed.message.contains(MISSING), "{failed:?}");
    wait_for("the stuck pod deleted", Duration::from_secs(30), || async {
        let pods = scene
            .pods
            .list(&ListParams::default().labels("damocles.io/step=pc2"))
            .await
            .ok()?;
        pods.items
            .iter()
            .all(|p| p.metadata.deletion_timestamp.is_some())
            .then_some(())
    })
    .await;
    delete_and_wait(tasks, "t").await;
}
