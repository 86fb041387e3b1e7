//! Test stand-ins, built only with the `dev` feature (on by default; the operator image is built
//! without it): [`node`], a kubelet stand-in that runs pods as local processes, and [`manager`],
//! damocles-manager's API over a simulated chain with fault injection. Also the crash hook that
//! the crash tests kill the operator with ([`crash::CrashHook`], set in the operator's
//! settings by `damocles-operator run` in a dev build).

#[cfg(feature = "dev")]
pub mod manager;
#[cfg(feature = "dev")]
pub mod node;

#[cfg(feature = "dev")]
pub mod crash;
/// The fuzz targets' bodies (fuzz/), also run over their seed corpus by `cargo test`.
#[cfg(feature = "dev")]
pub mod fuzzing;
#[cfg(feature = "dev")]
pub mod instant;
