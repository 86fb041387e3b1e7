//! One reconcile of one task: the core's reconcile loop ([`crate::task::reconcile`]) carried out
//! on the Kubernetes API and the manager. What to do and when to write is the loop's; here is
//! only how: pods created and deleted, the status written, Events, metrics, the manager called.
//! When the task has ended, one Event lists the transitions taken.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{Instrument, debug, info, warn};

use super::{Context, Error, FIELD_MANAGER, metrics, pods};
use crate::api::{SealingTask, State};
use crate::manager::{Call, Manager};
use crate::plan::Event;
use crate::sector::FailureLevel;
use crate::task::reconcile::{Io, Reconcile, StatusWrite};
use crate::task::{Effect, Observed, Task, Wake};

/// How often a deleted task whose workspace cleanup is still running looks again.
const CLEANUP_RECHECK: Duration = Duration::from_secs(5);

/// How a reconcile ended.
pub enum Ending {
    Requeue(Requeue),
    /// A deleted task is stopped and cleaned up: its finalizer may go.
    Released,
}

pub struct TaskRun {
    /// The task as last read; its spec loses resumeState once that is cleared.
    task: SealingTask,
    pub(super) ctx: Arc<Context>,
    /// namespace/name.
    pub(super) key: String,
    /// The task's state as the core last decided it, for the crash points.
    state: Option<State>,
    resource_version: Option<String>,
    tasks: Api<SealingTask>,
    pub(super) pods: Api<Pod>,
    /// Transitions taken in this reconcile (from, event, to), for its one Event.
    transitions: Vec<(Option<State>, Event, State)>,
}

impl TaskRun {
    pub fn new(task: SealingTask, ctx: Arc<Context>) -> Self {
        let namespace = task.namespace().unwrap_or_default();
        Self {
            key: format!("{namespace}/{}", task.name_any()),
            tasks: Api::namespaced(ctx.client.clone(), &namespace),
            pods: Api::namespaced(ctx.client.clone(), &namespace),
            state: task.status.as_ref().and_then(|s| s.state),
            transitions: Vec::new(),
            resource_version: task.resource_version(),
            task,
            ctx,
        }
    }

    /// Runs the task until the core waits, then writes what is left to write.
    pub async fn run(mut self) -> Result<Ending, Error> {
        let read_at = self.resource_version.clone();
        let ctx = self.ctx.clone();
        let observed = Observed {
            heartbeat_recent: ctx.heartbeats.recent(
                &self.key,
                ctx.settings.rules.manager_heartbeat,
                std::time::Instant::now(),
            ),
            remembered: ctx.memory.recall(&self.key, self.task.uid().as_deref()),
            ..Observed::default()
        };
        let status = self.task.status.clone().unwrap_or_default();
        let mut reconcile = Reconcile::new(status, observed, &ctx.settings.rules);
        let mut ended = self.carry_out(&mut reconcile).await;
        if ended.is_err()
            && let Some(kept) = reconcile.kept(Task::of(&self.task))
        {
            // What the core asked to keep (an allocated sector, a ticket) is kept even though a
            // later effect failed; the rest of this reconcile's status is decided again.
            ended = self.write_status(kept).await.and(ended);
        }
        if self.resource_version != read_at {
            // The next reconcile may find the watch cache not yet holding these writes.
            let uid = self.task.uid();
            ctx.own_writes
                .wrote(&self.key, uid.as_deref(), self.resource_version.as_deref());
        }
        // One Event when the task ends, listing the transitions of that reconcile. The steps
        // before it are in status.history and the log: an Event per step would double the
        // task's API writes.
        let transitions = std::mem::take(&mut self.transitions);
        if let (Some((_, last_event, last_state)), Some((first_state, _, _))) =
            (transitions.last(), transitions.first())
            && last_state.is_terminal()
            && reconcile.all_written()
        {
            let mut note = first_state.map(|s| s.to_string()).unwrap_or_default();
            for (_, event, to) in &transitions {
                note.push_str(&format!(" -[{event}]-> {to}"));
            }
            self.event(false, &last_event.to_string(), note).await;
        }
        Ok(match ended? {
            Wake::After(delay) => Ending::Requeue(Requeue::requeue(delay)),
            Wake::OnChange => Ending::Requeue(Requeue::await_change()),
            Wake::Release => Ending::Released,
            Wake::CleanupPending => {
                debug!("waiting for the workspace cleanup pod");
                Ending::Requeue(Requeue::requeue(CLEANUP_RECHECK))
            }
            Wake::Ask(question) => unreachable!("the reconcile loop answers {question:?}"),
        })
    }

