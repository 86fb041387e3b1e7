//! The operator end to end: the real control plane (scripts/test-cluster), a dev node running step
//! pods as damocles-step processes, the dev manager verifying proofs with filecoin-proofs, and
//! `damocles-operator run` in between. 2KiB sectors with TEST parameters.
#![cfg(feature = "proofs")]

#[path = "support/dev_manager.rs"]
mod dev_manager;
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use damocles_operator::api::{Phase, SealingTask, State};
use dev_manager::DevManager;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use support::{DevNode, cluster, namespace, unique, wait_for};

/// A running `damocles-operator run`; killed when dropped (its log printed if the test failed).
struct Operator {
    child: Child,
    log: PathBuf,
    /// Where its /metrics, /healthz and /readyz are.
    metrics: String,
}

impl Operator {
    fn start(namespace: &str, manager: &DevManager, profiles: &std::path::Path) -> Operator {
        Self::start_with(namespace, manager, profiles, None)
    }

    /// `crash`: a DAMOCLES_OPERATOR_CRASH point at which this operator dies.
    fn start_with(
        namespace: &str,
        manager: &DevManager,
        profiles: &std::path::Path,
        crash: Option<&str>,
    ) -> Operator {
        Self::start_args(namespace, manager, profiles, crash, &[])
    }

    fn start_args(
        namespace: &str,
        manager: &DevManager,
        profiles: &std::path::Path,
        crash: Option<&str>,
        extra: &[&str],
    ) -> Operator {
        let log = profiles.with_file_name(format!("{}.operator.log", unique("op")));
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .env("DAMOCLES_OPERATOR_CRASH", crash.unwrap_or_default())
            .args([
                "run",
                "--namespace",
                namespace,
                "--manager",
                &manager.address,
            ])
            .args(["--poll-interval", "1s", "--retry-backoff", "1s"])
            .args(["--metrics-address", &metrics])
            .arg("--profiles")
            .arg(profiles)
            .args(extra)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the operator starts");
        Operator {
            child,
            log,
            metrics,
        }
    }
}

impl Operator {
    /// Waits for this operator to die at its crash point.
    async fn died(&mut self) {
        wait_for(
            "the operator to die at its crash point",
            Duration::from_secs(240),
            || {
                let exited = self.child.try_wait().unwrap().is_some();
                async move { exited.then_some(()) }
            },
        )
        .await;
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("--- operator log ---\n{log}");
        }
    }
}

/// One test's farm: workspaces, the persist store, the profiles file, and a node label that keeps
/// its step pods on its own dev node (the tests of a binary share one control plane).
struct Farm {
    root: PathBuf,
    profiles: PathBuf,
    label: String,
}

impl Farm {
    fn new(name: &str) -> Farm {
        let label = unique(name);
        let root = std::env::temp_dir().join(&label);
        std::fs::create_dir_all(&root).unwrap();
        let params = std::env::var("FIL_PROOFS_PARAMETER_CACHE").unwrap_or_else(|_| {
            format!(
                "{}/.cache/damocles-operator/params",
                std::env::var("HOME").unwrap()
            )
        });
        let profiles = root.join("profiles.yaml");
        std::fs::write(
            &profiles,
            format!(
                "workspaceRoot: {root}/workspace\nparamsPath: {params}\ndefaults:\n  image: damocles-step:test\n  command: [{step}]\n  env: [{{name: RUST_LOG, value: info}}]\n  nodeSelector: {{damocles-test: {label}}}\n",
                root = root.display(),
                step = env!("CARGO_BIN_EXE_damocles-step"),
            ),
        )
        .unwrap();
        Farm {
            root,
            profiles,
            label,
        }
    }

    /// This farm's dev node.
    async fn node(&self, client: &kube::Client) -> DevNode {
        let spec = format!("{},label:damocles-test={}", unique("worker"), self.label);
        DevNode::start(client, &[spec]).await
    }

    fn store(&self) -> PathBuf {
        self.root.join("persist")
    }

