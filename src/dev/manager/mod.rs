//! The embedded dev manager: damocles-manager's API over a simulated chain, for tests, the demo and
//! small setups. [`chain`] holds its rules; the server around them is next.

pub mod chain;
pub mod lifecycle;
pub mod server;

pub use server::{DevManagerConfig, Fault, start};
