//! Property tests of the task core: a task of each plan driven by `decide` against a random world
//! (manager answers, pod reports, nodes, slots), with random user edits (resumeState, suspend,
//! delete) and random crashes (the status falls back to what was last written) between
//! reconciles. Whatever the sequence: the task never reaches a state outside its plan, never makes
//! a submission without its intent written first, never submits again what the manager accepted
//! unless the manager said the message failed, and never applies a resume its plan's rules refuse.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::manager::wire::{
    Randomness as WireRandomness, SectorStateResp, Seed, Ticket, WaitSeedResp,
};
use crate::plan::PlanKind;
use crate::sector::FailureLevel;
use crate::task::reconcile::{Answer, Io, Reconcile, StatusWrite};

/// Where the random choices come from: one byte per choice, zeros once the tape runs out.
struct Tape<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Tape<'_> {
    fn pick(&mut self, choices: usize) -> usize {
        let byte = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        byte as usize % choices
    }

    fn chance(&mut self, in_256: u8) -> bool {
        self.pick(256) < in_256 as usize
    }
}

/// The world's memory: which submissions the manager accepted, the pods that exist.
#[derive(Default)]
struct World {
    accepted: Vec<Method>,
    /// Each pod's step and the steps that run along in it.
    pods: BTreeMap<String, (StepKind, Vec<StepKind>)>,
}

fn spec_of(plan: PlanKind) -> SealingTaskSpec {
    spec(match plan {
        PlanKind::Sealer => json!({"plan": "sealer", "sectorSize": "2KiB"}),
        PlanKind::Snapup => json!({"plan": "snapup", "sectorSize": "2KiB"}),
        PlanKind::Rebuild => {
            json!({"plan": "rebuild", "sectorSize": "2KiB", "sector": {"miner": 1000, "number": 7}})
        }
        PlanKind::Unseal => json!({
            "plan": "unseal", "sectorSize": "2KiB", "sector": {"miner": 1000, "number": 7},
            "unseal": {"pieceCid": "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy"},
        }),
    })
}

fn failure(tape: &mut Tape) -> CallFailure {
    let unavailable = tape.chance(40);
    CallFailure {
        level: if tape.chance(200) {
            FailureLevel::Temporary
        } else {
            FailureLevel::Permanent
        },
        message: "the world said no".into(),
        code: Some(tape.pick(3) as i64),
        unavailable,
        never_sent: unavailable && tape.chance(2),
    }
}

