//! The chain side: damocles-manager's JSON-RPC API.
//!
//! [`wire`] holds the exact wire format (method names, PascalCase fields, byte encodings, result
//! codes) in one place, written from damocles-manager's Go types; see docs/manager-wire.md for the
//! sources. The client and the embedded dev manager build on it.

pub mod client;
pub mod dev;
pub mod wire;

pub use client::{ManagerClient, ManagerError, PollOutcome, SubmitOutcome};
