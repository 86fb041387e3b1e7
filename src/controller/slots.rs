//! Concurrency caps per step kind, across every task the operator watches (the `concurrency` of a
//! step profile): how many tasks may run a step of that kind at once.
//!
//! The truth is the tasks' own status (a task whose current step has a pod holds a slot), read from
//! the controller's cache, so a restarted operator knows every slot in use. A slot just granted is
//! also kept here until the cache shows it, so two reconciles running at once cannot both take the
//! last slot.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::{Phase, SealingTask, SealingTaskStatus};
use crate::plan::{Plan, StepKind};

/// A task, as namespace/name.
pub type TaskKey = String;

/// How long a granted slot is held here without the cache showing it. The cache shows a task's
/// status within moments of the write; this only bounds a slot leaked by an error path.
const GRANT_TTL: Duration = Duration::from_secs(60);

pub fn key(task: &SealingTask) -> TaskKey {
    format!(
        "{}/{}",
        task.metadata.namespace.as_deref().unwrap_or_default(),
        task.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The step kind of the work `status` is at in `plan`; none when that work is a manager call.
pub fn current_step(plan: &Plan, status: &SealingTaskStatus) -> Option<StepKind> {
    plan.step_at(crate::plan::cursor::Position {
        state: status.state?,
        action: status.action_index as usize,
    })
}

/// The step kind whose slot `task` holds, per its status: a step pod exists for its current work,
/// running or still starting (a slow start shows as Waiting and still holds it).
pub fn held_by(task: &SealingTask) -> Option<StepKind> {
    let status = task.status.as_ref()?;
    let under_way = matches!(status.phase, Some(Phase::Running | Phase::Waiting));
    if !under_way || status.step_pod.is_none() {
        return None;
    }
    current_step(task.spec.plan(), status)
}

/// Slots granted but perhaps not yet in the cache.
#[derive(Default)]
pub struct Slots {
    granted: Mutex<HashMap<TaskKey, (StepKind, Instant)>>,
}

/// Why a task must wait for a slot.
#[derive(Debug, PartialEq, Eq)]
pub struct Full {
    pub holders: usize,
    pub cap: u32,
}

impl Slots {
    /// Takes a slot of `step` for task `me` when fewer than `cap` other tasks hold one.
    pub fn take<'a>(
        &self,
        me: &str,
        step: StepKind,
        cap: u32,
        cached: impl IntoIterator<Item = &'a SealingTask>,
    ) -> Result<(), Full> {
        self.take_at(me, step, cap, cached, Instant::now())
    }

    /// [`Slots::take`] at `now` (the simulator's clock).
    pub fn take_at<'a>(
        &self,
        me: &str,
        step: StepKind,
        cap: u32,
        cached: impl IntoIterator<Item = &'a SealingTask>,
        now: Instant,
    ) -> Result<(), Full> {
        let mut granted = self.granted.lock().expect("slot table lock");
        granted.retain(|_, (_, at)| now.duration_since(*at) < GRANT_TTL);
        let holders: BTreeSet<TaskKey> = cached
            .into_iter()
            .filter(|task| held_by(task) == Some(step))
            .map(key)
            .chain(
                granted
                    .iter()
                    .filter(|(_, (kind, _))| *kind == step)
                    .map(|(task, _)| task.clone()),
            )
            .filter(|task| task != me)
            .collect();
        if holders.len() >= cap as usize {
            return Err(Full {
                holders: holders.len(),
                cap,
            });
        }
        granted.insert(me.to_string(), (step, now));
        Ok(())
    }

    /// The task's step ended (or was stopped): its slot is free once the cache agrees.
    pub fn release(&self, me: &str) {
        self.granted.lock().expect("slot table lock").remove(me);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{SealingTaskSpec, State};

    fn task(name: &str, state: Option<State>, pod: bool) -> SealingTask {
        let spec: SealingTaskSpec =
            serde_json::from_value(serde_json::json!({"plan": "sealer", "sectorSize": "2KiB"}))
                .unwrap();
        let mut task = SealingTask::new(name, spec);
        task.metadata.namespace = Some("farm".into());
        task.status = state.map(|state| SealingTaskStatus {
            state: Some(state),
            phase: Some(Phase::Running),
            step_pod: pod.then(|| format!("{name}-pod")),
            ..Default::default()
        });
        task
    }

    #[test]
    fn a_task_holds_the_slot_of_its_current_step_while_its_pod_exists() {
        assert_eq!(
            held_by(&task("a", Some(State::C1Done), true)),
            Some(StepKind::C2)
        );
        assert_eq!(held_by(&task("a", Some(State::C1Done), false)), None);
        assert_eq!(held_by(&task("a", Some(State::Empty), true)), None);
        assert_eq!(held_by(&task("a", None, false)), None);
        // A pod slow to start (Waiting) holds its slot; a paused task does not.
        let mut slow = task("a", Some(State::C1Done), true);
        slow.status.as_mut().unwrap().phase = Some(Phase::Waiting);
        assert_eq!(held_by(&slow), Some(StepKind::C2));
        slow.status.as_mut().unwrap().phase = Some(Phase::Paused);
        assert_eq!(held_by(&slow), None);
    }

    #[test]
    fn slots_count_the_cache_and_fresh_grants_once_each() {
        let slots = Slots::default();
        let running = [task("a", Some(State::C1Done), true)];
        // "a" holds one of two C2 slots in the cache; "b" takes the other.
        assert_eq!(slots.take("farm/b", StepKind::C2, 2, &running), Ok(()));
        // "c" must wait, even though the cache does not show "b" yet.
        assert_eq!(
            slots.take("farm/c", StepKind::C2, 2, &running),
            Err(Full { holders: 2, cap: 2 })
        );
        // A task asking again for the slot it holds is not counted against itself.
        assert_eq!(slots.take("farm/a", StepKind::C2, 2, &running), Ok(()));
        // Other step kinds are not affected.
        assert_eq!(slots.take("farm/c", StepKind::Pc1, 1, &running), Ok(()));
        slots.release("farm/b");
        slots.release("farm/a");
        assert_eq!(slots.take("farm/c", StepKind::C2, 2, &running), Ok(()));
    }
}
