//! Sources: fetch something remote into a local [`Snapshot`].
//!
//! Entry point: [`from_settings`] builds the [`Source`] a configuration names from its
//! [`SourceSettings`]; [`Source::fetch`] returns a [`FetchOutcome`]. A source knows nothing about
//! the artifact store; it hands back a snapshot holding exactly what the revision contains
//! (before exclusions): a directory of downloaded objects, or a commit in the git cache
//! repository, which the reconciler gives to the store. From `artifact` it uses only the
//! contract of what gets packed (`artifact::tree::Tree`, which `git::tree` implements) and
//! the ignore rules an object store applies while listing.
//!
//! Each kind owns its settings and their rules in its `config` module (`git::config`,
//! `bucket::config`, `azblob::config`; what they share in [`config`]), so the config loader
//! never reaches into a kind's runtime code.

pub mod azblob;
pub mod bucket;
pub(crate) mod config;
pub mod git;
pub mod objects;
pub mod proxy;

use std::path::PathBuf;
use std::time::Duration;

pub use crate::vocab::{Revision, SourceKind};

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

/// What a fetch produced, for the reconciler to hand to the artifact store (which this layer
/// never sees).
#[derive(Debug)]
pub enum Snapshot {
    /// Files written into the scratch directory (object-store sources). Their exclusions were
    /// applied to the keys while listing, as they are part of the revision.
    Dir(PathBuf),
    /// A commit in the source's git cache repository: packed straight from its objects, with
    /// the `.sourceignore` files it holds and the source's `ignore` field.
    GitCommit { repo: PathBuf, commit: String },
}

/// Why a fetch failed. Messages are one sentence naming the URL and ref, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Git(#[from] git::GitError),
    /// A `bucket` or `azblob` source: one sentence naming the endpoint and bucket or
    /// container, with a kind (see [`objects::ErrorKind`]).
    #[error(transparent)]
    Objects(#[from] objects::ObjectError),
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
    /// as given (see [`git::Kind::retryable`] and [`objects::ObjectError::retryable`]).
    pub fn retryable(&self) -> bool {
        match self {
            SourceError::Git(e) => e.retryable(),
            SourceError::Objects(e) => e.retryable(),
            SourceError::Timeout { .. } | SourceError::Io { .. } => true,
        }
    }

    /// The same error with `url`'s credentials taken out of its message, wherever a transport
    /// or library quoted them (see [`git::refs::redact_text`]).
    pub fn redact(self, url: &str) -> SourceError {
        let clean = |text: String| git::refs::redact_text(&text, url);
        match self {
            SourceError::Git(e) => SourceError::Git(e.redact(url)),
            // Validation refuses credentials in a bucket or azblob endpoint, and the sentences
            // leave request URLs out: there is nothing to take out.
            SourceError::Objects(e) => SourceError::Objects(e),
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

/// A blocking source (the git backends: libgit2, and gix's blocking transports). The
/// reconciler runs it on a `spawn_blocking` thread, through [`AnySource::fetch`].
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

/// Every kind of source, by how it runs: git blocks a thread, the object stores are async
/// clients awaited on the runtime (a thread blocked on them would only wait).
pub enum AnySource {
    /// Boxed: it is the largest by far, and built once per sync.
    Git(Box<git::GitSource>),
    Bucket(bucket::BucketSource),
    AzureBlob(azblob::AzureBlobSource),
}

impl AnySource {
    /// Fetch unless the remote still matches `previous` (see [`Source::fetch`]). Git runs on a
    /// `spawn_blocking` thread, which keeps going until it notices `interrupt`; an object
    /// store's fetch stops at its next await once `interrupt` is set.
    pub async fn fetch(
        self,
        previous: Option<Revision>,
        scratch: PathBuf,
        interrupt: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<FetchOutcome, SourceError> {
        match self {
            AnySource::Git(source) => {
                let job = tokio::task::spawn_blocking(move || {
                    source.fetch(previous.as_ref(), scratch, &interrupt)
                });
                match job.await {
                    Ok(result) => result,
                    // A panic is the caller's, as it would be had the fetch run inline.
                    Err(join) => std::panic::resume_unwind(join.into_panic()),
                }
            }
            AnySource::Bucket(source) => {
                objects::fetch(&source, previous.as_ref(), scratch, &interrupt).await
            }
            AnySource::AzureBlob(source) => {
                objects::fetch(&source, previous.as_ref(), scratch, &interrupt).await
            }
        }
    }
}

/// Build the source a configuration names. `cache_root` is `<stateDir>/git`.
pub fn from_settings(
    namespace: &str,
    name: &str,
    settings: &SourceSettings,
    cache_root: &std::path::Path,
) -> AnySource {
    let id = format!("{namespace}/{name}");
    let url = settings.url.clone();
    match &settings.spec {
        SourceSpec::Git(git) => AnySource::Git(Box::new(git::GitSource {
            id,
            url,
            reference: git.reference.clone(),
            implementation: git.implementation,
            cache_dir: git::cache::dir(cache_root, namespace, name),
            auth: git::auth::SourceAuth {
                settings: git.auth.clone(),
                generated_key: Some(git::auth::generated_key_path(cache_root, namespace, name)),
            },
        })),
        SourceSpec::Bucket(bucket) => AnySource::Bucket(bucket::BucketSource {
            id,
            endpoint: url,
            settings: bucket.clone(),
            ignore: settings.ignore.clone(),
        }),
        SourceSpec::AzureBlob(azure) => AnySource::AzureBlob(azblob::AzureBlobSource {
            id,
            endpoint: url,
            settings: azure.clone(),
            ignore: settings.ignore.clone(),
        }),
    }
}

/// A source: what every kind has, and its kind's own settings ([`SourceSpec`]), so that a
/// git ref on a bucket, or a bucket without its name, cannot be built.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    /// Checked by the kind: a git URL (local paths made `file://`), or an endpoint.
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    /// Upper bound of the exponential backoff after failures.
    pub retry_interval: Duration,
    /// Extra gitignore-style patterns (Flux's `spec.ignore`).
    pub ignore: Option<String>,
    pub suspend: bool,
    pub publish: Option<crate::artifact::publish::Publish>,
    pub spec: SourceSpec,
}

impl SourceSettings {
    pub fn kind(&self) -> SourceKind {
        self.spec.kind()
    }

    /// A `git` source's own settings; `None` for other kinds.
    pub fn git(&self) -> Option<&git::config::GitSettings> {
        match &self.spec {
            SourceSpec::Git(git) => Some(git),
            _ => None,
        }
    }
}

/// Each kind's own settings, owned (and checked) by the kind's `config` module.
#[derive(Debug, Clone)]
pub enum SourceSpec {
    Git(git::config::GitSettings),
    Bucket(bucket::config::BucketSettings),
    AzureBlob(azblob::config::AzureBlobSettings),
}

impl SourceSpec {
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceSpec::Git(_) => SourceKind::Git,
            SourceSpec::Bucket(_) => SourceKind::Bucket,
            SourceSpec::AzureBlob(_) => SourceKind::AzureBlob,
        }
    }
}