    /// Adds per-step profiles (YAML lines under `steps:`, indented two spaces).
    fn set_steps(&self, steps: &str) {
        let mut text = std::fs::read_to_string(&self.profiles).unwrap();
        text.push_str("steps:\n");
        text.push_str(steps);
        std::fs::write(&self.profiles, text).unwrap();
    }

    fn manager(&self) -> DevManager {
        let store = format!("persist={}", self.store().display());
        DevManager::start(
            &self.root.join("manager.json"),
            &["--store", &store, "--check-files-under", "/"],
        )
    }
}

/// What every test here starts from: a namespace, its farm, dev node and dev manager.
struct Scene {
    ns: support::TestNamespace,
    farm: Farm,
    _node: DevNode,
    manager: DevManager,
    tasks: Api<SealingTask>,
    pods: Api<Pod>,
}

impl Scene {
    async fn new(name: &str) -> Scene {
        let client = support::client().await;
        let ns = namespace(&client, name).await;
        let farm = Farm::new(&format!("farm-{name}"));
        let _node = farm.node(&client).await;
        let manager = farm.manager();
        Scene {
            tasks: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client.clone(), &ns.name),
            ns,
            farm,
            _node,
            manager,
        }
    }

    fn operator(&self) -> Operator {
        Operator::start(&self.ns.name, &self.manager, &self.farm.profiles)
    }

    /// Creates a task from examples/sealer-2kib.yaml.
    async fn seal(&self, name: &str) -> SealingTask {
        create_sealer(&self.tasks, name).await
    }

    fn workspace(&self, task: &str) -> PathBuf {
        self.farm
            .root
            .join("workspace")
            .join(&self.ns.name)
            .join(task)
    }

    /// The dev manager's record of a sector.
    async fn record(&self, number: u64) -> serde_json::Value {
        let chain = self.manager.admin("/admin/state", None).await;
        chain["chain"]["sectors"][number.to_string()].clone()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            std::fs::remove_dir_all(&self.farm.root).ok();
        }
    }
}

/// Creates a task from examples/sealer-2kib.yaml.
async fn create_sealer(api: &Api<SealingTask>, name: &str) -> SealingTask {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sealer-2kib.yaml"
    ))
    .unwrap();
    create_task(api, name, &example).await
}

