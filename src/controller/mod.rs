//! The controller: observes each SealingTask (the task, its step pod, its node, the concurrency
//! slots, the manager's answers), asks the task core ([`crate::task::decide`]) what to do, and
//! carries the effects out. No state rule lives here; see docs/architecture.md.

mod apply;
pub mod error;
#[cfg(all(test, feature = "dev"))]
mod executor_tests;
mod heartbeats;
pub mod hooks;
pub mod leader;
mod memory;
pub mod metrics;
mod observe;
mod own_writes;
pub mod ping;
pub mod pods;
mod pool;
pub mod slots;
pub mod throttle;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::api::{SealingPool, SealingTask};
use crate::manager::{Call, Manager, ManagerClient, ManagerError, Reply};
use crate::task::Rules;
use apply::{Ending, TaskRun};
pub use error::Error;

/// Keeps a deleted task until its step is stopped, the manager told and its workspace removed.
pub const FINALIZER: &str = "damocles.io/cleanup";

/// How long a reconcile that found the cache behind the operator's own last write waits at most
/// for that write's watch event (which normally comes within milliseconds and wakes it first).
const OWN_WRITE_EVENT_WAIT: Duration = Duration::from_secs(2);

/// The field manager of every status write.
pub const FIELD_MANAGER: &str = "damocles-operator";

/// The controller's cache of every watched task, readable or not: concurrency slots are counted
/// in it, and one object that cannot be read must not hide the others.
pub type TaskCache = Store<DeserializeGuard<SealingTask>>;

/// The tasks in `cache` that could be read.
pub fn readable(
    cache: &[Arc<DeserializeGuard<SealingTask>>],
) -> impl Iterator<Item = &SealingTask> {
    cache.iter().filter_map(|guard| guard.0.as_ref().ok())
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Watch only this namespace (all when none).
    pub namespace: Option<String>,
    /// What shapes each task's decisions (profiles, retries, tickets, polling, this replica).
    pub rules: Rules,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_address: std::net::SocketAddr,
    /// Act only while holding this Lease (none: act at once, for a single replica).
    pub leader_election: Option<leader::LeaderElection>,
    /// Client-side limit on requests to the Kubernetes API: sustained rate, and how many may go
    /// at once (kube-rs has none of its own; client-go's defaults are 5 and 10).
    pub api_qps: f64,
    pub api_burst: u32,
    /// How many tasks are reconciled at once (kube-runtime's default is no limit: with thousands
    /// of tasks due together, each in-flight reconcile holding copies of its task, memory grew
    /// with the backlog).
    pub concurrent_reconciles: u16,
    /// What a test build does right before and after each effect (none in the product).
    pub hooks: hooks::Hooks,
    /// Tell the manager of this replica while it acts (WorkerPing); none: never.
    pub worker_ping: Option<ping::WorkerPing>,
}

/// The manager client, each call counted and timed in the metrics (by method and result).
pub(crate) struct MeteredManager {
    client: ManagerClient,
    metrics: Arc<metrics::Metrics>,
}

impl Manager for MeteredManager {
    async fn call(&self, call: &Call) -> Result<Reply, ManagerError> {
        let started = std::time::Instant::now();
        let reply = self.client.call(call).await;
        let error = reply.as_ref().err().map(ManagerError::kind);
        self.metrics
            .manager_call(call.method(), error, started.elapsed());
        reply
    }
}

