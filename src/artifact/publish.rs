//! Publish the newest revision's files into a directory, git-sync style.
//!
//! Layout under `publish.directory`:
//!
//! ```text
//! .revisions/<commit>/...      the files of a revision, extracted from its verified artifact
//! <link> -> .revisions/<commit>   a relative symlink, replaced atomically on each new revision
//! ```
//!
//! A reader that resolves `<link>` once sees one complete revision: revision dirs appear under
//! their final name only after extraction finished (extract into a dot-temp dir, fsync, rename),
//! and the link is swapped by renaming a new symlink over it. The previous revision is kept so
//! that a reader still inside it is not pulled out from under; older ones are removed.
//! One publisher per directory is assumed (configuration makes directories unique).
//!
//! `mode: directory` is for consumers that cannot follow a symlink: `publish.directory`
//! itself holds the revision's files (and a `.gitopsd-revision` file naming the commit). The
//! new revision is extracted beside it, under a dot-temp name in the same parent directory,
//! and the two directories are exchanged in one step (`renameat2(RENAME_EXCHANGE)`); the old
//! contents, now under the temp name, are then removed. A reader that opened the directory
//! before the swap keeps reading the old revision whole; one that opens it after reads the
//! new one whole; nobody sees a mix or an empty directory. The previous contents stay (as
//! `.<name>.previous` beside it) until the next publish, so a reader inside them is not cut
//! off mid-read, as in symlink mode. The directory must therefore not
//! be a mount point (a volume's root cannot be renamed): publish into a subdirectory of it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use super::extract::extract;
use super::pack::PackError;
use super::Artifact;
use crate::atomic;

/// Publish the newest revision's files as `<directory>/<link>` → `.revisions/<commit>`: a
/// source's `publish` setting, checked when the config is loaded.
#[derive(Debug, Clone)]
pub struct Publish {
    pub directory: PathBuf,
    pub link: String,
    pub mode: PublishMode,
    /// A program run after each new publish (`GITOPSD_REVISION`, `GITOPSD_DIRECTORY` and
    /// `GITOPSD_SOURCE` in its environment), retried with backoff while it fails.
    pub exec_hook: Option<PathBuf>,
    /// A URL POSTed to after each new publish, retried the same way.
    pub webhook: Option<String>,
    /// How long one run of a hook may take.
    pub hook_timeout: std::time::Duration,
}

/// How the newest revision is made visible.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishMode {
    /// `<directory>/<link>` → `.revisions/<commit>`.
    #[default]
    Symlink,
    /// `<directory>` holds the files, exchanged whole by rename.
    Directory,
}

/// In `mode: directory`, the file inside the directory that names the commit it holds; it
/// also marks the directory as gitopsd's to replace.
pub const DIRECTORY_MARKER: &str = ".gitopsd-revision";

/// The directory, under `publish.directory`, that holds one directory per revision.
pub const REVISIONS_DIR: &str = ".revisions";

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(
        "cannot publish commit {0:?}: not a commit id (expected letters, digits, '.', '-', '_')"
    )]
    InvalidCommit(String),
    #[error(
        "invalid publish link name {0:?}: expected a plain file name other than {REVISIONS_DIR}"
    )]
    InvalidLink(String),
    #[error(
        "refusing to replace {}: it is a {what}, not a symlink; move it away so that gitopsd can \
         manage the link",
        path.display()
    )]
    LinkOccupied { path: PathBuf, what: &'static str },
    #[error("cannot publish into {}: it exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "refusing to replace the contents of {}: it holds files gitopsd did not publish (no \
         {DIRECTORY_MARKER}); empty it or publish elsewhere",
        path.display()
    )]
    DirectoryOccupied { path: PathBuf },
    #[error(
        "cannot publish into {}: its filesystem cannot exchange two directories atomically \
         ({source}); use mode: symlink there",
        path.display()
    )]
    NoAtomicExchange {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot publish artifact {}: {source}", artifact.display())]
    Extract {
        artifact: PathBuf,
        #[source]
        source: PackError,
    },
    #[error("cannot publish: {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PublishError {
    let path = path.to_path_buf();
    move |source| PublishError::Io {
        action,
        path,
        source,
    }
}

