//! The command line: every subcommand's arguments, and how they become the library's settings.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use damocles_operator::controller::{Settings, leader::LeaderElection, ping::WorkerPing};
use damocles_operator::manager::ManagerClient;
use damocles_operator::plan::PlanKind;
use damocles_operator::task::{Profiles, Rules, TicketExpiry, TicketRules};

/// Kubernetes operator that runs Filecoin sector sealing (sealer, snapup, rebuild and unseal plans)
/// as SealingTask custom resources.
#[derive(Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// How log lines on stderr look: text for people, json (one object per line, with the
    /// task and step as fields) for Loki or Elasticsearch. The level comes from RUST_LOG.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the operator: reconcile SealingTasks into step pods and manager calls.
    ///
    /// Uses the in-cluster config or KUBECONFIG. Each task follows its plan (see
    /// docs/state-machines.md): manager-only states are done inline, proof and file steps run as
    /// pods shaped by the step profiles (--profiles), and status.state, phase, conditions, history
    /// and outputs show where every task is. Logs go to stderr (RUST_LOG, default info).
    Run(Box<RunArgs>),
    /// Print the SealingTask and SealingPool CustomResourceDefinitions as YAML (what
    /// crds/sealingtask.yaml and crds/sealingpool.yaml hold).
    ///
    /// Install them with: damocles-operator crd | kubectl apply --server-side -f -
    Crd {
        /// Only this one: sealingtask (crds/sealingtask.yaml) or sealingpool
        /// (crds/sealingpool.yaml).
        #[arg(long, value_enum)]
        kind: Option<CrdKind>,
    },
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
    /// configMap / secret / projected volumes as local directories, with container paths in args and
    /// env rewritten to them, and the termination-message file. A pod's service-account token is
    /// bound to it and reaches the process as KUBECONFIG. Pod deletion kills the process group after
    /// the grace period. Uses KUBECONFIG like kubectl. Stops on SIGINT/SIGTERM. Never use it in
    /// production.
    #[cfg(feature = "dev")]
    DevNode(DevNodeArgs),
    /// Serve damocles-manager's sealer API over a simulated chain, for tests, the demo and small
    /// setups.
    ///
    /// A chain head advances with wall time (--block-time); AllocateSector hands out increasing
    /// numbers; tickets come from head - lookback; SubmitPreCommit rejects duplicates, mismatches and
    /// expired tickets; PreCommits and proofs land after a delay; WaitSeed waits the challenge delay;
    /// SubmitProof checks the proof with filecoin-proofs (through damocles-step) against the CommD
    /// of the sector's deals (zeros for a CC sector). A deal market: POST /admin/deals
    /// {"payloadSize": 1000} adds a deal of random bytes (CommP computed with damocles-step),
    /// which AcquireDeals and AllocateSanpUpSector hand out and GET /piecestore/<cid> serves.
    /// State survives restarts in --state (piece bytes beside it, in <state>.pieces/). Prints
    /// "listening on ADDRESS" first. Admin API: POST /admin/faults {"SubmitProof": {"failNext":
    /// 2, "latencyMs": 500, "forceResult": 4}}, GET /admin/state, POST /admin/rebuild {"number":
    /// 1} (mark a sector's files lost), POST /admin/unseal {"number": 1, "pieceCid": "baga...",
    /// "offset": 0, "size": 2032, "dest": ["file:///out"]}.
    #[cfg(feature = "dev")]
    DevManager(Box<DevManagerArgs>),
    /// Simulate a farm: how many sectors a day it seals with this operator, and what holds it
    /// back.
    ///
    /// Runs the operator's own decisions (task plans, SealingPools, step slots) on a virtual
    /// clock against models of kube-scheduler (selectors, tolerations, cpu/memory/GPU requests,
    /// LeastAllocated), kubelet (pod start, image pull, C2 parameter load), the step processes
    /// (durations, PC1s sharing core complexes, 1 % temporary failures, workspace disk) and the
    /// chain (the dev manager's rules). The farm is run twice: as written, and as an oracle with
    /// no pod start, image pull or parameter load; both are compared with the bottleneck bound
    /// (the fewest sectors a day any one resource allows). Ten days of preset a (10 nodes, 140
    /// sectors in flight) take about 1.5 minutes in a release build. The farm file's fields:
    /// docs/simulate.md; presets: simulate/presets/.
    #[cfg(feature = "dev")]
    Simulate(SimulateArgs),
}

