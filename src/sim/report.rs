//! What a simulated farm measured, within the measured window (the warm-up left out), and how
//! it is shown: a text table, JSON, an SVG of utilisation over time.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::farm::Farm;
use super::world::{Capacity, SAMPLE_MS};
use crate::plan::StepKind;

const DAY_S: f64 = 86_400.0;

/// The measured part of a run: from the end of the warm-up to the end.
#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub warmup_ms: u64,
    pub end_ms: u64,
}

impl Window {
    /// Seconds of `from..to` inside the window.
    fn overlap(&self, from_ms: u64, to_ms: u64) -> f64 {
        let from = from_ms.max(self.warmup_ms);
        let to = to_ms.min(self.end_ms);
        to.saturating_sub(from) as f64 / 1000.0
    }

    fn contains(&self, at_ms: u64) -> bool {
        at_ms >= self.warmup_ms && at_ms <= self.end_ms
    }

    fn seconds(&self) -> f64 {
        self.end_ms.saturating_sub(self.warmup_ms) as f64 / 1000.0
    }
}

/// Counts of what the operator did, each taken over the whole run; the report uses what
/// happened after the warm-up.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub writes: u64,
    pub reconciles: u64,
    pub manager_calls: u64,
    /// GETs of a Node (a task whose pinned pod is slow to start asks whether its node exists).
    pub node_reads: u64,
    pub failures: u64,
    pub ticket_rewinds: u64,
    pub disk_full: u64,
    pub pc1_preemptions: u64,
    pub aborted: u64,
}

impl Counters {
    fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            writes: self.writes - earlier.writes,
            reconciles: self.reconciles - earlier.reconciles,
            manager_calls: self.manager_calls - earlier.manager_calls,
            node_reads: self.node_reads - earlier.node_reads,
            failures: self.failures - earlier.failures,
            ticket_rewinds: self.ticket_rewinds - earlier.ticket_rewinds,
            disk_full: self.disk_full - earlier.disk_full,
            pc1_preemptions: self.pc1_preemptions - earlier.pc1_preemptions,
            aborted: self.aborted - earlier.aborted,
        }
    }
}

/// Busy time in one sampling interval, for the plot.
#[derive(Clone, Copy, Debug, Default)]
struct Bin {
    pc1_ccx_s: f64,
    gpu_s: f64,
}

/// A sample of the queues.
#[derive(Clone, Debug)]
struct Sample {
    pending: BTreeMap<String, u32>,
    waiting_slot: BTreeMap<String, u32>,
    disk_gib: f64,
    tasks: u32,
}

/// The world's meter: busy time, queues and latencies as the run goes.
pub struct Meter {
    window: Window,
    capacity: Capacity,
    pub counters: Counters,
    at_warmup: Option<Counters>,
    latencies_s: Vec<f64>,
    pc1_ccx_s: f64,
    pc1_running_s: f64,
    gpu_s: BTreeMap<String, f64>,
    bins: Vec<Bin>,
    samples: Vec<Sample>,
}

impl Meter {
    pub fn new(window: Window, capacity: Capacity) -> Self {
        Meter {
            window,
            capacity,
            counters: Counters::default(),
            at_warmup: None,
            latencies_s: Vec::new(),
            pc1_ccx_s: 0.0,
            pc1_running_s: 0.0,
            gpu_s: BTreeMap::new(),
            bins: vec![Bin::default(); (window.end_ms / SAMPLE_MS + 1) as usize],
            samples: Vec::new(),
        }
    }

    /// The warm-up is over: counts from here on are measured.
    pub fn start_window(&mut self) {
        self.at_warmup = Some(self.counters);
    }

    pub fn finished(&mut self, now_ms: u64, created_ms: u64) {
        if self.window.contains(now_ms) {
            self.latencies_s
                .push(now_ms.saturating_sub(created_ms) as f64 / 1000.0);
        }
    }

