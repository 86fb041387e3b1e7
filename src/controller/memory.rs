//! Facts about tasks that wait in memory for each task's next status write
//! ([`crate::task::Remembered`]): each would otherwise cost a write of its own, and each is found
//! again after a restart, so losing them with the process costs no more than a repeated lookup.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::SealingTaskStatus;
use crate::task::Remembered;

#[derive(Default)]
pub struct Memory {
    /// By task key, with the uid of the task they are about (a task deleted and created again
    /// under the same name is another task).
    facts: Mutex<HashMap<String, (Option<String>, Remembered)>>,
}

impl Memory {
    /// What is kept about task `key` (uid `uid`).
    pub fn recall(&self, key: &str, uid: Option<&str>) -> Remembered {
        match self.lock().get(key) {
            Some((of, facts)) if of.as_deref() == uid => facts.clone(),
            _ => Remembered::default(),
        }
    }

    /// Keeps `facts` (all that is known now) about task `key`.
    pub fn keep(&self, key: &str, uid: Option<&str>, facts: Remembered) {
        let mut map = self.lock();
        if facts.is_empty() {
            map.remove(key);
        } else {
            map.insert(key.to_string(), (uid.map(str::to_string), facts));
        }
    }

    /// Task `key`'s status was written as `written`: what it holds needs no keeping.
    pub fn written(&self, key: &str, written: &SealingTaskStatus) {
        let mut map = self.lock();
        if map
            .get(key)
            .is_some_and(|(_, facts)| facts.written_in(written))
        {
            map.remove(key);
        }
    }

    /// The task is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Option<String>, Remembered)>> {
        self.facts.lock().expect("memory lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::WorkspaceNode;

    fn node_of(pod: &str) -> Remembered {
        Remembered {
            workspace: Some(WorkspaceNode {
                pod: pod.into(),
                node: "node-a".into(),
            }),
            ..Remembered::default()
        }
    }

    #[test]
    fn facts_are_kept_per_task_until_a_write_holds_them() {
        let memory = Memory::default();
        memory.keep("farm/t", Some("uid-1"), node_of("t-dealsacquired-0"));
        assert_eq!(
            memory.recall("farm/t", Some("uid-1")),
            node_of("t-dealsacquired-0")
        );
        assert!(
            memory.recall("farm/t", Some("uid-2")).is_empty(),
            "a task of the same name created again knows nothing"
        );
        assert!(memory.recall("farm/u", Some("uid-1")).is_empty());

        // A write without the node keeps it; a write with it (or one where it no longer
        // applies: another step pod) lets it go.
        let mut status = SealingTaskStatus {
            step_pod: Some("t-dealsacquired-0".into()),
            ..Default::default()
        };
        memory.written("farm/t", &status);
        assert!(!memory.recall("farm/t", Some("uid-1")).is_empty());
        status.node = Some("node-a".into());
        memory.written("farm/t", &status);
        assert!(memory.recall("farm/t", Some("uid-1")).is_empty());

        memory.keep("farm/t", Some("uid-1"), node_of("t-dealsacquired-0"));
        memory.forget("farm/t");
        assert!(memory.recall("farm/t", Some("uid-1")).is_empty());
    }
}
