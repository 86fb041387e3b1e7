//! The task core: every rule of how a task moves through its plan, pure.
//!
//! [`decide`] takes a task (its spec and the status it had when this decision began), what the
//! executor has looked up for it so far in this reconcile ([`Observed`]), the time and the
//! operator's [`Rules`], and returns a [`Decision`]: the new status, the effects to carry out in
//! order (pods to create or delete, manager calls, Events, a status write that must happen before
//! what follows) and when to decide again. No kube client, no clock, no I/O.
//!
//! Where the decision needs something only the executor can find out (a step pod, a Node, a
//! concurrency slot, a manager answer) it ends with [`Wake::Ask`]: the executor carries out the
//! effects, answers the question into [`Observed`] and calls [`decide`] again with the status the
//! decision returned. Manager-only work chains through several states in one reconcile that way;
//! a running step ends it.
//!
//! Where a state's behaviour lives: its actions are in its plan file ([`crate::plan`]); what each
//! manager call sends, expects and records is in one file of [`work`] per sealing phase; step
//! requests and step-pod rules are in [`steps`], and what a step's result adds to status in
//! [`outputs`]; entering a state in [`enter`], failures in [`failure`], resume and suspend in
//! [`resume`], the end of a task (workspace cleanup, TTL, deletion) in [`cleanup`].

pub mod cleanup;
pub mod enter;
pub mod failure;
pub mod outputs;
pub mod profiles;
pub mod reconcile;
pub mod resume;
pub mod status;
pub mod steps;
pub mod work;
pub mod worker;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::api::{Phase, SealingTask, SealingTaskSpec, SealingTaskStatus, SectorRef, State};
use crate::manager::wire::SectorId;
use crate::manager::{Call, Reply};
use crate::plan::cursor::{self, Facts, Next, Outcome, Position};
use crate::plan::{Action, Event, StepKind};
use crate::sector::FailureLevel;
use crate::step::{StepRequest, StepResult};

pub use failure::{FailureDecision, RetryPolicy};
pub use profiles::{Locality, Profiles, Resolved};
pub use work::precommit::{TicketExpiry, TicketRules};

/// Status condition types and reasons the core writes.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const PROGRESSING: &str = "Progressing";
    pub const PAUSED: &str = "Paused";
    pub const FAILED: &str = "Failed";
    pub const SUSPENDED: &str = "Suspended";
    pub const RESUME_REJECTED: &str = "ResumeRejected";
    pub const WORKSPACE_CLEANED: &str = "WorkspaceCleaned";
    /// True while the manager does not answer; the task waits without spending retries.
    pub const MANAGER_UNAVAILABLE: &str = "ManagerUnavailable";
    /// The manager was told the task's sector is finalized (ReportFinalized answered).
    pub const MANAGER_FINALIZED: &str = "ManagerFinalized";
    /// The task was deleted past its PreCommit and finishes before it goes.
    pub const DELETION_HELD: &str = "DeletionHeld";
    /// An aborted unseal's request was handed back to the manager (AchieveUnsealSector with
    /// the error), before the sector's ReportFinalized.
    pub const UNSEAL_HANDED_BACK: &str = "UnsealHandedBack";
    /// The manager answered that it finalized the sector while this task's workspace holds
    /// the only replica of it: the task paused, the files kept, until a person decides.
    pub const FINALIZED_AT_MANAGER: &str = "FinalizedAtManager";
}

/// A step pod not started after this long gets a status message saying why.
pub const SLOW_START: Duration = Duration::from_secs(20);
/// How often a task waiting for a concurrency slot looks again.
pub const SLOT_RECHECK: Duration = Duration::from_secs(5);
/// How long a deletion waits for the workspace cleanup before letting the task go anyway.
pub const CLEANUP_PATIENCE: Duration = Duration::from_secs(600);
/// How long a failed workspace cleanup waits before the next try.
pub const CLEANUP_RETRY: Duration = Duration::from_secs(300);

/// The task as the core sees it: what the user asked for and where it stands in its life.
#[derive(Clone, Copy, Debug)]
pub struct Task<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a SealingTaskSpec,
    /// metadata.generation: a resume request is applied (or refused) once per generation.
    pub generation: Option<i64>,
    /// When the task was deleted (seconds since the epoch), if it is being deleted.
    pub deleted_at: Option<i64>,
    /// The annotation [`ABORT_ON_DELETE`] is "true": a deletion may abort a sector whose
    /// PreCommit deposit is on chain.
    pub abort_on_delete: bool,
}

