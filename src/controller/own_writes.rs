//! Whether the watch cache's copy of a task already holds the operator's own last write to it.
//!
//! A reconcile reads its task from the watch cache instead of asking the apiserver (one GET per
//! reconcile was the largest share of the operator's requests at scale). The cache can lag
//! behind the status this operator has just written; a decision made on that older status could
//! redo what the write recorded (ask the manager again for a one-time answer). So the operator
//! remembers the resourceVersion of its last write to each task, and a reconcile that finds the
//! cached copy older than it waits for the write's own watch event, which reconciles the task
//! again. Resource versions compare as integers (Kubernetes made that a guarantee in 1.35,
//! KEP-5504); one that is not an integer, or a task whose write was refused as a conflict
//! (someone else wrote it, at a version we do not know), is read fresh from the apiserver.
//!
//! A user's edit the cache has not seen yet is not covered and need not be: every write the
//! operator makes carries the resourceVersion it read, so a decision made on a stale spec fails
//! at its first write and the task is reconciled again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::api::SealingTask;

#[derive(Debug)]
enum Written {
    /// The object (by uid) at or after this resourceVersion holds the write.
    At { uid: String, version: u64 },
    /// Read it from the apiserver before acting on it.
    Unknown,
}

/// How a task's cached copy stands against the operator's own writes to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CachedCopy {
    /// It holds every write of ours: act on it.
    Current,
    /// Older than our last write, whose watch event is yet to come (and will reconcile the task).
    BehindOwnWrite,
    /// Not known: read the task from the apiserver.
    Unknown,
}

#[derive(Default)]
pub struct OwnWrites {
    tasks: Mutex<HashMap<String, Written>>,
}

impl OwnWrites {
    /// The operator wrote task `key` (namespace/name), leaving it at `version`.
    pub fn wrote(&self, key: &str, uid: Option<&str>, version: Option<&str>) {
        let written = match (uid, version.and_then(|v| v.parse().ok())) {
            (Some(uid), Some(version)) => Written::At {
                uid: uid.to_string(),
                version,
            },
            _ => Written::Unknown,
        };
        self.lock().insert(key.to_string(), written);
    }

    /// A write to task `key` was refused as a conflict: its cached copy is not to be trusted
    /// until it has been read fresh.
    pub fn conflicted(&self, key: &str) {
        self.lock().insert(key.to_string(), Written::Unknown);
    }

    /// Whether `cached` (task `key` as the watch cache has it) holds every write of ours. Once it
    /// does, the entry is dropped: the map holds only tasks whose cache lags.
    pub fn cached_copy(&self, key: &str, cached: &SealingTask) -> CachedCopy {
        let mut tasks = self.lock();
        let copy = match tasks.get(key) {
            None => return CachedCopy::Current,
            Some(Written::Unknown) => CachedCopy::Unknown,
            Some(Written::At { uid, version }) => {
                let cached_version = cached
                    .resource_version()
                    .and_then(|v| v.parse::<u64>().ok());
                match cached_version {
                    _ if cached.uid().as_deref() != Some(uid.as_str()) => CachedCopy::Current,
                    Some(cached) if cached >= *version => CachedCopy::Current,
                    Some(_) => CachedCopy::BehindOwnWrite,
                    None => CachedCopy::Unknown,
                }
            }
        };
        if copy == CachedCopy::Current {
            tasks.remove(key);
        }
        copy
    }

    /// Read fresh: what the apiserver answered holds every write so far.
    pub fn read_fresh(&self, key: &str, fresh: &SealingTask) {
        let mut tasks = self.lock();
        if matches!(tasks.get(key), Some(Written::Unknown)) {
            match (fresh.uid(), fresh.resource_version()) {
                (Some(uid), Some(version)) => {
                    drop(tasks);
                    self.wrote(key, Some(&uid), Some(&version));
                }
                _ => {
                    tasks.remove(key);
                }
            }
        }
    }