/// Where `kubectl apply` keeps the manifest it last applied (the whole spec, again).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A pod watch event as the pod cache takes it: slimmed, and a finished pod as deleted from the
/// cache (the cache holds unfinished pods only). A pod seen finishing is remembered in
/// `uncached` with its final state, which its task reads instead of asking the apiserver. One
/// being deleted, or gone, is not: its task asks the apiserver, which says whether it is still
/// there (a pod deleted mid-step is lost and its step started again). A finished pod listed after
/// the watch restarted is not remembered either: it still wakes its task, which reads it from the
/// apiserver (a relist may list every finished pod kept for its log).
fn pod_cache_event(
    event: watcher::Event<Pod>,
    uncached: &own_writes::UncachedPods,
) -> watcher::Event<Pod> {
    use watcher::Event;
    let finished = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"))
    };
    let key = |pod: &Pod| format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
    let now = std::time::Instant::now();
    match event {
        Event::Apply(mut pod) if finished(&pod) => {
            pods::slim(&mut pod);
            if pod.metadata.deletion_timestamp.is_some() {
                uncached.forget(&key(&pod));
            } else {
                uncached.finished(key(&pod), pod.clone(), now);
            }
            Event::Delete(pod)
        }
        Event::InitApply(mut pod) if finished(&pod) => {
            pods::slim(&mut pod);
            Event::Delete(pod)
        }
        Event::Apply(mut pod) => {
            uncached.seen(key(&pod), now);
            pods::slim(&mut pod);
            Event::Apply(pod)
        }
        Event::InitApply(mut pod) => {
            uncached.seen(key(&pod), now);
            pods::slim(&mut pod);
            Event::InitApply(pod)
        }
        Event::Delete(mut pod) => {
            uncached.forget(&key(&pod));
            pods::slim(&mut pod);
            Event::Delete(pod)
        }
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

pub(crate) struct Context {
    client: Client,
    cache: TaskCache,
    /// The operator's unfinished pods (step and cleanup pods), slimmed to what it reads of them.
    pod_cache: Store<Pod>,
    own_writes: own_writes::OwnWrites,
    /// Pods just created or just finished, which the pod cache does not hold.
    uncached_pods: Arc<own_writes::UncachedPods>,
    heartbeats: heartbeats::Heartbeats,
    /// Facts about tasks waiting for their next status write.
    memory: memory::Memory,
    slots: slots::Slots,
    events: throttle::EventBudget,
    metrics: Arc<metrics::Metrics>,
    manager: Arc<MeteredManager>,
    settings: Settings,
    recorder: Recorder,
}

impl Context {
    fn new(
        client: Client,
        cache: TaskCache,
        pod_cache: Store<Pod>,
        uncached_pods: Arc<own_writes::UncachedPods>,
        manager: ManagerClient,
        metrics: Arc<metrics::Metrics>,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(settings.rules.instance.clone()),
        };
        Self {
            cache,
            pod_cache,
            own_writes: own_writes::OwnWrites::default(),
            uncached_pods,
            heartbeats: heartbeats::Heartbeats::default(),
            memory: memory::Memory::default(),
            slots: slots::Slots::default(),
            events: throttle::EventBudget::default(),
            recorder: Recorder::new(client.clone(), reporter),
            client,
            manager: Arc::new(MeteredManager {
                client: manager,
                metrics: metrics.clone(),
            }),
            metrics,
            settings,
        }
    }
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

/// Refuses to run against a CRD of another schema (an upgrade that left the old CRD in place
/// would have the apiserver drop fields this operator writes). Without the right to read CRDs
/// (RBAC of an older chart), it says so and goes on. Returns whether SealingPools can be served:
/// without their CRD (installed by an older chart) the operator runs tasks only, and says so.
async fn check_crds(client: &Client) -> anyhow::Result<bool> {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut pools = true;
    for built in [crate::crd(), crate::pool_crd()] {
        let name = built.name_any();
        match crds.get_opt(&name).await {
            Ok(Some(crd)) => {
                let installed = crd
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(crate::CRD_SCHEMA_ANNOTATION))
                    .map(String::as_str);
                crate::check_installed_crd(&built, installed).map_err(anyhow::Error::msg)?;
            }
            Ok(None) if built.spec.names.kind == "SealingPool" => {
                warn!(
                    "the SealingPool CRD is not installed, so pools are off (tasks run as \
                     usual): `damocles-operator crd | kubectl apply --server-side -f -`"
                );
                pools = false;
            }
            Ok(None) => {
                return Err(anyhow::anyhow!(
                    "the SealingTask CRD is not installed: `damocles-operator crd | kubectl \
                     apply --server-side -f -`"
                ));
            }
            Err(err) => {
                warn!(
                    "cannot read the {name} CRD to check its version ({err}); give the \
                     operator `get` on customresourcedefinitions (the chart does)"
                );
            }
        }
    }
    Ok(pools)
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
    let (tasks, pods): (Api<DeserializeGuard<SealingTask>>, Api<Pod>) = match &settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let pools = preflight(&tasks, &client).await?;
    let controller = task_controller(tasks, settings.concurrent_reconciles);
    let uncached_pods = Arc::new(own_writes::UncachedPods::default());
    let (pod_cache, pod_events) = pod_watch(pods, uncached_pods.clone());
    let context = Arc::new(Context::new(
        client,
        controller.store(),
        pod_cache,
        uncached_pods,
        manager,
        metrics.clone(),
        settings,
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
        tokio::select! {
            held = stand_by(&context, election) => leadership = Some(held?),
            _ = shutdown.clone() => return Ok(()),
        }
    }
    info!(namespace = ?context.settings.namespace, pools, "reconciling SealingTasks");
    let election = context.settings.leader_election.clone();
    let pooling = pools.then(|| pool_controller(context.clone(), shutdown.clone()));
    let pinging = ping::run(context.clone());
    let reconciling = controller
        .owns_stream(pod_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, task)) => {
                    debug!(task = %task.name, "reconcile ended early: {err}")
                }
                Err(err) => warn!("controller: {err}"),
                Ok(_) => {}
            }
        });
    let reconciling = futures::future::join(reconciling, async move {
        if let Some(pooling) = pooling {
            pooling.await;
        }
    });
    // The pings never end by themselves: they stop with the reconciles (shutdown, or the Lease
    // lost).
    let reconciling = async move {
        tokio::select! {
            _ = reconciling => {}
            _ = pinging => {}
        }
    };
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

