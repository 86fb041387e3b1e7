//! The controller's executor without a cluster: [`TaskRun`] and [`reconcile`] over a kube client
//! whose service is an apiserver held in memory, and the dev manager over real JSON-RPC. Each
//! test reads the journal of what reached the apiserver and the manager, in order, so a change
//! to the order in which `apply.rs` carries out writes and effects fails here, below the
//! end-to-end tier.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method as HttpMethod, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};

use super::apply::{Ending, TaskRun};
use super::*;
use crate::dev::manager::chain::ChainRules;
use crate::dev::manager::server::{DevManagerConfig, start};
use crate::task::Rules;
use crate::task::reconcile::ADOPTED_RECHECK;

const NAMESPACE: &str = "farm";
const NAME: &str = "t1";
const UID: &str = "5f0c3c1e-0d6e-4a54-9d2b-3c2f00c0ffee";

/// Which object a request is for.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Task,
    TaskStatus,
    Pods,
    Pod(String),
    PodLog(String),
    Node(String),
    Events,
    Other(String),
}

fn route(path: &str) -> Route {
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        [
            "apis",
            "damocles.io",
            "v1alpha1",
            "namespaces",
            _,
            "sealingtasks",
            _,
        ] => Route::Task,
        [
            "apis",
            "damocles.io",
            "v1alpha1",
            "namespaces",
            _,
            "sealingtasks",
            _,
            "status",
        ] => Route::TaskStatus,
        ["api", "v1", "namespaces", _, "pods"] => Route::Pods,
        ["api", "v1", "namespaces", _, "pods", name] => Route::Pod(name.to_string()),
        ["api", "v1", "namespaces", _, "pods", name, "log"] => Route::PodLog(name.to_string()),
        ["api", "v1", "nodes", name] => Route::Node(name.to_string()),
        ["apis", "events.k8s.io", "v1", "namespaces", _, "events", ..] => Route::Events,
        _ => Route::Other(path.to_string()),
    }
}

/// What reached the apiserver or the manager, in the order it arrived.
#[derive(Clone, Debug)]
enum Seen {
    Api {
        method: HttpMethod,
        route: Route,
        body: Value,
        code: u16,
    },
    Manager(String),
}

/// Which requests a fault answers: by method, route and body.
type Matcher = Box<dyn Fn(&HttpMethod, &Route, &Value) -> bool + Send>;

/// An answer the apiserver gives instead of its own to the next request `matches` takes.
struct Fault {
    matches: Matcher,
    code: u16,
}

#[derive(Default)]
struct World {
    task: Value,
    version: u64,
    pods: BTreeMap<String, Value>,
    journal: Vec<Seen>,
    faults: VecDeque<Fault>,
}

type Shared = Arc<Mutex<World>>;

fn status_error(code: u16, reason: &str, message: &str) -> (u16, Value) {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    (code, status)
}

