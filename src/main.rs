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
    DevNode {
        /// A node: NAME[,RESOURCE=QUANTITY...][,label:KEY=VALUE...], e.g.
        /// gpu-0,nvidia.com/gpu=1,hugepages-1Gi=4Gi,label:damocles.io/gpu=true (defaults: cpu=4,
        /// memory=16Gi, pods=110). Repeat for several nodes.
        #[arg(long = "node", required = true, value_parser = parse_node)]
        nodes: Vec<damocles_operator::devnode::NodeSpec>,
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
}

fn parse_node(text: &str) -> Result<damocles_operator::devnode::NodeSpec, String> {
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
        Command::DevNode {
            nodes,
            root,
            host_root,
            remove_nodes_on_exit,
        } => {
            let config = damocles_operator::devnode::DevNodeConfig {
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
        .init();
}

fn dev_node(config: damocles_operator::devnode::DevNodeConfig) -> Result<()> {
    init_logging();
    damocles_operator::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let client = kube::Client::try_default()
            .await
            .context("cannot connect to the cluster (set KUBECONFIG)")?;
        damocles_operator::devnode::run(client, config, shutdown_signal()).await
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
