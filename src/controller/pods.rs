//! Step pods, pure: the pod that runs a step request (from the step's profile), and what a pod's
//! status says about the step. No API calls here; the request itself comes from the task core
//! ([`crate::task::steps`]).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvVar, HostPathVolumeSource, NodeAffinity, NodeSelector,
    NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, PreferredSchedulingTerm, Toleration,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::ResourceExt;

use crate::api::{FailureLevel, SealingTask, SealingTaskStatus, SectorRef};
use crate::step::destination::{Destination, delivery_root};
use crate::step::{
    DEFAULT_TERMINATION_MESSAGE_PATH, ExitCode, REQUEST_ENV, REQUEST_VERSION, StepInputs, StepKind,
    StepRequest, StepResult,
};
use crate::task::profiles::{Locality, Profiles, Resolved};
use crate::task::steps::{persist_root, transfer_dir, workspace_dir};
use crate::task::{PodReport, PodToCreate, StartProblem, WorkspaceMount};

/// Label on every pod the operator creates; its pod watch selects on it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "damocles-operator");
pub const STEP_LABEL: &str = "damocles.io/step";
pub const TASK_LABEL: &str = "damocles.io/task";
/// The owning task's uid: always a valid label value (names may be too long), and what a task's
/// pods are deleted together by when it ends.
pub const TASK_UID_LABEL: &str = "damocles.io/task-uid";
pub const CONTAINER: &str = "step";

/// The persist stores a step reads or writes (the reserved one, the committed sector's, those an
/// unseal delivers to), each with whether this step writes it: Persist writes the reserved
/// store, C1 its output into the transfer directory there, Upload the stores it delivers to.
/// Every other step only reads, and gets them read-only.
fn store_roots(request: &StepRequest) -> Vec<(PathBuf, bool)> {
    let committed = [&request.inputs.cc_sector, &request.inputs.sealed]
        .into_iter()
        .flatten()
        // damocles layout: <store>/sealed/<sector>.
        .filter_map(|files| Some(files.sealed.parent()?.parent()?.to_path_buf()));
    let destinations: Vec<&PathBuf> = request.inputs.stores.values().collect();
    let writes = |root: &PathBuf| match request.step {
        StepKind::Persist => request.persist.as_ref() == Some(root),
        StepKind::C1 => request.share.as_ref().is_some_and(|s| s.starts_with(root)),
        StepKind::Upload => destinations.contains(&root),
        _ => false,
    };
    let mut roots: Vec<PathBuf> = request
        .persist
        .iter()
        .cloned()
        .chain(committed)
        .chain(destinations.iter().map(|root| root.to_path_buf()))
        // A rebuilt sector key lies in the task's workspace, which is mounted already.
        .filter(|root| !root.starts_with(&request.workspace))
        .collect();
    roots.sort();
    roots.dedup();
    roots
        .into_iter()
        .map(|root| {
            let writable = writes(&root);
            (root, writable)
        })
        .collect()
}

/// The delivery roots an upload's file:// destinations lie under: the root is mounted, not the
/// file's directory, so a symbolic link below it is seen (and refused) by the step rather than
/// followed by the kubelet on the node.
fn delivery_mounts(request: &StepRequest) -> Vec<PathBuf> {
    let roots = &request.inputs.delivery_roots;
    let mut used: Vec<PathBuf> = request
        .inputs
        .destinations
        .iter()
        .filter_map(|text| match Destination::parse(text) {
            Ok(Destination::File(path)) => delivery_root(roots, &path).cloned(),
            _ => None,
        })
        .collect();
    used.sort();
    used.dedup();
    used
}