    /// Carries out what the reconcile loop hands out until it waits.
    async fn carry_out(&mut self, reconcile: &mut Reconcile<'_>) -> Result<Wake, Error> {
        loop {
            let now = Timestamp::now().as_second();
            let io = reconcile.next(Task::of(&self.task), now);
            self.state = reconcile.status().state;
            match io {
                Io::Write(write) => self.write_status(write).await?,
                Io::Apply(effect) => self.apply(effect, reconcile).await?,
                Io::Report { call, state } => self.report_state(call, state),
                Io::Ask(question) => {
                    let answer = self.answer(question, reconcile.status()).await?;
                    reconcile.answer(answer);
                }
                Io::HeartbeatSent => self
                    .ctx
                    .heartbeats
                    .sent(&self.key, std::time::Instant::now()),
                Io::Remember(facts) => {
                    let uid = self.task.uid();
                    self.ctx.memory.keep(&self.key, uid.as_deref(), facts);
                }
                Io::Wait(wake) => return Ok(wake),
            }
        }
    }

    async fn apply(&mut self, effect: Effect, reconcile: &mut Reconcile<'_>) -> Result<(), Error> {
        match effect {
            Effect::CreateStepPod(create) => self.create_step_pod(&create, reconcile).await?,
            Effect::CreateCleanupPod { name, node } => {
                let rules = &self.ctx.settings.rules;
                let profile = rules.profiles.defaults_only(rules.retry_backoff);
                let pod = pods::cleanup_pod(
                    &self.task,
                    reconcile.status(),
                    &name,
                    &profile,
                    &rules.profiles,
                    &node,
                );
                self.create_pod(&pod, "creating the cleanup pod").await?;
            }
            Effect::DeletePod(name) => self.delete_pod(&name).await,
            Effect::DeleteTaskPods => self.delete_task_pods().await,
            Effect::DeleteTask => {
                self.ctx.metrics.write("task-delete");
                self.crash_point(false, "task-delete");
                match self
                    .tasks
                    .delete(&self.task.name_any(), &DeleteParams::background())
                    .await
                {
                    Ok(_) => {}
                    Err(kube::Error::Api(status)) if status.code == 404 => {}
                    Err(source) => return Err(self.apply_error("deleting the task", source)),
                }
                self.crash_point(true, "task-delete");
            }
            Effect::ClearResumeRequest => self.clear_resume_request().await?,
            Effect::ReleaseSlot => self.ctx.slots.release(&self.key),
            Effect::Tell(call) => {
                let effect = format!("call:{}", call.method());
                self.crash_point(false, &effect);
                if let Err(err) = self.ctx.manager.call(&call).await {
                    warn!("{}: {err}", call.method());
                }
                self.crash_point(true, &effect);
            }
            Effect::Event {
                warning,
                reason,
                note,
            } => self.event(warning, &reason, note).await,
            Effect::TicketExpiring => {
                self.ctx.metrics.ticket_expirations.inc();
            }
            Effect::Transition { from, event, to } => self.transition(from, event, to),
            Effect::StepFinished {
                step,
                seconds,
                reused,
            } => {
                self.ctx
                    .metrics
                    .step_seconds
                    .get_or_create(&metrics::StepLabels {
                        step: step.to_string(),
                        sector_size: self.task.spec.sector_size.to_string(),
                    })
                    .observe(seconds);
                info!(%step, reused, seconds, "step done");
            }
            Effect::Failure { level, retry } => {
                let plan = self.task.spec.plan.to_string();
                let (level, metrics) = (level.to_string(), &self.ctx.metrics);
                let labels = metrics::FailureLabels { plan, level };
                metrics.failures.get_or_create(&labels).inc();
                if retry {
                    metrics.retries.inc();
                }
            }
            Effect::Log { warning, message } => {
                if warning {
                    warn!("{message}");
                } else {
                    info!("{message}");
                }
            }
            // The reconcile loop keeps these itself.
            Effect::WriteStatus | Effect::ReportState(_) | Effect::Remember(_) => {}
        }
        Ok(())
    }

