//! The four task plans of damocles-worker as data, and the pure rules over them.
//!
//! A plan is a list of states, each with the work done while the task sits in it (manager calls, proof
//! steps, file steps), the outputs that work needs and produces, and the transitions out of it. Nothing
//! here does I/O or reads a clock, so every executor (the controller, the local mode, tests) shares it.
//!
//! Every state can also go to `Aborted` (an abort-level failure or a user's `resumeState: Aborted`);
//! those implicit edges are not listed as transitions.

pub mod cursor;
mod rebuild;
pub mod render;
mod resume;
mod sealer;
mod snapup;
mod unseal;

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strum::{Display, EnumIter, EnumString, IntoEnumIterator, IntoStaticStr};

pub use crate::sector::UnknownName;
pub use resume::{ResumeAction, ResumeError, validate_resume};

/// Which state machine a task follows. A task keeps the plan it started with.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumString,
    EnumIter,
    IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum PlanKind {
    /// Seal a new sector: allocate, add pieces, PC1/PC2, PreCommit, persist, C1/C2, prove.
    Sealer,
    /// Upgrade a committed-capacity sector with deal data (empty-sector-update).
    Snapup,
    /// Re-create the files of a lost sector from its original ticket and pieces.
    Rebuild,
    /// Recover piece data from a sealed sector and upload it.
    Unseal,
}

impl PlanKind {
    pub fn plan(self) -> &'static Plan {
        match self {
            PlanKind::Sealer => &sealer::PLAN,
            PlanKind::Snapup => &snapup::PLAN,
            PlanKind::Rebuild => &rebuild::PLAN,
            PlanKind::Unseal => &unseal::PLAN,
        }
    }

    pub fn parse(name: &str) -> Result<Self, UnknownName> {
        name.parse()
            .map_err(|_| UnknownName::new("plan", name, PlanKind::iter().map(<&str>::from)))
    }
}

/// A task state. One enum covers all plans (as in damocles-worker); each plan uses a subset.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumString,
    EnumIter,
    IntoStaticStr,
)]
pub enum State {
    Empty,
    Allocated,
    DealsAcquired,
    PieceAdded,
    TreeDBuilt,
    TicketAssigned,
    PC1Done,
    SyntheticPoRepNeeded,
    PC2Done,
    PCSubmitted,
    PCLanded,
    Persisted,
    PersistanceSubmitted,
    SeedAssigned,
    C1Done,
    C2Done,
    ProofSubmitted,
    SnapEncoded,
    SnapProved,
    SealedChecked,
    SnapPieceAdded,
    SnapTreeDBuilt,
    SnapDone,
    Unsealed,
    Finished,
    Aborted,
}

impl State {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, State::Finished | State::Aborted)
    }
}

/// What happened in a state, named as in damocles-worker's `Event`.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumString,
    EnumIter,
    IntoStaticStr,
)]
pub enum Event {
    Allocate,
    AcquireDeals,
    AddPiece,
    BuildTreeD,
    AssignTicket,
    PC1,
    PC2,
    PC2NeedSyntheticProof,
    SyntheticPoRep,
    SubmitPC,
    ReSubmitPC,
    CheckPC,
    Persist,
    SubmitPersistance,
    AssignSeed,
    C1,
    C2,
    SubmitProof,
    ReSubmitProof,
    Finish,
    AllocatedSnapUpSector,
    SnapEncode,
    SnapProve,
    RePersist,
    AllocatedRebuildSector,
    CheckSealed,
    SkipSnap,
    AllocatedUnsealSector,
    UnsealDone,
    UploadPieceDone,
}