/// Publish the files of `artifact` at `<publish.directory>/.revisions/<commit>` and point
/// `<publish.directory>/<publish.link>` at it with the relative target `.revisions/<commit>`.
///
/// Idempotent: when the link already points at an existing `.revisions/<commit>`, nothing is
/// extracted. Keeps the current and the previous revision dirs, and removes older ones as well
/// as leftovers of interrupted runs. A plain file or directory at the link path is never
/// replaced: that is an error.
///
/// Returns the revision directory.
pub fn publish(
    publish: &Publish,
    artifact: &Artifact,
    commit: &str,
) -> Result<PathBuf, PublishError> {
    check_commit(commit)?;
    if publish.mode == PublishMode::Directory {
        return publish_directory(&publish.directory, artifact, commit);
    }
    check_link(&publish.link)?;
    let dir = publish.directory.as_path();
    let revisions = dir.join(REVISIONS_DIR);
    let link = dir.join(&publish.link);

    ensure_dir(dir)?;
    ensure_dir(&revisions)?;
    // Before extracting anything: refuse early if the link path holds user data.
    let previous = current_target(&link)?;
    let revision_dir = revisions.join(commit);

    let linked = previous.as_deref() == Some(commit);
    if linked && fs::symlink_metadata(&revision_dir).is_ok_and(|m| m.is_dir()) {
        // Which other revision is the previous one is not known here; keep every revision
        // dir and clear only leftovers of interrupted runs.
        remove_leftovers(dir, &revisions, &publish.link, Keep::AllRevisions);
        return Ok(revision_dir);
    }

    extract_revision(artifact, &revisions, &revision_dir, commit)?;
    swap_link(dir, &link, &publish.link, commit)?;

    let mut keep = vec![commit];
    if let Some(previous) = previous.as_deref() {
        keep.push(previous);
    }
    remove_leftovers(dir, &revisions, &publish.link, Keep::Only(&keep));
    tracing::info!(
        directory = %dir.display(),
        link = %publish.link,
        commit,
        previous = previous.as_deref().unwrap_or(""),
        "published revision"
    );
    Ok(revision_dir)
}

/// Commits become directory names: allow only what a commit id or a digest can contain.
fn check_commit(commit: &str) -> Result<(), PublishError> {
    let ok = !commit.is_empty()
        && commit.len() <= 128
        && !commit.starts_with('.')
        && commit
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if ok {
        Ok(())
    } else {
        Err(PublishError::InvalidCommit(commit.to_string()))
    }
}

fn check_link(link: &str) -> Result<(), PublishError> {
    let single = Path::new(link).file_name().and_then(|n| n.to_str()) == Some(link);
    if single && link != REVISIONS_DIR {
        Ok(())
    } else {
        Err(PublishError::InvalidLink(link.to_string()))
    }
}

fn ensure_dir(path: &Path) -> Result<(), PublishError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        // A symlinked publish directory is the user's choice; follow it.
        Ok(meta) if meta.file_type().is_symlink() && path.is_dir() => Ok(()),
        Ok(_) => Err(PublishError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(io_error("creating", path))
        }
        Err(e) => Err(io_error("inspecting", path)(e)),
    }
}