/// Waits until this replica holds the leader-election Lease.
async fn stand_by(
    context: &Context,
    election: &leader::LeaderElection,
) -> anyhow::Result<leader::Leadership> {
    let instance = &context.settings.rules.instance;
    info!(
        lease = %format!("{}/{}", election.namespace, election.lease),
        identity = %instance,
        "standing by until this replica holds the leader-election Lease"
    );
    let held = leader::acquire(context.client.clone(), election, instance).await?;
    context.metrics.leader.set(1);
    info!(identity = %instance, "this replica now leads");
    Ok(held)
}

/// Fails at start, clearly, rather than retrying a watch forever; says whether SealingPools are
/// served too.
async fn preflight(
    tasks: &Api<DeserializeGuard<SealingTask>>,
    client: &Client,
) -> anyhow::Result<bool> {
    // Metadata only: a task that
    // cannot be read is reported on its own, it does not stop the operator.
    tasks
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot list SealingTasks ({e}); is the CRD installed (`damocles-operator crd | kubectl apply -f -`)?"
            )
        })?;
    check_crds(client).await
}

/// The SealingTask controller over a watch of the tasks, reconciling at most `concurrency` at
/// once.
fn task_controller(
    tasks: Api<DeserializeGuard<SealingTask>>,
    concurrency: u16,
) -> Controller<DeserializeGuard<SealingTask>> {
    // The task cache leaves out managed fields (the apiserver's bookkeeping of who wrote what,
    // a kilobyte per task the operator never reads) and the copy of the manifest `kubectl apply`
    // keeps in an annotation.
    let (task_cache, task_cache_writer) = reflector::store();
    let task_events = watcher(tasks, watcher::Config::default())
        .default_backoff()
        .modify(|task: &mut DeserializeGuard<SealingTask>| {
            let metadata = task.meta_mut();
            metadata.managed_fields = None;
            if let Some(annotations) = metadata.annotations.as_mut() {
                annotations.remove(LAST_APPLIED);
            }
        })
        .reflect(task_cache_writer)
        .applied_objects();
    Controller::for_stream(task_events, task_cache)
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
}

/// The watch of the operator's pods: the pod cache, and the stream of pod changes that wakes
/// their tasks.
fn pod_watch(
    pods: Api<Pod>,
    uncached_pods: Arc<own_writes::UncachedPods>,
) -> (
    Store<Pod>,
    impl futures::Stream<Item = Result<Pod, watcher::Error>> + Send + 'static,
) {
    // One watch of the operator's pods both wakes their tasks and fills the cache step pods are
    // read from. The cache holds unfinished pods only, slimmed to what the operator reads: a pod
    // seen finishing leaves it (the event wakes its task, which reads the final state from
    // `uncached_pods`, or from the apiserver a minute later), so it holds about one pod per
    // task, not every finished step pod kept for its log. (A field selector on the phase would
    // keep finished pods out too, but the apiserver sends a pod leaving a selector as deleted
    // with the last content that matched, so each finish would cost a GET.)
    let pod_watch = watcher::Config::default().labels(&format!(
        "{}={}",
        pods::MANAGED_BY.0,
        pods::MANAGED_BY.1
    ));
    let (pod_cache, pod_cache_writer) = reflector::store();
    let pod_events = watcher(pods, pod_watch)
        .default_backoff()
        .map(move |event| event.map(|event| pod_cache_event(event, &uncached_pods)))
        .reflect(pod_cache_writer)
        .touched_objects();
    (pod_cache, pod_events)
}