/// The annotation that lets a deletion abort a sealer past its PreCommit; without it, such a
/// task finishes before it goes.
pub const ABORT_ON_DELETE: &str = "damocles.io/abort-on-delete";

impl<'a> Task<'a> {
    pub fn of(task: &'a SealingTask) -> Self {
        Self {
            namespace: task.metadata.namespace.as_deref().unwrap_or_default(),
            name: task.metadata.name.as_deref().unwrap_or_default(),
            spec: &task.spec,
            generation: task.metadata.generation,
            deleted_at: task
                .metadata
                .deletion_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
            abort_on_delete: task
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(ABORT_ON_DELETE))
                .is_some_and(|v| v == "true"),
        }
    }
}

/// The operator's settings that shape decisions.
#[derive(Clone, Debug)]
pub struct Rules {
    pub profiles: Profiles,
    /// Initial back-off of temporary failures where no profile sets one.
    pub retry_backoff: Duration,
    pub tickets: TicketRules,
    /// What to do with a task whose ticket is about to expire before PC1, PC2 or SubmitPreCommit.
    pub on_ticket_expiry: TicketExpiry,
    /// How long to wait between polls of the chain (PreCommit and proof landing).
    pub poll_interval: Duration,
    /// Store instances to reserve space in (empty: any).
    pub store_candidates: Vec<String>,
    /// This replica's name, in ReportState.
    pub instance: String,
    /// Ask the manager how the sector stands (a ReportState of the current state) at each
    /// reconcile of a task under way, and at least this often while a step runs, so a sector
    /// aborted at the manager stops here. None: only the state changes are reported.
    pub manager_heartbeat: Option<Duration>,
    /// The longest wait between tries while the manager does not answer.
    pub manager_retry_max: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            profiles: Profiles::default(),
            retry_backoff: Duration::from_secs(60),
            tickets: TicketRules::default(),
            on_ticket_expiry: TicketExpiry::Rewind,
            poll_interval: Duration::from_secs(30),
            store_candidates: Vec::new(),
            instance: "damocles-operator".into(),
            manager_heartbeat: None,
            manager_retry_max: Duration::from_secs(60),
        }
    }
}

/// A step pod as the executor found it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPod {
    pub report: PodReport,
    /// The node it was bound to, if any.
    pub node: Option<String>,
    /// When it was created (seconds since the epoch).
    pub created: Option<i64>,
    /// Someone is deleting it (a person, an eviction, a drained node).
    pub deleting: bool,
}

/// What a step pod's status says.
#[derive(Clone, Debug, PartialEq)]
pub enum PodReport {
    /// Not running yet (pending scheduling, pulling its image).
    Starting {
        reason: String,
        /// What keeps it from starting, when waiting will not fix it.
        problem: Option<StartProblem>,
    },
    Running,
    Succeeded(Box<StepResult>),
    Failed {
        level: FailureLevel,
        message: String,
        /// Failed before the step ran at all (evicted, node lost): retried without spending the
        /// step's retry budget.
        never_ran: bool,
    },
}

/// Why a step pod cannot start, where waiting longer will not help.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StartProblem {
    /// Its image cannot be pulled (ErrImagePull, ImagePullBackOff, InvalidImageName).
    ImagePull { image: String },
    /// No node matches what its profile asks (node selector, affinity, taints), as opposed to
    /// nodes that match but are busy, which is only a queue.
    NoFittingNode,
}

/// A manager call that got no usable answer, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct CallFailure {
    pub level: FailureLevel,
    pub message: String,
    /// The manager's JSON-RPC error code, when it answered with one.
    pub code: Option<i64>,
    /// No answer at all (unreachable, timed out, HTTP 5xx without a JSON-RPC body): the task
    /// waits for the manager without spending a retry.
    pub unavailable: bool,
    /// The call never reached the manager (no connection could be made): nothing it would
    /// have handed out is lost.
    pub never_sent: bool,
}

/// Why a task must wait for a concurrency slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotsFull {
    pub holders: usize,
    pub cap: u32,
}