    fn binned(&mut self, from_ms: u64, to_ms: u64, mut add: impl FnMut(&mut Bin, f64)) {
        let mut at = from_ms;
        while at < to_ms {
            let index = (at / SAMPLE_MS) as usize;
            let end = ((index as u64 + 1) * SAMPLE_MS).min(to_ms);
            if let Some(bin) = self.bins.get_mut(index) {
                add(bin, (end - at) as f64 / 1000.0);
            }
            at = end;
        }
    }

    /// `running` PC1s shared a node's CCXs from `from` to `to`, `busy` of them (at most its CCX
    /// count) busy.
    pub fn pc1(&mut self, from_ms: u64, to_ms: u64, busy: u32, running: u32) {
        let seconds = self.window.overlap(from_ms, to_ms);
        self.pc1_ccx_s += seconds * busy as f64;
        self.pc1_running_s += seconds * running as f64;
        self.binned(from_ms, to_ms, |bin, s| bin.pc1_ccx_s += s * busy as f64);
    }

    /// `gpus` GPUs spent `from..to` on `kind` (a step, "pod start", "parameter load").
    pub fn gpu(&mut self, kind: &str, from_ms: u64, to_ms: u64, gpus: f64) {
        if to_ms <= from_ms {
            return;
        }
        *self.gpu_s.entry(kind.to_string()).or_default() +=
            self.window.overlap(from_ms, to_ms) * gpus;
        self.binned(from_ms, to_ms, |bin, s| bin.gpu_s += s * gpus);
    }

    pub fn sample(
        &mut self,
        now_ms: u64,
        pending: BTreeMap<String, u32>,
        waiting_slot: BTreeMap<String, u32>,
        disk_gib: f64,
        tasks: u32,
    ) {
        if self.window.contains(now_ms) {
            self.samples.push(Sample {
                pending,
                waiting_slot,
                disk_gib,
                tasks,
            });
        }
    }

    /// The figures of this run alone (no references).
    pub fn figures(&self) -> Figures {
        let window_s = self.window.seconds().max(1.0);
        let counters = self.counters.since(&self.at_warmup.unwrap_or_default());
        let sectors = self.latencies_s.len() as f64;
        let mut latencies = self.latencies_s.clone();
        latencies.sort_by(f64::total_cmp);
        let quantile = |q: f64| {
            if latencies.is_empty() {
                0.0
            } else {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize] / 3600.0
            }
        };
        let gpu_total = self.capacity.gpus * window_s;
        let mut gpu: BTreeMap<String, f64> = self
            .gpu_s
            .iter()
            .map(|(kind, s)| (kind.clone(), s / gpu_total.max(1.0)))
            .collect();
        let busy: f64 = gpu.values().sum();
        if self.capacity.gpus > 0.0 {
            gpu.insert("idle".into(), (1.0 - busy).max(0.0));
        }
        let n = self.samples.len().max(1) as f64;
        let mean = |pick: fn(&Sample) -> &BTreeMap<String, u32>| {
            let mut means: BTreeMap<String, f64> = BTreeMap::new();
            for sample in &self.samples {
                for (step, count) in pick(sample) {
                    *means.entry(step.clone()).or_default() += *count as f64 / n;
                }
            }
            means
        };
        Figures {
            sectors_per_day: sectors * DAY_S / window_s,
            pc1_ccx_utilisation: self.pc1_ccx_s / (self.capacity.ccx as f64 * window_s).max(1.0),
            pc1_per_busy_ccx: if self.pc1_ccx_s > 0.0 {
                self.pc1_running_s / self.pc1_ccx_s
            } else {
                0.0
            },
            gpu,
            nvme_peak: self.samples.iter().map(|s| s.disk_gib).fold(0.0, f64::max)
                / self.capacity.nvme_gib.max(1.0),
            pods_pending_mean: mean(|s| &s.pending),
            waiting_for_slot_mean: mean(|s| &s.waiting_slot),
            tasks_mean: self.samples.iter().map(|s| s.tasks as f64).sum::<f64>() / n,
            latency_p50_hours: quantile(0.5),
            latency_p99_hours: quantile(0.99),
            writes_per_sector: counters.writes as f64 / sectors.max(1.0),
            reconciles_per_second: counters.reconciles as f64 / window_s,
            manager_calls_per_second: counters.manager_calls as f64 / window_s,
            node_reads_per_second: counters.node_reads as f64 / window_s,
            step_failures: counters.failures,
            ticket_rewinds: counters.ticket_rewinds,
            pc1_preemptions: counters.pc1_preemptions,
            disk_full: counters.disk_full,
            aborted: counters.aborted,
        }
    }

    /// Utilisation per sampling interval over the whole run: (hours, PC1 of CCX, GPU).
    pub fn series(&self) -> Vec<(f64, f64, f64)> {
        let interval_s = SAMPLE_MS as f64 / 1000.0;
        self.bins
            .iter()
            .enumerate()
            .map(|(i, bin)| {
                (
                    i as f64 * interval_s / 3600.0,
                    bin.pc1_ccx_s / (self.capacity.ccx as f64 * interval_s).max(1.0),
                    bin.gpu_s / (self.capacity.gpus * interval_s).max(1.0),
                )
            })
            .collect()
    }
}