    async fn create_step_pod(
        &mut self,
        create: &crate::task::PodToCreate,
        reconcile: &mut Reconcile<'_>,
    ) -> Result<(), Error> {
        let pod = pods::step_pod(&self.task, create, &self.ctx.settings.rules.profiles);
        match self.create_pod(&pod, "creating a step pod").await {
            Err(Error::Apply { source, .. }) if refused(&source).is_some() => {
                // The apiserver will refuse this pod again: the task hears why, as a failed
                // step, instead of the operator retrying it unseen.
                let level = refused(&source).expect("checked");
                let message = format!("the apiserver refused step pod {}: {source}", create.name);
                warn!(pod = %create.name, "{message}");
                reconcile.pod_refused(&create.name, level, message);
            }
            Err(err) => return Err(err),
            Ok(Created::New) => {
                info!(pod = %create.name, step = %create.request.step, node = ?create.node, "step pod created");
            }
            Ok(Created::Existed) => reconcile.pod_existed(),
        }
        Ok(())
    }

    /// Counts a transition, and keeps it for the Event when the task ends.
    fn transition(&mut self, from: Option<State>, event: Option<Event>, to: State) {
        self.ctx.metrics.transitions.inc();
        let ended = match to {
            State::Finished => Some(&self.ctx.metrics.finished),
            State::Aborted => Some(&self.ctx.metrics.aborted),
            _ => None,
        };
        if let Some(counter) = ended {
            let plan = self.task.spec.plan.to_string();
            counter.get_or_create(&metrics::PlanLabels { plan }).inc();
        }
        if let Some(event) = event {
            let from_name = from.map(|s| s.to_string()).unwrap_or_default();
            info!(from = %from_name, %event, %to, "transition");
            self.transitions.push((from, event, to));
        }
    }

    /// Tells the manager of a state change, in the background: best effort, as damocles-worker
    /// does.
    fn report_state(&self, call: Call, state: Option<State>) {
        let manager = self.ctx.manager.clone();
        let hooks = self.ctx.settings.hooks.clone();
        let plan = self.task.spec.plan;
        let report = async move {
            let effect = "call:ReportState";
            hooks.at(false, effect, plan, state);
            if let Err(err) = manager.call(&call).await {
                warn!("ReportState: {err}");
            }
            hooks.at(true, effect, plan, state);
        };
        // Logged as the task's, in its reconcile's span.
        tokio::spawn(report.instrument(tracing::Span::current()));
    }

    /// A point of the crash schedule: the operator may die right before (`after` false) or
    /// right after `effect`, in the task's current state.
    pub(super) fn crash_point(&self, after: bool, effect: &str) {
        let plan = self.task.spec.plan;
        self.ctx.settings.hooks.at(after, effect, plan, self.state);
    }

