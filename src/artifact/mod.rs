//! Artifacts: reproducible tar.gz snapshots of a revision, their store, and publishing.
//!
//! Entry points: [`store::ArtifactStore`] (pack a [`tree::Tree`] under the exclusions of
//! [`ignore::IgnoreRules`], keep, collect), [`publish::publish`] and [`extract::extract`].
//! This layer knows nothing of where a tree came from: sources implement [`tree::Tree`] and
//! use [`ignore`] to filter what they list, and the reconciler hands a fetched tree to the
//! store. It imports only `atomic` and `vocab`.

mod error;
pub mod extract;
pub mod ignore;
pub mod pack;
pub(crate) mod publish;
pub mod store;
pub(crate) mod tree;

use crate::vocab::Revision;
use std::path::PathBuf;

/// One stored artifact.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Absolute path of the tar.gz file.
    pub path: PathBuf,
    /// Path under the server's `/artifacts/` route: `<kind>/<namespace>/<name>/<file>`.
    pub url_path: String,
    pub revision: Revision,
    /// `sha256:<hex>` over the compressed file.
    pub digest: String,
    pub size: u64,
    /// RFC 3339.
    pub last_update: String,
}
