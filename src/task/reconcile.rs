//! One reconcile of one task, as a sans-I/O state machine: decide, hand each effect to the
//! executor in order with the status writes that must come before it, take the executor's answer
//! to the core's question, decide again, until the core waits; then the last write.
//!
//! Every executor drives a task through this one loop: the controller (over the Kubernetes API
//! and the manager) and the core's own tests (over worlds of their own), as a farm simulator is
//! to. An
//! executor only carries out what [`Reconcile::next`] hands it ([`Io`]) and reports back what it
//! found; when a status is written, and which effects wait for which write, is decided here
//! ([`Effect::write_first`], [`Question::write_first`]).

use std::collections::VecDeque;
use std::time::Duration;

use super::{CallFailure, CleanupPod, Decision, Effect, Observed, Question, Remembered, SlotsFull};
use super::{PodReport, Rules, StepPod, Task, Wake, decide};
use crate::api::{SealingTaskStatus, State};
use crate::manager::{Call, Reply};
use crate::plan::StepKind;
use crate::sector::FailureLevel;

/// The most decisions one reconcile makes; a plan chains far fewer manager calls in a row.
pub const DECISION_LIMIT: usize = 128;
/// How soon a task whose new pod turned out to exist already looks at it again: it may have
/// finished already, which no later watch event would say.
pub const ADOPTED_RECHECK: Duration = Duration::from_secs(1);

/// What a status kept by [`Effect::WriteStatus`] needs written before an effect or a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteFirst {
    /// Nothing: the effect stays inside the operator, or waits for no write.
    Nothing,
    /// The kept status, as it was when kept: what follows it in the decision is the core's own
    /// work, written at the reconcile's end.
    Kept,
    /// The status as it is now, where one is kept: a step's result and the next step's pod name
    /// go out in one write, just before that pod exists. A crash right after reads as a lost pod,
    /// which the task starts again.
    Current,
}

impl Effect {
    /// What must be written before this effect is carried out.
    pub fn write_first(&self) -> WriteFirst {
        match self {
            Effect::CreateStepPod(_) | Effect::CreateCleanupPod { .. } => WriteFirst::Current,
            // Outside the operator, and not undone by a crash: a pod gone, the task deleted, the
            // user's request cleared, the manager told.
            Effect::DeletePod(_)
            | Effect::DeleteTaskPods
            | Effect::DeleteTask
            | Effect::ClearResumeRequest
            | Effect::Tell(_) => WriteFirst::Kept,
            // A state report is held instead while an allocation is unwritten (see
            // [`Reconcile`]); the rest is the operator's own bookkeeping.
            Effect::WriteStatus
            | Effect::ReleaseSlot
            | Effect::ReportState(_)
            | Effect::Event { .. }
            | Effect::Transition { .. }
            | Effect::StepFinished { .. }
            | Effect::Failure { .. }
            | Effect::TicketExpiring
            | Effect::Log { .. }
            | Effect::Remember(_) => WriteFirst::Nothing,
        }
    }
}

impl Question {
    /// What must be written before this question is asked: a manager call follows the status
    /// the core kept for it (the intent of a submission, a ticket, a reserved store); the
    /// heartbeat waits only for an allocation's write (the manager is told nothing of a sector
    /// no task records). The rest only reads.
    pub fn write_first(&self, allocation_unwritten: bool) -> WriteFirst {
        match self {
            Question::Manager(_) => WriteFirst::Kept,
            Question::SectorState(_) if allocation_unwritten => WriteFirst::Kept,
            Question::SectorState(_)
            | Question::StepPod(_)
            | Question::NodeExists(_)
            | Question::Slot { .. }
            | Question::CleanupPod(_) => WriteFirst::Nothing,
        }
    }
}

/// What the executor does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Io {
    /// Write this status (guarded by the resourceVersion read); the next call to
    /// [`Reconcile::next`] takes it as written.
    Write(StatusWrite),
    /// Carry out this effect. A step pod that turned out to exist already is reported with
    /// [`Reconcile::pod_existed`], one the apiserver refused with [`Reconcile::pod_refused`].
    Apply(Effect),
    /// Send this state report in the background, best effort, as damocles-worker does.
    Report { call: Call, state: Option<State> },
    /// Find this out and hand it to [`Reconcile::answer`] before the next call.
    Ask(Question),
    /// The task's manager heartbeat counts as sent now: the reconciles of the next half
    /// interval send none.
    HeartbeatSent,
    /// Keep these facts about the task in memory (all that is known now; see [`Remembered`]).
    Remember(Remembered),
    /// The reconcile is over: decide again at this wake.
    Wait(Wake),
}

/// A status to write.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusWrite {
    pub status: Box<SealingTaskStatus>,
    /// It records a sector the manager just handed out: written whatever else changed in the
    /// task meanwhile (it will not be handed out again, and the operator alone writes status).
    pub allocation: bool,
}

