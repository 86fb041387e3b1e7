//! The plans end to end: a sealer to Finished with its proof verified, then rebuild and unseal of
//! that sector; snap-up of another (a long-run test: scripts/test-long).

use super::*;
use crate::support::dev_manager::MARKET_TOKEN;
use damocles_operator::api::SealingTaskStatus;

/// The metric names docs/metrics.md lists: the first column of its tables.
fn documented_metrics() -> Vec<String> {
    let doc = include_str!("../../docs/metrics.md");
    doc.lines()
        .filter_map(|line| line.strip_prefix("| `damocles_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("damocles_{}", name.split('{').next().unwrap()))
        .collect()
}

/// Waits until the manager answered the task's ReportFinalized.
pub(super) async fn reported_finalized(tasks: &Api<SealingTask>, name: &str) {
    wait_status(tasks, name, "ManagerFinalized", |s| {
        condition(s, "ManagerFinalized").is_some_and(|(status, _)| status == "True")
    })
    .await;
}

/// A sealer task (examples/sealer-2kib.yaml) to Finished: its proof verified by the manager, its
/// workspace and step pods gone, and the operator's metrics at `operator_metrics` (the API-write
/// budget of docs/benchmarks.md, which this prints with the step-to-step latencies).
async fn a_sealer_task_reaches_finished_with_its_proof_verified(
    scene: &Scene,
    operator_metrics: &str,
    name: &str,
    spec: serde_json::Value,
) -> SealingTaskStatus {
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    let pods = &scene.pods;
    let timeline = PodTimeline::watch(pods.clone());
    create_example(tasks, "sealer-2kib.yaml", name, spec).await;

    let task = wait_phase(tasks, name, Phase::Finished, Duration::from_secs(600)).await;
    reported_finalized(tasks, name).await;
    let status = task.status.unwrap();
    assert_eq!(status.state, Some(State::Finished));
    let sector = status.sector.expect("allocated");
    let visited: Vec<State> = status.history.iter().map(|h| h.state).collect();
    assert!(
        visited.contains(&State::PCLanded) && visited.contains(&State::ProofSubmitted),
        "{visited:?}"
    );
    assert!(status.node.is_some(), "pinned to the node of its workspace");
    // The Sector column, and the selectable fields `kubectl get st --field-selector` selects by
    // (the apiserver evaluates them against the status: no labels to write).
    assert_eq!(status.sector_name, Some(sector.to_string()));
    let (fields, _) =
        damocles_operator::plugin::list_selectors(Some(sector.number), Some(sector.miner), None);
    for selector in [
        fields,
        format!("status.sectorName={sector},status.phase=Finished,spec.plan=sealer"),
    ] {
        let found: Vec<String> = tasks
            .list(&ListParams::default().fields(&selector))
            .await
            .unwrap()
            .items
            .iter()
            .map(|t| t.name_any())
            .collect();
        assert_eq!(found, [name], "{selector}");
    }

    let record = &scene.record(sector.number).await;
    assert!(
        record["proof"].is_object(),
        "the dev manager accepted a verified proof: {record}"
    );
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    assert_eq!(record["finalized"], true, "{record}");
    assert!(farm.store().join(format!("sealed/{sector}")).is_file());
    let workspace = scene.workspace(name);
    wait_for(
        "the finished task's workspace removed",
        Duration::from_secs(30),
        || async { (!workspace.exists()).then_some(()) },
    )
    .await;

    // The operator's own view: the task counted as finished, each step's duration, its API writes.
    let metrics = metrics_text(operator_metrics).await.unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
    };
    assert_eq!(
        value(r#"damocles_tasks{plan="sealer",phase="Finished",state="Finished"}"#),
        1.0
    );
    assert_eq!(
        value(r#"damocles_step_duration_seconds_count{step="c2",sector_size="2KiB"}"#),
        1.0
    );
    // Tree-d ran in the add-piece pod: counted as a step, with no pod of its own.
    assert_eq!(
        value(r#"damocles_step_duration_seconds_count{step="tree-d",sector_size="2KiB"}"#),
        1.0
    );
    let seen = timeline.names();
    assert!(
        seen.iter().any(|pod| pod.contains("-dealsacquired-"))
            && !seen.iter().any(|pod| pod.contains("-pieceadded-")),
        "no tree-d pod: {seen:?}"
    );
    // Every manager call counted by method and result, and timed.
    assert_eq!(
        value(r#"damocles_manager_calls_total{method="SubmitProof",result="ok"}"#),
        1.0
    );
    assert!(
        value(r#"damocles_manager_call_duration_seconds_count{method="PollPreCommitState"}"#)
            >= 2.0,
        "polled before the submission and until it landed"
    );
    let transitions = value("damocles_transitions_total");
    let writes: f64 = ["status", "spec", "pod-create", "pod-delete", "event"]
        .iter()
        .map(|kind| {
            metrics
                .lines()
                .find_map(|l| {
                    l.strip_prefix(&format!(r#"damocles_api_writes_total{{kind="{kind}"}}"#))?
                        .trim()
                        .parse::<f64>()
                        .ok()
                })
                .unwrap_or(0.0)
        })
        .sum();
    eprintln!("API writes: {writes} for {transitions} transitions\n{metrics}");
    // Every metric docs/metrics.md lists is exported from the start (a labelled family without
    // a series would have no TYPE line: the operator creates its series at 0).
    let exported = |documented: &str| {
        let family = documented
            .strip_suffix("_total")
            .or_else(|| documented.strip_suffix("_info"))
            .unwrap_or(documented);
        metrics
            .lines()
            .any(|l| l.starts_with(&format!("# TYPE {family} ")))
    };
    let documented = documented_metrics();
    assert!(documented.len() >= 10, "{documented:?}");
    for name in &documented {
        assert!(
            exported(name),
            "{name} is in docs/metrics.md but not exported:\n{metrics}"
        );
    }
    assert_eq!(
        value(r#"damocles_sectors_finished_total{plan="sealer"}"#),
        1.0
    );
    assert_eq!(
        value(r#"damocles_tasks_aborted_total{plan="rebuild"}"#),
        0.0
    );
    timeline.report();
    // The write budget of docs/benchmarks.md, listed write by write in src/task/tests/writes.rs:
    // a pod and a status write per step (7 pods with the workspace cleanup: tree-d runs in the
    // add-piece pod; the allocated sector with the first pod), each submission's intent written
    // as the wait it starts, two at the end (Finished before ReportFinalized; the workspace
    // removed, with the report's answer), one Event (the end), the pods' delete-collection. 20
    // measured on 2026-12-02; one more for a step pod slow to start. The finalizer is the chart's
    // admission policy's, not a write of the operator's.
    assert!(writes <= 21.0, "{writes} API writes for one sealer task");
    let ready = reqwest::get(format!("http://{operator_metrics}/readyz"))
        .await
        .unwrap();
    assert!(ready.status().is_success());

    // Finished step pods are deleted as the task moves on (the dev node then removes them).
    let step_pods = ListParams::default().labels(damocles_operator::controller::pods::TASK_LABEL);
    wait_for(
        "finished step pods deleted",
        Duration::from_secs(30),
        || async {
            let list = pods.list(&step_pods).await.ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
    status
}

/// A sealer with two deals of random bytes to Finished (the manager binds them, the task fetches
/// them from its piece store, the PreCommit's CommD is the one the deals give, the proof is
/// verified with it), then two other plans on the same sector, each driven by the manager's
/// queue: its lost files rebuilt bit for bit from the deals (fetched again), then one deal
/// unsealed to a file, byte for byte. One test, so the suite seals (and runs C2 for) this sector
/// once. The operator is the one `helm install` gives
/// with the chart's default step profiles, run by the dev node from the rendered Deployment
/// under the chart's ServiceAccount, so the chart's arguments, RBAC and GPU placement are the
/// ones under test.
#[tokio::test]
async fn a_sealer_task_reaches_finished_then_its_sector_is_rebuilt_and_unsealed() {
    // A GPU node as NVIDIA's feature discovery labels it, with the cpu and memory the chart's
    // PC1 asks for.
    let node = (
        &*unique("gpu-worker"),
        "nvidia.com/gpu=1,cpu=16,memory=256Gi,label:nvidia.com/gpu.present=true",
    );
    let scene = Scene::with_nodes("lifecycle", &[node], |_| String::new()).await;
    let tasks = &scene.tasks;
    let manager = &scene.manager;
    let operator = scene.install_operator().await;
    // Two deals of random bytes in the market; the task asks for deals and the manager binds
    // both (1024 + 1024 padded bytes fill the 2KiB sector). Their bytes come from the
    // manager's piece store.
    let mut deals = vec![];
    for payload_size in [1000, 900] {
        let deal = manager.add_deal(payload_size).await;
        assert_eq!(deal["pieceSize"], 1024, "{deal}");
        deals.push(deal);
    }
    let payload = |deal: &serde_json::Value| {
        let url = format!(
            "http://{}/piecestore/{}",
            manager.address,
            deal["pieceCid"].as_str().unwrap()
        );
        async move { reqwest::get(url).await.unwrap().bytes().await.unwrap() }
    };
    let second = payload(&deals[1]).await;
    assert_eq!(second.len(), 900);
    assert!(second.iter().any(|b| *b != 0), "random bytes, not zeros");

    let sealed = a_sealer_task_reaches_finished_with_its_proof_verified(
        &scene,
        &operator.metrics,
        "deals",
        serde_json::json!({"deals": {"enabled": true}}),
    )
    .await;
    let sector = sealed.sector.unwrap();
    // The chart's logFormat json: one object per line, the transitions as fields, in the span
    // of the task's reconcile.
    let log = operator.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let task = format!("{}/deals", scene.ns.name);
    assert!(
        lines
            .iter()
            .any(|line| line["fields"]["message"] == "transition"
                && line["span"]["task"] == task.as_str()
                && line["fields"]["to"] == "Finished"),
        "a transition to Finished logged as JSON:\n{log}"
    );
    // The operator pings as a damocles-worker does (the chart's 30s): `util worker list` shows
    // it by its pod name, at its pod IP and the worker admin port.
    let chain = manager.admin("/admin/state", None).await;
    let workers = chain["chain"]["workers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert_eq!(workers.len(), 1, "{chain}");
    let (name, ping) = workers.iter().next().unwrap();
    assert!(name.starts_with("farm-"), "the operator pod's name: {name}");
    assert_eq!(ping["info"]["Dest"], "127.0.0.1:17890", "{ping}");
    assert!(
        ping["info"]["Version"]
            .as_str()
            .is_some_and(|v| v.starts_with("damocles-operator ")),
        "{ping}"
    );
    let outputs = sealed.outputs.clone().unwrap();
    let recorded: Vec<(&str, Option<u64>)> = outputs
        .pieces
        .iter()
        .map(|p| (p.cid.as_str(), p.payload_size))
        .collect();
    assert_eq!(
        recorded,
        [
            (deals[0]["pieceCid"].as_str().unwrap(), Some(1000)),
            (deals[1]["pieceCid"].as_str().unwrap(), Some(900)),
        ],
        "the task records the manager's pieces"
    );
    let record = scene.record(sector.number).await;
    assert_eq!(
        record["pieces"].as_array().map(Vec::len),
        Some(2),
        "{record}"
    );
    assert!(
        record["unsealed"].is_array(),
        "the deals fix the sector's unsealed CID, which the proof was verified with: {record}"
    );

    // A task that names this sector without the manager allocating it to that task can do
    // nothing to it: its resumeState cannot skip allocation, and aborting and deleting it tell the
    // manager nothing about the sector.
    let spec_sector = serde_json::json!({"miner": sector.miner, "number": sector.number});
    let before = scene.record(sector.number).await;
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "intruder",
        serde_json::json!({"sector": spec_sector, "resumeState": "TreeDBuilt"}),
    )
    .await;
    let refused = wait_status(tasks, "intruder", "the intruder's resume refused", |s| {
        condition(s, "ResumeRejected").is_some_and(|(value, _)| value == "True")
    })
    .await;
    assert_eq!(refused.status.unwrap().sector, None);
    patch_spec(
        tasks,
        "intruder",
        serde_json::json!({"resumeState": "Aborted"}),
    )
    .await;
    wait_phase(tasks, "intruder", Phase::Aborted, Duration::from_secs(60)).await;
    delete_and_wait(tasks, "intruder").await;
    let after = scene.record(sector.number).await;
    for field in ["submissions", "reports", "aborted", "finalized", "ticket"] {
        assert_eq!(
            after[field], before[field],
            "{field} of the sector: {after}"
        );
    }

    // The sector's files are lost; the manager marks it for rebuild. Meanwhile the miner has
    // turned synthetic PoRep on: the manager hands the rebuild out by the miner's new type, with
    // the sector's own, which the task adopts to reseal the same replica.
    let changed = manager
        .admin(
            "/admin/miner",
            Some(serde_json::json!({"useSyntheticPoRep": true})),
        )
        .await;
    assert_eq!(changed["ok"], true, "{changed}");
    let store = scene.farm.store();
    let replica = store.join(format!("sealed/{sector}"));
    let original = std::fs::read(&replica).unwrap();
    std::fs::remove_file(&replica).unwrap();
    std::fs::remove_dir_all(store.join(format!("cache/{sector}"))).unwrap();
    manager
        .admin(
            "/admin/rebuild",
            Some(serde_json::json!({"number": sector.number})),
        )
        .await;
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild",
        serde_json::json!({"sector": spec_sector}),
    )
    .await;
    let rebuilt = wait_phase(tasks, "rebuild", Phase::Finished, Duration::from_secs(600)).await;
    reported_finalized(tasks, "rebuild").await;
    let rebuilt = rebuilt.status.unwrap();
    assert_eq!(
        rebuilt.proof_type,
        Some(5),
        "the sector's own type, StackedDrg2KiBV1_1"
    );
    // Back as it was: damocles-manager hands an unseal the miner's current type (shared with
    // damocles-worker, wire-semantics S2), which for this sector would unseal garbage.
    let changed = manager
        .admin(
            "/admin/miner",
            Some(serde_json::json!({"useSyntheticPoRep": false})),
        )
        .await;
    assert_eq!(changed["ok"], true, "{changed}");
    let visited: Vec<State> = rebuilt.history.iter().map(|h| h.state).collect();
    assert!(visited.contains(&State::SealedChecked), "{visited:?}");
    assert_eq!(
        std::fs::read(&replica).unwrap(),
        original,
        "the rebuilt replica is the original, bit for bit"
    );
    assert!(store.join(format!("cache/{sector}/p_aux")).is_file());
    // The rebuild ends with ReportFinalized: the manager clears its rebuild mark and takes the
    // sector offline again, so it can be rebuilt or unsealed later.
    let finalized = |record: &serde_json::Value| {
        record["finalized"] == true && record["rebuild"].is_null() && record["unsealing"] == false
    };
    let record = scene.record(sector.number).await;
    assert_eq!(record["rebuilds"], 1, "{record}");
    assert!(finalized(&record), "{record}");

    // A retrieval whose destination lies outside the delivery roots the admin configured (a
    // manager may name any path on the node) pauses before any byte moves, naming it, with no
    // upload pod; aborted, it goes back to the manager as failed and the sector offline again.
    let outside = scene.farm.root.join("outside/piece.bin");
    let first = deals[0]["pieceCid"].as_str().unwrap();
    let queued = manager
        .admin(
            "/admin/unseal",
            Some(serde_json::json!({
                "number": sector.number, "pieceCid": first, "offset": 0, "size": 1016,
                "dest": [format!("file://{}", outside.display())],
            })),
        )
        .await;
    assert_eq!(queued["ok"], true, "{queued}");
    create_example(
        tasks,
        "unseal-2kib.yaml",
        "unseal-outside",
        serde_json::json!({"sector": spec_sector, "unseal": {"pieceCid": first}}),
    )
    .await;
    let paused = wait_phase(
        tasks,
        "unseal-outside",
        Phase::Paused,
        Duration::from_secs(300),
    )
    .await;
    let error = paused.status.unwrap().last_error.unwrap();
    assert!(
        error.message.contains(&format!(
            "{} is not under profiles.deliveryRoots",
            outside.display()
        )),
        "{}",
        error.message
    );
    let uploads = scene
        .pods
        .list(&ListParams::default().labels("damocles.io/step=upload"))
        .await
        .unwrap();
    assert!(uploads.items.is_empty(), "no upload pod ran");
    assert!(!outside.exists());
    patch_spec(
        tasks,
        "unseal-outside",
        serde_json::json!({"resumeState": "Aborted"}),
    )
    .await;
    wait_status(tasks, "unseal-outside", "aborted", |s| {
        s.phase == Some(Phase::Aborted)
    })
    .await;
    delete_and_wait(tasks, "unseal-outside").await;
    wait_for(
        "the sector offline again",
        Duration::from_secs(60),
        || async { finalized(&scene.record(sector.number).await).then_some(()) },
    )
    .await;
    let chain = manager.admin("/admin/state", None).await;
    let handed_back = chain["chain"]["unseals"][0]["achieved"]
        .as_str()
        .unwrap_or_default();
    assert!(handed_back.starts_with("aborted"), "{chain}");

    // A retrieval asks for the second deal (unpadded bytes 1016..2032 of the sector), to be
    // delivered to a destination of every kind the manager hands out: the market's store (the
    // manager adds the market's address and token), the manager's piece store, a file on the
    // node and a path in a persist store. The task delivers exactly its bytes to each: the
    // payload, then the zeros that padded it to its piece.
    let wanted = deals[1]["pieceCid"].as_str().unwrap();
    let file = scene.farm.root.join("retrieved/piece.bin");
    let queued = manager
        .admin(
            "/admin/unseal",
            Some(serde_json::json!({
                "number": sector.number, "pieceCid": wanted, "offset": 1016, "size": 1016,
                "dest": [
                    format!("market://retrievals/{wanted}"),
                    format!("store:///{wanted}"),
                    format!("file://{}", file.display()),
                    format!("store://persist/retrieved/{wanted}"),
                ],
            })),
        )
        .await;
    assert_eq!(queued["ok"], true, "{queued}");
    // The task names the first deal, but the manager's queue decides what it is handed: it
    // serves the second, saying so, instead of failing a request the manager would never queue
    // again (and leaving the sector online, marked Unsealing).
    create_example(
        tasks,
        "unseal-2kib.yaml",
        "unseal",
        serde_json::json!({"sector": spec_sector, "unseal": {"pieceCid": first}}),
    )
    .await;
    let unsealed = wait_phase(tasks, "unseal", Phase::Finished, Duration::from_secs(600)).await;
    reported_finalized(tasks, "unseal").await;
    let note = super::restart::event_note(&scene.ns.name, "unseal", "UnsealNotAsSelected")
        .await
        .expect("a Warning Event says the request is not the one named");
    assert!(note.contains(first) && note.contains(wanted), "{note}");
    let mut expected = second.to_vec();
    expected.resize(1016, 0);
    let market_store = manager
        .state
        .with_extension("market")
        .join(format!("retrievals/{wanted}"));
    for (place, bytes) in [
        ("the market's store", std::fs::read(&market_store).unwrap()),
        (
            "the manager's piece store",
            payload(&deals[1]).await.to_vec(),
        ),
        ("the file on the node", std::fs::read(&file).unwrap()),
        (
            "the persist store",
            std::fs::read(store.join(format!("retrieved/{wanted}"))).unwrap(),
        ),
    ] {
        assert_eq!(
            bytes, expected,
            "the unsealed piece in {place} is the deal's bytes"
        );
    }
    let recorded = serde_json::to_string(&unsealed.status).unwrap();
    assert!(
        recorded.contains("token=redacted") && !recorded.contains(MARKET_TOKEN),
        "the task records the destinations without the market's token: {recorded}"
    );
    let chain = manager.admin("/admin/state", None).await;
    assert_eq!(
        chain["chain"]["unseals"][1]["achieved"], "",
        "the manager heard the unseal succeed: {chain}"
    );
    let record = scene.record(sector.number).await;
    assert!(finalized(&record), "after the unseal: {record}");

    // A second rebuild of the same sector works: the manager's record shows the first done.
    // This time the manager keeps the sector's deals as a v0.9-era manager did and hands them
    // out as legacy `Pieces`: sealed in, they give the original replica again (a rebuild that
    // read only PiecesV2 would seal committed capacity, another replica).
    std::fs::remove_file(&replica).unwrap();
    let marked = manager
        .admin(
            "/admin/rebuild",
            Some(serde_json::json!({"number": sector.number, "legacyDeals": true})),
        )
        .await;
    assert_eq!(marked["ok"], true, "{marked}");
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild-again",
        serde_json::json!({"sector": spec_sector}),
    )
    .await;
    wait_phase(
        tasks,
        "rebuild-again",
        Phase::Finished,
        Duration::from_secs(600),
    )
    .await;
    reported_finalized(tasks, "rebuild-again").await;
    assert_eq!(std::fs::read(&replica).unwrap(), original);
    let record = scene.record(sector.number).await;
    assert_eq!(record["rebuilds"], 2, "{record}");
    assert!(finalized(&record), "{record}");

    // A rebuild deleted once it holds the sector hands it back finalized, never aborted:
    // damocles-manager's ReportAborted would release the proven sector's active deals (the dev
    // manager does so too) and leave it impossible to mark for rebuild again.
    let marked = manager
        .admin(
            "/admin/rebuild",
            Some(serde_json::json!({"number": sector.number})),
        )
        .await;
    assert_eq!(marked["ok"], true, "{marked}");
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild-deleted",
        serde_json::json!({"sector": spec_sector}),
    )
    .await;
    wait_status(
        tasks,
        "rebuild-deleted",
        "the rebuild holding its sector",
        |s| s.sector.is_some(),
    )
    .await;
    tasks
        .delete("rebuild-deleted", &Default::default())
        .await
        .unwrap();
    wait_gone(tasks, "rebuild-deleted").await;
    let record = scene.record(sector.number).await;
    assert!(
        finalized(&record) && record["aborted"].is_null() && record["rebuild"].is_null(),
        "{record}"
    );
    let chain = manager.admin("/admin/state", None).await;
    for deal in &deals {
        let bound = chain["chain"]["deals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["dealId"] == deal["dealId"])
            .map(|d| d["sector"].clone());
        assert_eq!(bound, Some(sector.number.into()), "{chain}");
    }
    let marked = manager
        .admin(
            "/admin/rebuild",
            Some(serde_json::json!({"number": sector.number})),
        )
        .await;
    assert_eq!(marked["ok"], true, "it can be rebuilt later: {marked}");
}

/// A sealed CC sector upgraded by a snap-up task with the market's deal (random bytes from the
/// manager's piece store): the dev manager checks the pieces, verifies the update proof with the
/// CommD they give, and the update replica is in the store. Then its files are lost and a
/// rebuild task re-creates them from the manager's rebuild info (the original ticket, the
/// upgrade's deals, UpgradePublic): the sealed and update replicas, byte for byte.
#[tokio::test]
#[ignore = "long run (scripts/test-long): needs the empty-sector-update parameters"]
async fn a_sealed_cc_sector_is_snap_upgraded_with_a_deal_piece_and_rebuilt() {
    let scene = Scene::new("snapup").await;
    let tasks = &scene.tasks;
    let operator = scene.operator();
    let sealed = a_sealer_task_reaches_finished_with_its_proof_verified(
        &scene,
        &operator.metrics,
        "cc",
        serde_json::json!({}),
    )
    .await;
    let sector = sealed.sector.unwrap();
    let committed_comm_r = sealed.outputs.unwrap().comm_r.unwrap();
    let store = scene.farm.store();

    // The market has a deal of random bytes; the manager hands out the CC sector with it.
    let deal = scene.manager.add_deal(2000).await;
    let cid = deal["pieceCid"].as_str().unwrap().to_string();
    create_example(tasks, "snapup-2kib.yaml", "snapup", serde_json::json!({})).await;

    let upgraded = wait_phase(tasks, "snapup", Phase::Finished, Duration::from_secs(600)).await;
    let status = upgraded.status.unwrap();
    assert_eq!(status.sector, Some(sector));
    let outputs = status.outputs.unwrap();
    assert_eq!(outputs.comm_d.map(|c| c.to_string()), Some(cid));
    assert_ne!(outputs.comm_r.unwrap(), committed_comm_r, "a new CommR");
    let record = scene.record(sector.number).await;
    assert!(
        record["upgrade"].is_object(),
        "the dev manager accepted a verified upgrade proof: {record}"
    );
    assert_eq!(record["submissions"]["SubmitSnapUpProof"], 1, "{record}");
    reported_finalized(tasks, "snapup").await;

    // Every file of the sector is lost: the sealed replica (the sector key) and the update.
    let files = [
        store.join(format!("sealed/{sector}")),
        store.join(format!("update/{sector}")),
        store.join(format!("cache/{sector}/p_aux")),
        store.join(format!("update-cache/{sector}/p_aux")),
    ];
    let originals: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for dir in ["sealed", "update"] {
        std::fs::remove_file(store.join(format!("{dir}/{sector}"))).unwrap();
    }
    for dir in ["cache", "update-cache"] {
        std::fs::remove_dir_all(store.join(format!("{dir}/{sector}"))).unwrap();
    }
    // The manager's snap-up commit job ends once the upgrade is final (900 epochs of 20 ms),
    // taking the sector offline; then it can be marked for rebuild.
    wait_for(
        "the upgraded sector marked for rebuild",
        Duration::from_secs(90),
        || async {
            let marked = scene
                .manager
                .admin(
                    "/admin/rebuild",
                    Some(serde_json::json!({"number": sector.number})),
                )
                .await;
            (marked["ok"] == true).then_some(())
        },
    )
    .await;
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild",
        serde_json::json!({"sector": {"miner": sector.miner, "number": sector.number}}),
    )
    .await;
    let rebuilt = wait_phase(tasks, "rebuild", Phase::Finished, Duration::from_secs(900)).await;
    reported_finalized(tasks, "rebuild").await;
    let status = rebuilt.status.unwrap();
    let visited: Vec<State> = status.history.iter().map(|h| h.state).collect();
    for state in [
        State::SealedChecked,
        State::SnapPieceAdded,
        State::SnapEncoded,
    ] {
        assert!(visited.contains(&state), "{state:?} in {visited:?}");
    }
    assert_eq!(
        status.outputs.unwrap().sector_key,
        Some(committed_comm_r),
        "the sector key is the manager's UpgradePublic"
    );
    for (file, original) in files.iter().zip(&originals) {
        assert_eq!(
            &std::fs::read(file).unwrap(),
            original,
            "{} rebuilt byte for byte",
            file.display()
        );
    }
    let record = scene.record(sector.number).await;
    assert_eq!(record["rebuilds"], 1, "{record}");
    assert_eq!(record["upgrade"]["accessInstance"], "persist", "{record}");
}
