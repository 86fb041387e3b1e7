//! What an operator test starts from: the operator as a process, a farm (workspaces, the
//! persist store, step profiles, its own dev node) and the scene that puts them together.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use damocles_operator::api::SealingTask;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use super::chart::chart_service_account;
use super::dev_manager::DevManager;
use super::{DevNode, TestNamespace, cluster, helm, namespace, unique, wait_for};

/// A running `damocles-operator run`; killed when dropped (its log printed if the test failed).
pub struct Operator {
    pub child: Child,
    pub log: PathBuf,
    /// Where its /metrics, /healthz and /readyz are.
    pub metrics: String,
}

impl Operator {
    pub fn start(namespace: &str, manager: &DevManager, profiles: &std::path::Path) -> Operator {
        Self::start_with(namespace, manager, profiles, None)
    }

    /// `crash`: a DAMOCLES_OPERATOR_CRASH point at which this operator dies.
    pub fn start_with(
        namespace: &str,
        manager: &DevManager,
        profiles: &std::path::Path,
        crash: Option<&str>,
    ) -> Operator {
        Self::start_args(namespace, manager, profiles, crash, &[])
    }

    pub fn start_args(
        namespace: &str,
        manager: &DevManager,
        profiles: &std::path::Path,
        crash: Option<&str>,
        extra: &[&str],
    ) -> Operator {
        let env = [("DAMOCLES_OPERATOR_CRASH", crash.unwrap_or_default())];
        Self::start_env(namespace, &manager.address, profiles, &env, extra)
    }