/// The manager's answer: mostly plausible, sometimes a failure; consistent with what it accepted.
fn manager_answer(call: &Call, world: &mut World, tape: &mut Tape) -> Result<Reply, CallFailure> {
    let method = call.method();
    if tape.chance(25) {
        return Err(failure(tape));
    }
    let bytes = [tape.pick(256) as u8; 32];
    Ok(match method {
        Method::AllocateSector => Reply::Sector(tape.chance(230).then_some(AllocatedSector {
            id: SECTOR_ID,
            proof_type: 5,
        })),
        Method::AcquireDeals => Reply::Deals(vec![]),
        Method::AssignTicket => Reply::Ticket(Ticket {
            ticket: WireRandomness(bytes),
            epoch: 9000,
        }),
        Method::SubmitPreCommit | Method::SubmitProof | Method::SubmitSnapUpProof => {
            let res = [
                SubmitResult::Accepted,
                SubmitResult::Accepted,
                SubmitResult::DuplicateSubmit,
                SubmitResult::MismatchedSubmission,
                SubmitResult::Rejected,
                SubmitResult::FilesMissed,
            ][tape.pick(6)];
            if matches!(res, SubmitResult::Accepted | SubmitResult::DuplicateSubmit)
                && !world.accepted.contains(&method)
            {
                world.accepted.push(method);
            }
            Reply::Submit(SubmitResp { res, desc: None })
        }
        Method::PollPreCommitState | Method::PollProofState => {
            let submit = Method::from(
                method
                    .plan_call()
                    .and_then(Submission::polled_by)
                    .expect("a poll"),
            );
            let state = if world.accepted.contains(&submit) {
                let state = [
                    OnChainState::Pending,
                    OnChainState::Packed,
                    OnChainState::Landed,
                    OnChainState::Landed,
                    OnChainState::Failed,
                ][tape.pick(5)];
                if state == OnChainState::Failed {
                    // The message failed: a resubmission is what the manager wants.
                    world.accepted.retain(|m| *m != submit);
                }
                state
            } else {
                OnChainState::NotFound
            };
            Reply::Poll(PollResp { state, desc: None })
        }
        Method::SubmitPersistedEx => Reply::Persisted(tape.chance(220)),
        Method::WaitSeed => {
            let should_wait = tape.chance(60);
            Reply::Seed(WaitSeedResp {
                should_wait,
                delay: 1,
                seed: (!should_wait).then_some(Seed {
                    seed: WireRandomness(bytes),
                    epoch: 9200,
                }),
            })
        }
        Method::ReportState => Reply::State(tape.chance(128).then(|| SectorStateResp {
            id: SECTOR_ID,
            finalized: tape.chance(8),
            abort_reason: None,
        })),
        Method::StoreReserveSpace | Method::StoreBasicInfo => {
            Reply::Store(tape.chance(230).then(|| StoreBasicInfo {
                name: "persist".into(),
                path: "/store".into(),
                strict: false,
                read_only: false,
                weight: 1,
                meta: None,
            }))
        }
        Method::AllocateSanpUpSector => Reply::SnapUpSector(None),
        Method::AllocateRebuildSector => Reply::RebuildSector(None),
        Method::AllocateUnsealSector => Reply::UnsealSector(None),
        Method::AcquireUnsealDest => Reply::Destinations(vec![]),
        _ => Reply::Done,
    })
}

/// A step's result with every output a step may give, random bytes where a value goes.
fn step_result(step: StepKind, tape: &mut Tape) -> StepResult {
    let bytes = [tape.pick(256) as u8; 32];
    let outputs = StepOutputs {
        comm_d: Some(crate::sector::CommD::from_bytes(bytes)),
        comm_r: Some(crate::sector::CommR::from_bytes(bytes)),
        files: ["sealed", "c1-output", "proof", "unsealed-piece", "update"]
            .into_iter()
            .map(workspace_file)
            .collect(),
        verified: Some(tape.chance(230)),
        proof: Some("AAAA".into()),
        ..Default::default()
    };
    result_of(step, outputs)
}

fn pod_answer(name: &str, world: &World, tape: &mut Tape) -> Option<StepPod> {
    let (step, along) = world.pods.get(name)?.clone();
    let report = match tape.pick(8) {
        0 => PodReport::Starting {
            reason: "ContainerCreating".into(),
            problem: None,
        },
        1 | 2 => PodReport::Running,
        3 => PodReport::Failed {
            level: [
                FailureLevel::Temporary,
                FailureLevel::Permanent,
                FailureLevel::Critical,
                FailureLevel::Abort,
            ][tape.pick(4)],
            message: "the step failed".into(),
            never_ran: tape.chance(60),
        },
        _ => {
            let mut result = step_result(step, tape);
            // What ran along in the pod: done, or failed (then run in a pod of its own).
            for &along in &along {
                let mut ran = step_result(along, tape);
                if tape.chance(60) {
                    ran.failure = Some(crate::step::StepFailure {
                        level: FailureLevel::Temporary,
                        message: "the step failed".into(),
                    });
                }
                result.then.push(ran);
            }
            PodReport::Succeeded(Box::new(result))
        }
    };
    Some(StepPod {
        report,
        node: Some("node-a".into()),
        created: Some(NOW),
        deleting: false,
    })
}

fn run(plan: PlanKind, bytes: &[u8]) -> Result<(), TestCaseError> {
    run_visiting(plan, bytes, &mut BTreeSet::new())
}

