//! The crash schedule (issue 21): the operator killed right before and right after every effect
//! it applies (each status write, manager call, pod create and delete, spec patch, finalizer
//! write) in every state a task passes, one new point per start, restarted at once each time,
//! until the tasks end without meeting a new point. Then: the tasks ended as a fault-free run
//! ends them (the proof verified by the manager, the rebuilt replica the original bit for bit,
//! the unsealed piece the deal's bytes), the manager saw one allocation, one PreCommit, one proof
//! per sector, no two pods of one step of one task were ever alive together (a watch on pods
//! checks it all along), and nothing is left behind. The report lists every point and what came
//! of it (target/crash-schedule.md; docs/crash-schedule.md keeps one).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::runtime::watcher;

use super::*;

/// The operator under the crash schedule: restarted whenever it dies.
struct Supervised {
    schedule: PathBuf,
    stop: Arc<AtomicBool>,
    /// How many times it started, and every death that was not a crash point (it should have
    /// none).
    starts: Arc<Mutex<usize>>,
    odd_exits: Arc<Mutex<Vec<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Supervised {
    fn start(scene: &Scene) -> Supervised {
        let schedule = scene.farm.root.join("crash-schedule.txt");
        std::fs::write(&schedule, "").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let starts = Arc::new(Mutex::new(0));
        let odd_exits = Arc::new(Mutex::new(Vec::new()));
        let (namespace, manager, profiles) = (
            scene.ns.name.clone(),
            scene.manager.address.clone(),
            scene.farm.profiles.clone(),
        );
        let handle = tokio::spawn({
            let (schedule, stop, starts, odd_exits) = (
                schedule.clone(),
                stop.clone(),
                starts.clone(),
                odd_exits.clone(),
            );
            async move {
                while !stop.load(Ordering::SeqCst) {
                    let env = [(
                        "DAMOCLES_OPERATOR_CRASH_SCHEDULE",
                        schedule.to_str().unwrap(),
                    )];
                    let mut operator =
                        Operator::start_env(&namespace, &manager, &profiles, &env, &[]);
                    *starts.lock().unwrap() += 1;
                    loop {
                        if stop.load(Ordering::SeqCst) {
                            return;
                        }
                        if let Some(status) = operator.child.try_wait().unwrap() {
                            if status.signal() != Some(libc_sigabrt()) {
                                let log =
                                    std::fs::read_to_string(&operator.log).unwrap_or_default();
                                odd_exits
                                    .lock()
                                    .unwrap()
                                    .push(format!("{status}: {}", tail(&log)));
                            }
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        });
        Supervised {
            schedule,
            stop,
            starts,
            odd_exits,
            handle,
        }
    }

    /// The points hit so far, in order.
    fn points(&self) -> Vec<String> {
        std::fs::read_to_string(&self.schedule)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.unwrap();
        let starts = *self.starts.lock().unwrap();
        let odd = self.odd_exits.lock().unwrap().clone();
        (starts, odd)
    }
}

fn libc_sigabrt() -> i32 {
    6
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join("\n")
}

/// Watches the namespace's pods: no two pods of one step of one task alive (neither succeeded nor
/// failed, deleted or not) at the same moment.
pub(super) struct PodWatch {
    pub(super) overlaps: Arc<Mutex<Vec<String>>>,
    seen: Arc<Mutex<BTreeSet<String>>>,
    handle: tokio::task::JoinHandle<()>,
}

impl PodWatch {
    pub(super) fn start(pods: Api<Pod>) -> PodWatch {
        let overlaps = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::new(Mutex::new(BTreeSet::new()));
        let handle = tokio::spawn({
            let (overlaps, seen) = (overlaps.clone(), seen.clone());
            async move {
                // name -> (task uid, step) of each pod alive.
                let mut alive: BTreeMap<String, (String, String)> = BTreeMap::new();
                let mut stream = std::pin::pin!(watcher(pods, Default::default()));
                while let Some(event) = stream.next().await {
                    let Ok(event) = event else { continue };
                    let (pod, gone) = match event {
                        watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => (pod, false),
                        watcher::Event::Delete(pod) => (pod, true),
                        _ => continue,
                    };
                    let name = pod.name_any();
                    let labels = pod.labels();
                    let key = (
                        labels
                            .get("damocles.io/task-uid")
                            .cloned()
                            .unwrap_or_default(),
                        labels.get("damocles.io/step").cloned().unwrap_or_default(),
                    );
                    seen.lock().unwrap().insert(name.clone());
                    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                    if gone || matches!(phase, Some("Succeeded" | "Failed")) {
                        alive.remove(&name);
                        continue;
                    }
                    alive.insert(name.clone(), key.clone());
                    let together: Vec<&String> = alive
                        .iter()
                        .filter(|(_, k)| **k == key)
                        .map(|(n, _)| n)
                        .collect();
                    if together.len() > 1 {
                        overlaps
                            .lock()
                            .unwrap()
                            .push(format!("step {} of task {}: {together:?}", key.1, key.0));
                    }
                }
            }
        });
        PodWatch {
            overlaps,
            seen,
            handle,
        }
    }
}

impl Drop for PodWatch {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// One task driven to Finished under the crash schedule. A pause is the documented outcome of a
/// crash between a one-time allocation's intent and the record of its answer (the manager may
/// have handed out a job it will not hand out again): the test does what its message says (puts
/// the job back in the manager's queue when it was taken, resumes the task) and notes it
/// against the point that caused it. Any other pause fails the test.
async fn finish(
    scene: &Scene,
    run: &Supervised,
    name: &str,
    outcomes: &mut BTreeMap<String, String>,
    requeue: impl AsyncFn(),
) -> SealingTask {
    let deadline = std::time::Instant::now() + Duration::from_secs(900);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "task {name} not Finished in 15 minutes"
        );
        let task = scene.tasks.get(name).await.unwrap();
        let status = task.status.clone().unwrap_or_default();
        match status.phase {
            Some(Phase::Finished) => return task,
            Some(Phase::Paused) => {
                let error = status
                    .last_error
                    .clone()
                    .map(|e| e.message)
                    .unwrap_or_default();
                assert!(
                    error.contains("was asked and its answer never recorded"),
                    "task {name} paused: {error}"
                );
                let point = run.points().last().cloned().unwrap_or_default();
                outcomes.insert(
                    point,
                    format!("{name} paused after this crash (allocation uncertain, as designed): the job put back in the queue if taken, resumed"),
                );
                requeue().await;
                // A resume without a state: ask again.
                patch_spec(&scene.tasks, name, serde_json::json!({"resumeState": ""})).await;
                wait_for("the resume taken", Duration::from_secs(120), || async {
                    let task = scene.tasks.get(name).await.ok()?;
                    task.spec.resume_state.is_none().then_some(())
                })
                .await;
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Waits until the namespace has no pod left.
async fn every_pod_gone(scene: &Scene) {
    wait_for("every pod gone", Duration::from_secs(60), || async {
        scene
            .pods
            .list(&Default::default())
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

/// The report of a run, `report` (its summary) then every point hit with what came of it,
/// written to target/`file` and printed.
fn write_report(
    mut report: String,
    points: &[String],
    outcomes: &BTreeMap<String, String>,
    file: &str,
) {
    for (index, point) in points.iter().enumerate() {
        let outcome = outcomes
            .get(point)
            .map(String::as_str)
            .unwrap_or("recovered");
        report.push_str(&format!("| {} | `{point}` | {outcome} |\n", index + 1));
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join(file);
    std::fs::write(&out, &report).unwrap();
    eprintln!("{report}");
}

/// What every run must show: no two pods of one step ever alive together, no death but at a
/// point, and in each of `plans` a point hit at every effect every plan has (status writes, pod
/// creates, the end's pod deletion, the finalizer's add and removal, ReportFinalized) and at
/// each of that plan's own `effects`.
fn assert_run(
    points: &[String],
    overlaps: &[String],
    odd_exits: &[String],
    plans: &[&str],
    effects: &[&str],
) {
    assert!(
        overlaps.is_empty(),
        "two pods of one step alive together: {overlaps:?}"
    );
    assert!(
        odd_exits.is_empty(),
        "the operator died other than at a point: {odd_exits:?}"
    );
    let every_plan = [
        "status",
        "pod-create",
        "pods-delete",
        "finalizer-add",
        "finalizer-remove",
        "call:ReportFinalized",
    ];
    for plan in plans {
        for effect in every_plan.iter().chain(effects) {
            assert!(
                points
                    .iter()
                    .any(|p| p.contains(&format!(" {effect} {plan}/"))),
                "no {effect} point of {plan} hit: {points:?}"
            );
        }
    }
}

#[tokio::test]
async fn a_crash_at_every_point_of_the_sealer_rebuild_and_unseal_loses_and_repeats_nothing() {
    let scene = Scene::new("crash").await;
    // The operator adds the finalizer itself (clusters before 1.36): its points are covered too.
    support::chart::without_finalizer_policy(&scene.ns.name);
    let tasks = &scene.tasks;
    let manager = &scene.manager;
    // Where the unseal below may deliver its piece.
    let profiles = &scene.farm.profiles;
    let mut text = std::fs::read_to_string(profiles).unwrap();
    let retrieved = scene.farm.root.join("retrieved");
    text.push_str(&format!("deliveryRoots: [{}]\n", retrieved.display()));
    std::fs::write(profiles, text).unwrap();
    // A task the operator cannot read (a status field the schema takes as any string but the
    // operator reads as a CID, as a task written by another version could hold) stops no other
    // task across every restart below, and gets one Warning Event naming the field; hostile tasks
    // are refused by the apiserver, naming the field.
    let unreadable = super::restart::unreadable_task(&scene.ns.name, "bad").await;
    super::restart::hostile_tasks_are_refused_naming_the_field(&scene.ns.name);
    let pods = PodWatch::start(scene.pods.clone());
    let run = Supervised::start(&scene);
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    let started = std::time::Instant::now();

    // A sealer with two deals of random bytes.
    let mut deals = vec![];
    for payload_size in [1000, 900] {
        deals.push(manager.add_deal(payload_size).await);
    }
    create_example(
        tasks,
        "sealer-2kib.yaml",
        "sealer",
        serde_json::json!({"deals": {"enabled": true}}),
    )
    .await;
    // A resume asked while C2 runs is refused, recorded once and cleared; the task carries on.
    // (The pod, not the status, says C2 runs: under the schedule the status is written late.)
    let pod = wait_for("the C2 pod", Duration::from_secs(300), || async {
        let seen = pods.seen.lock().unwrap();
        seen.iter().find(|name| name.contains("-c1done-")).cloned()
    })
    .await;
    patch_spec(
        tasks,
        "sealer",
        serde_json::json!({"resumeState": "Finished"}),
    )
    .await;
    let refused = resume_cleared(tasks, "sealer").await.status.unwrap();
    let condition = refused
        .conditions
        .iter()
        .find(|c| c.type_ == "ResumeRejected" && c.status == "True")
        .expect("a ResumeRejected condition");
    assert!(condition.message.contains("Finished"), "{condition:?}");
    let sealed = finish(&scene, &run, "sealer", &mut outcomes, async || {}).await;
    let sealed_status = sealed.status.unwrap();
    let sector = sealed_status.sector.unwrap();
    assert!(
        sealed_status
            .history
            .iter()
            .any(|h| h.state == State::C1Done),
        "{:?}",
        sealed_status.history
    );
    let c2_pods: Vec<String> = pods
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|name| name.contains("-c1done-"))
        .cloned()
        .collect();
    assert_eq!(
        c2_pods,
        [pod],
        "the C2 pod adopted across every restart, never replaced"
    );
    let record = scene.record(sector.number).await;
    assert!(record["proof"].is_object(), "a verified proof: {record}");
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    // SubmitPersistedEx is no chain message: the manager checks the files each time it is
    // asked, and a restarted operator replays from its last written status.
    let persisted_asked = record["submissions"]["SubmitPersisted"]
        .as_u64()
        .unwrap_or(0);
    // A crash between AllocateSector's answer and the status write that records it (with the
    // first step's pod, in DealsAcquired; in Allocated when deals are acquired first) leaves that
    // sector allocated at the manager and unused (damocles-worker leaves one the same way; the
    // manager's API has no way to ask again for the same one). Each such sector is one of those
    // crash points, and none was used: no PreCommit, no proof, no deal.
    let chain = manager.admin("/admin/state", None).await;
    let sectors = chain["chain"]["sectors"].as_object().unwrap();
    let sealer_points = run.points().len();
    let allocation_window = run
        .points()
        .iter()
        .filter(|p| {
            [
                "after call:AllocateSector sealer/Empty",
                "before status sealer/Allocated",
                "before status sealer/DealsAcquired",
            ]
            .contains(&p.as_str())
        })
        .count();
    let leaked: Vec<&String> = sectors
        .keys()
        .filter(|n| **n != sector.number.to_string())
        .collect();
    assert!(leaked.len() <= allocation_window, "{leaked:?}: {chain}");
    for number in &leaked {
        let record = &sectors[number.as_str()];
        assert!(
            record["precommit"].is_null()
                && record["proof"].is_null()
                && record["pieces"].is_null(),
            "an unrecorded allocation was used: {record}"
        );
    }

    let spec_sector = serde_json::json!({"miner": sector.miner, "number": sector.number});
    wait_for("the sector finalized", Duration::from_secs(60), || async {
        (scene.record(sector.number).await["finalized"] == true).then_some(())
    })
    .await;
    delete_and_wait(tasks, "sealer").await;

    // Its files lost, the sector is rebuilt.
    let store = scene.farm.store();
    let replica = store.join(format!("sealed/{sector}"));
    let original = std::fs::read(&replica).unwrap();
    std::fs::remove_file(&replica).unwrap();
    std::fs::remove_dir_all(store.join(format!("cache/{sector}"))).unwrap();
    let number = serde_json::json!({"number": sector.number});
    // A rebuild job handed out and lost (the task paused): the sector is online again; the admin
    // takes it offline and marks it for rebuild again, as damocles-manager requires.
    let mark_rebuild = async || {
        if scene.record(sector.number).await["rebuild"]["allocated"] == true {
            manager.admin("/admin/finalize", Some(number.clone())).await;
        }
        let marked = manager.admin("/admin/rebuild", Some(number.clone())).await;
        assert!(
            marked["ok"] == true || marked["error"].is_string(),
            "{marked}"
        );
    };
    mark_rebuild().await;
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild",
        serde_json::json!({"sector": spec_sector}),
    )
    .await;
    finish(&scene, &run, "rebuild", &mut outcomes, mark_rebuild).await;
    assert_eq!(
        std::fs::read(&replica).unwrap(),
        original,
        "the rebuilt replica is the original, bit for bit"
    );
    wait_for("the rebuild finalized", Duration::from_secs(60), || async {
        let record = scene.record(sector.number).await;
        (record["finalized"] == true && record["rebuild"].is_null()).then_some(())
    })
    .await;
    // Each rebuild job lost and taken offline by hand counts as one ended too.
    assert!(scene.record(sector.number).await["rebuilds"].as_u64() >= Some(1));
    delete_and_wait(tasks, "rebuild").await;
    let rebuild_points = run.points().len() - sealer_points;

    // The second deal is unsealed to a file.
    let wanted = deals[1]["pieceCid"].as_str().unwrap().to_string();
    let file = scene.farm.root.join("retrieved/piece.bin");
    let queue_unseal = async || {
        let chain = manager.admin("/admin/state", None).await;
        let jobs = chain["chain"]["unseals"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if jobs.iter().any(|job| job["allocated"] == false) {
            return; // still queued: the resume asks for it again
        }
        if !jobs.is_empty() {
            // Handed out and lost: the sector is online (unsealing); offline first.
            manager.admin("/admin/finalize", Some(number.clone())).await;
        }
        let queued = manager
            .admin(
                "/admin/unseal",
                Some(serde_json::json!({
                    "number": sector.number, "pieceCid": wanted, "offset": 1016, "size": 1016,
                    "dest": [format!("file://{}", file.display())],
                })),
            )
            .await;
        assert_eq!(queued["ok"], true, "{queued}");
    };
    queue_unseal().await;
    create_example(
        tasks,
        "unseal-2kib.yaml",
        "unseal",
        serde_json::json!({"sector": spec_sector, "unseal": {"pieceCid": wanted}}),
    )
    .await;
    finish(&scene, &run, "unseal", &mut outcomes, queue_unseal).await;
    let url = format!("http://{}/piecestore/{wanted}", manager.address);
    let mut expected = reqwest::get(url)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    expected.resize(1016, 0);
    assert_eq!(std::fs::read(&file).unwrap(), expected, "the deal's bytes");
    delete_and_wait(tasks, "unseal").await;

    // The unreadable task: warned about, naming the field, and left alone (no status, no
    // finalizer written) by every operator that started.
    let warned = wait_for("the InvalidObject event", Duration::from_secs(30), || {
        super::restart::invalid_object_event(&scene.ns.name, "bad")
    })
    .await;
    assert!(warned.contains("commD"), "{warned}");
    let resource = kube::api::ApiResource::erase::<SealingTask>(&());
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(scene.client.clone(), &scene.ns.name, &resource);
    let bad = raw.get("bad").await.unwrap();
    assert_eq!(bad.data.get("status"), unreadable.data.get("status"));
    assert!(
        bad.metadata
            .finalizers
            .clone()
            .unwrap_or_default()
            .is_empty()
    );
    raw.delete("bad", &Default::default()).await.unwrap();

    // Nothing left behind: no pod, no workspace.
    every_pod_gone(&scene).await;
    for task in ["sealer", "rebuild", "unseal"] {
        assert!(
            !scene.workspace(task).exists(),
            "{task}'s workspace removed"
        );
    }
    let points = run.points();
    let (starts, odd_exits) = run.stop().await;
    let overlaps = pods.overlaps.lock().unwrap().clone();
    let pods_seen = pods.seen.lock().unwrap().len();

    let report = format!(
        "# Crash schedule\n\n{} points hit ({} sealer, {} rebuild, {} unseal), {starts} operator \
         starts, {pods_seen} pods, {:.0} s; SubmitPersistedEx asked {persisted_asked} times (no chain \
         message; the manager checks the files each time). Sectors allocated and left unused by \
         a crash before their number was recorded: {}. Lost tasks: 0. Duplicate submissions: 0. Concurrent \
         pods of one step: {}. Operator deaths other than at a point: {}.\n\n| # | point | \
         outcome |\n|---|---|---|\n",
        points.len(),
        sealer_points,
        rebuild_points,
        points.len() - sealer_points - rebuild_points,
        started.elapsed().as_secs_f64(),
        leaked.len(),
        overlaps.len(),
        odd_exits.len(),
    );
    write_report(report, &points, &outcomes, "crash-schedule.md");
    assert_run(
        &points,
        &overlaps,
        &odd_exits,
        &["sealer", "rebuild", "unseal"],
        &[],
    );
}

/// The snap-up plan under the crash schedule. A long run: it needs the empty-sector-update
/// parameters, which CI does not generate. A committed-capacity sector is sealed without faults,
/// then upgraded with a deal of random bytes while the operator dies at every point of the
/// snap-up plan: the upgrade proof verified by the manager once (one commit job), the new CommD
/// the deal's, no two pods of one step alive together, nothing left behind. The report goes to
/// target/crash-schedule-snapup.md (docs/crash-schedule.md keeps one).
#[tokio::test]
#[ignore = "long run (scripts/test-long): needs the empty-sector-update parameters"]
async fn a_crash_at_every_point_of_the_snap_up_loses_and_repeats_nothing() {
    let scene = Scene::new("crash-snap").await;
    support::chart::without_finalizer_policy(&scene.ns.name);
    let tasks = &scene.tasks;
    let manager = &scene.manager;
    let sealed = {
        let _operator = scene.operator();
        create_example(tasks, "sealer-2kib.yaml", "cc", serde_json::json!({})).await;
        let task = wait_phase(tasks, "cc", Phase::Finished, Duration::from_secs(600)).await;
        let sector = task.status.clone().unwrap().sector.unwrap();
        wait_for(
            "the CC sector finalized",
            Duration::from_secs(60),
            || async { (scene.record(sector.number).await["finalized"] == true).then_some(()) },
        )
        .await;
        delete_and_wait(tasks, "cc").await;
        task.status.unwrap()
    };
    let sector = sealed.sector.unwrap();
    let committed_comm_r = sealed.outputs.unwrap().comm_r.unwrap();
    let deal = manager.add_deal(2000).await;
    let cid = deal["pieceCid"].as_str().unwrap().to_string();

    let pods = PodWatch::start(scene.pods.clone());
    let run = Supervised::start(&scene);
    let mut outcomes: BTreeMap<String, String> = BTreeMap::new();
    let started = std::time::Instant::now();
    let number = serde_json::json!({"number": sector.number});
    // An upgrade handed out and lost (the task paused): the admin gives it back, so the resumed
    // task is handed the same sector and deal again.
    let release = async || {
        let record = scene.record(sector.number).await;
        if record["snapupAllocated"] == true && record["upgrade"].is_null() {
            let released = manager
                .admin("/admin/release-snapup", Some(number.clone()))
                .await;
            assert_eq!(released["ok"], true, "{released}");
        }
    };
    create_example(tasks, "snapup-2kib.yaml", "snapup", serde_json::json!({})).await;
    let upgraded = finish(&scene, &run, "snapup", &mut outcomes, release).await;
    let status = upgraded.status.unwrap();
    assert_eq!(status.sector, Some(sector));
    let outputs = status.outputs.unwrap();
    assert_eq!(outputs.comm_d.map(|c| c.to_string()), Some(cid));
    assert_ne!(outputs.comm_r.unwrap(), committed_comm_r, "a new CommR");
    super::seal::reported_finalized(tasks, "snapup").await;
    let record = scene.record(sector.number).await;
    assert!(
        record["upgrade"].is_object(),
        "the dev manager accepted a verified upgrade proof: {record}"
    );
    // A resubmission after a crash between the answer and its record is refused by the commit
    // job already running ("duplicate commit job"), which the operator takes as done: one
    // upgrade, however often it was asked.
    let snap_asked = record["submissions"]["SubmitSnapUpProof"]
        .as_u64()
        .unwrap_or(0);
    assert!(snap_asked >= 1, "{record}");
    delete_and_wait(tasks, "snapup").await;
    every_pod_gone(&scene).await;
    assert!(
        !scene.workspace("snapup").exists(),
        "the snap-up's workspace removed"
    );

    let points = run.points();
    let (starts, odd_exits) = run.stop().await;
    let overlaps = pods.overlaps.lock().unwrap().clone();
    let pods_seen = pods.seen.lock().unwrap().len();
    let report = format!(
        "{} snap-up points hit, {starts} operator starts, {pods_seen} pods, {:.0} s; \
         SubmitSnapUpProof asked {snap_asked} times (one upgrade accepted: a repeat meets the \
         commit job already running). Lost tasks: 0. Duplicate upgrades: 0. Concurrent pods of \
         one step: {}. Operator deaths other than at a point: {}.\n\n| # | point | outcome \
         |\n|---|---|---|\n",
        points.len(),
        started.elapsed().as_secs_f64(),
        overlaps.len(),
        odd_exits.len(),
    );
    write_report(report, &points, &outcomes, "crash-schedule-snapup.md");
    assert_run(
        &points,
        &overlaps,
        &odd_exits,
        &["snapup"],
        &[
            "call:AllocateSanpUpSector",
            "call:StoreBasicInfo",
            "call:SubmitSnapUpProof",
        ],
    );
}