/// `damocles-operator simulate`.
#[cfg(feature = "dev")]
#[derive(Args)]
pub struct SimulateArgs {
    /// A preset (a: 10 nodes, b: 100 nodes + 10 C2 nodes, c: 1,000 nodes) or a farm file
    /// (YAML: nodes, profiles, pools, steps, kubelet, chain).
    #[arg(long, default_value = "a")]
    pub farm: String,
    /// The random seed: the same farm, seed and durations give the same figures.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated time before measuring starts, while the farm fills up (e.g. 72h).
    #[arg(long, default_value = "72h", value_parser = parse_duration)]
    pub warmup: std::time::Duration,
    /// Simulated time measured after the warm-up (e.g. 168h, a week).
    #[arg(long, default_value = "168h", value_parser = parse_duration)]
    pub measure: std::time::Duration,
    /// text: a table; json: every figure, for scripts.
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
    /// Also write an SVG of PC1 and GPU utilisation over time to this file.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Operator flags, as `damocles-operator run` takes them (e.g. "--poll-interval 1min").
    #[arg(long, allow_hyphen_values = true)]
    pub operator_flags: Option<String>,
}

#[cfg(feature = "dev")]
#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

#[cfg(feature = "dev")]
impl SimulateArgs {
    /// The decision rules of `damocles-operator run` with the defaults and --operator-flags.
    pub fn rules(&self) -> Result<Rules> {
        let mut argv = vec![
            "damocles-operator".to_string(),
            "run".into(),
            "--manager".into(),
            "http://simulated:1234".into(),
        ];
        if let Some(flags) = &self.operator_flags {
            argv.extend(flags.split_whitespace().map(String::from));
        }
        let cli = Cli::try_parse_from(argv).context("--operator-flags")?;
        let Command::Run(run) = cli.command else {
            unreachable!("parsed as run")
        };
        if run.profiles.is_some() {
            anyhow::bail!("--operator-flags: the profiles come from the farm file's `profiles`");
        }
        Ok(run.rules(Profiles::default(), "simulated".into()))
    }
}

