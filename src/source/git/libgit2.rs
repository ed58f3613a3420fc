//! The libgit2 backend (git2): the same steps as [`super::gitoxide`] (list refs, fetch into
//! the bare cache at depth 1, write the commit's tree), so that both give the same revisions,
//! artifacts and error wording.
//!
//! libgit2 speaks protocol v1 only: the server advertises every ref and peeled tags arrive as
//! separate `^{}` entries, which [`list_refs`] folds into the tag they peel.

use super::auth::Credentials;
use super::refs::{self, RemoteRef, Wanted};
use crate::config::GitReference;
use git2::{
    AutotagOption, Direction, FetchOptions, ObjectType, Oid, RemoteCallbacks, TreeWalkMode,
    TreeWalkResult,
};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// A failure, already worded for the status field (one sentence, no secret).
pub type Failure = String;

/// Open the bare cache, or make a new one.
pub fn open(dir: &Path) -> Result<git2::Repository, git2::Error> {
    git2::Repository::open_bare(dir).or_else(|_| git2::Repository::init_bare(dir))
}

/// The refs the remote advertises under the reference's prefixes, annotated tags peeled.
pub fn list_refs(
    repo: &git2::Repository,
    url: &str,
    reference: &GitReference,
    callbacks: RemoteCallbacks<'_>,
) -> Result<Vec<RemoteRef>, Failure> {
    let Some(prefixes) = refs::listing_prefixes(reference) else {
        return Ok(Vec::new());
    };
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| invalid_url(url, &e))?;
    let connection = remote
        .connect_auth(Direction::Fetch, Some(callbacks), None)
        .map_err(|e| network_error(url, &e))?;
    let heads = connection.list().map_err(|e| network_error(url, &e))?;
    let wanted = |name: &str| {
        prefixes.iter().any(|p| {
            if p.ends_with('/') {
                name.starts_with(p.as_str())
            } else {
                name == p
            }
        })
    };
    let mut out: Vec<RemoteRef> = Vec::new();
    for head in heads {
        let name = head.name();
        if let Some(tag) = name.strip_suffix("^{}") {
            // The commit an annotated tag points at replaces the tag object's id.
            if let Some(r) = out.iter_mut().find(|r| r.name == tag) {
                r.commit = head.oid().to_string();
            }
            continue;
        }
        if wanted(name) {
            out.push(RemoteRef {
                name: name.to_string(),
                commit: if head.oid().is_zero() {
                    String::new()
                } else {
                    head.oid().to_string()
                },
                symref_target: head.symref_target().map(str::to_string),
            });
        }
    }
    Ok(out)
}

/// Fetch what `wanted` names into `repo`, under `refs/gitopsd/` like the gix backend.
pub fn fetch<'a>(
    repo: &git2::Repository,
    url: &str,
    wanted: &Wanted,
    interrupt: &'a AtomicBool,
    mut callbacks: RemoteCallbacks<'a>,
) -> Result<(), Failure> {
    let specs: Vec<String> = if wanted.refs.is_empty() {
        vec![format!("{}:refs/gitopsd/commit", wanted.commit)]
    } else {
        wanted
            .refs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("+{r}:refs/gitopsd/want/{i}"))
            .collect()
    };
    // Returning false from the progress callback makes libgit2 stop the transfer.
    callbacks.transfer_progress(move |_| !interrupt.load(Ordering::Relaxed));
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .download_tags(AutotagOption::None);
    // libgit2 reads file:// repositories in-process, and that transport cannot do shallow
    // fetches: local sources get full history (same snapshot, more disk).
    let local = url.starts_with("file://") || !url.contains("://");
    if wanted.shallow && !local {
        options.depth(1);
    } else if repo.is_shallow() {
        // A commit pinned on a branch needs the branch's history; i32::MAX unshallows.
        options.depth(i32::MAX);
    }
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| invalid_url(url, &e))?;
    remote
        .fetch(&specs, Some(&mut options), None)
        .map_err(|e| network_error(url, &e))
}

/// The libgit2 implementation of [`super::Backend`]. Credentials: HTTP basic for now; the
/// other modes are refused before a backend is built ([`Credentials::unsupported_by_libgit2`]).
pub struct Backend {
    repo: git2::Repository,
    credentials: Credentials,
}

