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
    CallFailure {
        level: if tape.chance(200) {
            FailureLevel::Temporary
        } else {
            FailureLevel::Permanent
        },
        message: "the world said no".into(),
        code: Some(tape.pick(3) as i64),
        unavailable: tape.chance(40),
    }
}

fn poll_of(method: Method) -> Option<Method> {
    match method {
        Method::PollPreCommitState => Some(Method::SubmitPreCommit),
        Method::PollProofState => Some(Method::SubmitProof),
        _ => None,
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
            let submit = poll_of(method).expect("a poll");
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

/// As [`run`], adding every state the task passed to `visited`.
fn run_visiting(
    plan: PlanKind,
    bytes: &[u8],
    visited: &mut BTreeSet<State>,
) -> Result<(), TestCaseError> {
    let tape = &mut Tape { bytes, at: 0 };
    let mut spec = spec_of(plan);
    let mut world = World::default();
    let mut status = SealingTaskStatus::default();
    let mut written = status.clone();
    let mut observed = Observed::default();
    // The executor's memory of the task (facts waiting for a write); a crash loses it.
    let mut memory = Remembered::default();
    let mut now = NOW;
    let mut deleted_at = None;
    let rules = Rules::default();
    let states: Vec<State> = plan.plan().states.iter().map(|s| s.state).collect();
    // What happened, for the message of a failed property.
    let mut trace: Vec<String> = Vec::new();
    for _ in 0..400 {
        if tape.at >= bytes.len() {
            break;
        }
        let task = Task {
            namespace: "farm",
            name: "t1",
            spec: &spec,
            generation: Some(1),
            deleted_at,
            abort_on_delete: false,
        };
        let before = status.clone();
        let resume = spec.resume_state.clone();
        let decision = decide(task, &status, &observed, now, &rules);
        trace.push(format!(
            "{:?} resume={resume:?} submitting={:?} -> {:?} submitting={:?} wake={:?}",
            before.state,
            before.submitting,
            decision.status.state,
            decision.status.submitting,
            match &decision.wake {
                Wake::Ask(Question::Manager(call)) => format!("ask {}", call.method()),
                other => format!("{other:?}").chars().take(60).collect(),
            }
        ));
        status = decision.status.clone();
        observed.reply = None;

        visited.extend(status.state);
        if let Some(state) = status.state {
            prop_assert!(plan.plan().has_state(state), "{state} is not of {plan}");
        }
        // A resume moved the task only where the plan's rules allow.
        if let (Some(target), Some(from)) = (resume.as_deref(), before.state)
            && !target.is_empty()
            && status.state != before.state
            && status.state.map(|s| s.as_str()) == Some(target)
            && !decision.effects.iter().any(|e| {
                matches!(e, Effect::Transition { event: Some(_), to, .. } if to.as_str() == target)
            })
        {
            let available = crate::task::resume::available_outputs(plan, &before);
            prop_assert!(
                crate::plan::validate_resume(plan, from, Some(target), &available).is_ok(),
                "a resume from {from} to {target} applied against the rules"
            );
        }
        // A task sent back to redo its work (a resume to an earlier state, a ticket that
        // expired) seals again: its next submissions are new ones.
        // So does one a person told to retry its state's work: a submission may then go again,
        // without reset, which the manager answers as a duplicate (or as mismatched, if it
        // differs from what it holds).
        let went_back = matches!((before.state, status.state), (Some(from), Some(to))
            if from != to && plan.plan().at_or_before(to, from));
        if went_back || status.last_resume != before.last_resume {
            world.accepted.clear();
        }
        for effect in &decision.effects {
            match effect {
                Effect::WriteStatus => written = status.clone(),
                Effect::ClearResumeRequest => spec.resume_state = None,
                Effect::CreateStepPod(pod) => {
                    world.pods.insert(
                        pod.name.clone(),
                        (pod.request.step, pod.request.then.clone()),
                    );
                }
                Effect::DeletePod(name) => {
                    world.pods.remove(name);
                }
                Effect::DeleteTaskPods => world.pods.clear(),
                Effect::Remember(facts) => {
                    memory.merge(facts);
                    observed.remembered = memory.clone();
                }
                _ => {}
            }
        }
        match decision.wake {
            Wake::Ask(question) => match question {
                Question::Manager(call) => {
                    let method = call.method();
                    if crate::task::work::is_submission(method) {
                        prop_assert_eq!(
                            written.submitting.as_deref(),
                            Some(<&str>::from(method)),
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
                    let reply = manager_answer(&call, &mut world, tape);
                    trace.push(format!("  answered {reply:?}").chars().take(120).collect());
                    observed.reply = Some((*call, reply));
                }
                Question::SectorState(call) => {
                    observed.sector_state = Some(manager_answer(&call, &mut world, tape));
                }
                Question::StepPod(name) => {
                    let pod = pod_answer(&name, &world, tape);
                    observed.pods.insert(name, pod);
                }
                Question::NodeExists(node) => {
                    observed.nodes.insert(node, tape.chance(240));
                }
                Question::Slot { step, .. } => observed.slot = Some((step, Ok(()))),
                Question::CleanupPod(_) => {
                    observed.cleanup_pod = Some(match tape.pick(3) {
                        0 => CleanupPod::Absent,
                        1 => CleanupPod::Running {
                            created: Some(now - tape.pick(60) as i64),
                        },
                        _ => CleanupPod::Exited(0),
                    })
                }
            },
            Wake::Release => break,
            Wake::After(_) | Wake::OnChange | Wake::CleanupPending => {
                // The reconcile ends: its status written, what it observed forgotten.
                written = status.clone();
                observed = Observed {
                    remembered: memory.clone(),
                    ..Observed::default()
                };
                now += 1 + tape.pick(120) as i64;
                match tape.pick(24) {
                    // A crash before the last write: the status as last written.
                    0 | 1 => {
                        trace.push("crash".into());
                        status = written.clone();
                        memory = Remembered::default();
                        observed = Observed::default();
                    }
                    2 => spec.resume_state = Some(String::new()),
                    3 | 4 => {
                        let state = states[tape.pick(states.len())];
                        spec.resume_state = Some(state.to_string());
                    }
                    5 => spec.suspend = !spec.suspend,
                    6 if deleted_at.is_none() => deleted_at = Some(now),
                    _ => {}
                }
            }
        }
        // A crash in the middle of a reconcile: what it did not write is lost.
        if tape.chance(6) {
            trace.push("crash".into());
            status = written.clone();
            observed = Observed::default();
            memory = Remembered::default();
        }
    }
    Ok(())
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
