//! The points where the operator stands right before or right after an effect outside itself (a
//! status write, a pod created or deleted, a manager call): a test build may stop it there, to
//! prove that a restarted operator neither loses nor repeats anything (the crash schedule,
//! `src/dev/crash.rs`). The product passes them without a hook; the dev build fills one in.

use std::fmt;
use std::sync::Arc;

use crate::api::State;
use crate::plan::PlanKind;

/// One point: before (`after` false) or after `effect`, for a task of `plan` in `state`.
/// Effects are named as the crash schedule lists them: `status`, `pod-create`, `pod-delete`,
/// `pods-delete`, `task-delete`, `patch:<kind>`, `call:<Method>`, `finalizer-add`,
/// `finalizer-remove`.
#[derive(Clone, Copy, Debug)]
pub struct EffectPoint<'a> {
    pub after: bool,
    pub effect: &'a str,
    pub plan: PlanKind,
    pub state: Option<State>,
}

/// What a test build does at each point.
pub trait EffectHook: Send + Sync {
    fn at(&self, point: &EffectPoint<'_>);
}

/// The hook the operator runs with, if any.
#[derive(Clone, Default)]
pub struct Hooks(Option<Arc<dyn EffectHook>>);

impl Hooks {
    pub fn new(hook: Arc<dyn EffectHook>) -> Self {
        Self(Some(hook))
    }

    pub fn at(&self, after: bool, effect: &str, plan: PlanKind, state: Option<State>) {
        if let Some(hook) = &self.0 {
            hook.at(&EffectPoint {
                after,
                effect,
                plan,
                state,
            });
        }
    }
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Hooks(set)"
        } else {
            "Hooks(none)"
        })
    }
}