/// The SealingPool controller: each pool reconciled when it or one of its tasks changes. No
/// debounce: its tasks write their status now and then (a task waiting at the manager once a
/// poll), and a debounce that every such write restarts would keep a pool of busy tasks from
/// ever being reconciled. Triggers that come while a pool's reconcile runs make one more run.
fn pool_controller(
    context: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> impl std::future::Future<Output = ()> + Send {
    let client = context.client.clone();
    let (pools, owned): (
        Api<DeserializeGuard<SealingPool>>,
        Api<DeserializeGuard<SealingTask>>,
    ) = match &context.settings.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    Controller::new(pools, watcher::Config::default())
        .owns(
            owned,
            watcher::Config::default().labels(crate::pool::POOL_LABEL),
        )
        .graceful_shutdown_on(shutdown)
        .run(pool::reconcile, pool::error_policy, context)
        .for_each(|result| async move {
            match result {
                Err(kube::runtime::controller::Error::ReconcilerFailed(err, pool)) => {
                    debug!(pool = %pool.name, "reconcile ended early: {err}")
                }
                Err(err) => warn!("pool controller: {err}"),
                Ok(_) => {}
            }
        })
}

/// An Event the operator publishes, for a task or a pool; events.k8s.io refuses a note over 1 kB.
fn event(warning: bool, reason: &str, note: &str) -> kube::runtime::events::Event {
    use kube::runtime::events::EventType;
    kube::runtime::events::Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(crate::task::status::bounded(note, 1024)),
        action: reason.into(),
        secondary: None,
    }
}

fn error_policy(
    task: Arc<DeserializeGuard<SealingTask>>,
    err: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    let key = format!(
        "{}/{}",
        task.namespace().unwrap_or_default(),
        task.name_any()
    );
    if err.is_conflict() {
        // Someone else wrote the task first: start over from the current object, read from the
        // apiserver, not the cache.
        ctx.own_writes.conflicted(&key);
        debug!(task = %key, "{err}");
        return Requeue::requeue(Duration::from_millis(200));
    }
    ctx.metrics.reconcile_error("task", err.category());
    warn!(task = %key, "{err}");
    if let Error::InvalidObject { .. } = err {
        // Reported with a Warning Event; nothing to do until someone fixes the object.
        return Requeue::await_change();
    }
    // The user sees it on the task too, with the step that failed as the reason.
    if ctx.events.allow(&key, std::time::Instant::now()) {
        let object = task.object_ref(&());
        let note = err.to_string();
        let category = err.category();
        tokio::spawn(async move {
            ctx.metrics.write("event");
            if let Err(publish) = ctx
                .recorder
                .publish(&event(true, category, &note), &object)
                .await
            {
                warn!("cannot record event {category}: {publish}");
            }
        });
    }
    Requeue::requeue(Duration::from_secs(5))
}

