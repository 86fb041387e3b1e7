//! `damocles-operator simulate`: a farm on a virtual clock, driven by the operator's real core
//! (the task reconcile loop, the pool rules, the slot table) against models of kube-scheduler,
//! kubelet, the step processes and the chain. A farm sizes its pools, caps and hardware with it;
//! the project measures its scheduling with it (docs/benchmarks.md).

pub mod farm;
pub mod report;
mod worker;
mod world;

use std::time::Duration;

pub use farm::Farm;
pub use report::Report;
use report::{Bound, Window};
use world::{Variant, World};

use crate::task::Rules;

/// How long to simulate, and with which seed.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub seed: u64,
    /// Simulated time before measuring starts: the farm fills up.
    pub warmup: Duration,
    /// Simulated time measured.
    pub measure: Duration,
}

/// Runs `farm` as written and as the oracle (no pod start, image pull or parameter load) with
/// the operator's `rules` (their profiles replaced by the farm's), and as damocles-worker would
/// seal it, and reports them against the bottleneck bound.
pub fn simulate(farm: &Farm, rules: &Rules, run: Run) -> Result<Report, String> {
    let mut rules = rules.clone();
    rules.profiles = farm.profiles()?;
    let window = Window {
        warmup_ms: run.warmup.as_millis() as u64,
        end_ms: (run.warmup + run.measure).as_millis() as u64,
    };
    let mut figures = Vec::new();
    let mut series = Vec::new();
    for variant in [Variant::AsWritten, Variant::Oracle] {
        let mut world = World::new(farm, rules.clone(), run.seed, variant, window)?;
        world.run(window.warmup_ms)?;
        world.meter.start_window();
        world.run(window.end_ms)?;
        if variant == Variant::AsWritten {
            series = world.meter.series();
        }
        figures.push(world.meter.figures());
    }
    let oracle = figures.pop().expect("the oracle ran");
    let result = figures.pop().expect("the farm ran");
    let bound = Bound::of(farm);
    let (baseline, baseline_note) = match worker::baseline(farm, run.seed, window) {
        Ok(figures) => (Some(figures), None),
        Err(note) => (None, Some(note)),
    };
    Ok(Report {
        farm: farm.description.clone(),
        seed: run.seed,
        warmup_hours: run.warmup.as_secs_f64() / 3600.0,
        measured_hours: run.measure.as_secs_f64() / 3600.0,
        of_oracle: result.sectors_per_day / oracle.sectors_per_day.max(1e-9),
        of_bound: result.sectors_per_day / bound.sectors_per_day.max(1e-9),
        of_baseline: baseline
            .as_ref()
            .map(|b| result.sectors_per_day / b.sectors_per_day.max(1e-9)),
        baseline,
        baseline_note,
        result,
        oracle,
        bound,
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(hours: u64) -> Run {
        Run {
            seed: 7,
            warmup: Duration::from_secs(12 * 3600),
            measure: Duration::from_secs(hours * 3600),
        }
    }

    /// The CI figure of issue 36: preset (a) over two simulated days, a fixed seed.
    #[test]
    fn preset_a_seals_near_the_oracle_and_loses_nothing() {
        let farm = Farm::load("a").unwrap();
        let report = simulate(&farm, &Rules::default(), run(36)).unwrap();
        let text = report.text();
        assert!(report.result.sectors_per_day > 0.0, "{text}");
        assert!(report.of_oracle >= 0.95, "{text}");
        for (what, count) in [
            ("ticket rewinds", report.result.ticket_rewinds),
            ("PC1 preemptions", report.result.pc1_preemptions),
            ("disk full", report.result.disk_full),
            ("aborted", report.result.aborted),
        ] {
            assert_eq!(count, 0, "{what}\n{text}");
        }
    }

    /// The simulator shows what a cluster-wide C2 cap does to a farm whose C2 is slow
    /// (bellperson, 20 min): two C2s at a time are at most 2 × 86,400 / 1,200 = 144 sectors a
    /// day, however many GPUs are idle.
    #[test]
    fn a_cluster_wide_c2_cap_holds_the_farm_to_it() {
        // Preset (a) at 4 nodes: its PC1 bound (256 a day) well above the cap's.
        let mut farm = Farm::load("a").unwrap();
        farm.nodes[0].count = 4;
        farm.pools[0].spec.in_flight = 56;
        farm.steps.seconds.insert(crate::plan::StepKind::C2, 1200.0);
        let mut profiles = farm::chart_profiles().unwrap();
        profiles["steps"]["c2"]["concurrency"] = serde_json::json!(2);
        farm.profiles = Some(profiles.clone());
        let capped = simulate(&farm, &Rules::default(), run(24)).unwrap();
        profiles["steps"]["c2"]
            .as_object_mut()
            .unwrap()
            .remove("concurrency");
        farm.profiles = Some(profiles);
        let free = simulate(&farm, &Rules::default(), run(24)).unwrap();
        let cap = 2.0 * 86_400.0 / 1200.0;
        assert!(
            capped.result.sectors_per_day <= cap * 1.02,
            "{}",
            capped.text()
        );
        assert!(
            free.result.sectors_per_day > 1.4 * capped.result.sectors_per_day,
            "capped:\n{}\nfree:\n{}",
            capped.text(),
            free.text()
        );
    }

    /// Preset (b)'s C2 runs only on its GPU-only nodes (`locality: any`): C1's output must
    /// travel through the persist store, or no node could run the C2 pods.
    #[test]
    fn c2_anywhere_runs_on_the_c2_nodes() {
        let mut farm = Farm::load("b").unwrap();
        farm.nodes[0].count = 2;
        farm.nodes[1].count = 1;
        farm.pools[0].spec.in_flight = 28;
        let report = simulate(&farm, &Rules::default(), run(12)).unwrap();
        let text = report.text();
        assert!(report.result.sectors_per_day > 20.0, "{text}");
        assert!(
            report.result.gpu.get("c2").is_some_and(|c2| *c2 > 0.0),
            "{text}"
        );
        assert_eq!(report.result.aborted, 0, "{text}");
    }

    #[test]
    fn the_same_seed_gives_the_same_figures() {
        let farm = Farm::load("a").unwrap();
        let short = Run {
            seed: 3,
            warmup: Duration::from_secs(3600),
            measure: Duration::from_secs(5 * 3600),
        };
        let a = simulate(&farm, &Rules::default(), short).unwrap();
        let b = simulate(&farm, &Rules::default(), short).unwrap();
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            serde_json::to_value(&b).unwrap()
        );
    }
}
