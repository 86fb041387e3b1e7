//! The operator as damocles' worker tooling sees it (`damocles-manager util worker list`): one
//! worker per replica that acts, one sealing thread per unfinished task.

use crate::api::{Phase, SealingTask};
use crate::manager::wire::WorkerInfoSummary;

/// What WorkerPing reports of `tasks`: the unfinished ones as threads, counted by phase, those
/// without a sector yet as empty and those with a failure recorded as errors (as damocles-worker
/// counts its threads: a job without an id, a job with a last error).
pub fn summary<'a>(tasks: impl IntoIterator<Item = &'a SealingTask>) -> WorkerInfoSummary {
    let mut summary = WorkerInfoSummary::default();
    for task in tasks {
        let status = task.status.as_ref();
        let phase = status.and_then(|s| s.phase);
        if matches!(phase, Some(Phase::Finished | Phase::Aborted)) {
            continue;
        }
        summary.threads += 1;
        if status.is_none_or(|s| s.sector.is_none()) {
            summary.empty += 1;
        }
        if status.is_some_and(|s| s.last_error.is_some()) {
            summary.errors += 1;
        }
        match phase {
            Some(Phase::Paused) => summary.paused += 1,
            Some(Phase::Running) => summary.running += 1,
            Some(Phase::Waiting) => summary.waiting += 1,
            // Pending: not yet started, as an idle thread.
            _ => {}
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{LastError, SealingTaskStatus, SectorRef};
    use crate::sector::FailureLevel;

    fn task(phase: Option<Phase>, sector: bool, failed: bool) -> SealingTask {
        let spec =
            serde_json::from_value(serde_json::json!({"plan": "sealer", "sectorSize": "2KiB"}))
                .unwrap();
        let mut task = SealingTask::new("t", spec);
        task.status = phase.map(|phase| SealingTaskStatus {
            phase: Some(phase),
            sector: sector.then_some(SectorRef {
                miner: 1000,
                number: 1,
            }),
            last_error: failed.then(|| LastError {
                level: FailureLevel::Temporary,
                state: crate::api::State::PC1Done,
                message: "pc2 failed".into(),
                attempts: 1,
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
            }),
            ..Default::default()
        });
        task
    }

    #[test]
    fn unfinished_tasks_are_the_threads_counted_by_phase() {
        let tasks = [
            task(None, false, false),
            task(Some(Phase::Pending), false, false),
            task(Some(Phase::Running), true, false),
            task(Some(Phase::Running), true, true),
            task(Some(Phase::Waiting), false, false),
            task(Some(Phase::Paused), true, true),
            task(Some(Phase::Finished), true, false),
            task(Some(Phase::Aborted), true, true),
        ];
        assert_eq!(
            summary(&tasks),
            WorkerInfoSummary {
                threads: 6,
                empty: 3,
                paused: 1,
                running: 2,
                waiting: 1,
                errors: 2,
            }
        );
    }
}