/// The commit the link points at (`.revisions/<commit>`), `None` when there is no link or it
/// points elsewhere; an error when something other than a symlink is in the way.
fn current_target(link: &Path) -> Result<Option<String>, PublishError> {
    let meta = match fs::symlink_metadata(link) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("inspecting", link)(e)),
    };
    if !meta.file_type().is_symlink() {
        let what = if meta.is_dir() {
            "directory"
        } else if meta.is_file() {
            "regular file"
        } else {
            "special file"
        };
        return Err(PublishError::LinkOccupied {
            path: link.to_path_buf(),
            what,
        });
    }
    let target = fs::read_link(link).map_err(io_error("reading the link", link))?;
    let mut parts = target.components();
    let in_revisions = parts.next().map(|c| c.as_os_str()) == Some(REVISIONS_DIR.as_ref());
    let name = parts.next().and_then(|c| c.as_os_str().to_str());
    match (in_revisions, name, parts.next()) {
        (true, Some(name), None) => Ok(Some(name.to_string())),
        _ => Ok(None),
    }
}

/// Extract into a dot-temp dir, make it durable, and rename it to `revision_dir`.
fn extract_revision(
    artifact: &Artifact,
    revisions: &Path,
    revision_dir: &Path,
    commit: &str,
) -> Result<(), PublishError> {
    let temp = revisions.join(temp_name(commit));
    let result = extract(&artifact.path, &artifact.digest, &temp)
        .map_err(|source| PublishError::Extract {
            artifact: artifact.path.clone(),
            source,
        })
        .and_then(|()| sync_tree(&temp).map_err(io_error("syncing", &temp)));
    if let Err(e) = result {
        remove_tree(&temp);
        return Err(e);
    }

    // A dir of this name that the link does not point at: an older publish of the same commit
    // (e.g. a rollback to the previous revision). Nobody reads it through the link, so it can
    // be moved aside and replaced by the fresh, verified extraction.
    if fs::symlink_metadata(revision_dir).is_ok() {
        let aside = revisions.join(temp_name(commit));
        fs::rename(revision_dir, &aside).map_err(io_error("moving aside", revision_dir))?;
        remove_tree(&aside);
    }
    fs::rename(&temp, revision_dir).map_err(io_error("renaming into place", revision_dir))?;
    atomic::sync_dir(revisions).map_err(io_error("syncing", revisions))
}

/// Point `link` at `.revisions/<commit>`: create the new symlink under a temp name and rename
/// it over the link, which replaces it in one step.
fn swap_link(dir: &Path, link: &Path, link_name: &str, commit: &str) -> Result<(), PublishError> {
    let temp = dir.join(temp_name(link_name));
    let target = Path::new(REVISIONS_DIR).join(commit);
    symlink(&target, &temp).map_err(io_error("creating symlink", &temp))?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        // A directory created at the link path since we looked makes rename fail (EISDIR);
        // report it as such rather than as a bare I/O error.
        current_target(link)?;
        return Err(io_error("replacing the link", link)(e));
    }
    atomic::sync_dir(dir).map_err(io_error("syncing", dir))
}

