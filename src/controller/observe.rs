//! Finding out what the task core asked: a step pod, a Node, a concurrency slot, the manager's
//! answer, the cleanup pod; and reporting a task that cannot be read at all.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, ApiResource, DynamicObject, LogParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::ObjectRef;
use tracing::warn;

use super::apply::TaskRun;
use super::{Context, Error, pods, readable};
use crate::api::SealingTaskStatus;
use crate::manager::{Call, Manager};
use crate::step::LoggedResult;
use crate::task::reconcile::Answer;
use crate::task::{CallFailure, CleanupPod, PodReport, Question, SlotsFull, StepPod};

/// How many of a step pod's last log lines are searched for its result line: the step prints it
/// last, after its own log.
const RESULT_LOG_TAIL: i64 = 50;

/// A step pod as the task core reads it. A pod with the step pod's name that another owner made
/// is never adopted: its result is not read, and the task pauses saying whose it is.
pub fn step_pod(pod: &Pod, task_uid: Option<&str>) -> StepPod {
    let report = match pods::foreign_owner(pod, task_uid) {
        Some(message) => PodReport::Failed {
            level: crate::sector::FailureLevel::Permanent,
            message,
            never_ran: false,
        },
        None => pods::report(pod),
    };
    StepPod {
        report,
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        created: pod
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second()),
        deleting: pod.metadata.deletion_timestamp.is_some(),
    }
}

impl TaskRun {
    /// Finds out what `question` asks, for a task whose status is now `status`.
    pub(super) async fn answer(
        &mut self,
        question: Question,
        status: &SealingTaskStatus,
    ) -> Result<Answer, Error> {
        Ok(match question {
            Question::StepPod(name) => {
                // Only a pod the status names can be wrongly taken for lost; one it does not name
                // yet and the cache lacks is created, and if it exists after all, adopted (and
                // read again shortly: it may have finished).
                let named = [&status.step_pod, &status.retiring_pod]
                    .iter()
                    .any(|pod| pod.as_deref() == Some(name.as_str()));
                let pod = self.get_pod(&name, named).await?;
                let uid = self.task_uid();
                let mut found = pod.as_ref().map(|p| step_pod(p, uid.as_deref()));
                if let Some(view) = found.as_mut()
                    && let PodReport::Succeeded(result) = &view.report
                    && let Some(logged) = result.in_log.clone()
                {
                    view.report = self.logged_result(&name, &logged).await;
                }
                Answer::StepPod(name, found)
            }
            Question::NodeExists(node) => {
                let nodes: Api<Node> = Api::all(self.ctx.client.clone());
                let found = nodes
                    .get_opt(&node)
                    .await
                    .map_err(|source| self.observe_error(source))?;
                Answer::NodeExists(node, found.is_some())
            }
            Question::Slot { step, cap } => {
                let cached = self.ctx.cache.state();
                let taken = self
                    .ctx
                    .slots
                    .take(&self.key, step, cap, readable(&cached))
                    .map_err(|full| SlotsFull {
                        holders: full.holders,
                        cap: full.cap,
                    });
                Answer::Slot(step, taken)
            }
            Question::Manager(call) => {
                let reply = self.call_manager(&call).await;
                Answer::Manager(*call, reply)
            }
            Question::SectorState(call) => {
                let reply = self.call_manager(&call).await;
                if let Err(failure) = &reply {
                    warn!("heartbeat: {}", failure.message);
                }
                Answer::SectorState(reply)
            }
            Question::CleanupPod(name) => {
                let pod = self.get_pod(&name, true).await?;
                Answer::CleanupPod(match pod.as_ref() {
                    None => CleanupPod::Absent,
                    Some(pod) => match pods::exit_code(pod) {
                        Some(code) => CleanupPod::Exited(code),
                        None => CleanupPod::Running {
                            created: pod
                                .metadata
                                .creation_timestamp
                                .as_ref()
                                .map(|t| t.0.as_second()),
                        },
                    },
                })
            }
        })
    }