fn host_path_volume(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The pod the task core placed (`create`): pinned to its node, or steered away from the node
/// to avoid.
pub fn step_pod(task: &SealingTask, create: &PodToCreate, profiles: &Profiles) -> Pod {
    let PodToCreate {
        name,
        request,
        profile,
        node,
        avoid,
        workspace,
    } = create;
    let env = step_env(request, profile, profiles);
    let (volumes, mounts) = step_volumes(request, workspace, profiles);
    let affinity = placement(profile.affinity.clone(), node.as_deref(), avoid.as_deref());
    let labels = step_labels(task, request);
    Pod {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: task.namespace(),
            labels: Some(labels),
            owner_references: task.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            // A step talks to no API: no token in its filesystem.
            automount_service_account_token: Some(false),
            image_pull_secrets: profile.image_pull_secrets.clone(),
            priority_class_name: profile.priority_class_name.clone(),
            runtime_class_name: profile.runtime_class_name.clone(),
            active_deadline_seconds: profile.deadline_seconds,
            node_selector: profile.node_selector.clone(),
            affinity,
            tolerations: profile.tolerations.clone(),
            volumes: Some(volumes),
            containers: vec![Container {
                name: CONTAINER.into(),
                image: Some(profile.image.clone()),
                command: Some(profile.command.clone()),
                args: Some(vec![
                    "run".into(),
                    "--request-env".into(),
                    REQUEST_ENV.into(),
                ]),
                env: Some(env),
                resources: profile.resources.clone(),
                volume_mounts: Some(mounts),
                termination_message_path: Some(DEFAULT_TERMINATION_MESSAGE_PATH.into()),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(profile.security_context.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

fn step_env(request: &StepRequest, profile: &Resolved, profiles: &Profiles) -> Vec<EnvVar> {
    let request_json = serde_json::to_string(request).expect("requests serialize");
    let mut env = vec![
        EnvVar {
            name: REQUEST_ENV.into(),
            value: Some(request_json),
            ..Default::default()
        },
        EnvVar {
            name: "FIL_PROOFS_PARAMETER_CACHE".into(),
            value: Some(profiles.params_path.clone()),
            ..Default::default()
        },
    ];
    if let Some(path) = &profiles.parent_cache_path {
        env.push(EnvVar {
            name: "FIL_PROOFS_PARENT_CACHE".into(),
            value: Some(path.clone()),
            ..Default::default()
        });
    }
    env.extend(profile.env.iter().cloned());
    env
}

/// The step's volumes and their mounts: the workspace, the parameters, the parent cache, the
/// persist stores, local piece directories and file:// delivery roots.
fn step_volumes(
    request: &StepRequest,
    workspace: &WorkspaceMount,
    profiles: &Profiles,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let workspace_path = request.workspace.display().to_string();
    let workspace = match workspace {
        WorkspaceMount::Scratch => Volume {
            name: "workspace".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        },
        WorkspaceMount::Task => host_path_volume("workspace", &workspace_path, "DirectoryOrCreate"),
    };
    let mut volumes = vec![
        workspace,
        host_path_volume("params", &profiles.params_path, "DirectoryOrCreate"),
    ];
    let mut mounts = vec![
        mount("workspace", &workspace_path, false),
        mount("params", &profiles.params_path, true),
    ];
    if let Some(path) = &profiles.parent_cache_path {
        volumes.push(host_path_volume("parent-cache", path, "DirectoryOrCreate"));
        mounts.push(mount("parent-cache", path, false));
    }
    for (index, (root, writable)) in store_roots(request).iter().enumerate() {
        let path = root.display().to_string();
        let name = match index {
            0 => "persist".to_string(),
            n => format!("persist-{n}"),
        };
        volumes.push(host_path_volume(&name, &path, "DirectoryOrCreate"));
        mounts.push(mount(&name, &path, !writable));
    }
    // Local piece directories: read-only, created empty on a node that lacks one (a missing
    // hostPath of type Directory would keep the pod from starting).
    for (index, dir) in request.inputs.piece_dirs.iter().enumerate() {
        let name = format!("pieces-{index}");
        let path = dir.display().to_string();
        volumes.push(host_path_volume(&name, &path, "DirectoryOrCreate"));
        mounts.push(mount(&name, &path, true));
    }
    // A file:// destination is a path on the node, as it is on damocles-worker's host: its
    // delivery root is mounted, so the bytes do not stay in the container.
    for (index, dir) in delivery_mounts(request).iter().enumerate() {
        let name = format!("delivery-{index}");
        let path = dir.display().to_string();
        volumes.push(host_path_volume(&name, &path, "DirectoryOrCreate"));
        mounts.push(mount(&name, &path, false));
    }
    (volumes, mounts)
}

/// The profile's affinity, with the core's placement added: `node` required, `avoid` preferred
/// against.
fn placement(
    mut affinity: Option<Affinity>,
    node: Option<&str>,
    avoid: Option<&str>,
) -> Option<Affinity> {
    if let Some(avoid) = avoid {
        // Preferred, not required: a farm with one suitable node still gets its work done there.
        let elsewhere = PreferredSchedulingTerm {
            weight: 100,
            preference: NodeSelectorTerm {
                match_fields: Some(vec![NodeSelectorRequirement {
                    key: "metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(vec![avoid.to_string()]),
                }]),
                ..Default::default()
            },
        };
        let affinity = affinity.get_or_insert_with(Affinity::default);
        let node_affinity = affinity.node_affinity.get_or_insert_with(Default::default);
        node_affinity
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(elsewhere);
    }
    if let Some(node) = node {
        // As DaemonSets pin pods: through the scheduler, so resources are still accounted.
        let pin = NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.to_string()]),
            }]),
            ..Default::default()
        };
        let affinity = affinity.get_or_insert_with(Affinity::default);
        affinity.node_affinity = Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![pin],
            }),
            ..affinity.node_affinity.clone().unwrap_or_default()
        });
    }
    affinity
}

