//! Prometheus metrics and health endpoints of the operator: `/metrics`, `/healthz`, `/readyz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{
    Histogram, exponential_buckets, exponential_buckets_range,
};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use strum::IntoEnumIterator;

use crate::api::{FailureLevel, SealingTask};
use crate::manager::Method;
use crate::plan::StepKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub plan: String,
    pub phase: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    /// 2KiB .. 64GiB: a 32GiB PC1 and a 2KiB one do not share a histogram.
    pub sector_size: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// `task` or `pool`.
    pub controller: String,
    /// The step of the reconcile that failed (`Observe`, `Apply`, `WriteStatus`, ...).
    pub category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlanLabels {
    pub plan: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub plan: String,
    pub level: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// status, spec, labels, pod-create, pod-delete, event; pool-status, task-create,
    /// task-delete.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The HTTP method: GET, LIST and WATCH are all GET.
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ManagerCallLabels {
    /// The damocles-manager method, without `Venus.`.
    pub method: String,
    /// ok, or what went wrong: unreachable, timeout, http, rpc, malformed, config.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ManagerMethodLabels {
    pub method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub step: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A reconcile that has run this long is stuck (a call that never returns): /healthz then fails,
/// and the kubelet restarts the operator, which is safe at any point. A reconcile that waits on
/// an unavailable manager or a slow pod ends and requeues long before this.
pub const WEDGED_AFTER: Duration = Duration::from_secs(15 * 60);

/// The reconciles in progress (tasks and pools), each with when it started.
#[derive(Default)]
pub struct Reconciling {
    started: Mutex<HashMap<u64, (String, Instant)>>,
    next: AtomicU64,
}

/// One reconcile in progress; it is forgotten when this drops.
pub struct ReconcileGuard<'a> {
    reconciling: &'a Reconciling,
    id: u64,
}

impl Reconciling {
    /// Records that the reconcile of `key` (namespace/name) started now.
    pub fn begin(&self, key: String) -> ReconcileGuard<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.started
            .lock()
            .expect("not poisoned")
            .insert(id, (key, Instant::now()));
        ReconcileGuard {
            reconciling: self,
            id,
        }
    }

    /// The longest-running reconcile in progress and how long it has run.
    pub fn oldest(&self) -> Option<(String, Duration)> {
        let started = self.started.lock().expect("not poisoned");
        started
            .values()
            .min_by_key(|(_, at)| *at)
            .map(|(key, at)| (key.clone(), at.elapsed()))
    }
}

impl Drop for ReconcileGuard<'_> {
    fn drop(&mut self) {
        self.reconciling
            .started
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
    }
}

/// What /healthz answers, given the longest-running reconcile: an error once it is wedged.
pub fn health(oldest: Option<(String, Duration)>) -> Result<(), String> {
    match oldest {
        Some((key, ran)) if ran >= WEDGED_AFTER => Err(format!(
            "the reconcile of {key} has run for {}s (more than {}s): stuck",
            ran.as_secs(),
            WEDGED_AFTER.as_secs()
        )),
        _ => Ok(()),
    }
}

fn step_histogram() -> Histogram {
    // 0.1 s .. 8 h in 20 buckets (each about twice the one before): 2KiB steps take
    // milliseconds, a 32GiB PC1 three hours and a 64GiB one about six.
    Histogram::new(exponential_buckets_range(0.1, 8.0 * 3600.0, 20))
}

fn manager_call_histogram() -> Histogram {
    // 1 ms .. ~60 s: a local manager answers in milliseconds, the client gives up at its timeout.
    Histogram::new(exponential_buckets(0.001, 2.5, 13))
}

pub struct Metrics {
    registry: Registry,
    tasks: Family<TaskLabels, Gauge>,
    pub step_seconds: HistogramFamily<StepLabels>,
    pub failures: Family<FailureLabels, Counter>,
    pub retries: Counter,
    pub transitions: Counter,
    /// Tickets found too old for the work left (the task rewound for a new one, or aborted).
    pub ticket_expirations: Counter,
    /// Tasks that reached Finished, and Aborted, by plan (created at 0 for every plan, so an
    /// alert on no sector finished sees a series from the start).
    pub finished: Family<PlanLabels, Counter>,
    pub aborted: Family<PlanLabels, Counter>,
    /// Reconciles that ended in an error (other than a write conflict, which is retried at once),
    /// by controller (task, pool) and the step that failed.
    reconcile_errors: Family<ErrorLabels, Counter>,
    pub api_writes: Family<WriteLabels, Counter>,
    /// 1 while this replica leads (acts on tasks), 0 while it stands by.
    pub leader: Gauge,
    /// Every request to the Kubernetes API, reads and watches included.
    pub api_requests: Family<RequestLabels, Counter>,
    /// Every damocles-manager call, by method and result.
    pub manager_calls: Family<ManagerCallLabels, Counter>,
    pub manager_call_seconds: HistogramFamily<ManagerMethodLabels>,
    step_queue: Family<QueueLabels, Gauge>,
    /// Reconciles in progress, for /healthz.
    pub reconciling: Reconciling,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("damocles"),
            tasks: Default::default(),
            step_seconds: Family::new_with_constructor(step_histogram as fn() -> Histogram),
            failures: Default::default(),
            retries: Default::default(),
            transitions: Default::default(),
            ticket_expirations: Default::default(),
            finished: Default::default(),
            aborted: Default::default(),
            reconcile_errors: Default::default(),
            api_writes: Default::default(),
            api_requests: Default::default(),
            manager_calls: Default::default(),
            manager_call_seconds: Family::new_with_constructor(
                manager_call_histogram as fn() -> Histogram,
            ),
            step_queue: Default::default(),
            leader: Default::default(),
            reconciling: Reconciling::default(),
        };
        metrics.register();
        metrics.zero_series();
        metrics
    }
}

