use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use damocles_operator::api::validate::{parse_manifest, spec_errors};
use damocles_operator::plan::{Plan, PlanKind, render};

/// Kubernetes operator that runs Filecoin sector sealing (sealer, snapup, rebuild and unseal plans)
/// as SealingTask custom resources.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile SealingTasks into step pods and manager calls.
    ///
    /// Uses the in-cluster config or KUBECONFIG. Each task follows its plan (see
    /// docs/state-machines.md): manager-only states are done inline, proof and file steps run as
    /// pods shaped by the step profiles (--profiles), and status.state, phase, conditions, history
    /// and outputs show where every task is. Logs go to stderr (RUST_LOG, default info).
    Run {
        /// Watch only this namespace (default: all namespaces).
        #[arg(long)]
        namespace: Option<String>,
        /// The step profiles YAML (image, node selectors, resources, retries per step kind; see
        /// docs/controller.md). Default: every step runs `damocles-step` with no placement rules.
        #[arg(long)]
        profiles: Option<PathBuf>,
        /// damocles-manager's address: http://HOST:PORT, HOST:PORT or /ip4/ADDR/tcp/PORT.
        #[arg(long)]
        manager: String,
        /// A file holding a bearer token for the manager (e.g. a mounted Secret key), for managers
        /// behind an auth proxy.
        #[arg(long)]
        manager_token_file: Option<PathBuf>,
        /// Timeout of one manager call.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        manager_timeout: std::time::Duration,
        /// How often to ask the manager whether a PreCommit or proof landed.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        poll_interval: std::time::Duration,
        /// First back-off after a temporary failure (doubled per retry) where a profile sets none.
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        retry_backoff: std::time::Duration,
        /// A persist store instance to reserve space in (repeatable; default: any the manager has).
        #[arg(long = "store")]
        stores: Vec<String>,
        /// This replica's name in Events and manager reports (default: $POD_NAME or the host name).
        #[arg(long)]
        instance: Option<String>,
        /// Where to serve /metrics (Prometheus), /healthz and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080")]
        metrics_address: std::net::SocketAddr,
        /// The chain's block time, to tell a ticket's age from wall time.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        block_time: std::time::Duration,
        /// Epochs below the head a ticket is drawn at (SealRandomnessLookback).
        #[arg(long, default_value_t = 900)]
        ticket_lookback: i64,
        /// A PreCommit whose ticket is older than this many epochs is rejected by the chain.
        #[arg(long, default_value_t = 2880 + 900)]
        ticket_max_age: i64,
        /// Treat a ticket as expired this many epochs early, before PC1, PC2 and SubmitPreCommit.
        #[arg(long, default_value_t = 300)]
        ticket_margin: i64,
        /// What to do then: rewind to TreeDBuilt for a new ticket, or abort the task.
        #[arg(long, value_enum, default_value = "rewind")]
        ticket_expiry: damocles_operator::task::TicketExpiry,
        /// Act at once instead of first taking the leader-election Lease. Only for a single
        /// replica: two replicas without leader election would both act on every task.
        #[arg(long)]
        no_leader_election: bool,
        /// The namespace of the leader-election Lease (default: $POD_NAMESPACE, else --namespace,
        /// else "default").
        #[arg(long)]
        leader_election_namespace: Option<String>,
        /// The name of the leader-election Lease; replicas that share it elect one leader.
        #[arg(long, default_value = "damocles-operator")]
        leader_election_lease: String,
        /// Requests per second to the Kubernetes API, on average (client-side limit; reads and
        /// watches count too).
        #[arg(long, default_value_t = 20.0)]
        kube_api_qps: f64,
        /// How many Kubernetes API requests may go at once before the --kube-api-qps pace applies.
        #[arg(long, default_value_t = 30)]
        kube_api_burst: u32,
        /// How long a leader's claim lasts without renewal: the longest a standby waits to take
        /// over from a leader that died (one that shuts down cleanly hands over at once).
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        leader_election_duration: std::time::Duration,
    },
    /// Print the SealingTask CustomResourceDefinition as YAML (what crds/sealingtask.yaml holds).
    ///
    /// Install it with: damocles-operator crd | kubectl apply -f -
    Crd,
    /// Print the task plans (states, transitions, the work of each state).
    Plans {
        /// json: machine-readable states and transitions; markdown: docs/state-machines.md;
        /// dot: a Graphviz graph (render with `dot -Tsvg`).
        #[arg(long, short, value_enum, default_value_t = Format::Markdown)]
        output: Format,
        /// Only this plan (sealer, snapup, rebuild or unseal); all plans when omitted.
        #[arg(long, value_parser = parse_plan)]
        plan: Option<PlanKind>,
    },
    /// Check SealingTask manifests offline: field types, plan and sector size names, and the CRD's
    /// cross-field rules (resumeState against the task's plan, plan-specific inputs, piece sizes).
    /// String formats (CIDs, URLs) are left to the apiserver's schema.
    ///
    /// Exits 0 when every SealingTask is valid, 1 otherwise; other kinds in the files are skipped.
    Validate {
        /// Manifest files (YAML, several documents allowed).
        #[arg(long = "filename", short = 'f', num_args = 1.., required = true)]
        files: Vec<PathBuf>,
    },
    /// TEST ONLY: stand in for kubelet on a test control plane (scripts/test-cluster).
    ///
    /// Registers the given Nodes (labels, capacity incl. nvidia.com/gpu and hugepages-1Gi), keeps
    /// their Leases fresh, and runs every pod the scheduler binds to them as local processes: the
    /// container's command and args (images are not run, only recorded), env, hostPath / emptyDir /
    /// configMap / secret volumes as local directories, with container paths in args and env rewritten
    /// to them, and the termination-message file. Pod deletion kills the process group after the
    /// grace period. Uses KUBECONFIG like kubectl. Stops on SIGINT/SIGTERM. Never use it in production.
    #[cfg(feature = "dev")]
    DevNode {
        /// A node: NAME[,RESOURCE=QUANTITY...][,label:KEY=VALUE...][,pull=fail], e.g.
        /// gpu-0,nvidia.com/gpu=1,hugepages-1Gi=4Gi,label:damocles.io/gpu=true (defaults: cpu=4,
        /// memory=16Gi, pods=110). pull=fail: every image pull there fails, so its pods never
        /// start (for tests). Repeat for several nodes.
        #[arg(long = "node", required = true, value_parser = parse_node)]
        nodes: Vec<damocles_operator::dev::node::NodeSpec>,
        /// Directory for pod files: volumes, logs (<uid>/<container>.log), pid files.
        #[arg(long, default_value = "/tmp/damocles-dev-node")]
        root: PathBuf,
        /// Put hostPath volumes under this directory instead of at their real paths.
        #[arg(long)]
        host_root: Option<PathBuf>,
        /// Delete the Node objects when stopping (otherwise they go NotReady, as with kubelet).
        #[arg(long)]
        remove_nodes_on_exit: bool,
    },
    /// Serve damocles-manager's sealer API over a simulated chain, for tests, the demo and small
    /// setups.
    ///
    /// A chain head advances with wall time (--block-time); AllocateSector hands out increasing
    /// numbers; tickets come from head - lookback; SubmitPreCommit rejects duplicates, mismatches and
    /// expired tickets; PreCommits and proofs land after a delay; WaitSeed waits the challenge delay;
    /// SubmitProof checks the proof with filecoin-proofs (through damocles-step). State survives
    /// restarts in --state. Prints "listening on ADDRESS" first. Admin API: POST /admin/faults
    /// {"SubmitProof": {"failNext": 2, "latencyMs": 500, "forceResult": 4}}, GET /admin/state,
    /// POST /admin/rebuild {"number": 1} (mark a sector's files lost), POST /admin/unseal
    /// {"number": 1, "pieceCid": "baga...", "offset": 0, "size": 2032, "dest": ["file:///out"]}.
    #[cfg(feature = "dev")]
    DevManager {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:1789")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value_t = 1000)]
        miner: u64,
        /// Seal proof type handed out (5: StackedDrg*V1_1 for 2KiB; 10: synthetic).
        #[arg(long, default_value_t = 5)]
        proof_type: i64,
        /// State file (created if missing; kept across restarts).
        #[arg(long, default_value = "dev-manager-state.json")]
        state: PathBuf,
        /// Wall time per epoch, e.g. 100ms, 30s.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        block_time: std::time::Duration,
        #[arg(long, default_value_t = 10_000)]
        start_epoch: i64,
        #[arg(long, default_value_t = 900)]
        ticket_lookback: i64,
        /// A PreCommit with a ticket older than head minus this is rejected.
        #[arg(long, default_value_t = 2880 + 900)]
        ticket_max_age: i64,
        #[arg(long, default_value_t = 3)]
        precommit_landing: i64,
        /// Epochs from PreCommit landing to the seed (PreCommitChallengeDelay).
        #[arg(long, default_value_t = 150)]
        seed_delay: i64,
        #[arg(long, default_value_t = 3)]
        proof_landing: i64,
        /// damocles-step, to verify proofs (default: next to this binary, else on PATH).
        #[arg(long)]
        step_bin: Option<PathBuf>,
        /// A persist store NAME=/PATH that StoreReserveSpace hands out (repeatable; the path as
        /// step pods see it). Default: one store "persist" at /var/lib/damocles/persist.
        #[arg(long = "store", value_parser = damocles_operator::dev::manager::server::parse_store)]
        stores: Vec<damocles_operator::manager::wire::StoreBasicInfo>,
        /// Check that persisted files exist (SubmitPersistedEx returns false and SubmitSnapUpProof
        /// FilesMissed otherwise), reading store paths under this directory (use / when the stores
        /// are local, the dev node's --host-root in tests). Without it nothing is checked.
        #[arg(long)]
        check_files_under: Option<PathBuf>,
    },
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .unwrap_or((text, "s"));
    let value: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 100ms or 30s"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(value)),
        "s" => Ok(std::time::Duration::from_secs(value)),
        "m" => Ok(std::time::Duration::from_secs(value * 60)),
        _ => Err(format!("{text:?}: unit must be ms, s or m")),
    }
}