/// Deletes a task and waits until its finalizer has let it go.
async fn delete_and_wait(api: &Api<SealingTask>, name: &str) {
    api.delete(name, &Default::default()).await.unwrap();
    wait_for(
        &format!("task {name} gone"),
        Duration::from_secs(60),
        || async { api.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}

async fn create_task(api: &Api<SealingTask>, name: &str, yaml: &str) -> SealingTask {
    let mut task: SealingTask = serde_saphyr::from_str(yaml).unwrap();
    task.metadata.name = Some(name.into());
    api.create(&PostParams::default(), &task).await.unwrap()
}

async fn wait_phase(
    api: &Api<SealingTask>,
    name: &str,
    phase: Phase,
    timeout: Duration,
) -> SealingTask {
    wait_for(&format!("task {name} {phase:?}"), timeout, || async {
        let task = api.get(name).await.ok()?;
        let status = task.status.as_ref()?;
        if status.phase == Some(Phase::Paused) && phase != Phase::Paused {
            panic!("task {name} paused: {:?}", status.last_error);
        }
        (status.phase == Some(phase)).then_some(task)
    })
    .await
}

#[tokio::test]
async fn a_sealer_task_reaches_finished_with_its_proof_verified() {
    let scene = Scene::new("seal").await;
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    let pods = &scene.pods;
    let operator = scene.operator();
    let timeline = PodTimeline::watch(pods.clone());
    scene.seal("sealer").await;

    let task = wait_phase(tasks, "sealer", Phase::Finished, Duration::from_secs(600)).await;
    let status = task.status.unwrap();
    assert_eq!(status.state, Some(State::Finished));
    let sector = status.sector.expect("allocated");
    let visited: Vec<State> = status.history.iter().map(|h| h.state).collect();
    assert!(
        visited.contains(&State::PCLanded) && visited.contains(&State::ProofSubmitted),
        "{visited:?}"
    );
    assert!(status.node.is_some(), "pinned to the node of its workspace");

    let record = &scene.record(sector.number).await;
    assert!(
        record["proof"].is_object(),
        "the dev manager accepted a verified proof: {record}"
    );
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    assert_eq!(record["finalized"], true, "{record}");
    assert!(farm.store().join(format!("sealed/{sector}")).is_file());
    let workspace = scene.workspace("sealer");
    wait_for(
        "the finished task's workspace removed",
        Duration::from_secs(30),
        || async { (!workspace.exists()).then_some(()) },
    )
    .await;

    // The operator's own view: the task counted as finished, each step's duration, its API writes.
    let metrics = reqwest::get(format!("http://{}/metrics", operator.metrics))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
        value(r#"damocles_step_duration_seconds_count{step="c2"}"#),
        1.0
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
    timeline.report();
    // The write budget of docs/benchmarks.md: 4 per proof-step transition, 1 per manager-only one
    // (7 and 10 for a pledge sealer), plus the workspace cleanup at the end.
    assert!(writes <= 38.0, "{writes} API writes for one sealer task");
    let ready = reqwest::get(format!("http://{}/readyz", operator.metrics))
        .await
        .unwrap();
    assert!(ready.status().is_success());

    // Finished step pods are deleted as the task moves on (the dev node then removes them).
    wait_for(
        "finished step pods deleted",
        Duration::from_secs(30),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
}

/// A farm of a PC1 box (hugepages, no GPU) and a GPU box, with C2 on `locality: any`, a GPU
/// request and a concurrency cap of one: each task's workspace goes to the PC1 box (what its
/// workspace steps need), C1 leaves its output in the persist store, C2 runs on the GPU box only,
/// the second C2 waits its turn, and the transfer files go when the tasks end.
#[tokio::test]
async fn c2_runs_on_the_gpu_node_away_from_the_workspace_and_concurrency_caps_hold() {
    let client = support::client().await;
    let ns = namespace(&client, "gpu").await;
    let farm = Farm::new("farm-gpu");
    let gpu_label = format!("damocles.io/gpu-{}", farm.label);
    let hugepages_label = format!("damocles.io/hugepages-{}", farm.label);
    farm.set_steps(&format!(
        "  pc1:\n    nodeSelector: {{damocles-test: {label}, {hugepages_label}: \"true\"}}\n  c2:\n    nodeSelector: {{damocles-test: {label}, {gpu_label}: \"true\"}}\n    resources: {{limits: {{nvidia.com/gpu: \"1\"}}}}\n    concurrency: 1\n    locality: any\n",
        label = farm.label
    ));
    let pc1_node = unique("pc1");
    let gpu_node = unique("gpu");
    let _nodes = DevNode::start(
        &client,
        &[
            format!(
                "{pc1_node},label:damocles-test={},label:{hugepages_label}=true",
                farm.label
            ),
            format!(
                "{gpu_node},nvidia.com/gpu=2,label:damocles-test={},label:{gpu_label}=true",
                farm.label
            ),
        ],
    )
    .await;
    let manager = farm.manager();
    let tasks: Api<SealingTask> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let _operator = Operator::start(&ns.name, &manager, &farm.profiles);
    create_sealer(&tasks, "one").await;
    create_sealer(&tasks, "two").await;

    // Watch every step pod and both tasks until both finish and their workspaces are gone.
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
        if tasks.len() == 2
            && tasks
                .iter()
                .all(|t| phase(t) == Some(Phase::Finished) && cleaned(t))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "timed out waiting for both tasks to finish"
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
    for name in ["one", "two"] {
        let status = tasks.get(name).await.unwrap().status.unwrap();
        assert_eq!(status.node.as_deref(), Some(pc1_node.as_str()));
        let c1 = status.outputs.unwrap().c1_output.unwrap();
        assert!(
            Path::new(&c1.location).starts_with(&transfer),
            "C1 wrote {} for the C2 on the GPU node",
            c1.location
        );
        assert!(
            !Path::new(&c1.location).exists(),
            "removed when the task ended"
        );
    }
    assert_eq!(
        std::fs::read_dir(&transfer).unwrap().count(),
        0,
        "nothing left in {}",
        transfer.display()
    );
}

/// The sum of a metric's samples on an operator's /metrics (all label sets); none if unreachable.
async fn metric(operator: &Operator, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", operator.metrics))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

/// Two replicas share a leader-election Lease: the standby writes nothing while the leader works,
/// and when the leader dies mid-task (no clean hand-over) the standby takes over and finishes it
/// without a second submission.
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
    let task = wait_phase(&scene.tasks, "t", Phase::Finished, Duration::from_secs(600)).await;
    assert_eq!(metric(&standby, "damocles_leader").await, Some(1.0));
    assert!(metric(&standby, "damocles_api_writes_total").await.unwrap() > 0.0);
    let sector = task.status.unwrap().sector.unwrap();
    let record = scene.record(sector.number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
}

/// A pod's name, "created" or "finished", and when the watch saw it so.
type PodSighting = (String, &'static str, std::time::Instant);

/// When each step pod appeared and when it was seen to succeed, as a watch on the test's side
/// sees them: "step finished to next step started" for docs/benchmarks.md.
struct PodTimeline {
    seen: std::sync::Arc<std::sync::Mutex<Vec<PodSighting>>>,
    watch: tokio::task::JoinHandle<()>,
}

impl PodTimeline {
    fn watch(pods: Api<Pod>) -> PodTimeline {
        use futures::StreamExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let watch = tokio::spawn(async move {
            let stream = kube::runtime::watcher(pods, Default::default());
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            while let Some(Ok(pod)) = stream.next().await {
                let now = std::time::Instant::now();
                let name = pod.name_any();
                let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
                let what = if phase == Some("Succeeded") {
                    "finished"
                } else {
                    "created"
                };
                let mut seen = record.lock().unwrap();
                if !seen.iter().any(|(n, w, _)| *n == name && *w == what) {
                    seen.push((name, what, now));
                }
            }
        });
        PodTimeline { seen, watch }
    }

    /// Prints, for each step pod, the time from the previous step pod's success to its creation.
    fn report(&self) {
        let seen = self.seen.lock().unwrap();
        let mut lines = Vec::new();
        let mut finished: Option<(&str, std::time::Instant)> = None;
        for (name, what, at) in seen.iter() {
            match *what {
                "finished" => finished = Some((name, *at)),
                _ => {
                    if let Some((previous, done)) = finished.take() {
                        let ms = at.duration_since(done).as_millis();
                        lines.push(format!("{previous} -> {name}: {ms} ms"));
                    }
                }
            }
        }
        eprintln!(
            "step finished -> next step pod created:\n{}",
            lines.join("\n")
        );
    }
}

impl Drop for PodTimeline {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// A task from one of the examples, named `name`, with `spec` merged over the example's spec.
async fn create_example(
    api: &Api<SealingTask>,
    example: &str,
    name: &str,
    spec: serde_json::Value,
) -> SealingTask {
    let path = format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"));
    let mut task: serde_json::Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    for (key, value) in spec.as_object().unwrap() {
        task["spec"][key] = value.clone();
    }
    task["metadata"]["name"] = name.into();
    let task: SealingTask = serde_json::from_value(task).unwrap();
    api.create(&PostParams::default(), &task).await.unwrap()
}

/// The piece CID (CommP) of a file, as `damocles-step` add-piece computes it.
fn piece_cid(piece: &std::path::Path, scratch: &std::path::Path) -> String {
    let request = serde_json::json!({
        "version": 1,
        "step": "add-piece",
        "sector": {"miner": 1, "number": 1},
        "sectorSize": "2KiB",
        "workspace": scratch,
        "terminationMessagePath": scratch.join("result.json"),
        "inputs": {"pieces": [{"size": 2048, "source": format!("file://{}", piece.display())}]}
    });
    std::fs::create_dir_all(scratch).unwrap();
    let path = scratch.join("request.json");
    std::fs::write(&path, request.to_string()).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_damocles-step"))
        .args(["run", "--request"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    result["outputs"]["pieces"][0]["cid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// After sealing, the three other plans on the same sector, each driven by the manager's queue:
/// its lost files rebuilt bit for bit, a piece unsealed to a file, then a snap upgrade with deal
/// data that the dev manager verifies.
#[tokio::test]
async fn a_sealed_sector_is_rebuilt_unsealed_and_snap_upgraded() {
    let scene = Scene::new("lifecycle").await;
    let tasks = &scene.tasks;
    let manager = &scene.manager;
    let _operator = scene.operator();
    scene.seal("cc").await;
    let sealed = wait_phase(tasks, "cc", Phase::Finished, Duration::from_secs(600)).await;
    let sealed = sealed.status.unwrap();
    let sector = sealed.sector.unwrap();
    let committed_comm_r = sealed.outputs.unwrap().comm_r.unwrap();

    // The sector's files are lost; the manager marks it for rebuild.
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
    let spec_sector = serde_json::json!({"miner": sector.miner, "number": sector.number});
    create_example(
        tasks,
        "rebuild-2kib.yaml",
        "rebuild",
        serde_json::json!({"sector": spec_sector}),
    )
    .await;
    let rebuilt = wait_phase(tasks, "rebuild", Phase::Finished, Duration::from_secs(600)).await;
    let visited: Vec<State> = rebuilt
        .status
        .unwrap()
        .history
        .iter()
        .map(|h| h.state)
        .collect();
    assert!(visited.contains(&State::SealedChecked), "{visited:?}");
    assert_eq!(
        std::fs::read(&replica).unwrap(),
        original,
        "the rebuilt replica is the original, bit for bit"
    );
    assert!(store.join(format!("cache/{sector}/p_aux")).is_file());
    let record = scene.record(sector.number).await;
    assert_eq!(record["rebuilds"], 1, "{record}");

    // A retrieval asks for the (pledge) piece; the task delivers it where its spec says.
    let zero_piece = "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy";
    manager
        .admin(
            "/admin/unseal",
            Some(serde_json::json!({
                "number": sector.number, "pieceCid": zero_piece, "offset": 0, "size": 2032,
                "dest": ["file:///nowhere"],
            })),
        )
        .await;
    let delivered = scene.farm.root.join("retrieved/piece.bin");
    create_example(
        tasks,
        "unseal-2kib.yaml",
        "unseal",
        serde_json::json!({
            "sector": spec_sector,
            "unseal": {"pieceCid": zero_piece, "offset": 0, "size": 2032,
                       "destination": format!("file://{}", delivered.display())},
        }),
    )
    .await;

    // Meanwhile the CC sector is upgraded with a deal piece.
    let piece = scene.farm.root.join("deal.bin");
    std::fs::write(
        &piece,
        (0..2032u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    let cid = piece_cid(&piece, &scene.farm.root.join("commp"));
    create_example(
        tasks,
        "snapup-2kib.yaml",
        "snapup",
        serde_json::json!({"pieces": [
            {"cid": cid, "size": 2048, "source": format!("file://{}", piece.display())}
        ]}),
    )
    .await;

    wait_phase(tasks, "unseal", Phase::Finished, Duration::from_secs(600)).await;
    assert_eq!(
        std::fs::read(&delivered).unwrap(),
        vec![0u8; 2032],
        "unsealing a pledge sector gives back its zeros"
    );
    let chain = manager.admin("/admin/state", None).await;
    assert_eq!(
        chain["chain"]["unseals"][0]["achieved"], "",
        "the manager heard the unseal succeed: {chain}"
    );

    let upgraded = wait_phase(tasks, "snapup", Phase::Finished, Duration::from_secs(600)).await;
    let status = upgraded.status.unwrap();
    assert_eq!(status.sector, Some(sector));
    let outputs = status.outputs.unwrap();
    assert_eq!(outputs.comm_d.as_deref(), Some(cid.as_str()));
    assert_ne!(outputs.comm_r.unwrap(), committed_comm_r, "a new CommR");
    let record = scene.record(sector.number).await;
    assert!(
        record["upgrade"].is_object(),
        "the dev manager accepted a verified upgrade proof: {record}"
    );
    assert_eq!(record["submissions"]["SubmitSnapUpProof"], 1, "{record}");
    assert!(store.join(format!("update/{sector}")).is_file());
}

async fn patch_spec(api: &Api<SealingTask>, name: &str, spec: serde_json::Value) {
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&serde_json::json!({ "spec": spec })),
    )
    .await
    .unwrap();
}

async fn wait_status<F>(api: &Api<SealingTask>, name: &str, what: &str, check: F) -> SealingTask
where
    F: Fn(&damocles_operator::api::SealingTaskStatus) -> bool,
{
    wait_for(what, Duration::from_secs(300), || async {
        let task = api.get(name).await.ok()?;
        check(task.status.as_ref()?).then_some(task)
    })
    .await
}

async fn running_pod(pods: &Api<Pod>, name: &str) -> Pod {
    wait_for(
        &format!("pod {name} running"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await.ok()?;
            (pod.status.as_ref()?.phase.as_deref() == Some("Running")).then_some(pod)
        },
    )
    .await
}

/// C2 runs for a minute on these machines: long enough to interrupt it in every way a user can.
#[tokio::test]
async fn a_running_step_survives_pod_loss_and_obeys_suspend_refused_resume_and_abort() {
    let scene = Scene::new("interrupt").await;
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
    let refused = wait_for(
        "the refused value cleared",
        Duration::from_secs(30),
        || async {
            let task = tasks.get("t").await.ok()?;
            task.spec.resume_state.is_none().then_some(task)
        },
    )
    .await;
    let status = refused.status.unwrap();
    assert_eq!(
        (status.state, status.step_pod.as_deref()),
        (Some(State::C1Done), Some(third.as_str()))
    );

    // Aborted works at any time: the running step is stopped, the manager told, the spec cleared.
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "Aborted"})).await;
    wait_phase(tasks, "t", Phase::Aborted, Duration::from_secs(60)).await;
    // Applied once (recorded in status first, so a crash cannot lose it), then cleared.
    let aborted = wait_for("resumeState cleared", Duration::from_secs(30), || async {
        let task = tasks.get("t").await.ok()?;
        task.spec.resume_state.is_none().then_some(task)
    })
    .await;
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

/// A permanent failure pauses the task with its files; a rewind to TreeDBuilt gets a new ticket
/// and the task finishes.
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
            Some(serde_json::json!({"SubmitPreCommit": {}})),
        )
        .await;
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "TreeDBuilt"})).await;
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
}

/// The operator dies right after submitting the PreCommit (before recording it), right before
/// submitting the proof (intent recorded), right after submitting the proof, and is SIGKILLed while
/// C2 runs: each time a new operator picks the task up, adopts the running pod, and the dev
/// manager counts exactly one submission of each kind.
#[tokio::test]
async fn a_restarted_operator_neither_loses_nor_repeats_a_submission() {
    let scene = Scene::new("restart").await;
    let ns = &scene.ns;
    let farm = &scene.farm;
    let manager = &scene.manager;
    let tasks = &scene.tasks;
    // A task the operator cannot read (the apiserver takes a TTL above u32) stops no other task,
    // across every restart below; it gets a Warning Event that names the field.
    let unreadable = unreadable_task(&ns.name, "bad").await;
    scene.seal("t").await;
    let start = |crash| Operator::start_with(&ns.name, manager, &farm.profiles, crash);

    start(Some("after-submit:SubmitPreCommit")).died().await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(status.state, Some(State::PC2Done));
    assert_eq!(status.submitting.as_deref(), Some("SubmitPreCommit"));

    let mut during_c2 = start(None);
    let c2 = wait_status(tasks, "t", "C2 running", |s| {
        s.state == Some(State::C1Done) && s.phase == Some(Phase::Running) && s.step_pod.is_some()
    })
    .await;
    let pod = c2.status.unwrap().step_pod.unwrap();
    // A resume refused while C2 runs is recorded once and cleared; the task carries on (below,
    // to Finished).
    patch_spec(tasks, "t", serde_json::json!({"resumeState": "Finished"})).await;
    let refused = wait_for(
        "the refused resume cleared",
        Duration::from_secs(30),
        || async {
            let task = tasks.get("t").await.ok()?;
            task.spec.resume_state.is_none().then_some(task)
        },
    )
    .await;
    let status = refused.status.unwrap();
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "ResumeRejected" && c.status == "True")
        .expect("a ResumeRejected condition");
    assert!(condition.message.contains("Finished"), "{condition:?}");
    assert_eq!(status.step_pod.as_deref(), Some(pod.as_str()));
    assert_eq!(status.phase, Some(Phase::Running));
    drop(during_c2.child.kill());
    during_c2.died().await;

    start(Some("before-submit:SubmitProof")).died().await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(
        (status.state, status.submitting.as_deref()),
        (Some(State::C2Done), Some("SubmitProof"))
    );
    assert_eq!(
        status.attempt, 0,
        "the C2 pod {pod} was adopted, not replaced"
    );

    start(Some("after-submit:SubmitProof")).died().await;
    let _operator = start(None);
    wait_phase(tasks, "t", Phase::Finished, Duration::from_secs(600)).await;

    let sector = tasks
        .get("t")
        .await
        .unwrap()
        .status
        .unwrap()
        .sector
        .unwrap();
    let record = &scene.record(sector.number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");

    let warned = wait_for("the InvalidObject event", Duration::from_secs(30), || {
        invalid_object_event(&ns.name, "bad")
    })
    .await;
    assert!(warned.contains("ttlSecondsAfterFinished"), "{warned}");
    // Left alone: the operator wrote nothing to it, not even a finalizer.
    let resource = kube::api::ApiResource::erase::<SealingTask>(&());
    let raw: Api<kube::api::DynamicObject> =
        Api::namespaced_with(support::client().await, &ns.name, &resource);
    let bad = raw.get("bad").await.unwrap();
    assert!(bad.data.get("status").is_none(), "{:?}", bad.data);
    assert!(bad.metadata.finalizers.unwrap_or_default().is_empty());
    assert_eq!(bad.metadata.uid, unreadable.metadata.uid);
}

/// Creates a SealingTask the CRD accepts but the operator's types cannot read.
async fn unreadable_task(namespace: &str, name: &str) -> kube::api::DynamicObject {
    let resource = kube::api::ApiResource::erase::<SealingTask>(&());
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(support::client().await, namespace, &resource);
    let object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "damocles.io/v1alpha1",
        "kind": "SealingTask",
        "metadata": {"name": name},
        "spec": {"plan": "sealer", "sectorSize": "2KiB", "ttlSecondsAfterFinished": 4294967296u64},
    }))
    .unwrap();
    api.create(&PostParams::default(), &object).await.unwrap()
}

/// The note of the InvalidObject Warning Event on task `name`, once there is one.
async fn invalid_object_event(namespace: &str, name: &str) -> Option<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(support::client().await, namespace);
    let list = events.list(&ListParams::default()).await.ok()?;
    list.items.into_iter().find_map(|event| {
        let about = event.regarding.as_ref()?.name.as_deref()? == name;
        (about && event.reason.as_deref() == Some("InvalidObject"))
            .then(|| event.note.unwrap_or_default())
    })
}

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
    wait_status(tasks, "t", "PC2 done", |s| s.state == Some(State::PC2Done)).await;
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

