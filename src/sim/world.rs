//! The simulated farm: a virtual clock and an event queue, the tasks driven through the real
//! reconcile loop ([`Reconcile`]) and pool core ([`crate::pool::decide`]), the real slot table
//! ([`Slots`]), the dev manager's chain rules ([`ChainState`]) answered in memory, and models of
//! what the operator does not decide: kube-scheduler, kubelet, the step processes.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::time::Duration;
use std::time::Instant;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::farm::Farm;
use super::report::{Meter, Window};
use crate::api::{Phase, SealingPoolStatus, SealingTask, State};
use crate::controller::slots::Slots;
use crate::dev::manager::chain::{ChainError, ChainRules, ChainState, Submit};
use crate::dev::manager::lifecycle::reserve_space;
use crate::manager::client::ManagerError;
use crate::manager::wire::{SectorStateResp, StoreBasicInfo};
use crate::manager::{Call, Reply};
use crate::plan::StepKind;
use crate::pool::{self, Member, POOL_LABEL};
use crate::sector::FailureLevel;
use crate::step::{StepRequest, StepResult};
use crate::task::profiles::{quantity, requested};
use crate::task::reconcile::{Answer, Io, Reconcile};
use crate::task::{
    CallFailure, CleanupPod, Effect, Observed, PodReport, PodToCreate, Question, Remembered, Rules,
    SlotsFull, StartProblem, StepPod, Task, Wake, WorkspaceMount, condition, status,
};

/// The simulated wall clock starts here (seconds since the epoch).
const EPOCH_BASE: i64 = 1_800_000_000;
/// The chain head at the start.
const HEAD_BASE: i64 = 100_000;
/// A workspace cleanup pod's run, in milliseconds.
const CLEANUP_MS: u64 = 5_000;
/// How often the queues are sampled.
pub const SAMPLE_MS: u64 = 600_000;
/// From a change the operator watches (a pod ended, a task was written) to its reconcile acting
/// on it: the informer's delivery and the reconcile's API calls, tens of milliseconds each on a
/// real apiserver. kube-scheduler sees the same change at once, so a pod that frees a node's
/// requests lets a pending pod in before the operator creates the task's next one.
const WATCH_MS: u64 = 100;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Reconcile { task: String, generation: u64 },
    Schedule,
    PodRunning { pod: String },
    PodDone { pod: String, generation: u64 },
    CleanupDone { pod: String },
    Pools,
    Sample,
}

struct Node {
    name: String,
    labels: BTreeMap<String, String>,
    taints: Vec<(String, Option<String>)>,
    cpu: f64,
    memory: f64,
    gpus: f64,
    ccx: u32,
    nvme_gib: f64,
    used_cpu: f64,
    used_memory: f64,
    used_gpus: f64,
    /// What kube-scheduler's scoring counts as requested: a pod that requests no cpu or memory
    /// counts as 100m and 200Mi.
    scored_cpu: f64,
    scored_memory: f64,
    disk_gib: f64,
    pulled: bool,
    /// Running PC1 pods, which share the node's core complexes.
    pc1: Vec<String>,
    pc1_since_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PodPhase {
    Pending,
    /// Bound, container not running yet.
    Starting,
    Running,
    Succeeded,
    Failed,
}

struct Pod {
    owner: String,
    step: StepKind,
    request: StepRequest,
    needs: Needs,
    selector: BTreeMap<String, String>,
    tolerations: Vec<Toleration>,
    pinned: Option<String>,
    /// The index of the node it is pinned to.
    pinned_node: Option<usize>,
    /// What decides where it fits (step, requests, selector, tolerations, pin): pods of one
    /// shape fit the same nodes.
    shape: u64,
    avoid: Option<String>,
    workspace: WorkspaceMount,
    created_ms: u64,
    seq: u64,
    phase: PodPhase,
    node: Option<usize>,
    bound_ms: u64,
    running_ms: u64,
    /// Seconds of work at full speed still to do, as of `since_ms`.
    work_left: f64,
    since_ms: u64,
    rate: f64,
    generation: u64,
    /// Parameter loading at the start of the run (C2), in seconds.
    load_seconds: f64,
    /// GPU time is counted up to here.
    counted_ms: u64,
    fails: Option<String>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Needs {
    cpu: f64,
    memory: f64,
    gpus: f64,
}

impl Needs {
    /// kube-scheduler's non-zero requests for scoring (DefaultMilliCPURequest,
    /// DefaultMemoryRequest).
    fn scored(&self) -> (f64, f64) {
        (
            if self.cpu > 0.0 { self.cpu } else { 0.1 },
            if self.memory > 0.0 {
                self.memory
            } else {
                200.0 * 1024.0 * 1024.0
            },
        )
    }