impl Backend {
    pub fn new(repo: git2::Repository, credentials: Credentials) -> Backend {
        Backend { repo, credentials }
    }

    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut callbacks = RemoteCallbacks::new();
        if let Some((user, password)) = &self.credentials.basic {
            let mut tried = false;
            callbacks.credentials(move |_, _, _| {
                // libgit2 asks again after a 401: a second answer would loop forever.
                if std::mem::replace(&mut tried, true) {
                    return Err(git2::Error::from_str(
                        "authentication failed (HTTP 401): check the user and password or token",
                    ));
                }
                git2::Cred::userpass_plaintext(user, password.expose_str().unwrap_or(""))
            });
        }
        callbacks
    }
}

impl super::Backend for Backend {
    fn list_refs(&self, url: &str, reference: &GitReference) -> Result<Vec<RemoteRef>, Failure> {
        list_refs(&self.repo, url, reference, self.callbacks())
    }
    fn fetch(&self, url: &str, wanted: &Wanted, interrupt: &AtomicBool) -> Result<(), Failure> {
        fetch(&self.repo, url, wanted, interrupt, self.callbacks())
    }
    fn has_commit(&self, commit: &str) -> bool {
        has_commit(&self.repo, commit)
    }
    fn commit_time(&self, commit: &str) -> Option<i64> {
        commit_time(&self.repo, commit)
    }
    fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }
    fn materialise(&self, commit: &str, dest: &Path) -> Result<(), Failure> {
        materialise(&self.repo, commit, dest)
    }
}

/// Whether the fetch brought the commit.
pub fn has_commit(repo: &git2::Repository, commit: &str) -> bool {
    Oid::from_str(commit).is_ok_and(|id| repo.find_commit(id).is_ok())
}

/// Committer time (seconds) of a fetched commit, for semver tie-breaks.
pub fn commit_time(repo: &git2::Repository, commit: &str) -> Option<i64> {
    let id = Oid::from_str(commit).ok()?;
    repo.find_commit(id).ok().map(|c| c.time().seconds())
}

/// Write the files of `commit`'s tree into `dest`: regular files and directories only,
/// executables with their x bit (the same snapshot as the gix backend writes).
pub fn materialise(repo: &git2::Repository, commit: &str, dest: &Path) -> Result<(), Failure> {
    let describe = |e: &dyn std::fmt::Display| format!("cannot read commit {commit}: {e}");
    let id = Oid::from_str(commit).map_err(|e| describe(&e))?;
    let tree = repo
        .find_commit(id)
        .and_then(|c| c.tree())
        .map_err(|e| format!("commit {commit} is not in the fetched history ({}); check that it exists on the remote", e.message()))?;
    let mut failure: Option<String> = None;
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        let Ok(name) = entry.name() else {
            failure = Some(format!("commit {commit} has a path that is not UTF-8"));
            return TreeWalkResult::Abort;
        };
        let path = dest.join(root).join(name);
        let result = match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => fs::create_dir_all(&path).map_err(|e| describe(&e)),
            // 0o120000 is a symlink and 0o160000 a submodule: neither goes into an artifact.
            (Some(ObjectType::Blob), mode) if mode != 0o120000 => repo
                .find_blob(entry.id())
                .map_err(|e| describe(&e))
                .and_then(|blob| {
                    write_file(&path, blob.content(), mode & 0o111 != 0).map_err(|e| describe(&e))
                }),
            _ => Ok(()),
        };
        match result {
            Ok(()) => TreeWalkResult::Ok,
            Err(e) => {
                failure = Some(e);
                TreeWalkResult::Abort
            }
        }
    })
    .map_err(|e| failure.clone().unwrap_or_else(|| describe(&e)))?;
    match failure {
        Some(f) => Err(f),
        None => Ok(()),
    }
}

fn write_file(path: &Path, data: &[u8], executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

fn invalid_url(url: &str, e: &git2::Error) -> Failure {
    format!("invalid git URL {}: {}", refs::redact_url(url), e.message())
}

fn network_error(url: &str, e: &git2::Error) -> Failure {
    format!(
        "cannot fetch from {}: {}",
        refs::redact_url(url),
        super::summarise(e.message())
    )
}