/// A damocles-manager JSON-RPC method (`Venus.<Name>`) that a state's work calls.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    Display,
    EnumIter,
    IntoStaticStr,
)]
pub enum ManagerCall {
    AllocateSector,
    AcquireDeals,
    AssignTicket,
    SubmitPreCommit,
    PollPreCommitState,
    StoreReserveSpace,
    SubmitPersistedEx,
    WaitSeed,
    SubmitProof,
    PollProofState,
    /// Sic: the manager's method name has this typo.
    AllocateSanpUpSector,
    StoreBasicInfo,
    SubmitSnapUpProof,
    AllocateRebuildSector,
    AllocateUnsealSector,
    AcquireUnsealDest,
    AchieveUnsealSector,
}

/// A call the manager may count twice if it is made twice: the task records its intent before it
/// is made (`status.submitting`), and a restart asks the manager before making it again.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumIter,
    IntoStaticStr,
)]
pub enum Submission {
    SubmitPreCommit,
    SubmitProof,
    SubmitSnapUpProof,
}

impl Submission {
    pub fn call(self) -> ManagerCall {
        match self {
            Submission::SubmitPreCommit => ManagerCall::SubmitPreCommit,
            Submission::SubmitProof => ManagerCall::SubmitProof,
            Submission::SubmitSnapUpProof => ManagerCall::SubmitSnapUpProof,
        }
    }

    /// The submission `call` is, if it is one.
    pub fn of(call: ManagerCall) -> Option<Self> {
        Self::iter().find(|submission| submission.call() == call)
    }

    /// The poll that tells whether the submission reached the manager and the chain; none for
    /// upgrades, which have no poll.
    pub fn poll(self) -> Option<ManagerCall> {
        match self {
            Submission::SubmitPreCommit => Some(ManagerCall::PollPreCommitState),
            Submission::SubmitProof => Some(ManagerCall::PollProofState),
            Submission::SubmitSnapUpProof => None,
        }
    }

    /// The submission whose landing `poll` asks about.
    pub fn polled_by(poll: ManagerCall) -> Option<Self> {
        Self::iter().find(|submission| submission.poll() == Some(poll))
    }
}

/// A call that hands the task a sector or a job (`status.allocating` records the one-time ones
/// while they are asked).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Display,
    EnumIter,
    IntoStaticStr,
)]
pub enum Allocation {
    AllocateSector,
    // Sic: the manager's method name has this typo (a doc comment here would make the CRD
    // schema a oneOf).
    AllocateSanpUpSector,
    AllocateRebuildSector,
    AllocateUnsealSector,
}

impl Allocation {
    pub fn call(self) -> ManagerCall {
        match self {
            Allocation::AllocateSector => ManagerCall::AllocateSector,
            Allocation::AllocateSanpUpSector => ManagerCall::AllocateSanpUpSector,
            Allocation::AllocateRebuildSector => ManagerCall::AllocateRebuildSector,
            Allocation::AllocateUnsealSector => ManagerCall::AllocateUnsealSector,
        }
    }

    /// The allocation `call` is, if it is one.
    pub fn of(call: ManagerCall) -> Option<Self> {
        Self::iter().find(|allocation| allocation.call() == call)
    }
}

/// A step run by the `damocles-step` binary (a pod in a cluster, a child process in local mode).
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Display,
    EnumString,
    EnumIter,
    IntoStaticStr,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum StepKind {
    AddPiece,
    TreeD,
    Pc1,
    Pc2,
    SyntheticProofs,
    C1,
    C2,
    SnapEncode,
    SnapProve,
    Unseal,
    Persist,
    Upload,
    /// Checks a PoRep proof (the dev manager and tests run it; no plan state does).
    VerifySeal,
    /// Checks an empty-sector-update proof.
    VerifySnap,
}

impl StepKind {
    /// Whether a step of this kind may run away from the task's workspace node (`locality:
    /// any`): C2 alone, whose one input, C1's output, travels through the persist store.
    pub fn may_leave_workspace(self) -> bool {
        self == StepKind::C2
    }

    /// The step that reads this one's output from the persist store when it runs away from the
    /// workspace node: C1 hands its output to C2.
    pub fn hands_over_to(self) -> Option<StepKind> {
        match self {
            StepKind::C1 => Some(StepKind::C2),
            _ => None,
        }
    }
}