/// What the executor has found out for this task during the current reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Step pods looked up, by name (`None`: no such pod).
    pub pods: BTreeMap<String, Option<StepPod>>,
    /// Nodes looked up: whether each exists.
    pub nodes: BTreeMap<String, bool>,
    /// The concurrency slot asked for, and the answer.
    pub slot: Option<(StepKind, Result<(), SlotsFull>)>,
    /// The answer to the last manager call asked for; the executor clears it after each decision.
    pub reply: Option<(Call, Result<Reply, CallFailure>)>,
    /// The workspace cleanup pod, once looked up.
    pub cleanup_pod: Option<CleanupPod>,
    /// The manager's answer to this reconcile's heartbeat (a ReportState), kept for the whole
    /// reconcile: asked once.
    pub sector_state: Option<Result<Reply, CallFailure>>,
    /// This task's heartbeat went out less than half of `manager_heartbeat` ago (the executor
    /// keeps that in memory; a restarted operator sends it again): this reconcile sends none.
    pub heartbeat_recent: bool,
    /// What this operator found out about the task earlier and kept in memory instead of
    /// writing it at once ([`Effect::Remember`]).
    pub remembered: Remembered,
}

/// Facts about a task that wait in the operator's memory for the next status write the task
/// makes anyway, instead of costing a write of their own when found. Only facts that are found
/// again after a restart, and only while another write is sure to follow: the node of a running
/// first step (its pod still says where it runs, and the step's end is written), and the
/// manager's answer to the end report while the workspace cleanup is still to be recorded (a
/// report made again is answered "already offline"). Every decision sees them as if written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Remembered {
    /// The node the pod of the task's first workspace step runs on.
    pub workspace: Option<WorkspaceNode>,
    /// The ManagerFinalized condition the manager's answer to the end report makes True.
    pub end_report: Option<EndReport>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WorkspaceNode {
    pub pod: String,
    pub node: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct EndReport {
    pub reason: String,
    pub message: String,
    pub at: i64,
}

impl Remembered {
    /// Adds what `newer` knows.
    pub fn merge(&mut self, newer: &Remembered) {
        if newer.workspace.is_some() {
            self.workspace.clone_from(&newer.workspace);
        }
        if newer.end_report.is_some() {
            self.end_report.clone_from(&newer.end_report);
        }
    }

    /// Adds what `effects` ask to keep ([`Effect::Remember`]).
    pub fn merge_kept(&mut self, effects: &[Effect]) {
        for effect in effects {
            if let Effect::Remember(facts) = effect {
                self.merge(facts);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.workspace.is_none() && self.end_report.is_none()
    }

    /// `status` with these facts in it, where they still apply: the node while the status still
    /// names that pod as its step and has no node, the report while the task has ended and its
    /// status does not have it yet.
    pub fn apply_to(&self, status: &mut SealingTaskStatus) {
        if let Some(WorkspaceNode { pod, node }) = &self.workspace
            && status.node.is_none()
            && status.step_pod.as_deref() == Some(pod.as_str())
        {
            status.node = Some(node.clone());
        }
        let ended = status.state.is_some_and(|state| state.is_terminal());
        if let Some(report) = &self.end_report
            && ended
            && !status::condition_true(status, condition::MANAGER_FINALIZED)
        {
            status::set_condition(
                status,
                condition::MANAGER_FINALIZED,
                "True",
                &report.reason,
                &report.message,
                report.at,
            );
            status.not_before = None;
        }
    }

    /// Whether `status` holds every fact that still applies to it: nothing is left to remember.
    pub fn written_in(&self, status: &SealingTaskStatus) -> bool {
        let mut with = status.clone();
        self.apply_to(&mut with);
        with == *status
    }
}

/// The pod that removes an ended task's workspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CleanupPod {
    Absent,
    /// Not exited yet (Pending or Running), created at this time (seconds since the epoch).
    Running {
        created: Option<i64>,
    },
    Exited(i32),
}

/// Something the executor must find out before the core can go on.
#[derive(Clone, Debug, PartialEq)]
pub enum Question {
    StepPod(String),
    NodeExists(String),
    /// May the task start a step of this kind? (at most `cap` tasks at once)
    Slot {
        step: StepKind,
        cap: u32,
    },
    /// Call the manager and report its answer.
    Manager(Box<Call>),
    /// The task's workspace cleanup pod.
    CleanupPod(String),
    /// This reconcile's heartbeat: a ReportState whose answer says whether the manager still
    /// holds the sector online.
    SectorState(Box<Call>),
}

/// When to decide again.
#[derive(Clone, Debug, PartialEq)]
pub enum Wake {
    /// Answer this question, then decide again at once.
    Ask(Question),
    /// After this long, unless something changes first.
    After(Duration),
    /// When the task or one of its pods changes.
    OnChange,
    /// A deleted task is done with: its finalizer may go.
    Release,
    /// A deleted task is waiting for its workspace cleanup: look again shortly.
    CleanupPending,
}

/// One thing the executor does, in the order given.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Keep the decision's status: it is written before the next effect outside the operator
    /// (a manager call, a pod created or deleted, a task patch) and at the reconcile's end even
    /// when a later effect fails (intent before a submission, an allocated sector, a ticket). A
    /// pod creation that comes next is written with it: the status names the pod just before it
    /// exists.
    WriteStatus,
    CreateStepPod(Box<PodToCreate>),
    /// The pod that removes the task's workspace from `node`.
    CreateCleanupPod {
        name: String,
        node: String,
    },
    DeletePod(String),
    /// Every pod of the task, in one request (finished step pods kept for their logs, cleanup).
    DeleteTaskPods,
    /// Delete the SealingTask itself (ttlSecondsAfterFinished).
    DeleteTask,
    /// Remove spec.resumeState (applied or refused: either way it is done with).
    ClearResumeRequest,
    /// The task no longer holds its concurrency slot.
    ReleaseSlot,
    /// A manager call whose answer changes nothing (ReportFinalized, ReportAborted, an unseal
    /// handed back): made before the next effect, its failure only logged.
    Tell(Call),
    /// Tell the manager of a state change, as damocles-worker does: best effort, in the background.
    ReportState(Call),
    Event {
        warning: bool,
        reason: String,
        note: String,
    },
    /// A state entered: counted; one of the plan's transitions (with its event) is also logged
    /// and listed in the reconcile's one Event.
    Transition {
        from: Option<State>,
        event: Option<Event>,
        to: State,
    },
    /// A step finished: its duration goes to the step metrics.
    StepFinished {
        step: StepKind,
        seconds: f64,
        reused: bool,
    },
    /// A ticket was found too old for the work left (counted; the task rewinds or aborts).
    TicketExpiring,
    /// A failure was recorded (counted by plan and level); `retry` when it will be retried.
    Failure {
        level: FailureLevel,
        retry: bool,
    },
    /// A line for the operator's log.
    Log {
        warning: bool,
        message: String,
    },
    /// Keep these facts in memory for the task's next status write (see [`Remembered`]); the
    /// decision's status has them, but a decision that changes nothing else writes nothing.
    Remember(Remembered),
}

/// A step pod to create, placed: the pod builder only renders it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodToCreate {
    pub name: String,
    pub request: StepRequest,
    /// The step's profile, with the workspace placement already merged in where it applies.
    pub profile: Resolved,
    /// The node the pod is pinned to: the task's workspace node, for a step that needs it.
    pub node: Option<String>,
    /// A node the pod should avoid (an earlier pod did not start there); only for a pod not
    /// pinned.
    pub avoid: Option<String>,
    /// What the pod mounts at the workspace path.
    pub workspace: WorkspaceMount,
}