    /// The task is gone: nothing to remember.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    #[cfg(test)]
    fn lagging(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Written>> {
        self.tasks.lock().expect("own-writes lock")
    }
}

/// Pods the pod cache does not hold, as last known: one this operator just created that its pod
/// watch has not seen yet (as the apiserver answered the creation: a reconcile soon after a
/// create, woken by the task's own status write, reads it from here rather than asking the
/// apiserver), and one the watch just saw finish (the cache holds unfinished pods only, and the
/// task the finish wakes reads the pod's result from here instead of a GET). After
/// [`CREATED_POD_TTL`] or [`FINISHED_POD_TTL`] a pod is read from the cache, or from the
/// apiserver.
#[derive(Default)]
pub struct UncachedPods {
    pods: Mutex<HashMap<String, Sighting>>,
}

enum Sighting {
    /// Created then, as the apiserver answered; not seen by the watch since.
    Created(Instant, Arc<Pod>),
    /// Seen by the watch then (perhaps before the create call returned), unfinished.
    Seen(Instant),
    /// Seen finished by the watch then, in this final state.
    Finished(Instant, Arc<Pod>),
}

impl Sighting {
    fn at(&self) -> Instant {
        match self {
            Sighting::Created(at, _) | Sighting::Seen(at) | Sighting::Finished(at, _) => *at,
        }
    }

    /// Still worth remembering at `now`.
    fn fresh(&self, now: Instant) -> bool {
        let ttl = match self {
            Sighting::Created(..) | Sighting::Seen(_) => CREATED_POD_TTL,
            Sighting::Finished(..) => FINISHED_POD_TTL,
        };
        now.duration_since(self.at()) < ttl
    }
}

/// A watch event comes within milliseconds; one that has not come in this long is not waited
/// for (a pod that finished or was deleted before the watch saw it would otherwise read as new).
pub const CREATED_POD_TTL: Duration = Duration::from_secs(30);

/// The task a pod's finish wakes reads it within moments unless thousands of tasks are queued in
/// front of it; past this it reads the pod from the apiserver. Bounds the memory kept: the pods
/// that finished in the last minute.
pub const FINISHED_POD_TTL: Duration = Duration::from_secs(60);

impl UncachedPods {
    /// Pod `key` (namespace/name) was just created, and the apiserver answered `pod`.
    pub fn created(&self, key: String, pod: Pod, now: Instant) {
        let mut pods = self.lock();
        pods.retain(|_, sighting| sighting.fresh(now));
        pods.entry(key)
            .or_insert_with(|| Sighting::Created(now, Arc::new(pod)));
    }

    /// The pod watch saw pod `key` unfinished: from now on it is the cache's to say.
    pub fn seen(&self, key: String, now: Instant) {
        self.lock().insert(key, Sighting::Seen(now));
    }

    /// The pod watch saw pod `key` finished, as `pod`.
    pub fn finished(&self, key: String, pod: Pod, now: Instant) {
        let mut pods = self.lock();
        pods.retain(|_, sighting| sighting.fresh(now));
        pods.insert(key, Sighting::Finished(now, Arc::new(pod)));
    }

    /// Pod `key` as created or as it finished, if that is recent and the cache does not hold it.
    pub fn get(&self, key: &str, now: Instant) -> Option<Arc<Pod>> {
        match self.lock().get(key)? {
            sighting @ (Sighting::Created(_, pod) | Sighting::Finished(_, pod))
                if sighting.fresh(now) =>
            {
                Some(pod.clone())
            }
            _ => None,
        }
    }

    /// The pod is being deleted: nothing to remember.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Sighting>> {
        self.pods.lock().expect("uncached pods lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(uid: &str, version: &str) -> SealingTask {
        let mut task: SealingTask = serde_json::from_value(serde_json::json!({
            "apiVersion": "damocles.io/v1alpha1",
            "kind": "SealingTask",
            "metadata": {"name": "t"},
            "spec": {"plan": "sealer", "sectorSize": "2KiB"},
        }))
        .expect("a task");
        task.metadata.uid = Some(uid.into());
        task.metadata.resource_version = Some(version.into());
        task
    }