    /// A pod's requests; a resource with only a limit is requested at its limit, as the
    /// apiserver defaults it.
    fn of(resources: Option<&ResourceRequirements>) -> Result<Self, String> {
        let mut needs = Needs::default();
        for (name, target) in [
            ("cpu", &mut needs.cpu),
            ("memory", &mut needs.memory),
            ("nvidia.com/gpu", &mut needs.gpus),
        ] {
            if let Some(value) = requested(resources, name) {
                *target = quantity(&value.0)?;
            }
        }
        Ok(needs)
    }
}

struct SimTask {
    task: SealingTask,
    generation: u64,
    remembered: Remembered,
    heartbeat_ms: Option<u64>,
    created_ms: u64,
    pool: usize,
    /// The node whose disk holds the task's workspace.
    disk: Option<usize>,
    phase: Option<Phase>,
    /// A reconcile of it is under way: a watch event now makes one more run after it, as
    /// kube-runtime's controller does.
    reconciling: bool,
    triggered: bool,
}

struct PoolState {
    name: String,
    spec: crate::api::SealingPoolSpec,
    status: SealingPoolStatus,
}

/// What the world changes about how pods run, for the references the real run is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The farm as written.
    AsWritten,
    /// No pod start, no image pull, no parameter load: the most the operator's decisions allow.
    Oracle,
}

pub struct World {
    farm: Farm,
    rules: Rc<Rules>,
    chain_rules: ChainRules,
    chain: ChainState,
    stores: Vec<StoreBasicInfo>,
    variant: Variant,
    rng: StdRng,
    now_ms: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Event)>>,
    nodes: Vec<Node>,
    tasks: BTreeMap<String, SimTask>,
    pods: BTreeMap<String, Pod>,
    /// The pending pods in the scheduler's queue order.
    pending: BTreeSet<(u64, String)>,
    node_index: HashMap<String, usize>,
    /// Whether a pod of a shape fits some node when it is empty.
    ever_fits: std::cell::RefCell<HashMap<u64, bool>>,
    cleanups: BTreeMap<String, (String, u64)>,
    pools: Vec<PoolState>,
    slots: Slots,
    /// The slot table's clock: virtual time from here.
    clock_base: Instant,
    /// Tasks refused a slot at their last ask, by step.
    slot_waiting: BTreeMap<String, StepKind>,
    schedule_due: bool,
    pools_due: bool,
    pub meter: Meter,
}

fn head_of(now_ms: u64, block_seconds: f64) -> i64 {
    HEAD_BASE + (now_ms as f64 / 1000.0 / block_seconds) as i64
}

