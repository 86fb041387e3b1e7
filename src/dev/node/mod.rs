//! `damocles-operator dev-node`: a stand-in for kubelet in tests and the demo. NOT for production.
//!
//! It registers Nodes with the labels and capacity it is given (so the real scheduler places pods
//! by GPU, hugepages and selectors), keeps their Lease fresh, and runs each pod bound to one of them
//! as local processes: the container's command and args, env, working directory; hostPath, emptyDir,
//! configMap and secret volumes as local directories (container paths in args and env are rewritten
//! to them, since a process has no mount namespace); the termination-message file. It reports pod
//! phase, container states, exit codes and termination messages as they are, kills the process group
//! on pod deletion after the grace period, and fails pods whose process it lost (a dev-node restart).
//! Images are not pulled or run: the image name is only recorded.

pub mod spec;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

pub use spec::NodeSpec;
use spec::{PathMap, exit_code, host_path};

const FIELD_MANAGER: &str = "damocles-dev-node";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;
const RENEW_EVERY: Duration = Duration::from_secs(10);
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

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
}

/// How to stop a running pod: after how long SIGTERM becomes SIGKILL.
type KillSender = oneshot::Sender<Duration>;

#[derive(Clone)]
struct DevNode {
    client: Client,
    config: Arc<DevNodeConfig>,
    running: Arc<Mutex<HashMap<String, KillSender>>>,
    /// Every pod uid this process has started. The watch can deliver an older version of a pod
    /// (still Running, or not yet started) after its process has finished; such an event must
    /// neither start the pod again nor count as a process lost by a restart.
    started_here: Arc<Mutex<HashSet<String>>>,
}

