//! The `receivers`, `providers` and `alerts` sections: Flux's notification-controller objects
//! (Receiver, Provider, Alert) as config. Their whole life in the config layer is here, keys,
//! shapes and value rules, so that it merges apart from the configuration and kustomization
//! fields; `schema.rs` and `validate/` only call [`decode`] and [`validate`]. [`model`] holds
//! the validated types, [`decode`] the keys and shapes, [`validate`] the value rules.
//!
//! Decisions:
//! - A receiver's secret is read once, when `gitopsd run` starts: its hook path is derived
//!   from it (Flux's `/hook/sha256(token+name+namespace)`), and a path that moved under a
//!   running git host's webhook would silently break it. Rotating it is a restart.
//! - A provider's `address` is a secret too (Slack's and Teams' webhook URLs embed their
//!   token), so it may come from a file and is never logged; messages name keys only.
//! - Alerts filter as Flux's Alert: `eventSeverity` (`info` takes both), `eventSources` whose
//!   `kind`, `name` and `namespace` may use `*` wildcards, then `inclusionList` and
//!   `exclusionList` regexes on the message. Regexes are compiled here, so a bad one is a
//!   `file:line:col` problem rather than a runtime surprise.
//! - This module names no other part of `config`: the validator hands it what it needs
//!   ([`Context`]), so that the config's submodules stay a tree.

pub mod decode;
pub mod model;
pub mod validate;

pub use decode::{decode, RawEvents};
pub use model::*;
pub use validate::{validate, Context};

#[cfg(test)]
mod tests;
