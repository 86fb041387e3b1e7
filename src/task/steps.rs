//! Proof and file steps: the request a step gets from the task's status, and the rules of its pod's
//! life (start it when a concurrency slot is free, pin it to the workspace node, replace a pod that
//! never ran without spending the retry budget, give up on a workspace whose node is gone).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::profiles::{Locality, Profiles, Resolved};
use super::status::set_phase;
use super::{
    Effect, PodReport, PodToCreate, Progress, Question, Remembered, SLOT_RECHECK, SLOW_START,
    StartProblem, StepPod, Turn, Wake, WorkspaceMount, WorkspaceNode,
};
use crate::api::{Artifact, Phase, PlanKind, SealingTaskStatus, State};
use crate::plan::Action;
use crate::plan::cursor::{self, Next, Outcome};
use crate::sector::{FailureLevel, SectorRef};
use crate::step::workspace::SectorFiles;
use crate::step::{
    DEFAULT_TERMINATION_MESSAGE_PATH, FileDigest, PieceInput, REQUEST_VERSION, SealedFiles,
    StepInputs, StepKind, StepRequest, UnsealRange,
};

/// A step pod's name: the task, the state and the attempt, so a restarted operator finds the pod it
/// already created instead of starting a second one.
pub fn pod_name(task: &str, state: State, attempt: u32) -> String {
    let state = state.as_str().to_ascii_lowercase();
    let suffix = format!("-{state}-{attempt}");
    let room = 253 - suffix.len();
    let task = &task[..task.len().min(room)];
    format!("{task}{suffix}")
}

/// Where C1 leaves its output for a C2 on another node (`locality: any`): in the persist store,
/// which every node mounts, one directory per sector, removed with the task's workspace.
pub fn transfer_dir(persist: &Path, sector: SectorRef) -> PathBuf {
    persist.join("transfer").join(sector.to_string())
}

/// The persist store the manager reserved for the task, as a path on the nodes.
pub fn persist_root(status: &SealingTaskStatus, profiles: &Profiles) -> Option<PathBuf> {
    let store = status.outputs.as_ref()?.store.as_ref()?;
    Some(PathBuf::from(profiles.store_path(&store.name, &store.path)))
}

/// The task's workspace directory on its node.
pub fn workspace_dir(profiles: &Profiles, namespace: &str, name: &str) -> PathBuf {
    Path::new(&profiles.workspace_root)
        .join(namespace)
        .join(name)
}

fn digest(artifact: &Artifact) -> FileDigest {
    FileDigest {
        path: PathBuf::from(&artifact.location),
        sha256: artifact.sha256.clone(),
        size: artifact.size,
    }
}

/// The persist stores an unseal can deliver `store://<instance>/<path>` to, by instance name, as
/// paths on the nodes: the sector's own store (its path as the manager reported it), the one the
/// manager reserved, and every store profiles.storePaths names.
pub fn destination_stores(
    status: &SealingTaskStatus,
    profiles: &Profiles,
) -> BTreeMap<String, PathBuf> {
    let outputs = status.outputs.as_ref();
    let committed = outputs
        .and_then(|o| o.committed.as_ref())
        .and_then(|c| Some((c.instance.as_str(), c.path.as_deref()?)));
    let reserved = outputs
        .and_then(|o| o.store.as_ref())
        .map(|s| (s.name.as_str(), s.path.as_str()));
    let configured = profiles
        .store_paths
        .iter()
        .map(|(name, path)| (name.as_str(), path.as_str()));
    committed
        .into_iter()
        .chain(reserved)
        .chain(configured)
        .map(|(name, path)| {
            (
                name.to_string(),
                PathBuf::from(profiles.store_path(name, path)),
            )
        })
        .collect()
}