/// `damocles-operator run`.
#[derive(Args)]
pub struct RunArgs {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// The step profiles YAML (image, node selectors, resources, retries per step kind; see
    /// docs/controller.md). Default: every step runs `damocles-step` with no placement rules.
    #[arg(long)]
    pub profiles: Option<PathBuf>,
    /// damocles-manager's address, in any form damocles-worker takes: http(s)://HOST:PORT,
    /// HOST:PORT or a multiaddr (/ip4/ADDR/tcp/PORT, /ip6, /dns, /dns4, /dns6; /https for TLS).
    #[arg(long)]
    pub manager: String,
    /// A file holding a bearer token for the manager (e.g. a mounted Secret key), for managers
    /// behind an auth proxy.
    #[arg(long)]
    pub manager_token_file: Option<PathBuf>,
    /// Send the manager token over plain http to a manager that is not on this host. Refused
    /// by default: anyone on the path could read it. Use an https:// address instead where the
    /// manager (or a proxy in front of it) serves TLS.
    #[arg(long)]
    pub allow_insecure_token: bool,
    /// Timeout of one manager call.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub manager_timeout: std::time::Duration,
    /// How often to ask the manager whether a PreCommit or proof landed.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub poll_interval: std::time::Duration,
    /// How often to ask the manager, while a step runs, whether it still holds the sector (a
    /// ReportState of the current state, also sent by a reconcile of a task under way when none
    /// went out in the last half of this). A sector aborted at the manager (`damocles-manager
    /// util sealer sectors abort`) stops its task within this long. 0s: report state changes
    /// only, as damocles-worker does.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub manager_heartbeat: std::time::Duration,
    /// The longest wait between tries while the manager does not answer (connection refused,
    /// timeout, HTTP 5xx). Tasks wait in phase Waiting without spending retries; the first try
    /// comes after 5s and each next one after as long as the outage so far, up to this.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub manager_retry_max: std::time::Duration,
    /// First back-off after a temporary failure (doubled per retry) where a profile sets none.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub retry_backoff: std::time::Duration,
    /// A persist store instance to reserve space in (repeatable; default: any the manager has).
    #[arg(long = "store")]
    pub stores: Vec<String>,
    /// This replica's name in Events and manager reports (default: $POD_NAME or the host name).
    #[arg(long)]
    pub instance: Option<String>,
    /// How often the acting replica tells the manager of itself (WorkerPing, every 30s as
    /// damocles-worker), so that `damocles-manager util worker list` lists it under --instance
    /// with its unfinished tasks as threads. 0s: never.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub worker_ping_interval: std::time::Duration,
    /// The Dest the manager's worker list shows for this operator (default: $POD_IP:17890, the
    /// worker admin port, else the instance name with that port).
    #[arg(long)]
    pub worker_dest: Option<String>,
    /// Where to serve /metrics (Prometheus), /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub metrics_address: std::net::SocketAddr,
    /// The chain's block time, to tell a ticket's age from wall time.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub block_time: std::time::Duration,
    /// Epochs below the head a ticket is drawn at (SealRandomnessLookback).
    #[arg(long, default_value_t = 900)]
    pub ticket_lookback: i64,
    /// A PreCommit whose ticket is older than this many epochs is rejected by the chain.
    #[arg(long, default_value_t = 2880 + 900)]
    pub ticket_max_age: i64,
    /// Treat a ticket as expired this many epochs early, before PC1, PC2 and SubmitPreCommit.
    #[arg(long, default_value_t = 300)]
    pub ticket_margin: i64,
    /// What to do then: rewind to TreeDBuilt for a new ticket, or abort the task.
    #[arg(long, value_enum, default_value = "rewind")]
    pub ticket_expiry: TicketExpiryArg,
    /// Act at once instead of first taking the leader-election Lease. Only for a single
    /// replica: two replicas without leader election would both act on every task.
    #[arg(long)]
    pub no_leader_election: bool,
    /// The namespace of the leader-election Lease (default: $POD_NAMESPACE, else --namespace,
    /// else "default").
    #[arg(long)]
    pub leader_election_namespace: Option<String>,
    /// The name of the leader-election Lease; replicas that share it elect one leader.
    #[arg(long, default_value = "damocles-operator")]
    pub leader_election_lease: String,
    /// Requests per second to the Kubernetes API, on average (client-side limit; reads and
    /// watches count too). A step transition costs about two requests (tasks and pods are read
    /// from watch caches), so 100 allows about 50 transitions a second; the apiserver's own
    /// priority and fairness protects it beyond that.
    #[arg(long, default_value_t = 100.0)]
    pub kube_api_qps: f64,
    /// How many Kubernetes API requests may go at once before the --kube-api-qps pace applies.
    #[arg(long, default_value_t = 200)]
    pub kube_api_burst: u32,
    /// How many tasks are reconciled at once; the rest wait their turn in the queue. Each
    /// reconcile in flight holds a copy of its task, so this bounds the operator's memory when
    /// thousands of tasks have work at the same moment (a restart, a burst of finished steps);
    /// a reconcile waiting on a slow manager holds its place until the call times out.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrent_reconciles: u16,
    /// How long a leader's claim lasts without renewal: the longest a standby waits to take
    /// over from a leader that died (one that shuts down cleanly hands over at once).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_election_duration: std::time::Duration,
}

