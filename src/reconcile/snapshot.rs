//! Handing a fetched [`Snapshot`] to the artifact store.
//!
//! This is where the two layers meet, so that neither knows the other: a source hands back a
//! snapshot and never sees the store, and the store packs any [`Tree`] under the rules it is
//! given and never sees a source. What is decided here is which tree and which exclusions a
//! kind of snapshot calls for.
//!
//! [`Tree`]: crate::artifact::tree::Tree

use crate::artifact::ignore::{self, IgnoreError, IgnoreRules};
use crate::artifact::pack::PackError;
use crate::artifact::store::{ArtifactStore, StoreError};
use crate::artifact::tree::DirTree;
use crate::artifact::Artifact;
use crate::source::git::tree::{CommitTree, OpenError};
use crate::source::Snapshot;
use crate::vocab::Revision;

/// Why a snapshot could not become an artifact. `name` is the source's.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot itself is gone or unreadable (a scratch directory, a commit).
    #[error(transparent)]
    Unreadable(#[from] PackError),
    #[error(transparent)]
    Commit(#[from] OpenError),
    #[error("ignore rules of {name}: {source}")]
    Rules {
        name: String,
        #[source]
        source: IgnoreError,
    },
    /// Reading a commit's `.sourceignore` files failed for another reason than a crafted tree.
    #[error("ignore rules of {name}: {source}")]
    ReadRules {
        name: String,
        #[source]
        source: PackError,
    },
    #[error("cannot store artifact for {name}: {source}")]
    Store {
        name: String,
        #[source]
        source: StoreError,
    },
    /// A crafted tree, found while reading its `.sourceignore` files.
    #[error("cannot store artifact for {name}: {source}")]
    UnsafeTree {
        name: String,
        #[source]
        source: PackError,
    },
}

/// Pack `snapshot` into `store` as `<kind>/<namespace>/<name>/<revision digest>.tar.gz`,
/// applying the exclusions this kind of snapshot calls for; `ignore` is the source's field.
pub fn store(
    store: &ArtifactStore,
    snapshot: &Snapshot,
    kind: &str,
    namespace: &str,
    name: &str,
    revision: &Revision,
    ignore: Option<&str>,
) -> Result<Artifact, SnapshotError> {
    let rules_failed = |source| SnapshotError::Rules {
        name: name.to_string(),
        source,
    };
    let stored = match snapshot {
        Snapshot::Dir(dir) => {
            // The object-store sources applied their exclusions to the keys while listing (they
            // are part of the revision); only the always-excluded list is left.
            let rules = IgnoreRules::for_bucket(None, None).map_err(rules_failed)?;
            let tree = DirTree::new(dir)?;
            store.store(kind, namespace, name, revision, tree, &rules)
        }
        Snapshot::GitCommit { repo, commit } => {
            let mut tree = CommitTree::open(repo, commit)?;
            // Reading the `.sourceignore` files walks every tree of the commit first, so
            // it is where a crafted tree is refused: say so, not "ignore rules".
            let found = ignore::source_ignores(&mut tree).map_err(|source| match source {
                PackError::UnsafeName { .. } => SnapshotError::UnsafeTree {
                    name: name.to_string(),
                    source,
                },
                source => SnapshotError::ReadRules {
                    name: name.to_string(),
                    source,
                },
            })?;
            let rules = IgnoreRules::for_git_layers(found, ignore).map_err(rules_failed)?;
            store.store(kind, namespace, name, revision, tree, &rules)
        }
    };
    stored.map_err(|source| SnapshotError::Store {
        name: name.to_string(),
        source,
    })
}
