//! Table tests of the task core: given a status, what was observed and the time, the decision.
//! Every rule the controller once held is here; the end-to-end tests prove only the wiring.

mod end;
mod manager;
mod plan;
mod proof_type;
mod properties;
mod rebuild;
mod resume;
mod steps;
mod submit;
mod unseal;
mod writes;

pub(super) use std::time::Duration;

pub(super) use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
pub(super) use k8s_openapi::jiff::Timestamp;
pub(super) use serde_json::json;

pub(super) use super::*;
pub(super) use crate::api::{HistoryEntry, Outputs, Randomness, SealingTaskSpec, StoreRef};
pub(super) use crate::manager::wire::{
    AllocatedSector, OnChainState, PollResp, StoreBasicInfo, SubmitResp, SubmitResult,
};
pub(super) use crate::manager::{Call, Method, Reply};
pub(super) use crate::plan::Submission;
pub(super) use crate::step::{NamedFile, StepOutputs, StepResult};

pub(super) const NOW: i64 = 1_800_000_000;
pub(super) const SECTOR: SectorRef = SectorRef {
    miner: 1000,
    number: 7,
};
pub(super) const SECTOR_ID: crate::manager::wire::SectorId = crate::manager::wire::SectorId {
    miner: 1000,
    number: 7,
};

pub(super) fn spec(value: serde_json::Value) -> SealingTaskSpec {
    serde_json::from_value(value).unwrap()
}

pub(super) fn sealer() -> SealingTaskSpec {
    spec(json!({"plan": "sealer", "sectorSize": "2KiB"}))
}

pub(super) fn task(spec: &SealingTaskSpec) -> Task<'_> {
    Task {
        namespace: "farm",
        name: "t1",
        spec,
        generation: Some(1),
        deleted_at: None,
        abort_on_delete: false,
    }
}

pub(super) fn time(at: i64) -> Time {
    Time(Timestamp::from_second(at).unwrap())
}

/// A task in `state` since 10 s ago, with its sector and a ticket drawn then.
pub(super) fn at(state: State) -> SealingTaskStatus {
    SealingTaskStatus {
        state: Some(state),
        phase: Some(Phase::Running),
        sector: Some(SECTOR),
        history: vec![HistoryEntry {
            state,
            entered: time(NOW - 10),
            duration_seconds: None,
        }],
        outputs: Some(Outputs {
            ticket: Some(Randomness {
                value: crate::sector::Bytes32([1; 32]),
                epoch: 9100,
                assigned_at: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A condition's status and reason, if the task has it.
pub(super) fn condition_of(status: &SealingTaskStatus, type_: &str) -> Option<(String, String)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// An ended task whose ReportFinalized the manager already answered.
pub(super) fn reported(mut status: SealingTaskStatus) -> SealingTaskStatus {
    status::set_condition(
        &mut status,
        condition::MANAGER_FINALIZED,
        "True",
        "Reported",
        "told",
        NOW - 5,
    );
    status
}

pub(super) fn decide_now(
    task: Task<'_>,
    status: &SealingTaskStatus,
    observed: &Observed,
) -> Decision {
    decide_at(task, status, observed, NOW)
}

/// A decision at `now` under the default rules.
pub(super) fn decide_at(
    task: Task<'_>,
    status: &SealingTaskStatus,
    observed: &Observed,
    now: i64,
) -> Decision {
    decide(task, status, observed, now, &Rules::default())
}

pub(super) fn asked(decision: &Decision) -> &Question {
    match &decision.wake {
        Wake::Ask(question) => question,
        other => panic!("expected a question, got {other:?}"),
    }
}

pub(super) fn asked_call(decision: &Decision) -> &Call {
    match asked(decision) {
        Question::Manager(call) => call,
        other => panic!("expected a manager call, got {other:?}"),
    }
}

pub(super) fn answered(call: &Call, reply: Result<Reply, CallFailure>) -> Observed {
    Observed {
        reply: Some((call.clone(), reply)),
        ..Default::default()
    }
}

pub(super) fn temporary(message: &str) -> CallFailure {
    CallFailure {
        level: FailureLevel::Temporary,
        message: message.into(),
        code: Some(1),
        unavailable: false,
        never_sent: false,
    }
}

/// What `decision` asked the executor to keep in memory for the next write.
pub(super) fn remembered(decision: &Decision) -> Remembered {
    let mut facts = Remembered::default();
    facts.merge_kept(&decision.effects);
    facts
}

/// `decision`'s status as the next decision sees it: with what it keeps in memory.
pub(super) fn known(decision: &Decision) -> SealingTaskStatus {
    let mut status = decision.status.clone();
    remembered(decision).apply_to(&mut status);
    status
}

pub(super) fn has(decision: &Decision, wanted: impl Fn(&Effect) -> bool) -> bool {
    decision.effects.iter().any(wanted)
}

pub(super) fn event(decision: &Decision, reason: &str) -> bool {
    has(
        decision,
        |e| matches!(e, Effect::Event { reason: r, .. } if r == reason),
    )
}

pub(super) fn pod(report: PodReport, node: Option<&str>, created: i64) -> Observed {
    let mut observed = Observed::default();
    observed.pods.insert(
        "t1-pc1done-0".into(),
        Some(StepPod {
            report,
            node: node.map(str::to_string),
            created: Some(created),
            deleting: false,
        }),
    );
    observed
}

pub(super) fn succeeded(outputs: StepOutputs) -> PodReport {
    PodReport::Succeeded(Box::new(StepResult {
        duration_ms: 1500,
        ..result_of(StepKind::Pc2, outputs)
    }))
}

/// A run of `step` on this task's sector that gave `outputs`.
pub(super) fn result_of(step: StepKind, outputs: StepOutputs) -> StepResult {
    StepResult {
        version: 1,
        step,
        sector: SECTOR,
        failure: None,
        outputs,
        reused: false,
        duration_ms: 10,
        in_log: None,
        then: Vec::new(),
    }
}

/// A file a step wrote into the workspace, by its role.
pub(super) fn workspace_file(role: &str) -> NamedFile {
    NamedFile {
        role: role.into(),
        file: crate::step::FileDigest {
            path: format!("/ws/{role}").into(),
            sha256: "ab".repeat(32),
            size: 192,
        },
    }
}

/// The step pod `decision` creates.
pub(super) fn created_pod(decision: &Decision) -> &PodToCreate {
    decision
        .effects
        .iter()
        .find_map(|effect| match effect {
            Effect::CreateStepPod(pod) => Some(&**pod),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no step pod created: {:?}", decision.effects))
}
