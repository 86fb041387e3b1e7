//! When each task's manager heartbeat last went out, so that a reconcile between two timed
//! heartbeats (a step that finished, the task's own status write) need not wait on another
//! manager round trip. In memory only: a restarted operator sends each task's heartbeat again at
//! its first reconcile, which is what the heartbeat is for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
pub struct Heartbeats {
    sent: Mutex<HashMap<String, Instant>>,
}

impl Heartbeats {
    /// Whether task `key`'s heartbeat went out less than half of `every` ago. Half, so that the
    /// timed wake a running step gets every `every` always finds it due.
    pub fn recent(&self, key: &str, every: Option<Duration>, now: Instant) -> bool {
        let Some(every) = every else {
            return false;
        };
        self.lock()
            .get(key)
            .is_some_and(|at| now.duration_since(*at) < every / 2)
    }

    /// Task `key`'s heartbeat went out (answered or not: during a manager outage every
    /// transition would otherwise wait for a timeout).
    pub fn sent(&self, key: &str, now: Instant) {
        self.lock().insert(key.to_string(), now);
    }

    /// The task is gone.
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.sent.lock().expect("heartbeats lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heartbeat_is_recent_for_half_its_interval_and_never_without_one() {
        let beats = Heartbeats::default();
        let start = Instant::now();
        let every = Some(Duration::from_secs(60));
        assert!(!beats.recent("farm/t", every, start), "none sent yet");
        beats.sent("farm/t", start);
        assert!(beats.recent("farm/t", every, start + Duration::from_secs(29)));
        assert!(!beats.recent("farm/t", every, start + Duration::from_secs(30)));
        assert!(!beats.recent("farm/t", None, start), "heartbeats off");
        assert!(!beats.recent("farm/u", every, start));
        beats.forget("farm/t");
        assert!(!beats.recent("farm/t", every, start));
    }
}
