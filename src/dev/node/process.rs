//! Running a pod as local processes: its volumes as directories, its containers' environment,
//! spawning each container's command in its own process group, and killing those groups.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Pod, ProjectedVolumeSource, Secret, ServiceAccount,
    ServiceAccountTokenProjection,
};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::pods::{conditions, container_status, containers};
use super::spec::{PathMap, exit_code, host_path};
use super::{DevNode, now};

const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// Where the ServiceAccount admission plugin mounts a pod's API credentials.
const SERVICE_ACCOUNT_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl DevNode {
    pub(super) fn kill(&self, uid: &str, grace: Duration) -> bool {
        let sender = self.running.lock().expect("running pods lock").remove(uid);
        match sender {
            Some(sender) => {
                let _ = sender.send(grace);
                true
            }
            None => false,
        }
    }

    pub(super) fn pod_dir(&self, pod: &Pod) -> PathBuf {
        self.config
            .root
            .join("pods")
            .join(pod.uid().unwrap_or_default())
    }

    pub(super) async fn run_pod_inner(
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
        if self.config.instant_steps {
            self.succeed_at_once(pod).await;
            return Ok(());
        }
        let volumes = self.prepare_volumes(pod, node_name, &dir).await?;
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
        self.report_running(pod, &started).await;

        let pgids: Vec<i32> = children
            .iter()
            .filter_map(|child| child.id().map(|p| p as i32))
            .collect();
        let waits = futures::future::join_all(children.iter_mut().map(|child| child.wait()));
        tokio::pin!(waits);
        // kubelet's activeDeadlineSeconds, counted from the pod's start: past it the containers
        // are stopped with the pod's grace period and the pod fails as DeadlineExceeded.
        let spec = pod.spec.as_ref();
        let deadline = spec
            .and_then(|s| s.active_deadline_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
        let grace_period = Duration::from_secs(
            spec.and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(30)
                .max(0) as u64,
        );
        let past_deadline = async {
            match deadline {
                Some(deadline) => tokio::time::sleep(deadline).await,
                None => std::future::pending().await,
            }
        };
        let stopped = tokio::select! {
            results = &mut waits => Ok(results),
            grace = &mut kill => Err((grace.unwrap_or(Duration::ZERO), false)),
            () = past_deadline => Err((grace_period, true)),
        };
        let (results, killed, deadline_exceeded) = match stopped {
            Ok(results) => (results, false, false),
            Err((grace, by_deadline)) => {
                if by_deadline {
                    info!(pod = %name, %namespace, ?deadline, "pod past its activeDeadlineSeconds: stopping it");
                }
                signal_groups(&pgids, libc::SIGTERM);
                let results = match tokio::time::timeout(grace, &mut waits).await {
                    Ok(results) => results,
                    Err(_) => {
                        signal_groups(&pgids, libc::SIGKILL);
                        waits.await
                    }
                };
                (results, true, by_deadline)
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
        let mut status = json!({
            "phase": phase, "conditions": conditions("False"), "containerStatuses": statuses,
        });
        if deadline_exceeded {
            status["reason"] = json!("DeadlineExceeded");
            status["message"] =
                json!("Pod was active on the node longer than the specified deadline");
        }
        self.patch_status(pod, json!({ "status": status })).await;
        Ok(())
    }

    /// The status kubelet writes once every container of `pod` has started at `started`.
    async fn report_running(
        &self,
        pod: &Pod,
        started: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    ) {
        let running: Vec<_> = containers(pod)
            .iter()
            .map(|c| container_status(c, json!({"running": {"startedAt": started}})))
            .collect();
        self.patch_status(pod, json!({"status": {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}], "hostIPs": [{"ip": "127.0.0.1"}], "startTime": started,
            "conditions": conditions("True"),
            "containerStatuses": running,
        }}))
        .await;
    }

    /// `--instant-steps`: the status writes kubelet makes for a pod that runs and exits 0 (Running,
    /// then Succeeded), the step's result in the termination message, and nothing run.
    async fn succeed_at_once(&self, pod: &Pod) {
        let started = now();
        self.report_running(pod, &started).await;
        tokio::time::sleep(self.config.instant_step_duration).await;
        let statuses: Vec<_> = containers(pod)
            .iter()
            .map(|container| {
                let request = container
                    .env
                    .iter()
                    .flatten()
                    .find(|e| e.name == crate::step::REQUEST_ENV)
                    .and_then(|e| e.value.as_deref())
                    .and_then(|text| crate::step::parse_request(text).ok());
                let message = request
                    .map(|r| crate::dev::instant::result(&r).termination_message())
                    .unwrap_or_default();
                container_status(
                    container,
                    json!({"terminated": {
                        "exitCode": 0, "reason": "Completed", "message": message,
                        "startedAt": started, "finishedAt": now(),
                    }}),
                )
            })
            .collect();
        self.patch_status(
            pod,
            json!({"status": {
                "phase": "Succeeded", "conditions": conditions("False"), "containerStatuses": statuses,
            }}),
        )
        .await;
    }

    async fn prepare_volumes(
        &self,
        pod: &Pod,
        node_name: &str,
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
                let files = self
                    .config_map_files(&namespace, &source.name)
                    .await
                    .with_context(|| format!("volume {}", volume.name))?;
                select_items(files, source.items.as_deref())
            } else if let Some(source) = &volume.secret {
                let secret_name = source.secret_name.clone().unwrap_or_default();
                let files = self
                    .secret_files(&namespace, &secret_name)
                    .await
                    .with_context(|| format!("volume {}", volume.name))?;
                select_items(files, source.items.as_deref())
            } else if let Some(source) = &volume.projected {
                self.projected_files(pod, node_name, source)
                    .await
                    .with_context(|| format!("projected volume {}", volume.name))?
            } else {
                if volume.host_path.is_none() && volume.empty_dir.is_none() {
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

    async fn config_map_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let map = maps
            .get(name)
            .await
            .with_context(|| format!("configMap {name}"))?;
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
        Ok(files)
    }

    async fn secret_files(
        &self,
        namespace: &str,
        name: &str,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let secret = secrets
            .get(name)
            .await
            .with_context(|| format!("secret {name}"))?;
        Ok(secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }

    /// A projected volume as kubelet fills it. The one the ServiceAccount admission plugin adds
    /// (`kube-api-access-*`) holds a token bound to this pod, `ca.crt` and `namespace`.
    async fn projected_files(
        &self,
        pod: &Pod,
        node_name: &str,
        projected: &ProjectedVolumeSource,
    ) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let namespace = pod.namespace().unwrap_or_default();
        let mut files = vec![];
        for source in projected.sources.as_deref().unwrap_or_default() {
            if let Some(token) = &source.service_account_token {
                let bound = self.service_account_token(pod, token).await?;
                files.push((token.path.clone(), bound.into_bytes()));
            } else if let Some(map) = &source.config_map {
                match self.config_map_files(&namespace, &map.name).await {
                    Ok(found) => files.extend(select_items(found, map.items.as_deref())),
                    Err(_) if map.optional == Some(true) => {}
                    Err(err) => return Err(err),
                }
            } else if let Some(secret) = &source.secret {
                match self.secret_files(&namespace, &secret.name).await {
                    Ok(found) => files.extend(select_items(found, secret.items.as_deref())),
                    Err(_) if secret.optional == Some(true) => {}
                    Err(err) => return Err(err),
                }
            } else if let Some(downward) = &source.downward_api {
                for item in downward.items.as_deref().unwrap_or_default() {
                    let field = item.field_ref.as_ref().with_context(|| {
                        format!(
                            "downwardAPI item {}: the dev node supports fieldRef only",
                            item.path
                        )
                    })?;
                    let value = field_value(pod, node_name, &field.field_path)?;
                    files.push((item.path.clone(), value.into_bytes()));
                }
            } else {
                warn!(pod = %pod.name_any(), "unsupported projection left out of a projected volume");
            }
        }
        Ok(files)
    }

    /// A token for the pod's ServiceAccount bound to the pod (TokenRequest), as kubelet gets one.
    async fn service_account_token(
        &self,
        pod: &Pod,
        projection: &ServiceAccountTokenProjection,
    ) -> anyhow::Result<String> {
        let account = pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let request = json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {
                "audiences": projection.audience.iter().collect::<Vec<_>>(),
                "expirationSeconds": projection.expiration_seconds.unwrap_or(3600),
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                   "name": pod.name_any(), "uid": pod.uid()},
            },
        });
        let accounts: Api<ServiceAccount> =
            Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let issued: TokenRequest = accounts
            .create_subresource("token", &account, &PostParams::default(), &request)
            .await
            .with_context(|| format!("a token for ServiceAccount {account}"))?;
        Ok(issued.status.map(|s| s.token).unwrap_or_default())
    }

    /// A kubeconfig made of a service-account mount's files. Kubernetes clients read those at
    /// /var/run/secrets/kubernetes.io/serviceaccount, a path a process here cannot see (no mount
    /// namespace), so the container gets them through KUBECONFIG, which clients try first.
    fn service_account_kubeconfig(&self, account: &Path, file: &Path) -> anyhow::Result<()> {
        let namespace = std::fs::read_to_string(account.join("namespace")).unwrap_or_default();
        let kubeconfig = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": "in-cluster",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": self.api_server,
                "certificate-authority": account.join("ca.crt"),
            }}],
            "users": [{"name": "service-account", "user": {"tokenFile": account.join("token")}}],
            "contexts": [{"name": "in-cluster", "context": {
                "cluster": "in-cluster", "user": "service-account", "namespace": namespace,
            }}],
        });
        std::fs::write(file, serde_json::to_vec_pretty(&kubeconfig)?)
            .with_context(|| format!("cannot write {}", file.display()))
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
        // Never the dev node's own credentials; a service-account mount's instead (the
        // container's own env below still wins).
        command.env_remove("KUBECONFIG");
        if let Some(account) = paths.local(SERVICE_ACCOUNT_MOUNT) {
            let kubeconfig = dir.join(format!("{}.kubeconfig", container.name));
            self.service_account_kubeconfig(&account, &kubeconfig)?;
            command.env("KUBECONFIG", &kubeconfig);
        }
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
            return field_value(pod, node_name, &field.field_path);
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

    pub(super) async fn stop_all(&self) {
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

/// A downward-API field of the pod, as an env value or a projected file.
fn field_value(pod: &Pod, node_name: &str, field_path: &str) -> anyhow::Result<String> {
    Ok(match field_path {
        "metadata.name" => pod.name_any(),
        "metadata.namespace" => pod.namespace().unwrap_or_default(),
        "metadata.uid" => pod.uid().unwrap_or_default(),
        "spec.nodeName" => node_name.to_string(),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.hostIP" => "127.0.0.1".to_string(),
        other => anyhow::bail!("the dev node does not support fieldRef {other}"),
    })
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