impl World {
    pub fn new(
        farm: &Farm,
        rules: Rules,
        seed: u64,
        variant: Variant,
        window: Window,
    ) -> Result<Self, String> {
        let mut nodes = Vec::new();
        for class in &farm.nodes {
            let taints = class
                .taints
                .iter()
                .map(|t| match t.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (t.clone(), None),
                })
                .collect::<Vec<_>>();
            for i in 0..class.count {
                let mut labels = class.labels.clone();
                let name = format!("{}-{i}", class.name);
                labels.insert("kubernetes.io/hostname".into(), name.clone());
                nodes.push(Node {
                    name,
                    labels,
                    taints: taints.clone(),
                    cpu: class.cores as f64,
                    memory: class.memory_gib * (1u64 << 30) as f64,
                    gpus: class.gpus as f64,
                    ccx: class.ccx,
                    nvme_gib: class.nvme_gib,
                    used_cpu: 0.0,
                    used_memory: 0.0,
                    used_gpus: 0.0,
                    scored_cpu: 0.0,
                    scored_memory: 0.0,
                    disk_gib: 0.0,
                    pulled: false,
                    pc1: Vec::new(),
                    pc1_since_ms: 0,
                });
            }
        }
        let pools = farm
            .pools
            .iter()
            .map(|p| PoolState {
                name: p.name.clone(),
                spec: p.spec.clone(),
                status: SealingPoolStatus::default(),
            })
            .collect();
        let meter = Meter::new(window, nodes_summary(&nodes));
        let node_index = nodes
            .iter()
            .enumerate()
            .map(|(i, n): (usize, &Node)| (n.name.clone(), i))
            .collect();
        let mut world = World {
            farm: farm.clone(),
            rules: Rc::new(rules),
            chain_rules: farm.chain.rules(),
            chain: ChainState::default(),
            stores: vec![StoreBasicInfo {
                name: "persist".into(),
                path: "/var/lib/damocles/persist".into(),
                strict: false,
                read_only: false,
                weight: 1,
                meta: None,
            }],
            variant,
            rng: StdRng::seed_from_u64(seed),
            now_ms: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            tasks: BTreeMap::new(),
            pods: BTreeMap::new(),
            pending: BTreeSet::new(),
            node_index,
            ever_fits: Default::default(),
            cleanups: BTreeMap::new(),
            pools,
            slots: Slots::default(),
            clock_base: Instant::now(),
            slot_waiting: BTreeMap::new(),
            schedule_due: false,
            pools_due: false,
            meter,
        };
        world.push(0, Event::Pools);
        world.push(SAMPLE_MS, Event::Sample);
        Ok(world)
    }

    fn push(&mut self, at_ms: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at_ms, self.seq, event)));
    }

    fn now_s(&self) -> i64 {
        EPOCH_BASE + (self.now_ms / 1000) as i64
    }

    fn head(&self) -> i64 {
        head_of(self.now_ms, self.chain_rules.block_seconds)
    }

    /// Runs until `until_ms` of virtual time.
    pub fn run(&mut self, until_ms: u64) -> Result<(), String> {
        while let Some(Reverse((at, _, event))) = self.queue.pop() {
            if at > until_ms {
                self.queue.push(Reverse((at, 0, event)));
                break;
            }
            self.now_ms = at;
            self.handle(event)?;
        }
        self.now_ms = until_ms;
        let ids: Vec<usize> = (0..self.nodes.len()).collect();
        for node in ids {
            self.account_pc1(node);
        }
        let busy: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, p)| {
                p.node.is_some() && matches!(p.phase, PodPhase::Starting | PodPhase::Running)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for pod in busy {
            self.account_gpu(&pod, until_ms);
        }
        Ok(())
    }

    fn handle(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Reconcile { task, generation } => {
                if self
                    .tasks
                    .get(&task)
                    .is_some_and(|t| t.generation == generation)
                {
                    self.reconcile(&task)?;
                }
            }
            Event::Schedule => {
                self.schedule_due = false;
                self.schedule();
            }
            Event::PodRunning { pod } => self.pod_running(&pod),
            Event::PodDone { pod, generation } => {
                if self
                    .pods
                    .get(&pod)
                    .is_some_and(|p| p.generation == generation && p.phase == PodPhase::Running)
                {
                    self.pod_done(&pod);
                }
            }
            Event::CleanupDone { pod } => {
                if let Some((owner, _)) = self.cleanups.get(&pod).cloned() {
                    if let Some(task) = self.tasks.get_mut(&owner)
                        && let Some(node) = task.disk.take()
                    {
                        self.nodes[node].disk_gib -= self.farm.workspace_gib;
                    }
                    self.wake(&owner);
                }
            }
            Event::Pools => {
                self.pools_due = false;
                self.reconcile_pools();
            }
            Event::Sample => {
                self.sample();
                self.push(self.now_ms + SAMPLE_MS, Event::Sample);
            }
        }
        Ok(())
    }

    /// A watch event for `task` (it or one of its pods changed): reconcile it now, or once the
    /// reconcile under way ends.
    fn wake(&mut self, task: &str) {
        if let Some(t) = self.tasks.get_mut(task) {
            if t.reconciling {
                t.triggered = true;
                return;
            }
            let generation = t.generation;
            self.push(
                self.now_ms + WATCH_MS,
                Event::Reconcile {
                    task: task.to_string(),
                    generation,
                },
            );
        }
    }

    fn wake_pools(&mut self) {
        if !self.pools_due {
            self.pools_due = true;
            self.push(self.now_ms, Event::Pools);
        }
    }

    fn wake_scheduler(&mut self) {
        if !self.schedule_due {
            self.schedule_due = true;
            self.push(self.now_ms, Event::Schedule);
        }
    }

    // ---- the operator: pools and tasks, through the real core --------------------------------

    fn reconcile_pools(&mut self) {
        for index in 0..self.pools.len() {
            let name = self.pools[index].name.clone();
            let members: Vec<Member> =
                self.tasks
                    .iter()
                    .filter(|(_, t)| t.pool == index)
                    .map(|(key, t)| Member {
                        name: key.clone(),
                        phase: t.task.status.as_ref().and_then(|s| s.phase),
                        workspace_cleaned: t.task.status.as_ref().is_some_and(|s| {
                            status::condition_true(s, condition::WORKSPACE_CLEANED)
                        }),
                    })
                    .collect();
            let pool = &self.pools[index];
            let decision = pool::decide(&name, &pool.spec, &pool.status, &members);
            if decision.status != pool.status {
                self.meter.counters.writes += 1;
            }
            self.pools[index].status = decision.status;
            for task in decision.create {
                self.create_task(index, &task);
            }
            for task in decision.delete {
                self.delete_task(&task);
            }
        }
    }

    fn create_task(&mut self, pool: usize, name: &str) {
        let spec = self.pools[pool].spec.template.task_spec();
        let mut task = SealingTask::new(name, spec);
        task.metadata.namespace = Some("farm".into());
        task.metadata.generation = Some(1);
        task.metadata.labels = Some(BTreeMap::from([(
            POOL_LABEL.to_string(),
            self.pools[pool].name.clone(),
        )]));
        self.meter.counters.writes += 1;
        self.tasks.insert(
            name.to_string(),
            SimTask {
                task,
                generation: 0,
                remembered: Remembered::default(),
                heartbeat_ms: None,
                created_ms: self.now_ms,
                pool,
                disk: None,
                phase: None,
                reconciling: false,
                triggered: false,
            },
        );
        self.wake(name);
    }

    fn delete_task(&mut self, name: &str) {
        let now = Time(Timestamp::from_second(self.now_s()).expect("a time"));
        if let Some(t) = self.tasks.get_mut(name) {
            if t.task.metadata.deletion_timestamp.is_none() {
                t.task.metadata.deletion_timestamp = Some(now);
                self.meter.counters.writes += 1;
            }
            self.wake(name);
        }
    }

    fn reconcile(&mut self, key: &str) -> Result<(), String> {
        self.meter.counters.reconciles += 1;
        let rules = self.rules.clone();
        let now = self.now_s();
        let t = &self.tasks[key];
        let half = rules.manager_heartbeat.map(|h| h.as_millis() as u64 / 2);
        let observed = Observed {
            heartbeat_recent: match (t.heartbeat_ms, half) {
                (Some(at), Some(half)) => self.now_ms.saturating_sub(at) < half,
                _ => false,
            },
            remembered: t.remembered.clone(),
            ..Observed::default()
        };
        let status = t.task.status.clone().unwrap_or_default();
        let mut reconcile = Reconcile::new(status, observed, &rules);
        self.tasks.get_mut(key).expect("the task").reconciling = true;
        loop {
            let io = reconcile.next(Task::of(&self.tasks[key].task), now);
            match io {
                Io::Write(write) => {
                    self.meter.counters.writes += 1;
                    let t = self.tasks.get_mut(key).expect("the task");
                    let phase = write.status.phase;
                    t.task.status = Some(*write.status);
                    t.triggered = true;
                    if phase != t.phase {
                        t.phase = phase;
                        self.wake_pools();
                    }
                }
                Io::Apply(effect) => self.apply(key, effect, &mut reconcile),
                Io::Report { call, .. } => {
                    let _ = self.manager(&call);
                }
                Io::Ask(question) => {
                    let answer = self.answer(key, question);
                    reconcile.answer(answer);
                }
                Io::HeartbeatSent => {
                    self.tasks.get_mut(key).expect("the task").heartbeat_ms = Some(self.now_ms);
                }
                Io::Remember(facts) => {
                    self.tasks.get_mut(key).expect("the task").remembered = facts;
                }
                Io::Wait(wake) => {
                    self.wait(key, wake);
                    return Ok(());
                }
            }
        }
    }

    fn wait(&mut self, key: &str, wake: Wake) {
        let t = self.tasks.get_mut(key).expect("the task");
        t.generation += 1;
        t.reconciling = false;
        let generation = t.generation;
        if std::mem::take(&mut t.triggered) && wake != Wake::Release {
            self.push(
                self.now_ms,
                Event::Reconcile {
                    task: key.to_string(),
                    generation,
                },
            );
        }
        let after = match wake {
            Wake::After(delay) => Some(delay),
            Wake::CleanupPending => Some(Duration::from_secs(5)),
            Wake::OnChange => None,
            Wake::Release => {
                self.slots.release(&slot_key(key));
                self.slot_waiting.remove(key);
                if let Some(t) = self.tasks.remove(key)
                    && let Some(node) = t.disk
                {
                    self.nodes[node].disk_gib -= self.farm.workspace_gib;
                }
                self.meter.counters.writes += 1;
                self.wake_pools();
                return;
            }
            Wake::Ask(_) => unreachable!("the reconcile loop answers questions"),
        };
        if let Some(delay) = after {
            let at = self.now_ms + delay.as_millis() as u64;
            self.push(
                at,
                Event::Reconcile {
                    task: key.to_string(),
                    generation,
                },
            );
        }
    }

    fn apply(&mut self, key: &str, effect: Effect, reconcile: &mut Reconcile<'_>) {
        match effect {
            Effect::CreateStepPod(pod) => {
                self.meter.counters.writes += 1;
                if self.pods.contains_key(&pod.name) {
                    reconcile.pod_existed();
                } else if let Err(message) = self.create_pod(key, &pod) {
                    reconcile.pod_refused(&pod.name, FailureLevel::Permanent, message);
                }
            }
            Effect::CreateCleanupPod { name, .. } => {
                self.meter.counters.writes += 1;
                self.cleanups
                    .insert(name.clone(), (key.to_string(), self.now_ms + CLEANUP_MS));
                self.push(self.now_ms + CLEANUP_MS, Event::CleanupDone { pod: name });
            }
            Effect::DeletePod(name) => {
                self.meter.counters.writes += 1;
                self.remove_pod(&name);
            }
            Effect::DeleteTaskPods => {
                self.meter.counters.writes += 1;
                let names: Vec<String> = self
                    .pods
                    .iter()
                    .filter(|(_, p)| p.owner == key)
                    .map(|(n, _)| n.clone())
                    .collect();
                for name in names {
                    self.remove_pod(&name);
                }
                self.cleanups.retain(|_, (owner, _)| owner != key);
            }
            Effect::DeleteTask => self.delete_task(key),
            Effect::ClearResumeRequest => {
                self.meter.counters.writes += 1;
                if let Some(t) = self.tasks.get_mut(key) {
                    t.task.spec.resume_state = None;
                    t.triggered = true;
                }
            }
            Effect::ReleaseSlot => self.slots.release(&slot_key(key)),
            Effect::Tell(call) => {
                let _ = self.manager(&call);
            }
            Effect::ReportState(call) => {
                let _ = self.manager(&call);
            }
            Effect::Transition { to, .. } => {
                let created = self.tasks[key].created_ms;
                match to {
                    State::Finished => self.meter.finished(self.now_ms, created),
                    State::Aborted => self.meter.counters.aborted += 1,
                    _ => {}
                }
            }
            Effect::TicketExpiring => self.meter.counters.ticket_rewinds += 1,
            Effect::Failure { .. } => self.meter.counters.failures += 1,
            Effect::Event { .. } => self.meter.counters.writes += 1,
            Effect::WriteStatus
            | Effect::StepFinished { .. }
            | Effect::Log { .. }
            | Effect::Remember(_) => {}
        }
    }

    fn answer(&mut self, key: &str, question: Question) -> Answer {
        match question {
            Question::StepPod(name) => {
                let found = self.pods.get(&name).map(|pod| self.step_pod(pod));
                Answer::StepPod(name, found)
            }
            Question::NodeExists(node) => {
                self.meter.counters.node_reads += 1;
                let exists = self.nodes.iter().any(|n| n.name == node);
                Answer::NodeExists(node, exists)
            }
            Question::Slot { step, cap } => {
                let now = self.clock_base + Duration::from_millis(self.now_ms);
                let taken = self
                    .slots
                    .take_at(
                        &slot_key(key),
                        step,
                        cap,
                        self.tasks.values().map(|t| &t.task),
                        now,
                    )
                    .map_err(|full| SlotsFull {
                        holders: full.holders,
                        cap: full.cap,
                    });
                if taken.is_ok() {
                    self.slot_waiting.remove(key);
                } else {
                    self.slot_waiting.insert(key.to_string(), step);
                }
                Answer::Slot(step, taken)
            }
            Question::Manager(call) => {
                let reply = self.manager(&call);
                Answer::Manager(*call, reply)
            }
            Question::SectorState(call) => Answer::SectorState(self.manager(&call)),
            Question::CleanupPod(name) => Answer::CleanupPod(match self.cleanups.get(&name) {
                None => CleanupPod::Absent,
                Some((_, done)) if *done <= self.now_ms => CleanupPod::Exited(0),
                Some(_) => CleanupPod::Running {
                    created: Some(self.now_s()),
                },
            }),
        }
    }

    /// The manager: the dev manager's chain rules, answered in memory, its refusals turned into
    /// what the JSON-RPC client makes of them.
    fn manager(&mut self, call: &Call) -> Result<Reply, CallFailure> {
        self.meter.counters.manager_calls += 1;
        let head = self.head();
        let rules = &self.chain_rules;
        // No settle_upgrades: it walks every sector, and the simulated farm upgrades none.
        let chain = &mut self.chain;
        let submit = |reset: bool| Submit {
            reset,
            fail_on_chain: None,
        };
        let answer: Result<Reply, ChainError> = match call {
            Call::AllocateSector(spec) => Ok(Reply::Sector(chain.allocate(rules, spec))),
            Call::AcquireDeals { .. } => Ok(Reply::Deals(Vec::new())),
            Call::AssignTicket(id) => chain.assign_ticket(rules, *id, head).map(Reply::Ticket),
            Call::SubmitPreCommit {
                sector,
                info,
                reset,
            } => chain
                .submit_pre_commit(rules, sector, info, submit(*reset), head)
                .map(|(resp, _)| Reply::Submit(resp)),
            Call::PollPreCommitState(id) => {
                chain.poll_pre_commit(rules, *id, head).map(Reply::Poll)
            }
            Call::StoreReserveSpace { candidates, .. } => {
                Ok(Reply::Store(reserve_space(&self.stores, candidates)))
            }
            Call::StoreBasicInfo { instance } => Ok(Reply::Store(
                self.stores.iter().find(|s| &s.name == instance).cloned(),
            )),
            Call::SubmitPersistedEx {
                sector,
                instance,
                upgrade,
            } => chain
                .submit_persisted(rules, *sector, instance, *upgrade, true)
                .map(Reply::Persisted),
            Call::WaitSeed { sector, .. } => chain.wait_seed(rules, *sector, head).map(Reply::Seed),
            Call::SubmitProof {
                sector,
                proof,
                reset,
            } => {
                let sha256 = hex::encode(Sha256::digest(&proof.proof.0));
                chain
                    .proof_answer_before_verify(rules, *sector, &sha256, *reset, head)
                    .and_then(|_| {
                        chain.submit_proof(rules, *sector, &sha256, true, submit(*reset), head)
                    })
                    .map(|(resp, _)| Reply::Submit(resp))
            }
            Call::PollProofState(id) => chain.poll_proof(rules, *id, head).map(Reply::Poll),
            Call::ReportState { sector, report } => {
                let text = format!(
                    "{} -> {} ({})",
                    report.state_change.prev, report.state_change.next, report.state_change.event
                );
                chain.report(rules, *sector, text).map(|record| {
                    Reply::State(Some(SectorStateResp {
                        id: *sector,
                        finalized: record.finalized,
                        abort_reason: Some(record.aborted.clone().unwrap_or_default()),
                    }))
                })
            }
            Call::ReportFinalized(id) => chain.finalize(rules, *id).map(|_| Reply::Done),
            Call::ReportAborted { sector, reason } => {
                chain.abort(rules, *sector, reason).map(|_| Reply::Done)
            }
            Call::WorkerPing(_) => Ok(Reply::Done),
            other => {
                return Err(CallFailure {
                    level: FailureLevel::Permanent,
                    message: format!(
                        "{}: the simulator's manager serves the sealer plan only",
                        other.method()
                    ),
                    code: Some(crate::manager::wire::ERR_METHOD_NOT_FOUND),
                    unavailable: false,
                    never_sent: false,
                });
            }
        };
        answer.map_err(|err| {
            let (code, message) = err.rpc();
            let err = ManagerError::Rpc {
                method: call.method().to_string(),
                code,
                message,
            };
            CallFailure {
                level: err.level(),
                message: err.to_string(),
                code: err.code(),
                unavailable: err.is_unavailable(),
                never_sent: err.never_sent(),
            }
        })
    }

    // ---- kube-scheduler and kubelet ------------------------------------------------------------

    fn create_pod(&mut self, owner: &str, create: &PodToCreate) -> Result<(), String> {
        let needs = Needs::of(create.profile.resources.as_ref())?;
        self.seq += 1;
        let selector = create.profile.node_selector.clone().unwrap_or_default();
        let tolerations = create.profile.tolerations.clone().unwrap_or_default();
        let mut shape = DefaultHasher::new();
        create.request.step.to_string().hash(&mut shape);
        [needs.cpu, needs.memory, needs.gpus]
            .map(f64::to_bits)
            .hash(&mut shape);
        selector.hash(&mut shape);
        for t in &tolerations {
            (&t.key, &t.operator, &t.value, &t.effect).hash(&mut shape);
        }
        create.node.hash(&mut shape);
        let pod = Pod {
            owner: owner.to_string(),
            step: create.request.step,
            request: create.request.clone(),
            needs,
            selector,
            tolerations,
            pinned_node: create
                .node
                .as_ref()
                .and_then(|n| self.node_index.get(n).copied()),
            shape: shape.finish(),
            pinned: create.node.clone(),
            avoid: create.avoid.clone(),
            workspace: create.workspace,
            created_ms: self.now_ms,
            seq: self.seq,
            phase: PodPhase::Pending,
            node: None,
            bound_ms: 0,
            running_ms: 0,
            work_left: 0.0,
            since_ms: 0,
            rate: 1.0,
            generation: 0,
            load_seconds: 0.0,
            counted_ms: 0,
            fails: None,
        };
        self.pending.insert((pod.seq, create.name.clone()));
        self.pods.insert(create.name.clone(), pod);
        self.wake(owner);
        self.wake_scheduler();
        Ok(())
    }

    fn step_pod(&self, pod: &Pod) -> StepPod {
        let report = match pod.phase {
            PodPhase::Pending => PodReport::Starting {
                reason: "Unschedulable".into(),
                problem: (!self.ever_fits(pod)).then_some(StartProblem::NoFittingNode),
            },
            PodPhase::Starting => PodReport::Starting {
                reason: "ContainerCreating".into(),
                problem: None,
            },
            PodPhase::Running => PodReport::Running,
            PodPhase::Succeeded => PodReport::Succeeded(Box::new(self.result_of(pod))),
            PodPhase::Failed => PodReport::Failed {
                level: FailureLevel::Temporary,
                message: pod.fails.clone().unwrap_or_default(),
                never_ran: false,
            },
        };
        StepPod {
            report,
            node: pod.node.map(|n| self.nodes[n].name.clone()),
            created: Some(EPOCH_BASE + (pod.created_ms / 1000) as i64),
            deleting: false,
        }
    }

    fn result_of(&self, pod: &Pod) -> StepResult {
        let mut result = crate::dev::instant::result(&pod.request);
        result.duration_ms = self.now_ms.saturating_sub(pod.running_ms);
        result
    }

    fn tolerates(pod: &Pod, node: &Node) -> bool {
        node.taints.iter().all(|(key, value)| {
            pod.tolerations.iter().any(|t| {
                let effect_ok = t.effect.as_deref().is_none_or(|e| e == "NoSchedule");
                let key_ok = t.key.as_deref().is_none_or(|k| k == key);
                let value_ok = match t.operator.as_deref() {
                    Some("Exists") => true,
                    _ => t.value.as_deref() == value.as_deref(),
                };
                effect_ok && key_ok && value_ok
            })
        })
    }

    fn matches(pod: &Pod, node: &Node) -> bool {
        pod.pinned.as_ref().is_none_or(|p| *p == node.name)
            && pod
                .selector
                .iter()
                .all(|(k, v)| node.labels.get(k) == Some(v))
            && Self::tolerates(pod, node)
    }

    fn could_ever_fit(pod: &Pod, node: &Node) -> bool {
        pod.needs.cpu <= node.cpu
            && pod.needs.memory <= node.memory
            && pod.needs.gpus <= node.gpus
            && Self::matches(pod, node)
    }

    /// Whether some node, empty, could run the pod (the nodes never change, so once per shape).
    fn ever_fits(&self, pod: &Pod) -> bool {
        *self
            .ever_fits
            .borrow_mut()
            .entry(pod.shape)
            .or_insert_with(|| self.nodes.iter().any(|n| Self::could_ever_fit(pod, n)))
    }

    /// The resources first: cheaper than the labels, and most nodes fail on them.
    fn fits_now(pod: &Pod, node: &Node) -> bool {
        pod.needs.cpu <= node.cpu - node.used_cpu + 1e-9
            && pod.needs.memory <= node.memory - node.used_memory + 1.0
            && pod.needs.gpus <= node.gpus - node.used_gpus + 1e-9
            && Self::matches(pod, node)
    }

    /// kube-scheduler: pending pods in queue order (created first), each bound to a fitting node
    /// with the best score (NodeResourcesFit LeastAllocated over cpu and memory, in whole points
    /// as the plugin scores, less for the node a replacement pod should avoid), ties broken at
    /// random as `selectHost` does; a pod that fits nowhere waits without holding up the ones
    /// behind it. Binding only takes room, so within one pass a shape that fit nowhere is not
    /// tried again, and a pinned pod is tried on its node alone.
    fn schedule(&mut self) {
        let pending: Vec<(u64, String)> = self.pending.iter().cloned().collect();
        let mut no_room: HashSet<u64> = HashSet::new();
        for (_, name) in pending {
            let pod = &self.pods[&name];
            if no_room.contains(&pod.shape) {
                continue;
            }
            let (cpu, memory) = pod.needs.scored();
            let mut best: Vec<usize> = Vec::new();
            let mut best_score = i64::MIN;
            let candidates = match pod.pinned_node {
                Some(node) => node..node + 1,
                None => 0..self.nodes.len(),
            };
            for (i, n) in self.nodes[candidates.clone()]
                .iter()
                .enumerate()
                .map(|(i, n)| (i + candidates.start, n))
            {
                if !Self::fits_now(pod, n) {
                    continue;
                }
                let free = |used: f64, cap: f64| {
                    if cap > 0.0 {
                        ((cap - used).max(0.0) * 100.0 / cap).floor() as i64
                    } else {
                        0
                    }
                };
                let mut score = (free(n.scored_cpu + cpu, n.cpu)
                    + free(n.scored_memory + memory, n.memory))
                    / 2;
                if pod.avoid.as_deref() == Some(n.name.as_str()) {
                    score -= 100;
                }
                if score > best_score {
                    best_score = score;
                    best.clear();
                }
                if score == best_score {
                    best.push(i);
                }
            }
            if best.is_empty() {
                no_room.insert(pod.shape);
            } else {
                let node = best[self.rng.gen_range(0..best.len())];
                self.bind(&name, node);
            }
        }
    }

    fn bind(&mut self, name: &str, node: usize) {
        let oracle = self.variant == Variant::Oracle;
        let first_pull = !self.nodes[node].pulled;
        self.nodes[node].pulled = true;
        let start = if oracle {
            0.0
        } else {
            self.farm.kubelet.pod_start_seconds * self.rng.gen_range(0.5..1.5)
                + if first_pull {
                    self.farm.kubelet.image_pull_seconds
                } else {
                    0.0
                }
        };
        let pod = self.pods.get_mut(name).expect("the pod");
        self.pending.remove(&(pod.seq, name.to_string()));
        pod.phase = PodPhase::Starting;
        pod.node = Some(node);
        pod.bound_ms = self.now_ms;
        let n = &mut self.nodes[node];
        n.used_cpu += pod.needs.cpu;
        n.used_memory += pod.needs.memory;
        n.used_gpus += pod.needs.gpus;
        let (cpu, memory) = pod.needs.scored();
        n.scored_cpu += cpu;
        n.scored_memory += memory;
        let owner = pod.owner.clone();
        let at = self.now_ms + (start * 1000.0) as u64;
        self.push(
            at,
            Event::PodRunning {
                pod: name.to_string(),
            },
        );
        self.wake(&owner);
    }

    fn pod_running(&mut self, name: &str) {
        let Some(pod) = self.pods.get(name) else {
            return;
        };
        if pod.phase != PodPhase::Starting {
            return;
        }
        let node = pod.node.expect("a bound pod");
        let steps: Vec<StepKind> = std::iter::once(pod.step)
            .chain(pod.request.then.iter().copied())
            .collect();
        let mut work = self.farm.steps.draw(&mut self.rng, &steps);
        let load = if steps.contains(&StepKind::C2) && self.variant != Variant::Oracle {
            self.farm.kubelet.c2_parameter_load_seconds
        } else {
            0.0
        };
        let mut fails = None;
        if self
            .rng
            .gen_bool(self.farm.steps.failure_rate.clamp(0.0, 1.0))
        {
            work /= 2.0;
            fails = Some(format!(
                "{}: a temporary error halfway (simulated)",
                pod.step
            ));
        }
        // The workspace takes its disk where its first step runs.
        if pod.workspace == WorkspaceMount::Task {
            let owner = pod.owner.clone();
            let gib = self.farm.workspace_gib;
            if let Some(task) = self.tasks.get_mut(&owner)
                && task.disk.is_none()
            {
                task.disk = Some(node);
                self.nodes[node].disk_gib += gib;
                if self.nodes[node].disk_gib > self.nodes[node].nvme_gib {
                    self.meter.counters.disk_full += 1;
                    work /= 2.0;
                    fails = Some(format!(
                        "No space left on device: node {} holds {:.0} GiB of workspaces on {:.0} GiB",
                        self.nodes[node].name, self.nodes[node].disk_gib, self.nodes[node].nvme_gib
                    ));
                }
            }
        }
        let is_pc1 = steps.contains(&StepKind::Pc1);
        if is_pc1 {
            self.account_pc1(node);
        }
        let pod = self.pods.get_mut(name).expect("the pod");
        pod.phase = PodPhase::Running;
        pod.running_ms = self.now_ms;
        pod.load_seconds = load;
        pod.work_left = work + load;
        pod.since_ms = self.now_ms;
        pod.fails = fails;
        let owner = pod.owner.clone();
        if is_pc1 {
            self.nodes[node].pc1.push(name.to_string());
            self.reschedule_pc1(node);
        } else {
            self.finish_at(name);
        }
        self.wake(&owner);
    }

    /// Schedules the end of `name`'s work at its current rate.
    fn finish_at(&mut self, name: &str) {
        let pod = self.pods.get_mut(name).expect("the pod");
        pod.generation += 1;
        let generation = pod.generation;
        let at = self.now_ms + (pod.work_left / pod.rate * 1000.0).ceil() as u64;
        self.push(
            at,
            Event::PodDone {
                pod: name.to_string(),
                generation,
            },
        );
    }

    /// The PC1s of a node share its core complexes: each runs at min(1, ccx / running).
    fn reschedule_pc1(&mut self, node: usize) {
        let running = self.nodes[node].pc1.clone();
        let ccx = self.nodes[node].ccx.max(1) as f64;
        let rate = (ccx / running.len().max(1) as f64).min(1.0);
        for name in running {
            let now = self.now_ms;
            let pod = self.pods.get_mut(&name).expect("a running PC1");
            pod.work_left -= (now - pod.since_ms) as f64 / 1000.0 * pod.rate;
            pod.work_left = pod.work_left.max(0.0);
            pod.since_ms = now;
            pod.rate = rate;
            self.finish_at(&name);
        }
    }

    fn account_pc1(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let running = n.pc1.len() as u32;
        self.meter
            .pc1(n.pc1_since_ms, self.now_ms, running.min(n.ccx), running);
        n.pc1_since_ms = self.now_ms;
    }

    fn pod_done(&mut self, name: &str) {
        self.leave_node(name);
        let pod = self.pods.get_mut(name).expect("the pod");
        pod.phase = if pod.fails.is_some() {
            PodPhase::Failed
        } else {
            PodPhase::Succeeded
        };
        let owner = pod.owner.clone();
        self.wake(&owner);
        self.wake_scheduler();
    }

    /// A bound pod stops (its run ended, or it was deleted): its GPU time is counted, a PC1
    /// leaves its node's core complexes to the others, and its requests go back to the node.
    /// Whether it was a running PC1.
    fn leave_node(&mut self, name: &str) -> bool {
        let node = self.pods[name].node.expect("a bound pod");
        self.account_gpu(name, self.now_ms);
        let was_pc1 = self.nodes[node].pc1.iter().any(|p| p == name);
        if was_pc1 {
            self.account_pc1(node);
            self.nodes[node].pc1.retain(|p| p != name);
            self.reschedule_pc1(node);
        }
        self.free(name);
        was_pc1
    }

    /// The GPU time of a pod's life since it was last counted, by what it was doing: starting,
    /// loading parameters, or its step.
    fn account_gpu(&mut self, name: &str, until_ms: u64) {
        let pod = &self.pods[name];
        if pod.needs.gpus <= 0.0 {
            return;
        }
        let gpus = pod.needs.gpus;
        let from = pod.counted_ms.max(pod.bound_ms);
        let running_ms = if pod.phase == PodPhase::Starting {
            until_ms
        } else {
            pod.running_ms
        };
        let loaded_ms = running_ms + (pod.load_seconds * 1000.0) as u64;
        let step = pod.step.to_string();
        self.meter
            .gpu("pod start", from, running_ms.min(until_ms), gpus);
        self.meter.gpu(
            "parameter load",
            from.max(running_ms),
            loaded_ms.min(until_ms),
            gpus,
        );
        self.meter.gpu(&step, from.max(loaded_ms), until_ms, gpus);
        self.pods.get_mut(name).expect("the pod").counted_ms = until_ms;
    }

    /// Gives back what a bound, unfinished pod holds on its node.
    fn free(&mut self, name: &str) {
        let pod = &self.pods[name];
        if let Some(node) = pod.node
            && matches!(pod.phase, PodPhase::Starting | PodPhase::Running)
        {
            let n = &mut self.nodes[node];
            n.used_cpu -= pod.needs.cpu;
            n.used_memory -= pod.needs.memory;
            n.used_gpus -= pod.needs.gpus;
            let (cpu, memory) = pod.needs.scored();
            n.scored_cpu -= cpu;
            n.scored_memory -= memory;
        }
    }

    fn remove_pod(&mut self, name: &str) {
        let Some(pod) = self.pods.get(name) else {
            return;
        };
        let (owner, seq) = (pod.owner.clone(), pod.seq);
        if pod.node.is_some() && matches!(pod.phase, PodPhase::Starting | PodPhase::Running) {
            if self.leave_node(name) {
                self.meter.counters.pc1_preemptions += 1;
            }
            self.wake_scheduler();
        }
        self.pending.remove(&(seq, name.to_string()));
        self.pods.remove(name);
        self.wake(&owner);
    }

    fn sample(&mut self) {
        let mut pending: BTreeMap<String, u32> = BTreeMap::new();
        for pod in self.pods.values() {
            if pod.phase == PodPhase::Pending {
                *pending.entry(pod.step.to_string()).or_default() += 1;
            }
        }
        let mut waiting_slot: BTreeMap<String, u32> = BTreeMap::new();
        for step in self.slot_waiting.values() {
            *waiting_slot.entry(step.to_string()).or_default() += 1;
        }
        let disk: f64 = self.nodes.iter().map(|n| n.disk_gib).sum();
        self.meter.sample(
            self.now_ms,
            pending,
            waiting_slot,
            disk,
            self.tasks.len() as u32,
        );
    }
}

fn slot_key(task: &str) -> String {
    format!("farm/{task}")
}

/// Capacity totals the meter needs: CCX, GPUs, NVMe.
pub struct Capacity {
    pub ccx: u32,
    pub gpus: f64,
    pub nvme_gib: f64,
    pub nodes: usize,
}

fn nodes_summary(nodes: &[Node]) -> Capacity {
    Capacity {
        ccx: nodes
            .iter()
            .filter(|n| n.nvme_gib > 0.0)
            .map(|n| n.ccx)
            .sum(),
        gpus: nodes.iter().map(|n| n.gpus).sum(),
        nvme_gib: nodes.iter().map(|n| n.nvme_gib).sum(),
        nodes: nodes.len(),
    }
}