/// What one decision did, for the properties checked across it.
struct DecisionSeen {
    before: SealingTaskStatus,
    /// The status as last written when it began.
    written: SealingTaskStatus,
    resume: Option<String>,
    /// The Transitions it made (from, with an event of the plan, to).
    transitions: Vec<(Option<State>, bool, State)>,
}

/// As [`run`], adding every state the task passed to `visited`. Each reconcile is the one loop
/// every executor uses ([`crate::task::reconcile`]); a crash (between reconciles, or at any
/// moment of one) drops it, and the task goes on from what was last written.
fn run_visiting(
    plan: PlanKind,
    bytes: &[u8],
    visited: &mut BTreeSet<State>,
) -> Result<(), TestCaseError> {
    let tape = &mut Tape { bytes, at: 0 };
    let mut spec = spec_of(plan);
    let mut world = World::default();
    let mut written = SealingTaskStatus::default();
    // The executor's memory of the task (facts waiting for a write); a crash loses it.
    let mut memory = Remembered::default();
    let mut now = NOW;
    let mut deleted_at = None;
    let rules = Rules::default();
    let states: Vec<State> = plan.plan().states.iter().map(|s| s.state).collect();
    // What happened, for the message of a failed property.
    let mut trace: Vec<String> = Vec::new();
    let mut reconciles = 0;
    'reconciles: while tape.at < bytes.len() && reconciles < 400 {
        reconciles += 1;
        let remembered = memory.clone();
        let observed = Observed {
            remembered,
            ..Observed::default()
        };
        let mut run = Reconcile::new(written.clone(), observed, &rules);
        let mut decision: Option<DecisionSeen> = None;
        let wake = loop {
            let decisions = run.decisions();
            let before = run.status().clone();
            let resume = spec.resume_state.clone();
            let task = Task {
                deleted_at,
                ..super::task(&spec)
            };
            let io = run.next(task, now);
            if run.decisions() != decisions {
                if let Some(seen) = decision.take() {
                    check_decision(plan, seen, &before, &mut world)?;
                }
                decision = Some(DecisionSeen {
                    before,
                    written: written.clone(),
                    resume,
                    transitions: Vec::new(),
                });
            }
            if let Some(state) = run.status().state {
                prop_assert!(plan.plan().has_state(state), "{state} is not of {plan}");
                visited.insert(state);
            }
            match io {
                Io::Write(StatusWrite { status, .. }) => {
                    written = wrote(*status, &mut memory, &mut trace);
                }
                Io::Apply(effect) => {
                    // A state whose work needs nothing (Allocated without deals) is passed
                    // within one decision: the transition into it is the visit.
                    if let Effect::Transition { to, .. } = &effect {
                        visited.insert(*to);
                    }
                    apply(effect, &mut spec, &mut world, decision.as_mut())
                }
                Io::Remember(facts) => memory = facts,
                Io::Report { .. } | Io::HeartbeatSent => {}
                Io::Ask(question) => {
                    let asking = Asking {
                        plan,
                        status: run.status(),
                        written: &written,
                        decision: decision.as_ref(),
                        now,
                    };
                    let answer = asking.answer(question, &mut world, tape, &mut trace)?;
                    run.answer(answer);
                }
                Io::Wait(wake) => break wake,
            }
            // A crash in the middle of a reconcile: what it did not write is lost, and what the
            // decision under way wrote stands (a rewind it wrote sends the task back).
            if tape.chance(2) {
                trace.push("crash".into());
                memory = Remembered::default();
                if let Some(seen) = decision.take() {
                    forget_if_sent_back(plan, &seen.written, &written, &mut world);
                }
                continue 'reconciles;
            }
        };
        if let Some(seen) = decision.take() {
            check_decision(plan, seen, run.status(), &mut world)?;
        }
        if wake == Wake::Release {
            break;
        }
        now += 1 + tape.pick(120) as i64;
        match meanwhile(tape, &mut spec, &states) {
            Meanwhile::Crash => {
                trace.push("crash".into());
                memory = Remembered::default();
            }
            Meanwhile::Delete if deleted_at.is_none() => deleted_at = Some(now),
            Meanwhile::Delete | Meanwhile::Nothing => {}
        }
    }
    Ok(())
}