/// `mode: directory`: extract beside `dest`, exchange the two, remove the old contents.
fn publish_directory(
    dest: &Path,
    artifact: &Artifact,
    commit: &str,
) -> Result<PathBuf, PublishError> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name =
        dest.file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| PublishError::NotADirectory {
                path: dest.to_path_buf(),
            })?;
    ensure_dir(parent)?;
    remove_directory_leftovers(parent, name);
    let exists = match fs::symlink_metadata(dest) {
        Ok(meta) if meta.is_dir() => true,
        Ok(_) => {
            return Err(PublishError::NotADirectory {
                path: dest.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(io_error("inspecting", dest)(e)),
    };
    if exists {
        match fs::read_to_string(dest.join(DIRECTORY_MARKER)) {
            Ok(held) if held.trim() == commit => return Ok(dest.to_path_buf()),
            Ok(_) => {}
            Err(_) => {
                let empty = fs::read_dir(dest)
                    .map_err(io_error("listing", dest))?
                    .next()
                    .is_none();
                if !empty {
                    return Err(PublishError::DirectoryOccupied {
                        path: dest.to_path_buf(),
                    });
                }
            }
        }
    }
    let temp = parent.join(temp_name(name));
    let result = extract(&artifact.path, &artifact.digest, &temp)
        .map_err(|source| PublishError::Extract {
            artifact: artifact.path.clone(),
            source,
        })
        .and_then(|()| {
            let marker = temp.join(DIRECTORY_MARKER);
            fs::write(&marker, format!("{commit}\n")).map_err(io_error("writing", &marker))
        })
        .and_then(|()| sync_tree(&temp).map_err(io_error("syncing", &temp)));
    if let Err(e) = result {
        remove_tree(&temp);
        return Err(e);
    }
    let swapped = if exists {
        exchange(&temp, dest).map_err(|source| match source.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOSYS) => PublishError::NoAtomicExchange {
                path: dest.to_path_buf(),
                source,
            },
            _ => io_error("exchanging", dest)(source),
        })
    } else {
        fs::rename(&temp, dest).map_err(io_error("renaming into place", dest))
    };
    if let Err(e) = swapped {
        remove_tree(&temp);
        return Err(e);
    }
    // After an exchange the temp name holds the previous contents. They are kept until the
    // next publish, as symlink mode keeps the previous revision: a reader that opened the
    // directory before the swap still finds every file of it.
    if exists {
        let previous = parent.join(format!(".{name}.previous"));
        remove_tree(&previous);
        if fs::rename(&temp, &previous).is_err() {
            remove_tree(&temp);
        }
    }
    atomic::sync_dir(parent).map_err(io_error("syncing", parent))?;
    Ok(dest.to_path_buf())
}

/// Swap two directories in one step: `renameat2(RENAME_EXCHANGE)` (Linux 3.15+; ext4, xfs,
/// btrfs, tmpfs and overlayfs support it).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both pointers are NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Temp directories of interrupted `mode: directory` publishes of `name` (`.<name>.*.tmp`).
fn remove_directory_leftovers(parent: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(n) = file_name.to_str() else {
            continue;
        };
        if n.starts_with(&prefix) && n.ends_with(".tmp") {
            remove_tree(&entry.path());
        }
    }
}

/// `.<name>.<pid>.<n>.tmp`: hidden, never a valid commit, recognisable as a leftover.
fn temp_name(name: &str) -> String {
    format!(".{name}.{}.{}.tmp", std::process::id(), atomic::unique())
}

enum Keep<'a> {
    /// These revision dirs; everything else under `.revisions` goes.
    Only(&'a [&'a str]),
    /// Every revision dir; only temp leftovers (hidden names) go.
    AllRevisions,
}

/// Remove what `keep` does not keep under `.revisions` (older revisions, temp leftovers) and
/// temp links of interrupted swaps. Failures are logged, not returned: the publish itself
/// succeeded.
fn remove_leftovers(dir: &Path, revisions: &Path, link_name: &str, keep: Keep<'_>) {
    let entries = match fs::read_dir(revisions) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(path = %revisions.display(), error = %e, "cannot list old revisions");
            return;
        }
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kept = match keep {
            Keep::Only(keep) => keep.contains(&name.as_ref()),
            Keep::AllRevisions => !name.starts_with('.'),
        };
        if !kept {
            remove_tree(&entry.path());
        }
    }

    let prefix = format!(".{link_name}.");
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let is_symlink = entry.file_type().is_ok_and(|t| t.is_symlink());
            if is_symlink && name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// Remove a file, symlink or directory tree; directories without write permission are made
/// writable first. Failures are logged.
fn remove_tree(path: &Path) {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path).or_else(|_| {
            make_dirs_writable(path);
            fs::remove_dir_all(path)
        })
    } else {
        fs::remove_file(path)
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove old published revision");
    }
}

fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&entry.path());
            }
        }
    }
}