/// Everything the task has gathered, as step inputs.
pub fn gathered_inputs(
    task: super::Task<'_>,
    status: &SealingTaskStatus,
    profiles: &Profiles,
) -> StepInputs {
    let spec = task.spec;
    let outputs = status.outputs.clone().unwrap_or_default();
    let ticket = outputs.ticket.as_ref().map(|t| t.value);
    let committed = match (&outputs.committed, status.sector) {
        (Some(committed), Some(sector)) => committed.path.as_ref().map(|path| {
            let store = SectorFiles::new(profiles.store_path(&committed.instance, path), sector);
            SealedFiles {
                sealed: store.sealed(),
                cache: store.cache(),
                comm_r: committed.comm_r,
                comm_d: outputs.comm_d,
                ticket,
            }
        }),
        _ => None,
    };
    let plan = spec.plan;
    let sector_key = outputs.sector_key.filter(|_| plan == PlanKind::Rebuild);
    // The rebuild of an upgraded sector first seals it again as committed capacity (zeros), as
    // it was before the upgrade; its deals go in at SealedChecked, for the snap steps.
    let resealing_key = sector_key.is_some() && status.state == Some(State::Allocated);
    // Deal data comes from the manager only, as damocles-worker takes it.
    let pieces = outputs
        .pieces
        .iter()
        .filter(|_| !resealing_key)
        .map(|p| PieceInput {
            cid: Some(p.cid.clone()),
            size: p.size,
            source: p.payload_size.and_then(|_| {
                let store = profiles.piece_store.as_deref()?;
                Some(format!("{store}{}", p.cid))
            }),
            payload_size: p.payload_size,
        });
    let unseal = outputs.unseal.as_ref();
    let reaches_out =
        plan == PlanKind::Unseal || outputs.pieces.iter().any(|p| p.payload_size.is_some());
    StepInputs {
        pieces: pieces.collect(),
        piece_dirs: profiles.piece_dirs.iter().map(PathBuf::from).collect(),
        ticket,
        seed: match plan {
            // A rebuild checks its replica with a C1 run seeded by the ticket: no chain seed exists.
            PlanKind::Rebuild => ticket,
            _ => outputs.seed.as_ref().map(|t| t.value),
        },
        comm_d: outputs.comm_d,
        comm_r: outputs.comm_r,
        c1_output: outputs.c1_output.as_ref().map(digest),
        proof: outputs.proof.as_ref().map(digest),
        cc_sector: match sector_key {
            // The replica the rebuild sealed again, in its workspace.
            Some(comm_r) => status.sector.map(|sector| {
                let workspace =
                    SectorFiles::new(workspace_dir(profiles, task.namespace, task.name), sector);
                SealedFiles {
                    sealed: workspace.sealed(),
                    cache: workspace.cache(),
                    comm_r: Some(comm_r),
                    comm_d: None,
                    ticket,
                }
            }),
            None => committed.clone().filter(|_| plan == PlanKind::Snapup),
        },
        sealed: committed.filter(|_| plan == PlanKind::Unseal),
        unseal: unseal.map(|u| UnsealRange {
            offset: u.offset,
            size: u.size,
        }),
        destinations: unseal.map(|u| u.destinations.clone()).unwrap_or_default(),
        piece_store: profiles
            .piece_store
            .clone()
            .filter(|_| plan == PlanKind::Unseal),
        stores: if plan == PlanKind::Unseal {
            destination_stores(status, profiles)
        } else {
            BTreeMap::new()
        },
        // Only where a step goes out to the network or the node: other steps' input digests
        // stay as they were.
        allowed_hosts: if reaches_out {
            profiles.allowed_hosts.clone()
        } else {
            vec![]
        },
        delivery_roots: if plan == PlanKind::Unseal {
            profiles.delivery_roots.iter().map(PathBuf::from).collect()
        } else {
            vec![]
        },
    }
}

/// The largest step request sent: it is one environment variable of the pod, and Linux refuses
/// a single one over 128 KiB when the container starts.
pub const REQUEST_LIMIT: usize = 100 * 1024;