/// Deleting a running task stops its step, tells the manager and removes the workspace before the
/// task goes away (a finalizer).
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

    delete_and_wait(tasks, "t").await;
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

/// The dev manager's epochs are 20 ms, so a ticket lives 3780 epochs = 75 s. With the operator's
/// margin at 2800 epochs, a ticket older than (3780 - 2800 - 900) x 20 ms = 1.6 s is too old for
/// PC2 or the PreCommit; the first PC2 is slowed by 3 s, so the task must go back for a new ticket,
/// and its second PreCommit (the first never sent) is accepted.
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
        "steps:\n  pc2:\n    command: [sh, -c, 'if [ ! -e {once} ]; then touch {once}; sleep 3; fi; exec {step} \"$@\"', pc2]\n",
        once = once.display(),
        step = env!("CARGO_BIN_EXE_damocles-step"),
    ));
    std::fs::write(&farm.profiles, profiles).unwrap();
    let _operator = Operator::start_args(
        &ns.name,
        manager,
        &farm.profiles,
        None,
        &["--block-time", "20ms", "--ticket-margin", "2800"],
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
    tasks.delete("t", &Default::default()).await.unwrap();
}

/// A first step pod bound to a node where it cannot start (every image pull there fails) is
/// replaced after the profile's start timeout, without spending the retry budget, by one that
/// prefers another node; the workspace is then that node's.
#[tokio::test]
async fn a_first_pod_that_never_starts_is_replaced_on_another_node() {
    let client = support::client().await;
    let ns = namespace(&client, "nostart").await;
    let farm = Farm::new("farm-nostart");
    farm.set_steps("  add-piece:\n    startTimeoutSeconds: 3\n");
    let broken = unique("broken");
    let healthy = unique("healthy");
    // Only the broken node at first, so the scheduler has nowhere else to put the first pod.
    let _broken_node = DevNode::start(
        &client,
        &[format!(
            "{broken},pull=fail,label:damocles-test={}",
            farm.label
        )],
    )
    .await;
    let manager = farm.manager();
    let tasks: Api<SealingTask> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let _operator = Operator::start(&ns.name, &manager, &farm.profiles);
    create_sealer(&tasks, "t").await;

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
            (waiting.reason.as_deref() == Some("ErrImagePull")).then_some(pod)
        },
    )
    .await;
    assert_eq!(
        first.spec.as_ref().unwrap().node_name.as_deref(),
        Some(broken.as_str())
    );
    let stuck = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(stuck.node, None, "no workspace yet: nothing ran");
    let _healthy_node = DevNode::start(
        &client,
        &[format!("{healthy},label:damocles-test={}", farm.label)],
    )
    .await;

    let moved = wait_status(&tasks, "t", "a workspace node chosen", |s| s.node.is_some()).await;
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

    delete_and_wait(&tasks, "t").await;
    std::fs::remove_dir_all(&farm.root).ok();
}

