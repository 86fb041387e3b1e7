//! `kubectl damocles`: a kubectl plugin for SealingTasks and SealingPools. Put this binary on the
//! PATH and kubectl finds it (docs/kubectl-plugin.md). It uses the current kubeconfig context.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use damocles_operator::api::{SealingPool, SealingTask};
use damocles_operator::controller::pods::TASK_LABEL;
use damocles_operator::plugin::{self, EventLine};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams, LogParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Inspect and steer damocles-operator's SealingTasks and SealingPools.
#[derive(Parser)]
#[command(name = "kubectl damocles", version, about)]
struct Cli {
    /// The namespace (default: the kubeconfig context's).
    #[arg(long, short, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Why a task is where it is: its last error, condition messages, recent Events, the tail of
    /// its latest step pod's log, and the command to run next.
    Why { task: String },
    /// Resume a task: retry its current state, or go to --state. Checked with the operator's own
    /// rules first; a resume it would refuse is not patched.
    Resume {
        task: String,
        /// A state of the task's plan (see `why` for the valid ones); omitted: retry.
        #[arg(long)]
        state: Option<String>,
    },
    /// End a task (resumeState Aborted): its step stops, the manager is told, the workspace goes.
    Abort { task: String },
    /// Pause a task: its running step is stopped, files kept.
    Suspend { task: String },
    /// Let a suspended task run again.
    Unsuspend { task: String },
    /// List tasks, by sector number, miner or pool.
    List {
        #[arg(long)]
        sector: Option<u64>,
        #[arg(long)]
        miner: Option<u64>,
        #[arg(long)]
        pool: Option<String>,
        /// Every namespace.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
    },
    /// SealingPools.
    Pool {
        #[command(subcommand)]
        command: PoolCommand,
    },
}

#[derive(Subcommand)]
enum PoolCommand {
    /// Set how many tasks the pool keeps in flight.
    Scale {
        pool: String,
        #[arg(long)]
        in_flight: u32,
    },
}

fn main() -> ExitCode {
    damocles_operator::install_crypto_provider();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("an async runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let client = Client::try_default()
        .await
        .context("cannot reach the cluster (kubeconfig)")?;
    let namespace = cli
        .namespace
        .unwrap_or_else(|| client.default_namespace().to_string());
    let tasks: Api<SealingTask> = Api::namespaced(client.clone(), &namespace);
    match cli.command {
        Command::Why { task } => {
            let task = get(&tasks, &task).await?;
            let events = events(&client, &namespace, &task).await?;
            let pods: Api<Pod> = Api::namespaced(client, &namespace);
            let log = latest_pod_log(&pods, &task).await;
            let log = log
                .as_ref()
                .map(|(pod, text)| (pod.as_str(), text.as_str()));
            print!("{}", plugin::why(&task, &events, log));
        }
        Command::Resume { task, state } => resume(&tasks, &task, state.as_deref()).await?,
        Command::Abort { task } => resume(&tasks, &task, Some("Aborted")).await?,
        Command::Suspend { task } => set_suspend(&tasks, &task, true).await?,
        Command::Unsuspend { task } => set_suspend(&tasks, &task, false).await?,
        Command::List {
            sector,
            miner,
            pool,
            all_namespaces,
        } => {
            let tasks: Api<SealingTask> = if all_namespaces {
                Api::all(client)
            } else {
                tasks
            };
            let (fields, labels) = plugin::list_selectors(sector, miner, pool.as_deref());
            let found = tasks
                .list(&ListParams::default().fields(&fields).labels(&labels))
                .await
                .context("listing SealingTasks")?;
            println!(
                "{:<12} {:<32} {:<8} {:<20} {:<16} {:<8}",
                "NAMESPACE", "NAME", "PLAN", "SECTOR", "STATE", "PHASE"
            );
            for task in found.items {
                let status = task.status.clone().unwrap_or_default();
                println!(
                    "{:<12} {:<32} {:<8} {:<20} {:<16} {:<8}",
                    task.namespace().unwrap_or_default(),
                    task.name_any(),
                    task.spec.plan.to_string(),
                    status.sector_name.unwrap_or_else(|| "-".into()),
                    status.state.map_or_else(|| "-".into(), |s| s.to_string()),
                    status.phase.map_or_else(|| "-".into(), |p| p.to_string()),
                );
            }
        }
        Command::Pool {
            command: PoolCommand::Scale { pool, in_flight },
        } => {
            let pools: Api<SealingPool> = Api::namespaced(client, &namespace);
            pools
                .patch(
                    &pool,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"inFlight": in_flight}})),
                )
                .await
                .with_context(|| format!("scaling SealingPool {pool}"))?;
            println!("sealingpool/{pool} scaled to {in_flight} in flight");
        }
    }
    Ok(())
}