/// What the executor found out, for the question it was asked.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    StepPod(String, Option<StepPod>),
    NodeExists(String, bool),
    Slot(StepKind, Result<(), SlotsFull>),
    Manager(Call, Result<Reply, CallFailure>),
    SectorState(Result<Reply, CallFailure>),
    CleanupPod(CleanupPod),
}

/// One reconcile in progress; see the module documentation.
pub struct Reconcile<'r> {
    rules: &'r Rules,
    /// The status as the core last decided it.
    status: SealingTaskStatus,
    /// The status as last written (as read, before the first write).
    written: SealingTaskStatus,
    /// A status the core asked to be written and not written yet.
    kept: Option<SealingTaskStatus>,
    /// A write handed out; the next call to `next` takes it as done.
    writing: Option<SealingTaskStatus>,
    /// State reports held until the allocation they follow is written: a crash in between
    /// would leave the manager told of a sector no task records.
    held_reports: Vec<(Call, Option<State>)>,
    observed: Observed,
    /// What is handed out next, before the rest of the decision's effects.
    outbox: VecDeque<Io>,
    effects: VecDeque<Effect>,
    wake: Option<Wake>,
    /// A question handed out and not answered yet.
    asking: bool,
    /// A step pod this reconcile created existed already.
    adopted: bool,
    decisions: usize,
    ended: bool,
}

impl<'r> Reconcile<'r> {
    /// A reconcile of a task whose status reads `status`; `observed` starts with what the
    /// executor keeps in memory (the heartbeat's age, the remembered facts).
    pub fn new(status: SealingTaskStatus, observed: Observed, rules: &'r Rules) -> Self {
        Self {
            rules,
            written: status.clone(),
            status,
            kept: None,
            writing: None,
            held_reports: Vec::new(),
            observed,
            outbox: VecDeque::new(),
            effects: VecDeque::new(),
            wake: None,
            asking: false,
            adopted: false,
            decisions: 0,
            ended: false,
        }
    }

    /// The status as the core last decided it.
    pub fn status(&self) -> &SealingTaskStatus {
        &self.status
    }

    /// How many decisions this reconcile has made.
    pub fn decisions(&self) -> usize {
        self.decisions
    }

    /// Whether everything decided has been written.
    pub fn all_written(&self) -> bool {
        self.status == self.written && self.writing.is_none()
    }

    /// What must still be written after a failed I/O ended the reconcile early: the status the
    /// core kept (an allocated sector, a ticket, an intent), whatever came after it. The rest of
    /// this reconcile's status is decided again.
    pub fn kept(&mut self, task: Task<'_>) -> Option<StatusWrite> {
        let kept = self.kept.take()?;
        match self.write(task, kept)? {
            Io::Write(write) => Some(write),
            _ => unreachable!("write() hands out writes"),
        }
    }

    /// Whether the manager's answer to an allocation (a sector handed out, a one-time job's
    /// answer to its recorded intent) is not written yet.
    pub fn allocation_unwritten(&self) -> bool {
        let (status, written) = (&self.status, &self.written);
        (status.sector.is_some() && status.sector != written.sector)
            || (written.allocating.is_some() && status.allocating != written.allocating)
    }

    /// The step pod this reconcile created existed already (made before a restart, or not yet
    /// in the cache): it is adopted, and looked at again shortly.
    pub fn pod_existed(&mut self) {
        self.adopted = true;
    }

    /// The apiserver refused to create step pod `name` and will refuse it again: the task hears
    /// why, as a failed step, decided in this reconcile. (Left to the next one, it would find no
    /// pod, create it again and be refused again, never hearing why.)
    pub fn pod_refused(&mut self, name: &str, level: FailureLevel, message: String) {
        self.wake = None;
        let refused = StepPod {
            report: PodReport::Failed {
                level,
                message,
                never_ran: false,
            },
            node: None,
            created: None,
            deleting: false,
        };
        self.observed.pods.insert(name.to_string(), Some(refused));
    }

    /// The answer to the question last handed out.
    pub fn answer(&mut self, answer: Answer) {
        self.asking = false;
        let observed = &mut self.observed;
        match answer {
            Answer::StepPod(name, pod) => {
                observed.pods.insert(name, pod);
            }
            Answer::NodeExists(node, exists) => {
                observed.nodes.insert(node, exists);
            }
            Answer::Slot(step, taken) => observed.slot = Some((step, taken)),
            Answer::Manager(call, reply) => {
                if reply.is_ok() && call.method().is_allocation() {
                    // The manager just handed the sector out: that answers this reconcile's
                    // heartbeat, which would otherwise go out before the sector is written.
                    observed.heartbeat_recent = true;
                    self.outbox.push_back(Io::HeartbeatSent);
                }
                observed.reply = Some((call, reply));
            }
            Answer::SectorState(reply) => {
                // Answered or not: during a manager outage every transition would otherwise
                // wait for a timeout.
                self.outbox.push_back(Io::HeartbeatSent);
                observed.sector_state = Some(reply);
            }
            Answer::CleanupPod(pod) => observed.cleanup_pod = Some(pod),
        }
    }

