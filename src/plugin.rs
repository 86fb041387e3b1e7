//! `kubectl damocles`, the kubectl plugin (`src/bin/kubectl-damocles.rs`): the parts that decide
//! and word things, pure. A resume is checked here with the operator's own rules
//! ([`crate::plan::validate_resume`] over [`available_outputs`]) before anything is patched, and
//! `why` gathers what a person needs to act on a task.

use kube::ResourceExt;

use crate::api::{Phase, SealingTask, State};
use crate::plan::{ResumeAction, validate_resume};
use crate::task::condition::{PAUSED, SUSPENDED};
use crate::task::resume::{available_outputs, valid_targets};

/// The state a task is in (Empty before the operator first wrote its status).
fn current_state(task: &SealingTask) -> State {
    task.status
        .as_ref()
        .and_then(|s| s.state)
        .unwrap_or(State::Empty)
}

/// The resume targets valid for `task` now, in words.
pub fn valid_now(task: &SealingTask) -> String {
    let status = task.status.clone().unwrap_or_default();
    let available = available_outputs(task.spec.plan, &status);
    valid_targets(task.spec.plan, current_state(task), &available)
}

/// Checks `target` (None: retry the current state) as the operator will, so a refused resume is
/// never patched: the refusal, with the targets valid now.
pub fn check_resume(task: &SealingTask, target: Option<&str>) -> Result<ResumeAction, String> {
    let status = task.status.clone().unwrap_or_default();
    let available = available_outputs(task.spec.plan, &status);
    let current = current_state(task);
    validate_resume(task.spec.plan, current, target, &available).map_err(|refused| {
        if current.is_terminal() {
            refused.to_string()
        } else {
            let valid = valid_targets(task.spec.plan, current, &available);
            format!("{refused}\nvalid now: {valid}")
        }
    })
}

/// One Event about a task, as `why` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct EventLine {
    pub time: String,
    pub warning: bool,
    pub reason: String,
    pub note: String,
}

/// What `kubectl damocles why` prints for `task`: where it is, its last error, its conditions'
/// messages, recent Events, the tail of its latest step pod's log, and what to do next.
pub fn why(task: &SealingTask, events: &[EventLine], pod_log: Option<(&str, &str)>) -> String {
    let name = task.name_any();
    let status = task.status.clone().unwrap_or_default();
    let state = current_state(task);
    let phase = status.phase.unwrap_or(Phase::Pending);
    let mut out = format!(
        "{}/{name}: plan {}, sector {}, state {state}, phase {phase}, node {}\n",
        task.namespace().unwrap_or_default(),
        task.spec.plan,
        status.sector_name.as_deref().unwrap_or("(none yet)"),
        status.node.as_deref().unwrap_or("(none)"),
    );
    if let Some(message) = &status.message {
        out.push_str(&format!("message: {message}\n"));
    }
    if let Some(error) = &status.last_error {
        out.push_str(&format!(
            "last error: {} failure in {} (attempt {}): {}\n",
            error.level, error.state, error.attempts, error.message
        ));
    }
    for condition in &status.conditions {
        if condition.status == "True" && !condition.message.is_empty() {
            out.push_str(&format!(
                "condition {} ({}): {}\n",
                condition.type_, condition.reason, condition.message
            ));
        }
    }
    if !events.is_empty() {
        out.push_str("recent events:\n");
        for event in events {
            let kind = if event.warning { "Warning" } else { "Normal" };
            out.push_str(&format!(
                "  {} {kind} {}: {}\n",
                event.time, event.reason, event.note
            ));
        }
    }
    if let Some((pod, log)) = pod_log {
        out.push_str(&format!("last lines of step pod {pod}:\n"));
        for line in log.lines() {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out.push_str(&next_steps(task, &name, state, phase));
    out
}

fn next_steps(task: &SealingTask, name: &str, state: State, phase: Phase) -> String {
    let suspended = task.spec.suspend
        || task.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == PAUSED && c.reason == SUSPENDED)
        });
    match phase {
        Phase::Finished | Phase::Aborted => format!(
            "next: nothing, it ended in {state}; `kubectl delete st {name}` once its record is no \
             longer needed\n"
        ),
        _ if suspended => format!("next: it is suspended; `kubectl damocles unsuspend {name}`\n"),
        Phase::Paused => format!(
            "next: fix the cause, then `kubectl damocles resume {name}` to retry {state}, or \
             `kubectl damocles resume {name} --state STATE`; valid now: {}\n",
            valid_now(task)
        ),
        _ => "next: nothing to do, the operator is on it\n".to_string(),
    }
}