/// `damocles-operator dev-node`.
#[cfg(feature = "dev")]
#[derive(Args)]
pub struct DevNodeArgs {
    /// A node: NAME[,RESOURCE=QUANTITY...][,label:KEY=VALUE...][,pull=fail], e.g.
    /// gpu-0,nvidia.com/gpu=1,hugepages-1Gi=4Gi,label:damocles.io/gpu=true (defaults: cpu=4,
    /// memory=16Gi, pods=110). pull=fail: every image pull there fails, so its pods never
    /// start (for tests). Repeat for several nodes.
    #[arg(long = "node", required = true, value_parser = parse_node)]
    pub nodes: Vec<damocles_operator::dev::node::NodeSpec>,
    /// Directory for pod files: volumes, logs (<uid>/<container>.log), pid files.
    #[arg(long, default_value = "/tmp/damocles-dev-node")]
    pub root: PathBuf,
    /// Put hostPath volumes under this directory instead of at their real paths.
    #[arg(long)]
    pub host_root: Option<PathBuf>,
    /// Delete the Node objects when stopping (otherwise they go NotReady, as with kubelet).
    #[arg(long)]
    pub remove_nodes_on_exit: bool,
    /// An image the registry does not have (repeatable): a pod that uses it stays Pending in
    /// ErrImagePull, then ImagePullBackOff, as kubelet reports it.
    #[arg(long = "missing-image")]
    pub missing_images: Vec<String>,
    /// Benchmarks only: a step pod (one whose container has DAMOCLES_STEP_REQUEST) runs nothing;
    /// it goes Running, then Succeeded at once with a well-formed result for its request (every
    /// commitment, file and proof a step gives). Other pods succeed at once too. Pair with
    /// `dev-manager --unverified-proofs`. The tests never use it: their steps run for real.
    #[arg(long)]
    pub instant_steps: bool,
    /// Benchmarks only, with --instant-steps: how long a step pod stays Running before it
    /// succeeds (a steady load of long steps rather than a flood of instant ones).
    #[arg(long, default_value = "0s", value_parser = parse_duration, requires = "instant_steps")]
    pub instant_step_duration: std::time::Duration,
}

/// `damocles-operator dev-manager`.
#[cfg(feature = "dev")]
#[derive(Args)]
pub struct DevManagerArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:1789")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value_t = 1000)]
    pub miner: u64,
    /// Seal proof type handed out (5: StackedDrg*V1_1 for 2KiB; 10: synthetic).
    #[arg(long, default_value_t = 5)]
    pub proof_type: i64,
    /// State file (created if missing; kept across restarts): a journal, each change appended as
    /// the whole state on one JSON line, rewritten as its last line at start.
    #[arg(long, default_value = "dev-manager-state.json")]
    pub state: PathBuf,
    /// Wall time per epoch, e.g. 100ms, 30s.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub block_time: std::time::Duration,
    #[arg(long, default_value_t = 10_000)]
    pub start_epoch: i64,
    #[arg(long, default_value_t = 900)]
    pub ticket_lookback: i64,
    /// A PreCommit with a ticket older than head minus this is rejected.
    #[arg(long, default_value_t = 2880 + 900)]
    pub ticket_max_age: i64,
    #[arg(long, default_value_t = 3)]
    pub precommit_landing: i64,
    /// Epochs from PreCommit landing to the seed (PreCommitChallengeDelay).
    #[arg(long, default_value_t = 150)]
    pub seed_delay: i64,
    #[arg(long, default_value_t = 3)]
    pub proof_landing: i64,
    /// damocles-step, to verify proofs (default: next to this binary, else on PATH).
    #[arg(long)]
    pub step_bin: Option<PathBuf>,
    /// A persist store NAME=/PATH that StoreReserveSpace hands out (repeatable; the path as
    /// step pods see it). Default: one store "persist" at /var/lib/damocles/persist.
    #[arg(long = "store", value_parser = damocles_operator::dev::manager::server::parse_store)]
    pub stores: Vec<damocles_operator::manager::wire::StoreBasicInfo>,
    /// Check that persisted files exist (SubmitPersistedEx returns false and SubmitSnapUpProof
    /// FilesMissed otherwise), reading store paths under this directory (use / when the stores
    /// are local, the dev node's --host-root in tests). Without it nothing is checked.
    #[arg(long)]
    pub check_files_under: Option<PathBuf>,
    /// The market (droplet) API token this manager plays the market with: GET and PUT
    /// /resource?resource-id=<cid> take only it (as a bearer token), and market:// unseal
    /// destinations get it, with this manager's address, as damocles-manager adds its market's.
    /// Without it market:// destinations are refused, as damocles-manager refuses them without
    /// a market API.
    #[arg(long)]
    pub market_token: Option<String>,
    /// Benchmarks only (with `dev-node --instant-steps`): take every PoRep and snap-up proof as
    /// valid without verifying it. The tests never use it: the proofs they submit are verified.
    #[arg(long)]
    pub unverified_proofs: bool,
    /// fsync the state file before answering each change, so that a crash of the machine (not
    /// only of this process) loses no answered change. Off by default, as in damocles-manager's
    /// badger store (SyncWrites false): each fsync waits for a disk flush, 100 ms and more on a
    /// busy or virtual disk, and every caller of a change waits for its save.
    #[arg(long)]
    pub sync_writes: bool,
}

