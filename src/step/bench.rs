//! `damocles-step bench`: what running each step as its own process costs, compared with calling the
//! same steps in one process (the way damocles-worker does), on a real sealer chain.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use super::run::{execute, randomness};
use super::{PieceInput, REQUEST_VERSION, StepInputs, StepKind, StepRequest, StepResult};
use crate::sector::{SectorRef, SectorSize};

/// The proof steps of a sealer task without synthetic PoRep, in plan order, read from the plan.
pub fn sealer_steps() -> Vec<StepKind> {
    crate::plan::PlanKind::Sealer
        .plan()
        .states
        .iter()
        .flat_map(|s| s.actions)
        .filter_map(|action| match action {
            crate::plan::Action::Proof(step) if *step != StepKind::SyntheticProofs => Some(*step),
            _ => None,
        })
        .collect()
}

/// Builds each step's request from what the earlier steps returned, as the controller does.
#[derive(Clone, Debug)]
pub struct Chain {
    pub base: StepRequest,
    pub gathered: StepInputs,
}

impl Chain {
    pub fn new(workspace: &Path, sector: SectorRef, size: SectorSize, synthetic: bool) -> Self {
        let base = StepRequest {
            version: REQUEST_VERSION,
            step: StepKind::AddPiece,
            sector,
            sector_size: size,
            synthetic_po_rep: synthetic,
            workspace: workspace.to_path_buf(),
            persist: None,
            share: None,
            termination_message_path: None,
            inputs: StepInputs::default(),
            then: Vec::new(),
        };
        let gathered = StepInputs {
            ticket: Some(randomness(1)),
            seed: Some(randomness(2)),
            ..Default::default()
        };
        Self { base, gathered }
    }

    /// The request for `step`, with exactly the inputs that step reads.
    pub fn request(&self, step: StepKind) -> StepRequest {
        StepRequest {
            step,
            inputs: self.gathered.select(step),
            ..self.base.clone()
        }
    }

    /// Takes what a successful step produced into the inputs of the next ones.
    pub fn absorb(&mut self, result: &StepResult) {
        self.gathered.absorb(&result.outputs);
    }
}

/// Wall time and peak resident memory of one step run.
#[derive(Clone, Copy, Debug, Default)]
struct Sample {
    millis: f64,
    peak_kib: u64,
}

fn ensure_ok(result: &StepResult) -> anyhow::Result<()> {
    if let Some(failure) = &result.failure {
        bail!(
            "{} failed ({}): {}",
            result.step,
            failure.level,
            failure.message
        );
    }
    Ok(())
}

/// Peak RSS of this process since the last reset (Linux: VmHWM, reset through clear_refs).
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmHWM:")
                    .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

fn in_process(chain: &mut Chain) -> anyhow::Result<Vec<Sample>> {
    let mut samples = vec![];
    for step in sealer_steps() {
        let request = chain.request(step);
        reset_peak();
        let started = Instant::now();
        let result = execute(&request);
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        ensure_ok(&result)?;
        chain.absorb(&result);
        samples.push(Sample {
            millis,
            peak_kib: peak_kib(),
        });
    }
    Ok(samples)
}