/// The field and label selectors `kubectl damocles list` asks for: the sector by the task's status
/// (the SealingTask's selectable fields), the pool by the label it gives its tasks.
pub fn list_selectors(
    sector: Option<u64>,
    miner: Option<u64>,
    pool: Option<&str>,
) -> (String, String) {
    let mut fields = Vec::new();
    if let Some(sector) = sector {
        fields.push(format!("status.sector.number={sector}"));
    }
    if let Some(miner) = miner {
        fields.push(format!("status.sector.miner={miner}"));
    }
    let labels = pool.map_or_else(String::new, |pool| {
        format!("{}={pool}", crate::pool::POOL_LABEL)
    });
    (fields.join(","), labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{FailureLevel, LastError, SealingTaskStatus};
    use crate::task::status::time_at;

    fn paused_at_pc1() -> SealingTask {
        let mut task: SealingTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingTask",
            "metadata": {"name": "t", "namespace": "farm"},
            "spec": {"plan": "sealer", "sectorSize": "2KiB"},
        }))
        .unwrap();
        let mut status = SealingTaskStatus {
            state: Some(State::PC1Done),
            phase: Some(Phase::Paused),
            last_error: Some(LastError {
                level: FailureLevel::Permanent,
                state: State::PC1Done,
                message: "bad proof type".into(),
                attempts: 1,
                time: time_at(1_000),
            }),
            ..Default::default()
        };
        for state in [State::Empty, State::Allocated, State::PieceAdded] {
            status.history.push(crate::api::HistoryEntry {
                state,
                entered: time_at(1_000),
                duration_seconds: Some(1),
            });
        }
        task.status = Some(status);
        task
    }

    #[test]
    fn a_resume_the_operator_would_refuse_is_refused_here_with_the_valid_targets() {
        let task = paused_at_pc1();
        let refused = check_resume(&task, Some("PC2Done")).unwrap_err();
        assert!(
            refused.contains("needs") && refused.contains("valid now:"),
            "{refused}"
        );
        let refused = check_resume(&task, Some("Nonsense")).unwrap_err();
        assert!(refused.contains("not a state of plan sealer"), "{refused}");
        assert_eq!(
            check_resume(&task, None),
            Ok(ResumeAction::RetryCurrent(State::PC1Done))
        );
        assert_eq!(
            check_resume(&task, Some("Aborted")),
            Ok(ResumeAction::Abort)
        );
    }

    #[test]
    fn why_shows_the_error_the_log_and_what_to_do() {
        let task = paused_at_pc1();
        let events = [EventLine {
            time: "2026-12-01T10:00:00Z".into(),
            warning: true,
            reason: "Paused".into(),
            note: "Permanent failure in PC1Done: bad proof type".into(),
        }];
        let report = why(
            &task,
            &events,
            Some(("t-pc1done-0", "starting PC2\nbad proof type")),
        );
        for needle in [
            "farm/t: plan sealer",
            "last error: Permanent failure in PC1Done (attempt 1): bad proof type",
            "Warning Paused: Permanent failure",
            "last lines of step pod t-pc1done-0:\n  starting PC2\n  bad proof type",
            "resume t --state STATE`; valid now:",
            "Aborted ends the task",
        ] {
            assert!(report.contains(needle), "no {needle:?} in\n{report}");
        }
    }

    #[test]
    fn list_selects_by_sector_miner_and_pool() {
        assert_eq!(
            list_selectors(Some(42), Some(1000), Some("cc")),
            (
                "status.sector.number=42,status.sector.miner=1000".to_string(),
                "damocles.io/pool=cc".to_string()
            )
        );
        assert_eq!(
            list_selectors(None, None, None),
            (String::new(), String::new())
        );
    }
}
