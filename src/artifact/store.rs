//! The artifact store: `<stateDir>/artifacts/<kind>/<namespace>/<name>/<file_stem>.tar.gz`.
//!
//! Artifacts are written through [`AtomicFile`], so a reader (the HTTP server, a render) sees
//! either the previous file or the complete new one. Unlike Flux (an emptyDir), the store
//! survives restarts: the last good artifact can be served at once.
//!
//! Storing a revision whose file already exists (the same commit fetched again) packs and
//! renames it again rather than trusting the old file: packing is deterministic, so the bytes
//! are the same, a damaged old file gets repaired, and the fresh mtime marks it as the newest
//! for GC.

use super::ignore::IgnoreRules;
use super::pack::{pack_tree, PackError};
use super::tree::Tree;
use super::Artifact;
use crate::atomic::{self, AtomicFile};
use crate::vocab::Revision;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ARTIFACT_SUFFIX: &str = ".tar.gz";
/// A temp file of this process younger than this is a write in progress, not a leftover.
const TEMP_GRACE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid artifact {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("artifact store I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("packing into {path} failed: {source}")]
    Pack {
        path: PathBuf,
        #[source]
        source: PackError,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct ArtifactStore {
    root: PathBuf,
}

impl ArtifactStore {
    /// `root` is `<stateDir>/artifacts`; it is created on the first store.
    pub fn new(root: PathBuf) -> Self {
        ArtifactStore { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Pack `tree` into `<root>/<kind>/<namespace>/<name>/<digest>.tar.gz` atomically, where
    /// `<digest>` is the revision's hex (the commit sha for git, the digest for buckets).
    pub fn store(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        revision: &Revision,
        tree: impl Tree,
        rules: &IgnoreRules,
    ) -> Result<Artifact, StoreError> {
        let file_stem = revision.digest_hex();
        for (what, value) in [
            ("kind", kind),
            ("namespace", namespace),
            ("name", name),
            ("file name", file_stem),
        ] {
            check_segment(value).map_err(|reason| StoreError::InvalidName {
                what,
                value: value.to_string(),
                reason,
            })?;
        }
        let file = format!("{file_stem}{ARTIFACT_SUFFIX}");
        let path = self.dir_of(kind, namespace, name).join(&file);
        let mut out = AtomicFile::create(&path).map_err(io_error(&path))?;
        let packed = pack_tree(tree, rules, &mut out).map_err(|source| StoreError::Pack {
            path: path.clone(),
            source,
        })?;
        out.commit().map_err(io_error(&path))?;
        let path = std::path::absolute(&path).map_err(io_error(&path))?;
        tracing::debug!(path = %path.display(), digest = %packed.digest, size = packed.size, "artifact stored");
        Ok(Artifact {
            path,
            url_path: format!("{kind}/{namespace}/{name}/{file}"),
            revision: revision.clone(),
            digest: packed.digest,
            size: packed.size,
            last_update: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        })
    }

    /// Keep the newest `keep` artifacts of one source (newest by mtime, ties by name), never
    /// deleting `current`, and remove temp files that a crash left behind. Returns the
    /// artifacts removed.
    ///
    /// Temp files are removed only when they cannot belong to a write in progress: written by
    /// another process (the pid is in the name) or older than an hour. That keeps a GC racing a
    /// `store` of the same source from deleting the file being written.
    pub fn gc(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        current: &Path,
        keep: usize,
    ) -> Result<Vec<PathBuf>, StoreError> {
        for (what, value) in [("kind", kind), ("namespace", namespace), ("name", name)] {
            check_segment(value).map_err(|reason| StoreError::InvalidName {
                what,
                value: value.to_string(),
                reason,
            })?;
        }
        let dir = self.dir_of(kind, namespace, name);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(&dir)(err)),
        };
        let current_meta = fs::metadata(current).ok();
        let now = SystemTime::now();
        let mut artifacts = Vec::new();
        let mut removed_any = false;
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Ok(meta) = entry.metadata() else {
                continue; // vanished meanwhile
            };
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            if is_stale_temp(file_name, mtime, now) {
                let path = entry.path();
                let result = if meta.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match result {
                    Ok(()) => removed_any = true,
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "cannot remove a stale temp file")
                    }
                }
                continue;
            }
            if meta.is_file() && file_name.ends_with(ARTIFACT_SUFFIX) && !file_name.starts_with('.')
            {
                let path = entry.path();
                let is_current = path == current
                    || current_meta.as_ref().is_some_and(|c| {
                        same_file(c, &meta) && current.file_name() == path.file_name()
                    });
                artifacts.push((mtime, file_name.to_string(), path, is_current));
            }
        }
        // Newest first.
        artifacts.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let mut removed = Vec::new();
        for (_, _, path, is_current) in artifacts.into_iter().skip(keep) {
            if is_current {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_error(&path)(err)),
            }
        }
        if removed_any || !removed.is_empty() {
            atomic::sync_dir(&dir).map_err(io_error(&dir))?;
        }
        Ok(removed)
    }

    /// Resolve a request path under `/artifacts/` (already percent-decoded) to a stored
    /// artifact file. Only `<kind>/<namespace>/<name>/<file>.tar.gz` is accepted; `..`,
    /// absolute paths, backslashes, empty or hidden segments (temp files start with a dot) and
    /// anything that resolves outside the root through a symlink give `None`.
    pub fn resolve(&self, url_path: &str) -> Option<PathBuf> {
        let segments: Vec<&str> = url_path.split('/').collect();
        if segments.len() != 4 || segments.iter().any(|s| check_segment(s).is_err()) {
            return None;
        }
        let file = segments[3];
        if file.len() <= ARTIFACT_SUFFIX.len() || !file.ends_with(ARTIFACT_SUFFIX) {
            return None;
        }
        let path = segments
            .iter()
            .fold(self.root.clone(), |path, segment| path.join(segment));
        if !fs::symlink_metadata(&path).ok()?.is_file() {
            return None;
        }
        let real = path.canonicalize().ok()?;
        let root = self.root.canonicalize().ok()?;
        real.starts_with(&root).then_some(path)
    }

    fn dir_of(&self, kind: &str, namespace: &str, name: &str) -> PathBuf {
        self.root.join(kind).join(namespace).join(name)
    }
}

