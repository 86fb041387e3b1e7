//! `damocles-step`: runs one proof or file step of a sealing task (a step pod's command, or a child
//! process of the local mode), manages proof parameters, and benchmarks the step chain.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode as ProcessExit;

use clap::{Parser, Subcommand};
use damocles_operator::api::SectorSize;
use damocles_operator::step::params::{self, Circuit};
use damocles_operator::step::{
    DEFAULT_TERMINATION_MESSAGE_PATH, ExitCode, StepFailure, StepRequest, StepResult, bench,
    parse_request, run,
};

/// The version and the proofs build: which GPU backend and SDR variant this binary has, so
/// `damocles-step --version` tells what a node's image can do (a CPU build ignores the
/// FIL_PROOFS_USE_GPU_* settings; one without multicore-sdr ignores FIL_PROOFS_USE_MULTICORE_SDR).
fn version_line() -> &'static str {
    static LINE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    LINE.get_or_init(|| {
        let gpu = if cfg!(feature = "cuda") {
            "cuda"
        } else if cfg!(feature = "opencl") {
            "opencl"
        } else {
            "cpu"
        };
        let sdr = if cfg!(feature = "multicore-sdr") {
            "multicore-sdr"
        } else {
            "single-core sdr"
        };
        format!("{} ({gpu}, {sdr})", env!("CARGO_PKG_VERSION"))
    })
}

#[derive(Parser)]
#[command(
    name = "damocles-step",
    version = version_line(),
    about = "Run one step of a Filecoin sealing task with filecoin-proofs",
    long_about = "Run one step of a Filecoin sealing task with filecoin-proofs.\n\n\
        The operator runs this as the command of each step pod (and the local mode as a child process). \
        The result is JSON on stdout and in the termination-message file.\n\n\
        Exit codes are failure levels: 0 ok, 2 bad command line, 10 temporary (retry after a back-off), \
        20 permanent (pause for a person), 30 critical (inputs missing or corrupt; pause), 40 abort.\n\n\
        Environment: FIL_PROOFS_PARAMETER_CACHE (default ~/.cache/damocles-operator/params), \
        RUST_LOG (default info; logs go to stderr)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the step described by a request (JSON; see docs/step.md).
    Run {
        /// The step request file; `-` reads it from stdin.
        #[arg(
            long,
            short,
            required_unless_present = "request_env",
            conflicts_with = "request_env"
        )]
        request: Option<PathBuf>,
        /// Read the request from this environment variable instead (step pods carry it in
        /// DAMOCLES_STEP_REQUEST, so the pod spec alone says what ran).
        #[arg(long)]
        request_env: Option<String>,
    },
    /// Remove a task's workspace directory (the operator's cleanup pod runs this when a task has
    /// ended). Refuses a relative path or the filesystem root; a missing directory is fine.
    Clean {
        #[arg(long)]
        workspace: PathBuf,
        /// Also remove this directory of the persist store: C1's output left there for a C2 on
        /// another node (`locality: any`).
        #[arg(long)]
        transfer: Option<PathBuf>,
    },
    /// Check or generate Groth parameters and verifying keys.
    #[command(subcommand)]
    Params(ParamsCommand),
    /// Time each step of a 2KiB sealer chain as separate processes and as calls in one process.
    Bench {
        #[arg(long, default_value = "2KiB", value_parser = parse_size)]
        sector_size: SectorSize,
        /// Rounds of the whole chain per mode; the report gives medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Scratch directory for the workspaces (removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Seal a deal sector: one piece of random bytes filling the sector, read from a file and
        /// checked against its CID by add-piece (default: committed capacity, zeros).
        #[arg(long)]
        deals: bool,
    },
}

#[derive(Subcommand)]
enum ParamsCommand {
    /// List the parameter files a sector size needs and say which are missing (exit 1 if any).
    Check {
        #[arg(long, value_parser = parse_size)]
        sector_size: SectorSize,
        #[command(flatten)]
        circuits: CircuitChoice,
    },
    /// Generate TEST parameters for a small sector size where missing (2KiB on 2 cores: PoRep
    /// 10-20 minutes and 5 GB of memory, empty-sector-update 6-12 minutes and 3 GB). A set that
    /// another `params generate` is making is waited for, not made twice.
    /// Proofs made with them are worthless on chain: real farms fetch the official parameters.
    Generate {
        #[arg(long, value_parser = parse_size)]
        sector_size: SectorSize,
        #[command(flatten)]
        circuits: CircuitChoice,
    },
}

/// Which parameter sets: all by default.
#[derive(clap::Args)]
struct CircuitChoice {
    /// Only the PoRep set (skip empty-sector-update, which only snapup needs).
    #[arg(long, conflicts_with = "circuit")]
    porep_only: bool,
    /// Only this circuit's set (repeatable).
    #[arg(long, value_enum)]
    circuit: Vec<Circuit>,
}

