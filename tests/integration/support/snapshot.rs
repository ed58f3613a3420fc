//! What a fetch produced, as files: git sources hand back a commit in their cache repository,
//! so tests that look at content pack it as the daemon would and extract the artifact.

use gitopsd::artifact::extract::extract;
use gitopsd::artifact::store::ArtifactStore;
use gitopsd::source::{Revision, Snapshot};
use std::path::PathBuf;
use tempfile::TempDir;

/// The snapshot's files (after the default exclusions), in a temp dir that lives as long as
/// the returned guard.
pub fn unpack(snapshot: &Snapshot, revision: &Revision) -> (TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("gitopsd-unpack-")
        .tempdir()
        .expect("create temp dir");
    let store = ArtifactStore::new(dir.path().join("artifacts"));
    let artifact = gitopsd::reconcile::snapshot::store(
        &store, snapshot, "git", "test", "unpack", revision, None,
    )
    .expect("pack the snapshot");
    let files = dir.path().join("files");
    extract(&artifact.path, &artifact.digest, &files).expect("extract the artifact");
    (dir, files)
}