fn step_labels(
    task: &SealingTask,
    request: &StepRequest,
) -> std::collections::BTreeMap<String, String> {
    let mut labels = std::collections::BTreeMap::from([
        (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
        (STEP_LABEL.to_string(), request.step.to_string()),
    ]);
    let task_name = task.name_any();
    if task_name.len() <= 63 {
        labels.insert(TASK_LABEL.into(), task_name);
    }
    if let Some(uid) = task.uid() {
        labels.insert(TASK_UID_LABEL.into(), uid);
    }
    labels
}

/// The pod that removes a task's workspace on `node` when it has ended, and the C1 output it may
/// have left in the persist store's transfer directory.
pub fn cleanup_pod(
    task: &SealingTask,
    status: &SealingTaskStatus,
    name: &str,
    profile: &Resolved,
    profiles: &Profiles,
    node: &str,
) -> Pod {
    let workspace = workspace_dir(
        profiles,
        &task.namespace().unwrap_or_default(),
        &task.name_any(),
    )
    .display()
    .to_string();
    let sector = status.sector;
    let persist = persist_root(status, profiles).filter(|_| sector.is_some());
    let transfer = persist
        .as_deref()
        .zip(sector)
        .map(|(persist, sector)| transfer_dir(persist, sector));
    let request = StepRequest {
        version: REQUEST_VERSION,
        step: StepKind::Persist,
        sector: sector.unwrap_or(SectorRef {
            miner: 0,
            number: 0,
        }),
        sector_size: task.spec.sector_size,
        synthetic_po_rep: false,
        workspace: PathBuf::from(&workspace),
        persist,
        share: None,
        termination_message_path: None,
        inputs: StepInputs::default(),
        then: Vec::new(),
    };
    let pinned = Resolved {
        locality: Locality::Workspace,
        ..profile.clone()
    };
    let placed = PodToCreate {
        name: name.to_string(),
        request,
        profile: pinned,
        node: Some(node.to_string()),
        avoid: None,
        workspace: WorkspaceMount::Task,
    };
    let mut pod = step_pod(task, &placed, profiles);
    let spec = pod.spec.as_mut().expect("step pods have a spec");
    let container = &mut spec.containers[0];
    let mut args = vec!["clean".into(), "--workspace".into(), workspace.clone()];
    if let Some(transfer) = transfer {
        args.extend(["--transfer".into(), transfer.display().to_string()]);
    }
    container.args = Some(args);
    container.env = None;
    container.resources = None;
    spec.node_selector = None;
    // It must run on the workspace's node whatever its taints (a tainted GPU node holds the
    // workspaces of plans whose PC2 needs a GPU), as a DaemonSet's pods do.
    spec.tolerations = Some(vec![Toleration {
        operator: Some("Exists".into()),
        ..Default::default()
    }]);
    spec.runtime_class_name = None;
    // The workspace and the persist store (for the transfer directory): nothing else. The
    // workspace's parent is mounted, since a mount point itself cannot be removed.
    let parent = Path::new(&workspace)
        .parent()
        .unwrap_or(Path::new("/"))
        .display()
        .to_string();
    for volume in spec.volumes.iter_mut().flatten() {
        if let (true, Some(host_path)) = (volume.name == "workspace", volume.host_path.as_mut()) {
            host_path.path = parent.clone();
        }
    }
    for mount in container.volume_mounts.iter_mut().flatten() {
        if mount.name == "workspace" {
            mount.mount_path = parent.clone();
        }
    }
    let needed = |name: &str| name == "workspace" || name == "persist";
    spec.volumes
        .as_mut()
        .expect("volumes")
        .retain(|v| needed(&v.name));
    container
        .volume_mounts
        .as_mut()
        .expect("mounts")
        .retain(|m| needed(&m.name));
    if let Some(labels) = pod.metadata.labels.as_mut() {
        labels.insert(STEP_LABEL.into(), "cleanup".into());
    }
    pod
}

/// The exit code of a pod's finished container, if it finished.
pub fn exit_code(pod: &Pod) -> Option<i32> {
    pod.status
        .as_ref()?
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()
        .map(|t| t.exit_code)
}

/// Reduces `pod` to what the operator reads of it (its report, node, owner, timestamps, the
/// step container's name and image), as its pod cache keeps it. A step pod carries its request
/// (up to 128 KiB) in its environment and every pod its volumes and managed fields; with every
/// finished step pod kept until its task ends, a farm of thousands of tasks would otherwise hold
/// each of those in memory.
pub fn slim(pod: &mut Pod) {
    let metadata = &mut pod.metadata;
    metadata.managed_fields = None;
    metadata.annotations = None;
    if let Some(spec) = pod.spec.as_mut() {
        *spec = PodSpec {
            node_name: spec.node_name.take(),
            active_deadline_seconds: spec.active_deadline_seconds,
            containers: spec
                .containers
                .iter_mut()
                .map(|container| Container {
                    name: std::mem::take(&mut container.name),
                    image: container.image.take(),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        };
    }
}

/// Reads a step pod's status into what it means for the task.
/// Why `pod` is not the task's own: its controlling owner is not the task with uid `task_uid`
/// (a pod someone made with a step pod's name). None for the task's own pod.
pub fn foreign_owner(pod: &Pod, task_uid: Option<&str>) -> Option<String> {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    match (owner, task_uid) {
        (Some(owner), Some(uid)) if owner.uid == uid => None,
        (Some(owner), _) => Some(format!(
            "pod {} is not this task's (its owner is {} {} uid {}): it is left alone; delete it \
             and resume the task",
            pod.metadata.name.as_deref().unwrap_or_default(),
            owner.kind,
            owner.name,
            owner.uid
        )),
        (None, _) => Some(format!(
            "pod {} is not this task's (it has no controlling owner): it is left alone; delete \
             it and resume the task",
            pod.metadata.name.as_deref().unwrap_or_default()
        )),
    }
}

pub fn report(pod: &Pod) -> PodReport {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == CONTAINER);
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone());
    if let Some(terminated) = terminated {
        let message = terminated.message.unwrap_or_default();
        let result: Option<StepResult> = serde_json::from_str(message.trim()).ok();
        if terminated.exit_code == 0 {
            return match result {
                Some(result) if result.failure.is_none() => PodReport::Succeeded(Box::new(result)),
                _ => PodReport::Failed {
                    level: FailureLevel::Temporary,
                    message: format!(
                        "the step exited 0 without a readable result: {}",
                        shorten(&message)
                    ),
                    never_ran: false,
                },
            };
        }
        if let Some(failure) = result.and_then(|r| r.failure) {
            return PodReport::Failed {
                level: failure.level,
                message: failure.message,
                never_ran: false,
            };
        }
        let level = ExitCode::level_of(terminated.exit_code).unwrap_or(FailureLevel::Temporary);
        if status.reason.as_deref() == Some("DeadlineExceeded") {
            let deadline = pod
                .spec
                .as_ref()
                .and_then(|s| s.active_deadline_seconds)
                .unwrap_or_default();
            return PodReport::Failed {
                level: FailureLevel::Temporary,
                message: format!(
                    "the step ran longer than its profile's deadlineSeconds ({deadline}s) and \
                     the kubelet stopped it (exit {})",
                    terminated.exit_code
                ),
                never_ran: false,
            };
        }
        let reason = terminated.reason.unwrap_or_default();
        return PodReport::Failed {
            level,
            message: format!(
                "the step exited {} ({reason}): {}",
                terminated.exit_code,
                shorten(&message)
            ),
            never_ran: false,
        };
    }
    match phase {
        "Running" => PodReport::Running,
        "Failed" => {
            let reason = status.reason.unwrap_or_default();
            let message = status.message.unwrap_or_default();
            PodReport::Failed {
                level: FailureLevel::Temporary,
                never_ran: reason != "DeadlineExceeded",
                message: format!("the step pod failed ({reason}): {message}"),
            }
        }
        _ => {
            let waiting = container
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.waiting.as_ref());
            let image_problem = waiting
                .and_then(|w| w.reason.as_deref())
                .is_some_and(|reason| IMAGE_PULL_REASONS.contains(&reason));
            let waiting = waiting.map(|w| {
                format!(
                    "{}: {}",
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default()
                )
            });
            let unscheduled = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .map(|c| c.message.clone().unwrap_or_default());
            let problem = if image_problem {
                let image = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.iter().find(|c| c.name == CONTAINER))
                    .and_then(|c| c.image.clone())
                    .unwrap_or_default();
                Some(StartProblem::ImagePull { image })
            } else {
                unscheduled
                    .as_deref()
                    .filter(|message| no_node_fits(message))
                    .map(|_| StartProblem::NoFittingNode)
            };
            PodReport::Starting {
                reason: waiting
                    .or(unscheduled)
                    .unwrap_or_else(|| "waiting to start".into()),
                problem,
            }
        }
    }
}

