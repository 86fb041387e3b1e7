//! The damocles-worker baseline: the same farm sealed the way damocles-worker seals it, to compare
//! the operator with what a farm runs today. Not the operator's core (that is the world's): a
//! model of the other system, on the same nodes, durations, failure rate and chain.
//!
//! damocles-worker as a farm commonly configures it: on each node with workspace disk, one
//! sealing thread per sector in flight (the pools' `inFlight` shared out over those nodes, at
//! most what the node's disk holds), each sealing one sector at a time from allocation to proof;
//! processors limited per node to its core complexes for PC1 and its GPUs for PC2 and C2 (one
//! step per GPU at a time, in request order); every step runs on the sector's node in a process
//! that is already up (no pod start, no image pull, C2's parameters loaded once); a temporary
//! failure halfway through a step is retried after `recover_interval` (60 s); GPU-only nodes
//! have nothing to do.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::farm::Farm;
use super::report::{Figures, Meter, Window};
use super::world::{Capacity, SAMPLE_MS};
use crate::plan::StepKind;

/// damocles-worker's default `recover_interval`.
const RECOVER_MS: u64 = 60_000;

/// What a sealing thread's sector is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    AddPiece,
    Pc1,
    Pc2,
    WaitSeed,
    C1,
    C2,
    Persist,
    ProofLanding,
}

impl Stage {
    /// The steps it runs (add-piece with tree-d), and the processor it needs.
    fn work(self) -> (&'static [StepKind], Option<Processor>) {
        match self {
            Stage::AddPiece => (&[StepKind::AddPiece, StepKind::TreeD], None),
            Stage::Pc1 => (&[StepKind::Pc1], Some(Processor::Pc1)),
            Stage::Pc2 => (&[StepKind::Pc2], Some(Processor::Gpu)),
            Stage::C1 => (&[StepKind::C1], None),
            Stage::C2 => (&[StepKind::C2], Some(Processor::Gpu)),
            Stage::Persist => (&[StepKind::Persist], None),
            Stage::WaitSeed | Stage::ProofLanding => (&[], None),
        }
    }

    fn next(self) -> Option<Stage> {
        Some(match self {
            Stage::AddPiece => Stage::Pc1,
            Stage::Pc1 => Stage::Pc2,
            Stage::Pc2 => Stage::WaitSeed,
            Stage::WaitSeed => Stage::C1,
            Stage::C1 => Stage::C2,
            Stage::C2 => Stage::Persist,
            Stage::Persist => Stage::ProofLanding,
            Stage::ProofLanding => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Processor {
    Pc1,
    Gpu,
}

struct Thread {
    node: usize,
    stage: Stage,
    started_ms: u64,
    /// When the step under way began, and whether it fails halfway.
    since_ms: u64,
    fails: bool,
}

struct Node {
    pc1_free: u32,
    gpus_free: u32,
    pc1_queue: VecDeque<usize>,
    gpu_queue: VecDeque<usize>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    /// The thread's step (or wait) ends.
    Done(usize),
    /// The thread tries its stage again after a failure.
    Retry(usize),
    Sample,
}

/// Runs the farm as damocles-worker would, over the same window as the world.
pub fn baseline(farm: &Farm, seed: u64, window: Window) -> Result<Figures, String> {
    Baseline::new(farm, seed, window)?.run()
}

struct Baseline<'a> {
    farm: &'a Farm,
    rng: StdRng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    nodes: Vec<Node>,
    threads: Vec<Thread>,
    meter: Meter,
    window: Window,
}

impl<'a> Baseline<'a> {
    fn new(farm: &'a Farm, seed: u64, window: Window) -> Result<Self, String> {
        let sealing: Vec<&super::farm::NodeClass> =
            farm.nodes.iter().filter(|n| n.nvme_gib > 0.0).collect();
        if let Some(class) = sealing.iter().find(|n| n.gpus == 0) {
            return Err(format!(
                "the damocles-worker baseline runs PC2 and C2 on the sector's node, and node \
                 class {} has workspace disk but no GPU",
                class.name
            ));
        }
        let count: u32 = sealing.iter().map(|n| n.count).sum();
        let in_flight: u32 = farm.pools.iter().map(|p| p.spec.in_flight).sum();
        let mut nodes = Vec::new();
        let mut threads = Vec::new();
        for class in &sealing {
            for _ in 0..class.count {
                let index = nodes.len();
                // The pools' sectors shared out evenly, the first nodes taking the remainder.
                let share = in_flight / count + u32::from((index as u32) < in_flight % count);
                let disk = (class.nvme_gib / farm.workspace_gib).floor() as u32;
                for _ in 0..share.min(disk) {
                    threads.push(Thread {
                        node: index,
                        stage: Stage::AddPiece,
                        started_ms: 0,
                        since_ms: 0,
                        fails: false,
                    });
                }
                nodes.push(Node {
                    pc1_free: class.ccx,
                    gpus_free: class.gpus,
                    pc1_queue: VecDeque::new(),
                    gpu_queue: VecDeque::new(),
                });
            }
        }
        let capacity = Capacity {
            ccx: sealing.iter().map(|n| n.ccx * n.count).sum(),
            gpus: farm.nodes.iter().map(|n| (n.gpus * n.count) as f64).sum(),
            nvme_gib: farm.nodes.iter().map(|n| n.nvme_gib * n.count as f64).sum(),
            nodes: farm.nodes.iter().map(|n| n.count as usize).sum(),
        };
        Ok(Baseline {
            farm,
            rng: StdRng::seed_from_u64(seed),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            threads,
            meter: Meter::new(window, capacity),
            window,
        })
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at_ms, self.seq, event)));
    }

