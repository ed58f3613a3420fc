//! A fetched commit as a [`Tree`] to pack, read straight from the cache repository's object
//! database.
//!
//! Checking the commit out first would write every file only for the packer to read it back
//! and delete it: on a 5,000-file repository that was half the time of a whole sync, almost
//! all of it system time (README, Performance). Both git implementations leave a plain git
//! repository behind, so both are packed by this one reader, which also makes their artifacts
//! identical by construction.
//!
//! What a checkout would have held is what the artifact holds: regular files (executable or
//! not) and directories. Symlinks and submodule commits are left out, as Flux's artifacts
//! have neither; a directory holding only such entries stays, empty.

use crate::artifact::pack::{Content, Entries, EntryKind, PackError, Tree, TreeEntry};
use crate::source::ignore::SOURCE_IGNORE_FILE;
use gix::objs::tree::EntryKind as GitKind;
use gix::prelude::FindExt;
use gix::ObjectId;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

pub struct CommitTree {
    repo: gix::Repository,
    root: ObjectId,
    /// Where the last object read lives; [`Content::Bytes`] borrows it.
    buf: Vec<u8>,
}

impl CommitTree {
    /// The tree of `commit` in the repository at `repo_dir`.
    pub fn open(repo_dir: &Path, commit: &str) -> Result<CommitTree, String> {
        let describe = |e: &dyn std::fmt::Display| format!("cannot read commit {commit}: {e}");
        let mut repo = gix::open(repo_dir).map_err(|e| describe(&e))?;
        // Trees are read once each, blobs once each: a modest pack cache spares re-inflating
        // delta bases that many objects share.
        repo.object_cache_size_if_unset(4 << 20);
        let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| describe(&e))?;
        let root = repo
            .find_commit(id)
            .map_err(|e| {
                format!("commit {commit} is not in the fetched history ({e}); check that it exists on the remote")
            })?
            .tree_id()
            .map_err(|e| describe(&e))?
            .detach();
        Ok(CommitTree {
            repo,
            root,
            buf: Vec::new(),
        })
    }

    /// Every `.sourceignore` that is a regular file, keyed by its directory (relative to the
    /// root), with its content: what [`crate::source::ignore::IgnoreRules::from_layers`]
    /// takes. Reads trees only, plus those few blobs.
    pub fn source_ignores(&mut self) -> Result<Vec<(PathBuf, String)>, PackError> {
        let mut found = Vec::new();
        let mut pending = vec![(PathBuf::new(), self.root)];
        while let Some((rel, id)) = pending.pop() {
            let mut own = None;
            for entry in self.entries(&id, &rel)? {
                match entry.kind {
                    EntryKind::Dir(sub) => pending.push((rel.join(&entry.name), sub)),
                    EntryKind::File(file) if entry.name == SOURCE_IGNORE_FILE => own = Some(file),
                    EntryKind::File(_) => {}
                }
            }
            if let Some((blob, _)) = own {
                let data = self.blob(&blob, &rel.join(SOURCE_IGNORE_FILE))?;
                found.push((rel, String::from_utf8_lossy(data).into_owned()));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    fn blob(&mut self, id: &ObjectId, rel: &Path) -> Result<&[u8], PackError> {
        let blob = self
            .repo
            .objects
            .find_blob(id, &mut self.buf)
            .map_err(|e| unreadable(rel, e))?;
        Ok(blob.data)
    }
}

fn unreadable(rel: &Path, e: impl std::fmt::Display) -> PackError {
    PackError::Read {
        path: rel.to_path_buf(),
        source: io::Error::other(format!("cannot read the object from the repository: {e}")),
    }
}

impl Tree for CommitTree {
    type Dir = ObjectId;
    /// The blob, and whether it is executable.
    type File = (ObjectId, bool);

    fn root(&self) -> ObjectId {
        self.root
    }

    fn entries(&mut self, dir: &ObjectId, rel: &Path) -> Result<Entries<Self>, PackError> {
        let tree = self
            .repo
            .objects
            .find_tree(dir, &mut self.buf)
            .map_err(|e| unreadable(rel, e))?;
        let mut entries = Vec::with_capacity(tree.entries.len());
        for entry in tree.entries {
            let id = entry.oid.to_owned();
            let kind = match entry.mode.kind() {
                GitKind::Tree => EntryKind::Dir(id),
                GitKind::Blob => EntryKind::File((id, false)),
                GitKind::BlobExecutable => EntryKind::File((id, true)),
                GitKind::Link | GitKind::Commit => continue,
            };
            entries.push(TreeEntry {
                name: os_string(entry.filename, rel)?,
                kind,
            });
        }
        Ok(entries)
    }

    fn content(
        &mut self,
        (id, executable): &(ObjectId, bool),
        rel: &Path,
    ) -> Result<Content<'_>, PackError> {
        let executable = *executable;
        Ok(Content::Bytes {
            data: self.blob(id, rel)?,
            executable,
        })
    }
}

#[cfg(unix)]
fn os_string(name: &gix::bstr::BStr, _: &Path) -> Result<OsString, PackError> {
    use std::os::unix::ffi::OsStrExt;
    Ok(std::ffi::OsStr::from_bytes(name).to_os_string())
}

#[cfg(not(unix))]
fn os_string(name: &gix::bstr::BStr, rel: &Path) -> Result<OsString, PackError> {
    std::str::from_utf8(name)
        .map(OsString::from)
        .map_err(|_| unreadable(rel, "a file name is not UTF-8"))
}
