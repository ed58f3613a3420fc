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
//!
//! Tree entry names are untrusted: a crafted tree (`git hash-object --literally -t tree`) can
//! name an entry `..`, `a/../../x`, `.git` or nothing at all, which a tar tool extracting the
//! artifact would write outside its directory. Such a name fails the whole revision, with the
//! rules git applies before it checks a tree out ([`check_name`]).
//!
//! Blobs up to [`STREAM_OVER`] bytes are read whole; a larger one stored whole (not as a
//! delta) in a pack is inflated piece by piece straight from the pack file, so packing a
//! 1 GB file does not hold 1 GB in memory ([`PackedBlobs`]).

use crate::artifact::pack::{Content, Entries, EntryKind, PackError, Tree, TreeEntry};
use crate::source::ignore::SOURCE_IGNORE_FILE;
use gix::objs::tree::EntryKind as GitKind;
use gix::odb::pack;
use gix::prelude::FindExt;
use gix::ObjectId;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Blobs larger than this are streamed from their pack when they can be (see the module
/// docs); smaller ones are read whole, which is faster for the many small files of a
/// typical repository.
pub const STREAM_OVER: u64 = 4 << 20;

/// Why a fetched commit's tree cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read commit {commit}: {source}")]
    Unreadable {
        commit: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("commit {commit} is not in the fetched history ({source}); check that it exists on the remote")]
    NotFetched {
        commit: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub struct CommitTree {
    repo: gix::Repository,
    root: ObjectId,
    /// Where the last object read lives; [`Content::Bytes`] borrows it.
    buf: Vec<u8>,
    /// The repository's packs, opened on the first blob that might be streamed.
    packs: Option<PackedBlobs>,
}

impl CommitTree {
    /// The tree of `commit` in the repository at `repo_dir`.
    pub fn open(repo_dir: &Path, commit: &str) -> Result<CommitTree, TreeError> {
        let unreadable = |e: Box<dyn std::error::Error + Send + Sync>| TreeError::Unreadable {
            commit: commit.to_string(),
            source: e,
        };
        let mut repo = gix::open(repo_dir).map_err(|e| unreadable(e.into()))?;
        // Trees are read once each, blobs once each: a modest pack cache spares re-inflating
        // delta bases that many objects share.
        repo.object_cache_size_if_unset(4 << 20);
        let id = ObjectId::from_hex(commit.as_bytes()).map_err(|e| unreadable(e.into()))?;
        let root = repo
            .find_commit(id)
            .map_err(|e| TreeError::NotFetched {
                commit: commit.to_string(),
                source: e.into(),
            })?
            .tree_id()
            .map_err(|e| unreadable(e.into()))?
            .detach();
        Ok(CommitTree {
            repo,
            root,
            buf: Vec::new(),
            packs: None,
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

    /// The blob as a reader when it is large and stored whole in a pack; `None` otherwise.
    fn stream(&mut self, id: &ObjectId, rel: &Path) -> Result<Option<PackedBlob>, PackError> {
        let packs = match &mut self.packs {
            Some(packs) => packs,
            none => {
                let objects_dir = self.repo.objects.store_ref().path();
                let opened = PackedBlobs::open(objects_dir, self.repo.object_hash())
                    .map_err(|e| unreadable(rel, e))?;
                none.insert(opened)
            }
        };
        packs
            .open_blob(id, STREAM_OVER)
            .map_err(|e| unreadable(rel, e))
    }
}

/// The packs of a repository, for [`CommitTree::stream`]: each pack's index (to find an
/// object) and data file (to read its entry header), both memory-mapped by gix. The content
/// itself is read with plain file reads, so that it passes through the page cache only and
/// never counts towards the process's resident memory.
struct PackedBlobs {
    packs: Vec<(pack::index::File, pack::data::File)>,
}

impl PackedBlobs {
    fn open(objects_dir: &Path, kind: gix::hash::Kind) -> io::Result<PackedBlobs> {
        let mut packs = Vec::new();
        let dir = objects_dir.join("pack");
        let listing = match std::fs::read_dir(&dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(PackedBlobs { packs }),
            Err(e) => return Err(e),
        };
        for entry in listing {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "idx") {
                continue;
            }
            let data_path = path.with_extension("pack");
            // A pack without its data (a fetch killed half-way) holds nothing to read.
            let (Ok(index), Ok(data)) = (
                pack::index::File::at(&path, kind),
                pack::data::File::at(&data_path, kind),
            ) else {
                continue;
            };
            packs.push((index, data));
        }
        Ok(PackedBlobs { packs })
    }

    /// `id` as a reader of exactly its content, when it is a blob over `min_size` bytes
    /// stored whole (not as a delta) in one of the packs.
    fn open_blob(&self, id: &ObjectId, min_size: u64) -> io::Result<Option<PackedBlob>> {
        for (index, data) in &self.packs {
            let Some(at) = index.lookup(id) else { continue };
            let offset = index.pack_offset_at_index(at);
            let entry = data.entry(offset).map_err(io::Error::other)?;
            if !matches!(entry.header, pack::data::entry::Header::Blob)
                || entry.decompressed_size <= min_size
            {
                return Ok(None);
            }
            let mut file = File::open(data.path())?;
            file.seek(SeekFrom::Start(entry.data_offset))?;
            let inflate =
                flate2::bufread::ZlibDecoder::new(BufReader::with_capacity(64 << 10, file));
            return Ok(Some(PackedBlob {
                inflate,
                size: entry.decompressed_size,
            }));
        }
        Ok(None)
    }
}

/// A blob's content inflated from its pack entry as it is read. The packer reads exactly
/// `size` bytes and then checks for the end, which makes zlib verify the entry's checksum.
struct PackedBlob {
    inflate: flate2::bufread::ZlibDecoder<BufReader<File>>,
    size: u64,
}

impl Read for PackedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inflate.read(buf)
    }
}

/// Whether git would check out an entry of this name: not empty, `.` or `..`, no `/`, and not
/// `.git` in any spelling that names the repository's own directory on some file system
/// (`.GIT`, `.git.`, `git~1`: git's `core.protectNTFS`, on by default everywhere). The reason
/// when not.
pub fn check_name(name: &[u8]) -> Result<(), UnsafeName> {
    let options = gix::validate::path::component::Options {
        // Windows-only rules (`\`, device names, `:`) are git's on Windows only.
        protect_windows: false,
        protect_hfs: false,
        protect_ntfs: true,
    };
    gix::validate::path::component(name.into(), None, options)
        .map(drop)
        .map_err(|e| {
            use gix::validate::path::component::Error;
            match e {
                Error::Empty => UnsafeName::Empty,
                Error::Relative => UnsafeName::Relative,
                Error::PathSeparator => UnsafeName::PathSeparator,
                Error::DotGitDir => UnsafeName::DotGit,
                other => UnsafeName::Other(other),
            }
        })
}

/// Why git would refuse to check out an entry name (see [`check_name`]).
#[derive(Debug, thiserror::Error)]
pub enum UnsafeName {
    #[error("an entry has an empty name, which makes the path absolute")]
    Empty,
    #[error(
        "an entry is named `.` or `..`, which would reach outside the directory the artifact is \
         extracted into"
    )]
    Relative,
    #[error("an entry's name contains `/`, which no tree entry may hold")]
    PathSeparator,
    #[error("an entry is named `.git`, which git reserves for itself")]
    DotGit,
    #[error(transparent)]
    Other(gix::validate::path::component::Error),
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
            // Symlinks and submodules are left out, but a name git would refuse fails the
            // revision whatever the entry is, as it fails git's checkout.
            if let Err(reason) = check_name(entry.filename) {
                return Err(PackError::UnsafeName {
                    path: shown_path(rel, entry.filename),
                    reason: reason.to_string(),
                });
            }
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
        if let Some(blob) = self.stream(id, rel)? {
            return Ok(Content::Stream {
                size: blob.size,
                reader: Box::new(blob),
                executable,
                path: rel.to_path_buf(),
            });
        }
        // A large blob stored as a delta is rebuilt in memory (gix has no other way); the
        // buffer is not kept that large for the rest of the walk.
        if self.buf.capacity() as u64 > STREAM_OVER {
            self.buf = Vec::new();
        }
        Ok(Content::Bytes {
            data: self.blob(id, rel)?,
            executable,
        })
    }
}

/// `rel/name` for a message, `/`-separated and lossy.
fn shown_path(rel: &Path, name: &[u8]) -> String {
    let mut shown = String::new();
    for part in rel.components() {
        shown.push_str(&part.as_os_str().to_string_lossy());
        shown.push('/');
    }
    shown.push_str(&String::from_utf8_lossy(name));
    shown
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_git_would_not_check_out_are_refused() {
        for bad in [
            &b""[..],
            b".",
            b"..",
            b"a/../../x",
            b"/etc",
            b".git",
            b".GIT",
            b".git.",
            b"git~1",
        ] {
            assert!(
                check_name(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for good in [
            &b"app"[..],
            b".gitignore",
            b".github",
            b"...",
            b"a\\b",
            b"x.git",
        ] {
            assert!(
                check_name(good).is_ok(),
                "{:?}",
                String::from_utf8_lossy(good)
            );
        }
    }

    #[test]
    fn shown_paths_are_slash_separated() {
        assert_eq!(shown_path(Path::new(""), b".."), "..");
        assert_eq!(shown_path(Path::new("a/b"), b"x/y"), "a/b/x/y");
    }
}