/// One piece of the work done in a state, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// A call to the chain-side manager, done inline by the executor.
    Manager(ManagerCall),
    /// A proof computation (filecoin-proofs) run as a step.
    Proof(StepKind),
    /// A file operation (copy, upload) run as a step on the node that holds the files.
    File(StepKind),
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Manager(call) => write!(f, "manager {call}"),
            Action::Proof(step) => write!(f, "proof step {step}"),
            Action::File(step) => write!(f, "file step {step}"),
        }
    }
}

/// An artifact or established fact that a state's work produces and later work needs.
///
/// Resume uses these: a rewind target whose inputs the task no longer has is refused.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    Display,
    EnumIter,
)]
pub enum Output {
    /// The sector id (miner, number) and its proof type.
    Sector,
    /// The deals (pieces) to put into the sector, possibly none for a pledge sector.
    Deals,
    /// Piece files written into the staged (unsealed) sector file, with their piece infos.
    Pieces,
    /// tree-d and the unsealed commitment CommD.
    TreeD,
    /// Chain randomness for PC1 and its epoch.
    Ticket,
    /// PC1's labelling layers in the workspace.
    PC1Layers,
    /// The sealed replica, its cache (p_aux, t_aux, tree-r-last) and CommR.
    SealedReplica,
    /// Synthetic PoRep challenge proofs (synthetic proof types only).
    SyntheticProofs,
    /// The PreCommit message submitted to the manager.
    PreCommitSubmitted,
    /// The PreCommit landed on chain.
    PreCommitLanded,
    /// Sealed and cache files copied to the persist store and checked.
    PersistedFiles,
    /// The manager accepted the persisted files' location.
    PersistenceSubmitted,
    /// Chain randomness for C1 (the interactive seed) and its epoch.
    Seed,
    /// C1's output (vanilla proofs), input to C2.
    C1Output,
    /// The SNARK proof of replication from C2.
    Proof,
    /// The proof submitted to the manager.
    ProofSubmitted,
    /// The committed-capacity sector being upgraded, with its old sealed replica.
    CcSector,
    /// The replica encoded with the new deal data (empty-sector-update), with its new CommR.
    SnapReplica,
    /// The empty-sector-update proof.
    SnapProof,
    /// The upgrade proof submitted to the manager.
    SnapUpSubmitted,
    /// The rebuilt replica was checked by a C1 run with the original ticket.
    SealedChecked,
    /// Deal pieces of an upgraded sector being rebuilt.
    UpgradePieces,
    /// tree-d of an upgraded sector's deal pieces.
    UpgradeTreeD,
    /// What to unseal (piece, offset, size) and where to send it.
    UnsealRequest,
    /// The unsealed piece bytes in the workspace.
    UnsealedPiece,
    /// The unsealed piece uploaded to its destination and reported to the manager.
    PieceUploaded,
}

/// A state of a plan and what the task does while in it.
#[derive(Debug)]
pub struct StateSpec {
    pub state: State,
    /// What the work in this state is for, in one line.
    pub summary: &'static str,
    /// The work done, in order, to produce this state's outgoing event. Empty for terminal states.
    pub actions: &'static [Action],
    /// Outputs the work reads; a resume into this state needs all of them.
    pub needs: &'static [Output],
    /// Outputs the work establishes.
    pub produces: &'static [Output],
}

/// One edge of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    pub from: State,
    pub event: Event,
    pub to: State,
}

const fn t(from: State, event: Event, to: State) -> Transition {
    Transition { from, event, to }
}

/// A task plan: its states in the seed document's order and its transitions.
#[derive(Debug)]
pub struct Plan {
    pub kind: PlanKind,
    pub states: &'static [StateSpec],
    pub transitions: &'static [Transition],
}

