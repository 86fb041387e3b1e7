//! The embedded dev manager: damocles-manager's API over a simulated chain, for tests, the demo and
//! small setups. [`chain`] holds its rules; the server around them is next.

mod admin;
pub mod chain;
mod dispatch;
mod journal;
pub mod lifecycle;
pub mod market;
pub mod server;
mod verify;

pub use server::{DevManagerConfig, Fault, start};
