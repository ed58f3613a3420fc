//! Git sources: ref resolution ([`refs`]), semver selection ([`semver`]), and the backends.
//!
//! Each source keeps a bare cache repository under `<stateDir>/git/<namespace>/<name>.git`.
//! Fetches are shallow (depth 1) into that cache, so a poll that finds a new commit downloads
//! only that commit's objects, and a poll that finds none downloads nothing: the remote's refs
//! are listed first and compared with the current revision.

pub mod auth;
pub mod cache;
pub mod cancel;
pub(crate) mod config;
pub mod error;
pub mod gitoxide;
pub mod known_hosts;
pub mod libgit2;
pub mod refs;
pub mod semver;
pub mod tree;

use super::{FetchOutcome, Revision, Snapshot, Source, SourceError};
pub use error::{GitError, Kind};

use self::config::{GitImplementation, GitReference};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
pub struct GitSource {
    /// `<namespace>/<name>`, for log lines.
    pub id: String,
    pub url: String,
    pub reference: GitReference,
    pub implementation: GitImplementation,
    pub cache_dir: PathBuf,
    /// Credentials, read again at every fetch.
    pub auth: auth::SourceAuth,
}

impl Source for GitSource {
    fn fetch(
        &self,
        previous: Option<&Revision>,
        // Unused: the snapshot is the commit in the cache repository.
        _scratch: PathBuf,
        interrupt: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError> {
        // Every message below names the URL redacted already; this also catches the URL or
        // its credentials wherever a transport quoted them in its own words.
        self.fetch_unredacted(previous, interrupt)
            .map_err(|e| e.redact(&self.url))
    }
}

impl GitSource {
    fn fetch_unredacted(
        &self,
        previous: Option<&Revision>,
        interrupt: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError> {
        let url = &self.url;
        // A commit never moves: if it is what we have, there is nothing to ask the remote.
        if let GitReference::Commit { sha, branch } = &self.reference {
            if previous == Some(&Revision::git(branch.as_deref(), sha)) {
                return Ok(FetchOutcome::Unchanged);
            }
        }
        let fail = |problem: error::Problem| GitError::new(url, problem).on(&self.reference);
        let credentials = self
            .auth
            .resolve(url)
            .map_err(|e| fail(error::Problem::Credentials(e)))?;
        let io = |e: std::io::Error| SourceError::Io {
            url: refs::redact_url(url),
            source: e,
        };
        let implementation = match self.backend() {
            // libgit2 cannot present a client certificate, nor send http:// through a proxy:
            // `auto` keeps such sources on gix.
            GitImplementation::Git2
                if self.implementation == GitImplementation::Auto
                    && (credentials.unsupported_by_libgit2().is_some()
                        || libgit2::unsupported_proxy(url).is_some()) =>
            {
                GitImplementation::Gix
            }
            chosen => chosen,
        };
        match implementation {
            GitImplementation::Git2 => {
                if let Some(mode) = credentials.unsupported_by_libgit2() {
                    return Err(fail(error::Problem::Libgit2CannotPresent(mode)).into());
                }
                if let Some(refused) = libgit2::unsupported_proxy(url) {
                    return Err(fail(refused).into());
                }
                drop(open_cache(&self.cache_dir, url).map_err(io)?);
                let repo =
                    libgit2::open(&self.cache_dir).map_err(|e| io(std::io::Error::other(e)))?;
                let backend = libgit2::Backend::new(repo, credentials);
                self.sync(&backend, previous, interrupt)
            }
            _ => {
                let private_parent = self.cache_dir.parent().unwrap_or(Path::new("."));
                let session = gitoxide::Session::prepare(credentials, url, private_parent)
                    .map_err(|e| e.on(&self.reference))?;
                let mut repo = open_cache(&self.cache_dir, url).map_err(io)?;
                session
                    .apply(&mut repo, url)
                    .map_err(|e| e.on(&self.reference))?;
                let backend = gitoxide::Backend { repo, session };
                self.sync(&backend, previous, interrupt)
            }
        }
    }
}

/// The steps a git implementation provides; [`GitSource::sync`] strings them together the
/// same way for both, so that they agree on revisions, artifacts and error wording.
pub trait Backend {
    /// `interrupt`, as for `fetch`: set when the sync timed out or the daemon is stopping.
    fn list_refs(
        &self,
        url: &str,
        reference: &GitReference,
        interrupt: &AtomicBool,
    ) -> Result<Vec<refs::RemoteRef>, GitError>;
    fn fetch(
        &self,
        url: &str,
        wanted: &refs::Wanted,
        interrupt: &AtomicBool,
    ) -> Result<(), GitError>;
    fn has_commit(&self, commit: &str) -> bool;
    fn commit_time(&self, commit: &str) -> Option<i64>;
    fn is_shallow(&self) -> bool;
}

impl GitSource {
    /// The implementation to use. `auto` decides by transport, from the measurements in the
    /// README (Performance, "gix, git2 and the git CLI"):
    /// - SSH: libgit2. Its in-process libssh2 session connects faster than gix's `ssh`
    ///   process, and it was ahead in every SSH figure.
    /// - Azure DevOps, any transport: libgit2, as Azure itself pairs it with Azure DevOps
    ///   (whose servers long required the multi_ack capabilities that only libgit2
    ///   negotiated).
    /// - Everything else (https, http, git, file): gix, ahead on HTTP fetches, and the only
    ///   one that can present a client certificate or send plain http through a proxy.
    ///
    /// [`GitSource::fetch`] still keeps a source on gix when its credentials need gix.
    pub fn backend(&self) -> GitImplementation {
        match self.implementation {
            GitImplementation::Auto => auto_implementation(&self.url),
            chosen => chosen,
        }
    }