    /// What the executor does next, for `task` (its spec as the executor holds it now) at `now`.
    pub fn next(&mut self, task: Task<'_>, now: i64) -> Io {
        if let Some(status) = self.writing.take() {
            self.written = status;
            let held = std::mem::take(&mut self.held_reports);
            for (call, state) in held.into_iter().rev() {
                self.outbox.push_front(Io::Report { call, state });
            }
        }
        loop {
            if let Some(io) = self.outbox.pop_front() {
                return io;
            }
            if self.ended {
                panic!("Reconcile::next called after the reconcile ended");
            }
            if let Some(effect) = self.effects.pop_front() {
                if let Some(io) = self.carry_out(task, effect) {
                    return io;
                }
                continue;
            }
            if let Some(wake) = self.wake.take() {
                return self.wait_or_ask(task, wake);
            }
            assert!(
                !self.asking,
                "Reconcile::next called before the question was answered"
            );
            if self.decisions == DECISION_LIMIT {
                self.wake = Some(Wake::After(Duration::from_secs(1)));
                return Io::Apply(Effect::Log {
                    warning: true,
                    message: format!(
                        "{DECISION_LIMIT} decisions in one reconcile without a wait; deciding \
                         again in 1s"
                    ),
                });
            }
            self.decisions += 1;
            let Decision {
                status,
                effects,
                wake,
            } = decide(task, &self.status, &self.observed, now, self.rules);
            self.status = status;
            // A manager answer is read by the decision that asked for it, never by a later one.
            self.observed.reply = None;
            self.effects = effects.into();
            self.wake = Some(wake);
        }
    }

    /// The write `first` asks for before what follows, if any is due.
    fn write_first(&mut self, task: Task<'_>, first: WriteFirst) -> Option<Io> {
        match first {
            WriteFirst::Nothing => None,
            WriteFirst::Kept => {
                let kept = self.kept.take()?;
                self.write(task, kept)
            }
            WriteFirst::Current => {
                self.kept.take()?;
                self.write_current(task)
            }
        }
    }

    /// A write of the status as decided now, unless it is what was written last.
    fn write_current(&mut self, task: Task<'_>) -> Option<Io> {
        if self.status == self.written {
            return None;
        }
        self.status.observed_generation = task.generation;
        self.write(task, self.status.clone())
    }

    /// A write of `status`, unless it is what was written last.
    fn write(&mut self, task: Task<'_>, mut status: SealingTaskStatus) -> Option<Io> {
        if status == self.written {
            return None;
        }
        status.observed_generation = task.generation;
        let allocation = status.sector.is_some() && status.sector != self.written.sector;
        self.writing = Some(status.clone());
        Some(Io::Write(StatusWrite {
            status: Box::new(status),
            allocation,
        }))
    }

    fn carry_out(&mut self, task: Task<'_>, effect: Effect) -> Option<Io> {
        let first = self.write_first(task, effect.write_first());
        let io = match effect {
            Effect::WriteStatus => {
                self.kept = Some(self.status.clone());
                None
            }
            Effect::ReportState(call) => {
                let state = self.status.state;
                if self.allocation_unwritten() {
                    self.held_reports.push((call, state));
                    None
                } else {
                    Some(Io::Report { call, state })
                }
            }
            Effect::Remember(facts) => {
                self.observed.remembered.merge(&facts);
                Some(Io::Remember(self.observed.remembered.clone()))
            }
            Effect::CreateStepPod(pod) => {
                // Looked up afresh once created: the executor's cache has it.
                self.observed.pods.remove(&pod.name);
                Some(Io::Apply(Effect::CreateStepPod(pod)))
            }
            Effect::CreateCleanupPod { name, node } => {
                self.observed.cleanup_pod = None;
                Some(Io::Apply(Effect::CreateCleanupPod { name, node }))
            }
            Effect::DeletePod(name) => {
                self.observed.pods.remove(&name);
                Some(Io::Apply(Effect::DeletePod(name)))
            }
            other => Some(Io::Apply(other)),
        };
        match (first, io) {
            (Some(write), Some(io)) => {
                self.outbox.push_back(io);
                Some(write)
            }
            (Some(write), None) => Some(write),
            (None, io) => io,
        }
    }

    fn wait_or_ask(&mut self, task: Task<'_>, wake: Wake) -> Io {
        let wake = match wake {
            Wake::Ask(question) => {
                let first = question.write_first(self.allocation_unwritten());
                self.asking = true;
                let ask = Io::Ask(question);
                return match self.write_first(task, first) {
                    Some(write) => {
                        self.outbox.push_back(ask);
                        write
                    }
                    None => ask,
                };
            }
            Wake::OnChange if self.adopted => Wake::After(ADOPTED_RECHECK),
            other => other,
        };
        self.kept = None;
        self.ended = true;
        let wait = Io::Wait(wake);
        match self.write_current(task) {
            Some(write) => {
                self.outbox.push_back(wait);
                write
            }
            None => wait,
        }
    }
}
