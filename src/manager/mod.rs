//! The chain side: damocles-manager's JSON-RPC API.
//!
//! [`wire`] holds the exact wire format (method names, PascalCase fields, byte encodings, result
//! codes) in one place, written from damocles-manager's Go types; see docs/manager-wire.md for the
//! sources. [`call`] names each method once, with its params and its answer; the client (and the
//! dev manager, [`crate::dev::manager`]) build on both.

pub mod call;
pub mod client;
pub mod wire;

pub use call::{Call, Manager, Method, Reply};
pub use client::{ManagerClient, ManagerError, PollOutcome, SubmitOutcome};