/// One request against the world, as an apiserver answers it: resourceVersion preconditions,
/// AlreadyExists, NotFound.
fn serve(world: &mut World, method: &HttpMethod, route: &Route, body: &Value) -> (u16, Value) {
    if let Some(at) = world
        .faults
        .iter()
        .position(|fault| (fault.matches)(method, route, body))
    {
        let fault = world.faults.remove(at).expect("found");
        return status_error(fault.code, "Injected", "an answer the test asked for");
    }
    let precondition = body["metadata"]["resourceVersion"].as_str();
    let stale = precondition.is_some_and(|v| v != world.version.to_string());
    match (method.as_str(), route) {
        ("GET", Route::Task) => (200, world.task.clone()),
        ("PATCH", Route::TaskStatus | Route::Task) if stale => status_error(
            409,
            "Conflict",
            "the object has been modified; please apply your changes to the latest version",
        ),
        ("PATCH", Route::TaskStatus) => {
            world.task["status"] = body["status"].clone();
            world.bump();
            (200, world.task.clone())
        }
        ("PATCH", Route::Task) => {
            let mut patch = body.clone();
            if let Some(metadata) = patch["metadata"].as_object_mut() {
                metadata.remove("resourceVersion");
            }
            merge_patch(&mut world.task, &patch);
            world.bump();
            (200, world.task.clone())
        }
        ("POST", Route::Pods) => {
            let name = body["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if world.pods.contains_key(&name) {
                return status_error(
                    409,
                    "AlreadyExists",
                    &format!("pods \"{name}\" already exists"),
                );
            }
            let mut pod = body.clone();
            pod["metadata"]["uid"] = json!(format!("pod-{}", world.pods.len()));
            pod["metadata"]["resourceVersion"] = json!("1");
            pod["metadata"]["creationTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now());
            pod["status"] = json!({"phase": "Pending"});
            world.pods.insert(name, pod.clone());
            (201, pod)
        }
        ("GET", Route::Pod(name)) => match world.pods.get(name) {
            Some(pod) => (200, pod.clone()),
            None => status_error(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ("DELETE", Route::Pod(name)) => match world.pods.remove(name) {
            Some(pod) => (200, pod),
            None => status_error(404, "NotFound", &format!("pods \"{name}\" not found")),
        },
        ("GET", Route::Node(name)) => {
            status_error(404, "NotFound", &format!("nodes \"{name}\" not found"))
        }
        ("POST" | "PATCH", Route::Events) => (201, body.clone()),
        _ => status_error(404, "NotFound", "not served by this test apiserver"),
    }
}

/// RFC 7386, as the apiserver applies a merge patch (the issue asks this tier for no new
/// dependency, and the rule is four lines).
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(fields) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let object = target.as_object_mut().expect("an object");
    for (key, value) in fields {
        if value.is_null() {
            object.remove(key);
        } else {
            merge_patch(object.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl World {
    fn bump(&mut self) {
        self.version += 1;
        self.task["metadata"]["resourceVersion"] = json!(self.version.to_string());
    }

    fn api(&self) -> impl Iterator<Item = (&HttpMethod, &Route, &Value, u16)> {
        self.journal.iter().filter_map(|seen| match seen {
            Seen::Api {
                method,
                route,
                body,
                code,
            } => Some((method, route, body, *code)),
            Seen::Manager(_) => None,
        })
    }

    /// Where in the journal the first entry `wanted` takes is.
    fn position(&self, wanted: impl Fn(&Seen) -> bool) -> Option<usize> {
        self.journal.iter().position(wanted)
    }
}

fn is_call(seen: &Seen, method: &str) -> bool {
    matches!(seen, Seen::Manager(m) if m == method)
}

fn is_pod_create(seen: &Seen) -> bool {
    matches!(seen, Seen::Api { method, route: Route::Pods, .. } if method == HttpMethod::POST)
}

fn client(world: Shared) -> Client {
    let service = tower::service_fn(move |request: Request<Body>| {
        let world = world.clone();
        async move {
            let method = request.method().clone();
            let route = route(request.uri().path());
            let bytes = request.into_body().collect_bytes().await?;
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, answer) = {
                let mut world = world.lock().unwrap();
                let (code, answer) = serve(&mut world, &method, &route, &body);
                world.journal.push(Seen::Api {
                    method,
                    route,
                    body,
                    code,
                });
                (code, answer)
            };
            let response = Response::builder()
                .status(StatusCode::from_u16(code).expect("a status code"))
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).expect("json")))
                .expect("a response");
            Ok::<_, kube::Error>(response)
        }
    });
    Client::new(service, NAMESPACE)
}

/// The dev manager over real JSON-RPC, behind a proxy at `listen` that notes each method in the
/// journal.
async fn manager(world: Shared, state: &std::path::Path, listen: SocketAddr) {
    let (address, _server) = start(DevManagerConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        rules: ChainRules::default(),
        block_time: Duration::from_secs(30),
        start_epoch: 20_000,
        state_file: state.join("manager.json"),
        step_bin: state.join("no-damocles-step"),
        stores: Vec::new(),
        store_check_root: None,
        market_token: None,
        unverified_proofs: false,
        sync_writes: false,
    })
    .await
    .expect("the dev manager starts");
    let upstream = format!("http://{address}{}", crate::manager::wire::RPC_PATH);
    crate::install_crypto_provider();
    let http = reqwest::Client::new();
    let proxy = axum::Router::new().route(
        crate::manager::wire::RPC_PATH,
        axum::routing::post(move |body: axum::body::Bytes| {
            let (world, http, upstream) = (world.clone(), http.clone(), upstream.clone());
            async move {
                let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let method = request["method"].as_str().unwrap_or_default();
                let method = method.rsplit('.').next().unwrap_or_default().to_string();
                world.lock().unwrap().journal.push(Seen::Manager(method));
                let answer = http
                    .post(&upstream)
                    .body(body)
                    .send()
                    .await
                    .expect("upstream");
                answer.bytes().await.expect("upstream answer")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, proxy).await });
}

/// An address on this machine where nothing listens (yet): a connection to it is refused.
fn free_address() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

struct Harness {
    world: Shared,
    ctx: Arc<Context>,
    manager_at: SocketAddr,
    dir: tempfile::TempDir,
}

/// A sealer task with `status`, the manager up.
async fn harness(status: Value) -> Harness {
    let harness = harness_of(json!({"plan": "sealer", "sectorSize": "2KiB"}), status);
    harness.start_manager().await;
    harness
}

/// A task of `spec` with `status`; the manager is not started.
fn harness_of(spec: Value, status: Value) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let world: Shared = Arc::default();
    {
        let mut world = world.lock().unwrap();
        world.task = json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingTask",
            "metadata": {
                "name": NAME, "namespace": NAMESPACE, "uid": UID, "generation": 1,
                "finalizers": [FINALIZER], "creationTimestamp": "2026-12-07T00:00:00Z",
            },
            "spec": spec,
            "status": status,
        });
        world.bump();
    }
    let manager_at = free_address();
    let client = client(world.clone());
    let metrics = Arc::new(metrics::Metrics::default());
    let settings = Settings {
        namespace: Some(NAMESPACE.into()),
        rules: Rules::default(),
        metrics_address: SocketAddr::from(([127, 0, 0, 1], 0)),
        leader_election: None,
        api_qps: 1000.0,
        api_burst: 1000,
        concurrent_reconciles: 1,
        hooks: hooks::Hooks::default(),
        worker_ping: None,
    };
    let address = format!("http://{manager_at}");
    let manager = ManagerClient::new(&address, None, Duration::from_secs(10)).unwrap();
    let ctx = Arc::new(Context::new(
        client,
        reflector::store().0,
        reflector::store().0,
        Arc::default(),
        manager,
        metrics,
        settings,
    ));
    Harness {
        world,
        ctx,
        manager_at,
        dir,
    }
}

