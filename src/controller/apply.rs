//! One reconcile of one task: decide, carry the effects out, answer the core's questions, decide
//! again, until the core waits; then write the status (once, and only if it changed) and, when
//! the task has ended, publish one Event for the transitions taken.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, Error, FIELD_MANAGER, metrics, pods};
use crate::api::{SealingTask, SealingTaskStatus, State};
use crate::manager::{Call, Manager};
use crate::plan::Event;
use crate::task::{self, Effect, Observed, Task, Wake};

/// How often a deleted task whose workspace cleanup is still running looks again.
const CLEANUP_RECHECK: Duration = Duration::from_secs(5);
/// How soon a task whose new pod turned out to exist already looks at it again.
const ADOPTED_RECHECK: Duration = Duration::from_secs(1);
/// The most decisions one reconcile makes; a plan chains far fewer manager calls in a row.
const DECISION_LIMIT: usize = 128;

/// How a reconcile ended.
pub enum Outcome {
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
    status: SealingTaskStatus,
    written: SealingTaskStatus,
    /// A status the core asked to be written (WriteStatus) and not written yet: it is written
    /// before the next effect outside the operator, or at the reconcile's end even if that failed.
    unwritten: Option<SealingTaskStatus>,
    /// State reports held until the allocation they follow is written: a crash in between leaves
    /// the manager told of a sector no task records.
    held_reports: Vec<(Call, Option<State>)>,
    resource_version: Option<String>,
    tasks: Api<SealingTask>,
    pub(super) pods: Api<Pod>,
    /// Transitions taken in this reconcile (from, event, to), for its one Event.
    transitions: Vec<(Option<State>, Event, State)>,
    /// A pod this reconcile created already existed (made before a restart, or not yet in the
    /// cache): it may have finished already, which no later watch event would say.
    adopted: bool,
}

impl TaskRun {
    pub fn new(task: SealingTask, ctx: Arc<Context>) -> Self {
        let namespace = task.namespace().unwrap_or_default();
        let status = task.status.clone().unwrap_or_default();
        Self {
            key: format!("{namespace}/{}", task.name_any()),
            tasks: Api::namespaced(ctx.client.clone(), &namespace),
            pods: Api::namespaced(ctx.client.clone(), &namespace),
            written: status.clone(),
            unwritten: None,
            held_reports: Vec::new(),
            transitions: Vec::new(),
            adopted: false,
            resource_version: task.resource_version(),
            status,
            task,
            ctx,
        }
    }

