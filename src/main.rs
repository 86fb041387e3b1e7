mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use cli::{Cli, Command, CrdKind, Format, LogFormat};
use damocles_operator::api::validate::{parse_manifest, spec_errors};
use damocles_operator::plan::{Plan, render};

fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Crd { kind } => {
            use damocles_operator::{crd_yaml, pool_crd_yaml};
            match kind {
                Some(CrdKind::Sealingtask) => print!("{}", crd_yaml()),
                Some(CrdKind::Sealingpool) => print!("{}", pool_crd_yaml()),
                None => print!("{}{}", crd_yaml(), pool_crd_yaml()),
            }
        }
        Command::Run(args) => {
            #[allow(unused_mut)]
            let (manager, mut settings) = args.into_parts()?;
            // A dev build may be stopped at any effect by the crash tests (src/dev/crash.rs).
            #[cfg(feature = "dev")]
            {
                settings.hooks = damocles_operator::controller::hooks::Hooks::new(
                    std::sync::Arc::new(damocles_operator::dev::crash::CrashHook),
                );
            }
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
        Command::DevManager(args) => dev_manager(args.into_config())?,
        #[cfg(feature = "dev")]
        Command::DevNode(args) => dev_node(args.into_config())?,
        #[cfg(feature = "dev")]
        Command::Simulate(args) => simulate(&args)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr; stdout is left to what a command prints (crd, plans).
fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Each line carries the reconcile's span: the task or pool it is about.
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Runs `body` with the cluster's client configuration (in-cluster config or KUBECONFIG).
fn with_cluster_config<F, Fut>(body: F) -> Result<()>
where
    F: FnOnce(kube::Config) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
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
    with_cluster_config(|kube_config| {
        damocles_operator::dev::node::run(kube_config, config, shutdown_signal())
    })
}

#[cfg(feature = "dev")]
fn dev_manager(config: damocles_operator::dev::manager::DevManagerConfig) -> Result<()> {
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

#[cfg(feature = "dev")]
fn simulate(args: &cli::SimulateArgs) -> Result<()> {
    use damocles_operator::sim::{self, Farm};
    let rules = args.rules()?;
    let farm = Farm::load(&args.farm).map_err(|e| anyhow::anyhow!("--farm {e}"))?;
    let report = sim::simulate(
        &farm,
        &rules,
        sim::Run {
            seed: args.seed,
            warmup: args.warmup,
            measure: args.measure,
        },
    )
    .map_err(|e| anyhow::anyhow!("simulate: {e}"))?;
    if let Some(path) = &args.plot {
        std::fs::write(path, report.svg())
            .with_context(|| format!("cannot write the plot {}", path.display()))?;
    }
    match args.output {
        cli::ReportFormat::Text => print!("{}", report.text()),
        cli::ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
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
