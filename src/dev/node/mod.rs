//! `damocles-operator dev-node`: a stand-in for kubelet in tests and the demo. NOT for production.
//!
//! It registers Nodes with the labels and capacity it is given (so the real scheduler places pods
//! by GPU, hugepages and selectors), keeps their Lease fresh, and runs each pod bound to one of them
//! as local processes: the container's command and args, env, working directory; hostPath, emptyDir,
//! configMap, secret and projected volumes as local directories (container paths in args and env are
//! rewritten to them, since a process has no mount namespace); the termination-message file. A pod's
//! service-account token is requested bound to it, as kubelet does, and reaches the process as
//! KUBECONFIG (never the dev node's own credentials). It reports pod
//! phase, container states, exit codes and termination messages as they are, kills the process group
//! on pod deletion after the grace period, and fails pods whose process it lost (a dev-node restart).
//! Images are not pulled or run: the image name is only recorded.

pub mod spec;

mod logs;
mod pods;
mod process;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use spec::NodeSpec;

const FIELD_MANAGER: &str = "damocles-dev-node";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const RENEW_EVERY: Duration = Duration::from_secs(10);

/// What `dev-node` was asked to do.
#[derive(Clone, Debug)]
pub struct DevNodeConfig {
    pub nodes: Vec<NodeSpec>,
    /// Pod directories (volumes, logs, pid files) go here.
    pub root: PathBuf,
    /// Prefix for hostPath volumes; `None` uses the paths as they are.
    pub host_root: Option<PathBuf>,
    /// Delete the Node objects on a clean exit (tests); otherwise they go NotReady, as with kubelet.
    pub remove_nodes_on_exit: bool,
    /// Images no registry has: their pods never start (ErrImagePull, then ImagePullBackOff).
    pub missing_images: Vec<String>,
    /// Benchmarks only: pods succeed at once, step pods with [`crate::dev::instant::result`].
    pub instant_steps: bool,
    /// How long an instant step pod stays Running before it succeeds.
    pub instant_step_duration: std::time::Duration,
}

/// How to stop a running pod: after how long SIGTERM becomes SIGKILL.
type KillSender = oneshot::Sender<Duration>;

#[derive(Clone)]
struct DevNode {
    client: Client,
    /// The API server's address, for the kubeconfig of a pod with a service-account mount.
    api_server: String,
    config: Arc<DevNodeConfig>,
    running: Arc<Mutex<HashMap<String, KillSender>>>,
    /// Every pod uid this process has started. The watch can deliver an older version of a pod
    /// (still Running, or not yet started) after its process has finished; such an event must
    /// neither start the pod again nor count as a process lost by a restart.
    started_here: Arc<Mutex<HashSet<String>>>,
    /// The port of the kubelet log endpoint the Nodes advertise.
    log_port: u16,
}

/// Runs until `shutdown` resolves: registers the nodes, keeps their leases, runs their pods.
pub async fn run(
    kube_config: kube::Config,
    config: DevNodeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.root).with_context(|| {
        format!(
            "cannot create the dev-node directory {}",
            config.root.display()
        )
    })?;
    let api_server = kube_config.cluster_url.to_string();
    let client = Client::try_from(kube_config).context("cannot connect to the cluster")?;
    let mut node = DevNode {
        client,
        api_server,
        config: Arc::new(config),
        running: Arc::default(),
        started_here: Arc::default(),
        log_port: 0,
    };
    node.log_port = logs::serve(node.clone()).await?;
    for spec in &node.config.nodes {
        node.register(spec).await?;
        info!(node = %spec.name, labels = ?spec.labels, capacity = ?spec.capacity, "registered node");
    }
    let leases = tokio::spawn(node.clone().renew_leases());
    let pods = node.clone().watch_pods();
    tokio::select! {
        result = pods => result?,
        () = shutdown => info!("shutting down: stopping pods"),
    }
    leases.abort();
    node.stop_all().await;
    if node.config.remove_nodes_on_exit {
        let nodes: Api<Node> = Api::all(node.client.clone());
        for spec in &node.config.nodes {
            if let Err(err) = nodes.delete(&spec.name, &DeleteParams::default()).await {
                warn!(node = %spec.name, "cannot remove node: {err}");
            }
        }
    }
    Ok(())
}

fn now() -> Time {
    Time(Timestamp::now())
}
impl DevNode {
    pub(super) fn owns(&self, node_name: &str) -> bool {
        self.config.nodes.iter().any(|n| n.name == node_name)
    }

    async fn register(&self, spec: &NodeSpec) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut labels: BTreeMap<String, String> = [
            ("kubernetes.io/hostname", spec.name.as_str()),
            ("kubernetes.io/os", "linux"),
            ("kubernetes.io/arch", std::env::consts::ARCH),
            ("damocles.io/dev-node", "true"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        labels.extend(spec.labels.clone());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let object = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": { "name": spec.name, "labels": labels },
        });
        nodes
            .patch(&spec.name, &params, &Patch::Apply(object))
            .await
            .with_context(|| format!("cannot register node {}", spec.name))?;
        let heartbeat = now();
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": heartbeat, "lastTransitionTime": heartbeat})
        };
        let status = json!({
            "apiVersion": "v1", "kind": "Node",
            "status": {
                "capacity": spec.capacity,
                "allocatable": spec.capacity,
                "conditions": [
                    condition("Ready", "True", "KubeletReady", "damocles dev-node is running pods as local processes"),
                    condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "dev node"),
                    condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "dev node"),
                    condition("PIDPressure", "False", "KubeletHasSufficientPID", "dev node"),
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": spec.name},
                ],
                // Where the API server reads pod logs (`kubectl logs`, pods/log).
                "daemonEndpoints": {"kubeletEndpoint": {"Port": self.log_port}},
                "nodeInfo": {
                    "machineID": spec.name, "systemUUID": spec.name, "bootID": spec.name,
                    "kernelVersion": "", "osImage": "damocles dev-node (not a kubelet)",
                    "containerRuntimeVersion": "damocles-dev-node://processes",
                    "kubeletVersion": concat!("v0.0.0-damocles-dev-node-", env!("CARGO_PKG_VERSION")),
                    "kubeProxyVersion": "", "operatingSystem": "linux", "architecture": std::env::consts::ARCH,
                },
            },
        });
        nodes
            .patch_status(&spec.name, &params, &Patch::Apply(status))
            .await
            .with_context(|| format!("cannot report the status of node {}", spec.name))?;
        self.renew_lease(spec).await
    }

    async fn renew_lease(&self, spec: &NodeSpec) -> anyhow::Result<()> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let uid = nodes.get(&spec.name).await?.uid().unwrap_or_default();
        let lease = json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {
                "name": spec.name,
                // As kubelet does: the lease goes away with its node.
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": spec.name, "uid": uid}],
            },
            "spec": {
                "holderIdentity": spec.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        leases
            .patch(
                &spec.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(lease),
            )
            .await
            .with_context(|| format!("cannot renew the lease of node {}", spec.name))?;
        Ok(())
    }

    async fn renew_leases(self) {
        let mut tick = tokio::time::interval(RENEW_EVERY);
        loop {
            tick.tick().await;
            for spec in &self.config.nodes {
                if let Err(err) = self.renew_lease(spec).await {
                    warn!(node = %spec.name, "{err:#}");
                }
            }
        }
    }
}