/// A duration as a farm writes one: jiff's friendly format (`30s`, `1h`, `1h30m`, damocles'
/// own `1min`, `100ms`) or ISO 8601 (`PT1H`); a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(std::time::Duration::from_secs)
            .map_err(|e| format!("{text:?}: {e}"));
    }
    let signed: k8s_openapi::jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 100ms, 30s, 1min or 1h30m: {e}"))?;
    std::time::Duration::try_from(signed)
        .map_err(|_| format!("{text:?}: a duration cannot be negative"))
}

#[cfg(feature = "dev")]
pub fn parse_node(text: &str) -> Result<damocles_operator::dev::node::NodeSpec, String> {
    text.parse()
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CrdKind {
    Sealingtask,
    Sealingpool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Json,
    Markdown,
    Dot,
}

pub fn parse_plan(name: &str) -> Result<PlanKind, String> {
    PlanKind::parse(name).map_err(|e| e.to_string())
}

/// `--ticket-expiry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TicketExpiryArg {
    /// Go back to the state that draws the ticket for a new one (PC1 and PC2 are redone).
    Rewind,
    /// End the task.
    Abort,
}

impl From<TicketExpiryArg> for TicketExpiry {
    fn from(arg: TicketExpiryArg) -> Self {
        match arg {
            TicketExpiryArg::Rewind => TicketExpiry::Rewind,
            TicketExpiryArg::Abort => TicketExpiry::Abort,
        }
    }
}

/// The step profiles file at `path`.
fn load_profiles(path: &std::path::Path) -> Result<Profiles> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the step profiles {}", path.display()))?;
    Profiles::parse(&text)
        .map_err(|message| anyhow::anyhow!("step profiles {}: {message}", path.display()))
}

impl RunArgs {
    /// The decision rules these arguments ask for, with `profiles`, as replica `instance`.
    pub fn rules(&self, profiles: Profiles, instance: String) -> Rules {
        Rules {
            profiles,
            retry_backoff: self.retry_backoff,
            tickets: TicketRules {
                lookback: self.ticket_lookback,
                max_age: self.ticket_max_age,
                margin: self.ticket_margin,
                block_time: self.block_time,
            },
            on_ticket_expiry: self.ticket_expiry.into(),
            poll_interval: self.poll_interval,
            store_candidates: self.stores.clone(),
            instance,
            manager_heartbeat: (!self.manager_heartbeat.is_zero())
                .then_some(self.manager_heartbeat),
            manager_retry_max: self.manager_retry_max,
        }
    }