    fn sync(
        &self,
        backend: &dyn Backend,
        previous: Option<&Revision>,
        interrupt: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError> {
        let url = &self.url;
        let advertised = backend
            .list_refs(url, &self.reference, interrupt)
            .map_err(|e| e.on(&self.reference))?;
        let mut wanted = refs::resolve(&self.reference, &refs::redact_url(url), &advertised)
            .map_err(|e| GitError::new(url, e))?;
        if wanted.tie.is_empty() && previous == Some(&wanted.revision) {
            return Ok(FetchOutcome::Unchanged);
        }
        backend
            .fetch(url, &wanted, interrupt)
            .map_err(|e| e.on(&self.reference))?;
        if !backend.has_commit(&wanted.commit) {
            let branch = match &self.reference {
                GitReference::Commit { branch, .. } => branch.clone(),
                _ => None,
            };
            let missing = error::Problem::CommitNotFound {
                commit: wanted.commit.clone(),
                branch,
            };
            return Err(GitError::new(url, missing).into());
        }
        if !wanted.tie.is_empty() {
            refs::pick_newest(&mut wanted, |c| backend.commit_time(c));
            if previous == Some(&wanted.revision) {
                return Ok(FetchOutcome::Unchanged);
            }
        }
        if wanted.shallow && !backend.is_shallow() {
            // Over protocol v1 some servers ignore the depth; the result is still correct,
            // only bigger, so it is worth a warning and not a failure.
            tracing::warn!(source = %self.id, url = %refs::redact_url(url), "server ignored depth 1: fetched full history");
        }
        // A failed compaction leaves a correct cache, only a bigger one: worth a warning.
        match cache::bound(&self.cache_dir, &wanted.commit, wanted.shallow) {
            Ok(true) => {
                tracing::debug!(source = %self.id, bytes = cache::size(&self.cache_dir), "compacted the git cache")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(source = %self.id, error = %e, "git cache not compacted"),
        }
        Ok(FetchOutcome::Fetched {
            revision: wanted.revision,
            snapshot: Snapshot::GitCommit {
                repo: self.cache_dir.clone(),
                commit: wanted.commit,
            },
        })
    }
}

/// See [`GitSource::backend`].
pub fn auto_implementation(url: &str) -> GitImplementation {
    let Ok(parsed) = gix::url::parse(gix::bstr::BStr::new(url)) else {
        return GitImplementation::Gix;
    };
    let host = parsed.host().unwrap_or_default().to_ascii_lowercase();
    let azure_devops = host == "dev.azure.com"
        || host == "ssh.dev.azure.com"
        || host.ends_with(".visualstudio.com");
    if azure_devops || parsed.scheme == gix::url::Scheme::Ssh {
        GitImplementation::Git2
    } else {
        GitImplementation::Gix
    }
}

/// Open the source's bare cache, or start a new one when it is missing, belongs to another
/// URL, or cannot be opened (a crash mid-fetch must never wedge a source).
fn open_cache(dir: &Path, url: &str) -> std::io::Result<gix::Repository> {
    // The marker tells a changed remote from the same one. It holds the URL redacted: no
    // credential belongs on disk, and a rotated token in the URL is still the same remote.
    let marker = dir.join("gitopsd-url");
    let remote = refs::redact_url(url);
    let same_url = fs::read_to_string(&marker).is_ok_and(|u| u == remote);
    if same_url {
        remove_stale_locks(dir);
        if let Ok(repo) = gix::open(dir) {
            return Ok(repo);
        }
    }
    if dir.exists() {
        fs::remove_dir_all(dir)?;
    }
    crate::atomic::create_private_dir(dir)?;
    let repo = gix::init_bare(dir).map_err(std::io::Error::other)?;
    crate::atomic::write_private(&marker, remote.as_bytes())?;
    Ok(repo)
}

/// Lock files left by a killed fetch would make every later ref update fail. Nothing else
/// writes to this cache, so any lock found before a fetch is stale.
fn remove_stale_locks(dir: &Path) {
    fn walk(dir: &Path) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path);
            } else if path.extension().is_some_and(|e| e == "lock") {
                let _ = fs::remove_file(&path);
            }
        }
    }
    walk(&dir.join("refs"));
    for file in ["shallow.lock", "packed-refs.lock", "config.lock"] {
        let _ = fs::remove_file(dir.join(file));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_libgit2_for_ssh_and_azure_devops_and_gix_elsewhere() {
        for (url, expected) in [
            ("https://github.com/org/fleet", GitImplementation::Gix),
            ("http://git.local/fleet.git", GitImplementation::Gix),
            ("git://git.local/fleet.git", GitImplementation::Gix),
            ("file:///srv/git/fleet.git", GitImplementation::Gix),
            ("ssh://git@github.com/org/fleet", GitImplementation::Git2),
            ("git@gitlab.com:org/fleet.git", GitImplementation::Git2),
            (
                "https://dev.azure.com/org/p/_git/fleet",
                GitImplementation::Git2,
            ),
            (
                "https://org.visualstudio.com/p/_git/fleet",
                GitImplementation::Git2,
            ),
            (
                "git@ssh.dev.azure.com:v3/org/p/fleet",
                GitImplementation::Git2,
            ),
        ] {
            assert_eq!(auto_implementation(url), expected, "{url}");
        }
    }
}
