//! Artifacts: reproducible tar.gz snapshots of a revision, their store, and publishing.

pub mod pack;
pub mod publish;
pub mod store;

use crate::source::Revision;
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
