//! The controller: reconciles each SealingTask through its plan. The plan driver
//! ([`crate::plan::driver`]) decides; this module only carries its decisions out: manager calls
//! inline ([`calls`]), proof and file steps as pods ([`pods`], shaped by [`profiles`]), and the
//! task's status written with server-side apply under one field manager.

pub mod calls;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod profiles;
pub mod slots;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::api::{
    Artifact, FailureLevel, HISTORY_LIMIT, HistoryEntry, LastError, Phase, PlanKind, SealingTask,
    SealingTaskStatus, State,
};
use crate::manager::ManagerClient;
use crate::manager::wire::{
    ReportStateReq, SectorFailure, SectorId, SectorStateChange, WorkerIdentifier,
};
use crate::plan::driver::{self, Decision, Facts, FailureDecision, Next, Outcome, Position};
use crate::plan::{Action, Event, StepKind};
use calls::CallSettings;
use pods::PodReport;
use profiles::{Locality, Profiles};

const SUSPENDED: &str = "Suspended";
const RESUME_REJECTED: &str = "ResumeRejected";
const WORKSPACE_CLEANED: &str = "WorkspaceCleaned";

/// Keeps a deleted task until its step is stopped, the manager told and its workspace removed.
pub const FINALIZER: &str = "damocles.io/cleanup";

/// How long a deletion waits for the workspace cleanup before letting the task go anyway.
/// A step pod not started after this long gets a status message saying why.
const SLOW_START: Duration = Duration::from_secs(20);
/// How often a task waiting for a concurrency slot looks again.
const SLOT_RECHECK: Duration = Duration::from_secs(5);
const CLEANUP_PATIENCE: Duration = Duration::from_secs(600);

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "damocles-operator";

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (all when none).
    pub namespace: Option<String>,
    pub profiles: Profiles,
    pub calls: CallSettings,
    /// Initial back-off of temporary failures where no profile sets one.
    pub retry_backoff: Duration,
    /// This replica's name, in Events and in ReportState.
    pub instance: String,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_address: std::net::SocketAddr,
    pub tickets: driver::TicketRules,
    /// What to do with a task whose ticket is about to expire before PC1, PC2 or SubmitPreCommit.
    pub on_ticket_expiry: TicketExpiry,
    /// Act only while holding this Lease (none: act at once, for a single replica).
    pub leader_election: Option<leader::LeaderElection>,
    /// Client-side limit on requests to the Kubernetes API: sustained rate, and how many may go
    /// at once (kube-rs has none of its own; client-go's defaults are 5 and 10).
    pub api_qps: f64,
    pub api_burst: u32,
}

/// What the ticket expiry guard does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TicketExpiry {
    /// Go back to TreeDBuilt for a new ticket (PC1 and PC2 are redone).
    Rewind,
    /// End the task.
    Abort,
}

struct Context {
    client: Client,
    /// The controller's cache of every watched task: concurrency slots are counted in it.
    cache: Store<SealingTask>,
    slots: slots::Slots,
    events: throttle::EventBudget,
    metrics: Arc<metrics::Metrics>,
    manager: Arc<ManagerClient>,
    settings: Settings,
    recorder: Recorder,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Plan(#[from] driver::DriverError),
    #[error("{0}")]
    Finalizer(Box<kube::runtime::finalizer::Error<ReconcileError>>),
    #[error("deleting {task}: {message}")]
    CleanupPending { task: String, message: String },
}

/// A client for `config` that counts its requests in `metrics` and sends at most `burst` of them
/// in any window of `burst / qps` seconds (tower's fixed-window limit: `qps` on average).
pub fn limited_client(
    config: kube::Config,
    qps: f64,
    burst: u32,
    metrics: Arc<metrics::Metrics>,
) -> anyhow::Result<Client> {
    anyhow::ensure!(
        qps > 0.0 && burst > 0,
        "the API rate limit needs a positive QPS and burst (got {qps} and {burst})"
    );
    let window = Duration::from_secs_f64(f64::from(burst) / qps);
    let counted = tower::util::MapRequestLayer::new(
        move |request: axum::http::Request<kube::client::Body>| {
            metrics
                .api_requests
                .get_or_create(&metrics::RequestLabels {
                    method: request.method().to_string(),
                })
                .inc();
            request
        },
    );
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&counted)
        .with_layer(&tower::limit::RateLimitLayer::new(u64::from(burst), window))
        .build())
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    config: kube::Config,
    manager: ManagerClient,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> anyhow::Result<()> {
    let metrics = Arc::new(metrics::Metrics::default());
    let client = limited_client(
        config,
        settings.api_qps,
        settings.api_burst,
        metrics.clone(),
    )?;
    let (tasks, pods): (Api<SealingTask>, Api<Pod>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    // Fail at start, clearly, rather than retrying a watch forever.
    tasks
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list SealingTasks ({e}); is the CRD installed (`damocles-operator crd | kubectl apply -f -`)?"
            )
        })?;
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: Some(settings.instance.clone()),
    };
    let controller = Controller::new(tasks, watcher::Config::default());
    let context = Arc::new(Context {
        cache: controller.store(),
        slots: slots::Slots::default(),
        events: throttle::EventBudget::default(),
        metrics: metrics.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        client,
        manager: Arc::new(manager),
        settings,
    });
    let pod_watch = watcher::Config::default().labels(&format!(
        "{}={}",
        pods::MANAGED_BY.0,
        pods::MANAGED_BY.1
    ));
    let shutdown = shutdown.shared();
    let leading = context.settings.leader_election.is_none();
    metrics.leader.set(i64::from(leading));
    let address = metrics::serve(
        context.settings.metrics_address,
        metrics.clone(),
        controller.store(),
    )
    .await?;
    info!(%address, "serving /metrics, /healthz and /readyz");
    let mut leadership = None;
    if let Some(election) = &context.settings.leader_election {
        info!(
            lease = %format!("{}/{}", election.namespace, election.lease),
            identity = %context.settings.instance,
            "standing by until this replica holds the leader-election Lease"
        );
        tokio::select! {
            held = leader::acquire(context.client.clone(), election, &context.settings.instance) => {
                leadership = Some(held?);
            }
            _ = shutdown.clone() => return Ok(()),
        }
        metrics.leader.set(1);
        info!(identity = %context.settings.instance, "this replica now leads");
    }
    info!(namespace = ?context.settings.namespace, "reconciling SealingTasks");
    let election = context.settings.leader_election.clone();
    let reconciling = controller
        .owns(pods, pod_watch)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(err) = result {
                warn!("reconcile failed: {err}");
            }
        });
    let (Some(mut leadership), Some(election)) = (leadership, election) else {
        reconciling.await;
        return Ok(());
    };
    tokio::select! {
        _ = reconciling => {
            leadership.release().await;
            Ok(())
        }
        // Stop at once, mid-reconcile if need be: every step is safe to redo, and the new leader
        // must not share the work with this replica even for a moment.
        _ = leadership.lost() => Err(anyhow::anyhow!(
            "lost the leader-election Lease {}/{} to another replica; stopping so that two \
             replicas never act on the same tasks",
            election.namespace,
            election.lease
        )),
    }
}

