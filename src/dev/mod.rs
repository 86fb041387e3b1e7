//! Test stand-ins, built only with the `dev` feature (on by default; the operator image is built
//! without it): [`node`], a kubelet stand-in that runs pods as local processes, and [`manager`],
//! damocles-manager's API over a simulated chain with fault injection. Also the crash hook that
//! the crash tests kill the operator with.

#[cfg(feature = "dev")]
pub mod manager;
#[cfg(feature = "dev")]
pub mod node;

/// Test hook: `DAMOCLES_OPERATOR_CRASH=before-submit:SubmitProof` (or `after-submit:...`) kills
/// the operator at that point, as a crash or an OOM kill would, so tests can prove a restart
/// neither loses nor repeats a submission. Compiled out without the `dev` feature.
pub fn crash_point(point: &str, method: crate::manager::Method) {
    #[cfg(feature = "dev")]
    if std::env::var("DAMOCLES_OPERATOR_CRASH").ok().as_deref()
        == Some(&format!("{point}:{method}"))
    {
        tracing::warn!("DAMOCLES_OPERATOR_CRASH: dying at {point}:{method}");
        std::process::abort();
    }
    #[cfg(not(feature = "dev"))]
    let _ = (point, method);
}
