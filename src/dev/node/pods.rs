//! The pod watch: which pods of this node to start, stop or fail, and their status reports to the
//! API server (Running, finished, lost, image pull failed, deletion completed).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::watcher;
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{DevNode, now};

impl DevNode {
    pub(super) async fn watch_pods(self) -> anyhow::Result<()> {
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
        let node_pulls_fail = self
            .config
            .nodes
            .iter()
            .any(|n| n.name == node_name && n.image_pulls_fail);
        let missing = containers(&pod).iter().any(|c| {
            c.image
                .as_ref()
                .is_some_and(|image| self.config.missing_images.contains(image))
        });
        if node_pulls_fail || missing {
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

    pub(super) async fn finish_deletion(&self, pod: &Pod) {
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

    /// A node made with `pull=fail`, or an image named by `--missing-image`: the pod stays
    /// Pending, its containers waiting in ErrImagePull and then (kubelet backs off its retries)
    /// ImagePullBackOff, as kubelet reports an image it cannot pull.
    async fn fail_image_pull(&self, pod: &Pod, node_name: &str) {
        let reported: Vec<String> = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .iter()
            .flat_map(|statuses| statuses.iter())
            .filter_map(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
            .collect();
        let reason = match reported.first().map(String::as_str) {
            None => "ErrImagePull",
            Some("ErrImagePull") => "ImagePullBackOff",
            Some(_) => return,
        };
        let statuses: Vec<_> = containers(pod)
            .iter()
            .map(|c| {
                let image = c.image.as_deref().unwrap_or_default();
                let message = if reason == "ErrImagePull" {
                    format!(
                        "dev node {node_name}: failed to pull and unpack image {image:?}: \
                         not found"
                    )
                } else {
                    format!("Back-off pulling image {image:?}")
                };
                container_status(
                    c,
                    json!({"waiting": {"reason": reason, "message": message}}),
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

    pub(super) async fn patch_status(&self, pod: &Pod, patch: serde_json::Value) {
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
}

pub(super) fn containers(pod: &Pod) -> &[Container] {
    pod.spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
}

pub(super) fn container_status(
    container: &Container,
    state: serde_json::Value,
) -> serde_json::Value {
    let image = container.image.clone().unwrap_or_default();
    let running = state.get("running").is_some();
    json!({
        "name": container.name, "image": image, "imageID": format!("dev-node://{image}"),
        "ready": running, "started": running, "restartCount": 0, "state": state,
    })
}

pub(super) fn conditions(ready: &str) -> serde_json::Value {
    let at = now();
    json!([
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": at},
        {"type": "Initialized", "status": "True", "lastTransitionTime": at},
        {"type": "ContainersReady", "status": ready, "lastTransitionTime": at},
        {"type": "Ready", "status": ready, "lastTransitionTime": at},
    ])
}