/// What a step pod mounts at the task's workspace path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkspaceMount {
    /// The task's own workspace directory on its node (a hostPath), not the root of all of
    /// them: a step reaches no other task's files.
    Task,
    /// Scratch for the step's own markers: a step away from the workspace node reads nothing
    /// there.
    Scratch,
}

/// What [`decide`] returns.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: SealingTaskStatus,
    pub effects: Vec<Effect>,
    pub wake: Wake,
}

/// Decides what `task` does next; see the module documentation.
pub fn decide(
    task: Task<'_>,
    status: &SealingTaskStatus,
    observed: &Observed,
    now: i64,
    rules: &Rules,
) -> Decision {
    let mut known = status.clone();
    observed.remembered.apply_to(&mut known);
    let mut turn = Turn {
        task,
        rules,
        observed,
        now,
        status: known,
        effects: Vec::new(),
        reply_taken: false,
        ran_along: Vec::new(),
    };
    let wake = if task.deleted_at.is_some() && !turn.finishes_before_deletion() {
        turn.deleted()
    } else {
        turn.drive()
    };
    // A decision whose only news is what is kept in memory leaves the status as it was, so the
    // executor has nothing to write; one that changes anything else writes the facts with it.
    let mut remembered = observed.remembered.clone();
    remembered.merge_kept(&turn.effects);
    let mut unchanged = status.clone();
    remembered.apply_to(&mut unchanged);
    Decision {
        status: if turn.status == unchanged {
            status.clone()
        } else {
            turn.status
        },
        effects: turn.effects,
        wake,
    }
}