/// Runs a child and waits for it with wait4, which reports that child's own peak RSS.
fn run_child(command: &mut Command) -> anyhow::Result<(i32, u64)> {
    let child = command.spawn().context("cannot start damocles-step")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for the child we just spawned and still own.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if waited != pid {
        bail!("wait4 failed: {}", std::io::Error::last_os_error());
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((code, usage.ru_maxrss as u64))
}

fn as_processes(chain: &mut Chain, scratch: &Path) -> anyhow::Result<Vec<Sample>> {
    let exe = std::env::current_exe().context("cannot find the damocles-step binary")?;
    let mut samples = vec![];
    for step in sealer_steps() {
        let mut request = chain.request(step);
        let result_path = scratch.join(format!("{step}.result.json"));
        request.termination_message_path = Some(result_path.clone());
        let request_path = scratch.join(format!("{step}.request.json"));
        std::fs::write(&request_path, serde_json::to_vec(&request)?)?;
        let started = Instant::now();
        let (code, peak_kib) = run_child(
            Command::new(&exe)
                .args(["run", "--request"])
                .arg(&request_path)
                .env("RUST_LOG", "warn")
                .stdout(std::process::Stdio::null()),
        )?;
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let result: StepResult = serde_json::from_slice(&std::fs::read(&result_path)?)
            .with_context(|| format!("{step} exited {code} without a readable result"))?;
        ensure_ok(&result)?;
        chain.absorb(&result);
        samples.push(Sample { millis, peak_kib });
    }
    Ok(samples)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// One deal piece filling the sector: `unpadded(size)` random bytes in `dir`, with the CID an
/// add-piece run computes for them, so the benchmarked add-piece reads and checks a real deal.
fn deal_piece(size: SectorSize, dir: &Path) -> anyhow::Result<PieceInput> {
    std::fs::create_dir_all(dir)?;
    let mut payload = vec![0u8; super::run::unpadded(size.bytes()) as usize];
    fastrand::fill(&mut payload);
    let path = dir.join("deal.bin");
    std::fs::write(&path, &payload)?;
    let mut piece = PieceInput {
        cid: None,
        size: size.bytes(),
        source: Some(format!("file://{}", path.display())),
        payload_size: Some(payload.len() as u64),
    };
    let mut probe = Chain::new(
        &dir.join("probe"),
        SectorRef {
            miner: 1000,
            number: 1,
        },
        size,
        false,
    );
    probe.gathered.pieces = vec![piece.clone()];
    let result = execute(&probe.request(StepKind::AddPiece));
    ensure_ok(&result)?;
    piece.cid = Some(
        result
            .outputs
            .pieces
            .first()
            .context("add-piece listed no piece")?
            .cid
            .clone(),
    );
    Ok(piece)
}

/// Runs both modes `rounds` times and returns a Markdown report. In one process, a step's peak RSS
/// includes what earlier steps left resident (the Groth parameters C2 loaded stay cached).
/// `deals`: the sector holds one deal piece of random bytes (read from a file and checked against
/// its CID by add-piece) instead of committed capacity.
pub fn run(
    size: SectorSize,
    rounds: usize,
    dir: Option<PathBuf>,
    deals: bool,
) -> anyhow::Result<String> {
    if rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let root = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("damocles-bench-{}", std::process::id()))
    });
    let sector = SectorRef {
        miner: 1000,
        number: 1,
    };
    let pieces = if deals {
        vec![deal_piece(size, &root.join("deal"))?]
    } else {
        vec![]
    };
    let chain = |ws: &Path| {
        let mut chain = Chain::new(ws, sector, size, false);
        chain.gathered.pieces = pieces.clone();
        chain
    };
    let mut inproc: Vec<Vec<Sample>> = vec![];
    let mut procs: Vec<Vec<Sample>> = vec![];
    // Child processes first: a child's peak RSS (wait4) counts the parent's memory at fork time, so the
    // parent must still be small, before the in-process rounds load the Groth parameters into it.
    for round in 0..rounds {
        let ws = root.join(format!("processes-{round}"));
        std::fs::create_dir_all(&ws)?;
        eprintln!("round {}/{rounds}: one process per step", round + 1);
        procs.push(as_processes(&mut chain(&ws), &ws)?);
    }
    for round in 0..rounds {
        let ws = root.join(format!("in-process-{round}"));
        eprintln!("round {}/{rounds}: in one process", round + 1);
        inproc.push(in_process(&mut chain(&ws))?);
    }
    let _ = std::fs::remove_dir_all(&root);

    let mut report = String::new();
    let data = if deals {
        "one deal piece of random bytes"
    } else {
        "committed capacity"
    };
    writeln!(
        report,
        "{size} sealer chain ({data}), {rounds} rounds, medians (TEST parameters):\n"
    )?;
    writeln!(
        report,
        "| step | in one process (ms) | peak RSS (MiB) | own process (ms) | peak RSS (MiB) | time ratio |"
    )?;
    writeln!(report, "|---|---:|---:|---:|---:|---:|")?;
    let (mut total_in, mut total_proc) = (0.0, 0.0);
    for (index, step) in sealer_steps().iter().enumerate() {
        let column = |runs: &Vec<Vec<Sample>>| {
            let ms = median(runs.iter().map(|r| r[index].millis).collect());
            let mib = median(
                runs.iter()
                    .map(|r| r[index].peak_kib as f64 / 1024.0)
                    .collect(),
            );
            (ms, mib)
        };
        let (in_ms, in_mib) = column(&inproc);
        let (proc_ms, proc_mib) = column(&procs);
        total_in += in_ms;
        total_proc += proc_ms;
        writeln!(
            report,
            "| {step} | {in_ms:.1} | {in_mib:.0} | {proc_ms:.1} | {proc_mib:.0} | {:.2} |",
            proc_ms / in_ms
        )?;
    }
    writeln!(
        report,
        "| **chain** | {total_in:.1} | | {total_proc:.1} | | {:.2} |",
        total_proc / total_in
    )?;
    Ok(report)
}
