//! Events per task, throttled like client-go's event correlator: a burst of 25, then one per
//! 5 minutes. A task stuck in a retry loop cannot flood the API server with Events; its status
//! and the logs still say everything.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const BURST: f64 = 25.0;
pub const REFILL_EVERY: Duration = Duration::from_secs(300);

/// A token bucket per task.
#[derive(Default)]
pub struct EventBudget {
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl EventBudget {
    /// Whether `task` may publish one more Event now (taking a token if so).
    pub fn allow(&self, task: &str, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().expect("event budget lock");
        if buckets.len() > 10_000 {
            // Forget tasks whose bucket refilled long ago: they would start full anyway.
            buckets.retain(|_, (_, at)| now.duration_since(*at) < REFILL_EVERY * 25);
        }
        let (tokens, at) = buckets.entry(task.to_string()).or_insert((BURST, now));
        let refilled = now.duration_since(*at).as_secs_f64() / REFILL_EVERY.as_secs_f64();
        *tokens = (*tokens + refilled).min(BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_one_per_refill_period_per_task() {
        let budget = EventBudget::default();
        let start = Instant::now();
        let allowed = (0..40).filter(|_| budget.allow("farm/a", start)).count();
        assert_eq!(allowed, 25);
        assert!(
            budget.allow("farm/b", start),
            "tasks have budgets of their own"
        );
        assert!(!budget.allow("farm/a", start + REFILL_EVERY / 2));
        assert!(budget.allow("farm/a", start + REFILL_EVERY));
        assert!(!budget.allow("farm/a", start + REFILL_EVERY));
    }
}