impl Harness {
    /// Starts the manager (again) where the operator calls it, with the state it had.
    async fn start_manager(&self) {
        manager(self.world.clone(), self.dir.path(), self.manager_at).await;
    }

    /// The task as the apiserver holds it now.
    fn task(&self) -> SealingTask {
        serde_json::from_value(self.world.lock().unwrap().task.clone()).expect("a SealingTask")
    }

    fn fail_next(
        &self,
        code: u16,
        matches: impl Fn(&HttpMethod, &Route, &Value) -> bool + Send + 'static,
    ) {
        let fault = Fault {
            matches: Box::new(matches),
            code,
        };
        self.world.lock().unwrap().faults.push_back(fault);
    }

    /// Someone else (a user's label) writes the task: what the operator read is now stale.
    fn edited_elsewhere(&self) {
        let mut world = self.world.lock().unwrap();
        world.task["metadata"]["labels"] = json!({"farm": "edited"});
        world.bump();
    }

    async fn run(&self, task: SealingTask) -> Result<Ending, Error> {
        TaskRun::new(task, self.ctx.clone()).run().await
    }

    /// Waits (a few seconds at most) for a background call to reach the manager.
    async fn called(&self, method: &str) -> usize {
        for _ in 0..100 {
            if let Some(at) = self.world.lock().unwrap().position(|s| is_call(s, method)) {
                return at;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{method} never reached the manager");
    }

    fn journal(&self) -> Vec<Seen> {
        self.world.lock().unwrap().journal.clone()
    }
}

fn sector_of(body: &Value) -> &Value {
    &body["status"]["sector"]
}

#[tokio::test]
async fn an_allocated_sector_is_written_before_anything_else_leaves_the_operator() {
    let harness = harness(Value::Null).await;
    let ending = harness
        .run(harness.task())
        .await
        .expect("the reconcile runs");
    assert!(matches!(ending, Ending::Requeue(_)));
    let report = harness.called("ReportState").await;
    let journal = harness.journal();
    let allocate = journal
        .iter()
        .position(|s| is_call(s, "AllocateSector"))
        .expect("a sector was allocated");
    let written = journal
        .iter()
        .position(|s| matches!(s, Seen::Api { route: Route::TaskStatus, code: 200, body, .. } if !sector_of(body).is_null()))
        .expect("the sector was written");
    assert!(allocate < written, "{journal:#?}");
    // Nothing goes out between the allocation and its write: no pod, no other call.
    assert_eq!(written, allocate + 1, "{journal:#?}");
    assert!(
        report > written,
        "ReportState before the allocation's write: {journal:#?}"
    );
    let pod = journal.iter().position(is_pod_create).expect("a step pod");
    assert!(pod > written, "{journal:#?}");
}

#[tokio::test]
async fn a_step_pod_is_named_in_the_status_before_it_is_created() {
    let harness = harness(Value::Null).await;
    harness
        .run(harness.task())
        .await
        .expect("the reconcile runs");
    let journal = harness.journal();
    let pod = journal.iter().position(is_pod_create).expect("a step pod");
    let Seen::Api { body: pod_body, .. } = &journal[pod] else {
        unreachable!()
    };
    let name = pod_body["metadata"]["name"].as_str().unwrap();
    let Some(Seen::Api {
        route: Route::TaskStatus,
        code: 200,
        body,
        ..
    }) = journal[..pod]
        .iter()
        .rev()
        .find(|s| matches!(s, Seen::Api { .. }))
    else {
        panic!("the request before the pod's is not a status write: {journal:#?}");
    };
    assert_eq!(body["status"]["stepPod"], json!(name), "{journal:#?}");
    assert_eq!(
        harness.task().status.unwrap().step_pod.as_deref(),
        Some(name)
    );
}

#[tokio::test]
async fn an_allocation_write_refused_as_a_conflict_is_made_again_on_the_current_version() {
    let harness = harness(Value::Null).await;
    let read = harness.task();
    harness.edited_elsewhere();
    harness.run(read).await.expect("the reconcile runs");
    let world = harness.world.lock().unwrap();
    let api: Vec<_> = world
        .api()
        .filter(|(_, route, ..)| !matches!(route, Route::Events))
        .collect();
    assert!(
        matches!(api[0], (_, Route::TaskStatus, body, 409) if !sector_of(body).is_null()),
        "{api:#?}"
    );
    assert!(
        matches!(api[1], (m, Route::Task, _, 200) if m == HttpMethod::GET),
        "{api:#?}"
    );
    assert!(
        matches!(api[2], (_, Route::TaskStatus, body, 200) if !sector_of(body).is_null()),
        "{api:#?}"
    );
    let allocations = world
        .journal
        .iter()
        .filter(|s| is_call(s, "AllocateSector"))
        .count();
    assert_eq!(allocations, 1, "the sector is kept, never asked for again");
}

#[tokio::test]
async fn a_conflict_on_the_write_before_a_pod_ends_the_reconcile_without_the_pod() {
    let harness = harness(Value::Null).await;
    harness
        .run(harness.task())
        .await
        .expect("the first reconcile");
    harness.called("ReportState").await;
    // The step pod is lost (its node drained): the next reconcile makes it again, under a new
    // name, which the status names first. That write is not an allocation's and is not retried.
    let lost: Vec<String> = std::mem::take(&mut harness.world.lock().unwrap().pods)
        .into_keys()
        .collect();
    for pod in lost {
        // As the pod watch forgets a pod it saw deleted.
        harness
            .ctx
            .uncached_pods
            .forget(&format!("{NAMESPACE}/{pod}"));
    }
    let before = harness.journal().len();
    harness.fail_next(409, |method, route, _| {
        method == HttpMethod::PATCH && *route == Route::TaskStatus
    });
    let ended = harness.run(harness.task()).await;
    let journal = harness.journal();
    let later = &journal[before..];
    assert!(
        matches!(&ended, Err(error) if error.is_conflict()),
        "{:?} {later:#?}",
        ended.err()
    );
    assert!(!later.iter().any(is_pod_create), "{later:#?}");
    let writes = later
        .iter()
        .filter(|s| {
            matches!(
                s,
                Seen::Api {
                    route: Route::TaskStatus,
                    ..
                }
            )
        })
        .count();
    assert_eq!(writes, 1, "{later:#?}");
}

#[tokio::test]
async fn a_pod_that_exists_already_is_adopted_and_looked_at_again_soon() {
    let harness = harness(Value::Null).await;
    harness.fail_next(409, |method, route, _| {
        method == HttpMethod::POST && *route == Route::Pods
    });
    let ending = harness
        .run(harness.task())
        .await
        .expect("adopted, not an error");
    let Ending::Requeue(requeue) = ending else {
        panic!("the task is not released")
    };
    assert_eq!(requeue, Requeue::requeue(ADOPTED_RECHECK));
}

#[tokio::test]
async fn a_pod_the_apiserver_refuses_is_a_failed_step_the_task_hears_of() {
    for (code, permanent) in [(422, true), (403, false)] {
        let harness = harness(Value::Null).await;
        harness.fail_next(code, |method, route, _| {
            method == HttpMethod::POST && *route == Route::Pods
        });
        harness
            .run(harness.task())
            .await
            .expect("a failed step, not an error");
        let status = harness.task().status.unwrap();
        let message = status.message.clone().unwrap_or_default();
        assert!(
            message.contains("the apiserver refused step pod"),
            "{code}: {message} {:#?}",
            harness.journal()
        );
        assert_eq!(
            status.phase == Some(crate::api::Phase::Paused),
            permanent,
            "{code}: {status:?}"
        );
        let world = harness.world.lock().unwrap();
        assert!(world.pods.is_empty(), "{code}");
    }
}

#[tokio::test]
async fn a_cached_copy_behind_our_own_write_waits_for_that_write_s_event() {
    let harness = harness(Value::Null).await;
    let cached = harness.task();
    let key = format!("{NAMESPACE}/{NAME}");
    let ahead = (harness.world.lock().unwrap().version + 1).to_string();
    harness.ctx.own_writes.wrote(&key, Some(UID), Some(&ahead));
    let requeue = reconcile(Arc::new(DeserializeGuard(Ok(cached))), harness.ctx.clone())
        .await
        .expect("waits");
    assert_eq!(requeue, Requeue::requeue(OWN_WRITE_EVENT_WAIT));
    assert!(harness.journal().is_empty(), "{:#?}", harness.journal());
}

#[tokio::test]
async fn a_task_whose_write_conflicted_is_read_fresh_and_acted_on_as_read() {
    let harness = harness(Value::Null).await;
    let stale = harness.task();
    // The apiserver holds what the cache does not: the sector was allocated and written.
    harness
        .run(harness.task())
        .await
        .expect("the first reconcile");
    harness.called("ReportState").await;
    let allocated = harness.task();
    let before = harness.journal().len();
    harness
        .ctx
        .own_writes
        .conflicted(&format!("{NAMESPACE}/{NAME}"));
    reconcile(Arc::new(DeserializeGuard(Ok(stale))), harness.ctx.clone())
        .await
        .expect("the second reconcile");
    let journal = harness.journal();
    let later = &journal[before..];
    assert!(
        matches!(&later[0], Seen::Api { method, route: Route::Task, .. } if method == HttpMethod::GET),
        "{later:#?}"
    );
    assert!(
        !later.iter().any(|s| is_call(s, "AllocateSector")),
        "{later:#?}"
    );
    assert_eq!(
        harness.task().status.unwrap().sector,
        allocated.status.unwrap().sector
    );
}

#[tokio::test]
async fn a_one_time_allocation_refused_by_a_restarting_manager_waits_and_asks_again() {
    for plan in ["snapup", "rebuild", "unseal"] {
        let harness = harness_of(json!({"plan": plan, "sectorSize": "2KiB"}), Value::Null);
        harness
            .run(harness.task())
            .await
            .expect("an outage is no error");
        let status = harness.task().status.unwrap();
        assert_eq!(
            status.phase,
            Some(crate::api::Phase::Waiting),
            "{plan}: {status:?}"
        );
        assert_eq!(
            status.allocating, None,
            "{plan}: the call never reached the manager"
        );
        let message = status.message.unwrap_or_default();
        assert!(
            message.contains("connection refused") || message.contains("cannot reach"),
            "{plan}: {message}"
        );

        // The manager is back; the outage's back-off has passed.
        harness.start_manager().await;
        {
            let mut world = harness.world.lock().unwrap();
            world.task["status"]["notBefore"] = json!("2026-01-01T00:00:00Z");
        }
        harness.run(harness.task()).await.expect("the next try");
        let status = harness.task().status.unwrap();
        assert_ne!(
            status.phase,
            Some(crate::api::Phase::Paused),
            "{plan}: {status:?}"
        );
        let journal = harness.journal();
        let allocations = journal
            .iter()
            .filter(|s| matches!(s, Seen::Manager(m) if m.starts_with("Allocate")))
            .count();
        assert_eq!(
            allocations, 1,
            "{plan}: asked once the manager is back: {journal:#?}"
        );
    }
}
