//! The operator at scale (issue 21): N sealer tasks at once on the real control plane
//! (scripts/test-cluster), the dev node in its instant-step mode (a step pod succeeds at once with a
//! well-formed result; benchmarks only) and the dev manager taking proofs unverified. What is
//! measured is the operator and the API server: API requests by verb and resource per sealed sector
//! (the apiserver's own apiserver_request_total, and the operator's damocles_api_writes_total),
//! the latency from a step pod's success to the next step pod of its task (the steps with no chain
//! wait between them), transitions per second, the operator's CPU seconds and peak RSS. To say
//! where a slow step-to-step gap went, it lists the slowest with their task, step pair and wall
//! clock (to find in the logs kept beside the run, with `DAMOCLES_BENCH_LOG=info`), and counts how
//! many of the writes between two steps the apiserver itself took over 100 ms to serve.
//!
//!   scripts/bench-scale                    # 100 and 1000 tasks to the end
//!   scripts/bench-scale 10000 --window 300 # 10000 tasks, measured for 5 minutes
//!   scripts/bench-scale 100 --step-seconds 20 # each step pod Running 20 s: a steady load
//!   scripts/bench-scale 100 --step-seconds 10 --stagger 10 # tasks created over 10 s, not at once
//!
//! Results: docs/benchmarks.md. Never a test: nothing here asserts a time.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use damocles_operator::api::{Phase, SealingTask};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::watcher;

struct Args {
    counts: Vec<usize>,
    /// Stop measuring after this long, ended or not.
    window: Option<Duration>,
    /// The operator's --kube-api-qps (its burst twice that); its default when none.
    qps: Option<u32>,
    /// How long each step pod runs (the dev node's --instant-step-duration); at once when none.
    step_seconds: Option<u64>,
    /// Spread the tasks' creation evenly over this long: with steps of equal length, tasks
    /// created together finish every step together, a burst no farm sees.
    stagger: Duration,
}

fn args() -> Args {
    let mut counts = vec![];
    let mut window = None;
    let mut qps = None;
    let mut step_seconds = None;
    let mut stagger = Duration::ZERO;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--qps" => qps = Some(args.next().and_then(|s| s.parse().ok()).expect("--qps N")),
            "--step-seconds" => {
                step_seconds = Some(
                    args.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--step-seconds SECONDS"),
                )
            }
            "--stagger" => {
                let seconds: u64 = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--stagger SECONDS");
                stagger = Duration::from_secs(seconds);
            }
            "--window" => {
                let seconds: u64 = args
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--window SECONDS");
                window = Some(Duration::from_secs(seconds));
            }
            other => counts.push(
                other
                    .parse()
                    .unwrap_or_else(|_| panic!("not a task count: {other}")),
            ),
        }
    }
    if counts.is_empty() {
        counts = vec![100, 1000];
    }
    Args {
        counts,
        window,
        qps,
        step_seconds,
        stagger,
    }
}

fn main() {
    let args = args();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows = vec![];
    for &count in &args.counts {
        let row = runtime.block_on(run(count, &args));
        eprintln!("{row:#?}");
        eprintln!(
            "slowest step-to-step gaps at {count} tasks:\n  {}",
            row.slowest.join("\n  ")
        );
        rows.push(row);
    }
    println!("{}", table(&rows));
}