    fn run(mut self) -> Result<Figures, String> {
        for thread in 0..self.threads.len() {
            self.enter(thread);
        }
        self.push(SAMPLE_MS, Event::Sample);
        while let Some(Reverse((at, _, event))) = self.queue.pop() {
            if at > self.window.end_ms {
                break;
            }
            if at >= self.window.warmup_ms && self.now_ms < self.window.warmup_ms {
                self.meter.start_window();
            }
            self.now_ms = at;
            match event {
                Event::Done(thread) => self.done(thread),
                Event::Retry(thread) => self.enter(thread),
                Event::Sample => {
                    self.sample();
                    self.push(self.now_ms + SAMPLE_MS, Event::Sample);
                }
            }
        }
        Ok(self.meter.figures())
    }

    /// The thread's sector enters its stage: a wait on the chain, a step that needs no
    /// processor, or a place in its processor's queue.
    fn enter(&mut self, thread: usize) {
        let stage = self.threads[thread].stage;
        let chain = &self.farm.chain;
        let block_ms = chain.block_seconds * 1000.0;
        let epoch = |ms: u64| (ms as f64 / block_ms).floor() as i64;
        let at_epoch = |epoch: i64| (epoch as f64 * block_ms).ceil() as u64;
        match stage {
            // PreCommit submitted now; the seed is drawn once it has landed and the challenge
            // delay has passed, as the dev manager's chain answers WaitSeed.
            Stage::WaitSeed => {
                let seed = epoch(self.now_ms) + chain.landing_epochs + chain.seed_delay_epochs;
                self.push(at_epoch(seed).max(self.now_ms), Event::Done(thread));
            }
            Stage::ProofLanding => {
                let landed = epoch(self.now_ms) + chain.landing_epochs;
                self.push(at_epoch(landed).max(self.now_ms), Event::Done(thread));
            }
            _ => match stage.work().1 {
                None => self.start(thread),
                Some(processor) => {
                    let node = &mut self.nodes[self.threads[thread].node];
                    let (free, queue) = match processor {
                        Processor::Pc1 => (&mut node.pc1_free, &mut node.pc1_queue),
                        Processor::Gpu => (&mut node.gpus_free, &mut node.gpu_queue),
                    };
                    if *free > 0 {
                        *free -= 1;
                        self.start(thread);
                    } else {
                        queue.push_back(thread);
                    }
                }
            },
        }
    }

    /// The thread's step starts (its processor, if any, taken).
    fn start(&mut self, thread: usize) {
        let steps = &self.farm.steps;
        let (kinds, _) = self.threads[thread].stage.work();
        let mut work_s = steps.draw(&mut self.rng, kinds);
        let fails = self.rng.gen_bool(steps.failure_rate.clamp(0.0, 1.0));
        if fails {
            work_s /= 2.0;
        }
        let t = &mut self.threads[thread];
        t.since_ms = self.now_ms;
        t.fails = fails;
        self.push(self.now_ms + (work_s * 1000.0) as u64, Event::Done(thread));
    }

