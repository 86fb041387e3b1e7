//! The SealingPool core: from a pool and the tasks it owns, which tasks to create, which ended
//! ones to delete, and the counts to show. Pure: the controller (`controller::pool`) lists the
//! tasks and applies the decision.
//!
//! Never more than asked, even across restarts and leader changes: tasks are named
//! `<pool>-<index>` with the index counted in status and recovered from the tasks themselves, so
//! a second try to create one finds it already there. A task is deleted only once it ended, its
//! workspace is cleaned and it is beyond the history limit; its count moves to `status.retired`
//! in the same write that lists it in `status.retiring`, before the delete.

use crate::api::{Phase, SealingPoolSpec, SealingPoolStatus};

/// The label on every task of a pool, naming the pool: `kubectl get st -l damocles.io/pool=NAME`.
pub const POOL_LABEL: &str = "damocles.io/pool";
/// Finished tasks kept when the pool does not say (as a CronJob keeps 3 successful Jobs).
pub const FINISHED_HISTORY_DEFAULT: u32 = 3;
/// Aborted tasks kept when the pool does not say (as a CronJob keeps 1 failed Job).
pub const ABORTED_HISTORY_DEFAULT: u32 = 1;
/// The most tasks one decision creates: a pool asked for thousands fills up over several
/// reconciles instead of one burst against the API server.
pub const CREATE_BATCH: u32 = 50;

/// One task of the pool, as the pool sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub name: String,
    /// The phase in its status (None before the operator first wrote it).
    pub phase: Option<Phase>,
    /// Its WorkspaceCleaned condition is True: deleting it leaves nothing on a node.
    pub workspace_cleaned: bool,
}

/// What the pool does now.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDecision {
    pub status: SealingPoolStatus,
    /// Tasks to create, in this order (the status counts them created).
    pub create: Vec<String>,
    /// Ended tasks to delete (already counted in `status.retired`).
    pub delete: Vec<String>,
}

impl PoolDecision {
    /// Creating `task` failed: only the tasks before it exist, and only they are counted; the
    /// next try starts from its name.
    pub fn created_before(&mut self, pool: &str, task: &str) {
        let Some(index) = index_of(pool, task) else {
            return;
        };
        let unmade = self.status.created.saturating_sub(index);
        self.status.created = index;
        self.status.active = self.status.active.saturating_sub(unmade);
        self.create
            .retain(|name| index_of(pool, name).is_some_and(|i| i < index));
    }
}

/// The name of the pool's task number `index`.
pub fn task_name(pool: &str, index: u32) -> String {
    format!("{pool}-{index}")
}

/// The index in a task name of `pool`, if it is one.
pub fn index_of(pool: &str, name: &str) -> Option<u32> {
    name.strip_prefix(pool)?.strip_prefix('-')?.parse().ok()
}

fn ended(phase: Option<Phase>) -> bool {
    matches!(phase, Some(Phase::Finished | Phase::Aborted))
}

