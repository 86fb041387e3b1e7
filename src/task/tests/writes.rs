//! What a sealed sector's API writes are spent on (issue 21: at most 20): a sealer driven through
//! the one reconcile loop every executor uses ([`crate::task::reconcile`]) in a cooperative world,
//! so the writes counted are those the controller makes.

use super::*;
use crate::manager::wire::{Randomness as WireRandomness, Seed, Ticket, WaitSeedResp};
use crate::step::StepRequest;
use crate::task::reconcile::{Answer, Io, Reconcile, StatusWrite};

/// A status write, by the state it writes and the intent it records.
fn status_write(status: &SealingTaskStatus) -> String {
    format!(
        "status {}{}",
        status.state.map(|s| s.to_string()).unwrap_or_default(),
        status
            .submitting
            .map(|s| format!(" (submitting {s})"))
            .unwrap_or_default()
    )
}

/// `step`'s result, with the results of the steps that ran along in its pod.
fn result(step: StepKind, along: &[StepKind]) -> StepResult {
    let outputs = StepOutputs {
        comm_d: Some(crate::sector::CommD::from_bytes([7; 32])),
        comm_r: Some(crate::sector::CommR::from_bytes([9; 32])),
        files: ["sealed", "c1-output", "proof"]
            .into_iter()
            .map(workspace_file)
            .collect(),
        proof: Some("AAAA".into()),
        ..Default::default()
    };
    StepResult {
        then: along.iter().map(|&step| result(step, &[])).collect(),
        ..result_of(step, outputs)
    }
}

/// The manager's answer; `asked` counts the calls of each method so far, so that each chain wait
/// is seen once before it ends.
fn answer(call: &Call, asked: usize) -> Reply {
    let randomness = WireRandomness([5; 32]);
    match call.method() {
        Method::AllocateSector => Reply::Sector(Some(AllocatedSector {
            id: SECTOR_ID,
            proof_type: 5,
        })),
        Method::AcquireDeals => Reply::Deals(vec![]),
        Method::AssignTicket => Reply::Ticket(Ticket {
            ticket: randomness,
            epoch: 9000,
        }),
        Method::SubmitPreCommit | Method::SubmitProof => Reply::Submit(SubmitResp {
            res: SubmitResult::Accepted,
            desc: None,
        }),
        Method::PollPreCommitState | Method::PollProofState => Reply::Poll(PollResp {
            // The first poll after the submission (the one before it finds nothing) waits.
            state: match asked {
                0 => OnChainState::NotFound,
                1 => OnChainState::Pending,
                _ => OnChainState::Landed,
            },
            desc: None,
        }),
        Method::StoreReserveSpace => Reply::Store(Some(StoreBasicInfo {
            name: "persist".into(),
            path: "/store".into(),
            strict: false,
            read_only: false,
            weight: 1,
            meta: None,
        })),
        Method::SubmitPersistedEx => Reply::Persisted(true),
        Method::WaitSeed => Reply::Seed(WaitSeedResp {
            should_wait: asked == 0,
            delay: 60,
            seed: (asked > 0).then_some(Seed {
                seed: randomness,
                epoch: 9200,
            }),
        }),
        Method::ReportState => Reply::State(None),
        _ => Reply::Done,
    }
}