    fn done(&mut self, thread: usize) {
        let (stage, node, since, fails) = {
            let t = &self.threads[thread];
            (t.stage, t.node, t.since_ms, t.fails)
        };
        match stage {
            Stage::Pc1 => self.meter.pc1(since, self.now_ms, 1, 1),
            Stage::Pc2 => self.meter.gpu("pc2", since, self.now_ms, 1.0),
            Stage::C2 => self.meter.gpu("c2", since, self.now_ms, 1.0),
            _ => {}
        }
        if let Some(processor) = stage.work().1 {
            self.release(node, processor);
        }
        if fails {
            self.meter.counters.failures += 1;
            self.threads[thread].fails = false;
            self.push(self.now_ms + RECOVER_MS, Event::Retry(thread));
            return;
        }
        let next = match stage.next() {
            Some(next) => next,
            None => {
                // The proof landed: the sector is sealed, and the thread takes a new one.
                let started = self.threads[thread].started_ms;
                self.meter.finished(self.now_ms, started);
                self.threads[thread].started_ms = self.now_ms;
                Stage::AddPiece
            }
        };
        self.threads[thread].stage = next;
        self.enter(thread);
    }

    /// A processor is free: the first thread waiting for it on the node takes it.
    fn release(&mut self, node: usize, processor: Processor) {
        let n = &mut self.nodes[node];
        let (free, queue) = match processor {
            Processor::Pc1 => (&mut n.pc1_free, &mut n.pc1_queue),
            Processor::Gpu => (&mut n.gpus_free, &mut n.gpu_queue),
        };
        match queue.pop_front() {
            Some(next) => self.start(next),
            None => *free += 1,
        }
    }

    fn sample(&mut self) {
        let mut waiting: BTreeMap<String, u32> = BTreeMap::new();
        for n in &self.nodes {
            for (queue, _) in [(&n.pc1_queue, "pc1"), (&n.gpu_queue, "gpu")] {
                for thread in queue {
                    let step = self.threads[*thread].stage.work().0[0];
                    *waiting.entry(step.to_string()).or_default() += 1;
                }
            }
        }
        let disk = self.threads.len() as f64 * self.farm.workspace_gib;
        self.meter.sample(
            self.now_ms,
            waiting,
            BTreeMap::new(),
            disk,
            self.threads.len() as u32,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(hours: u64) -> Window {
        Window {
            warmup_ms: 12 * 3_600_000,
            end_ms: (12 + hours) * 3_600_000,
        }
    }

    /// Preset (a) under damocles-worker: 14 threads a node for 8 CCXs keep PC1 busy, so the farm
    /// seals near its PC1 bound (640 a day), one PC1 per CCX.
    #[test]
    fn the_baseline_keeps_pc1_near_its_bound() {
        let farm = Farm::load("a").unwrap();
        let figures = baseline(&farm, 7, window(24)).unwrap();
        assert!(
            (0.9 * 640.0..=640.0 * 1.01).contains(&figures.sectors_per_day),
            "{figures:?}"
        );
        assert!(figures.pc1_ccx_utilisation > 0.9, "{figures:?}");
        assert_eq!(figures.pc1_per_busy_ccx, 1.0);
        assert!(figures.gpu["c2"] > 0.0 && figures.gpu["pc2"] > 0.0);
        assert!(!figures.gpu.contains_key("parameter load"));
    }

    /// Threads beyond what a node's disk holds are not started, and a sealing node without a
    /// GPU cannot run damocles-worker's PC2 or C2: no baseline, and the reason.
    #[test]
    fn the_baseline_keeps_to_the_disk_and_needs_a_gpu_where_the_sectors_are() {
        let mut farm = Farm::load("a").unwrap();
        farm.nodes[0].nvme_gib = 4.0 * farm.workspace_gib;
        let few = baseline(&farm, 7, window(24)).unwrap();
        // 4 sectors a node, each about 4.7 h from allocation to proof.
        assert!(few.sectors_per_day < 10.0 * 4.0 * 24.0 / 4.5, "{few:?}");
        assert!(few.tasks_mean <= 40.0);
        farm.nodes[0].gpus = 0;
        let err = baseline(&farm, 7, window(24)).unwrap_err();
        assert!(err.contains("no GPU"), "{err}");
    }
}