/// One run's figures over the measured window.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figures {
    pub sectors_per_day: f64,
    /// Busy CCX time over the CCX time of the nodes with workspace disk.
    pub pc1_ccx_utilisation: f64,
    /// Running PC1s per busy CCX (above 1: PC1s share core complexes and each runs slower).
    pub pc1_per_busy_ccx: f64,
    /// GPU time by what it went to (a step, pod start, parameter load, idle), as fractions.
    pub gpu: BTreeMap<String, f64>,
    /// The most workspace disk in use at a sample, over all NVMe.
    pub nvme_peak: f64,
    /// Mean step pods waiting for a node, per step.
    pub pods_pending_mean: BTreeMap<String, f64>,
    /// Mean tasks waiting for a step slot (a profile's concurrency cap), per step.
    pub waiting_for_slot_mean: BTreeMap<String, f64>,
    pub tasks_mean: f64,
    pub latency_p50_hours: f64,
    pub latency_p99_hours: f64,
    pub writes_per_sector: f64,
    pub reconciles_per_second: f64,
    pub manager_calls_per_second: f64,
    pub node_reads_per_second: f64,
    pub step_failures: u64,
    pub ticket_rewinds: u64,
    pub pc1_preemptions: u64,
    pub disk_full: u64,
    pub aborted: u64,
}

/// The bottleneck bound: the fewest sectors a day any one resource allows if nothing else held
/// it back (capacity over demand per sector).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bound {
    pub sectors_per_day: f64,
    /// The resource that sets it.
    pub by: String,
    /// Each resource's bound.
    pub each: BTreeMap<String, f64>,
}

impl Bound {
    pub fn of(farm: &Farm) -> Self {
        let steps = &farm.steps;
        let ccx: u32 = farm
            .nodes
            .iter()
            .filter(|n| n.nvme_gib > 0.0)
            .map(|n| n.ccx * n.count)
            .sum();
        let gpus: u32 = farm.nodes.iter().map(|n| n.gpus * n.count).sum();
        let nvme: f64 = farm.nodes.iter().map(|n| n.nvme_gib * n.count as f64).sum();
        // A workspace is held from add-piece to cleanup: every step, the seed wait and both
        // landings.
        let chain = &farm.chain;
        let hold_s: f64 = steps.seconds.values().sum::<f64>()
            + (chain.seed_delay_epochs + 2 * chain.landing_epochs) as f64 * chain.block_seconds;
        let in_flight: u32 = farm.pools.iter().map(|p| p.spec.in_flight).sum();
        let mut each = BTreeMap::new();
        each.insert(
            "pc1 (CCX)".to_string(),
            ccx as f64 * DAY_S / steps.median(StepKind::Pc1),
        );
        each.insert(
            "gpu (pc2 + c2)".to_string(),
            gpus as f64 * DAY_S / (steps.median(StepKind::Pc2) + steps.median(StepKind::C2)),
        );
        each.insert(
            "nvme".to_string(),
            (nvme / farm.workspace_gib).floor() * DAY_S / hold_s,
        );
        each.insert(
            "pools' inFlight".to_string(),
            in_flight as f64 * DAY_S / hold_s,
        );
        let (by, sectors_per_day) = each
            .iter()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(k, v)| (k.clone(), *v))
            .unwrap_or_default();
        Bound {
            sectors_per_day,
            by,
            each,
        }
    }
}