#[derive(Debug, Default)]
struct Row {
    tasks: usize,
    finished: usize,
    seconds: f64,
    transitions: f64,
    /// Requests the apiserver counted in the run, by "VERB resource[/subresource]".
    requests: BTreeMap<String, f64>,
    /// Of the operator's writes that move a task on (OPERATOR_WRITES), how many the apiserver
    /// took over 100 ms to serve, of how many.
    served_slowly: BTreeMap<String, (f64, f64)>,
    /// The operator's own count of its writes, by kind.
    operator_writes: BTreeMap<String, f64>,
    latency_ms: Vec<f64>,
    /// The slowest step-to-step gaps, each with its task, step pair and wall-clock time, to find
    /// in the operator's log (`DAMOCLES_BENCH_LOG=info` writes each transition and pod creation).
    slowest: Vec<String>,
    cpu_seconds: f64,
    peak_rss_mb: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// The writes between a step's end and the next step's pod: the status apply, the pod's creation.
const OPERATOR_WRITES: [&str; 2] = ["APPLY sealingtasks/status", "POST pods"];

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| tasks | finished | s | transitions/s | operator writes/sector (apiserver) | \
         writes/sector (operator's metric) | step→step p50 / p99 ms | operator CPU s | peak RSS MB |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let per_sector = |n: f64| n / row.finished.max(1) as f64;
        // The scheduler records one Event per pod it binds; the rest of the Events are ours.
        let scheduler_events = row
            .requests
            .get("POST pods/binding")
            .copied()
            .unwrap_or(0.0);
        let operator_writes: f64 = row
            .requests
            .iter()
            .filter(|(key, _)| operator_write(key))
            .map(|(_, n)| n)
            .sum::<f64>()
            - scheduler_events
            // Pod DELETEs come from the dev node too (kubelet's final delete of a stopped pod):
            // the operator's own (one delete-collection per task) are its metric's.
            + row
                .operator_writes
                .get(r#"{kind="pod-delete"}"#)
                .copied()
                .unwrap_or(0.0);
        let metric_writes: f64 = row.operator_writes.values().sum();
        let mut latency = row.latency_ms.clone();
        latency.sort_by(f64::total_cmp);
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.0} / {:.0} | {:.1} | {:.0} |\n",
            row.tasks,
            row.finished,
            row.seconds,
            row.transitions / row.seconds,
            per_sector(operator_writes),
            per_sector(metric_writes),
            percentile(&latency, 0.5),
            percentile(&latency, 0.99),
            row.cpu_seconds,
            row.peak_rss_mb,
        ));
    }
    out.push_str(
        "\nAPI requests per finished sector, as the apiserver counted them:\n\n| request | ",
    );
    out.push_str(
        &rows
            .iter()
            .map(|r| format!("{} tasks", r.tasks))
            .collect::<Vec<_>>()
            .join(" | "),
    );
    out.push_str(" |\n|---|");
    out.push_str(&"---:|".repeat(rows.len()));
    out.push('\n');
    let keys: std::collections::BTreeSet<&String> =
        rows.iter().flat_map(|r| r.requests.keys()).collect();
    for key in keys {
        out.push_str(&format!("| {key} |"));
        for row in rows {
            let n = row.requests.get(key).copied().unwrap_or(0.0);
            out.push_str(&format!(" {:.2} |", n / row.finished.max(1) as f64));
        }
        out.push('\n');
    }
    out.push_str("\nOf the writes between one step and the next, served by the apiserver in over 100 ms:\n\n");
    for row in rows {
        let slow = row
            .served_slowly
            .iter()
            .map(|(key, (slow, all))| format!("{key} {slow:.0} of {all:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("- {} tasks: {slow}\n", row.tasks));
    }
    out
}

/// The writes that are the operator's: the task's status and patches, its pods' creation, its
/// Events (less the scheduler's, see `table`; its pod deletions are added there from its own
/// metric). Pod status patches and pod DELETEs are the dev node's (kubelet removes a pod it has
/// stopped with a DELETE; the apiserver counts a delete-collection as DELETE too), bindings the
/// scheduler's, the task creations the benchmark's.
fn operator_write(key: &str) -> bool {
    let (verb, resource) = key.split_once(' ').unwrap_or((key, ""));
    match resource {
        "sealingtasks/status" => true,
        "sealingtasks" => verb != "POST" && verb != "GET" && verb != "LIST" && verb != "WATCH",
        "pods" => verb == "POST",
        "events" => verb == "POST" || verb == "PATCH",
        _ => false,
    }
}

/// What the apiserver counted for the resources looked at here, by "VERB resource[/subresource]":
/// its requests (apiserver_request_total, summed over codes and scopes), and of those it timed
/// (apiserver_request_duration_seconds: from receiving a request to answering it; not watches),
/// how many and how many took it over 100 ms.
struct ApiserverCounts {
    requests: BTreeMap<String, f64>,
    timed: BTreeMap<String, f64>,
    within_100ms: BTreeMap<String, f64>,
}

fn apiserver_requests() -> ApiserverCounts {
    let text = support::kubectl(support::cluster(), &["get", "--raw", "/metrics"]);
    ApiserverCounts {
        requests: apiserver_counter(&text, "apiserver_request_total{", None),
        timed: apiserver_counter(&text, "apiserver_request_duration_seconds_count{", None),
        within_100ms: apiserver_counter(
            &text,
            "apiserver_request_duration_seconds_bucket{",
            Some("0.1"),
        ),
    }
}

/// One apiserver counter summed by "VERB resource[/subresource]" (histogram buckets: the one
/// with this `le`).
fn apiserver_counter(text: &str, prefix: &str, le: Option<&str>) -> BTreeMap<String, f64> {
    let mut counts = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with(prefix)) {
        let (labels, value) = line.rsplit_once(' ').unwrap();
        let label = |name: &str| -> String {
            labels
                .split(&format!(",{name}=\""))
                .nth(1)
                .or_else(|| labels.split(&format!("{{{name}=\"")).nth(1))
                .and_then(|rest| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        if le.is_some_and(|le| label("le") != le) {
            continue;
        }
        let mut resource = label("resource");
        let subresource = label("subresource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        if ![
            "sealingtasks",
            "sealingtasks/status",
            "pods",
            "pods/status",
            "pods/binding",
            "events",
            // The operator reads a Node to check a workspace node still exists.
            "nodes",
        ]
        .contains(&resource.as_str())
        {
            continue;
        }
        *counts
            .entry(format!("{} {resource}", label("verb")))
            .or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    counts
}

fn difference(
    after: &BTreeMap<String, f64>,
    before: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(key, n)| (key.clone(), n - before.get(key).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect()
}

/// The operator process's CPU seconds (user + system) and peak RSS in MB, from /proc.
fn process_usage(pid: u32) -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some((ticks / 100.0, hwm_kb / 1024.0))
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn operator_metric(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key[name.len()..].to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn run(count: usize, args: &Args) -> Row {
    let (window, qps) = (args.window, args.qps);
    let step = format!("{}s", args.step_seconds.unwrap_or(0));
    let client = support::client().await;
    let ns = support::namespace(&client, &format!("scale-{count}")).await;
    let label = support::unique("bench");
    let root = std::env::temp_dir().join(&label);
    std::fs::create_dir_all(&root).unwrap();
    let _nodes = support::DevNode::start_args(
        &client,
        &[format!(
            "{label}-node,pods=1000000,cpu=100000,memory=1000Ti,label:damocles-bench={label}"
        )],
        &["--instant-steps", "--instant-step-duration", &step],
    )
    .await;
    let profiles = root.join("profiles.yaml");
    std::fs::write(
        &profiles,
        format!(
            "workspaceRoot: {root}/workspace\nparamsPath: {root}/params\ndefaults:\n  image: damocles-step:bench\n  command: [damocles-step]\n  nodeSelector: {{damocles-bench: {label}}}\n",
            root = root.display()
        ),
    )
    .unwrap();

    let mut manager = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
        .args([
            "dev-manager",
            "--listen",
            "127.0.0.1:0",
            // 200 ms blocks: a ticket stays usable for 12 minutes (3780 epochs); landings and
            // the seed take a second or two.
            "--block-time",
            "200ms",
        ])
        .args([
            "--precommit-landing",
            "2",
            "--seed-delay",
            "5",
            "--proof-landing",
            "2",
        ])
        .arg("--state")
        .arg(root.join("manager.json"))
        .arg("--store")
        .arg(format!("persist={}/persist", root.display()))
        .arg("--unverified-proofs")
        .env(
            "RUST_LOG",
            std::env::var("DAMOCLES_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(std::fs::File::create(root.join("manager.log")).unwrap())
        .stdout(Stdio::piped())
        .spawn()
        .expect("dev-manager starts");
    let address = support::announced_address(&mut manager);
    let _manager = Killed(manager);

    let metrics_address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let log = std::fs::File::create(root.join("operator.log")).unwrap();
    let operator = Command::new(env!("CARGO_BIN_EXE_damocles-operator"))
        .args(["run", "--namespace", &ns.name, "--manager", &address])
        .args(["--poll-interval", "1s", "--retry-backoff", "1s"])
        .args(["--metrics-address", &metrics_address])
        .args(qps.map_or(vec![], |qps| {
            vec![
                "--kube-api-qps".to_string(),
                qps.to_string(),
                "--kube-api-burst".to_string(),
                (2 * qps).to_string(),
            ]
        }))
        .arg("--profiles")
        .arg(&profiles)
        // As the chart's ServiceAccount, with the chart's finalizer policy in the namespace: the
        // writes counted are an installed operator's.
        .env(
            "KUBECONFIG",
            support::chart::chart_service_account(&ns.name),
        )
        .env(
            "RUST_LOG",
            std::env::var("DAMOCLES_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stderr(log)
        .spawn()
        .expect("the operator starts");
    let pid = operator.id();
    let _operator = Killed(operator);
    support::wait_for("the operator ready", Duration::from_secs(60), || async {
        let ready = reqwest::get(format!("http://{metrics_address}/readyz"))
            .await
            .ok()?;
        ready.status().is_success().then_some(())
    })
    .await;

    // Step pods by name: their task, when each was first seen and when seen Succeeded (with the
    // wall clock, to match the operator's log).
    type Seen = BTreeMap<String, (String, Option<Instant>, Option<(Instant, Timestamp)>)>;
    type Sighting<'a> = (&'a str, Option<Instant>, Option<(Instant, Timestamp)>);
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let watch = tokio::spawn({
        let seen = seen.clone();
        async move {
            let stream = watcher(pods, Default::default());
            let mut stream = std::pin::pin!(kube::runtime::WatchStreamExt::applied_objects(stream));
            while let Some(Ok(pod)) = stream.next().await {
                let now = Instant::now();
                let task = pod
                    .labels()
                    .get("damocles.io/task")
                    .cloned()
                    .unwrap_or_default();
                let succeeded =
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded");
                let mut seen = seen.lock().unwrap();
                let entry = seen
                    .entry(pod.name_any())
                    .or_insert((task, Some(now), None));
                if succeeded && entry.2.is_none() {
                    entry.2 = Some((now, Timestamp::now()));
                }
            }
        }
    });

    let before = apiserver_requests();
    let (cpu_before, _) = process_usage(pid).unwrap_or_default();
    let tasks: Api<SealingTask> = Api::namespaced(client.clone(), &ns.name);
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/sealer-2kib.yaml"
    ))
    .unwrap();
    let template: SealingTask = serde_saphyr::from_str(&example).unwrap();
    let started = Instant::now();
    let stagger = args.stagger;
    futures::stream::iter(0..count)
        .map(|index| {
            let mut task = template.clone();
            task.metadata.name = Some(format!("s-{index:05}"));
            let tasks = tasks.clone();
            let at = started + stagger.mul_f64(index as f64 / count as f64);
            async move {
                tokio::time::sleep_until(at.into()).await;
                tasks
                    .create(&PostParams::default(), &task)
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await
        .expect("the tasks created");
    eprintln!(
        "{count} tasks created in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let finished = loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut done = 0;
        let mut paused = 0;
        let mut aborted = 0;
        let mut token: Option<String> = None;
        loop {
            let mut params = ListParams::default().limit(500);
            if let Some(t) = &token {
                params = params.continue_token(t);
            }
            let page = tasks.list(&params).await.unwrap();
            for task in &page.items {
                // Done once its workspace is cleaned: the task's last writes come with that.
                let cleaned = task.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "WorkspaceCleaned" && c.status == "True")
                });
                match task.status.as_ref().and_then(|s| s.phase) {
                    Some(Phase::Finished) if cleaned => done += 1,
                    Some(Phase::Paused) => paused += 1,
                    Some(Phase::Aborted) => aborted += 1,
                    _ => {}
                }
            }
            token = page.metadata.continue_.filter(|t| !t.is_empty());
            if token.is_none() {
                break;
            }
        }
        let elapsed = started.elapsed();
        eprintln!(
            "{count} tasks: {done} finished, {paused} paused, {aborted} aborted after {:.0} s",
            elapsed.as_secs_f64()
        );
        if done + paused + aborted >= count || window.is_some_and(|w| elapsed >= w) {
            break done;
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let (cpu_after, peak_rss_mb) = process_usage(pid).unwrap_or_default();
    let after = apiserver_requests();
    let metrics = reqwest::get(format!("http://{metrics_address}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    watch.abort();

    // Step pod succeeded -> the task's next step pod created, where no chain wait is between.
    // (Pods are named <task>-<state>-<attempt>: the add-piece pod runs in DealsAcquired, with
    // tree-d in it (since 2026-12-02; before, tree-d had a pod of its own in PieceAdded), PC1 in
    // TicketAssigned (after AssignTicket, which the manager answers at once), PC2 in PC1Done, C1
    // in SeedAssigned, C2 in C1Done.)
    let no_wait = [
        ("dealsacquired", "ticketassigned"),
        ("ticketassigned", "pc1done"),
        ("seedassigned", "c1done"),
    ];
    let seen = seen.lock().unwrap();
    let mut by_task: BTreeMap<&str, Vec<Sighting>> = BTreeMap::new();
    for (name, (task, created, succeeded)) in seen.iter() {
        by_task
            .entry(task.as_str())
            .or_default()
            .push((name.as_str(), *created, *succeeded));
    }
    let mut latency_ms = vec![];
    let mut gaps = vec![];
    for (task, pods) in &by_task {
        for (from, to) in no_wait {
            let succeeded = pods
                .iter()
                .find(|(name, ..)| name.contains(&format!("-{from}-")))
                .and_then(|(_, _, succeeded)| *succeeded);
            let created = pods
                .iter()
                .find(|(name, ..)| name.contains(&format!("-{to}-")))
                .and_then(|(_, created, _)| *created);
            if let (Some((succeeded, at)), Some(created)) = (succeeded, created) {
                let ms = created.saturating_duration_since(succeeded).as_secs_f64() * 1000.0;
                latency_ms.push(ms);
                gaps.push((
                    ms,
                    format!("{ms:.0} ms: {task} {from} -> {to}, succeeded seen {at}"),
                ));
            }
        }
    }
    let timed = difference(&after.timed, &before.timed);
    let within = difference(&after.within_100ms, &before.within_100ms);
    let served_slowly = OPERATOR_WRITES
        .iter()
        .map(|&key| {
            let count = |counts: &BTreeMap<String, f64>| counts.get(key).copied().unwrap_or(0.0);
            (
                key.to_string(),
                (count(&timed) - count(&within), count(&timed)),
            )
        })
        .collect();
    gaps.sort_by(|a, b| b.0.total_cmp(&a.0));
    let slowest = gaps.into_iter().take(8).map(|(_, gap)| gap).collect();
    let transitions = operator_metric(&metrics, "damocles_transitions_total")
        .values()
        .sum();
    let operator_writes = operator_metric(&metrics, "damocles_api_writes_total");
    // The logs stay in `root` (operator.log, manager.log); the workspaces go.
    std::fs::remove_dir_all(root.join("workspace")).ok();
    eprintln!("logs: {}", root.display());
    Row {
        tasks: count,
        finished,
        seconds,
        transitions,
        requests: difference(&after.requests, &before.requests),
        served_slowly,
        operator_writes,
        latency_ms,
        slowest,
        cpu_seconds: cpu_after - cpu_before,
        peak_rss_mb,
    }
}