    #[test]
    fn a_cached_copy_older_than_our_write_is_read_again() {
        let writes = OwnWrites::default();
        let copy = |version| writes.cached_copy("farm/t", &task("u1", version));
        assert_eq!(copy("5"), CachedCopy::Current, "no write yet");
        writes.wrote("farm/t", Some("u1"), Some("100"));
        assert_eq!(copy("99"), CachedCopy::BehindOwnWrite);
        // Compared as numbers, not as strings ("100" < "99" as text).
        assert_eq!(copy("100"), CachedCopy::Current);
        assert_eq!(writes.lagging(), 0, "caught up: forgotten");
        assert_eq!(copy("99"), CachedCopy::Current);
    }

    #[test]
    fn a_new_object_of_the_same_name_is_not_held_to_the_old_ones_version() {
        let writes = OwnWrites::default();
        writes.wrote("farm/t", Some("u1"), Some("100"));
        assert_eq!(
            writes.cached_copy("farm/t", &task("u2", "7")),
            CachedCopy::Current
        );
    }

    #[test]
    fn after_a_conflict_or_an_unreadable_version_the_task_is_read_fresh() {
        let writes = OwnWrites::default();
        let copy = |version| writes.cached_copy("farm/t", &task("u1", version));
        writes.conflicted("farm/t");
        assert_eq!(copy("100"), CachedCopy::Unknown);
        writes.read_fresh("farm/t", &task("u1", "120"));
        assert_eq!(copy("110"), CachedCopy::BehindOwnWrite);
        assert_eq!(copy("120"), CachedCopy::Current);

        writes.wrote("farm/t", Some("u1"), Some("not-a-number"));
        assert_eq!(copy("500"), CachedCopy::Unknown);
        writes.forget("farm/t");
        assert_eq!(copy("500"), CachedCopy::Current);
    }

    #[test]
    fn a_created_pod_is_remembered_until_the_watch_sees_it_or_its_time_is_up() {
        let pods = UncachedPods::default();
        let start = Instant::now();
        pods.created("farm/p".into(), Pod::default(), start);
        assert!(pods.get("farm/p", start + CREATED_POD_TTL / 2).is_some());
        assert!(pods.get("farm/p", start + CREATED_POD_TTL).is_none());
        assert!(pods.get("farm/q", start).is_none());
        pods.seen("farm/p".into(), start);
        assert!(pods.get("farm/p", start).is_none(), "the watch has it");
        // The watch's event can come before the create call returns.
        pods.seen("farm/r".into(), start);
        pods.created("farm/r".into(), Pod::default(), start);
        assert!(pods.get("farm/r", start).is_none());
        pods.created("farm/s".into(), Pod::default(), start);
        pods.forget("farm/s");
        assert!(pods.get("farm/s", start).is_none());
        pods.created(
            "farm/new".into(),
            Pod::default(),
            start + CREATED_POD_TTL * 2,
        );
        assert_eq!(
            pods.lock().len(),
            1,
            "expired entries are dropped as others come"
        );
    }

    #[test]
    fn a_finished_pod_is_read_as_the_watch_saw_it_finish_for_a_minute() {
        let pods = UncachedPods::default();
        let start = Instant::now();
        let done = Pod {
            status: Some(k8s_openapi::api::core::v1::PodStatus {
                phase: Some("Succeeded".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        pods.created("farm/p".into(), Pod::default(), start);
        pods.seen("farm/p".into(), start);
        pods.finished("farm/p".into(), done.clone(), start);
        let read = pods.get("farm/p", start + FINISHED_POD_TTL / 2).unwrap();
        assert_eq!(*read, done);
        assert!(pods.get("farm/p", start + FINISHED_POD_TTL).is_none());
        // Its final state is not taken back by a create answer that arrives late.
        pods.created("farm/p".into(), Pod::default(), start);
        assert_eq!(*pods.get("farm/p", start).unwrap(), done);
        pods.forget("farm/p");
        assert!(pods.get("farm/p", start).is_none());
    }
}
