//! Sources: fetch something remote into a local [`Snapshot`].
//!
//! A source knows nothing about artifacts; it hands back a snapshot holding exactly what the
//! revision contains (before exclusions): a directory of downloaded objects, or a commit in
//! the git cache repository. The `artifact` module packs it.

pub mod azblob;
pub mod bucket;
pub mod git;
pub mod ignore;
pub mod objects;
pub mod proxy;

use std::fmt;
use std::path::PathBuf;

/// What was fetched, in Flux's string form: `main@sha1:<hex>`, `v1.2.3@sha1:<hex>`,
/// `refs/pull/1/head@sha1:<hex>`, `sha1:<hex>`, or `sha256:<hex>` for buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Revision(pub String);

impl Revision {
    /// `<name>@sha1:<hex>`, or `sha1:<hex>` when there is no name.
    pub fn git(name: Option<&str>, commit: &str) -> Self {
        match name {
            Some(n) => Revision(format!("{n}@sha1:{commit}")),
            None => Revision(format!("sha1:{commit}")),
        }
    }

    /// The digest part after the last `:` (a commit sha for git, a hex digest for buckets).
    pub fn digest_hex(&self) -> &str {
        self.0.rsplit(':').next().unwrap_or(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The result of one fetch.
#[derive(Debug)]
pub enum FetchOutcome {
    /// The remote still points at the previous revision; nothing was downloaded.
    Unchanged,
    /// A new revision.
    Fetched {
        revision: Revision,
        snapshot: Snapshot,
    },
}

/// What a fetch produced, for the artifact store to pack.
#[derive(Debug)]
pub enum Snapshot {
    /// Files written into the scratch directory (object-store sources). Their exclusions were
    /// applied to the keys while listing, as they are part of the revision.
    Dir(PathBuf),
    /// A commit in the source's git cache repository: packed straight from its objects, with
    /// the `.sourceignore` files it holds and the source's `ignore` field.
    GitCommit { repo: PathBuf, commit: String },
}

impl Snapshot {
    /// Pack into `store` as `<kind>/<namespace>/<name>/<revision digest>.tar.gz`, applying
    /// the exclusions this kind of snapshot calls for; `ignore` is the source's field.
    pub fn store(
        &self,
        store: &crate::artifact::store::ArtifactStore,
        kind: &str,
        namespace: &str,
        name: &str,
        revision: &Revision,
        ignore: Option<&str>,
    ) -> Result<crate::artifact::Artifact, String> {
        use crate::artifact::pack::{DirTree, PackError};
        let rules_failed = |e: &dyn fmt::Display| format!("ignore rules of {name}: {e}");
        let stored = match self {
            Snapshot::Dir(dir) => {
                let rules =
                    ignore::IgnoreRules::for_bucket(None, None).map_err(|e| rules_failed(&e))?;
                let tree = DirTree::new(dir).map_err(|e| e.to_string())?;
                store.store(kind, namespace, name, revision, tree, &rules)
            }
            Snapshot::GitCommit { repo, commit } => {
                let mut tree =
                    git::tree::CommitTree::open(repo, commit).map_err(|e| e.to_string())?;
                // Reading the `.sourceignore` files walks every tree of the commit first, so
                // it is where a crafted tree is refused: say so, not "ignore rules".
                let found = tree.source_ignores().map_err(|e| match e {
                    PackError::UnsafeName { .. } => {
                        format!("cannot store artifact for {name}: {e}")
                    }
                    other => rules_failed(&other),
                })?;
                let rules = ignore::IgnoreRules::for_git_layers(found, ignore)
                    .map_err(|e| rules_failed(&e))?;
                store.store(kind, namespace, name, revision, tree, &rules)
            }
        };
        stored.map_err(|e| format!("cannot store artifact for {name}: {e}"))
    }
}

/// Why a fetch failed. Messages are one sentence naming the URL and ref, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// An `azblob` source: one sentence naming the endpoint and container.
    #[error("{0}")]
    Azure(String),
    /// A `bucket` (S3-compatible) source: one sentence naming the endpoint and bucket.
    #[error("{0}")]
    Bucket(String),
    #[error("fetch of {url} timed out after {after:?}")]
    Timeout {
        url: String,
        after: std::time::Duration,
    },
    #[error("local I/O error while fetching {url}: {source}")]
    Io {
        url: String,
        #[source]
        source: std::io::Error,
    },
}

impl SourceError {
    /// Whether fetching again unchanged may succeed: false only for settings that cannot work
    /// as given (see [`git::Kind::retryable`]); the object-store sources do not tell yet.
    pub fn retryable(&self) -> bool {
        match self {
            SourceError::Git(e) => e.retryable(),
            _ => true,
        }
    }

    /// The same error with `url`'s credentials taken out of its message, wherever a transport
    /// or library quoted them (see [`git::refs::redact_text`]).
    pub fn redact(self, url: &str) -> SourceError {
        let clean = |text: String| git::refs::redact_text(&text, url);
        match self {
            SourceError::Git(e) => SourceError::Git(e.redact(url)),
            SourceError::Azure(m) => SourceError::Azure(clean(m)),
            SourceError::Bucket(m) => SourceError::Bucket(clean(m)),
            SourceError::Timeout { url: u, after } => SourceError::Timeout {
                url: clean(u),
                after,
            },
            SourceError::Io { url: u, source } => SourceError::Io {
                url: clean(u),
                source: std::io::Error::new(source.kind(), clean(source.to_string())),
            },
        }
    }
}

/// A fetchable source. Implementations are blocking; the scheduler runs them on
/// `spawn_blocking` threads under a concurrency bound.
pub trait Source: Send + Sync {
    /// Fetch unless the remote still matches `previous`; `scratch` is an empty directory the
    /// implementation may write a [`Snapshot::Dir`] into (git sources need none).
    /// `interrupt` is set when the fetch timed out or the daemon is stopping.
    fn fetch(
        &self,
        previous: Option<&Revision>,
        scratch: PathBuf,
        interrupt: &std::sync::atomic::AtomicBool,
    ) -> Result<FetchOutcome, SourceError>;
}

/// Build the source a configuration names. `cache_root` is `<stateDir>/git`.
pub fn from_settings(
    namespace: &str,
    name: &str,
    settings: &crate::config::SourceSettings,
    cache_root: &std::path::Path,
) -> Box<dyn Source> {
    match settings.kind {
        crate::config::SourceKind::Git => Box::new(git::GitSource {
            id: format!("{namespace}/{name}"),
            url: settings.url.clone(),
            reference: settings.reference.clone(),
            implementation: settings.git_implementation,
            cache_dir: git::cache::dir(cache_root, namespace, name),
            auth: git::auth::SourceAuth {
                settings: settings.git_auth.clone(),
                generated_key: Some(git::auth::generated_key_path(cache_root, namespace, name)),
            },
        }),
        crate::config::SourceKind::Bucket => Box::new(bucket::BucketSource {
            id: format!("{namespace}/{name}"),
            endpoint: settings.url.clone(),
            settings: settings
                .bucket
                .clone()
                .expect("validation sets bucket for bucket sources"),
            ignore: settings.ignore.clone(),
        }),
        crate::config::SourceKind::AzureBlob => Box::new(azblob::AzureBlobSource {
            id: format!("{namespace}/{name}"),
            endpoint: settings.url.clone(),
            settings: settings
                .azure_blob
                .clone()
                .expect("validation sets azure_blob for azblob sources"),
            ignore: settings.ignore.clone(),
        }),
    }
}
