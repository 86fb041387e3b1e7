//! The steps, by what they work on. [`super::run`] dispatches to them.

pub(super) mod files;
pub(super) mod piece;
pub(super) mod porep;
pub(super) mod snap;
