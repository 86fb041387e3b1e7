//! The operator end to end: the real control plane (scripts/test-cluster), a dev node running step
//! pods as damocles-step processes, the dev manager verifying proofs with filecoin-proofs, and
//! `damocles-operator run` in between. 2KiB sectors with TEST parameters.
#![cfg(feature = "proofs")]

#[path = "support/dev_manager.rs"]
mod dev_manager;
mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use damocles_operator::api::{Phase, SealingTask, State};
use dev_manager::DevManager;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use support::{DevNode, cluster, namespace, unique, wait_for};

/// A running `damocles-operator run`; killed when dropped (its log printed if the test failed).
struct Operator {
    child: Child,
    log: PathBuf,
}

impl Operator {
    fn start(namespace: &str, manager: &DevManager, profiles: &std::path::Path) -> Operator {
        let log = profiles.with_file_name(format!("{}.operator.log", unique("op")));
        let child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .args([
                "run",
                "--namespace",
                namespace,
                "--manager",
                &manager.address,
            ])
            .args(["--poll-interval", "1s", "--retry-backoff", "1s"])
            .arg("--profiles")
            .arg(profiles)
            .env("KUBECONFIG", &cluster().kubeconfig)
            .env("RUST_LOG", "info")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the operator starts");
        Operator { child, log }
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

/// Directories of one test's farm: workspaces, the persist store, the profiles file.
struct Farm {
    root: PathBuf,
    profiles: PathBuf,
}

impl Farm {
    fn new(name: &str, extra_profiles: &str) -> Farm {
        let root = std::env::temp_dir().join(unique(name));
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
                "workspaceRoot: {root}/workspace\nparamsPath: {params}\ndefaults:\n  image: damocles-step:test\n  command: [{step}]\n  env: [{{name: RUST_LOG, value: info}}]\n{extra_profiles}",
                root = root.display(),
                step = env!("CARGO_BIN_EXE_damocles-step"),
            ),
        )
        .unwrap();
        Farm { root, profiles }
    }

    fn store(&self) -> PathBuf {
        self.root.join("persist")
    }

    fn manager(&self) -> DevManager {
        let store = format!("persist={}", self.store().display());
        DevManager::start(
            &self.root.join("manager.json"),
            &["--store", &store, "--check-files-under", "/"],
        )
    }
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
    let client = support::client().await;
    let ns = namespace(&client, "seal").await;
    let farm = Farm::new("farm-seal", "");
    let _node = DevNode::start(&client, &[unique("worker")]).await;
    let manager = farm.manager();
    let _operator = Operator::start(&ns.name, &manager, &farm.profiles);
    let tasks: Api<SealingTask> = Api::namespaced(client.clone(), &ns.name);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sealer-2kib.yaml"
    ))
    .unwrap();
    create_task(&tasks, "sealer", &example).await;

    let task = wait_phase(&tasks, "sealer", Phase::Finished, Duration::from_secs(300)).await;
    let status = task.status.unwrap();
    assert_eq!(status.state, Some(State::Finished));
    let sector = status.sector.expect("allocated");
    let visited: Vec<State> = status.history.iter().map(|h| h.state).collect();
    assert!(
        visited.contains(&State::PCLanded) && visited.contains(&State::ProofSubmitted),
        "{visited:?}"
    );
    assert!(status.node.is_some(), "pinned to the node of its workspace");

    let chain = manager.admin("/admin/state", None).await;
    let record = &chain["chain"]["sectors"][sector.number.to_string()];
    assert!(
        record["proof"].is_object(),
        "the dev manager accepted a verified proof: {record}"
    );
    assert_eq!(record["submissions"]["SubmitPreCommit"], 1, "{record}");
    assert_eq!(record["submissions"]["SubmitProof"], 1, "{record}");
    assert_eq!(record["finalized"], true, "{record}");
    assert!(farm.store().join(format!("sealed/{sector}")).is_file());

    // Finished step pods are deleted as the task moves on (the dev node then removes them).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "finished step pods deleted",
        Duration::from_secs(30),
        || async {
            let list = pods.list(&ListParams::default()).await.ok()?;
            list.items.is_empty().then_some(())
        },
    )
    .await;
    std::fs::remove_dir_all(&farm.root).ok();
}
