//! The control plane for this test binary.
//! The first test of a binary that asks for the cluster starts one (built from Go modules, cached in
//! ~/.cache/damocles-operator/cluster) with its own state directory, installs the CRD, and leaves a
//! watchdog that tears it down when the test binary exits, however it exits. Set
//! `DAMOCLES_TEST_KUBECONFIG` to a running cluster's kubeconfig to reuse it instead (e.g. after
//! `eval "$(scripts/test-cluster up)"`: `DAMOCLES_TEST_KUBECONFIG=$KUBECONFIG`).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{unique, wait_for};

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
        let crds = repo().join("crds");
        kubectl(
            &info,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                crds.to_str().unwrap(),
            ],
        );
        for crd in ["sealingtasks.damocles.io", "sealingpools.damocles.io"] {
            wait_for_condition(&info, &format!("crd/{crd}"), "Established");
        }
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
/// Waits (a minute at most) until `object`'s condition `type_` is True. Not `kubectl wait
/// --for=condition=...`: that fails at once while the object has no .status.conditions yet, as a
/// CRD just applied has not for a moment, or does not exist yet.
pub fn wait_for_condition(info: &ClusterInfo, object: &str, type_: &str) {
    let template = format!("jsonpath={{.status.conditions[?(@.type==\"{type_}\")].status}}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let output = kubectl_output(info, &["get", object, "-o", &template]);
        if output.status.success() && output.stdout == b"True" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{object} is not {type_} after a minute: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

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

/// Runs kubectl against the test cluster with `input` on its standard input.
pub fn kubectl_stdin(info: &ClusterInfo, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(info.bin.join("kubectl"))
        .args(args)
        .env("KUBECONFIG", &info.kubeconfig)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().expect("kubectl runs")
}

/// Runs helm against the test cluster, with its caches out of the user's home.
pub fn helm(info: &ClusterInfo, args: &[&str]) -> std::process::Output {
    Command::new(info.bin.join("helm"))
        .args(args)
        .env("KUBECONFIG", &info.kubeconfig)
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("damocles-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("damocles-helm-config"),
        )
        .output()
        .expect("helm runs")
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