/// One decision in the making: the working status and the effects gathered so far.
pub(crate) struct Turn<'a> {
    pub task: Task<'a>,
    pub rules: &'a Rules,
    pub observed: &'a Observed,
    pub now: i64,
    pub status: SealingTaskStatus,
    pub effects: Vec<Effect>,
    /// The manager's answer in `observed` has been read: it answers one call, once.
    pub reply_taken: bool,
    /// Results of steps that ran in the pod of the step just finished (its request's `then`),
    /// for the states that follow in this decision.
    pub ran_along: Vec<crate::step::StepResult>,
}

/// The most work one decision chains through; a plan has far fewer manager-only actions in a row.
const CHAIN_LIMIT: usize = 64;

/// The seal proof type the task seals with: the one the manager handed out with its sector; before
/// that (or for a task allocated before the type was recorded, which asked for exactly this one)
/// the one its spec pins, interactive when unpinned.
pub fn proof_type(spec: &SealingTaskSpec, status: &SealingTaskStatus) -> i64 {
    status.proof_type.unwrap_or_else(|| {
        crate::manager::wire::seal_proof_type(
            spec.sector_size,
            spec.synthetic_po_rep.unwrap_or(false),
        )
    })
}

/// Whether the task seals with a synthetic-PoRep proof type ([`proof_type`]).
pub fn synthetic(spec: &SealingTaskSpec, status: &SealingTaskStatus) -> bool {
    crate::manager::wire::sector_of_proof_type(proof_type(spec, status))
        .is_some_and(|(_, synthetic)| synthetic)
}