/// The request for `step` of this task, from its current status.
pub fn step_request(
    task: super::Task<'_>,
    status: &SealingTaskStatus,
    step: StepKind,
    profiles: &Profiles,
) -> Result<StepRequest, String> {
    let sector = status
        .sector
        .ok_or("the task has no sector yet (the manager has not allocated one)")?;
    let persist = persist_root(status, profiles);
    // Without a persist store there is no shared place for C1's output, and C2 runs on the
    // task's node ([`runs_anywhere`]).
    let share = persist
        .as_deref()
        .filter(|_| {
            step.hands_over_to()
                .is_some_and(|next| profiles.locality(next) == Locality::Any)
        })
        .map(|persist| transfer_dir(persist, sector));
    Ok(StepRequest {
        version: REQUEST_VERSION,
        step,
        sector,
        sector_size: task.spec.sector_size,
        synthetic_po_rep: super::synthetic(task.spec, status),
        workspace: workspace_dir(profiles, task.namespace, task.name),
        persist,
        share,
        termination_message_path: Some(PathBuf::from(DEFAULT_TERMINATION_MESSAGE_PATH)),
        inputs: gathered_inputs(task, status, profiles).select(step),
        then: Vec::new(),
    })
}

/// Whether a step of this profile leaves the task's node: it may, when its inputs travel through
/// the persist store (C2 reading C1's output from the transfer directory there).
pub fn runs_anywhere(request: &StepRequest, profile: &Resolved) -> bool {
    profile.locality == Locality::Any
        && request.step.may_leave_workspace()
        && request.inputs.c1_output.as_ref().is_some_and(|c1| {
            request
                .persist
                .as_ref()
                .is_some_and(|persist| c1.path.starts_with(persist))
        })
}

impl PodToCreate {
    /// Step pod `name`, placed: pinned to the task's `workspace_node` (if it has one yet) unless
    /// the step may run anywhere ([`runs_anywhere`]: then with scratch for a workspace), and
    /// steered away from `avoid` where nothing pins it.
    pub fn placed(
        name: String,
        request: StepRequest,
        profile: Resolved,
        workspace_node: Option<String>,
        avoid: Option<String>,
    ) -> Self {
        let free = runs_anywhere(&request, &profile);
        let node = workspace_node.filter(|_| !free);
        Self {
            name,
            avoid: avoid.filter(|_| node.is_none()),
            workspace: if free {
                WorkspaceMount::Scratch
            } else {
                WorkspaceMount::Task
            },
            node,
            request,
            profile,
        }
    }
}

/// A step pod not started yet, as seen.
struct Starting {
    step: StepKind,
    name: String,
    /// Seconds since it was created.
    age: u64,
    reason: String,
    problem: Option<StartProblem>,
    /// The node to steer its replacement away from, if it is replaced.
    avoid: Option<String>,
    /// Whether the scheduler has bound it to a node.
    bound: bool,
}