/// A status written: what the executor remembered is dropped once the write holds it.
fn wrote(
    status: SealingTaskStatus,
    memory: &mut Remembered,
    trace: &mut Vec<String>,
) -> SealingTaskStatus {
    let (state, submitting) = (status.state, status.submitting);
    trace.push(format!("write {state:?} submitting={submitting:?}"));
    if memory.written_in(&status) {
        *memory = Remembered::default();
    }
    status
}

/// What happens between two reconciles.
enum Meanwhile {
    /// The operator restarts: its memory is lost.
    Crash,
    /// The user deletes the task.
    Delete,
    /// Nothing, or a change of the spec.
    Nothing,
}

/// The tape's choice of what happens between two reconciles; edits of the spec (a resume request,
/// suspend) are made here.
fn meanwhile(tape: &mut Tape, spec: &mut SealingTaskSpec, states: &[State]) -> Meanwhile {
    match tape.pick(24) {
        0 | 1 => return Meanwhile::Crash,
        2 => spec.resume_state = Some(String::new()),
        3 | 4 => {
            let state = states[tape.pick(states.len())];
            spec.resume_state = Some(state.to_string());
        }
        5 => spec.suspend = !spec.suspend,
        6 => return Meanwhile::Delete,
        _ => {}
    }
    Meanwhile::Nothing
}

/// Applies what the executor does itself with an effect: the pods it makes and deletes, the
/// user's request it clears, the transitions it saw.
fn apply(
    effect: Effect,
    spec: &mut SealingTaskSpec,
    world: &mut World,
    decision: Option<&mut DecisionSeen>,
) {
    match effect {
        Effect::ClearResumeRequest => spec.resume_state = None,
        Effect::CreateStepPod(pod) => {
            world.pods.insert(
                pod.name.clone(),
                (pod.request.step, pod.request.then.clone()),
            );
        }
        Effect::DeletePod(name) => {
            world.pods.remove(&name);
        }
        Effect::DeleteTaskPods => world.pods.clear(),
        Effect::Transition { from, event, to } => {
            if let Some(seen) = decision {
                seen.transitions.push((from, event.is_some(), to));
            }
        }
        _ => {}
    }
}

/// A question of the core, where the task stands when it asks.
struct Asking<'a> {
    plan: PlanKind,
    status: &'a SealingTaskStatus,
    written: &'a SealingTaskStatus,
    decision: Option<&'a DecisionSeen>,
    now: i64,
}

impl Asking<'_> {
    /// The tape's answer, checking that a submission is asked only with its intent written and
    /// never again once accepted.
    fn answer(
        &self,
        question: Question,
        world: &mut World,
        tape: &mut Tape,
        trace: &mut Vec<String>,
    ) -> Result<Answer, TestCaseError> {
        trace.push(
            format!("{:?} ask {question:?}", self.status.state)
                .chars()
                .take(120)
                .collect(),
        );
        let answer = match question {
            Question::Manager(call) => {
                let method = call.method();
                if let Some(submission) = method.submission() {
                    if let Some(seen) = self.decision {
                        forget_if_sent_back(self.plan, &seen.before, self.status, world);
                    }
                    prop_assert_eq!(
                        self.written.submitting,
                        Some(submission),
                        "{} asked without its intent written",
                        method
                    );
                    prop_assert!(
                        !world.accepted.contains(&method),
                        "{} asked again after the manager accepted it:\n{}",
                        method,
                        trace[trace.len().saturating_sub(25)..].join("\n")
                    );
                }
                let reply = manager_answer(&call, world, tape);
                trace.push(format!("  answered {reply:?}").chars().take(120).collect());
                Answer::Manager(*call, reply)
            }
            Question::SectorState(call) => Answer::SectorState(manager_answer(&call, world, tape)),
            Question::StepPod(name) => {
                let pod = pod_answer(&name, world, tape);
                Answer::StepPod(name, pod)
            }
            Question::NodeExists(node) => Answer::NodeExists(node, tape.chance(240)),
            Question::Slot { step, .. } => Answer::Slot(step, Ok(())),
            Question::CleanupPod(_) => Answer::CleanupPod(match tape.pick(3) {
                0 => CleanupPod::Absent,
                1 => CleanupPod::Running {
                    created: Some(self.now - tape.pick(60) as i64),
                },
                _ => CleanupPod::Exited(0),
            }),
        };
        Ok(answer)
    }
}

