//! Fault injection for the crash tests: the operator kills itself (abort, as SIGKILL or an OOM
//! kill would) right before or right after an effect it applies, so a test can prove a restarted
//! operator neither loses nor repeats anything.
//!
//! Two ways to choose where:
//!
//! - `DAMOCLES_OPERATOR_CRASH=before-submit:SubmitProof` (or `after-submit:<Method>`): one point,
//!   on every start.
//! - `DAMOCLES_OPERATOR_CRASH_SCHEDULE=<file>`: a crash schedule. Every point is named
//!   `<before|after> <effect> <plan>/<state>`; the file lists the points already hit, one a line.
//!   The operator dies at the first point not yet in the file, after appending it (synced, so
//!   the next start skips it). Restarted after each death, the operator goes one point further
//!   each time, until a run meets no new point: every point on the way was then hit once.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::api::State;
use crate::controller::hooks::{EffectHook, EffectPoint};
use crate::manager::Method;
use crate::plan::PlanKind;

pub const POINT_ENV: &str = "DAMOCLES_OPERATOR_CRASH";
pub const SCHEDULE_ENV: &str = "DAMOCLES_OPERATOR_CRASH_SCHEDULE";

/// Dies at `point:method` when DAMOCLES_OPERATOR_CRASH names it.
pub fn submission(point: &str, method: Method) {
    if std::env::var(POINT_ENV).ok().as_deref() == Some(&format!("{point}:{method}")) {
        tracing::warn!("{POINT_ENV}: dying at {point}:{method}");
        std::process::abort();
    }
}

/// Before or after the effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    Before,
    After,
}

/// The crash schedule's file and the points it lists.
struct Schedule {
    file: PathBuf,
    hit: Mutex<HashSet<String>>,
}

fn schedule() -> Option<&'static Schedule> {
    static SCHEDULE: OnceLock<Option<Schedule>> = OnceLock::new();
    SCHEDULE
        .get_or_init(|| {
            let file = PathBuf::from(std::env::var_os(SCHEDULE_ENV)?);
            let listed = std::fs::read_to_string(&file).unwrap_or_default();
            let hit = listed.lines().map(str::to_string).collect();
            Some(Schedule {
                file,
                hit: Mutex::new(hit),
            })
        })
        .as_ref()
}

/// The name of a point: `before status sealer/PC1Done`.
pub fn point_name(when: When, effect: &str, plan: PlanKind, state: Option<State>) -> String {
    let when = match when {
        When::Before => "before",
        When::After => "after",
    };
    let state = state.map_or_else(|| "-".to_string(), |s| s.to_string());
    format!("{when} {effect} {plan}/{state}")
}

/// A point of the crash schedule: dies here if the schedule has not hit it yet.
pub fn point(when: When, effect: &str, plan: PlanKind, state: Option<State>) {
    let Some(schedule) = schedule() else {
        return;
    };
    let name = point_name(when, effect, plan, state);
    // Held until the process is gone: no other thread passes a point meanwhile.
    let mut hit = schedule.hit.lock().unwrap_or_else(|e| e.into_inner());
    if hit.contains(&name) {
        return;
    }
    let recorded = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&schedule.file)
        .and_then(|mut file| {
            file.write_all(format!("{name}\n").as_bytes())?;
            file.sync_all()
        });
    if let Err(err) = recorded {
        // A schedule that cannot advance would kill every start at the same point.
        tracing::error!(
            "{SCHEDULE_ENV}: cannot record {name} in {}: {err}",
            schedule.file.display()
        );
        hit.insert(name);
        return;
    }
    tracing::warn!("{SCHEDULE_ENV}: dying {name}");
    std::process::abort();
}

/// The operator's hook in a dev build: both ways of choosing where to die. A submission's call
/// is also a `before-submit`/`after-submit` point of DAMOCLES_OPERATOR_CRASH.
pub struct CrashHook;

impl EffectHook for CrashHook {
    fn at(&self, at: &EffectPoint<'_>) {
        let submitted = at
            .effect
            .strip_prefix("call:")
            .and_then(|method| method.parse::<Method>().ok())
            .filter(|method| method.submission().is_some());
        if let Some(method) = submitted {
            submission(
                if at.after {
                    "after-submit"
                } else {
                    "before-submit"
                },
                method,
            );
        }
        let when = if at.after { When::After } else { When::Before };
        point(when, at.effect, at.plan, at.state);
    }
}