fn error_policy(_task: Arc<SealingTask>, err: &ReconcileError, _ctx: Arc<Context>) -> Requeue {
    warn!("{err}");
    Requeue::requeue(Duration::from_secs(5))
}

async fn reconcile(task: Arc<SealingTask>, ctx: Arc<Context>) -> Result<Requeue, ReconcileError> {
    // The watch cache can lag behind our own last status write: act on the current object only.
    let tasks: Api<SealingTask> =
        Api::namespaced(ctx.client.clone(), &task.namespace().unwrap_or_default());
    let Some(current) = tasks.get_opt(&task.name_any()).await? else {
        return Ok(Requeue::await_change());
    };
    finalizer(&tasks, FINALIZER, Arc::new(current), |event| async {
        match event {
            FinalizerEvent::Apply(task) => {
                let mut run = TaskRun::new(task, ctx.clone());
                let requeue = run.drive().await;
                run.flush(requeue).await
            }
            FinalizerEvent::Cleanup(task) => {
                let mut run = TaskRun::new(task, ctx.clone());
                let requeue = run.deleted().await;
                run.flush(requeue).await
            }
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn now() -> Time {
    // Whole seconds: what the API server keeps, so an unchanged status compares equal.
    Time(Timestamp::from_second(Timestamp::now().as_second()).expect("now is a valid time"))
}

/// One reconcile of one task: a working copy of its status, written when it changed.
struct TaskRun {
    task: Arc<SealingTask>,
    ctx: Arc<Context>,
    status: SealingTaskStatus,
    written: SealingTaskStatus,
    resource_version: Option<String>,
    tasks: Api<SealingTask>,
    pods: Api<Pod>,
    /// The status already says why the task waits (a concurrency slot, a pod slow to start), or
    /// that it runs: a wait must not overwrite it.
    keep_phase: bool,
    /// Transitions taken in this reconcile (from, event, to), for its one Event.
    transitions: Vec<(Option<State>, Event, State)>,
}

impl TaskRun {
    fn new(task: Arc<SealingTask>, ctx: Arc<Context>) -> Self {
        let namespace = task.namespace().unwrap_or_default();
        let status = task.status.clone().unwrap_or_default();
        Self {
            tasks: Api::namespaced(ctx.client.clone(), &namespace),
            pods: Api::namespaced(ctx.client.clone(), &namespace),
            written: status.clone(),
            keep_phase: false,
            transitions: Vec::new(),
            resource_version: task.resource_version(),
            status,
            task,
            ctx,
        }
    }

    fn name(&self) -> String {
        self.task.name_any()
    }

    fn facts(&self) -> Facts {
        Facts {
            synthetic: self.task.spec.synthetic_po_rep,
            upgraded: false,
        }
    }

    /// The task's sector as the manager names it: allocated, or given in the spec.
    fn sector_id(&self) -> Option<SectorId> {
        self.status
            .sector
            .or(self.task.spec.sector)
            .map(calls::sector_id)
    }

    fn position(&self) -> Position {
        Position {
            state: self.status.state.unwrap_or(State::Empty),
            action: self.status.action_index as usize,
        }
    }

    async fn save(&mut self) -> Result<(), ReconcileError> {
        if self.status == self.written {
            return Ok(());
        }
        self.status.observed_generation = self.task.metadata.generation;
        // Guarded by the resourceVersion we read: a concurrent change makes this fail and the
        // reconcile start over from the current object, never overwrite it.
        let patch = json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingTask",
            "metadata": {"resourceVersion": self.resource_version},
            "status": self.status,
        });
        let updated = self
            .tasks
            .patch_status(
                &self.name(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        self.ctx.metrics.write("status");
        self.resource_version = updated.resource_version();
        self.written = self.status.clone();
        Ok(())
    }

    async fn event(&self, type_: EventType, reason: &str, note: String) {
        if !self
            .ctx
            .events
            .allow(&slots::key(&self.task), std::time::Instant::now())
        {
            debug!(task = %self.name(), reason, "Event throttled: {note}");
            return;
        }
        self.ctx.metrics.write("event");
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(err) = self
            .ctx
            .recorder
            .publish(&event, &self.task.object_ref(&()))
            .await
        {
            warn!(task = %self.name(), "cannot record event {reason}: {err}");
        }
    }

    fn set_phase(&mut self, phase: Phase, message: impl Into<String>) {
        self.status.phase = Some(phase);
        self.status.message = Some(message.into());
        let (ready, progressing, paused) = match phase {
            Phase::Finished => ("True", "False", "False"),
            Phase::Paused => ("False", "False", "True"),
            Phase::Aborted => ("False", "False", "False"),
            _ => ("False", "True", "False"),
        };
        let reason = phase.to_string();
        set_condition(&mut self.status.conditions, "Ready", ready, &reason);
        set_condition(
            &mut self.status.conditions,
            "Progressing",
            progressing,
            &reason,
        );
        set_condition(&mut self.status.conditions, "Paused", paused, &reason);
    }

    /// Ends a reconcile: writes what changed and not yet written (transitions are written together
    /// with the work that follows them, not one by one) and publishes one Event for the
    /// transitions taken.
    async fn flush(
        &mut self,
        requeue: Result<Requeue, ReconcileError>,
    ) -> Result<Requeue, ReconcileError> {
        let saved = if requeue.is_ok() {
            self.save().await
        } else {
            Ok(())
        };
        let transitions = std::mem::take(&mut self.transitions);
        if let (Some((_, last_event, _)), Some((first_state, _, _))) =
            (transitions.last(), transitions.first())
            && self.status == self.written
        {
            let mut note = first_state.map(|s| s.to_string()).unwrap_or_default();
            for (_, event, to) in &transitions {
                note.push_str(&format!(" -[{event}]-> {to}"));
            }
            self.event(EventType::Normal, &last_event.to_string(), note)
                .await;
        }
        saved.and(requeue)
    }

    async fn drive(&mut self) -> Result<Requeue, ReconcileError> {
        if let Some(request) = self.task.spec.resume_request() {
            let request = request.map(str::to_string);
            if let Some(requeue) = self.resume(request.as_deref()).await? {
                return Ok(requeue);
            }
        }
        let position = self.position();
        if position.state.is_terminal() {
            // Everything worth keeping is in the persist store by now (or the task was aborted).
            let requeue = self.clean_workspace().await?;
            return match self.task.spec.ttl_seconds_after_finished {
                Some(ttl) if self.workspace_cleaned() => self.expire(ttl).await,
                _ => Ok(requeue),
            };
        }
        if self.task.spec.suspend {
            return self.suspend().await;
        }
        if self.suspended() {
            // Unsuspended: rerun the interrupted work under a new pod name.
            self.status.attempt += 1;
            self.status.step_pod = None;
            self.set_phase(
                Phase::Running,
                format!("{}: resumed after suspend", position.state),
            );
            self.save().await?;
            self.event(
                EventType::Normal,
                "Unsuspended",
                format!("rerunning the work of {}", position.state),
            )
            .await;
        }
        if let Some(not_before) = &self.status.not_before {
            let wait = not_before.0.as_second() - Timestamp::now().as_second();
            if wait > 0 {
                return Ok(Requeue::requeue(Duration::from_secs(wait as u64)));
            }
        }
        if self.status.phase == Some(Phase::Paused) {
            return Ok(Requeue::await_change());
        }
        if self.status.state.is_none() {
            self.enter(None, State::Empty).await?;
        }
        let plan = self.task.spec.plan();
        let mut decision = driver::current(plan, self.position(), self.facts())?;
        // Manager-only work chains through several states in one reconcile; steps end it.
        for _ in 0..64 {
            if let Next::Act(action) = decision.next
                && self.ticket_expiring(action).await
            {
                return self.ticket_expired().await;
            }
            decision = match decision.next {
                Next::Terminal => return self.finish().await,
                Next::Act(Action::Manager(call)) => {
                    let outcome = self.manager_call(call).await?;
                    let after = driver::after(plan, decision.position, self.facts(), outcome)?;
                    self.advance(&after).await?
                }
                Next::Act(Action::Proof(step) | Action::File(step)) => {
                    match self.step(step).await? {
                        None => return Ok(Requeue::await_change()),
                        Some(outcome) => {
                            let after =
                                driver::after(plan, decision.position, self.facts(), outcome)?;
                            self.advance(&after).await?
                        }
                    }
                }
                Next::Enter { event, state } => {
                    self.enter(Some(event), state).await?;
                    driver::current(plan, self.position(), self.facts())?
                }
                Next::Wait(delay) => {
                    if !self.keep_phase {
                        self.set_phase(Phase::Waiting, self.waiting_for());
                    }
                    self.save().await?;
                    return Ok(Requeue::requeue(delay));
                }
                Next::Fail { level, message } => return self.fail(level, message).await,
            };
        }
        Ok(Requeue::requeue(Duration::from_secs(1)))
    }

    /// The task is being deleted: stop it, tell the manager, remove its workspace, then let it go.
    async fn deleted(&mut self) -> Result<Requeue, ReconcileError> {
        if !self.position().state.is_terminal() {
            self.abort("the SealingTask was deleted").await?;
        }
        self.clean_workspace().await?;
        if self.workspace_cleaned() {
            return Ok(Requeue::await_change());
        }
        let waited = self
            .task
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| Timestamp::now().as_second() - t.0.as_second())
            .unwrap_or(0);
        if waited as u64 > CLEANUP_PATIENCE.as_secs() {
            let message = format!(
                "the workspace cleanup did not finish within {}s; its files are left on node {}",
                CLEANUP_PATIENCE.as_secs(),
                self.status.node.as_deref().unwrap_or("?")
            );
            warn!(task = %self.name(), "{message}");
            self.event(EventType::Warning, "WorkspaceLeft", message)
                .await;
            return Ok(Requeue::await_change());
        }
        Err(ReconcileError::CleanupPending {
            task: self.name(),
            message: "waiting for the workspace cleanup pod".into(),
        })
    }

    /// Whether `action` is work that a too-old ticket would waste: PC1, PC2 or the PreCommit.
    async fn ticket_expiring(&self, action: Action) -> bool {
        let uses_ticket = matches!(
            action,
            Action::Proof(StepKind::Pc1 | StepKind::Pc2)
                | Action::Manager(crate::plan::ManagerCall::SubmitPreCommit)
        );
        if !uses_ticket || self.task.spec.plan != PlanKind::Sealer {
            return false;
        }
        let assigned = self
            .status
            .history
            .iter()
            .rev()
            .find(|h| h.state == State::TicketAssigned);
        let Some(assigned) = assigned else {
            return false;
        };
        let elapsed = (Timestamp::now().as_second() - assigned.entered.0.as_second()).max(0);
        if !self
            .ctx
            .settings
            .tickets
            .too_old(Duration::from_secs(elapsed as u64))
        {
            return false;
        }
        if let Action::Manager(call) = action
            && self.status.submitting.as_deref() == Some(<&str>::from(call))
            && let Some(id) = self.sector_id()
        {
            // The operator stopped mid-submission. If the PreCommit reached the manager, a new
            // ticket would seal a different commR that it refuses as Mismatched: carry on (the
            // call then finds the submission). An unanswered question also carries on: the
            // call reports the manager's error.
            return matches!(
                calls::already_submitted(&self.ctx.manager, id, call).await,
                Ok(false)
            );
        }
        true
    }

    async fn ticket_expired(&mut self) -> Result<Requeue, ReconcileError> {
        let state = self.position().state;
        let message = format!(
            "the ticket is too close to expiry for the work left in {state} (policy: {:?})",
            self.ctx.settings.on_ticket_expiry
        );
        self.event(EventType::Warning, "TicketExpiring", message.clone())
            .await;
        match self.ctx.settings.on_ticket_expiry {
            TicketExpiry::Rewind => {
                if let Some(pod) = self.status.step_pod.take() {
                    self.delete_pod(&pod).await;
                }
                if let Some(outputs) = self.status.outputs.as_mut() {
                    outputs.ticket = None;
                }
                self.status.attempt += 1;
                info!(task = %self.name(), %state, "ticket expiring: back to TreeDBuilt for a new one");
                self.enter(None, State::TreeDBuilt).await?;
                Ok(Requeue::requeue(Duration::from_millis(10)))
            }
            TicketExpiry::Abort => {
                self.abort(&message).await?;
                Ok(Requeue::await_change())
            }
        }
    }

    fn workspace_cleaned(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == WORKSPACE_CLEANED && c.status == "True")
    }

    /// Removes the workspace of an aborted task with a pod on its node; the result is the
    /// WorkspaceCleaned condition (False with the reason while it cannot be done).
    async fn clean_workspace(&mut self) -> Result<Requeue, ReconcileError> {
        if self.workspace_cleaned() {
            return Ok(Requeue::await_change());
        }
        let Some(node) = self.status.node.clone() else {
            set_condition(
                &mut self.status.conditions,
                WORKSPACE_CLEANED,
                "True",
                "NoWorkspace",
            );
            self.save().await?;
            self.delete_task_pods().await;
            return Ok(Requeue::await_change());
        };
        let name = format!("{}-cleanup", self.name());
        let Some(pod) = self.pods.get_opt(&name).await? else {
            let profiles = &self.ctx.settings.profiles;
            let profile = profiles.defaults_only(self.ctx.settings.retry_backoff);
            let pod = pods::cleanup_pod(&self.task, &self.status, &name, &profile, profiles, &node);
            self.ctx.metrics.write("pod-create");
            match self.pods.create(&PostParams::default(), &pod).await {
                Ok(_) => info!(task = %self.name(), %node, "removing the workspace"),
                Err(kube::Error::Api(status)) if status.code == 409 => {}
                Err(err) => return Err(err.into()),
            }
            return Ok(Requeue::await_change());
        };
        match pods::exit_code(&pod) {
            Some(0) => {
                set_condition(
                    &mut self.status.conditions,
                    WORKSPACE_CLEANED,
                    "True",
                    "Removed",
                );
                self.save().await?;
                self.delete_task_pods().await;
                self.event(
                    EventType::Normal,
                    WORKSPACE_CLEANED,
                    format!("workspace removed from node {node}"),
                )
                .await;
                Ok(Requeue::await_change())
            }
            Some(code) => {
                set_condition(
                    &mut self.status.conditions,
                    WORKSPACE_CLEANED,
                    "False",
                    "CleanupFailed",
                );
                if let Some(c) = self
                    .status
                    .conditions
                    .iter_mut()
                    .find(|c| c.type_ == WORKSPACE_CLEANED)
                {
                    c.message = format!(
                        "the cleanup pod {name} on {node} exited {code}; retrying in 5 minutes"
                    );
                }
                self.save().await?;
                self.delete_pod(&name).await;
                Ok(Requeue::requeue(Duration::from_secs(300)))
            }
            None => Ok(Requeue::await_change()),
        }
    }

    /// Deletes an ended task once `ttl` seconds have passed since it ended.
    async fn expire(&mut self, ttl: u32) -> Result<Requeue, ReconcileError> {
        let ended = self
            .status
            .history
            .last()
            .map(|h| h.entered.0.as_second())
            .unwrap_or_else(|| Timestamp::now().as_second());
        let left = ended + i64::from(ttl) - Timestamp::now().as_second();
        if left > 0 {
            return Ok(Requeue::requeue(Duration::from_secs(left as u64)));
        }
        // Written first, so the flush after this reconcile has nothing left to write.
        self.save().await?;
        info!(task = %self.name(), ttl, "ttlSecondsAfterFinished passed: deleting the task");
        self.ctx.metrics.write("task-delete");
        match self
            .tasks
            .delete(&self.name(), &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(Requeue::await_change()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(Requeue::await_change()),
            Err(err) => Err(err.into()),
        }
    }

    fn suspended(&self) -> bool {
        self.status.phase == Some(Phase::Paused)
            && self
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == "Paused" && c.reason == SUSPENDED)
    }

    async fn suspend(&mut self) -> Result<Requeue, ReconcileError> {
        if self.suspended() {
            return Ok(Requeue::await_change());
        }
        let state = self.position().state;
        if let Some(pod) = self.status.step_pod.take() {
            self.delete_pod(&pod).await;
        }
        self.ctx.slots.release(&slots::key(&self.task));
        self.set_phase(
            Phase::Paused,
            format!("{state}: suspended (spec.suspend); files kept"),
        );
        set_condition(&mut self.status.conditions, "Paused", "True", SUSPENDED);
        self.save().await?;
        self.event(
            EventType::Normal,
            SUSPENDED,
            format!("suspended in {state}; its running step was stopped"),
        )
        .await;
        Ok(Requeue::await_change())
    }

    /// What the task has established so far, for the resume rules.
    fn available_outputs(&self) -> std::collections::BTreeSet<crate::plan::Output> {
        let plan = self.task.spec.plan();
        let current = self.position().state;
        let mut available: std::collections::BTreeSet<_> = self
            .status
            .history
            .iter()
            .filter(|h| h.state != current)
            .filter_map(|h| plan.state(h.state))
            .flat_map(|s| s.produces.iter().copied())
            .collect();
        // The oldest history may have been trimmed; these outputs are recorded in status.
        if self.status.sector.is_some() || self.task.spec.sector.is_some() {
            available.insert(crate::plan::Output::Sector);
            available.insert(crate::plan::Output::Deals);
        }
        if self
            .status
            .outputs
            .as_ref()
            .is_some_and(|o| o.ticket.is_some())
        {
            available.insert(crate::plan::Output::Ticket);
        }
        available
    }

    /// Applies `spec.resumeState` once, then clears it; `Some` ends this reconcile.
    async fn resume(&mut self, request: Option<&str>) -> Result<Option<Requeue>, ReconcileError> {
        let generation = self.task.metadata.generation;
        let applied = self
            .status
            .last_resume
            .as_ref()
            .is_some_and(|r| r.generation.is_some() && r.generation == generation);
        if applied {
            // Applied before a crash or a conflicting edit; only the clearing is left.
            self.clear_resume_request().await?;
            return Ok(None);
        }
        let current = self.position().state;
        let verdict = crate::plan::validate_resume(
            self.task.spec.plan,
            current,
            request,
            &self.available_outputs(),
        );
        let action = match verdict {
            Ok(action) => action,
            Err(err) => {
                let already = self.status.conditions.iter().any(|c| {
                    c.type_ == RESUME_REJECTED
                        && c.status == "True"
                        && c.observed_generation == generation
                });
                if !already {
                    set_condition(
                        &mut self.status.conditions,
                        RESUME_REJECTED,
                        "True",
                        "InvalidResumeState",
                    );
                    if let Some(c) = self
                        .status
                        .conditions
                        .iter_mut()
                        .find(|c| c.type_ == RESUME_REJECTED)
                    {
                        c.message = err.to_string();
                        c.observed_generation = generation;
                    }
                    self.save().await?;
                    self.event(EventType::Warning, RESUME_REJECTED, err.to_string())
                        .await;
                }
                warn!(task = %self.name(), "resume refused: {err}");
                return Ok(Some(Requeue::await_change()));
            }
        };
        let target = action.target();
        info!(task = %self.name(), from = %current, to = %target, "resume");
        if let Some(pod) = self.status.step_pod.take() {
            self.delete_pod(&pod).await;
        }
        self.status
            .conditions
            .retain(|c| c.type_ != RESUME_REJECTED && c.type_ != "Failed");
        self.status.last_resume = Some(crate::api::ResumeRecord {
            from: current,
            to: target,
            at: now(),
            generation,
        });
        self.status.last_error = None;
        self.status.not_before = None;
        self.status.submitting = None;
        match action {
            crate::plan::ResumeAction::RetryCurrent(_) => {
                self.status.action_index = 0;
                self.status.attempt += 1;
                self.set_phase(
                    Phase::Running,
                    format!("{current}: retrying its work (resume)"),
                );
                self.save().await?;
            }
            crate::plan::ResumeAction::Goto(state) => {
                self.status.attempt += 1;
                let plan = self.task.spec.plan();
                let index = |s: State| plan.states.iter().position(|spec| spec.state == s);
                if index(state) <= index(self.first_workspace_state()) {
                    // Starting the workspace over: the scheduler may pick any node again.
                    self.status.node = None;
                }
                self.enter(None, state).await?;
            }
            crate::plan::ResumeAction::Abort => {
                self.abort(&format!("aborted by spec.resumeState in {current}"))
                    .await?;
            }
        }
        self.event(
            EventType::Normal,
            "Resumed",
            format!("{current} -> {target}"),
        )
        .await;
        self.clear_resume_request().await?;
        Ok(None)
    }

    /// Removes spec.resumeState, guarded by the resourceVersion we know: a newer edit by the user
    /// fails this patch (and is then seen by the next reconcile) instead of being overwritten.
    async fn clear_resume_request(&mut self) -> Result<(), ReconcileError> {
        let patch = json!({
            "metadata": {"resourceVersion": self.resource_version},
            "spec": {"resumeState": null},
        });
        let updated = self
            .tasks
            .patch(&self.name(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        self.ctx.metrics.write("spec");
        self.resource_version = updated.resource_version();
        Ok(())
    }

    /// Tells the manager the task's work will not be done: an unseal hands its request back as
    /// failed (the sector itself is fine); the other plans report the sector aborted.
    async fn report_abort(&self, reason: &str) {
        let Some(id) = self.sector_id() else {
            return;
        };
        let plan = self.task.spec.plan;
        let reported = match (&self.task.spec.unseal, plan) {
            (Some(unseal), PlanKind::Unseal) => {
                let allocated = self
                    .status
                    .outputs
                    .as_ref()
                    .is_some_and(|o| o.committed.is_some());
                if !allocated {
                    return;
                }
                let piece = calls::unseal_piece(unseal);
                let error = format!("aborted: {reason}");
                self.ctx
                    .manager
                    .achieve_unseal_sector(id, &piece, &error)
                    .await
            }
            _ => self.ctx.manager.report_aborted(id, reason).await,
        };
        if let Err(err) = reported {
            warn!(task = %self.name(), %plan, "telling the manager of the abort: {err}");
        }
    }

    /// Ends the task: stops its step, tells the manager, records Aborted.
    async fn abort(&mut self, reason: &str) -> Result<(), ReconcileError> {
        let state = self.position().state;
        if let Some(pod) = self.status.step_pod.take() {
            self.delete_pod(&pod).await;
        }
        self.ctx.slots.release(&slots::key(&self.task));
        self.report_abort(reason).await;
        self.event(
            EventType::Warning,
            "Aborted",
            format!("abort in {state}: {reason}"),
        )
        .await;
        self.enter(None, State::Aborted).await
    }

    /// Records the driver's position after an action; a finished action that leaves the task in
    /// the same state (more actions to do) is saved only if it established something.
    async fn advance(&mut self, decision: &Decision) -> Result<Decision, ReconcileError> {
        if decision.position.state == self.position().state {
            self.status.action_index = decision.position.action as u32;
        }
        // A sector the manager handed out is written at once: forgotten in a crash, it would be
        // allocated again. Everything else a manager call establishes is safe to ask for again,
        // so it is written with the work that follows.
        if self.status.sector != self.written.sector {
            self.save().await?;
        }
        Ok(decision.clone())
    }

    fn waiting_for(&self) -> String {
        let state = self.position().state;
        let plan = self.task.spec.plan();
        let action = plan
            .state(state)
            .and_then(|s| s.actions.get(self.status.action_index as usize))
            .map(|a| a.to_string())
            .unwrap_or_default();
        format!("{state}: waiting on {action}")
    }

    async fn enter(&mut self, event: Option<Event>, state: State) -> Result<(), ReconcileError> {
        let previous = self.status.state;
        let entered = now();
        if let Some(last) = self.status.history.last_mut() {
            last.duration_seconds = Some(entered.0.as_second() - last.entered.0.as_second());
        }
        self.status.history.push(HistoryEntry {
            state,
            entered,
            duration_seconds: None,
        });
        if self.status.history.len() > HISTORY_LIMIT {
            let excess = self.status.history.len() - HISTORY_LIMIT;
            self.status.history.drain(..excess);
        }
        let revisit = self
            .status
            .history
            .iter()
            .rev()
            .skip(1)
            .any(|h| h.state == state);
        self.status.state = Some(state);
        self.status.action_index = 0;
        if revisit {
            // Pod names carry the attempt: a state entered again needs names of its own.
            self.status.attempt += 1;
        }
        self.status.not_before = None;
        self.status.submitting = None;
        if state != State::Aborted {
            // An abort keeps the failure that caused it on record.
            self.status.last_error = None;
        }
        // A finished step's pod stays (its logs with it) until the task ends; see clean_workspace.
        self.status.step_pod = None;
        self.status.avoid_node = None;
        let phase = if state == State::Finished {
            Phase::Finished
        } else if state == State::Aborted {
            Phase::Aborted
        } else {
            Phase::Running
        };
        let message = match self.task.spec.plan().state(state) {
            Some(spec) if !state.is_terminal() => format!("{state}: {}", spec.summary),
            Some(spec) => spec.summary.to_string(),
            None => state.to_string(),
        };
        self.set_phase(phase, message);
        self.ctx.metrics.transitions.inc();
        if let Some(event) = event {
            let from = previous.map(|s| s.to_string()).unwrap_or_default();
            info!(task = %self.name(), %from, %event, to = %state, "transition");
            self.transitions.push((previous, event, state));
            self.report_state(&from, state, event, None);
        } else if state.is_terminal() || previous.is_some() {
            // Resumes, rewinds and aborts: written at once, they have Events of their own.
            self.save().await?;
        }
        Ok(())
    }

    /// Tells the manager about a state change, as damocles-worker does; best effort, off the
    /// reconcile's path.
    fn report_state(&self, from: &str, to: State, event: Event, failure: Option<SectorFailure>) {
        let Some(id) = self.sector_id() else {
            return;
        };
        let manager = self.ctx.manager.clone();
        let report = ReportStateReq {
            worker: WorkerIdentifier {
                instance: self.ctx.settings.instance.clone(),
                location: format!(
                    "{}/{}",
                    self.task.namespace().unwrap_or_default(),
                    self.name()
                ),
            },
            state_change: SectorStateChange {
                prev: from.to_string(),
                next: to.to_string(),
                event: event.to_string(),
            },
            failure,
        };
        tokio::spawn(async move {
            if let Err(err) = manager.report_state(id, &report).await {
                warn!("ReportState: {err}");
            }
        });
    }

    async fn manager_call(
        &mut self,
        call: crate::plan::ManagerCall,
    ) -> Result<Outcome, ReconcileError> {
        if calls::is_submission(call) {
            if self.status.submitting.as_deref() == Some(<&str>::from(call)) {
                // Started before a restart: ask the manager before submitting again.
                if let Some(id) = self.sector_id() {
                    match calls::already_submitted(&self.ctx.manager, id, call).await {
                        Ok(true) => {
                            info!(task = %self.name(), %call, "the manager already has this submission");
                            return Ok(Outcome::Done);
                        }
                        Ok(false) => {}
                        Err(err) => {
                            return Ok(Outcome::Failed {
                                level: err.level(),
                                message: err.to_string(),
                            });
                        }
                    }
                }
            } else {
                self.status.submitting = Some(call.to_string());
                self.save().await?;
            }
        }
        crash_point("before-submit", call);
        let mut status = self.status.clone();
        let outcome = calls::call(
            &self.ctx.manager,
            &self.ctx.settings.calls,
            &self.task,
            &mut status,
            call,
        )
        .await;
        crash_point("after-submit", call);
        if outcome == Outcome::Done {
            self.status = status;
        }
        Ok(outcome)
    }

    /// Runs `step` as a pod; none while it runs (the pod watch wakes us), its outcome when done.
    async fn step(&mut self, step: StepKind) -> Result<Option<Outcome>, ReconcileError> {
        let state = self.position().state;
        let profile = self
            .ctx
            .settings
            .profiles
            .resolve(step, self.ctx.settings.retry_backoff);
        let name = pods::pod_name(&self.name(), state, self.status.attempt);
        let Some(pod) = self.pods.get_opt(&name).await? else {
            if self.status.step_pod.as_deref() == Some(name.as_str())
                && self.status.phase == Some(Phase::Running)
            {
                warn!(task = %self.name(), pod = %name, "the step pod disappeared; starting a new one");
                self.event(
                    EventType::Warning,
                    "StepPodLost",
                    format!("step pod {name} disappeared; starting {step} again"),
                )
                .await;
                return self
                    .restart_step(&name, "its pod disappeared", None)
                    .await
                    .map(|_| None);
            }
            if let Some(cap) = profile.concurrency
                && let Err(full) = self.ctx.slots.take(
                    &slots::key(&self.task),
                    step,
                    cap,
                    self.ctx.cache.state().iter().map(|t| t.as_ref()),
                )
            {
                let state = self.position().state;
                self.set_phase(
                    Phase::Waiting,
                    format!(
                        "{state}: waiting for a {step} slot ({} of {} in use; the {step} profile's concurrency)",
                        full.holders, full.cap
                    ),
                );
                self.save().await?;
                self.keep_phase = true;
                return Ok(Some(Outcome::NotYet(SLOT_RECHECK)));
            }
            return self.start_step(step, &name, &profile).await.map(|_| None);
        };
        let report = pods::report(&pod);
        let bound_to = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        let ran = !matches!(
            report,
            PodReport::Starting { .. }
                | PodReport::Failed {
                    never_ran: true,
                    ..
                }
        );
        // The workspace lives where the first workspace step ran; a pod that never started there
        // wrote nothing, and its replacement may go elsewhere.
        if ran
            && profile.locality == Locality::Workspace
            && self.status.node.is_none()
            && let Some(node) = bound_to.clone()
        {
            self.status.node = Some(node);
        }
        // Should this pod be replaced before it ran, its replacement prefers another node where
        // nothing pins it (see pods::step_pod).
        let avoid = bound_to
            .filter(|_| !ran && (self.status.node.is_none() || profile.locality == Locality::Any));
        if pod.metadata.deletion_timestamp.is_some() && !matches!(report, PodReport::Succeeded(_)) {
            // Deleted by someone else (a person, an eviction, a drained node): the work was
            // interrupted, not failed, so no retry budget is spent.
            warn!(task = %self.name(), pod = %name, "the step pod is being deleted; starting a new one");
            self.event(
                EventType::Warning,
                "StepPodLost",
                format!("step pod {name} was deleted; starting {step} again"),
            )
            .await;
            return self
                .restart_step(&name, "its pod was deleted", avoid)
                .await
                .map(|_| None);
        }
        match report {
            PodReport::Starting { reason } => {
                if let Some(node) = self.pinned_node_gone(&profile).await? {
                    self.delete_pod(&name).await;
                    return Ok(Some(Outcome::Failed {
                        level: FailureLevel::Critical,
                        message: format!(
                            "node {node}, which holds this task's workspace, no longer exists; \
                             its files are gone with it: resume at {} to start over on another node",
                            self.first_workspace_state()
                        ),
                    }));
                }
                let age = pod
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| Timestamp::now().as_second() - t.0.as_second())
                    .unwrap_or(0);
                if age as u64 > profile.start_timeout.as_secs() {
                    self.delete_pod(&name).await;
                    self.restart_step(
                        &name,
                        &format!(
                            "it did not start within {}s: {reason}",
                            profile.start_timeout.as_secs()
                        ),
                        avoid,
                    )
                    .await?;
                    return Ok(None);
                }
                // Most pods start within seconds: say so in status only when one is slow.
                if age as u64 >= SLOW_START.as_secs() {
                    self.set_phase(
                        Phase::Waiting,
                        format!("{state}: {step} pod {name} not started: {reason}"),
                    );
                }
                self.keep_phase = true;
                Ok(Some(Outcome::NotYet(SLOW_START)))
            }
            PodReport::Running => {
                self.set_phase(
                    Phase::Running,
                    format!("{state}: running {step} in pod {name}"),
                );
                self.save().await?;
                Ok(None)
            }
            PodReport::Succeeded(result) => {
                self.ctx.slots.release(&slots::key(&self.task));
                self.absorb(step, &result);
                Ok(Some(Outcome::Done))
            }
            PodReport::Failed {
                never_ran: true,
                message,
                ..
            } => {
                self.delete_pod(&name).await;
                self.restart_step(&name, &message, avoid).await?;
                Ok(None)
            }
            PodReport::Failed { level, message, .. } => {
                self.ctx.slots.release(&slots::key(&self.task));
                Ok(Some(Outcome::Failed { level, message }))
            }
        }
    }

    /// The node this step is pinned to, if that Node object is gone.
    async fn pinned_node_gone(
        &self,
        profile: &profiles::Resolved,
    ) -> Result<Option<String>, ReconcileError> {
        let Some(node) = self.status.node.clone() else {
            return Ok(None);
        };
        if profile.locality != Locality::Workspace {
            return Ok(None);
        }
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(self.ctx.client.clone());
        Ok(nodes.get_opt(&node).await?.is_none().then_some(node))
    }

    /// The first state whose work runs a step: everything from it on lives in the workspace.
    fn first_workspace_state(&self) -> State {
        let plan = self.task.spec.plan();
        plan.states
            .iter()
            .find(|s| s.actions.iter().any(|a| !matches!(a, Action::Manager(_))))
            .map(|s| s.state)
            .unwrap_or(State::Empty)
    }

    /// Starts the step again under the next attempt's pod name without spending its retry budget.
    async fn restart_step(
        &mut self,
        old: &str,
        why: &str,
        avoid: Option<String>,
    ) -> Result<(), ReconcileError> {
        if let Some(node) = &avoid {
            info!(task = %self.name(), pod = %old, %node, "the replacement prefers another node");
        }
        self.status.avoid_node = avoid;
        self.status.attempt += 1;
        self.status.step_pod = None;
        self.set_phase(Phase::Waiting, format!("step pod {old} replaced: {why}"));
        self.save().await
    }

    async fn start_step(
        &mut self,
        step: StepKind,
        name: &str,
        profile: &profiles::Resolved,
    ) -> Result<(), ReconcileError> {
        let request =
            match pods::step_request(&self.task, &self.status, step, &self.ctx.settings.profiles) {
                Ok(request) => request,
                Err(message) => {
                    return self
                        .fail(
                            FailureLevel::Permanent,
                            format!("cannot build the {step} request: {message}"),
                        )
                        .await
                        .map(drop);
                }
            };
        let node = self.status.node.clone();
        let mut profile = profile.clone();
        if node.is_none() && profile.locality == Locality::Workspace {
            // This pod chooses the node every later workspace step is pinned to.
            match self
                .ctx
                .settings
                .profiles
                .workspace_placement(self.task.spec.plan(), self.ctx.settings.retry_backoff)
            {
                Ok(placement) => {
                    profile.node_selector = placement.node_selector;
                    profile.tolerations = placement.tolerations;
                }
                Err(message) => {
                    return self.fail(FailureLevel::Permanent, message).await.map(drop);
                }
            }
        }
        let pod = pods::step_pod(
            &self.task,
            name,
            &request,
            &profile,
            &self.ctx.settings.profiles,
            node.as_deref(),
            self.status.avoid_node.as_deref(),
        );
        self.ctx.metrics.write("pod-create");
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(_) => {
                info!(task = %self.name(), pod = %name, %step, node = ?node, "step pod created")
            }
            // A restarted operator adopts the pod it created before.
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(err) => return Err(err.into()),
        }
        self.status.step_pod = Some(name.to_string());
        let state = self.position().state;
        self.set_phase(
            Phase::Running,
            format!("{state}: running {step} in pod {name}"),
        );
        self.save().await
    }

    /// Deletes every pod of the task in one request: the finished step pods, kept until now for
    /// their logs, and the cleanup pod. (Deleting the task also removes them, by owner reference.)
    async fn delete_task_pods(&self) {
        let Some(uid) = self.task.uid() else {
            return;
        };
        self.ctx.metrics.write("pod-delete");
        let selector = format!("{}={uid}", pods::TASK_UID_LABEL);
        if let Err(err) = self
            .pods
            .delete_collection(
                &DeleteParams::background(),
                &kube::api::ListParams::default().labels(&selector),
            )
            .await
        {
            warn!(task = %self.name(), "cannot delete the task's finished pods: {err}");
        }
    }

    async fn delete_pod(&self, name: &str) {
        self.ctx.metrics.write("pod-delete");
        match self.pods.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(err) => warn!(pod = name, "cannot delete a finished step pod: {err}"),
        }
    }

    /// Takes what a step produced into the task's outputs.
    fn absorb(&mut self, step: StepKind, result: &crate::step::StepResult) {
        let outputs = self.status.outputs.get_or_insert_with(Default::default);
        let produced = &result.outputs;
        if let Some(comm_d) = &produced.comm_d {
            outputs.comm_d = Some(comm_d.clone());
        }
        if let Some(comm_r) = &produced.comm_r {
            outputs.comm_r = Some(comm_r.clone());
        }
        let artifact = |file: &crate::step::FileDigest, data: Option<String>| Artifact {
            location: file.path.display().to_string(),
            sha256: file.sha256.clone(),
            size: file.size,
            data,
        };
        if let Some(file) = produced.file("c1-output") {
            outputs.c1_output = Some(artifact(file, None));
        }
        if let Some(file) = produced.file("proof") {
            outputs.proof = Some(artifact(file, produced.proof.clone()));
        }
        self.ctx
            .metrics
            .step_seconds
            .get_or_create(&metrics::StepLabels {
                step: step.to_string(),
            })
            .observe(result.duration_ms as f64 / 1000.0);
        info!(task = %self.task.name_any(), %step, reused = result.reused, ms = result.duration_ms, "step done");
    }

    async fn fail(
        &mut self,
        level: FailureLevel,
        message: String,
    ) -> Result<Requeue, ReconcileError> {
        let state = self.position().state;
        let attempts = match &self.status.last_error {
            Some(last) if last.state == state => last.attempts + 1,
            _ => 1,
        };
        let policy = match slots::current_step(self.task.spec.plan(), &self.status) {
            Some(step) => {
                self.ctx
                    .settings
                    .profiles
                    .resolve(step, self.ctx.settings.retry_backoff)
                    .retry
            }
            None => driver::RetryPolicy {
                initial_backoff: self.ctx.settings.retry_backoff,
                ..Default::default()
            },
        };
        let decision = driver::on_failure(level, attempts, &policy);
        self.ctx
            .metrics
            .failures
            .get_or_create(&metrics::FailureLabels {
                plan: self.task.spec.plan.to_string(),
                level: level.to_string(),
            })
            .inc();
        self.status.last_error = Some(LastError {
            level,
            state,
            message: message.clone(),
            attempts,
            time: now(),
        });
        warn!(task = %self.name(), %state, %level, attempts, ?decision, "{message}");
        match decision {
            FailureDecision::Retry(delay) => {
                self.ctx.metrics.retries.inc();
                if let Some(pod) = self.status.step_pod.take() {
                    self.delete_pod(&pod).await;
                }
                self.status.attempt += 1;
                self.status.not_before = Some(Time(
                    Timestamp::from_second(Timestamp::now().as_second() + delay.as_secs() as i64)
                        .expect("a valid time"),
                ));
                self.set_phase(
                    Phase::Waiting,
                    format!(
                        "{state}: {level} failure, retry {attempts} in {}s: {message}",
                        delay.as_secs()
                    ),
                );
                self.save().await?;
                self.event(
                    EventType::Warning,
                    "Retrying",
                    format!("{level} failure in {state} (attempt {attempts}): {message}"),
                )
                .await;
                Ok(Requeue::requeue(delay))
            }
            FailureDecision::Pause(level) => {
                if let Some(last) = self.status.last_error.as_mut() {
                    last.level = level;
                }
                set_condition(
                    &mut self.status.conditions,
                    "Failed",
                    "True",
                    &level.to_string(),
                );
                self.set_phase(
                    Phase::Paused,
                    format!("{state}: paused by a {level} failure: {message}; fix the cause and set spec.resumeState"),
                );
                self.save().await?;
                self.event(
                    EventType::Warning,
                    "Paused",
                    format!("{level} failure in {state}: {message}"),
                )
                .await;
                Ok(Requeue::await_change())
            }
            FailureDecision::Abort => {
                self.abort(&message).await?;
                Ok(Requeue::await_change())
            }
        }
    }

    async fn finish(&mut self) -> Result<Requeue, ReconcileError> {
        // Rebuilds and unseals leave the sector's sealing state as it was.
        let sealing = matches!(self.task.spec.plan, PlanKind::Sealer | PlanKind::Snapup);
        if let Some(id) = self.sector_id().filter(|_| sealing)
            && let Err(err) = self.ctx.manager.report_finalized(id).await
        {
            warn!(task = %self.name(), "ReportFinalized: {err}");
        }
        Ok(Requeue::await_change())
    }
}

/// Test hook: `DAMOCLES_OPERATOR_CRASH=before-submit:SubmitProof` (or `after-submit:...`) kills the
/// operator at that point, as a crash or an OOM kill would, so tests can prove a restart neither
/// loses nor repeats a submission.
fn crash_point(point: &str, call: crate::plan::ManagerCall) {
    if !calls::is_submission(call) {
        return;
    }
    if std::env::var("DAMOCLES_OPERATOR_CRASH").ok().as_deref() == Some(&format!("{point}:{call}"))
    {
        warn!("DAMOCLES_OPERATOR_CRASH: dying at {point}:{call}");
        std::process::abort();
    }
}

fn set_condition(conditions: &mut Vec<Condition>, type_: &str, status: &str, reason: &str) {
    if let Some(existing) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if existing.status != status {
            existing.status = status.into();
            existing.last_transition_time = now();
        }
        existing.reason = reason.into();
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: String::new(),
        last_transition_time: now(),
        observed_generation: None,
    });
}