    fn apply_error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Apply {
            task: self.key.clone(),
            action,
            source,
        }
    }

    /// Writes `write.status`, guarded by the resourceVersion we read: a concurrent change makes
    /// this fail and the reconcile start over from the current object, never overwrite it.
    async fn write_status(&mut self, write: StatusWrite) -> Result<(), Error> {
        let StatusWrite { status, allocation } = write;
        let name = self.task.name_any();
        let patch = |version: &Option<String>| {
            json!({
                "apiVersion": "damocles.io/v1alpha1",
                "kind": "SealingTask",
                "metadata": {"resourceVersion": version},
                "status": status,
            })
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.crash_point(false, "status");
        let mut written = self
            .tasks
            .patch_status(&name, &params, &Patch::Apply(patch(&self.resource_version)))
            .await;
        // A sector the manager just handed out is recorded whatever else changed meanwhile (a
        // spec or label edit): it will not be handed out again, and the operator is the only
        // writer of status. Anything else starts over from the current object.
        if allocation && matches!(&written, Err(kube::Error::Api(e)) if e.code == 409) {
            let current = self
                .tasks
                .get(&name)
                .await
                .map_err(|source| Error::WriteStatus {
                    task: self.key.clone(),
                    source,
                })?;
            written = self
                .tasks
                .patch_status(
                    &name,
                    &params,
                    &Patch::Apply(patch(&current.resource_version())),
                )
                .await;
        }
        let updated = written.map_err(|source| Error::WriteStatus {
            task: self.key.clone(),
            source,
        })?;
        self.ctx.metrics.write("status");
        debug!(state = ?status.state, phase = ?status.phase, message = ?status.message, "status written");
        self.resource_version = updated.resource_version();
        self.ctx.memory.written(&self.key, &status);
        self.crash_point(true, "status");
        Ok(())
    }

    /// Removes spec.resumeState, guarded by the resourceVersion we know: a newer edit by the user
    /// fails this patch (and is then seen by the next reconcile) instead of being overwritten.
    async fn clear_resume_request(&mut self) -> Result<(), Error> {
        let patch = json!({
            "metadata": {"resourceVersion": self.resource_version},
            "spec": {"resumeState": null},
        });
        self.merge_patch(&patch, "clearing spec.resumeState", "spec")
            .await?;
        self.task.spec.resume_state = None;
        Ok(())
    }

    /// A merge patch of the task itself, counted as a write of `kind`; the resourceVersion it
    /// leaves is the one later writes are guarded by.
    async fn merge_patch(
        &mut self,
        patch: &serde_json::Value,
        action: &'static str,
        kind: &str,
    ) -> Result<SealingTask, Error> {
        let effect = format!("patch:{kind}");
        self.crash_point(false, &effect);
        let updated = self
            .tasks
            .patch(
                &self.task.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
            .map_err(|source| self.apply_error(action, source))?;
        self.ctx.metrics.write(kind);
        self.resource_version = updated.resource_version();
        self.crash_point(true, &effect);
        Ok(updated)
    }

    async fn create_pod(&mut self, pod: &Pod, action: &'static str) -> Result<Created, Error> {
        self.ctx.metrics.write("pod-create");
        self.crash_point(false, "pod-create");
        let created = match self.pods.create(&PostParams::default(), pod).await {
            Ok(mut created) => {
                pods::slim(&mut created);
                let key = format!("{}/{}", self.task_namespace(), created.name_any());
                self.ctx
                    .uncached_pods
                    .created(key, created, std::time::Instant::now());
                Ok(Created::New)
            }
            // A restarted operator adopts the pod it created before.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Created::Existed),
            Err(source) => Err(self.apply_error(action, source)),
        };
        self.crash_point(true, "pod-create");
        created
    }

    async fn delete_pod(&self, name: &str) {
        self.ctx.metrics.write("pod-delete");
        self.crash_point(false, "pod-delete");
        let key = format!("{}/{name}", self.task_namespace());
        self.ctx.uncached_pods.forget(&key);
        match self.pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => warn!(pod = name, "cannot delete a step pod: {err}"),
        }
        self.crash_point(true, "pod-delete");
    }

    pub(super) fn task_uid(&self) -> Option<String> {
        self.task.uid()
    }

    pub(super) fn task_namespace(&self) -> String {
        self.task.namespace().unwrap_or_default()
    }

    /// Deletes every pod of the task in one request: the finished step pods, kept until now for
    /// their logs, and the cleanup pod. (Deleting the task also removes them, by owner reference.)
    async fn delete_task_pods(&self) {
        let Some(uid) = self.task.uid() else {
            return;
        };
        self.ctx.metrics.write("pod-delete");
        self.crash_point(false, "pods-delete");
        let selector = format!("{}={uid}", pods::TASK_UID_LABEL);
        if let Err(err) = self
            .pods
            .delete_collection(
                &DeleteParams::background(),
                &kube::api::ListParams::default().labels(&selector),
            )
            .await
        {
            warn!("cannot delete the task's finished pods: {err}");
        }
        self.crash_point(true, "pods-delete");
    }

    async fn event(&self, warning: bool, reason: &str, note: String) {
        if !self.ctx.events.allow(&self.key, std::time::Instant::now()) {
            debug!(reason, "Event throttled: {note}");
            return;
        }
        self.ctx.metrics.write("event");
        debug!(reason, "event: {note}");
        let event = super::event(warning, reason, &note);
        if let Err(err) = self
            .ctx
            .recorder
            .publish(&event, &self.task.object_ref(&()))
            .await
        {
            warn!("cannot record event {reason}: {err}");
        }
    }
}

/// What a pod create came to.
enum Created {
    New,
    /// The pod existed already (made before a restart, or not yet in the cache): adopted.
    Existed,
}

/// How bad a refusal of a pod create is, when the apiserver answered one: a pod it finds invalid
/// (400, 422) is refused again, so permanent; a forbidden one (403: a ResourceQuota exceeded, an
/// admission policy) may pass later, so temporary. None for anything else (the API unreachable).
fn refused(source: &kube::Error) -> Option<FailureLevel> {
    match source {
        kube::Error::Api(status) => match status.code {
            400 | 422 => Some(FailureLevel::Permanent),
            403 => Some(FailureLevel::Temporary),
            _ => None,
        },
        _ => None,
    }
}