impl CircuitChoice {
    fn circuits(&self) -> Vec<Circuit> {
        if self.porep_only {
            vec![Circuit::Porep]
        } else if !self.circuit.is_empty() {
            self.circuit.clone()
        } else {
            vec![Circuit::Porep, Circuit::EmptySectorUpdate]
        }
    }
}

/// Our steps log at info; the proofs stack's own info lines (parameter ids, tree building) are noise
/// for a farm operator and stay at warn unless RUST_LOG asks for them.
const DEFAULT_LOG_FILTER: &str = "info,filecoin_proofs=warn,storage_proofs_core=warn,storage_proofs_porep=warn,\
     storage_proofs_update=warn,bellperson=warn";

fn parse_size(text: &str) -> Result<SectorSize, String> {
    SectorSize::parse(text).map_err(|e| e.to_string())
}

fn main() -> ProcessExit {
    params::init_cache_env();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| DEFAULT_LOG_FILTER.into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            request,
            request_env,
        } => run_step(read_request(request, request_env)),
        Command::Params(ParamsCommand::Check {
            sector_size,
            circuits,
        }) => params_check(sector_size, &circuits.circuits()),
        Command::Params(ParamsCommand::Generate {
            sector_size,
            circuits,
        }) => params_generate(sector_size, &circuits.circuits()),
        Command::Clean {
            workspace,
            transfer,
        } => match std::iter::once(workspace)
            .chain(transfer)
            .try_for_each(|dir| clean(&dir))
        {
            Ok(()) => ProcessExit::SUCCESS,
            Err(code) => ProcessExit::from(code as u8),
        },
        Command::Bench {
            sector_size,
            rounds,
            dir,
            deals,
        } => match bench::run(sector_size, rounds, dir, deals) {
            Ok(report) => {
                println!("{report}");
                ProcessExit::SUCCESS
            }
            Err(err) => {
                eprintln!("bench failed: {err:#}");
                ProcessExit::FAILURE
            }
        },
    }
}

fn clean(dir: &std::path::Path) -> Result<(), ExitCode> {
    if !dir.is_absolute() || dir.parent().is_none() {
        eprintln!(
            "damocles-step clean: refusing to remove {}: not an absolute path below /",
            dir.display()
        );
        return Err(ExitCode::Permanent);
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {
            tracing::info!(dir = %dir.display(), "removed");
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => {
            eprintln!(
                "damocles-step clean: cannot remove {}: {err}",
                dir.display()
            );
            Err(ExitCode::Temporary)
        }
    }
}

fn read_request(path: Option<PathBuf>, env: Option<String>) -> Result<String, String> {
    match (path, env) {
        (_, Some(name)) => std::env::var(&name)
            .map_err(|e| format!("cannot read the step request from ${name}: {e}")),
        (Some(path), None) if path.as_os_str() == "-" => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read the step request from stdin: {e}")),
        (Some(path), None) => std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read the step request {}: {e}", path.display())),
        (None, None) => Err("no step request: give --request or --request-env".into()),
    }
}

fn run_step(text: Result<String, String>) -> ProcessExit {
    // Even a request we refuse says where its result should go, if it can be read at all.
    let refused_message_path = text.as_ref().ok().and_then(|text| {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        value
            .get("terminationMessagePath")?
            .as_str()
            .map(PathBuf::from)
    });
    let (result, message_path) = match text
        .and_then(|text| parse_request(&text).map_err(|e| e.message))
    {
        Ok(request) => {
            let message_path = request.termination_message_path.clone();
            report_stalls(&request);
            (run::execute_all(&request), message_path)
        }
        Err(message) => {
            // No sector to name: report the failure in the result shape anyway so the pod says why.
            eprintln!("damocles-step: {message}");
            let failure = StepFailure {
                level: damocles_operator::api::FailureLevel::Permanent,
                message,
            };
            let text = serde_json::json!({ "version": damocles_operator::step::REQUEST_VERSION, "failure": failure });
            println!("{text}");
            write_termination_message(refused_message_path, &text.to_string());
            return ProcessExit::from(ExitCode::Permanent as u8);
        }
    };
    let message = result.termination_message_within(message_limit());
    // The whole result, one line: where the operator reads a result too big for the message.
    println!("{}", result.output_line());
    write_termination_message(message_path, &message);
    // The exit code the pod shows agrees with the message it carries.
    let sent: StepResult = serde_json::from_str(&message).unwrap_or(result);
    exit(&sent)
}

/// A stalled transfer ends the process (the blocked read cannot be interrupted) with the step's
/// result as every other failure: a temporary failure on stdout and in the termination message.
fn report_stalls(request: &StepRequest) {
    let (step, sector) = (request.step, request.sector);
    let message_path = request.termination_message_path.clone();
    let started = std::time::Instant::now();
    damocles_operator::step::stall::on_stall(move |failure| {
        let result = StepResult {
            version: damocles_operator::step::REQUEST_VERSION,
            step,
            sector,
            failure: Some(StepFailure {
                level: failure.level,
                message: failure.message,
            }),
            outputs: Default::default(),
            reused: false,
            duration_ms: started.elapsed().as_millis() as u64,
            in_log: None,
            then: Vec::new(),
        };
        eprintln!(
            "damocles-step: {}",
            result.failure.as_ref().unwrap().message
        );
        println!("{}", result.output_line());
        write_termination_message(
            message_path.clone(),
            &result.termination_message_within(message_limit()),
        );
        std::process::exit(result.exit_code() as i32);
    });
}

/// The termination message's size: Kubernetes' 4096 bytes. Test builds (the `dev` feature) take
/// a smaller one from DAMOCLES_STEP_MESSAGE_LIMIT, to send 2KiB results through the log path.
fn message_limit() -> usize {
    let limit = damocles_operator::step::TERMINATION_MESSAGE_LIMIT;
    #[cfg(feature = "dev")]
    if let Some(lower) = std::env::var("DAMOCLES_STEP_MESSAGE_LIMIT")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        return lower.min(limit);
    }
    limit
}