    /// The manager client and the controller's settings these arguments ask for.
    pub fn into_parts(self) -> Result<(ManagerClient, Settings)> {
        let profiles = match &self.profiles {
            Some(path) => load_profiles(path)?,
            None => Profiles::default(),
        };
        let token = self
            .manager_token_file
            .as_deref()
            .map(damocles_operator::manager::client::read_token)
            .transpose()?;
        if token.is_some()
            && !self.allow_insecure_token
            && let Some(exposed) =
                damocles_operator::manager::client::token_exposure(&self.manager)?
        {
            anyhow::bail!(
                "refusing to send the manager token over plain http to {exposed}: use an https:// \
                 manager address, or pass --allow-insecure-token (chart: \
                 manager.allowInsecureToken) if the network to the manager is trusted"
            );
        }
        let manager = ManagerClient::new(&self.manager, token, self.manager_timeout)?;
        let mut profiles = profiles;
        if profiles.piece_store.is_none() {
            profiles.piece_store = Some(manager.piece_store());
        }
        // Steps reach the manager and its piece store as damocles-worker does, whatever the
        // admin listed; anything else (a market elsewhere, http destinations) must be listed.
        let piece_store = profiles.piece_store.clone().unwrap_or_default();
        profiles.allow_host_of(manager.endpoint());
        profiles.allow_host_of(&piece_store);
        let instance = self
            .instance
            .clone()
            .or_else(|| std::env::var("POD_NAME").ok())
            .or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .ok()
                    .map(|h| h.trim().to_string())
            })
            .unwrap_or_else(|| "damocles-operator".into());
        let worker_ping = (!self.worker_ping_interval.is_zero()).then(|| WorkerPing {
            every: self.worker_ping_interval,
            dest: self.worker_dest.clone().unwrap_or_else(|| {
                let host = std::env::var("POD_IP").unwrap_or_else(|_| instance.clone());
                format!("{host}:17890")
            }),
        });
        let rules = self.rules(profiles, instance);
        let duration_seconds = self.leader_election_duration.as_secs().max(2);
        let leader_election = (!self.no_leader_election).then(|| LeaderElection {
            namespace: self
                .leader_election_namespace
                .or_else(|| std::env::var("POD_NAMESPACE").ok())
                .or_else(|| self.namespace.clone())
                .unwrap_or_else(|| "default".into()),
            lease: self.leader_election_lease,
            duration_seconds,
            // Renew a third of the way before expiry, as client-go renews at 10 of 15 s.
            grace_seconds: (duration_seconds / 3).max(1),
        });
        let settings = Settings {
            namespace: self.namespace,
            rules,
            metrics_address: self.metrics_address,
            leader_election,
            api_qps: self.kube_api_qps,
            api_burst: self.kube_api_burst,
            concurrent_reconciles: self.concurrent_reconciles,
            hooks: Default::default(),
            worker_ping,
        };
        Ok((manager, settings))
    }
}

#[cfg(feature = "dev")]
impl DevNodeArgs {
    pub fn into_config(self) -> damocles_operator::dev::node::DevNodeConfig {
        damocles_operator::dev::node::DevNodeConfig {
            nodes: self.nodes,
            root: self.root,
            host_root: self.host_root,
            remove_nodes_on_exit: self.remove_nodes_on_exit,
            missing_images: self.missing_images,
            instant_steps: self.instant_steps,
            instant_step_duration: self.instant_step_duration,
        }
    }
}

#[cfg(feature = "dev")]
impl DevManagerArgs {
    pub fn into_config(mut self) -> damocles_operator::dev::manager::DevManagerConfig {
        use damocles_operator::dev::manager::{DevManagerConfig, chain::ChainRules, server};
        if self.stores.is_empty() {
            self.stores.push(
                server::parse_store("persist=/var/lib/damocles/persist")
                    .expect("the default store parses"),
            );
        }
        let rules = ChainRules {
            miner: self.miner,
            proof_type: self.proof_type,
            ticket_lookback: self.ticket_lookback,
            ticket_max_age: self.ticket_max_age,
            precommit_landing: self.precommit_landing,
            seed_delay: self.seed_delay,
            proof_landing: self.proof_landing,
            block_seconds: self.block_time.as_secs_f64(),
        };
        let step_bin = self.step_bin.unwrap_or_else(|| {
            let sibling = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.join("damocles-step")));
            sibling
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("damocles-step"))
        });
        DevManagerConfig {
            listen: self.listen,
            rules,
            block_time: self.block_time,
            start_epoch: self.start_epoch,
            state_file: self.state,
            step_bin,
            stores: self.stores,
            store_check_root: self.check_files_under,
            market_token: self.market_token,
            unverified_proofs: self.unverified_proofs,
            sync_writes: self.sync_writes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_duration;

    #[test]
    fn durations_read_as_a_farm_writes_them() {
        for (text, seconds) in [
            ("30s", 30),
            ("30", 30),
            ("0s", 0),
            ("1min", 60),
            ("2m", 120),
            ("1h", 3600),
            ("1h30m", 5400),
            ("1h 30m", 5400),
            ("PT1H", 3600),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(seconds)),
                "{text}"
            );
        }
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        for bad in ["", "soon", "10 parsecs", "-5s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }
}