/// Runs until `shutdown` resolves: registers the nodes, keeps their leases, runs their pods.
pub async fn run(
    client: Client,
    config: DevNodeConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.root).with_context(|| {
        format!(
            "cannot create the dev-node directory {}",
            config.root.display()
        )
    })?;
    let node = DevNode {
        client,
        config: Arc::new(config),
        running: Arc::default(),
        started_here: Arc::default(),
    };
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
    fn owns(&self, node_name: &str) -> bool {
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

    async fn watch_pods(self) -> anyhow::Result<()> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let mut events = watcher(pods, watcher::Config::default()).boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                    self.on_pod(pod).await
                }
                Ok(watcher::Event::Delete(pod)) => {
                    // Gone from the API (force-deleted): nothing to report to, just stop it.
                    let uid = pod.uid().unwrap_or_default();
                    self.kill(&uid, Duration::ZERO);
                    self.started_here
                        .lock()
                        .expect("started pods lock")
                        .remove(&uid);
                }
                Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
                Err(err) => warn!("pod watch: {err}"),
            }
        }
        Ok(())
    }

    fn kill(&self, uid: &str, grace: Duration) -> bool {
        let sender = self.running.lock().expect("running pods lock").remove(uid);
        match sender {
            Some(sender) => {
                let _ = sender.send(grace);
                true
            }
            None => false,
        }
    }

    async fn on_pod(&self, pod: Pod) {
        let Some(node_name) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else {
            return;
        };
        if !self.owns(&node_name) {
            return;
        }
        let uid = pod.uid().unwrap_or_default();
        let is_running = self
            .running
            .lock()
            .expect("running pods lock")
            .contains_key(&uid);
        if pod.metadata.deletion_timestamp.is_some() {
            let grace = Duration::from_secs(
                pod.metadata
                    .deletion_grace_period_seconds
                    .unwrap_or(30)
                    .max(0) as u64,
            );
            if !is_running {
                // Nothing runs (finished, never started): let the deletion complete, as kubelet does.
                self.finish_deletion(&pod).await;
            } else {
                info!(pod = %pod.name_any(), namespace = ?pod.namespace(), ?grace, "pod deleted: stopping its processes");
                self.kill(&uid, grace);
            }
            return;
        }
        if is_running
            || self
                .started_here
                .lock()
                .expect("started pods lock")
                .contains(&uid)
        {
            return;
        }
        if self
            .config
            .nodes
            .iter()
            .any(|n| n.name == node_name && n.image_pulls_fail)
        {
            self.fail_image_pull(&pod, &node_name).await;
            return;
        }
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            return;
        }
        let started_before = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|statuses| !statuses.is_empty());
        if started_before {
            // We ran it, then lost track of it (this dev node restarted): the process is gone or orphaned.
            self.fail_lost(&pod).await;
            return;
        }
        let (sender, receiver) = oneshot::channel();
        self.started_here
            .lock()
            .expect("started pods lock")
            .insert(uid.clone());
        self.running
            .lock()
            .expect("running pods lock")
            .insert(uid, sender);
        let node = self.clone();
        tokio::spawn(async move { node.run_pod(pod, node_name, receiver).await });
    }

    async fn finish_deletion(&self, pod: &Pod) {
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: pod.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match pods.delete(&pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
            Err(err) => warn!(pod = %pod.name_any(), "cannot complete the deletion: {err}"),
        }
    }

    fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.config
            .root
            .join("pods")
            .join(pod.uid().unwrap_or_default())
    }

    async fn fail_lost(&self, pod: &Pod) {
        let dir = self.pod_dir(pod);
        // Kill what may still run from before the restart, so no two copies of a step ever run.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            {
                if let Some(pid) = std::fs::read_to_string(entry.path())
                    .ok()
                    .and_then(|t| t.trim().parse::<i32>().ok())
                {
                    // SAFETY: plain syscall on a process group we created.
                    unsafe { libc::killpg(pid, libc::SIGKILL) };
                }
            }
        }
        warn!(pod = %pod.name_any(), "lost track of this pod's process (dev node restarted): marking it Failed");
        let statuses: Vec<_> = containers(pod)
            .iter()
            .map(|c| container_status(c, json!({"terminated": {
                "exitCode": 137, "reason": "ProcessLost",
                "message": "the dev node restarted while this container ran", "finishedAt": now()}})))
            .collect();
        self.patch_status(
            pod,
            json!({"status": {
                "phase": "Failed", "reason": "ProcessLost",
                "message": "the dev node lost this pod's processes (restart)",
                "containerStatuses": statuses,
            }}),
        )
        .await;
    }

    /// A node made with `pull=fail`: the pod stays Pending, its containers waiting in
    /// ErrImagePull, as kubelet reports an image it cannot pull.
    async fn fail_image_pull(&self, pod: &Pod, node_name: &str) {
        let reported = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|statuses| !statuses.is_empty());
        if reported {
            return;
        }
        let statuses: Vec<_> = containers(pod)
            .iter()
            .map(|c| {
                let message = format!(
                    "dev node {node_name} (pull=fail): cannot pull image {:?}",
                    c.image.as_deref().unwrap_or_default()
                );
                container_status(
                    c,
                    json!({"waiting": {"reason": "ErrImagePull", "message": message}}),
                )
            })
            .collect();
        info!(pod = %pod.name_any(), node = node_name, "image pulls fail on this node: the pod stays Pending");
        self.patch_status(
            pod,
            json!({"status": {"phase": "Pending", "containerStatuses": statuses}}),
        )
        .await;
    }

    async fn patch_status(&self, pod: &Pod, patch: serde_json::Value) {
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        if let Err(err) = pods
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
        {
            warn!(pod = %pod.name_any(), "cannot update pod status: {err}");
        }
    }

    async fn run_pod(self, pod: Pod, node_name: String, kill: oneshot::Receiver<Duration>) {
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let outcome = self.run_pod_inner(&pod, &node_name, kill).await;
        self.running.lock().expect("running pods lock").remove(&uid);
        if let Err(err) = outcome {
            warn!(pod = %name, "cannot run pod: {err:#}");
            let statuses: Vec<_> = containers(&pod)
                .iter()
                .map(|c| container_status(c, json!({"waiting": {"reason": "CreateContainerError", "message": format!("{err:#}")}})))
                .collect();
            self.patch_status(&pod, json!({"status": {
                "phase": "Failed", "reason": "CreateContainerError", "message": format!("{err:#}"),
                "containerStatuses": statuses,
            }}))
            .await;
        }
        // A pod deleted while it ran is removed once its processes are gone.
        let pods: Api<Pod> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        if let Ok(current) = pods.get(&name).await
            && current.uid() == pod.uid()
            && current.metadata.deletion_timestamp.is_some()
        {
            self.finish_deletion(&current).await;
        }
    }

    async fn run_pod_inner(
        &self,
        pod: &Pod,
        node_name: &str,
        mut kill: oneshot::Receiver<Duration>,
    ) -> anyhow::Result<()> {
        let name = pod.name_any();
        let namespace = pod.namespace().unwrap_or_default();
        let dir = self.pod_dir(pod);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let volumes = self.prepare_volumes(pod, &dir).await?;
        let mut children = vec![];
        let mut metas = vec![];
        let started = now();
        for container in containers(pod) {
            let (child, message_file, log) = self
                .start_container(pod, container, node_name, &dir, &volumes)
                .await?;
            info!(pod = %name, %namespace, container = %container.name, image = ?container.image, node = node_name,
                  pid = child.id(), "started container as a local process");
            children.push(child);
            metas.push((container.clone(), message_file, log));
        }
        let running: Vec<_> = metas
            .iter()
            .map(|(c, ..)| container_status(c, json!({"running": {"startedAt": started}})))
            .collect();
        self.patch_status(pod, json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "hostIPs": [{"ip": "127.0.0.1"}], "startTime": started,
            "conditions": conditions("True"),
            "containerStatuses": running,
        }}))
        .await;

        let pgids: Vec<i32> = children
            .iter()
            .filter_map(|child| child.id().map(|p| p as i32))
            .collect();
        let waits = futures::future::join_all(children.iter_mut().map(|child| child.wait()));
        tokio::pin!(waits);
        let mut killed = false;
        let results = tokio::select! {
            results = &mut waits => results,
            grace = &mut kill => {
                killed = true;
                let grace = grace.unwrap_or(Duration::ZERO);
                signal_groups(&pgids, libc::SIGTERM);
                match tokio::time::timeout(grace, &mut waits).await {
                    Ok(results) => results,
                    Err(_) => {
                        signal_groups(&pgids, libc::SIGKILL);
                        waits.await
                    }
                }
            }
        };
        // Whatever a container started in its group goes with it.
        signal_groups(&pgids, libc::SIGKILL);

        let finished = now();
        let mut all_ok = true;
        let mut statuses = vec![];
        for ((container, message_file, log), result) in metas.iter().zip(results) {
            let code = match result {
                Ok(status) => exit_code(status),
                Err(err) => {
                    warn!(pod = %name, container = %container.name, "cannot wait for the process: {err}");
                    128 + libc::SIGKILL
                }
            };
            all_ok &= code == 0;
            let message = termination_message(container, message_file, log, code);
            let reason = if code == 0 { "Completed" } else { "Error" };
            info!(pod = %name, container = %container.name, exit_code = code, killed, "container finished");
            statuses.push(container_status(
                container,
                json!({"terminated": {
                    "exitCode": code, "reason": reason, "message": message,
                    "startedAt": started, "finishedAt": finished,
                }}),
            ));
        }
        let phase = if all_ok && !killed {
            "Succeeded"
        } else {
            "Failed"
        };
        self.patch_status(
            pod,
            json!({"status": {
                "phase": phase, "conditions": conditions("False"), "containerStatuses": statuses,
            }}),
        )
        .await;
        Ok(())
    }

    async fn prepare_volumes(
        &self,
        pod: &Pod,
        dir: &Path,
    ) -> anyhow::Result<HashMap<String, PathBuf>> {
        let namespace = pod.namespace().unwrap_or_default();
        let mut volumes = HashMap::new();
        for volume in pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default()
        {
            let local = if let Some(host) = &volume.host_path {
                host_path(self.config.host_root.as_deref(), &host.path)
            } else {
                dir.join("volumes").join(&volume.name)
            };
            let files: Vec<(String, Vec<u8>)> = if let Some(source) = &volume.config_map {
                let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
                let map = maps.get(&source.name).await.with_context(|| {
                    format!("configMap {} for volume {}", source.name, volume.name)
                })?;
                let mut files: Vec<_> = map
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect();
                files.extend(
                    map.binary_data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0)),
                );
                select_items(files, source.items.as_deref())
            } else if let Some(source) = &volume.secret {
                let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
                let secret_name = source.secret_name.clone().unwrap_or_default();
                let secret = secrets
                    .get(&secret_name)
                    .await
                    .with_context(|| format!("secret {secret_name} for volume {}", volume.name))?;
                let files = secret
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect();
                select_items(files, source.items.as_deref())
            } else {
                if volume.host_path.is_none()
                    && volume.empty_dir.is_none()
                    && volume.projected.is_none()
                {
                    warn!(pod = %pod.name_any(), volume = %volume.name, "unsupported volume type: an empty directory stands in");
                }
                vec![]
            };
            std::fs::create_dir_all(&local).with_context(|| {
                format!(
                    "cannot create volume {} at {}",
                    volume.name,
                    local.display()
                )
            })?;
            for (path, bytes) in files {
                let file = local.join(path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(&file, bytes)
                    .with_context(|| format!("cannot write {}", file.display()))?;
            }
            volumes.insert(volume.name.clone(), local);
        }
        Ok(volumes)
    }

    async fn start_container(
        &self,
        pod: &Pod,
        container: &Container,
        node_name: &str,
        dir: &Path,
        volumes: &HashMap<String, PathBuf>,
    ) -> anyhow::Result<(tokio::process::Child, PathBuf, PathBuf)> {
        let mut paths = PathMap::default();
        for mount in container.volume_mounts.as_deref().unwrap_or_default() {
            let local = volumes.get(&mount.name).with_context(|| {
                format!(
                    "container {} mounts unknown volume {}",
                    container.name, mount.name
                )
            })?;
            let local = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => local.join(sub),
                None => local.clone(),
            };
            paths.insert(&mount.mount_path, local);
        }
        let message_file = dir.join(format!("{}.termination-log", container.name));
        std::fs::write(&message_file, b"")?;
        let message_path = container
            .termination_message_path
            .as_deref()
            .unwrap_or("/dev/termination-log");
        paths.insert(message_path, message_file.clone());

        let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
        argv.extend(container.args.clone().unwrap_or_default());
        if container.command.as_ref().is_none_or(|c| c.is_empty()) {
            anyhow::bail!(
                "container {} has no command: the dev node runs commands, not images ({})",
                container.name,
                container.image.as_deref().unwrap_or("no image")
            );
        }
        let argv: Vec<String> = argv.iter().map(|a| paths.rewrite(a)).collect();
        let mut command = tokio::process::Command::new(&argv[0]);
        command.args(&argv[1..]);
        for env in container.env.as_deref().unwrap_or_default() {
            let value = match (&env.value, &env.value_from) {
                (Some(value), _) => paths.rewrite(value),
                (None, Some(source)) => self.env_from_source(pod, node_name, source).await?,
                (None, None) => String::new(),
            };
            command.env(&env.name, value);
        }
        let workdir = match container.working_dir.as_deref() {
            Some(path) => paths.local(path).unwrap_or_else(|| PathBuf::from(path)),
            None => dir.to_path_buf(),
        };
        let log = dir.join(format!("{}.log", container.name));
        let out = std::fs::File::create(&log)?;
        command
            .current_dir(&workdir)
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            // Its own process group, so deletion stops everything it started.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {:?} for container {} (working dir {})",
                argv[0],
                container.name,
                workdir.display()
            )
        })?;
        if let Some(pid) = child.id() {
            std::fs::write(dir.join(format!("{}.pid", container.name)), pid.to_string())?;
        }
        Ok((child, message_file, log))
    }

    async fn env_from_source(
        &self,
        pod: &Pod,
        node_name: &str,
        source: &k8s_openapi::api::core::v1::EnvVarSource,
    ) -> anyhow::Result<String> {
        let namespace = pod.namespace().unwrap_or_default();
        if let Some(field) = &source.field_ref {
            return Ok(match field.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => namespace,
                "metadata.uid" => pod.uid().unwrap_or_default(),
                "spec.nodeName" => node_name.to_string(),
                "spec.serviceAccountName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
                other => anyhow::bail!("the dev node does not support fieldRef {other}"),
            });
        }
        if let Some(key) = &source.config_map_key_ref {
            let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &namespace);
            let map = maps.get(&key.name).await?;
            return map
                .data
                .and_then(|d| d.get(&key.key).cloned())
                .with_context(|| format!("configMap {} has no key {}", key.name, key.key));
        }
        if let Some(key) = &source.secret_key_ref {
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &namespace);
            let secret = secrets.get(&key.name).await?;
            let bytes = secret
                .data
                .and_then(|d| d.get(&key.key).cloned())
                .with_context(|| format!("secret {} has no key {}", key.name, key.key))?;
            return Ok(String::from_utf8_lossy(&bytes.0).into_owned());
        }
        anyhow::bail!(
            "the dev node supports env from fieldRef, configMapKeyRef and secretKeyRef only"
        )
    }

    async fn stop_all(&self) {
        let senders: Vec<_> = self
            .running
            .lock()
            .expect("running pods lock")
            .drain()
            .collect();
        let count = senders.len();
        for (_, sender) in senders {
            let _ = sender.send(Duration::from_secs(5));
        }
        if count > 0 {
            // Give the pod tasks time to signal, reap and report.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
    }
}

fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

fn container_status(container: &Container, state: serde_json::Value) -> serde_json::Value {
    let image = container.image.clone().unwrap_or_default();
    let running = state.get("running").is_some();
    json!({
        "name": container.name, "image": image, "imageID": format!("dev-node://{image}"),
        "ready": running, "started": running, "restartCount": 0, "state": state,
    })
}

fn conditions(ready: &str) -> serde_json::Value {
    let at = now();
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
        {"type": "Ready", "status": ready, "lastTransitionTime": at},
    ])
}

/// A configMap or secret volume's files: every key, or only the listed keys under their paths.
fn select_items(
    files: Vec<(String, Vec<u8>)>,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Vec<(String, Vec<u8>)> {
    match items {
        None => files,
        Some(items) => items
            .iter()
            .filter_map(|item| {
                files
                    .iter()
                    .find(|(key, _)| *key == item.key)
                    .map(|(_, bytes)| (item.path.clone(), bytes.clone()))
            })
            .collect(),
    }
}

fn signal_groups(pgids: &[i32], signal: i32) {
    for pgid in pgids {
        // SAFETY: plain syscall on process groups this dev node created.
        unsafe { libc::killpg(*pgid, signal) };
    }
}

/// What Kubernetes would report: the message file (at most 4096 bytes), or with
/// `FallbackToLogsOnError` the log tail of a failed container.
fn termination_message(
    container: &Container,
    message_file: &Path,
    log: &Path,
    code: i32,
) -> String {
    let mut message = std::fs::read(message_file).unwrap_or_default();
    let fallback = container.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if message.is_empty() && fallback && code != 0 {
        let logs = std::fs::read(log).unwrap_or_default();
        message = logs[logs.len().saturating_sub(2048)..].to_vec();
    }
    message.truncate(TERMINATION_MESSAGE_LIMIT);
    String::from_utf8_lossy(&message).into_owned()
}
