//! The end of a task: its workspace removed by a pod on its node, the task deleted after
//! ttlSecondsAfterFinished, and a deleted task let go once it is stopped and cleaned up.

use std::time::Duration;

use super::condition::{DELETION_HELD, WORKSPACE_CLEANED};
use super::status::{condition_true, set_condition};
use super::{
    CLEANUP_PATIENCE, CLEANUP_RETRY, CleanupPod, Effect, PodReport, Question, SLOW_START, Turn,
    Wake,
};
use crate::api::State;

/// The name of a task's workspace cleanup pod.
pub fn cleanup_pod_name(task: &str) -> String {
    format!("{task}-cleanup")
}

impl Turn<'_> {
    pub(super) fn workspace_cleaned(&self) -> bool {
        condition_true(&self.status, WORKSPACE_CLEANED)
    }

    /// The task is Finished or Aborted: everything worth keeping is in the persist store by now
    /// (or the task was aborted), so its workspace goes; then the TTL, if any, runs.
    /// The manager is told first (ReportFinalized or ReportAborted); a manager that does not
    /// answer holds up only the TTL, not the cleanup.
    pub(super) fn ended(&mut self) -> Wake {
        let report = self.report_end();
        if let Some(ask @ Wake::Ask(_)) = report {
            return ask;
        }
        let wake = self.clean_workspace();
        let wake = match self.task.spec.ttl_seconds_after_finished {
            Some(ttl) if self.workspace_cleaned() && report.is_none() => self.expire(ttl),
            _ => wake,
        };
        match (wake, report) {
            (Wake::OnChange, Some(retry)) => retry,
            (Wake::After(a), Some(Wake::After(b))) => Wake::After(a.min(b)),
            (wake, _) => wake,
        }
    }

    /// Removes the workspace with a pod on its node; the result is the WorkspaceCleaned
    /// condition (False with the reason while it cannot be done). The task's pods are deleted
    /// before the condition is written: a crash between the two runs the cleanup again, where
    /// the other order would leave the finished step pods to a task that counts itself clean.
    fn clean_workspace(&mut self) -> Wake {
        if self.workspace_cleaned() {
            return Wake::OnChange;
        }
        // A first step stopped while its node was only in memory (lost with a restart): its
        // pod, while it is there, says where the workspace is.
        if self.status.node.is_none()
            && let Some(pod) = self
                .status
                .retiring_pod
                .clone()
                .or(self.status.step_pod.clone())
        {
            match self.observed.pods.get(&pod) {
                None => return Wake::Ask(Question::StepPod(pod)),
                Some(found) => {
                    self.status.node = found
                        .as_ref()
                        .filter(|p| !matches!(p.report, PodReport::Starting { .. }))
                        .and_then(|p| p.node.clone());
                }
            }
        }
        let Some(node) = self.status.node.clone() else {
            self.cleaned("NoWorkspace", "no step ran, so there was no workspace");
            return Wake::OnChange;
        };
        let name = cleanup_pod_name(self.task.name);
        match self.observed.cleanup_pod {
            None => Wake::Ask(Question::CleanupPod(name)),
            Some(CleanupPod::Absent) => {
                self.log(false, format!("removing the workspace on node {node}"));
                self.effects.push(Effect::CreateCleanupPod { name, node });
                Wake::OnChange
            }
            // Most cleanup pods are done within seconds: the node is looked up only for one
            // that is not.
            Some(CleanupPod::Running { created })
                if self.seconds_since(created) < SLOW_START.as_secs() =>
            {
                Wake::After(SLOW_START - Duration::from_secs(self.seconds_since(created)))
            }
            Some(CleanupPod::Running { .. }) => match self.observed.nodes.get(&node) {
                None => Wake::Ask(Question::NodeExists(node)),
                // A cleanup pod bound to a node that is gone never runs: the workspace went with
                // the node.
                Some(false) => {
                    let message = format!("node {node} is gone, and the workspace with it");
                    self.cleaned("NodeGone", &message);
                    self.event(true, WORKSPACE_CLEANED, message);
                    Wake::OnChange
                }
                Some(true) => Wake::OnChange,
            },
            Some(CleanupPod::Exited(0)) => {
                // The condition records it; no Event (a routine step costs no extra write).
                self.cleaned("Removed", &format!("workspace removed from node {node}"));
                Wake::OnChange
            }
            Some(CleanupPod::Exited(code)) => {
                let message = format!(
                    "the cleanup pod {name} on {node} exited {code}; retrying in {} minutes",
                    CLEANUP_RETRY.as_secs() / 60
                );
                set_condition(
                    &mut self.status,
                    WORKSPACE_CLEANED,
                    "False",
                    "CleanupFailed",
                    &message,
                    self.now,
                );
                self.write();
                self.effects.push(Effect::DeletePod(name));
                Wake::After(CLEANUP_RETRY)
            }
        }
    }

    /// The workspace is gone (`reason`): the task's pods are deleted, then the condition is
    /// written.
    fn cleaned(&mut self, reason: &str, message: &str) {
        set_condition(
            &mut self.status,
            WORKSPACE_CLEANED,
            "True",
            reason,
            message,
            self.now,
        );
        self.effects.push(Effect::DeleteTaskPods);
        self.write();
    }

    /// Deletes an ended task once `ttl` seconds have passed since it ended.
    fn expire(&mut self, ttl: u32) -> Wake {
        let ended = self
            .status
            .history
            .last()
            .map(|h| h.entered.0.as_second())
            .unwrap_or(self.now);
        let left = ended + i64::from(ttl) - self.now;
        if left > 0 {
            return Wake::After(Duration::from_secs(left as u64));
        }
        // Written first, so nothing is left to write after the deletion.
        self.write();
        self.log(
            false,
            format!("ttlSecondsAfterFinished ({ttl}) passed: deleting the task"),
        );
        self.effects.push(Effect::DeleteTask);
        Wake::OnChange
    }

    /// A deleted sealer whose PreCommit went out (its deposit is on chain, and its sealed files
    /// may be only in the workspace) is not abandoned: it finishes, then goes, unless the
    /// annotation [`super::ABORT_ON_DELETE`] says to abort it. A `kubectl delete` of many tasks,
    /// or of their namespace, thus costs no deposit. Says so once, as a Warning.
    pub(super) fn finishes_before_deletion(&mut self) -> bool {
        let state = self.position().state;
        let plan = self.task.spec.plan();
        let holds_deposit = self.task.spec.plan == crate::api::PlanKind::Sealer
            && !state.is_terminal()
            && plan.state(State::PCSubmitted).is_some()
            && !plan.at_or_before(state, State::PC2Done);
        if !holds_deposit || self.task.abort_on_delete {
            return false;
        }
        if !condition_true(&self.status, DELETION_HELD) {
            let sector = self
                .status
                .sector
                .map_or("its sector".to_string(), |s| format!("sector {s}"));
            let message = format!(
                "deleted after its PreCommit went out: {sector} is finished first (its deposit is on \
                 chain), then the task goes. To abort the sector instead, losing the deposit, \
                 annotate the task {}=true",
                super::ABORT_ON_DELETE
            );
            set_condition(
                &mut self.status,
                DELETION_HELD,
                "True",
                "PreCommitOnChain",
                &message,
                self.now,
            );
            self.event(true, DELETION_HELD, message);
            self.write();
        }
        true
    }

    /// The task is being deleted: stop it, tell the manager, remove its workspace, then let it go.
    pub(super) fn deleted(&mut self) -> Wake {
        if !self.position().state.is_terminal() {
            self.abort("the SealingTask was deleted");
        }
        // One try at the report the manager is owed; the deletion does not wait on an outage.
        if let Some(ask @ Wake::Ask(_)) = self.report_end() {
            return ask;
        }
        let wake = self.clean_workspace();
        if self.workspace_cleaned() {
            return Wake::Release;
        }
        if matches!(wake, Wake::Ask(_)) {
            return wake;
        }
        let waited = self.task.deleted_at.map(|t| self.now - t).unwrap_or(0);
        if waited.max(0) as u64 > CLEANUP_PATIENCE.as_secs() {
            let message = format!(
                "the workspace cleanup did not finish within {}s; its files are left on node {}",
                CLEANUP_PATIENCE.as_secs(),
                self.status.node.as_deref().unwrap_or("?")
            );
            self.log(true, message.clone());
            self.event(true, "WorkspaceLeft", message);
            return Wake::Release;
        }
        Wake::CleanupPending
    }
}
