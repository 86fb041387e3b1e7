//! The operator end to end: the real control plane (scripts/test-cluster), a dev node running step
//! pods as damocles-step processes, the dev manager verifying proofs with filecoin-proofs, and
//! `damocles-operator run` in between. 2KiB sectors with TEST parameters.
#![cfg(feature = "proofs")]

#[path = "../support/mod.rs"]
mod support;

mod chaos;
mod crash;
mod failures;
mod manager;
mod placement;
mod pool;
mod replicas;
mod restart;
mod resume;
mod seal;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use damocles_operator::api::{Phase, SealingTask, State};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use support::calls::TypedCalls;
use support::farm::{Operator, Scene};
use support::{unique, wait_for};

/// Deletes a pod and waits until it is gone.
async fn delete_pod_and_wait(pods: &Api<Pod>, name: &str) {
    pods.delete(name, &Default::default()).await.unwrap();
    wait_for("the pod deleted", Duration::from_secs(60), || async {
        pods.get_opt(name).await.ok()?.is_none().then_some(())
    })
    .await;
}

/// Deletes a task and waits until its finalizer has let it go: at once, whatever its state (a
/// sealer past its PreCommit is annotated to abort rather than finish first).
async fn delete_and_wait(api: &Api<SealingTask>, name: &str) {
    allow_abort_on_delete(api, name).await;
    api.delete(name, &Default::default()).await.unwrap();
    wait_gone(api, name).await;
}

/// Annotates a task so its deletion aborts its sector even past the PreCommit.
async fn allow_abort_on_delete(api: &Api<SealingTask>, name: &str) {
    let annotate = serde_json::json!({"metadata": {"annotations": {
        damocles_operator::task::ABORT_ON_DELETE: "true",
    }}});
    api.patch(
        name,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&annotate),
    )
    .await
    .unwrap();
}

async fn wait_gone(api: &Api<SealingTask>, name: &str) {
    wait_for(
        &format!("task {name} gone"),
        Duration::from_secs(60),
        || async { api.get_opt(name).await.ok()?.is_none().then_some(()) },
    )
    .await;
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

/// A condition's status and reason, if the task has it.
fn condition(
    status: &damocles_operator::api::SealingTaskStatus,
    type_: &str,
) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// An operator's /metrics text (`address` as in `Operator::metrics`); none if unreachable.
async fn metrics_text(address: &str) -> Option<String> {
    reqwest::get(format!("http://{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The sum of a metric's samples on an operator's /metrics (all label sets); none if unreachable.
async fn metric(operator: &Operator, name: &str) -> Option<f64> {
    let text = metrics_text(&operator.metrics).await?;
    Some(
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
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

    /// The names of the pods seen so far, in the order they appeared.
    fn names(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        let mut names: Vec<String> = Vec::new();
        for (name, ..) in seen.iter() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
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

/// Waits until the operator has cleared spec.resumeState (applied or refused) and returns the task.
async fn resume_cleared(api: &Api<SealingTask>, name: &str) -> SealingTask {
    wait_for(
        &format!("task {name}'s resumeState cleared"),
        Duration::from_secs(30),
        || async {
            let task = api.get(name).await.ok()?;
            task.spec.resume_state.is_none().then_some(task)
        },
    )
    .await
}