/// A simulation's report: the farm as written, its references, and their ratios.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub farm: String,
    pub seed: u64,
    pub warmup_hours: f64,
    pub measured_hours: f64,
    pub result: Figures,
    /// The same farm with no pod start, image pull or parameter load.
    pub oracle: Figures,
    pub bound: Bound,
    /// result ÷ oracle sectors per day.
    pub of_oracle: f64,
    /// result ÷ bound.
    pub of_bound: f64,
    /// The same farm sealed the way damocles-worker seals it (docs/simulate.md).
    pub baseline: Option<Figures>,
    /// result ÷ baseline sectors per day.
    pub of_baseline: Option<f64>,
    /// Why there is no baseline (a farm damocles-worker cannot run as written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_note: Option<String>,
    /// Utilisation over time (hours, PC1 of CCX, GPU), the farm as written.
    #[serde(skip)]
    pub series: Vec<(f64, f64, f64)>,
}

fn percent(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn one_decimal(x: f64) -> String {
    format!("{x:.1}")
}

/// How a report's row shows one run's figures.
type Show<'a> = &'a dyn Fn(&Figures) -> String;

/// The runs a report compares, in its columns.
fn columns(report: &Report) -> Vec<(&'static str, &Figures)> {
    let mut columns = vec![("as written", &report.result), ("oracle", &report.oracle)];
    if let Some(baseline) = &report.baseline {
        columns.push(("damocles-worker", baseline));
    }
    columns
}

impl Report {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let columns = columns(self);
        let _ = writeln!(out, "farm: {}", self.farm);
        let _ = writeln!(
            out,
            "seed {}, {:.0} h warm-up, {:.0} h measured\n",
            self.seed, self.warmup_hours, self.measured_hours
        );
        let _ = write!(out, "{:<34}", "");
        for (name, _) in &columns {
            let _ = write!(out, " {name:>15}");
        }
        let _ = writeln!(out);
        let mut row = |name: &str, show: Show| {
            let _ = write!(out, "{name:<34}");
            for (_, figures) in &columns {
                let _ = write!(out, " {:>15}", show(figures));
            }
            let _ = writeln!(out);
        };
        // A row per key of any run's figures (0 where a run has none).
        let keyed = |row: &mut dyn FnMut(&str, Show),
                     prefix: &str,
                     suffix: &str,
                     pick: fn(&Figures) -> &BTreeMap<String, f64>,
                     show: fn(f64) -> String| {
            let keys: std::collections::BTreeSet<&String> =
                columns.iter().flat_map(|(_, f)| pick(f).keys()).collect();
            for key in keys {
                row(&format!("{prefix}{key}{suffix}"), &|f| {
                    show(pick(f).get(key).copied().unwrap_or(0.0))
                });
            }
        };
        row("sectors/day", &|f| format!("{:.1}", f.sectors_per_day));
        row("PC1 busy (of CCX time)", &|f| {
            percent(f.pc1_ccx_utilisation)
        });
        row("PC1s per busy CCX", &|f| {
            format!("{:.2}", f.pc1_per_busy_ccx)
        });
        keyed(&mut row, "GPU: ", "", |f| &f.gpu, percent);
        row("NVMe peak", &|f| percent(f.nvme_peak));
        keyed(
            &mut row,
            "pods pending: ",
            " (mean)",
            |f| &f.pods_pending_mean,
            one_decimal,
        );
        keyed(
            &mut row,
            "waiting for a slot: ",
            " (mean)",
            |f| &f.waiting_for_slot_mean,
            one_decimal,
        );
        row("tasks in flight (mean)", &|f| {
            format!("{:.0}", f.tasks_mean)
        });
        row("sector latency p50 / p99 (h)", &|f| {
            format!("{:.2} / {:.2}", f.latency_p50_hours, f.latency_p99_hours)
        });
        row("API writes per sector", &|f| {
            format!("{:.1}", f.writes_per_sector)
        });
        row("reconciles/s", &|f| {
            format!("{:.2}", f.reconciles_per_second)
        });
        row("manager calls/s", &|f| {
            format!("{:.2}", f.manager_calls_per_second)
        });
        row("Node reads/s", &|f| {
            format!("{:.3}", f.node_reads_per_second)
        });
        row("step failures (temporary)", &|f| {
            f.step_failures.to_string()
        });
        row("ticket rewinds", &|f| f.ticket_rewinds.to_string());
        row("PC1 preemptions", &|f| f.pc1_preemptions.to_string());
        row("workspace disk full", &|f| f.disk_full.to_string());
        row("aborted", &|f| f.aborted.to_string());
        let _ = writeln!(
            out,
            "\nbound: {:.1} sectors/day, set by {}",
            self.bound.sectors_per_day, self.bound.by
        );
        for (name, value) in &self.bound.each {
            let _ = writeln!(out, "  {name:<20} {value:>10.1}");
        }
        let _ = write!(
            out,
            "\nas written: {} of the oracle, {} of the bound",
            percent(self.of_oracle),
            percent(self.of_bound)
        );
        match (self.of_baseline, &self.baseline_note) {
            (Some(of), _) => {
                let _ = writeln!(out, ", {} of the damocles-worker baseline", percent(of));
            }
            (None, Some(note)) => {
                let _ = writeln!(out, "\nno damocles-worker baseline: {note}");
            }
            (None, None) => {
                let _ = writeln!(out);
            }
        }
        if self.baseline.is_some() {
            let _ = writeln!(
                out,
                "(damocles-worker: its pods pending are sectors waiting for a PC1 or GPU \
                 processor on their node)"
            );
        }
        out
    }

    /// An SVG of PC1 (of CCX) and GPU utilisation over the run, the warm-up shaded.
    pub fn svg(&self) -> String {
        let (width, height, margin) = (900.0, 300.0, 40.0);
        let hours = self.warmup_hours + self.measured_hours;
        let x = |h: f64| margin + (width - 2.0 * margin) * h / hours.max(1.0);
        let y = |u: f64| height - margin - (height - 2.0 * margin) * u.clamp(0.0, 1.0);
        let line = |pick: fn(&(f64, f64, f64)) -> f64| {
            self.series
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.0), y(pick(p))))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{m}" y="{m}" width="{w:.1}" height="{h}" fill="#eee"/>"##,
            m = margin,
            w = x(self.warmup_hours) - margin,
            h = height - 2.0 * margin
        );
        let _ = writeln!(
            svg,
            r#"<text x="{margin}" y="20">{} (seed {}): utilisation over {:.0} h, warm-up shaded</text>"#,
            xml_escape(&self.farm),
            self.seed,
            hours
        );
        for (u, label) in [(0.0, "0 %"), (0.5, "50 %"), (1.0, "100 %")] {
            let _ = writeln!(
                svg,
                r##"<line x1="{margin}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#ccc"/><text x="2" y="{:.1}">{label}</text>"##,
                width - margin,
                y(u) + 4.0,
                y = y(u)
            );
        }
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{}"/>"##,
            line(|p| p.1)
        );
        let _ = writeln!(
            svg,
            r##"<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{}"/>"##,
            line(|p| p.2)
        );
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#1f77b4">PC1 (of CCX)</text><text x="{:.1}" y="{:.1}" fill="#d62728">GPU</text>"##,
            width - 220.0,
            height - 10.0,
            width - 100.0,
            height - 10.0
        );
        svg.push_str("</svg>\n");
        svg
    }
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