/// The properties of one decision, from the status before it to the status after it.
fn check_decision(
    plan: PlanKind,
    seen: DecisionSeen,
    after: &SealingTaskStatus,
    world: &mut World,
) -> Result<(), TestCaseError> {
    let DecisionSeen {
        before,
        resume,
        transitions,
        ..
    } = seen;
    // A resume moved the task only where the plan's rules allow.
    if let (Some(target), Some(from)) = (resume.as_deref(), before.state)
        && !target.is_empty()
        && after.state != before.state
        && after.state.map(|s| s.as_str()) == Some(target)
        && !transitions
            .iter()
            .any(|(_, planned, to)| *planned && to.as_str() == target)
    {
        let available = crate::task::resume::available_outputs(plan, &before);
        prop_assert!(
            crate::plan::validate_resume(plan, from, Some(target), &available).is_ok(),
            "a resume from {from} to {target} applied against the rules"
        );
    }
    forget_if_sent_back(plan, &before, after, world);
    Ok(())
}

/// A task sent back to redo its work (a resume to an earlier state, a ticket that expired)
/// seals again: its next submissions are new ones. So does one a person told to retry its
/// state's work: a submission may then go again, without reset, which the manager answers as a
/// duplicate (or as mismatched, if it differs from what it holds).
fn forget_if_sent_back(
    plan: PlanKind,
    before: &SealingTaskStatus,
    after: &SealingTaskStatus,
    world: &mut World,
) {
    let went_back = matches!((before.state, after.state), (Some(from), Some(to))
        if from != to && plan.plan().at_or_before(to, from));
    if went_back || after.last_resume != before.last_resume {
        world.accepted.clear();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn a_sealer_in_a_random_world_keeps_the_rules(tape in prop::collection::vec(any::<u8>(), 0..2000)) {
        run(PlanKind::Sealer, &tape)?;
    }

    #[test]
    fn a_task_of_any_plan_in_a_random_world_keeps_the_rules(
        plan in prop_oneof![
            Just(PlanKind::Snapup),
            Just(PlanKind::Rebuild),
            Just(PlanKind::Unseal),
        ],
        tape in prop::collection::vec(any::<u8>(), 0..1000),
    ) {
        run(plan, &tape)?;
    }
}

/// The random world is not so hostile that the properties above hold only because tasks never get
/// far: seeded tapes take sealers through every state to Finished.
#[test]
fn random_worlds_take_sealers_all_the_way() {
    let mut visited = BTreeSet::new();
    let mut seed: u64 = 0x5eed;
    for _ in 0..300 {
        let tape: Vec<u8> = (0..2000)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect();
        run_visiting(PlanKind::Sealer, &tape, &mut visited).unwrap();
    }
    let missed: Vec<&State> = PlanKind::Sealer
        .plan()
        .states
        .iter()
        .map(|s| &s.state)
        .filter(|s| !visited.contains(s) && **s != State::SyntheticPoRepNeeded)
        .collect();
    assert!(missed.is_empty(), "never reached: {missed:?}");
}