impl Metrics {
    fn register(&mut self) {
        let registry = &mut self.registry;
        registry.register(
            "tasks",
            "SealingTasks by plan, phase and state",
            self.tasks.clone(),
        );
        registry.register(
            "step_duration_seconds",
            "Wall time of finished steps, as damocles-step measured it",
            self.step_seconds.clone(),
        );
        registry.register(
            "failures",
            "Failures of a state's work by level",
            self.failures.clone(),
        );
        registry.register(
            "retries",
            "Temporary failures retried after a back-off",
            self.retries.clone(),
        );
        registry.register(
            "transitions",
            "State transitions taken",
            self.transitions.clone(),
        );
        registry.register(
            "ticket_expirations",
            "Tickets found too old for the work left before the PreCommit (rewound or aborted)",
            self.ticket_expirations.clone(),
        );
        registry.register(
            "sectors_finished",
            "Tasks that reached Finished, by plan (a sector sealed, upgraded, rebuilt or unsealed)",
            self.finished.clone(),
        );
        registry.register(
            "tasks_aborted",
            "Tasks that reached Aborted, by plan",
            self.aborted.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciles that ended in an error, by controller and the step that failed",
            self.reconcile_errors.clone(),
        );
        registry.register(
            "api_writes",
            "Writes to the Kubernetes API by kind",
            self.api_writes.clone(),
        );
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API by HTTP method (after the client-side rate limit)",
            self.api_requests.clone(),
        );
        registry.register("manager_calls", "Calls to damocles-manager by method and result (ok, unreachable, timeout, http, rpc, malformed, config)", self.manager_calls.clone());
        registry.register(
            "manager_call_duration_seconds",
            "Time from sending a damocles-manager call to its answer or failure",
            self.manager_call_seconds.clone(),
        );
        registry.register(
            "step_queue",
            "Tasks whose next work is a step of this kind and that have no pod for it yet \
             (waiting for a concurrency slot or a retry back-off)",
            self.step_queue.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader-election Lease and acts on tasks, 0 on standby",
            self.leader.clone(),
        );
        registry.register(
            "build",
            "The operator's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
    }

    /// Every series a farm alerts or graphs on exists from the start, at 0: a rate over a
    /// series that does not exist yet is no data, not zero.
    fn zero_series(&self) {
        let errors = super::error::ErrorCategory::iter().map(|c| ("task", <&str>::from(c)));
        let pool_errors =
            super::error::PoolErrorCategory::iter().map(|c| ("pool", <&str>::from(c)));
        for (controller, category) in errors.chain(pool_errors) {
            let _ = self.reconcile_errors.get_or_create(&ErrorLabels {
                controller: controller.into(),
                category: category.into(),
            });
        }
        let (finished, aborted, failures) = (&self.finished, &self.aborted, &self.failures);
        for plan in crate::api::PlanKind::iter() {
            let labels = PlanLabels {
                plan: plan.to_string(),
            };
            let _ = finished.get_or_create(&labels);
            let _ = aborted.get_or_create(&labels);
            for level in [
                FailureLevel::Temporary,
                FailureLevel::Permanent,
                FailureLevel::Critical,
                FailureLevel::Abort,
            ] {
                let _ = failures.get_or_create(&FailureLabels {
                    plan: plan.to_string(),
                    level: level.to_string(),
                });
            }
        }
    }

    /// One damocles-manager call: `error` is what went wrong (a ManagerError kind), None if it
    /// was answered.
    pub fn manager_call(&self, method: Method, error: Option<&str>, took: std::time::Duration) {
        let method = method.to_string();
        self.manager_calls
            .get_or_create(&ManagerCallLabels {
                method: method.clone(),
                result: error.unwrap_or("ok").into(),
            })
            .inc();
        self.manager_call_seconds
            .get_or_create(&ManagerMethodLabels { method })
            .observe(took.as_secs_f64());
    }