    /// A result too big for the termination message, from the pod's log, checked against the
    /// digest the message carries. Unreadable (a node gone with its logs), the step runs again:
    /// its completion marker makes that quick.
    async fn logged_result(&self, name: &str, logged: &LoggedResult) -> PodReport {
        let params = LogParams {
            container: Some(pods::CONTAINER.into()),
            tail_lines: Some(RESULT_LOG_TAIL),
            ..Default::default()
        };
        let found = match self.pods.logs(name, &params).await {
            Ok(log) => logged.find_in(&log),
            Err(err) => Err(format!("the log of step pod {name} cannot be read: {err}")),
        };
        match found {
            Ok(result) => PodReport::Succeeded(Box::new(result)),
            Err(message) => PodReport::Failed {
                level: crate::sector::FailureLevel::Temporary,
                message: format!(
                    "step pod {name} succeeded with a result too big for its termination \
                     message, and {message}"
                ),
                never_ran: false,
            },
        }
    }

    /// A pod of this task: from the operator's pod cache (unfinished pods), as this operator
    /// created it if the watch has not seen it yet, or as the watch saw it finish in the last
    /// minute. Otherwise, when `confirm_absence`, from the apiserver: a pod the status names,
    /// wrongly taken for gone, would be reported lost and started again. A pod the status does not name yet and
    /// neither has is taken for absent: created, it is adopted if it exists after all.
    async fn get_pod(&self, name: &str, confirm_absence: bool) -> Result<Option<Arc<Pod>>, Error> {
        let namespace = self.task_namespace();
        let cached = self
            .ctx
            .pod_cache
            .get(&ObjectRef::new(name).within(&namespace));
        if cached.is_some() {
            return Ok(cached);
        }
        let key = format!("{namespace}/{name}");
        let created = self.ctx.uncached_pods.get(&key, std::time::Instant::now());
        if created.is_some() || !confirm_absence {
            return Ok(created);
        }
        let mut fresh = self
            .pods
            .get_opt(name)
            .await
            .map_err(|source| self.observe_error(source))?;
        if let Some(pod) = fresh.as_mut() {
            pods::slim(pod);
        }
        Ok(fresh.map(Arc::new))
    }

    fn observe_error(&self, source: kube::Error) -> Error {
        Error::Observe {
            task: self.key.clone(),
            source,
        }
    }

    async fn call_manager(&self, call: &Call) -> Result<crate::manager::Reply, CallFailure> {
        let effect = format!("call:{}", call.method());
        self.crash_point(false, &effect);
        let reply = self.ctx.manager.call(call).await;
        self.crash_point(true, &effect);
        reply.map_err(|err| CallFailure {
            level: err.level(),
            message: err.to_string(),
            code: err.code(),
            unavailable: err.is_unavailable(),
            never_sent: err.never_sent(),
        })
    }
}

/// An object the CRD types cannot read (a SealingTask, a SealingPool): a Warning Event on it
/// that names the field; the message. The caller leaves it alone until it changes, and the
/// others go on.
pub async fn invalid_object<K>(
    ctx: &Arc<Context>,
    object: &ObjectReference,
    namespace: &str,
    name: &str,
    invalid: &InvalidObject,
) -> String
where
    K: kube::Resource<DynamicType = ()> + serde::de::DeserializeOwned,
{
    let key = format!("{namespace}/{name}");
    // The guard's message names no field; reading the object again with a path-tracking
    // deserializer does.
    let resource = ApiResource::erase::<K>(&());
    let raw: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), namespace, &resource);
    let message = match raw.get_opt(name).await {
        Ok(Some(object)) => serde_json::to_value(&object)
            .ok()
            .and_then(|value| {
                serde_path_to_error::deserialize::<_, K>(value)
                    .err()
                    .map(|e| format!("{}: {}", e.path(), e.inner()))
            })
            .unwrap_or_else(|| invalid.error.clone()),
        _ => invalid.error.clone(),
    };
    if ctx.events.allow(&key, std::time::Instant::now()) {
        ctx.metrics.write("event");
        let event = KubeEvent {
            type_: EventType::Warning,
            reason: "InvalidObject".into(),
            note: Some(format!(
                "the operator cannot read this {} and leaves it alone until it is fixed: \
                 {message}",
                K::kind(&())
            )),
            action: "Read".into(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, object).await {
            warn!(object = %key, "cannot record the InvalidObject event: {err}");
        }
    }
    message
}