/// Decides for the pool `name` with `spec` and `status`, whose tasks are `members`.
pub fn decide(
    name: &str,
    spec: &SealingPoolSpec,
    status: &SealingPoolStatus,
    members: &[Member],
) -> PoolDecision {
    let mut status = status.clone();
    // A task being deleted that is gone is done with; one still there is deleted again.
    status
        .retiring
        .retain(|retiring| members.iter().any(|m| &m.name == retiring));
    let present: Vec<&Member> = members
        .iter()
        .filter(|m| !status.retiring.contains(&m.name))
        .collect();
    // A task created just before a restart, whose count was not written, still counts.
    let highest = members.iter().filter_map(|m| index_of(name, &m.name)).max();
    if let Some(highest) = highest {
        status.created = status.created.max(highest.saturating_add(1));
    }

    let mut delete: Vec<String> = status.retiring.clone();
    for (phase, limit, default) in [
        (
            Phase::Finished,
            spec.finished_history_limit,
            FINISHED_HISTORY_DEFAULT,
        ),
        (
            Phase::Aborted,
            spec.aborted_history_limit,
            ABORTED_HISTORY_DEFAULT,
        ),
    ] {
        let mut history: Vec<&&Member> =
            present.iter().filter(|m| m.phase == Some(phase)).collect();
        // Newest first: the highest index was created last.
        history.sort_by_key(|m| std::cmp::Reverse(index_of(name, &m.name)));
        for old in history
            .into_iter()
            .skip(limit.unwrap_or(default) as usize)
            .filter(|m| m.workspace_cleaned)
        {
            status.retiring.push(old.name.clone());
            delete.push(old.name.clone());
            match phase {
                Phase::Finished => status.retired.finished += 1,
                _ => status.retired.aborted += 1,
            }
        }
    }

    let kept: Vec<&&Member> = present
        .iter()
        .filter(|m| !status.retiring.contains(&m.name))
        .collect();
    let count = |phase: Phase| kept.iter().filter(|m| m.phase == Some(phase)).count() as u32;
    status.paused = count(Phase::Paused);
    status.finished = status.retired.finished + count(Phase::Finished);
    status.aborted = status.retired.aborted + count(Phase::Aborted);
    status.active = kept
        .iter()
        .filter(|m| !ended(m.phase))
        .filter(|m| !(spec.release_paused_slots && m.phase == Some(Phase::Paused)))
        .count() as u32;

    let remaining = spec
        .total
        .map_or(u32::MAX, |total| total.saturating_sub(status.created));
    let wanted = if spec.suspend {
        0
    } else {
        spec.in_flight.saturating_sub(status.active)
    };
    let new = wanted.min(remaining).min(CREATE_BATCH);
    let create: Vec<String> = (status.created..status.created + new)
        .map(|index| task_name(name, index))
        .collect();
    status.created += new;
    status.active += new;
    status.message = Some(message(spec, &status));
    PoolDecision {
        status,
        create,
        delete,
    }
}

fn message(spec: &SealingPoolSpec, status: &SealingPoolStatus) -> String {
    let of_total = spec
        .total
        .map_or_else(String::new, |total| format!(" of {total}"));
    let counts = format!(
        "{} active of {} wanted, {} paused, {} finished, {} aborted; {} created{of_total}",
        status.active,
        spec.in_flight,
        status.paused,
        status.finished,
        status.aborted,
        status.created
    );
    let done = spec.total.is_some_and(|total| status.created >= total);
    if done && status.active == 0 && status.paused == 0 {
        format!("done: every task created ended; {counts}")
    } else if done {
        format!("all tasks created; {counts}")
    } else if spec.suspend {
        format!("suspended: no new tasks; {counts}")
    } else {
        counts
    }
}