    /// A reconcile of `controller` ended in an error of `category`.
    pub fn reconcile_error(&self, controller: &str, category: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                controller: controller.into(),
                category: category.into(),
            })
            .inc();
    }

    pub fn write(&self, kind: &str) {
        self.api_writes
            .get_or_create(&WriteLabels { kind: kind.into() })
            .inc();
    }

    /// The text exposition, with the task gauge counted afresh from the watch cache.
    pub fn render(&self, cache: &super::TaskCache) -> String {
        let tasks: Vec<_> = cache.state();
        let tasks: Vec<&SealingTask> = super::readable(&tasks).collect();
        self.tasks.clear();
        for task in &tasks {
            let status = task.status.clone().unwrap_or_default();
            let labels = TaskLabels {
                plan: task.spec.plan.to_string(),
                phase: status
                    .phase
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "Pending".into()),
                state: status
                    .state
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "Empty".into()),
            };
            self.tasks.get_or_create(&labels).inc();
        }
        self.step_queue.clear();
        for step in StepKind::iter() {
            let _ = self.step_queue.get_or_create(&QueueLabels {
                step: step.to_string(),
            });
        }
        for task in &tasks {
            if let Some(step) = queued_step(task) {
                self.step_queue
                    .get_or_create(&QueueLabels {
                        step: step.to_string(),
                    })
                    .inc();
            }
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// The step a task waits to start: its current work is a step, it has no pod, and it is not
/// paused or done.
fn queued_step(task: &SealingTask) -> Option<crate::plan::StepKind> {
    let status = task.status.as_ref()?;
    if status.step_pod.is_some() || status.phase != Some(crate::api::Phase::Waiting) {
        return None;
    }
    super::slots::current_step(task.spec.plan(), status)
}

#[derive(Clone)]
struct Served {
    metrics: Arc<Metrics>,
    tasks: super::TaskCache,
}

/// Serves the endpoints on `address` until the process ends; `/readyz` is ok once the task
/// cache has synced.
pub async fn serve(
    address: SocketAddr,
    metrics: Arc<Metrics>,
    tasks: super::TaskCache,
) -> anyhow::Result<SocketAddr> {
    let app = Router::new()
        .route(
            "/metrics",
            get(|Extract(served): Extract<Served>| async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    served.metrics.render(&served.tasks),
                )
            }),
        )
        .route(
            "/healthz",
            get(|Extract(served): Extract<Served>| async move {
                match health(served.metrics.reconciling.oldest()) {
                    Ok(()) => (StatusCode::OK, "ok".to_string()),
                    Err(stuck) => (StatusCode::SERVICE_UNAVAILABLE, stuck),
                }
            }),
        )
        .route(
            "/readyz",
            get(|Extract(served): Extract<Served>| async move {
                // A standby replica is healthy and ready to take over; it has no cache to sync.
                if served.metrics.leader.get() == 0 {
                    return (StatusCode::OK, "ok: standby").into_response();
                }
                let synced = tokio::time::timeout(
                    std::time::Duration::from_millis(200),
                    served.tasks.wait_until_ready(),
                )
                .await;
                if matches!(synced, Ok(Ok(()))) {
                    (StatusCode::OK, "ok").into_response()
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "task cache not synced").into_response()
                }
            }),
        )
        .with_state(Served { metrics, tasks });
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} for /metrics"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).await {
            tracing::warn!("metrics server stopped: {err}");
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters a farm alerts on exist at 0 in a fresh operator: a rate over a series that
    /// is not there yet is no data, not zero. (A labelled family without a series has no TYPE
    /// line at all, so each gets its series at the start.)
    #[test]
    fn the_counters_alerts_read_exist_at_zero_from_the_start() {
        let text = Metrics::default().render(&kube::runtime::reflector::store().0);
        for series in [
            r#"damocles_reconcile_errors_total{controller="task",category="WriteStatus"} 0"#,
            r#"damocles_reconcile_errors_total{controller="pool",category="InvalidObject"} 0"#,
            r#"damocles_failures_total{plan="sealer",level="Permanent"} 0"#,
            r#"damocles_sectors_finished_total{plan="unseal"} 0"#,
            r#"damocles_tasks_aborted_total{plan="rebuild"} 0"#,
            "damocles_retries_total 0",
            "damocles_ticket_expirations_total 0",
            r#"damocles_step_queue{step="pc1"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing:\n{text}");
        }
    }

    #[test]
    fn healthz_fails_only_while_a_reconcile_is_stuck() {
        let reconciling = Reconciling::default();
        assert_eq!(health(reconciling.oldest()), Ok(()));
        let running = reconciling.begin("farm/t".into());
        let (key, _) = reconciling.oldest().unwrap();
        assert_eq!(key, "farm/t");
        assert_eq!(health(reconciling.oldest()), Ok(()));
        let stuck = health(Some(("farm/t".into(), WEDGED_AFTER)));
        assert!(stuck.unwrap_err().contains("farm/t has run for 900s"));
        drop(running);
        assert_eq!(reconciling.oldest(), None);
    }
}
