//! gitopsd: a standalone GitOps daemon.
//!
//! Data flows one way: the config names sources, the reconciler fetches each one into a
//! snapshot, the artifact store packs it, the renderer builds its kustomizations, targets apply
//! them, and the state and the API report on it all. The code depends the same way, in
//! layers: a module names only modules *below* it in this list (bottom first, each top-level
//! module once; tests/integration/layers.rs checks every `crate::` and `super::` path
//! against this list):
//!
//! 1. `error` — the error-chain helper.
//! 2. `escape` — control characters made visible for logs and messages.
//! 3. `atomic` — atomic writes, private files and directories.
//! 4. `vocab` — the values layers pass between them (`Revision`, `SourceKind`, secret values,
//!    the cluster connection). Imports nothing from the crate.
//! 5. `syntax` — the config file's syntax, shared by every section's owner: YAML with
//!    positions, the key and shape checks of one mapping, Go durations, shared value rules.
//! 6. `cluster` — reading Secrets through the Kubernetes API.
//! 7. `artifact` — what is packed (the `Tree` contract, ignore rules), packing, the store,
//!    extraction, publishing. Knows no source: sources implement its `Tree` and use its
//!    ignore rules, and the reconciler hands it their trees.
//! 8. `source` — fetching: git, S3-compatible buckets, Azure Blob; each kind owns its settings
//!    and their rules (`source::<kind>::config`). Never sees the artifact store.
//! 9. `render` — sandboxed kustomize builds.
//! 10. `apply` — targets that receive rendered objects.
//! 11. `config` — the config file: reads it (`syntax`), dispatches each source to its kind's
//!     rules, and returns the validated `Settings` every layer above consumes.
//! 12. `state` — the state directory and the statuses kept in it.
//! 13. `events` — webhook receivers' verification (and, to come, alerts).
//! 14. `reconcile` — the scheduler and the reconcilers that drive sources, artifacts, renders
//!     and targets, and record their outcome.
//! 15. `api` — the HTTP server: artifacts, status, metrics, triggers.
//! 16. `cli` — the command line, the only edge that formats errors for people.
//!
//! The modules below `artifact` are `pub(crate)`: nothing outside the crate needs them, and
//! what the public layers expose of them is re-exported there (`source::Revision`,
//! `config::SecretValue`, ...).

pub mod api;
pub mod apply;
pub mod artifact;
pub(crate) mod atomic;
pub mod cli;
pub(crate) mod cluster;
pub mod config;
pub(crate) mod error;
pub(crate) mod escape;
pub mod events;
pub mod reconcile;
pub mod render;
pub mod source;
pub mod state;
pub(crate) mod syntax;
pub(crate) mod vocab;