/// Whether the pool has nothing more to do until something changes: every task it will ever
/// create exists and ended (it still deletes history as workspaces are cleaned).
pub fn complete(spec: &SealingPoolSpec, status: &SealingPoolStatus) -> bool {
    spec.total.is_some_and(|total| status.created >= total) && status.active == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PlanKind, SectorSize, TaskTemplate};

    fn spec(in_flight: u32, total: Option<u32>) -> SealingPoolSpec {
        SealingPoolSpec {
            template: TaskTemplate {
                plan: PlanKind::Sealer,
                sector_size: SectorSize::Size2KiB,
                synthetic_po_rep: None,
                deals: None,
            },
            in_flight,
            total,
            suspend: false,
            release_paused_slots: false,
            finished_history_limit: Some(1),
            aborted_history_limit: Some(0),
        }
    }

    fn member(index: u32, phase: Option<Phase>, cleaned: bool) -> Member {
        Member {
            name: task_name("p", index),
            phase,
            workspace_cleaned: cleaned,
        }
    }

    #[test]
    fn a_new_pool_creates_what_is_wanted_with_numbered_names() {
        let decision = decide("p", &spec(2, Some(4)), &SealingPoolStatus::default(), &[]);
        assert_eq!(decision.create, ["p-0", "p-1"]);
        assert_eq!(decision.status.created, 2);
        assert_eq!(decision.status.active, 2);
        assert!(decision.delete.is_empty());
    }

    #[test]
    fn a_task_that_could_not_be_created_is_not_counted_nor_those_after_it() {
        let mut decision = decide("p", &spec(3, None), &SealingPoolStatus::default(), &[]);
        assert_eq!(decision.create, ["p-0", "p-1", "p-2"]);
        decision.created_before("p", "p-1");
        assert_eq!(decision.create, ["p-0"]);
        assert_eq!((decision.status.created, decision.status.active), (1, 1));
    }

    #[test]
    fn never_more_in_flight_than_asked_nor_more_in_all_than_the_total() {
        let status = SealingPoolStatus {
            created: 3,
            ..Default::default()
        };
        let members = [
            member(0, Some(Phase::Finished), false),
            member(1, Some(Phase::Running), false),
            member(2, Some(Phase::Running), false),
        ];
        let full = decide("p", &spec(2, Some(4)), &status, &members);
        assert!(full.create.is_empty(), "two running: {:?}", full.create);
        let members = [
            member(0, Some(Phase::Finished), false),
            member(1, Some(Phase::Finished), false),
            member(2, None, false),
        ];
        let one_left = decide("p", &spec(2, Some(4)), &status, &members);
        assert_eq!(one_left.create, ["p-3"], "the total caps it at one");
        let mut done = one_left.status.clone();
        done.created = 4;
        let none = decide("p", &spec(2, Some(4)), &done, &members);
        assert!(none.create.is_empty());
    }

    /// A restart between creating a task and writing the count: the task's name tells the count.
    #[test]
    fn a_task_created_but_not_counted_is_counted_from_its_name() {
        let members = [member(0, None, false), member(1, None, false)];
        let decision = decide("p", &spec(2, None), &SealingPoolStatus::default(), &members);
        assert!(decision.create.is_empty(), "{:?}", decision.create);
        assert_eq!(decision.status.created, 2);
        // A task another pool owns with a similar name is not this pool's.
        assert_eq!(index_of("p", "p-x"), None);
        assert_eq!(index_of("p", "pp-3"), None);
        assert_eq!(index_of("p", "p-12"), Some(12));
    }

    #[test]
    fn a_paused_task_holds_its_slot_unless_the_pool_releases_it() {
        let members = [member(0, Some(Phase::Paused), false)];
        let status = SealingPoolStatus {
            created: 1,
            ..Default::default()
        };
        let held = decide("p", &spec(1, None), &status, &members);
        assert!(held.create.is_empty());
        assert_eq!(held.status.paused, 1);
        let mut releasing = spec(1, None);
        releasing.release_paused_slots = true;
        let released = decide("p", &releasing, &status, &members);
        assert_eq!(released.create, ["p-1"]);
    }

    #[test]
    fn a_suspended_pool_creates_nothing() {
        let mut suspended = spec(2, None);
        suspended.suspend = true;
        let decision = decide("p", &suspended, &SealingPoolStatus::default(), &[]);
        assert!(decision.create.is_empty());
        assert!(decision.status.message.unwrap().starts_with("suspended"));
    }

    /// History: the newest `limit` finished tasks stay; older ones go once their workspace is
    /// cleaned, counted before they are deleted, and not counted twice while they go.
    #[test]
    fn ended_tasks_beyond_the_history_limit_are_deleted_once_cleaned_and_counted_once() {
        let status = SealingPoolStatus {
            created: 4,
            ..Default::default()
        };
        let members = [
            member(0, Some(Phase::Finished), true),
            member(1, Some(Phase::Finished), false),
            member(2, Some(Phase::Finished), true),
            member(3, Some(Phase::Aborted), true),
        ];
        let decision = decide("p", &spec(0, Some(4)), &status, &members);
        // p-2 is the newest finished (kept, limit 1); p-1 waits for its cleanup; p-0 goes; the
        // aborted one goes (limit 0).
        assert_eq!(decision.delete, ["p-0", "p-3"]);
        assert_eq!(decision.status.retiring, ["p-0", "p-3"]);
        assert_eq!(decision.status.retired.finished, 1);
        assert_eq!(decision.status.finished, 3);
        assert_eq!(decision.status.aborted, 1);

        // The next decision, p-0 still there (being deleted), p-3 gone: same counts, p-0 asked
        // again.
        let next = decide("p", &spec(0, Some(4)), &decision.status, &members[..3]);
        assert_eq!(next.delete, ["p-0"]);
        assert_eq!(next.status.retiring, ["p-0"]);
        assert_eq!(
            (next.status.finished, next.status.aborted),
            (3, 1),
            "nothing counted twice"
        );
        assert!(next.status.message.as_deref().unwrap().starts_with("done"));
        assert!(complete(&spec(0, Some(4)), &next.status));
    }
}
