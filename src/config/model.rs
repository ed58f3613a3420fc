//! The validated configuration that the rest of gitopsd consumes.
//!
//! `schema.rs` mirrors the YAML as written (strings, options); `validate.rs` turns it into these
//! types, so that nothing downstream ever parses a duration or picks a ref precedence again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Azure's default for interval, timeout and retryInterval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct Settings {
    /// Absolute; relative paths in the file are resolved against the config file's directory.
    pub state_dir: PathBuf,
    pub listen: SocketAddr,
    /// How many sources may fetch at the same time.
    pub max_concurrent_fetches: usize,
    pub configurations: Vec<Configuration>,
}

/// Azure's unit: one source plus N kustomizations.
#[derive(Debug, Clone)]
pub struct Configuration {
    pub name: String,
    pub namespace: String,
    pub suspend: bool,
    pub source: SourceSettings,
    pub kustomizations: Vec<Kustomization>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Git,
}

impl SourceKind {
    /// The directory name under `<stateDir>/artifacts/`.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Git => "git",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitImplementation {
    Auto,
    Gix,
    Git2,
}

/// The git ref to follow, after Flux's precedence (commit > name > tag > semver > branch)
/// has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    /// No ref given: the branch the remote's HEAD points at.
    RemoteHead,
    Branch(String),
    Tag(String),
    /// A Masterminds range, already checked to parse.
    Semver(String),
    /// A full ref name such as `refs/pull/1/head`.
    Name(String),
    Commit {
        sha: String,
        branch: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub kind: SourceKind,
    pub url: String,
    pub reference: GitReference,
    pub interval: Duration,
    pub timeout: Duration,
    /// Upper bound of the exponential backoff after failures.
    pub retry_interval: Duration,
    pub git_implementation: GitImplementation,
    /// Extra gitignore-style patterns (Flux's `spec.ignore`).
    pub ignore: Option<String>,
    pub suspend: bool,
    pub publish: Option<Publish>,
}

/// Publish the newest revision's files as `<directory>/<link>` → `.revisions/<commit>`.
#[derive(Debug, Clone)]
pub struct Publish {
    pub directory: PathBuf,
    pub link: String,
}

#[derive(Debug, Clone)]
pub struct Kustomization {
    pub name: String,
    /// Relative to the artifact root, normalised, never escaping it (checked at load).
    pub path: String,
    pub prune: bool,
    pub depends_on: Vec<String>,
    pub interval: Duration,
    pub retry_interval: Duration,
    pub timeout: Duration,
    pub wait: bool,
    pub force: bool,
    pub suspend: bool,
    pub target: Target,
}

#[derive(Debug, Clone)]
pub enum Target {
    /// Write the rendered multi-document YAML to `<directory>/<kustomization name>.yaml`.
    Directory(PathBuf),
    /// Render only; the output is kept under the state dir (`<stateDir>/rendered/...`).
    None,
}