pub const INITIAL: State = State::Empty;
pub const TERMINAL: [State; 2] = [State::Finished, State::Aborted];

impl Plan {
    pub fn all() -> impl Iterator<Item = &'static Plan> {
        PlanKind::iter().map(PlanKind::plan)
    }

    pub fn state(&self, state: State) -> Option<&StateSpec> {
        self.states.iter().find(|s| s.state == state)
    }

    pub fn has_state(&self, state: State) -> bool {
        self.state(state).is_some()
    }

    pub fn state_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.states.iter().map(|s| s.state.as_str())
    }

    /// States a resume may name besides `Aborted` (which every plan accepts and lists last).
    pub fn resumable_state_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.state_names().filter(|s| *s != State::Aborted.as_str())
    }

    /// The first state whose work runs a step: everything from it on lives in the task's
    /// workspace, on one node.
    pub fn first_workspace_state(&self) -> State {
        self.states
            .iter()
            .find(|s| s.actions.iter().any(|a| !matches!(a, Action::Manager(_))))
            .map(|s| s.state)
            .unwrap_or(State::Empty)
    }

    /// Whether `state` comes at or before `other` in the plan's order.
    pub fn at_or_before(&self, state: State, other: State) -> bool {
        let index = |s: State| self.states.iter().position(|spec| spec.state == s);
        index(state) <= index(other)
    }

    /// The step that runs at `position`; none when the work there is a manager call.
    pub fn step_at(&self, position: cursor::Position) -> Option<StepKind> {
        match self.state(position.state)?.actions.get(position.action)? {
            Action::Proof(step) | Action::File(step) => Some(*step),
            Action::Manager(_) => None,
        }
    }

    /// Transitions out of `state`, in the plan's order.
    pub fn transitions_from(&self, state: State) -> impl Iterator<Item = &Transition> {
        self.transitions.iter().filter(move |t| t.from == state)
    }

    /// The state `event` leads to from `state`. An abort is always possible; any other pair must be
    /// a transition of this plan.
    pub fn next(&self, state: State, event: Event) -> Result<State, PlanError> {
        if !self.has_state(state) {
            return Err(PlanError::NotAState {
                plan: self.kind,
                state,
                valid: self.state_names().collect(),
            });
        }
        self.transitions_from(state)
            .find(|t| t.event == event)
            .map(|t| t.to)
            .ok_or_else(|| PlanError::NoTransition {
                plan: self.kind,
                state,
                event,
                allowed: self.transitions_from(state).map(|t| t.event).collect(),
            })
    }

    /// The state whose work produces `output`, if this plan produces it at all.
    pub fn producer_of(&self, output: Output) -> Option<State> {
        self.states
            .iter()
            .find(|s| s.produces.contains(&output))
            .map(|s| s.state)
    }

    /// Parses a state name and checks that it belongs to this plan.
    pub fn parse_state(&self, name: &str) -> Result<State, UnknownName> {
        name.parse::<State>()
            .ok()
            .filter(|s| self.has_state(*s))
            .ok_or_else(|| {
                UnknownName::new(
                    &format!("state of plan {}", self.kind),
                    name,
                    self.state_names(),
                )
            })
    }
}

/// `next(plan, state, event)` as a free function.
pub fn next(plan: PlanKind, state: State, event: Event) -> Result<State, PlanError> {
    plan.plan().next(state, event)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{state} is not a state of plan {plan}; its states are: {}", valid.join(", "))]
    NotAState {
        plan: PlanKind,
        state: State,
        valid: Vec<&'static str>,
    },
    #[error(
        "plan {plan} has no transition from {state} on event {event}; from {state} it allows: {}",
        if allowed.is_empty() { "none (terminal state)".to_string() } else { allowed.iter().map(Event::to_string).collect::<Vec<_>>().join(", ") }
    )]
    NoTransition {
        plan: PlanKind,
        state: State,
        event: Event,
        allowed: Vec<Event>,
    },
}

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