/// `sha256:<hex>` of a file's content, streamed.
pub fn file_digest(path: &Path) -> io::Result<String> {
    reader_digest(File::open(path)?)
}

/// `sha256:<hex>` of everything `reader` yields.
pub(crate) fn reader_digest(mut reader: impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// One path segment of the store: plain, visible, portable.
fn check_segment(value: &str) -> Result<(), &'static str> {
    if value.is_empty() {
        return Err("it is empty");
    }
    if value.starts_with('.') {
        return Err("it starts with a dot");
    }
    if value.contains(['/', '\\']) {
        return Err("it contains a path separator");
    }
    if value.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    Ok(())
}

/// Temp names are `.<file>.<pid>.<counter>.tmp` (see [`AtomicFile`]).
fn is_stale_temp(file_name: &str, mtime: SystemTime, now: SystemTime) -> bool {
    let Some(inner) = file_name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp"))
    else {
        return false;
    };
    let mut parts = inner.rsplitn(3, '.');
    let _counter = parts.next();
    let pid = parts.next().and_then(|p| p.parse::<u32>().ok());
    let old = now.duration_since(mtime).unwrap_or_default() > TEMP_GRACE;
    pid != Some(std::process::id()) || old
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::tree::DirTree;

    fn snapshot(content: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("app.yaml"), content).unwrap();
        dir
    }

    fn rules() -> IgnoreRules {
        IgnoreRules::for_bucket(None, None).unwrap()
    }

    fn set_mtime(path: &Path, secs: u64) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(UNIX_EPOCH + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn store_writes_the_layout_and_reports_the_digest() {
        let state = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(state.path().join("artifacts"));
        let snap = snapshot("kind: A\n");
        let sha = "a".repeat(40);
        let revision = Revision::git(Some("main"), &sha);
        let artifact = store
            .store(
                "gitrepository",
                "flux-system",
                "fleet",
                &revision,
                DirTree::new(snap.path()).unwrap(),
                &rules(),
            )
            .unwrap();
        assert!(artifact.path.is_absolute());
        assert_eq!(
            artifact.path,
            state
                .path()
                .join("artifacts/gitrepository/flux-system/fleet")
                .join(format!("{sha}.tar.gz"))
        );
        assert_eq!(
            artifact.url_path,
            format!("gitrepository/flux-system/fleet/{sha}.tar.gz")
        );
        assert_eq!(artifact.revision, revision);
        assert_eq!(artifact.digest, file_digest(&artifact.path).unwrap());
        assert_eq!(artifact.size, fs::metadata(&artifact.path).unwrap().len());
        let ts = artifact.last_update.as_bytes();
        assert_eq!(ts.len(), 20);
        assert_eq!((ts[4], ts[10], ts[19]), (b'-', b'T', b'Z'));
        assert_eq!(
            store.resolve(&artifact.url_path),
            Some(artifact.path.clone())
        );

        // The same revision again: same bytes, nothing else left in the directory.
        let again = store
            .store(
                "gitrepository",
                "flux-system",
                "fleet",
                &revision,
                DirTree::new(snap.path()).unwrap(),
                &rules(),
            )
            .unwrap();
        assert_eq!(again.digest, artifact.digest);
        let dir = artifact.path.parent().unwrap();
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }

    #[test]
    fn store_refuses_escaping_names() {
        let state = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(state.path().to_path_buf());
        let snap = snapshot("x");
        for (ns, name, digest) in [
            ("..", "n", "s"),
            ("ns", "a/b", "s"),
            ("ns", "n", ""),
            ("ns", "n", ".hidden"),
        ] {
            let rev = Revision(format!("sha256:{digest}"));
            let tree = DirTree::new(snap.path()).unwrap();
            let err = store
                .store("bucket", ns, name, &rev, tree, &rules())
                .unwrap_err();
            assert!(matches!(err, StoreError::InvalidName { .. }), "{err}");
        }
    }

    #[test]
    fn gc_keeps_newest_and_current_and_clears_stale_temps() {
        let state = tempfile::tempdir().unwrap();
        let store = ArtifactStore::new(state.path().to_path_buf());
        let dir = state.path().join("gitrepository/ns/src");
        fs::create_dir_all(&dir).unwrap();
        for (i, stem) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            let path = dir.join(format!("{stem}.tar.gz"));
            fs::write(&path, stem).unwrap();
            set_mtime(&path, 1_000 + i as u64);
        }
        // Same mtime as d: the name breaks the tie, and "d2" sorts after "d", so it is newer.
        let tie = dir.join("d2.tar.gz");
        fs::write(&tie, "d2").unwrap();
        set_mtime(&tie, 1_003);
        let foreign_temp = dir.join(".e.tar.gz.4294967295.7.tmp");
        fs::write(&foreign_temp, "partial").unwrap();
        let own_temp = dir.join(format!(".f.tar.gz.{}.8.tmp", std::process::id()));
        fs::write(&own_temp, "in progress").unwrap();
        let old_own_temp = dir.join(format!(".g.tar.gz.{}.9.tmp", std::process::id()));
        fs::write(&old_own_temp, "old").unwrap();
        set_mtime(&old_own_temp, 5);
        let unrelated = dir.join("notes.txt");
        fs::write(&unrelated, "keep").unwrap();

        let current = dir.join("a.tar.gz");
        let mut removed = store.gc("gitrepository", "ns", "src", &current, 2).unwrap();
        removed.sort();
        assert_eq!(
            removed,
            vec![
                dir.join("b.tar.gz"),
                dir.join("c.tar.gz"),
                dir.join("d.tar.gz")
            ]
        );
        assert!(current.exists(), "current is never removed");
        assert!(dir.join("e.tar.gz").exists());
        assert!(tie.exists());
        assert!(!foreign_temp.exists());
        assert!(!old_own_temp.exists());
        assert!(own_temp.exists(), "a write in progress is left alone");
        assert!(unrelated.exists());

        assert!(store
            .gc("gitrepository", "ns", "missing", &current, 2)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn resolve_refuses_escapes() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("artifacts");
        let store = ArtifactStore::new(root.clone());
        let dir = root.join("bucket/ns/b");
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("abc.tar.gz"), "x").unwrap();
        fs::write(dir.join(".abc.tar.gz.1.2.tmp"), "x").unwrap();
        fs::write(state.path().join("secret.tar.gz"), "x").unwrap();
        fs::create_dir_all(root.join("bucket/ns")).unwrap();
        std::os::unix::fs::symlink(state.path(), root.join("bucket/ns/evil")).unwrap();

        assert_eq!(
            store.resolve("bucket/ns/b/abc.tar.gz"),
            Some(dir.join("abc.tar.gz"))
        );
        for bad in [
            "../secret.tar.gz",
            "bucket/ns/../../secret.tar.gz",
            "bucket/ns/b/../abc.tar.gz",
            "/bucket/ns/b/abc.tar.gz",
            "bucket\\ns\\b\\abc.tar.gz",
            "bucket/ns/b/.abc.tar.gz.1.2.tmp",
            "bucket/ns//abc.tar.gz",
            "bucket/ns/b/missing.tar.gz",
            "bucket/ns/b",
            "bucket/ns/evil/secret.tar.gz",
            "",
        ] {
            assert_eq!(store.resolve(bad), None, "{bad}");
        }
    }
}