impl Turn<'_> {
    /// For the rebuild of an upgraded sector: whether PC2 sealed a committed-capacity replica
    /// other than the sector key the manager knows (the update encoded into it would not be the
    /// sector's), and how.
    fn resealed_key_differs(&self, step: StepKind) -> Option<String> {
        let outputs = self.status.outputs.as_ref()?;
        let key = outputs.sector_key?;
        let sealed = outputs.comm_r?;
        (step == StepKind::Pc2 && self.task.spec.plan == PlanKind::Rebuild && sealed != key).then(
            || {
                format!(
                    "the committed-capacity replica sealed again has CommR {sealed}, but the \
                 manager's UpgradePublic gives the sector key {key}: the ticket or sector is \
                 not the one the upgrade was encoded into"
                )
            },
        )
    }

    /// Runs `step` as a pod: an outcome once the pod has ended, otherwise what to wait for.
    pub(super) fn step(&mut self, step: StepKind) -> Progress {
        if let Some(wait) = self.retiring_pod_gone() {
            return Progress::Wake(wait);
        }
        if let Some(done) = self.ran_along(step) {
            return done;
        }
        let state = self.position().state;
        let profile = self.rules.profiles.resolve(step, self.rules.retry_backoff);
        let name = pod_name(self.task.name, state, self.status.attempt);
        let Some(pod) = self.observed.pods.get(&name) else {
            return Progress::Wake(Wake::Ask(Question::StepPod(name)));
        };
        let Some(pod) = pod.clone() else {
            return self.on_absent_pod(step, name, profile);
        };
        let ran = !matches!(
            pod.report,
            PodReport::Starting { .. }
                | PodReport::Failed {
                    never_ran: true,
                    ..
                }
        );
        if ran && profile.locality == Locality::Workspace {
            self.note_workspace_node(&name, &pod);
        }
        // Should this pod be replaced before it ran, its replacement prefers another node where
        // nothing pins it.
        let avoid = pod
            .node
            .clone()
            .filter(|_| !ran && (self.status.node.is_none() || profile.locality == Locality::Any));
        if pod.deleting && !matches!(pod.report, PodReport::Succeeded(_)) {
            // Deleted by someone else (a person, an eviction, a drained node): the work was
            // interrupted, not failed, so no retry budget is spent.
            self.event(
                true,
                "StepPodLost",
                format!("step pod {name} was deleted; starting {step} again"),
            );
            return Progress::Wake(self.restart_step(&name, "its pod was deleted", avoid));
        }
        match pod.report {
            PodReport::Starting { reason, problem } => {
                let starting = Starting {
                    step,
                    name,
                    age: self.seconds_since(pod.created),
                    reason,
                    problem,
                    avoid,
                    bound: pod.node.is_some(),
                };
                self.on_starting(starting, &profile)
            }
            PodReport::Running => self.on_running(step, &name),
            PodReport::Succeeded(result) => self.on_succeeded(step, &result),
            PodReport::Failed {
                never_ran: true,
                message,
                ..
            } => {
                self.effects.push(Effect::DeletePod(name.clone()));
                Progress::Wake(self.restart_step(&name, &message, avoid))
            }
            PodReport::Failed { level, message, .. } => {
                self.effects.push(Effect::ReleaseSlot);
                Progress::Outcome(Outcome::Failed { level, message })
            }
        }
    }

    /// The step's pod does not exist: lost (the status names it, running), or to be started,
    /// once a concurrency slot is free.
    fn on_absent_pod(&mut self, step: StepKind, name: String, profile: Resolved) -> Progress {
        let state = self.position().state;
        if self.status.step_pod.as_deref() == Some(name.as_str())
            && self.status.phase == Some(Phase::Running)
        {
            self.event(
                true,
                "StepPodLost",
                format!("step pod {name} disappeared; starting {step} again"),
            );
            return Progress::Wake(self.restart_step(&name, "its pod disappeared", None));
        }
        if let Some(cap) = profile.concurrency {
            match self.observed.slot {
                Some((asked, Ok(()))) if asked == step => {}
                Some((asked, Err(full))) if asked == step => {
                    let message = format!(
                        "{state}: waiting for a {step} slot ({} of {} in use; the {step} \
                         profile's concurrency)",
                        full.holders, full.cap
                    );
                    set_phase(&mut self.status, Phase::Waiting, message, self.now);
                    self.write();
                    return Progress::Wake(Wake::After(SLOT_RECHECK));
                }
                _ => return Progress::Wake(Wake::Ask(Question::Slot { step, cap })),
            }
        }
        self.start_step(step, name, profile)
    }

    /// The workspace lives where the first workspace step ran; a pod that never started there
    /// wrote nothing, and its replacement may go elsewhere. Kept in memory while the pod runs
    /// (it is written with the step's end): a first step costs no write of its own.
    fn note_workspace_node(&mut self, name: &str, pod: &StepPod) {
        if self.status.node.is_some() {
            return;
        }
        let Some(node) = pod.node.clone() else {
            return;
        };
        if self.status.step_pod.as_deref() == Some(name) {
            self.remember(Remembered {
                workspace: Some(WorkspaceNode {
                    pod: name.to_string(),
                    node,
                }),
                ..Remembered::default()
            });
        } else {
            self.status.node = Some(node);
        }
    }

    /// The step's pod has not started: its node gone, a problem waiting will not fix, too slow
    /// (replaced), or a wait.
    fn on_starting(&mut self, starting: Starting, profile: &Resolved) -> Progress {
        let Starting {
            step,
            name,
            age,
            reason,
            problem,
            avoid,
            bound,
        } = starting;
        let state = self.position().state;
        // A pod pinned to a node that is gone never starts. Most pods start within seconds, so
        // the node is looked up only for one slow to start: not a read of the Node at every
        // step of every task.
        if let Some(node) = self.status.node.clone()
            && profile.locality == Locality::Workspace
            && age >= SLOW_START.as_secs()
        {
            match self.observed.nodes.get(&node) {
                None => return Progress::Wake(Wake::Ask(Question::NodeExists(node))),
                Some(false) => return self.workspace_node_gone(&name, &node),
                Some(true) => {}
            }
        }
        // An image one node cannot pull may be that node's trouble (its registry access): a pod
        // free to go elsewhere gets one try on another node first.
        let elsewhere = avoid.is_some() && self.status.avoid_node.is_none();
        let problem =
            problem.filter(|p| !(elsewhere && matches!(p, StartProblem::ImagePull { .. })));
        let waited = profile.start_timeout.as_secs();
        if age > waited
            && let Some(problem) = problem
        {
            // Another pod would meet the same image or the same nodes: a person must change the
            // profile, the registry or the nodes.
            self.effects.push(Effect::DeletePod(name.clone()));
            self.effects.push(Effect::ReleaseSlot);
            let message = match problem {
                StartProblem::ImagePull { image } => format!(
                    "the {step} image {image} cannot be pulled ({reason}) after {waited}s; fix \
                     the image in the {step} profile, the registry or the profile's \
                     imagePullSecrets"
                ),
                StartProblem::NoFittingNode => format!(
                    "no node can run the {step} pod after {waited}s: {reason}; label or untaint \
                     a node, or fix the {step} profile's placement"
                ),
            };
            return Progress::Outcome(Outcome::Failed {
                level: FailureLevel::Permanent,
                message,
            });
        }
        // A pod bound to a node that has not started it may be that node's trouble: another pod
        // may start elsewhere. One the scheduler has not placed waits in its queue for a node
        // with room, and a replacement would only go to the back of that queue.
        if age > waited && bound {
            self.effects.push(Effect::DeletePod(name.clone()));
            let why = format!("it did not start within {waited}s: {reason}");
            return Progress::Wake(self.restart_step(&name, &why, avoid));
        }
        // Most pods start within seconds: say so in status only when one is slow.
        if age >= SLOW_START.as_secs() {
            let queued = if bound {
                ""
            } else {
                " (waiting in the scheduler's queue for a node with room)"
            };
            let message = format!("{state}: {step} pod {name} not started{queued}: {reason}");
            set_phase(&mut self.status, Phase::Waiting, message, self.now);
        }
        self.write();
        // Look again when the status message or the start timeout is due; past the timeout, a
        // queued pod's next change (bound, or the scheduler's new reason) wakes the task, and
        // the manager heartbeat as for a running step.
        if age > waited {
            return Progress::Wake(self.heartbeat_wake());
        }
        let timeout_in = waited + 1 - age;
        Progress::Wake(Wake::After(SLOW_START.min(Duration::from_secs(timeout_in))))
    }

    /// The node that holds the task's workspace is gone, and its files with it.
    fn workspace_node_gone(&mut self, name: &str, node: &str) -> Progress {
        self.effects.push(Effect::DeletePod(name.to_string()));
        let plan = self.task.spec.plan();
        let state = self.position().state;
        // Past its PreCommit a sealer's data is on chain: sealing again would draw a new ticket,
        // which that PreCommit does not match.
        let advice = if self.task.spec.plan == PlanKind::Sealer
            && !plan.at_or_before(state, State::PC2Done)
        {
            "its PreCommit is on chain, so sealing again with a new ticket cannot match it: \
             abort this task (resumeState: Aborted); once the manager marks the sector for \
             rebuild, a rebuild task restores its files from the original ticket"
                .to_string()
        } else {
            format!(
                "resume at {} to start over on another node",
                plan.first_workspace_state()
            )
        };
        Progress::Outcome(Outcome::Failed {
            level: FailureLevel::Critical,
            message: format!(
                "node {node}, which holds this task's workspace, no longer exists; its files are \
                 gone with it: {advice}"
            ),
        })
    }

    fn on_running(&mut self, step: StepKind, name: &str) -> Progress {
        let state = self.position().state;
        let message = format!("{state}: running {step} in pod {name}");
        set_phase(&mut self.status, Phase::Running, message, self.now);
        self.write();
        Progress::Wake(self.heartbeat_wake())
    }

    /// How a task whose pod is under way waits: woken now and then to ask the manager whether it
    /// still holds the sector, else on the pod's next change.
    fn heartbeat_wake(&self) -> Wake {
        match self.rules.manager_heartbeat {
            Some(every) => Wake::After(every),
            None => Wake::OnChange,
        }
    }

    fn on_succeeded(&mut self, step: StepKind, result: &crate::step::StepResult) -> Progress {
        self.effects.push(Effect::ReleaseSlot);
        self.ran_along = result.then.clone();
        self.absorb(step, result);
        if let Some(problem) = self.resealed_key_differs(step) {
            return Progress::Outcome(super::work::failed(FailureLevel::Permanent, problem));
        }
        Progress::Outcome(Outcome::Done)
    }

    /// Waits until the step pod this task last stopped has stopped running, as a StatefulSet waits
    /// for its pod: a replacement started beside it would work on the same workspace (the step's
    /// workspace lock would stop it, but as a failure). A pod on a node that no longer answers
    /// stays until the node is deleted or the pod force-deleted; the task says so meanwhile.
    fn retiring_pod_gone(&mut self) -> Option<Wake> {
        let old = self.status.retiring_pod.clone()?;
        let Some(pod) = self.observed.pods.get(&old) else {
            return Some(Wake::Ask(Question::StepPod(old)));
        };
        let still_running = pod.as_ref().is_some_and(|pod| {
            !matches!(
                pod.report,
                PodReport::Succeeded(_) | PodReport::Failed { .. }
            )
        });
        if !still_running {
            self.status.retiring_pod = None;
            return None;
        }
        let node = pod
            .as_ref()
            .and_then(|p| p.node.clone())
            .map_or(String::new(), |node| format!(" on node {node}"));
        let message = format!(
            "waiting for step pod {old}{node} to stop before starting its replacement (if the \
             node is lost, delete the node or force-delete the pod)"
        );
        if self.status.message.as_deref() != Some(message.as_str()) {
            set_phase(&mut self.status, Phase::Waiting, message, self.now);
            self.write();
        }
        Some(Wake::OnChange)
    }

    /// Starts the step again under the next attempt's pod name without spending its retry budget.
    fn restart_step(&mut self, old: &str, why: &str, avoid: Option<String>) -> Wake {
        if let Some(node) = &avoid {
            self.log(
                false,
                format!(
                    "step pod {old} did not start on {node}; the replacement prefers another node"
                ),
            );
        } else {
            self.log(true, format!("step pod {old} replaced: {why}"));
        }
        self.status.avoid_node = avoid;
        self.status.attempt += 1;
        self.status.step_pod = None;
        self.status.retiring_pod = Some(old.to_string());
        let message = format!("step pod {old} replaced: {why}");
        set_phase(&mut self.status, Phase::Waiting, message, self.now);
        self.write();
        Wake::OnChange
    }

    /// The outcome of `step` when it already ran in the pod of the step before (see
    /// [`Turn::runs_along`]). One that failed there is run again in a pod of its own.
    fn ran_along(&mut self, step: StepKind) -> Option<Progress> {
        let at = self.ran_along.iter().position(|r| r.step == step)?;
        let result = self.ran_along.remove(at);
        if let Some(failure) = &result.failure {
            self.log(
                true,
                format!(
                    "{step} failed in the previous step's pod ({}): running it in a pod of its own",
                    failure.message
                ),
            );
            return None;
        }
        self.absorb(step, &result);
        if let Some(problem) = self.resealed_key_differs(step) {
            return Some(Progress::Outcome(super::work::failed(
                FailureLevel::Permanent,
                problem,
            )));
        }
        Some(Progress::Outcome(Outcome::Done))
    }

    /// The step that runs in `step`'s pod right after it: tree-d after add-piece, when the next
    /// state's work is tree-d alone and its profile is add-piece's, with no concurrency cap of its
    /// own. Tree-d computes CommD from the pieces add-piece wrote to the workspace (milliseconds at
    /// any sector size): a pod of its own would cost a pod start and two API writes for nothing.
    /// A farm that gives tree-d other resources or nodes gets it a pod of its own.
    fn runs_along(&self, step: StepKind, profile: &Resolved) -> Option<StepKind> {
        const ALONG: StepKind = StepKind::TreeD;
        if step != StepKind::AddPiece {
            return None;
        }
        let plan = self.task.spec.plan();
        let after = cursor::after(plan, self.position(), self.facts(), Outcome::Done).ok()?;
        let Next::Enter { state, .. } = after.next else {
            return None;
        };
        if plan.state(state)?.actions != [Action::Proof(ALONG)] {
            return None;
        }
        let along = self.rules.profiles.resolve(ALONG, self.rules.retry_backoff);
        (along == *profile && along.concurrency.is_none()).then_some(ALONG)
    }

    fn start_step(&mut self, step: StepKind, name: String, profile: Resolved) -> Progress {
        let profiles = &self.rules.profiles;
        let request = match step_request(self.task, &self.status, step, profiles) {
            Ok(mut request) => {
                request.then.extend(self.runs_along(step, &profile));
                request
            }
            Err(message) => {
                let message = format!("cannot build the {step} request: {message}");
                return Progress::Wake(self.fail(FailureLevel::Permanent, message));
            }
        };
        let size = serde_json::to_string(&request)
            .expect("requests serialize")
            .len();
        if size > REQUEST_LIMIT {
            // It travels in one environment variable, which Linux caps at 128 KiB.
            let message = format!(
                "the {step} request is {size} bytes, more than the {REQUEST_LIMIT} a step pod's \
                 environment carries (the manager's lists for this sector are too long)"
            );
            return Progress::Wake(self.fail(FailureLevel::Permanent, message));
        }
        let mut profile = profile;
        if self.status.node.is_none() && profile.locality == Locality::Workspace {
            // This pod chooses the node every later workspace step is pinned to.
            match profiles.workspace_placement(self.task.spec.plan(), self.rules.retry_backoff) {
                Ok(placement) => {
                    profile.resources = placement.reserve(profile.resources.take());
                    profile.node_selector = placement.node_selector;
                    profile.tolerations = placement.tolerations;
                }
                Err(message) => {
                    return Progress::Wake(self.fail(FailureLevel::Permanent, message));
                }
            }
        }
        let pod = PodToCreate::placed(
            name.clone(),
            request,
            profile,
            self.status.node.clone(),
            self.status.avoid_node.clone(),
        );
        self.effects.push(Effect::CreateStepPod(Box::new(pod)));
        let state = self.position().state;
        self.status.step_pod = Some(name.clone());
        let message = format!("{state}: running {step} in pod {name}");
        set_phase(&mut self.status, Phase::Running, message, self.now);
        self.write();
        Progress::Wake(Wake::OnChange)
    }
}