/// Drives a sealer from creation to its workspace removed; returns every API write the operator
/// makes for it, in order.
fn seal() -> Vec<String> {
    let spec = sealer();
    let task = task(&spec);
    let rules = Rules::default();
    let mut log = Vec::new();
    let mut status = SealingTaskStatus::default();
    let mut memory = Remembered::default();
    let mut pods: BTreeMap<String, (StepRequest, u8)> = BTreeMap::new();
    let mut calls: std::collections::HashMap<Method, usize> = Default::default();
    let mut cleanup = CleanupPod::Absent;
    let mut now = NOW;
    for _ in 0..100 {
        let observed = Observed {
            remembered: memory.clone(),
            ..Observed::default()
        };
        let mut run = Reconcile::new(status.clone(), observed, &rules);
        let wake = loop {
            match run.next(task, now) {
                Io::Write(StatusWrite {
                    status: written, ..
                }) => {
                    log.push(status_write(&written));
                    if memory.written_in(&written) {
                        memory = Remembered::default();
                    }
                    status = *written;
                }
                Io::Apply(Effect::CreateStepPod(pod)) => {
                    let along: Vec<String> =
                        pod.request.then.iter().map(|s| format!(" + {s}")).collect();
                    log.push(format!("create pod {}{}", pod.request.step, along.concat()));
                    pods.insert(pod.name.clone(), (pod.request.clone(), 0));
                }
                Io::Apply(Effect::CreateCleanupPod { .. }) => {
                    log.push("create cleanup pod".into());
                    cleanup = CleanupPod::Running { created: Some(now) };
                }
                Io::Apply(Effect::DeletePod(_) | Effect::DeleteTaskPods | Effect::DeleteTask) => {
                    log.push("delete pods".into());
                }
                Io::Apply(_) | Io::Report { .. } | Io::HeartbeatSent => {}
                Io::Remember(facts) => memory = facts,
                Io::Ask(question) => run.answer(match question {
                    Question::Manager(call) => {
                        let asked = calls.entry(call.method()).or_default();
                        let reply = answer(&call, *asked);
                        *asked += 1;
                        Answer::Manager(*call, Ok(reply))
                    }
                    Question::SectorState(call) => Answer::SectorState(Ok(answer(&call, 0))),
                    Question::StepPod(name) => {
                        // Seen running once, then succeeded.
                        let pod = pods.get_mut(&name).map(|(request, seen)| {
                            *seen += 1;
                            StepPod {
                                report: if *seen == 1 {
                                    PodReport::Running
                                } else {
                                    PodReport::Succeeded(Box::new(result(
                                        request.step,
                                        &request.then,
                                    )))
                                },
                                node: Some("node-a".into()),
                                created: Some(now),
                                deleting: false,
                            }
                        });
                        Answer::StepPod(name, pod)
                    }
                    Question::NodeExists(node) => Answer::NodeExists(node, true),
                    Question::Slot { step, .. } => Answer::Slot(step, Ok(())),
                    Question::CleanupPod(_) => {
                        let found = cleanup;
                        if let CleanupPod::Running { .. } = cleanup {
                            cleanup = CleanupPod::Exited(0);
                        }
                        Answer::CleanupPod(found)
                    }
                }),
                Io::Wait(wake) => break wake,
            }
        };
        let cleaned = status.state == Some(State::Finished)
            && status::condition_true(&status, condition::WORKSPACE_CLEANED);
        if wake == Wake::Release || cleaned {
            break;
        }
        now += 61;
    }
    log
}

/// 11 status writes, 7 pod creations and one deletion: the controller adds the end's Event, and
/// the finalizer where the cluster's admission policy did not (docs/benchmarks.md). Each status
/// write is what a step or a wait shows while it lasts, or what a crash must find written.
#[test]
fn a_sealed_sector_costs_these_writes() {
    let log = seal();
    let expected = [
        // The allocated sector, with the pod that uses it; tree-d runs in it after add-piece.
        "status DealsAcquired",
        "create pod add-piece + tree-d",
        // Both results and the ticket, which must be written before the pod that seals with it.
        "status TicketAssigned",
        "create pod pc1",
        // A step's result and the next step's pod, in one write (its pod may come first: the
        // finished pod holds the result until the task ends).
        "create pod pc2",
        "status PC1Done",
        // PC2's result, the intent of the PreCommit and the wait for its landing: one write.
        "status PCSubmitted (submitting SubmitPreCommit)",
        // With the reserved store, before the pod that copies into it.
        "status PCLanded",
        "create pod persist",
        // The persisted files, and the wait for the seed.
        "status PersistanceSubmitted",
        "create pod c1",
        "status SeedAssigned",
        "create pod c2",
        "status C1Done",
        "status ProofSubmitted (submitting SubmitProof)",
        // Before the manager is told (a restart must not find the sector gone from it).
        "status Finished",
        "create cleanup pod",
        "delete pods",
        // The workspace removed, with the manager's answer to the end report.
        "status Finished",
    ];
    assert_eq!(log, expected, "{}", log.join("\n"));
    let status_writes = log.iter().filter(|w| w.starts_with("status")).count();
    assert_eq!(status_writes, 11);
}
