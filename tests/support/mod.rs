//! Test support for tests that need the real control plane (scripts/test-cluster).
//!
//! The first test of a binary that asks for the cluster starts one (built from Go modules, cached in
//! ~/.cache/damocles-operator/cluster) with its own state directory, installs the CRD, and leaves a
//! watchdog that tears it down when the test binary exits, however it exits. Set
//! `DAMOCLES_TEST_KUBECONFIG` to a running cluster's kubeconfig to reuse it instead (e.g. after
//! `eval "$(scripts/test-cluster up)"`: `DAMOCLES_TEST_KUBECONFIG=$KUBECONFIG`).
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub struct ClusterInfo {
    pub kubeconfig: PathBuf,
    /// Directory with kubectl and helm.
    pub bin: PathBuf,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The control plane for this test binary, started on first use.
pub fn cluster() -> &'static ClusterInfo {
    static CLUSTER: OnceLock<ClusterInfo> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let info = match std::env::var_os("DAMOCLES_TEST_KUBECONFIG") {
            Some(path) => ClusterInfo {
                kubeconfig: path.into(),
                bin: bin_dir(),
            },
            None => start_cluster(),
        };
        let crd = repo().join("crds/sealingtask.yaml");
        kubectl(
            &info,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crd.to_str().unwrap(),
            ],
        );
        kubectl(
            &info,
            &[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/sealingtasks.damocles.io",
            ],
        );
        info
    })
}

fn bin_dir() -> PathBuf {
    let output = Command::new(repo().join("scripts/test-cluster"))
        .arg("env")
        .output()
        .expect("scripts/test-cluster runs");
    export_bin(&String::from_utf8_lossy(&output.stdout))
}

/// The value of `export NAME=...` in scripts/test-cluster's output.
fn export<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        l.strip_prefix("export ")?
            .strip_prefix(name)?
            .strip_prefix('=')
    })
}

/// The cluster's bin dir: the first entry of the exported PATH.
fn export_bin(text: &str) -> PathBuf {
    let path = export(text, "PATH").expect("scripts/test-cluster prints PATH");
    PathBuf::from(path.split(':').next().unwrap_or_default())
}

fn start_cluster() -> ClusterInfo {
    let state = std::env::temp_dir().join(format!("damocles-test-state-{}", std::process::id()));
    let dir = std::env::temp_dir().join(format!("damocles-test-cluster-{}", std::process::id()));
    let output = Command::new(repo().join("scripts/test-cluster"))
        .args(["up", "--dir"])
        .arg(&dir)
        .env("DAMOCLES_CLUSTER_DIR", &state)
        .stderr(Stdio::inherit())
        .output()
        .expect("scripts/test-cluster runs");
    assert!(
        output.status.success(),
        "scripts/test-cluster up failed (see its output above)"
    );
    // The watchdog outlives this process (own process group) and stops the cluster after it; it is
    // never waited for on purpose.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; exec '{script}' down >/dev/null 2>&1",
            pid = std::process::id(),
            script = repo().join("scripts/test-cluster").display()
        ))
        .env("DAMOCLES_CLUSTER_DIR", &state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("watchdog starts");
    let text = String::from_utf8_lossy(&output.stdout);
    let kubeconfig = export(&text, "KUBECONFIG").expect("up prints KUBECONFIG");
    ClusterInfo {
        kubeconfig: kubeconfig.into(),
        bin: export_bin(&text),
    }
}

/// Runs kubectl against the test cluster; panics with its output when it fails.
pub fn kubectl(info: &ClusterInfo, args: &[&str]) -> String {
    let output = kubectl_output(info, args);
    assert!(
        output.status.success(),
        "kubectl {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn kubectl_output(info: &ClusterInfo, args: &[&str]) -> std::process::Output {
    Command::new(info.bin.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", &info.kubeconfig)
        .output()
        .expect("kubectl runs")
}

/// A client for the test cluster (one per test: clients belong to the test's runtime).
pub async fn client() -> Client {
    damocles_operator::install_crypto_provider();
    let info = cluster();
    let kubeconfig = Kubeconfig::read_from(&info.kubeconfig).expect("kubeconfig reads");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig is valid");
    Client::try_from(config).expect("client builds")
}

/// A namespace for one test, deleted (without waiting) when dropped.
pub struct TestNamespace {
    pub name: String,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = kubectl_output(
            cluster(),
            &["delete", "namespace", &self.name, "--wait=false"],
        );
    }
}

/// A unique, DNS-safe name for this test run.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id() % 100_000,
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

pub async fn namespace(client: &Client, prefix: &str) -> TestNamespace {
    let name = unique(prefix);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let object: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .expect("namespace created");
    // Pods need the default ServiceAccount, which the controller-manager creates shortly after.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), &name);
    wait_for(
        "the default ServiceAccount",
        Duration::from_secs(30),
        || async { accounts.get_opt("default").await.ok().flatten().map(|_| ()) },
    )
    .await;
    TestNamespace { name }
}

/// Polls `check` every 200 ms until it returns Some, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A `damocles-operator dev-node` process; stopped (SIGTERM, nodes removed) when dropped.
pub struct DevNode {
    child: Child,
    pub root: PathBuf,
}

impl DevNode {
    pub async fn start(client: &Client, nodes: &[String]) -> DevNode {
        let root = std::env::temp_dir().join(unique("damocles-dev-node"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_damocles-operator"));
        command
            .arg("dev-node")
            .arg("--root")
            .arg(&root)
            .arg("--remove-nodes-on-exit");
        for node in nodes {
            command.arg("--node").arg(node);
        }
        let child = command
            .env("KUBECONFIG", &cluster().kubeconfig)
            .spawn()
            .expect("dev-node starts");
        let api: Api<Node> = Api::all(client.clone());
        for spec in nodes {
            let name = spec.split(',').next().unwrap().to_string();
            wait_for(
                &format!("node {name} Ready"),
                Duration::from_secs(30),
                || async {
                    let node = api.get_opt(&name).await.ok().flatten()?;
                    let ready = node
                        .status?
                        .conditions?
                        .into_iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True");
                    ready.then_some(())
                },
            )
            .await;
        }
        DevNode { child, root }
    }
}

impl Drop for DevNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.root.join("dev-node.log")).unwrap_or_default();
            eprintln!("--- dev-node log ({}) ---\n{log}", self.root.display());
        }
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_dir_all(&self.root);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