/// fsync every file and directory below `root` (and `root`), so that a revision dir that is
/// visible under its final name after a crash also has its contents.
fn sync_tree(root: &Path) -> io::Result<()> {
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                pending.push(entry.path());
            } else if file_type.is_file() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        atomic::sync_dir(&dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::ignore::IgnoreRules;
    use crate::artifact::pack;
    use crate::vocab::Revision;
    use std::os::unix::fs::MetadataExt;

    struct Fixture {
        tmp: tempfile::TempDir,
        publish: Publish,
    }

    impl Fixture {
        fn new() -> Fixture {
            let tmp = tempfile::tempdir().unwrap();
            let publish = Publish {
                mode: PublishMode::Symlink,
                exec_hook: None,
                webhook: None,
                hook_timeout: std::time::Duration::from_secs(30),
                directory: tmp.path().join("published"),
                link: "current".to_string(),
            };
            Fixture { tmp, publish }
        }

        /// An artifact whose tree holds `marker.txt` containing `content`.
        fn artifact(&self, commit: &str, content: &str) -> Artifact {
            let src = self.tmp.path().join(format!("src-{commit}"));
            fs::create_dir_all(src.join("apps")).unwrap();
            fs::write(src.join("marker.txt"), content).unwrap();
            fs::write(src.join("apps/cm.yaml"), "kind: ConfigMap\n").unwrap();
            let rules = IgnoreRules::for_bucket(None, None).unwrap();
            let mut bytes = Vec::new();
            let packed = pack::pack_dir(&src, &rules, &mut bytes).unwrap();
            let path = self.tmp.path().join(format!("{commit}.tar.gz"));
            fs::write(&path, &bytes).unwrap();
            Artifact {
                path,
                url_path: format!("git/ns/name/{commit}.tar.gz"),
                revision: Revision::git(Some("main"), commit),
                digest: packed.digest,
                size: packed.size,
                last_update: String::new(),
            }
        }

        fn link(&self) -> PathBuf {
            self.publish.directory.join(&self.publish.link)
        }

        fn revisions(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.publish.directory.join(REVISIONS_DIR))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }

        fn published(&self) -> String {
            fs::read_to_string(self.link().join("marker.txt")).unwrap()
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";

    #[test]
    fn swaps_the_link_and_keeps_current_and_previous() {
        let fx = Fixture::new();
        let dir = publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        assert_eq!(dir, fx.publish.directory.join(".revisions").join(A));
        assert_eq!(
            fs::read_link(fx.link()).unwrap(),
            Path::new(".revisions").join(A)
        );
        assert_eq!(fx.link().canonicalize().unwrap().file_name().unwrap(), A);
        assert_eq!(fx.published(), "a");
        assert!(fx.link().join("apps/cm.yaml").is_file());

        publish(&fx.publish, &fx.artifact(B, "b"), B).unwrap();
        assert_eq!(fx.published(), "b");
        assert_eq!(fx.revisions(), vec![A, B]);

        publish(&fx.publish, &fx.artifact(C, "c"), C).unwrap();
        assert_eq!(fx.published(), "c");
        assert_eq!(fx.link().canonicalize().unwrap().file_name().unwrap(), C);
        assert_eq!(fx.revisions(), vec![B, C]);

        // Only the link and the revisions dir are in the publish directory.
        let mut names: Vec<_> = fs::read_dir(&fx.publish.directory)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec![".revisions", "current"]);
    }

    #[test]
    fn same_commit_twice_is_a_no_op() {
        let fx = Fixture::new();
        let artifact = fx.artifact(A, "a");
        let dir = publish(&fx.publish, &artifact, A).unwrap();
        let inode = fs::metadata(&dir).unwrap().ino();
        let link_inode = fs::symlink_metadata(fx.link()).unwrap().ino();
        assert_eq!(publish(&fx.publish, &artifact, A).unwrap(), dir);
        assert_eq!(fs::metadata(&dir).unwrap().ino(), inode);
        assert_eq!(fs::symlink_metadata(fx.link()).unwrap().ino(), link_inode);
        assert_eq!(fx.revisions(), vec![A]);
    }

    #[test]
    fn rolling_back_to_the_previous_commit_works() {
        let fx = Fixture::new();
        publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        publish(&fx.publish, &fx.artifact(B, "b"), B).unwrap();
        publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        assert_eq!(fx.published(), "a");
        assert_eq!(fx.revisions(), vec![A, B]);
    }

    #[test]
    fn removes_leftovers_of_interrupted_runs() {
        let fx = Fixture::new();
        publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        let revisions = fx.publish.directory.join(REVISIONS_DIR);
        fs::create_dir_all(revisions.join(format!(".{B}.123.0.tmp/half"))).unwrap();
        fs::create_dir_all(revisions.join("0123456789abcdef")).unwrap();
        symlink(
            ".revisions/x",
            fx.publish.directory.join(".current.123.4.tmp"),
        )
        .unwrap();
        let user_file = fx.publish.directory.join("README");
        fs::write(&user_file, "mine").unwrap();

        publish(&fx.publish, &fx.artifact(B, "b"), B).unwrap();
        assert_eq!(fx.revisions(), vec![A, B]);
        assert!(fs::symlink_metadata(fx.publish.directory.join(".current.123.4.tmp")).is_err());
        assert_eq!(fs::read_to_string(user_file).unwrap(), "mine");
    }

    #[test]
    fn refuses_a_real_directory_or_file_at_the_link_path() {
        let fx = Fixture::new();
        fs::create_dir_all(fx.link()).unwrap();
        fs::write(fx.link().join("precious.txt"), "data").unwrap();
        let err = publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap_err();
        assert!(
            matches!(
                err,
                PublishError::LinkOccupied {
                    what: "directory",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("not a symlink"));
        assert_eq!(
            fs::read_to_string(fx.link().join("precious.txt")).unwrap(),
            "data"
        );
        // Nothing was extracted.
        assert!(fx.revisions().is_empty());

        fs::remove_dir_all(fx.link()).unwrap();
        fs::write(fx.link(), "file").unwrap();
        let err = publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap_err();
        assert!(matches!(
            err,
            PublishError::LinkOccupied {
                what: "regular file",
                ..
            }
        ));
        assert_eq!(fs::read_to_string(fx.link()).unwrap(), "file");
    }

    #[test]
    fn replaces_a_foreign_symlink() {
        let fx = Fixture::new();
        fs::create_dir_all(&fx.publish.directory).unwrap();
        symlink("/nonexistent", fx.link()).unwrap();
        publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        assert_eq!(fx.published(), "a");
    }

    #[test]
    fn a_corrupt_artifact_leaves_nothing_behind() {
        let fx = Fixture::new();
        publish(&fx.publish, &fx.artifact(A, "a"), A).unwrap();
        let mut bad = fx.artifact(B, "b");
        bad.digest = format!("sha256:{}", "0".repeat(64));
        let err = publish(&fx.publish, &bad, B).unwrap_err();
        assert!(matches!(
            err,
            PublishError::Extract {
                source: PackError::DigestMismatch { .. },
                ..
            }
        ));
        assert_eq!(fx.revisions(), vec![A]);
        assert_eq!(fx.published(), "a");
    }

    #[test]
    fn rejects_bad_commit_and_link_names() {
        let fx = Fixture::new();
        let artifact = fx.artifact(A, "a");
        for commit in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(
                matches!(
                    publish(&fx.publish, &artifact, commit),
                    Err(PublishError::InvalidCommit(_))
                ),
                "{commit:?}"
            );
        }
        for link in ["", ".revisions", "a/b", "..", "."] {
            let p = Publish {
                mode: PublishMode::Symlink,
                exec_hook: None,
                webhook: None,
                hook_timeout: std::time::Duration::from_secs(30),
                directory: fx.publish.directory.clone(),
                link: link.to_string(),
            };
            assert!(
                matches!(publish(&p, &artifact, A), Err(PublishError::InvalidLink(_))),
                "{link:?}"
            );
        }
    }
}