#[cfg(feature = "dev")]
fn parse_node(text: &str) -> Result<damocles_operator::dev::node::NodeSpec, String> {
    text.parse()
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Markdown,
    Dot,
}

fn parse_plan(name: &str) -> Result<PlanKind, String> {
    PlanKind::parse(name).map_err(|e| e.to_string())
}

fn main() -> Result<ExitCode> {
    match Cli::parse().command {
        Command::Crd => print!("{}", damocles_operator::crd_yaml()),
        Command::Run {
            namespace,
            profiles,
            manager,
            manager_token_file,
            manager_timeout,
            poll_interval,
            retry_backoff,
            stores,
            instance,
            metrics_address,
            block_time,
            ticket_lookback,
            ticket_max_age,
            ticket_margin,
            ticket_expiry,
            no_leader_election,
            leader_election_namespace,
            leader_election_lease,
            leader_election_duration,
            kube_api_qps,
            kube_api_burst,
        } => {
            let profiles = match profiles {
                Some(path) => damocles_operator::task::Profiles::load(&path)?,
                None => Default::default(),
            };
            let token = manager_token_file
                .map(|path| damocles_operator::manager::client::read_token(&path))
                .transpose()?;
            let manager =
                damocles_operator::manager::ManagerClient::new(&manager, token, manager_timeout)?;
            let instance = instance
                .or_else(|| std::env::var("POD_NAME").ok())
                .or_else(|| {
                    std::fs::read_to_string("/proc/sys/kernel/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .unwrap_or_else(|| "damocles-operator".into());
            let duration_seconds = leader_election_duration.as_secs().max(2);
            let leader_election = (!no_leader_election).then(|| {
                damocles_operator::controller::leader::LeaderElection {
                    namespace: leader_election_namespace
                        .or_else(|| std::env::var("POD_NAMESPACE").ok())
                        .or_else(|| namespace.clone())
                        .unwrap_or_else(|| "default".into()),
                    lease: leader_election_lease,
                    duration_seconds,
                    // Renew a third of the way before expiry, as client-go renews at 10 of 15 s.
                    grace_seconds: (duration_seconds / 3).max(1),
                }
            });
            let rules = damocles_operator::task::Rules {
                profiles,
                retry_backoff,
                tickets: damocles_operator::task::TicketRules {
                    lookback: ticket_lookback,
                    max_age: ticket_max_age,
                    margin: ticket_margin,
                    block_time,
                },
                on_ticket_expiry: ticket_expiry,
                poll_interval,
                store_candidates: stores,
                instance,
            };
            let settings = damocles_operator::controller::Settings {
                leader_election,
                api_qps: kube_api_qps,
                api_burst: kube_api_burst,
                namespace,
                rules,
                metrics_address,
            };
            run_operator(manager, settings)?;
        }
        Command::Plans { output, plan } => {
            let plans: Vec<&Plan> = match plan {
                Some(kind) => vec![kind.plan()],
                None => Plan::all().collect(),
            };
            let text = match output {
                Format::Json => render::json(plans),
                Format::Markdown => render::markdown(plans),
                Format::Dot => render::dot(plans),
            };
            print!("{text}");
        }
        Command::Validate { files } => return validate(&files),
        #[cfg(feature = "dev")]
        Command::DevManager {
            listen,
            miner,
            proof_type,
            state,
            block_time,
            start_epoch,
            ticket_lookback,
            ticket_max_age,
            precommit_landing,
            seed_delay,
            proof_landing,
            step_bin,
            mut stores,
            check_files_under,
        } => {
            if stores.is_empty() {
                stores.push(
                    damocles_operator::dev::manager::server::parse_store(
                        "persist=/var/lib/damocles/persist",
                    )
                    .expect("the default store parses"),
                );
            }
            let rules = damocles_operator::dev::manager::chain::ChainRules {
                miner,
                proof_type,
                ticket_lookback,
                ticket_max_age,
                precommit_landing,
                seed_delay,
                proof_landing,
                block_seconds: block_time.as_secs_f64(),
            };
            let step_bin = step_bin.unwrap_or_else(|| {
                let sibling = std::env::current_exe()
                    .ok()
                    .and_then(|p| p.parent().map(|d| d.join("damocles-step")));
                sibling
                    .filter(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from("damocles-step"))
            });
            let config = damocles_operator::dev::manager::DevManagerConfig {
                listen,
                rules,
                block_time,
                start_epoch,
                state_file: state,
                step_bin,
                stores,
                store_check_root: check_files_under,
            };
            dev_manager(config)?;
        }
        #[cfg(feature = "dev")]
        Command::DevNode {
            nodes,
            root,
            host_root,
            remove_nodes_on_exit,
        } => {
            let config = damocles_operator::dev::node::DevNodeConfig {
                nodes,
                root,
                host_root,
                remove_nodes_on_exit,
            };
            dev_node(config)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs `body` with a client for the cluster (in-cluster config or KUBECONFIG) until it returns.
#[cfg(feature = "dev")]
fn with_cluster<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    with_cluster_config(|config| async move {
        let client = kube::Client::try_from(config)
            .context("cannot connect to the cluster (in-cluster config or KUBECONFIG)")?;
        body(client).await
    })
}

/// Runs `body` with the cluster's client configuration (in-cluster config or KUBECONFIG).
fn with_cluster_config<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(kube::Config) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    init_logging();
    damocles_operator::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let config = kube::Config::infer()
            .await
            .context("cannot find the cluster (in-cluster config or KUBECONFIG)")?;
        body(config).await
    })
}

fn run_operator(
    manager: damocles_operator::manager::ManagerClient,
    settings: damocles_operator::controller::Settings,
) -> Result<()> {
    with_cluster_config(|config| {
        damocles_operator::controller::run(config, manager, settings, shutdown_signal())
    })
}

#[cfg(feature = "dev")]
fn dev_node(config: damocles_operator::dev::node::DevNodeConfig) -> Result<()> {
    with_cluster(|client| damocles_operator::dev::node::run(client, config, shutdown_signal()))
}

#[cfg(feature = "dev")]
fn dev_manager(config: damocles_operator::dev::manager::DevManagerConfig) -> Result<()> {
    init_logging();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let (address, server) = damocles_operator::dev::manager::start(config).await?;
        // First line on stdout, for scripts and tests that asked for port 0.
        println!("listening on {address}");
        tokio::select! {
            result = server => result.context("the server task failed")?.context("the server failed")?,
            () = shutdown_signal() => {}
        }
        anyhow::Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("can listen for SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn validate(files: &[PathBuf]) -> Result<ExitCode> {
    let mut invalid = 0;
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let tasks = match parse_manifest(&text) {
            Ok(tasks) => tasks,
            Err(error) => {
                eprintln!("{}: {error}", file.display());
                invalid += 1;
                continue;
            }
        };
        if tasks.is_empty() {
            eprintln!("{}: no SealingTask in this file", file.display());
        }
        for found in tasks {
            let found = match found {
                Ok(found) => found,
                Err(error) => {
                    eprintln!("{}: {error}", file.display());
                    invalid += 1;
                    continue;
                }
            };
            let name = found.task.metadata.name.as_deref().unwrap_or("<unnamed>");
            let errors = spec_errors(&found.task.spec);
            if errors.is_empty() {
                println!(
                    "{}: SealingTask {name} ({} plan) is valid",
                    file.display(),
                    found.task.spec.plan
                );
            } else {
                invalid += 1;
                for error in errors {
                    eprintln!(
                        "{}: document {}: SealingTask {name}: {error}",
                        file.display(),
                        found.document
                    );
                }
            }
        }
    }
    Ok(if invalid == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