#[tracing::instrument(skip_all, fields(task = %format!("{}/{}", guard.namespace().unwrap_or_default(), guard.name_any())))]
async fn reconcile(
    guard: Arc<DeserializeGuard<SealingTask>>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let namespace = guard.namespace().unwrap_or_default();
    let name = guard.name_any();
    let metrics = ctx.metrics.clone();
    let _running = metrics.reconciling.begin(format!("{namespace}/{name}"));
    if let Err(invalid) = &guard.0 {
        let object = guard.object_ref(&());
        let message =
            observe::invalid_object::<SealingTask>(&ctx, &object, &namespace, &name, invalid).await;
        return Err(Error::InvalidObject {
            task: format!("{namespace}/{name}"),
            message,
        });
    }
    let tasks: Api<SealingTask> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{namespace}/{name}");
    let copy = match &guard.0 {
        Ok(cached) => ctx.own_writes.cached_copy(&key, cached),
        Err(_) => own_writes::CachedCopy::Unknown,
    };
    let current = match (&guard.0, copy) {
        (Ok(cached), own_writes::CachedCopy::Current) => cached.clone(),
        // Our last write's watch event reconciles the task again; the requeue is a safety net.
        (_, own_writes::CachedCopy::BehindOwnWrite) => {
            return Ok(Requeue::requeue(OWN_WRITE_EVENT_WAIT));
        }
        // Someone else wrote it at a version we do not know: act on the current object only.
        _ => {
            let Some(fresh) = tasks
                .get_opt(&name)
                .await
                .map_err(|source| Error::observe(&namespace, &name, source))?
            else {
                ctx.own_writes.forget(&key);
                ctx.heartbeats.forget(&key);
                ctx.memory.forget(&key);
                return Ok(Requeue::await_change());
            };
            ctx.own_writes.read_fresh(&key, &fresh);
            fresh
        }
    };
    let deleting = current.metadata.deletion_timestamp.is_some()
        && current.finalizers().iter().any(|f| f == FINALIZER);
    if deleting {
        // Stopped, told and cleaned up before the finalizer goes; a cleanup still running is a
        // normal wait, not an error.
        match TaskRun::new(current.clone(), ctx.clone()).run().await? {
            Ending::Requeue(requeue) => return Ok(requeue),
            Ending::Released => {
                ctx.own_writes.forget(&key);
                ctx.heartbeats.forget(&key);
                ctx.memory.forget(&key);
            }
        }
    }
    // The finalizer's own writes (added on a new task, removed once released) are crash-schedule
    // points too; the reconcile's other writes are inside TaskRun.
    let finalizer_write = match (
        deleting,
        current.finalizers().iter().any(|f| f == FINALIZER),
    ) {
        (true, _) => Some("finalizer-remove"),
        (false, false) if current.metadata.deletion_timestamp.is_none() => Some("finalizer-add"),
        _ => None,
    };
    let (plan, state) = (
        current.spec.plan,
        current.status.as_ref().and_then(|s| s.state),
    );
    let hooks = ctx.settings.hooks.clone();
    if let Some(effect) = finalizer_write {
        hooks.at(false, effect, plan, state);
    }
    let done = finalizer(&tasks, FINALIZER, Arc::new(current), |event| async move {
        match event {
            FinalizerEvent::Apply(task) => match TaskRun::new((*task).clone(), ctx).run().await? {
                Ending::Requeue(requeue) => Ok(requeue),
                Ending::Released => Ok(Requeue::await_change()),
            },
            // The cleanup ran above.
            FinalizerEvent::Cleanup(_) => Ok(Requeue::await_change()),
        }
    })
    .await
    .map_err(|source| Error::Finalizer {
        task: format!("{namespace}/{name}"),
        source: Box::new(source),
    })?;
    if let Some(effect) = finalizer_write {
        hooks.at(true, effect, plan, state);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event;

    fn pod(name: &str, phase: &str, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "namespace": "farm",
                "deletionTimestamp": deleting.then_some("2026-12-01T00:00:00Z"),
                "annotations": {"big": "x"},
            },
            "status": {"phase": phase},
        }))
        .expect("a pod")
    }

    fn name(event: &Event<Pod>) -> Option<(&'static str, String)> {
        match event {
            Event::Apply(p) => Some(("apply", p.name_any())),
            Event::InitApply(p) => Some(("init-apply", p.name_any())),
            Event::Delete(p) => Some(("delete", p.name_any())),
            Event::Init | Event::InitDone => None,
        }
    }

    #[test]
    fn a_finished_pod_leaves_the_cache_and_is_remembered_with_its_final_state() {
        let uncached = own_writes::UncachedPods::default();
        let now = std::time::Instant::now;
        let running = pod_cache_event(Event::Apply(pod("p", "Running", false)), &uncached);
        assert_eq!(name(&running), Some(("apply", "p".into())));
        let Event::Apply(slim) = running else {
            unreachable!()
        };
        assert!(slim.metadata.annotations.is_none(), "slimmed");
        assert!(uncached.get("farm/p", now()).is_none(), "the cache has it");

        let done = pod_cache_event(Event::Apply(pod("p", "Succeeded", false)), &uncached);
        assert_eq!(
            name(&done),
            Some(("delete", "p".into())),
            "out of the cache"
        );
        let remembered = uncached.get("farm/p", now()).expect("remembered");
        assert_eq!(
            remembered.status.as_ref().unwrap().phase.as_deref(),
            Some("Succeeded")
        );
        // Deleted: out of the cache, and its task asks the apiserver whether it is still there.
        let gone = pod_cache_event(Event::Delete(pod("p", "Succeeded", true)), &uncached);
        assert_eq!(name(&gone), Some(("delete", "p".into())));
        assert!(uncached.get("farm/p", now()).is_none());
        // A running pod deleted mid-step, killed: its last Running copy leaves the cache, and
        // its Failed state (the kill, not the step) is not taken for the step's result.
        let killed = pod_cache_event(Event::Apply(pod("q", "Failed", true)), &uncached);
        assert_eq!(name(&killed), Some(("delete", "q".into())));
        assert!(uncached.get("farm/q", now()).is_none());
        // Listed after the watch restarted: a finished pod wakes its task but is not kept.
        let listed = pod_cache_event(Event::InitApply(pod("r", "Failed", false)), &uncached);
        assert_eq!(name(&listed), Some(("delete", "r".into())));
        assert!(uncached.get("farm/r", now()).is_none());
        let listed = pod_cache_event(Event::InitApply(pod("s", "Pending", false)), &uncached);
        assert_eq!(name(&listed), Some(("init-apply", "s".into())));
    }
}
