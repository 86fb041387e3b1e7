//! Test stand-ins, built only with the `dev` feature (on by default; the operator image is built
//! without it): [`node`], a kubelet stand-in that runs pods as local processes, and [`manager`],
//! damocles-manager's API over a simulated chain with fault injection. Also the crash hook that
//! the crash tests kill the operator with.

#[cfg(feature = "dev")]
pub mod manager;
#[cfg(feature = "dev")]
pub mod node;

#[cfg(feature = "dev")]
pub mod crash;
#[cfg(feature = "dev")]
pub mod instant;

/// Test hook: `DAMOCLES_OPERATOR_CRASH=before-submit:SubmitProof` (or `after-submit:...`) kills
/// the operator at that point, as a crash or an OOM kill would. Compiled out without the `dev`
/// feature. See [`crash`].
pub fn crash_point(point: &str, method: crate::manager::Method) {
    #[cfg(feature = "dev")]
    crash::submission(point, method);
    #[cfg(not(feature = "dev"))]
    let _ = (point, method);
}

/// A point of the crash schedule (`DAMOCLES_OPERATOR_CRASH_SCHEDULE`, see [`crash`]), right
/// before (`after` false) or right after `effect`. Compiled out without the `dev` feature.
pub fn crash_schedule_point(
    after: bool,
    effect: &str,
    plan: crate::plan::PlanKind,
    state: Option<crate::api::State>,
) {
    #[cfg(feature = "dev")]
    crash::point(
        if after {
            crash::When::After
        } else {
            crash::When::Before
        },
        effect,
        plan,
        state,
    );
    #[cfg(not(feature = "dev"))]
    let _ = (after, effect, plan, state);
}