    /// Runs the task until the core waits, then writes what is left to write.
    pub async fn run(mut self) -> Result<Outcome, Error> {
        let read_at = self.resource_version.clone();
        let outcome = self.decide_until_wait().await;
        let saved = match outcome {
            Ok(_) => self.write_status().await,
            // What the core asked to keep (an allocated sector, a ticket) is kept even though a
            // later effect failed; the rest of this reconcile's status is decided again.
            Err(_) => self.write_unwritten().await,
        };
        if self.resource_version != read_at {
            // The next reconcile may find the watch cache not yet holding these writes.
            let uid = self.task.uid();
            let ctx = &self.ctx;
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
            && self.status == self.written
        {
            let mut note = first_state.map(|s| s.to_string()).unwrap_or_default();
            for (_, event, to) in &transitions {
                note.push_str(&format!(" -[{event}]-> {to}"));
            }
            self.event(false, &last_event.to_string(), note).await;
        }
        saved.and(outcome)
    }

    async fn decide_until_wait(&mut self) -> Result<Outcome, Error> {
        let mut observed = Observed {
            heartbeat_recent: self.ctx.heartbeats.recent(
                &self.key,
                self.ctx.settings.rules.manager_heartbeat,
                std::time::Instant::now(),
            ),
            remembered: self
                .ctx
                .memory
                .recall(&self.key, self.task.uid().as_deref()),
            ..Observed::default()
        };
        for _ in 0..DECISION_LIMIT {
            let now = Timestamp::now().as_second();
            let rules = &self.ctx.settings.rules;
            let decision = task::decide(Task::of(&self.task), &self.status, &observed, now, rules);
            self.status = decision.status;
            // A manager answer is read by the decision that asked for it, never by a later one.
            observed.reply = None;
            for effect in decision.effects {
                self.apply(effect, &mut observed).await?;
            }
            match decision.wake {
                Wake::Ask(question) => self.answer(question, &mut observed).await?,
                Wake::After(delay) => return Ok(Outcome::Requeue(Requeue::requeue(delay))),
                Wake::OnChange if self.adopted => {
                    return Ok(Outcome::Requeue(Requeue::requeue(ADOPTED_RECHECK)));
                }
                Wake::OnChange => return Ok(Outcome::Requeue(Requeue::await_change())),
                Wake::Release => return Ok(Outcome::Released),
                Wake::CleanupPending => {
                    debug!(task = %self.key, "waiting for the workspace cleanup pod");
                    return Ok(Outcome::Requeue(Requeue::requeue(CLEANUP_RECHECK)));
                }
            }
        }
        Ok(Outcome::Requeue(Requeue::requeue(Duration::from_secs(1))))
    }

    async fn apply(&mut self, effect: Effect, observed: &mut Observed) -> Result<(), Error> {
        match &effect {
            // Written with the pod's name: a crash right after reads as a lost pod, which the
            // task starts again, and a step boundary costs one write instead of two.
            Effect::CreateStepPod(_) | Effect::CreateCleanupPod { .. } => {
                if self.unwritten.take().is_some() {
                    self.write_status().await?;
                }
            }
            Effect::DeletePod(_)
            | Effect::DeleteTaskPods
            | Effect::DeleteTask
            | Effect::ClearResumeRequest
            | Effect::Tell(_) => self.write_unwritten().await?,
            Effect::WriteStatus
            | Effect::ReleaseSlot
            | Effect::ReportState(_)
            | Effect::Event { .. }
            | Effect::Transition { .. }
            | Effect::StepFinished { .. }
            | Effect::Failure { .. }
            | Effect::Log { .. }
            | Effect::Remember(_) => {}
        }
        match effect {
            // A sector the manager just handed out is written like the rest, before the next
            // effect outside the operator (the first step pod, which it then names too, or a
            // manager call): what comes between is the core's own work, and the state reports
            // about it wait for the write (see `report_state`).
            Effect::WriteStatus => self.unwritten = Some(self.status.clone()),
            Effect::CreateStepPod(create) => {
                let profiles = &self.ctx.settings.rules.profiles;
                let pod = pods::step_pod(
                    &self.task,
                    &create.name,
                    &create.request,
                    &create.profile,
                    profiles,
                    create.node.as_deref(),
                    create.avoid.as_deref(),
                );
                match self.create_pod(&pod, "creating a step pod").await {
                    Err(Error::Apply { source, .. }) if refused(&source).is_some() => {
                        // The apiserver will refuse this pod again: the task hears why, as a
                        // failed step, instead of the operator retrying it unseen.
                        let level = refused(&source).expect("checked");
                        let message =
                            format!("the apiserver refused step pod {}: {source}", create.name);
                        warn!(task = %self.key, pod = %create.name, "{message}");
                        observed.pods.insert(
                            create.name.clone(),
                            Some(crate::task::StepPod {
                                report: crate::task::PodReport::Failed {
                                    level,
                                    message,
                                    never_ran: false,
                                },
                                node: None,
                                created: None,
                                deleting: false,
                            }),
                        );
                    }
                    Err(err) => return Err(err),
                    Ok(()) => {
                        info!(task = %self.key, pod = %create.name, step = %create.request.step, node = ?create.node, "step pod created");
                        observed.pods.remove(&create.name);
                    }
                }
            }
            Effect::CreateCleanupPod { name, node } => {
                let rules = &self.ctx.settings.rules;
                let profile = rules.profiles.defaults_only(rules.retry_backoff);
                let pod = pods::cleanup_pod(
                    &self.task,
                    &self.status,
                    &name,
                    &profile,
                    &rules.profiles,
                    &node,
                );
                self.create_pod(&pod, "creating the cleanup pod").await?;
                observed.cleanup_pod = None;
            }
            Effect::DeletePod(name) => {
                self.delete_pod(&name).await;
                observed.pods.remove(&name);
            }
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
                    warn!(task = %self.key, "{}: {err}", call.method());
                }
                self.crash_point(true, &effect);
            }
            Effect::ReportState(call) => {
                let state = self.status.state;
                if self.allocation_unwritten() {
                    self.held_reports.push((call, state));
                } else {
                    self.report_state(call, state);
                }
            }
            Effect::Event {
                warning,
                reason,
                note,
            } => {
                if reason == crate::task::work::precommit::TICKET_EXPIRING {
                    self.ctx.metrics.ticket_expirations.inc();
                }
                self.event(warning, &reason, note).await
            }
            Effect::Transition { from, event, to } => {
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
                    info!(task = %self.key, from = %from_name, %event, %to, "transition");
                    self.transitions.push((from, event, to));
                }
            }
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
                info!(task = %self.key, %step, reused, seconds, "step done");
            }
            Effect::Failure { level, retry } => {
                self.ctx
                    .metrics
                    .failures
                    .get_or_create(&metrics::FailureLabels {
                        plan: self.task.spec.plan.to_string(),
                        level: level.to_string(),
                    })
                    .inc();
                if retry {
                    self.ctx.metrics.retries.inc();
                }
            }
            Effect::Log { warning, message } => {
                if warning {
                    warn!(task = %self.key, "{message}");
                } else {
                    info!(task = %self.key, "{message}");
                }
            }
            Effect::Remember(facts) => {
                observed.remembered.merge(&facts);
                let uid = self.task.uid();
                let known = observed.remembered.clone();
                self.ctx.memory.keep(&self.key, uid.as_deref(), known);
            }
        }
        Ok(())
    }

    /// Whether the manager's answer to an allocation (a sector handed out, a one-time job's
    /// answer to its recorded intent) is not written yet.
    pub(super) fn allocation_unwritten(&self) -> bool {
        let (status, written) = (&self.status, &self.written);
        (status.sector.is_some() && status.sector != written.sector)
            || (written.allocating.is_some() && status.allocating != written.allocating)
    }

    /// Tells the manager of a state change, in the background: best effort, as damocles-worker
    /// does.
    fn report_state(&self, call: Call, state: Option<State>) {
        let manager = self.ctx.manager.clone();
        let plan = self.task.spec.plan;
        tokio::spawn(async move {
            let effect = "call:ReportState";
            crate::dev::crash_schedule_point(false, effect, plan, state);
            if let Err(err) = manager.call(&call).await {
                warn!("ReportState: {err}");
            }
            crate::dev::crash_schedule_point(true, effect, plan, state);
        });
    }

    /// A point of the crash schedule (dev builds only): the operator may die right before
    /// (`after` false) or right after `effect`, in the task's current state.
    pub(super) fn crash_point(&self, after: bool, effect: &str) {
        crate::dev::crash_schedule_point(after, effect, self.task.spec.plan, self.status.state);
    }

    fn apply_error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Apply {
            task: self.key.clone(),
            action,
            source,
        }
    }

    /// Writes the status the core asked to be written, if any, before an effect outside the
    /// operator (a manager call, a pod deleted, a task patch) that must not happen without it.
    pub(super) async fn write_unwritten(&mut self) -> Result<(), Error> {
        let Some(unwritten) = self.unwritten.take() else {
            return Ok(());
        };
        let current = std::mem::replace(&mut self.status, unwritten);
        let written = self.write_status().await;
        self.status = current;
        written
    }

    /// Writes the status when it changed, guarded by the resourceVersion we read: a concurrent
    /// change makes this fail and the reconcile start over from the current object, never
    /// overwrite it.
    async fn write_status(&mut self) -> Result<(), Error> {
        self.unwritten = None;
        if self.status == self.written {
            return Ok(());
        }
        self.status.observed_generation = self.task.metadata.generation;
        let name = self.task.name_any();
        let patch = |version: &Option<String>| {
            json!({
                "apiVersion": "damocles.io/v1alpha1",
                "kind": "SealingTask",
                "metadata": {"resourceVersion": version},
                "status": self.status,
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
        let allocation = self.status.sector.is_some() && self.status.sector != self.written.sector;
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
        debug!(task = %self.key, state = ?self.status.state, phase = ?self.status.phase, message = ?self.status.message, "status written");
        self.resource_version = updated.resource_version();
        self.written = self.status.clone();
        self.ctx.memory.written(&self.key, &self.written);
        self.crash_point(true, "status");
        for (call, state) in std::mem::take(&mut self.held_reports) {
            self.report_state(call, state);
        }
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

    async fn create_pod(&mut self, pod: &Pod, action: &'static str) -> Result<(), Error> {
        self.ctx.metrics.write("pod-create");
        self.crash_point(false, "pod-create");
        let created = match self.pods.create(&PostParams::default(), pod).await {
            Ok(mut created) => {
                pods::slim(&mut created);
                let key = format!("{}/{}", self.task_namespace(), created.name_any());
                self.ctx
                    .uncached_pods
                    .created(key, created, std::time::Instant::now());
                Ok(())
            }
            // A restarted operator adopts the pod it created before.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                self.adopted = true;
                Ok(())
            }
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
            Err(err) => warn!(task = %self.key, pod = name, "cannot delete a step pod: {err}"),
        }
        self.crash_point(true, "pod-delete");
    }

    pub(super) fn task_uid(&self) -> Option<String> {
        self.task.uid()
    }

    pub(super) fn status(&self) -> &SealingTaskStatus {
        &self.status
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
            warn!(task = %self.key, "cannot delete the task's finished pods: {err}");
        }
        self.crash_point(true, "pods-delete");
    }

    async fn event(&self, warning: bool, reason: &str, note: String) {
        if !self.ctx.events.allow(&self.key, std::time::Instant::now()) {
            debug!(task = %self.key, reason, "Event throttled: {note}");
            return;
        }
        self.ctx.metrics.write("event");
        debug!(task = %self.key, reason, "event: {note}");
        let event = super::event(warning, reason, &note);
        if let Err(err) = self
            .ctx
            .recorder
            .publish(&event, &self.task.object_ref(&()))
            .await
        {
            warn!(task = %self.key, "cannot record event {reason}: {err}");
        }
    }
}

/// How bad a refusal of a pod create is, when the apiserver answered one: a pod it finds invalid
/// (400, 422) is refused again, so permanent; a forbidden one (403: a ResourceQuota exceeded, an
/// admission policy) may pass later, so temporary. None for anything else (the API unreachable).
fn refused(source: &kube::Error) -> Option<crate::sector::FailureLevel> {
    match source {
        kube::Error::Api(status) => match status.code {
            400 | 422 => Some(crate::sector::FailureLevel::Permanent),
            403 => Some(crate::sector::FailureLevel::Temporary),
            _ => None,
        },
        _ => None,
    }
}
