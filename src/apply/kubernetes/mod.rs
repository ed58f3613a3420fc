//! The Kubernetes target's building blocks: the order objects are applied and pruned in
//! ([`stages`]) and when an applied object counts as healthy ([`health`]). Both are pure
//! functions of object kinds and JSON, unit-tested here; the target that talks to the API
//! server builds on them.

pub mod health;
pub mod stages;