fn write_termination_message(path: Option<PathBuf>, message: &str) {
    let path = path.unwrap_or_else(|| PathBuf::from(DEFAULT_TERMINATION_MESSAGE_PATH));
    // Outside a pod there is usually no /dev/termination-log; stdout already has the result.
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(path.as_os_str() != DEFAULT_TERMINATION_MESSAGE_PATH)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(message.as_bytes()));
    if let Err(err) = written
        && path.as_os_str() != DEFAULT_TERMINATION_MESSAGE_PATH
    {
        eprintln!(
            "damocles-step: cannot write the termination message {}: {err}",
            path.display()
        );
    }
}

fn exit(result: &StepResult) -> ProcessExit {
    ProcessExit::from(result.exit_code() as u8)
}

fn params_check(size: SectorSize, circuits: &[Circuit]) -> ProcessExit {
    let sets = match params::required(size, circuits) {
        Ok(sets) => sets,
        Err(err) => {
            eprintln!("cannot work out the parameters for {size}: {err:#}");
            return ProcessExit::FAILURE;
        }
    };
    let mut missing = 0;
    println!(
        "parameter cache: {}",
        std::env::var(params::PARAMETER_CACHE_ENV).unwrap_or_default()
    );
    for set in &sets {
        let test = if params::is_test_set(set) {
            " (TEST parameters, generated locally)"
        } else {
            ""
        };
        println!("{size} {}{test}:", set.circuit);
        for file in set.files() {
            let state = if file.is_file() { "present" } else { "MISSING" };
            missing += usize::from(!file.is_file());
            println!("  {state:8} {}", file.display());
        }
    }
    if missing > 0 {
        println!(
            "{missing} file(s) missing. Fetch the official parameters for real sector sizes; for 2KiB/8MiB \
             tests run `damocles-step params generate --sector-size {size}`."
        );
        return ProcessExit::FAILURE;
    }
    ProcessExit::SUCCESS
}

fn params_generate(size: SectorSize, circuits: &[Circuit]) -> ProcessExit {
    if !matches!(size, SectorSize::Size2KiB | SectorSize::Size8MiB) {
        eprintln!(
            "refusing to generate parameters for {size}: test parameters are for 2KiB and 8MiB sectors; \
             fetch the official parameters for real sizes"
        );
        return ProcessExit::from(ExitCode::Usage as u8);
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = params::generate(size, circuits, |set| {
        spinner.set_message(format!(
            "generating TEST {size} {} parameters (several minutes, GBs of memory) into {}",
            set.circuit,
            set.params
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ));
    });
    spinner.finish_and_clear();
    match result {
        Ok(done) => {
            for generated in done {
                match generated.took {
                    Some(took) => println!(
                        "generated TEST {size} {} parameters in {:.0} s: {}",
                        generated.set.circuit,
                        took.as_secs_f64(),
                        generated.set.params.display()
                    ),
                    None => println!(
                        "{size} {} parameters already present: {}",
                        generated.set.circuit,
                        generated.set.params.display()
                    ),
                }
            }
            println!(
                "These are TEST parameters: proofs made with them are for tests and demos only."
            );
            ProcessExit::SUCCESS
        }
        Err(err) => {
            eprintln!("parameter generation failed: {err:#}");
            ProcessExit::FAILURE
        }
    }
}
