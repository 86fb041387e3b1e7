//! Status helpers every controller and the kubectl plugin use: timestamps, conditions, the
//! phase, and the bound on the texts a status keeps.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::condition::{PAUSED, PROGRESSING, READY};
use crate::api::{Phase, SealingTaskStatus};
pub use crate::text::bounded;

/// A status timestamp for `at` (seconds since the epoch).
pub fn time_at(at: i64) -> Time {
    Time(Timestamp::from_second(at).expect("a valid time"))
}

/// The most of a message the task keeps in its status (phase message, conditions, lastError):
/// error texts can come from the manager or a step, and the status must stay a small object.
pub const STATUS_TEXT_LIMIT: usize = 4096;

/// Sets a condition and returns it; its transition time moves only when its status changes.
pub fn set_condition<'a>(
    status: &'a mut SealingTaskStatus,
    type_: &str,
    value: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> &'a mut Condition {
    let message = &bounded(message, STATUS_TEXT_LIMIT);
    let conditions = &mut status.conditions;
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(index) => index,
        None => {
            conditions.push(Condition {
                type_: type_.into(),
                status: value.into(),
                reason: reason.into(),
                message: message.into(),
                last_transition_time: time_at(now),
                observed_generation: None,
            });
            return conditions.last_mut().expect("just pushed");
        }
    };
    let existing = &mut conditions[index];
    if existing.status != value {
        existing.status = value.into();
        existing.last_transition_time = time_at(now);
    }
    existing.reason = reason.into();
    existing.message = message.into();
    existing
}

/// Whether a condition of this type is True.
pub fn condition_true(status: &SealingTaskStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Sets the phase and message, and the Ready, Progressing and Paused conditions that follow.
pub fn set_phase(
    status: &mut SealingTaskStatus,
    phase: Phase,
    message: impl Into<String>,
    now: i64,
) {
    let message = bounded(&message.into(), STATUS_TEXT_LIMIT);
    let (ready, progressing, paused) = match phase {
        Phase::Finished => ("True", "False", "False"),
        Phase::Paused => ("False", "False", "True"),
        Phase::Aborted => ("False", "False", "False"),
        _ => ("False", "True", "False"),
    };
    let reason = phase.to_string();
    set_condition(status, READY, ready, &reason, &message, now);
    set_condition(status, PROGRESSING, progressing, &reason, &message, now);
    set_condition(status, PAUSED, paused, &reason, &message, now);
    status.phase = Some(phase);
    status.message = Some(message);
}
