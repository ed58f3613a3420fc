//! What the packer walks: the [`Tree`] contract, and [`DirTree`], a directory on disk.
//!
//! The contract sits with the packer rather than with the sources: the packer decides the walk
//! order, the names and every header field, and a source only lists entries and hands out
//! bytes. `source::git::tree` implements it over a commit's objects, so this module knows
//! nothing of git (and nothing of sources at all).

use super::error::PackError;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A tree to pack: the directory entries and file bytes of a snapshot. The walk order, the
/// names and every header field are decided here alone, so two trees with the same content
/// give the same bytes whatever they are: a directory on disk ([`DirTree`]) or a commit read
/// straight from a git object database (`source::git::tree`), which spares a git source
/// writing its files out only to read them back.
pub trait Tree: Send {
    /// How the tree finds a directory again (a git tree id; on disk the path is enough).
    type Dir: Send;
    /// How the tree finds a file again.
    type File: Send;

    fn root(&self) -> Self::Dir;
    /// The regular files and directories in `dir` (at `rel`), in any order. Anything else
    /// (symlinks, submodules, devices) is left out: artifacts hold files and directories only.
    fn entries(&mut self, dir: &Self::Dir, rel: &Path) -> Result<Entries<Self>, PackError>;
    /// The content of a file listed by [`Tree::entries`].
    fn content(&mut self, file: &Self::File, rel: &Path) -> Result<Content<'_>, PackError>;
}

/// The entries of one directory of `T`.
pub type Entries<T> = Vec<TreeEntry<<T as Tree>::Dir, <T as Tree>::File>>;

pub struct TreeEntry<D, F> {
    pub name: std::ffi::OsString,
    pub kind: EntryKind<D, F>,
}

pub enum EntryKind<D, F> {
    Dir(D),
    File(F),
}

/// A file's bytes: streamed from a reader (a file on disk, a large git blob inflated from its
/// pack), or already in memory (a small git blob).
pub enum Content<'a> {
    Stream {
        reader: Box<dyn Read + 'a>,
        /// The size announced (a file's when it was opened); packing fails unless the
        /// reader gives exactly this many bytes.
        size: u64,
        executable: bool,
        /// For messages.
        path: PathBuf,
    },
    Bytes {
        data: &'a [u8],
        executable: bool,
    },
}

/// A directory on disk.
pub struct DirTree {
    root: PathBuf,
}

impl DirTree {
    pub fn new(root: &Path) -> Result<DirTree, PackError> {
        let meta = fs::metadata(root).map_err(|source| PackError::Read {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(PackError::Read {
                path: root.to_path_buf(),
                source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
            });
        }
        Ok(DirTree {
            root: root.to_path_buf(),
        })
    }
}

impl Tree for DirTree {
    type Dir = ();
    type File = ();

    fn root(&self) {}

    fn entries(&mut self, _: &(), rel: &Path) -> Result<Entries<Self>, PackError> {
        let dir = self.root.join(rel);
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PackError::Read { path, source }
        };
        let mut entries = Vec::new();
        for entry in fs::read_dir(&dir).map_err(read_err(&dir))? {
            let entry = entry.map_err(read_err(&dir))?;
            let file_type = entry.file_type().map_err(read_err(&entry.path()))?;
            let kind = if file_type.is_dir() {
                EntryKind::Dir(())
            } else if file_type.is_file() {
                EntryKind::File(())
            } else {
                continue;
            };
            entries.push(TreeEntry {
                name: entry.file_name(),
                kind,
            });
        }
        Ok(entries)
    }

    fn content(&mut self, _: &(), rel: &Path) -> Result<Content<'_>, PackError> {
        let path = self.root.join(rel);
        let err = |source| PackError::Read {
            path: path.clone(),
            source,
        };
        let listed = fs::symlink_metadata(&path).map_err(err)?;
        let file = File::open(&path).map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        // The walk saw a regular file; refuse anything swapped in since (a symlink, say).
        if !listed.is_file() || !meta.is_file() || !same_inode(&listed, &meta) {
            return Err(PackError::Changed {
                path,
                expected: listed.len(),
            });
        }
        Ok(Content::Stream {
            reader: Box::new(file),
            size: meta.len(),
            executable: is_executable(&meta),
            path,
        })
    }
}

#[cfg(unix)]
pub(super) fn os_bytes(name: &std::ffi::OsStr) -> &[u8] {
    use std::os::unix::ffi::OsStrExt;
    name.as_bytes()
}

#[cfg(not(unix))]
pub(super) fn os_bytes(name: &std::ffi::OsStr) -> &[u8] {
    name.to_str()
        .expect("non-UTF-8 file names are supported on Unix only")
        .as_bytes()
}

#[cfg(unix)]
fn same_inode(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_inode(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    true
}

#[cfg(unix)]
fn is_executable(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

#[cfg(not(unix))]
fn is_executable(_: &fs::Metadata) -> bool {
    false
}