/// kubelet's waiting reasons for an image it cannot get.
const IMAGE_PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Whether the scheduler's message says no node matches the pod at all. "0/5 nodes are
/// available: 2 Insufficient nvidia.com/gpu, 3 node(s) didn't match Pod's node affinity/selector"
/// has nodes that fit once they are free: a queue, not a problem. Only a message with no
/// resource shortage and no cordoned node (one being drained comes back) is one.
fn no_node_fits(message: &str) -> bool {
    message.contains("nodes are available")
        && !message.contains("Insufficient")
        && !message.contains("Too many pods")
        && !message.contains("were unschedulable")
}

fn shorten(text: &str) -> String {
    crate::text::prefix(text, 400).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        Outputs, Randomness, SealingTaskSpec, SectorRef, SectorSize, State, StoreRef,
    };
    use crate::plan::PlanKind;
    use crate::step::Bytes32;
    use crate::task::steps::pod_name;
    use std::path::Path;

    /// The pod of `request` as the task core places it ([`PodToCreate::placed`]): pinned to
    /// `node` where the step needs the workspace, steered from `avoid` where not pinned.
    fn placed_pod(
        task: &SealingTask,
        name: &str,
        request: &StepRequest,
        profile: &Resolved,
        profiles: &Profiles,
        node: Option<&str>,
        avoid: Option<&str>,
    ) -> Pod {
        let create = PodToCreate::placed(
            name.to_string(),
            request.clone(),
            profile.clone(),
            node.map(str::to_string),
            avoid.map(str::to_string),
        );
        step_pod(task, &create, profiles)
    }

    fn task() -> SealingTask {
        let mut task = SealingTask::new(
            "seal-1",
            SealingTaskSpec {
                plan: PlanKind::Sealer,
                sector_size: SectorSize::Size2KiB,
                sector: None,
                synthetic_po_rep: None,
                deals: None,
                unseal: None,
                resume_state: None,
                suspend: false,
                ttl_seconds_after_finished: None,
            },
        );
        task.metadata.namespace = Some("farm".into());
        task.metadata.uid = Some("uid-1".into());
        task.status = Some(SealingTaskStatus {
            sector: Some(SectorRef {
                miner: 1000,
                number: 7,
            }),
            outputs: Some(Outputs {
                ticket: Some(Randomness {
                    value: crate::sector::Bytes32([1; 32]),
                    epoch: 9100,
                    assigned_at: None,
                }),
                comm_d: Some(crate::sector::CommD::from_bytes([5; 32])),
                store: Some(StoreRef {
                    name: "store-1".into(),
                    path: "/mnt/store-1".into(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
        task
    }

    fn request_for(
        task: &SealingTask,
        step: StepKind,
        profiles: &Profiles,
    ) -> Result<StepRequest, String> {
        crate::task::steps::step_request(
            crate::task::Task::of(task),
            &task.status.clone().unwrap_or_default(),
            step,
            profiles,
        )
    }

    #[test]
    fn requests_carry_what_the_step_reads() {
        let profiles = Profiles::default();
        let pc1 = request_for(&task(), StepKind::Pc1, &profiles).unwrap();
        assert_eq!(pc1.inputs.ticket, Some(Bytes32([1; 32])));
        assert_eq!(pc1.inputs.comm_d, None, "PC1 does not read CommD");
        assert_eq!(
            pc1.workspace,
            Path::new("/var/lib/damocles/workspace/farm/seal-1")
        );
        assert_eq!(pc1.persist, Some(PathBuf::from("/mnt/store-1")));
        let mut no_sector = task();
        no_sector.status = None;
        assert!(request_for(&no_sector, StepKind::Pc1, &profiles).is_err());
    }

    #[test]
    fn pods_follow_the_profile_and_pin_workspace_steps() {
        let profiles = Profiles::parse(
            "parentCachePath: /var/tmp/filecoin-parents\n\
             defaults: {imagePullSecrets: [{name: registry}], priorityClassName: sealing}\n\
             steps: {c2: {nodeSelector: {gpu: 'true'}, deadlineSeconds: 600},\n\
                     pc2: {runtimeClassName: nvidia}}",
        )
        .unwrap();
        let task = task();
        let name = pod_name(&task.name_any(), State::PC1Done, 2);
        assert_eq!(name, "seal-1-pc1done-2");
        let request = request_for(&task, StepKind::Pc2, &profiles).unwrap();
        let pc2 = profiles.resolve(StepKind::Pc2, std::time::Duration::from_secs(60));
        let pod = placed_pod(
            &task,
            &name,
            &request,
            &pc2,
            &profiles,
            Some("node-a"),
            Some("b"),
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        let parents = spec.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "FIL_PROOFS_PARENT_CACHE");
        assert_eq!(
            parents.and_then(|e| e.value.as_deref()),
            Some("/var/tmp/filecoin-parents")
        );
        assert!(
            spec.volumes
                .iter()
                .flatten()
                .any(|v| v.name == "parent-cache")
        );
        assert_eq!(
            spec.image_pull_secrets.as_ref().unwrap()[0].name,
            "registry"
        );
        assert_eq!(
            (
                spec.priority_class_name.as_deref(),
                spec.runtime_class_name.as_deref()
            ),
            (Some("sealing"), Some("nvidia"))
        );
        let term = &spec
            .affinity
            .as_ref()
            .unwrap()
            .node_affinity
            .as_ref()
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_fields.as_ref().unwrap()[0].values,
            Some(vec!["node-a".into()])
        );
        assert_eq!(
            spec.affinity
                .as_ref()
                .unwrap()
                .node_affinity
                .as_ref()
                .unwrap()
                .preferred_during_scheduling_ignored_during_execution,
            None,
            "a pinned step has no other node to prefer"
        );
        let env = spec.containers[0].env.as_ref().unwrap();
        let carried: StepRequest = serde_json::from_str(env[0].value.as_ref().unwrap()).unwrap();
        assert_eq!(carried, request);
        assert_eq!(
            pod.metadata.owner_references.unwrap()[0].uid,
            "uid-1",
            "deleting the task deletes its pods"
        );

        let c2 = profiles.resolve(StepKind::C2, std::time::Duration::from_secs(60));
        let request = request_for(&task, StepKind::C2, &profiles).unwrap();
        let pod = placed_pod(&task, "x", &request, &c2, &profiles, None, None);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.affinity, None, "no node chosen yet: not pinned");
        assert_eq!(spec.active_deadline_seconds, Some(600));
        assert_eq!(spec.node_selector.unwrap()["gpu"], "true");
    }

    #[test]
    fn c2_anywhere_reads_c1_output_from_the_persist_store_and_is_not_pinned() {
        let profiles =
            Profiles::parse("steps: {c2: {nodeSelector: {gpu: 'true'}, locality: any}}").unwrap();
        let mut task = task();
        let c1 = request_for(&task, StepKind::C1, &profiles).unwrap();
        let transfer = PathBuf::from("/mnt/store-1/transfer/s-t01000-7");
        assert_eq!(c1.share.as_ref(), Some(&transfer));
        let pinned = Profiles::default();
        assert_eq!(
            request_for(&task, StepKind::C1, &pinned).unwrap().share,
            None
        );

        // C1 reported its output in the transfer directory.
        let outputs = task.status.as_mut().unwrap().outputs.as_mut().unwrap();
        outputs.c1_output = Some(crate::api::Artifact {
            location: transfer.join("c1.json").display().to_string(),
            sha256: "ab".repeat(32),
            size: 10,
            data: None,
        });
        let c2 = profiles.resolve(StepKind::C2, std::time::Duration::from_secs(60));
        let request = request_for(&task, StepKind::C2, &profiles).unwrap();
        let pod = placed_pod(&task, "x", &request, &c2, &profiles, Some("node-a"), None);
        let spec = pod.spec.unwrap();
        assert_eq!(spec.affinity, None, "not pinned to the workspace node");
        let elsewhere = placed_pod(&task, "x", &request, &c2, &profiles, None, Some("gpu-1"));
        let preferred = elsewhere
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .node_affinity
            .unwrap();
        assert_eq!(
            preferred.required_during_scheduling_ignored_during_execution,
            None
        );
        let term = &preferred
            .preferred_during_scheduling_ignored_during_execution
            .unwrap()[0];
        let requirement = &term.preference.match_fields.as_ref().unwrap()[0];
        assert_eq!(
            (requirement.operator.as_str(), requirement.values.clone()),
            ("NotIn", Some(vec!["gpu-1".to_string()])),
            "a C2 pod that did not start on gpu-1 is replaced by one that prefers another node"
        );
        assert_eq!(spec.node_selector.unwrap()["gpu"], "true");
        let volumes = spec.volumes.unwrap();
        assert!(volumes[0].empty_dir.is_some(), "no hostPath workspace");
        assert_eq!(
            volumes
                .iter()
                .find(|v| v.name == "persist")
                .unwrap()
                .host_path
                .as_ref()
                .unwrap()
                .path,
            "/mnt/store-1"
        );

        // A C1 output still in the workspace (C1 ran before the profile said any): pinned.
        let outputs = task.status.as_mut().unwrap().outputs.as_mut().unwrap();
        outputs.c1_output.as_mut().unwrap().location = "/var/lib/damocles/workspace/x".into();
        let request = request_for(&task, StepKind::C2, &profiles).unwrap();
        let pod = placed_pod(&task, "x", &request, &c2, &profiles, Some("node-a"), None);
        assert!(pod.spec.unwrap().affinity.is_some());
    }

    #[test]
    fn the_cleanup_pod_of_a_task_whose_c2_runs_anywhere_also_clears_its_transfer_directory() {
        let profiles =
            Profiles::parse("steps: {c2: {nodeSelector: {gpu: 'true'}, locality: any}}").unwrap();
        let mut task = task();
        let outputs = task.status.as_mut().unwrap().outputs.as_mut().unwrap();
        outputs.c1_output = Some(crate::api::Artifact {
            location: "/mnt/store-1/transfer/s-t01000-7/c1.json".into(),
            sha256: "ab".repeat(32),
            size: 10,
            data: None,
        });
        let cleanup = cleanup_pod(
            &task,
            task.status.as_ref().unwrap(),
            "seal-1-cleanup",
            &profiles.defaults_only(std::time::Duration::from_secs(60)),
            &profiles,
            "node-a",
        );
        let spec = cleanup.spec.unwrap();
        assert_eq!(
            spec.containers[0].args.as_ref().unwrap(),
            &[
                "clean",
                "--workspace",
                "/var/lib/damocles/workspace/farm/seal-1",
                "--transfer",
                "/mnt/store-1/transfer/s-t01000-7"
            ]
        );
        let mounts: Vec<_> = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| (m.mount_path.as_str(), m.read_only == Some(true)))
            .collect();
        // The workspace's parent: a mount point itself could not be removed.
        assert_eq!(
            mounts,
            [
                ("/var/lib/damocles/workspace/farm", false),
                ("/mnt/store-1", false)
            ]
        );
        let names: Vec<_> = spec.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["workspace", "persist"]);
    }

    fn terminated_pod(exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": if exit_code == 0 {"Succeeded"} else {"Failed"},
                "containerStatuses": [{"name": "step", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": {"terminated": {"exitCode": exit_code, "message": message}}}]}
        }))
        .unwrap()
    }

    /// A pod the kubelet stopped at its activeDeadlineSeconds (phase Failed, reason
    /// DeadlineExceeded, the container killed without a result) is a temporary failure that says
    /// so, not a bare exit code.
    #[test]
    fn a_pod_past_its_deadline_is_a_temporary_failure_naming_it() {
        let mut pod = terminated_pod(137, "");
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            active_deadline_seconds: Some(3),
            ..Default::default()
        });
        let status = pod.status.as_mut().unwrap();
        status.reason = Some("DeadlineExceeded".into());
        status.message =
            Some("Pod was active on the node longer than the specified deadline".into());
        match report(&pod) {
            PodReport::Failed {
                level,
                message,
                never_ran,
            } => {
                assert_eq!((level, never_ran), (FailureLevel::Temporary, false));
                assert!(message.contains("deadlineSeconds (3s)"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// A step container drops every capability and cannot gain privileges unless its profile
    /// says otherwise; the cleanup pod is held to the same.
    #[test]
    fn step_containers_run_without_capabilities_unless_the_profile_says() {
        let profiles = Profiles::parse(
            "steps: {pc2: {securityContext: {runAsUser: 1000, capabilities: {add: [IPC_LOCK]}}}}",
        )
        .unwrap();
        let task = task();
        let security = |step: StepKind| {
            let request = request_for(&task, step, &profiles).unwrap();
            let profile = profiles.resolve(step, std::time::Duration::from_secs(60));
            let pod = placed_pod(&task, "p", &request, &profile, &profiles, None, None);
            pod.spec.unwrap().containers[0]
                .security_context
                .clone()
                .unwrap()
        };
        let pc1 = security(StepKind::Pc1);
        assert_eq!(pc1.allow_privilege_escalation, Some(false));
        assert_eq!(pc1.capabilities.unwrap().drop.unwrap(), ["ALL"]);
        assert_eq!(pc1.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let pc2 = security(StepKind::Pc2);
        assert_eq!(pc2.run_as_user, Some(1000));
        assert_eq!(pc2.capabilities.unwrap().add.unwrap(), ["IPC_LOCK"]);
        let cleanup = cleanup_pod(
            &task,
            task.status.as_ref().unwrap(),
            "c",
            &profiles.defaults_only(std::time::Duration::from_secs(60)),
            &profiles,
            "node-a",
        );
        let context = cleanup.spec.unwrap().containers[0]
            .security_context
            .clone()
            .unwrap();
        assert_eq!(context.capabilities.unwrap().drop.unwrap(), ["ALL"]);
    }

    /// Piece directories are mounted read-only into add-piece; an upload mounts the stores and
    /// the file directories it delivers to, so nothing stays in the container.
    #[test]
    fn pods_mount_piece_directories_and_delivery_places() {
        let profiles = Profiles::parse("pieceDirs: [/mnt/pieces-a, /mnt/pieces-b]").unwrap();
        let task = task();
        let mounts = |request: &StepRequest, step: StepKind| {
            let profile = profiles.resolve(step, std::time::Duration::from_secs(60));
            let pod = placed_pod(&task, "p", request, &profile, &profiles, None, None);
            let spec = pod.spec.unwrap();
            let mounts = spec.containers[0].volume_mounts.clone().unwrap();
            mounts
                .into_iter()
                .map(|m| (m.mount_path, m.read_only == Some(true)))
                .collect::<Vec<_>>()
        };
        let add_piece = request_for(&task, StepKind::AddPiece, &profiles).unwrap();
        let found = mounts(&add_piece, StepKind::AddPiece);
        for dir in ["/mnt/pieces-a", "/mnt/pieces-b"] {
            assert!(found.contains(&(dir.to_string(), true)), "{found:?}");
        }
        let mut upload = request_for(&task, StepKind::Upload, &profiles).unwrap();
        upload.inputs.destinations = vec![
            "file:///srv/retrieved/piece.bin".into(),
            "store://store-9/retrieved/p".into(),
        ];
        upload.inputs.stores = [("store-9".to_string(), PathBuf::from("/mnt/store-9"))].into();
        upload.inputs.delivery_roots = vec!["/srv".into(), "/unused".into()];
        let found = mounts(&upload, StepKind::Upload);
        // The delivery root, not the file's directory: a link below it stays visible to the step.
        assert!(found.contains(&("/srv".to_string(), false)), "{found:?}");
        assert!(
            found.contains(&("/mnt/store-9".to_string(), false)),
            "{found:?}"
        );
        assert!(
            found.iter().all(|(path, _)| path != "/unused"),
            "only the roots delivered to: {found:?}"
        );
        // The task's own workspace, not the root of every task's.
        assert_eq!(found[0], (upload.workspace.display().to_string(), false));
        assert!(
            found
                .iter()
                .all(|(path, _)| path != &profiles.workspace_root)
        );
        // The reserved store is read-only where the step only reads it, writable where it
        // writes: Persist (the replica), C1 (its output in the transfer directory).
        let persist = upload.persist.clone().unwrap().display().to_string();
        assert!(found.contains(&(persist.clone(), true)), "{found:?}");
        for (step, writable) in [
            (StepKind::Pc1, false),
            (StepKind::SnapProve, false),
            (StepKind::C2, false),
            (StepKind::Persist, true),
        ] {
            let request = request_for(&task, step, &profiles).unwrap();
            let found = mounts(&request, step);
            assert!(
                found.contains(&(persist.clone(), !writable)),
                "{step}: {found:?}"
            );
        }
        let mut c1 = request_for(&task, StepKind::C1, &profiles).unwrap();
        c1.share = Some(upload.persist.clone().unwrap().join("transfer/s-t01000-1"));
        assert!(mounts(&c1, StepKind::C1).contains(&(persist.clone(), false)));

        // A rebuild's sector key is in the task's workspace: not mounted a second time.
        let mut snap = request_for(&task, StepKind::SnapEncode, &profiles).unwrap();
        let key = crate::step::workspace::SectorFiles::new(&snap.workspace, snap.sector);
        snap.inputs.cc_sector = Some(crate::step::SealedFiles {
            sealed: key.sealed(),
            cache: key.cache(),
            comm_r: None,
            comm_d: None,
            ticket: None,
        });
        let workspace = snap.workspace.display().to_string();
        let found = mounts(&snap, StepKind::SnapEncode);
        assert_eq!(
            found
                .iter()
                .filter(|(path, _)| path.starts_with(&workspace))
                .count(),
            1,
            "{found:?}"
        );
    }

    /// The PC2 step pod of [`task`], with the default profiles, pinned to `node` if given.
    fn pc2_pod(node: Option<&str>) -> Pod {
        let profiles = Profiles::default();
        let task = task();
        let request = request_for(&task, StepKind::Pc2, &profiles).unwrap();
        let profile = profiles.resolve(StepKind::Pc2, std::time::Duration::from_secs(60));
        placed_pod(
            &task,
            "seal-1-pc1done-0",
            &request,
            &profile,
            &profiles,
            node,
            None,
        )
    }

    /// The task's own pod (owner reference to its uid) is adopted; one another owner made with
    /// the same name, or with no owner, is not.
    #[test]
    fn only_a_pod_the_task_owns_is_its_step_pod() {
        let mut pod = pc2_pod(None);
        assert_eq!(foreign_owner(&pod, Some("uid-1")), None);
        let message = foreign_owner(&pod, Some("uid-2")).unwrap();
        assert!(
            message.contains("pod seal-1-pc1done-0 is not this task's")
                && message.contains("uid-1"),
            "{message}"
        );
        pod.metadata.owner_references = None;
        assert!(
            foreign_owner(&pod, Some("uid-1"))
                .unwrap()
                .contains("no controlling owner")
        );
    }

    /// The pod cache's slim copy of a pod reads exactly as the whole pod does.
    #[test]
    fn a_slim_pod_reads_as_the_whole_pod() {
        let mut pod = pc2_pod(Some("node-a"));
        pod.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap(),
            ));
        let ok = r#"{"version":1,"step":"pc2","sector":{"miner":1000,"number":7},"outputs":{},"reused":false,"durationMs":5}"#;
        let statuses = [
            terminated_pod(0, ok).status,
            terminated_pod(137, "").status,
            Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Pending".into()),
                container_statuses: Some(vec![k8s_openapi::api::core::v1::ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(k8s_openapi::api::core::v1::ContainerState {
                        waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
                            reason: Some("ErrImagePull".into()),
                            message: None,
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        ];
        for status in statuses {
            pod.status = status;
            let mut slim_pod = pod.clone();
            slim(&mut slim_pod);
            assert!(
                serde_json::to_string(&slim_pod).unwrap().len() * 2
                    < serde_json::to_string(&pod).unwrap().len(),
                "slimmer"
            );
            assert_eq!(report(&slim_pod), report(&pod));
            assert_eq!(exit_code(&slim_pod), exit_code(&pod));
            for uid in [Some("uid-1"), Some("uid-2"), None] {
                assert_eq!(foreign_owner(&slim_pod, uid), foreign_owner(&pod, uid));
                assert_eq!(
                    crate::controller::observe::step_pod(&slim_pod, uid),
                    crate::controller::observe::step_pod(&pod, uid)
                );
            }
        }
    }

    #[test]
    fn pod_status_tells_the_step_outcome() {
        let ok = r#"{"version":1,"step":"pc1","sector":{"miner":1000,"number":7},"outputs":{},"reused":false,"durationMs":5}"#;
        assert!(matches!(
            report(&terminated_pod(0, ok)),
            PodReport::Succeeded(_)
        ));
        let failed = r#"{"version":1,"step":"pc1","sector":{"miner":1000,"number":7},"failure":{"level":"Critical","message":"staged file missing"},"outputs":{},"reused":false,"durationMs":5}"#;
        assert_eq!(
            report(&terminated_pod(30, failed)),
            PodReport::Failed {
                level: FailureLevel::Critical,
                message: "staged file missing".into(),
                never_ran: false
            }
        );
        match report(&terminated_pod(137, "")) {
            PodReport::Failed { level, message, .. } => {
                assert_eq!(level, FailureLevel::Temporary);
                assert!(message.contains("137"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let evicted: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"}
        }))
        .unwrap();
        assert!(matches!(
            report(&evicted),
            PodReport::Failed {
                never_ran: true,
                ..
            }
        ));
        let pending: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "message": "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."}]}
        }))
        .unwrap();
        assert_eq!(
            report(&pending),
            PodReport::Starting {
                reason: "0/2 nodes are available: 2 Insufficient nvidia.com/gpu.".into(),
                problem: None,
            },
            "busy GPUs are a queue"
        );
        let unfit: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "message": "0/3 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."}]}
        }))
        .unwrap();
        assert!(matches!(
            report(&unfit),
            PodReport::Starting {
                problem: Some(StartProblem::NoFittingNode),
                ..
            }
        ));
        let unpullable: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": CONTAINER, "image": "registry.example/damocles-step:9"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": CONTAINER, "image": "registry.example/damocles-step:9",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"registry.example/damocles-step:9\""}}}]}
        }))
        .unwrap();
        assert_eq!(
            report(&unpullable),
            PodReport::Starting {
                reason:
                    "ImagePullBackOff: Back-off pulling image \"registry.example/damocles-step:9\""
                        .into(),
                problem: Some(StartProblem::ImagePull {
                    image: "registry.example/damocles-step:9".into()
                }),
            }
        );
    }
}