impl Turn<'_> {
    /// The seal proof type of the task's sector ([`proof_type`]).
    pub fn proof_type(&self) -> i64 {
        proof_type(self.task.spec, &self.status)
    }

    pub fn time(&self) -> Time {
        Time(Timestamp::from_second(self.now).expect("now is a valid time"))
    }

    /// Whole seconds from `at` (seconds since the epoch) to now; 0 when `at` is unknown or
    /// still to come (a clock behind the apiserver's).
    pub fn seconds_since(&self, at: Option<i64>) -> u64 {
        at.map_or(0, |t| (self.now - t).max(0) as u64)
    }

    pub fn position(&self) -> Position {
        Position {
            state: self.status.state.unwrap_or(State::Empty),
            action: self.status.action_index as usize,
        }
    }

    pub fn facts(&self) -> Facts {
        Facts {
            synthetic: synthetic(self.task.spec, &self.status),
            // A rebuild of a snap-upgraded sector (the manager gave its UpgradePublic, which
            // damocles-worker takes as the sign too) runs the snap steps after the re-seal.
            upgraded: self
                .status
                .outputs
                .as_ref()
                .is_some_and(|o| o.sector_key.is_some()),
        }
    }

    /// The task's sector, once the manager allocated it to this task. spec.sector alone never
    /// names a sector the operator acts on (it only filters the allocation).
    pub fn sector(&self) -> Option<SectorRef> {
        self.status.sector
    }

    pub fn sector_id(&self) -> Option<SectorId> {
        self.sector().map(work::sector_id)
    }

    pub fn event(&mut self, warning: bool, reason: &str, note: impl Into<String>) {
        self.effects.push(Effect::Event {
            warning,
            reason: reason.into(),
            note: note.into(),
        });
    }

    pub fn log(&mut self, warning: bool, message: impl Into<String>) {
        self.effects.push(Effect::Log {
            warning,
            message: message.into(),
        });
    }

    pub fn write(&mut self) {
        self.effects.push(Effect::WriteStatus);
    }

    /// Keeps `facts` in memory for the next write, and in this decision's status now.
    pub fn remember(&mut self, facts: Remembered) {
        facts.apply_to(&mut self.status);
        self.effects.push(Effect::Remember(facts));
    }

    pub fn delete_step_pod(&mut self) {
        if let Some(pod) = self.status.step_pod.take() {
            self.status.retiring_pod = Some(pod.clone());
            self.effects.push(Effect::DeletePod(pod));
        }
    }

    fn drive(&mut self) -> Wake {
        if let Some(request) = self.task.spec.resume_request()
            && let Some(wake) = self.resume(request)
        {
            return wake;
        }
        let position = self.position();
        if position.state.is_terminal() {
            return self.ended();
        }
        if self.task.spec.suspend {
            self.suspend();
            return self.wait_paused();
        }
        self.unsuspend_if_suspended();
        if let Some(not_before) = &self.status.not_before {
            let wait = not_before.0.as_second() - self.now;
            if wait > 0 {
                return Wake::After(Duration::from_secs(wait as u64));
            }
        }
        if self.status.phase == Some(Phase::Paused) {
            return self.wait_paused();
        }
        if self.status.state.is_none() {
            self.enter(None, State::Empty);
        }
        if let Some(wake) = self.heartbeat() {
            return wake;
        }
        self.run_plan()
    }

    /// A paused or suspended task waits for a person, and still sends its heartbeat: a sector
    /// the manager finalizes meanwhile ends the task (or, holding the only replica, is named
    /// in its status) instead of keeping a workspace until someone looks.
    fn wait_paused(&mut self) -> Wake {
        if let Some(wake) = self.heartbeat() {
            return wake;
        }
        self.paused_wake()
    }

    /// The wake of a task that waits for a person: its next heartbeat, or a change.
    pub(super) fn paused_wake(&self) -> Wake {
        self.rules
            .manager_heartbeat
            .map_or(Wake::OnChange, Wake::After)
    }

    /// Works through the plan from the current position until something must wait.
    fn run_plan(&mut self) -> Wake {
        let plan = self.task.spec.plan();
        for _ in 0..CHAIN_LIMIT {
            let decision = match cursor::current(plan, self.position(), self.facts()) {
                Ok(decision) => decision,
                Err(err) => return self.fail(FailureLevel::Critical, err.to_string()),
            };
            let outcome = match decision.next {
                // The manager is told and the workspace removed (see cleanup).
                Next::Terminal => return self.ended(),
                Next::Enter { event, state } => {
                    self.enter(Some(event), state);
                    continue;
                }
                Next::Act(action) => {
                    if self.answered_from_before() {
                        continue;
                    }
                    if let Some(wake) = self.ticket_guard(action) {
                        return wake;
                    }
                    let done = match action {
                        Action::Manager(call) => self.manager_action(call),
                        Action::Proof(step) | Action::File(step) => self.step(step),
                    };
                    match done {
                        Progress::Outcome(outcome) => outcome,
                        Progress::Wake(wake) => return wake,
                    }
                }
                Next::Wait(_) | Next::Fail { .. } => {
                    unreachable!("current() only answers Act, Enter or Terminal")
                }
            };
            let after = match cursor::after(plan, decision.position, self.facts(), outcome) {
                Ok(after) => after,
                Err(err) => return self.fail(FailureLevel::Critical, err.to_string()),
            };
            match after.next {
                Next::Wait(delay) => {
                    let message = self.waiting_for();
                    status::set_phase(&mut self.status, Phase::Waiting, message, self.now);
                    self.write();
                    return Wake::After(delay);
                }
                Next::Fail { level, message } => return self.fail(level, message),
                Next::Enter { event, state } => self.enter(Some(event), state),
                Next::Act(_) | Next::Terminal => {
                    if after.position.state == self.position().state {
                        self.status.action_index = after.position.action as u32;
                    }
                }
            }
        }
        self.log(
            true,
            format!("{CHAIN_LIMIT} actions in one decision without a wait; deciding again in 1s"),
        );
        Wake::After(Duration::from_secs(1))
    }

    fn waiting_for(&self) -> String {
        let state = self.position().state;
        let action = self
            .task
            .spec
            .plan()
            .state(state)
            .and_then(|s| s.actions.get(self.status.action_index as usize));
        let waiting = format!(
            "{state}: waiting on {}",
            action.map(|a| a.to_string()).unwrap_or_default()
        );
        let allocating = matches!(action, Some(Action::Manager(call))
            if crate::plan::Allocation::of(*call).is_some());
        match work::allocate::pinned_wait(self.task.spec).filter(|_| allocating) {
            Some(pinned) => format!("{waiting}; {pinned}"),
            None => waiting,
        }
    }
}

/// What doing an action came to: an outcome for the plan cursor, or a reason to stop deciding.
pub(crate) enum Progress {
    Outcome(Outcome),
    Wake(Wake),
}