async fn get(tasks: &Api<SealingTask>, name: &str) -> Result<SealingTask> {
    tasks
        .get_opt(name)
        .await
        .with_context(|| format!("reading SealingTask {name}"))?
        .with_context(|| format!("no SealingTask {name} in this namespace"))
}

/// Patches spec.resumeState once the operator's rules accept it, then waits a little for the
/// operator to apply it and says what happened.
async fn resume(tasks: &Api<SealingTask>, name: &str, state: Option<&str>) -> Result<()> {
    let task = get(tasks, name).await?;
    if let Err(refused) = plugin::check_resume(&task, state) {
        bail!("not resumed, nothing was changed: {refused}");
    }
    let patch = json!({
        "metadata": {"resourceVersion": task.resource_version()},
        "spec": {"resumeState": state.unwrap_or("")},
    });
    tasks
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .with_context(|| format!("patching SealingTask {name}"))?;
    let asked = state.unwrap_or("a retry of the current state");
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let task = get(tasks, name).await?;
        if task.spec.resume_state.is_none() {
            let status = task.status.unwrap_or_default();
            let rejected = status
                .conditions
                .iter()
                .find(|c| c.type_ == "ResumeRejected" && c.status == "True");
            match rejected {
                Some(rejected) => bail!("the operator refused it: {}", rejected.message),
                None => {
                    let state = status.state.map_or_else(String::new, |s| s.to_string());
                    println!("sealingtask/{name} resumed ({asked}); now in {state}");
                }
            }
            return Ok(());
        }
    }
    println!(
        "sealingtask/{name}: asked for {asked}; the operator has not applied it yet \
         (`kubectl damocles why {name}`)"
    );
    Ok(())
}

async fn set_suspend(tasks: &Api<SealingTask>, name: &str, suspend: bool) -> Result<()> {
    get(tasks, name).await?;
    tasks
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": suspend}})),
        )
        .await
        .with_context(|| format!("patching SealingTask {name}"))?;
    let done = if suspend { "suspended" } else { "unsuspended" };
    println!("sealingtask/{name} {done}");
    Ok(())
}

/// The task's last ten Events, oldest first.
async fn events(client: &Client, namespace: &str, task: &SealingTask) -> Result<Vec<EventLine>> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let fields = format!(
        "involvedObject.kind=SealingTask,involvedObject.name={}",
        task.name_any()
    );
    let mut found = events
        .list(&ListParams::default().fields(&fields))
        .await
        .context("listing the task's Events")?
        .items;
    let when = |event: &Event| {
        event
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or_else(|| event.last_timestamp.as_ref().map(|t| t.0))
    };
    found.sort_by_key(|e| when(e));
    let skip = found.len().saturating_sub(10);
    Ok(found
        .iter()
        .skip(skip)
        .map(|event| EventLine {
            time: when(event).map_or_else(String::new, |t| t.to_string()),
            warning: event.type_.as_deref() == Some("Warning"),
            reason: event.reason.clone().unwrap_or_default(),
            note: event.message.clone().unwrap_or_default(),
        })
        .collect())
}

/// The last 20 lines of the task's most recent step pod, if it still has one with a log.
async fn latest_pod_log(pods: &Api<Pod>, task: &SealingTask) -> Option<(String, String)> {
    let selector = format!("{TASK_LABEL}={}", task.name_any());
    let mut found = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .ok()?
        .items;
    found.sort_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let pod = found.pop()?;
    let name = pod.name_any();
    let params = LogParams {
        tail_lines: Some(20),
        ..LogParams::default()
    };
    let log = pods.logs(&name, &params).await.ok()?;
    Some((name, log))
}