/// The operator dies right after submitting the PreCommit and comes back when the ticket counts
/// as too old: it asks the manager, finds the PreCommit there and carries on, instead of going
/// back for a new ticket (which would seal a commR the manager refuses as Mismatched).
#[tokio::test]
async fn a_submitted_precommit_is_not_rewound_for_an_old_ticket() {
    let scene = Scene::new("submitted").await;
    let ns = &scene.ns;
    let farm = &scene.farm;
    let tasks = &scene.tasks;
    scene.seal("t").await;
    Operator::start_with(
        &ns.name,
        &scene.manager,
        &farm.profiles,
        Some("after-submit:SubmitPreCommit"),
    )
    .died()
    .await;
    let status = tasks.get("t").await.unwrap().status.unwrap();
    assert_eq!(status.submitting.as_deref(), Some("SubmitPreCommit"));

    // 20 ms blocks and a margin of 2870 epochs: a ticket older than 200 ms is too old to use.
    let _operator = Operator::start_args(
        &ns.name,
        &scene.manager,
        &farm.profiles,
        None,
        &["--block-time", "20ms", "--ticket-margin", "2870"],
    );
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
    assert_eq!(tickets, 1, "no second ticket: {:?}", status.history);
    let record = &scene.record(status.sector.unwrap().number).await;
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    delete_and_wait(tasks, "t").await;
}
