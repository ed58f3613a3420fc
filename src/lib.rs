//! gitopsd: a standalone GitOps daemon.
//!
//! Data flows one way: `config` → `reconcile` (scheduler) → `source` (fetch into a snapshot
//! directory) → `artifact` (pack, store, publish) → `render` (kustomize) → `apply` (targets)
//! → `state` (statuses) → `api` (HTTP). No stage reaches back into an earlier one.

pub mod api;
pub mod apply;
pub mod artifact;
pub mod atomic;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod escape;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod state;
pub mod syntax;
pub mod vocab;