    /// `env`: more variables for the operator (a crash schedule: DAMOCLES_OPERATOR_CRASH_SCHEDULE;
    /// another KUBECONFIG).
    pub fn start_env(
        namespace: &str,
        manager: &str,
        profiles: &std::path::Path,
        env: &[(&str, &str)],
        extra: &[&str],
    ) -> Operator {
        let log = profiles.with_file_name(format!("{}.operator.log", unique("op")));
        let metrics = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string();
        let child = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
            .env("KUBECONFIG", chart_service_account(namespace))
            .env(
                "RUST_LOG",
                std::env::var("DAMOCLES_TEST_OPERATOR_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(env.iter().copied())
            .args(["run", "--namespace", namespace, "--manager", manager])
            .args(["--poll-interval", "1s", "--retry-backoff", "1s"])
            .args(["--metrics-address", &metrics])
            .arg("--profiles")
            .arg(profiles)
            .args(extra)
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
    pub async fn died(&mut self) {
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

/// The operator installed with `helm install` ([`Scene::install_operator`]); uninstalled when
/// dropped, its log printed if the test failed.
pub struct HelmRelease {
    pub name: String,
    namespace: String,
    /// Where its /metrics, /healthz and /readyz are.
    pub metrics: String,
    /// The dev node's pod directories, where the operator container's log is.
    pods: PathBuf,
}

impl HelmRelease {
    /// What the installed operator wrote to stderr (every operator container on this farm's
    /// nodes, one release per farm).
    pub fn log(&self) -> String {
        let mut text = String::new();
        for pod in std::fs::read_dir(&self.pods)
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(log) = std::fs::read_to_string(pod.path().join("operator.log")) {
                text.push_str(&log);
            }
        }
        text
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pod in std::fs::read_dir(&self.pods)
                .into_iter()
                .flatten()
                .flatten()
            {
                let log = pod.path().join("operator.log");
                if let Ok(text) = std::fs::read_to_string(&log) {
                    eprintln!("--- installed operator log ({}) ---\n{text}", log.display());
                }
            }
        }
        let _ = helm(
            cluster(),
            &["uninstall", &self.name, "--namespace", &self.namespace],
        );
    }
}

/// One test's farm: workspaces, the persist store, the profiles file, and a node label that keeps
/// its step pods on its own dev node (the tests of a binary share one control plane).
pub struct Farm {
    pub root: PathBuf,
    pub profiles: PathBuf,
    pub label: String,
    /// The proof parameter cache.
    pub params: String,
}

impl Farm {
    pub fn new(name: &str) -> Farm {
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
            params,
        }
    }

    /// A dev-node spec for a node of this farm: `extra` adds resources and labels
    /// (`nvidia.com/gpu=2,label:k=v`, `pull=fail`; see `damocles-operator dev-node --help`).
    pub fn node_spec(&self, name: &str, extra: &str) -> String {
        let extra = if extra.is_empty() {
            String::new()
        } else {
            format!("{extra},")
        };
        format!("{name},{extra}label:damocles-test={}", self.label)
    }

    pub fn store(&self) -> PathBuf {
        self.root.join("persist")
    }

    /// Adds per-step profiles (YAML lines under `steps:`, indented two spaces).
    pub fn set_steps(&self, steps: &str) {
        let mut text = std::fs::read_to_string(&self.profiles).unwrap();
        text.push_str("steps:\n");
        text.push_str(steps);
        std::fs::write(&self.profiles, text).unwrap();
    }

    pub fn manager(&self) -> DevManager {
        self.manager_with(&[])
    }

    /// The farm's dev manager with more flags.
    pub fn manager_with(&self, extra: &[&str]) -> DevManager {
        let store = format!("persist={}", self.store().display());
        let mut args = vec!["--store", &store, "--check-files-under", "/"];
        args.extend_from_slice(extra);
        DevManager::start(&self.root.join("manager.json"), &args)
    }
}

/// What every test here starts from: a namespace, its farm, dev nodes and dev manager.
pub struct Scene {
    pub ns: TestNamespace,
    pub farm: Farm,
    pub nodes: DevNode,
    pub manager: DevManager,
    pub client: kube::Client,
    pub tasks: Api<SealingTask>,
    pub pods: Api<Pod>,
}

impl Scene {
    /// One dev node, the default step profiles.
    pub async fn new(name: &str) -> Scene {
        Self::with_nodes(name, &[(&unique("worker"), "")], |_| String::new()).await
    }

    /// The farm's nodes, each a name and the rest of its dev-node spec (see [`Farm::node_spec`]),
    /// and its per-step profiles (`steps` gets the farm's node label; see [`Farm::set_steps`]).
    pub async fn with_nodes(
        name: &str,
        nodes: &[(&str, &str)],
        steps: impl FnOnce(&str) -> String,
    ) -> Scene {
        Self::with_dev_node_args(name, nodes, steps, &[]).await
    }

    /// As [`Self::with_nodes`], the dev node started with more flags.
    pub async fn with_dev_node_args(
        name: &str,
        nodes: &[(&str, &str)],
        steps: impl FnOnce(&str) -> String,
        dev_node_args: &[&str],
    ) -> Scene {
        let client = super::client().await;
        let ns = namespace(&client, name).await;
        let farm = Farm::new(&format!("farm-{name}"));
        let steps = steps(&farm.label);
        if !steps.is_empty() {
            farm.set_steps(&steps);
        }
        let specs: Vec<String> = nodes
            .iter()
            .map(|(node, extra)| farm.node_spec(node, extra))
            .collect();
        let nodes = DevNode::start_args(&client, &specs, dev_node_args).await;
        let manager = farm.manager();
        Scene {
            tasks: Api::namespaced(client.clone(), &ns.name),
            pods: Api::namespaced(client.clone(), &ns.name),
            client,
            ns,
            farm,
            nodes,
            manager,
        }
    }

    /// Starts one more node for this farm; it goes when the returned handle drops.
    pub async fn add_node(&self, name: &str, extra: &str) -> DevNode {
        DevNode::start(&self.client, &[self.farm.node_spec(name, extra)]).await
    }

    pub fn operator(&self) -> Operator {
        Operator::start(&self.ns.name, &self.manager, &self.farm.profiles)
    }

    /// The operator as a farm installs it: `helm install` of the chart with its default step
    /// profiles (GPU steps on `nvidia.com/gpu.present` nodes), pointed at this farm's manager,
    /// paths and node. The dev node runs the Deployment's pod: `damocles-operator run` with the
    /// rendered arguments, under the chart's ServiceAccount and RBAC.
    pub async fn install_operator(&self) -> HelmRelease {
        let name = unique("farm");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let farm = &self.farm;
        let on_this_farm = serde_json::json!({"damocles-test": farm.label});
        // The market's token, from a Secret, as a farm gives damocles-worker's piece_token.
        let secret: k8s_openapi::api::core::v1::Secret =
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "droplet-token"},
                "stringData": {"token": super::dev_manager::MARKET_TOKEN},
            }))
            .unwrap();
        Api::namespaced(self.client.clone(), &self.ns.name)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
        let values = serde_json::json!({
            // The dev node records images and runs commands: the chart only needs the names.
            "image": {"repository": "registry.example/damocles-operator"},
            "stepImage": {"repository": "registry.example/damocles-step"},
            "manager": {"address": self.manager.address},
            "watchNamespace": self.ns.name,
            "pollInterval": "1s",
            "retryBackoff": "1s",
            "metrics": {"port": port},
            "logFormat": "json",
            "nodeSelector": on_this_farm,
            "profiles": {
                "workspaceRoot": farm.root.join("workspace"),
                "paramsPath": farm.params,
                "parentCachePath": farm.root.join("parents"),
                // Where file:// unseal destinations may go.
                "deliveryRoots": [farm.root.join("retrieved")],
                "defaults": {
                    "image": "damocles-step:test",
                    "command": [env!("CARGO_BIN_EXE_damocles-step")],
                    "nodeSelector": on_this_farm,
                    "env": [
                        {"name": "RUST_LOG", "value": "info"},
                        {"name": "PIECE_FETCHER_TOKEN", "valueFrom":
                            {"secretKeyRef": {"name": "droplet-token", "key": "token"}}},
                    ],
                },
                // Added to the chart's GPU selectors (Helm merges maps).
                "steps": {
                    "pc2": {"nodeSelector": on_this_farm},
                    // C2's result (its proof) is sent through the pod's log, as a snap proof at
                    // 512 MiB and up must be: the operator reads it through the API server,
                    // under the chart's RBAC, and checks its digest.
                    "c2": {"nodeSelector": on_this_farm, "env": [
                        {"name": "DAMOCLES_STEP_MESSAGE_LIMIT", "value": "512"},
                    ]},
                },
            },
        });
        let values_file = farm.root.join(format!("{name}.values.json"));
        std::fs::write(&values_file, values.to_string()).unwrap();
        let chart = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/damocles-operator");
        let installed = helm(
            cluster(),
            &[
                "install",
                &name,
                chart,
                "--namespace",
                &self.ns.name,
                "--values",
                values_file.to_str().unwrap(),
                "--wait",
                "--timeout",
                "120s",
            ],
        );
        let release = HelmRelease {
            name,
            namespace: self.ns.name.clone(),
            metrics: format!("127.0.0.1:{port}"),
            pods: self.nodes.root.join("pods"),
        };
        assert!(
            installed.status.success(),
            "helm install: {}{}",
            String::from_utf8_lossy(&installed.stdout),
            String::from_utf8_lossy(&installed.stderr)
        );
        let ready = format!("http://{}/readyz", release.metrics);
        wait_for(
            "the installed operator ready (its task cache synced)",
            Duration::from_secs(60),
            || async {
                let answer = reqwest::get(&ready).await.ok()?;
                answer.status().is_success().then_some(())
            },
        )
        .await;
        release
    }
    /// Creates a task from examples/sealer-2kib.yaml.
    pub async fn seal(&self, name: &str) -> SealingTask {
        create_sealer(&self.tasks, name).await
    }

    pub fn workspace(&self, task: &str) -> PathBuf {
        self.farm
            .root
            .join("workspace")
            .join(&self.ns.name)
            .join(task)
    }

    /// The dev manager's record of a sector.
    pub async fn record(&self, number: u64) -> serde_json::Value {
        let chain = self.manager.admin("/admin/state", None).await;
        chain["chain"]["sectors"][number.to_string()].clone()
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        // DAMOCLES_TEST_KEEP_FARM keeps a passing test's farm too (its operator logs, workspaces
        // and manager state), as a failing one's is kept.
        if !std::thread::panicking() && std::env::var_os("DAMOCLES_TEST_KEEP_FARM").is_none() {
            std::fs::remove_dir_all(&self.farm.root).ok();
        }
    }
}

/// Creates a task from examples/sealer-2kib.yaml.
pub async fn create_sealer(api: &Api<SealingTask>, name: &str) -> SealingTask {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sealer-2kib.yaml"
    ))
    .unwrap();
    create_task(api, name, &example).await
}

/// Creates a task from a manifest, named `name`.
pub async fn create_task(api: &Api<SealingTask>, name: &str, yaml: &str) -> SealingTask {
    let mut task: SealingTask = serde_saphyr::from_str(yaml).unwrap();
    task.metadata.name = Some(name.into());
    api.create(&PostParams::default(), &task).await.unwrap()
}
