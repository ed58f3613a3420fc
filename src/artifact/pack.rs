//! Reproducible `tar.gz` artifacts: the same tree gives the same bytes, always.
//!
//! What makes the bytes a function of the tree alone (Flux's rules, see FLUX-SEMANTICS.md):
//! - Entries are sorted by their tar name as raw bytes, where a directory's name carries a
//!   trailing `/`. The walk reaches that order by sorting each directory's children by
//!   `name` (files) or `name/` (directories) and descending depth-first, so `a-b` comes before
//!   `a/` and `a/x`, exactly as a byte-wise sort of the full names would put them. (Go's
//!   `filepath.Walk`, used by Flux, sorts by bare name instead; only names that differ right
//!   where one has a `/` order differently.)
//! - Only regular files and directories; symlinks, sockets, devices and fifos are dropped.
//!   There is no entry for the root.
//! - Every header: uid/gid 0, empty user and group names, mtime 0, mode 0750 for directories,
//!   0700 for files with any execute bit, 0600 for other files. GNU format; names over 100
//!   bytes use a GNU long-name (`L`) entry whose own header is fixed too. The archive ends
//!   with two zero blocks and no further record padding.
//! - gzip: flate2 pinned at 1.1.11 on the zlib-rs backend, level 6 (pinned: another level,
//!   backend or release may emit other bytes); header with mtime 0, no name, no comment, no
//!   extra field, OS byte 255 ("unknown").
//!
//! Packing is a three-stage pipeline because deflate is the bottleneck and should have a core
//! to itself: a walker thread reads files straight into 1 MiB tar chunks, a compressor thread
//! deflates them, and the calling thread hashes and writes the compressed chunks to `out`
//! (which need not be `Send`). Chunk buffers are recycled between stages.

//!
//! The [`Tree`] being packed is in `tree.rs`, unpacking in `extract.rs`; [`PackError`] covers
//! all three, as one artifact's life crosses them.

use super::ignore::IgnoreRules;
use super::tree::{os_bytes, Content, DirTree, EntryKind, Tree};
use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};

/// The pinned deflate level; changing it changes every artifact's digest.
pub const GZIP_LEVEL: u32 = 6;

pub(super) const MODE_DIR: u32 = 0o750;
pub(super) const MODE_FILE: u32 = 0o600;
pub(super) const MODE_EXEC: u32 = 0o700;
pub(super) const BLOCK: usize = 512;
const TAR_CHUNK: usize = 1 << 20;
const GZ_CHUNK: usize = 256 << 10;
/// Chunks in flight between two stages; bounds memory at a few MiB.
const QUEUE: usize = 4;

/// The result of packing: what the artifact's consumers verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// `sha256:<hex>` over the compressed bytes.
    pub digest: String,
    /// Compressed size in bytes.
    pub size: u64,
}

pub use super::error::PackError;

/// Stream the tree at `dir` (filtered by `rules`) as tar.gz into `out`, hashing as it goes.
pub fn pack_dir(dir: &Path, rules: &IgnoreRules, out: impl Write) -> Result<Packed, PackError> {
    pack_tree(DirTree::new(dir)?, rules, out)
}

/// Stream `tree` (filtered by `rules`) as tar.gz into `out`, hashing as it goes.
pub fn pack_tree<T: Tree>(
    mut tree: T,
    rules: &IgnoreRules,
    mut out: impl Write,
) -> Result<Packed, PackError> {
    std::thread::scope(|scope| {
        let (tar_tx, tar_rx) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (tar_free_tx, tar_free_rx) = mpsc::channel::<Chunk>();
        let (gz_tx, gz_rx) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (gz_free_tx, gz_free_rx) = mpsc::channel::<Chunk>();

        let walker = scope.spawn(move || {
            let mut tar = TarStream::new(tar_tx, tar_free_rx);
            let mut name = Vec::with_capacity(256);
            let root = tree.root();
            walk(
                &mut tree,
                &root,
                &mut PathBuf::new(),
                &mut name,
                rules,
                &mut tar,
            )?;
            tar.finish()
        });

        let compressor = scope.spawn(move || -> io::Result<()> {
            let sink = ChunkSink::new(gz_tx, gz_free_rx);
            let mut gz = gzip_writer(sink);
            for chunk in tar_rx {
                gz.write_all(chunk.filled())?;
                let _ = tar_free_tx.send(chunk);
            }
            gz.finish()?.finish()
        });

        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut write_error = None;
        for chunk in gz_rx {
            hasher.update(chunk.filled());
            size += chunk.len as u64;
            if let Err(err) = out.write_all(chunk.filled()) {
                write_error = Some(err);
                break;
            }
            let _ = gz_free_tx.send(chunk);
        }
        if write_error.is_none() {
            write_error = out.flush().err();
        }

        let walked = walker
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let compressed = compressor
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        // When a later stage stops, the earlier ones fail on a closed channel; report the cause.
        if let Some(err) = write_error {
            return Err(PackError::Write(err));
        }
        compressed.map_err(PackError::Write)?;
        walked?;
        Ok(Packed {
            digest: format!("sha256:{}", hex::encode(hasher.finalize())),
            size,
        })
    })
}

pub(super) fn gzip_writer<W: Write>(inner: W) -> GzEncoder<W> {
    GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(inner, Compression::new(GZIP_LEVEL))
}

/// A fixed-size buffer and how much of it is used; recycled, so never zeroed twice.
struct Chunk {
    data: Box<[u8]>,
    len: usize,
}

impl Chunk {
    fn new(capacity: usize) -> Self {
        Chunk {
            data: vec![0; capacity].into_boxed_slice(),
            len: 0,
        }
    }
    fn filled(&self) -> &[u8] {
        &self.data[..self.len]
    }
    fn room(&self) -> usize {
        self.data.len() - self.len
    }
}

fn closed_channel() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "packing pipeline stopped")
}

/// Collects compressed output into chunks for the hashing/writing stage.
struct ChunkSink {
    tx: SyncSender<Chunk>,
    free: Receiver<Chunk>,
    chunk: Chunk,
}

impl ChunkSink {
    fn new(tx: SyncSender<Chunk>, free: Receiver<Chunk>) -> Self {
        ChunkSink {
            tx,
            free,
            chunk: Chunk::new(GZ_CHUNK),
        }
    }
    fn send(&mut self) -> io::Result<()> {
        if self.chunk.len == 0 {
            return Ok(());
        }
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Chunk::new(GZ_CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.chunk.len = 0;
        self.tx.send(full).map_err(|_| closed_channel())
    }
    fn finish(mut self) -> io::Result<()> {
        self.send()
    }
}

impl Write for ChunkSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.chunk.room() == 0 {
            self.send()?;
        }
        let n = buf.len().min(self.chunk.room());
        let start = self.chunk.len;
        self.chunk.data[start..start + n].copy_from_slice(&buf[..n]);
        self.chunk.len += n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Writes tar blocks into chunks, reading file contents straight into them.
struct TarStream {
    tx: SyncSender<Chunk>,
    free: Receiver<Chunk>,
    chunk: Chunk,
}

impl TarStream {
    fn new(tx: SyncSender<Chunk>, free: Receiver<Chunk>) -> Self {
        TarStream {
            tx,
            free,
            chunk: Chunk::new(TAR_CHUNK),
        }
    }

    fn send(&mut self) -> Result<(), PackError> {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Chunk::new(TAR_CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.chunk.len = 0;
        self.tx
            .send(full)
            .map_err(|_| PackError::Write(closed_channel()))
    }

    fn put(&mut self, mut bytes: &[u8]) -> Result<(), PackError> {
        while !bytes.is_empty() {
            if self.chunk.room() == 0 {
                self.send()?;
            }
            let n = bytes.len().min(self.chunk.room());
            let start = self.chunk.len;
            self.chunk.data[start..start + n].copy_from_slice(&bytes[..n]);
            self.chunk.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }

    fn pad(&mut self, written: u64) -> Result<(), PackError> {
        let rest = (BLOCK - (written % BLOCK as u64) as usize) % BLOCK;
        self.put(&[0u8; BLOCK][..rest])
    }

    /// Copy exactly `size` bytes of `file`, then check it has nothing more.
    fn copy_file(&mut self, file: &mut dyn Read, size: u64, path: &Path) -> Result<(), PackError> {
        let mut remaining = size;
        while remaining > 0 {
            if self.chunk.room() == 0 {
                self.send()?;
            }
            let want = (self.chunk.room() as u64).min(remaining) as usize;
            let start = self.chunk.len;
            let n = match file.read(&mut self.chunk.data[start..start + want]) {
                Ok(0) => {
                    return Err(PackError::Changed {
                        path: path.to_path_buf(),
                        expected: size,
                    })
                }
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(PackError::Read {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            };
            self.chunk.len += n;
            remaining -= n as u64;
        }
        let mut probe = [0u8; 1];
        if file.read(&mut probe).map_err(|source| PackError::Read {
            path: path.to_path_buf(),
            source,
        })? != 0
        {
            return Err(PackError::Changed {
                path: path.to_path_buf(),
                expected: size,
            });
        }
        self.pad(size)
    }

    fn header(
        &mut self,
        name: &[u8],
        kind: tar::EntryType,
        mode: u32,
        size: u64,
    ) -> Result<(), PackError> {
        let mut header = tar::Header::new_gnu();
        let field_len = header.as_old().name.len();
        if name.len() > field_len {
            // GNU long name: a pseudo-entry whose data is the NUL-terminated full name.
            let mut long = tar::Header::new_gnu();
            let tag = b"././@LongLink";
            long.as_old_mut().name[..tag.len()].copy_from_slice(tag);
            fill(
                &mut long,
                tar::EntryType::GNULongName,
                0o644,
                name.len() as u64 + 1,
            );
            self.put(long.as_bytes())?;
            self.put(name)?;
            self.put(&[0])?;
            self.pad(name.len() as u64 + 1)?;
        }
        let shown = &name[..name.len().min(field_len)];
        header.as_old_mut().name[..shown.len()].copy_from_slice(shown);
        fill(&mut header, kind, mode, size);
        self.put(header.as_bytes())
    }

    fn finish(mut self) -> Result<(), PackError> {
        self.put(&[0u8; 2 * BLOCK])?;
        if self.chunk.len > 0 {
            let last = std::mem::replace(&mut self.chunk, Chunk::new(0));
            self.tx
                .send(last)
                .map_err(|_| PackError::Write(closed_channel()))?;
        }
        Ok(())
    }
}

pub(super) fn fill(header: &mut tar::Header, kind: tar::EntryType, mode: u32, size: u64) {
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_cksum();
}

struct Child<D, F> {
    name: std::ffi::OsString,
    /// `name`, plus `/` for a directory: the order of tar names.
    key: Vec<u8>,
    kind: EntryKind<D, F>,
}

/// Depth-first, children sorted by `key`; `rel` and `name` track the current directory.
fn walk<T: Tree>(
    tree: &mut T,
    dir: &T::Dir,
    rel: &mut PathBuf,
    name: &mut Vec<u8>,
    rules: &IgnoreRules,
    tar: &mut TarStream,
) -> Result<(), PackError> {
    let mut children: Vec<Child<T::Dir, T::File>> = Vec::new();
    for entry in tree.entries(dir, rel)? {
        let mut key = os_bytes(&entry.name).to_vec();
        if let Some(reason) = unsafe_component(&key) {
            let mut path = String::from_utf8_lossy(name).into_owned();
            path.push_str(&String::from_utf8_lossy(&key));
            return Err(PackError::UnsafeName {
                path,
                reason: reason.into(),
            });
        }
        if matches!(entry.kind, EntryKind::Dir(_)) {
            key.push(b'/');
        }
        children.push(Child {
            name: entry.name,
            key,
            kind: entry.kind,
        });
    }
    children.sort_unstable_by(|a, b| a.key.cmp(&b.key));

    let name_len = name.len();
    for child in children {
        rel.push(&child.name);
        let is_dir = matches!(child.kind, EntryKind::Dir(_));
        if !rules.excludes_entry(rel, is_dir) {
            name.extend_from_slice(&child.key);
            match child.kind {
                EntryKind::Dir(sub) => {
                    tar.header(name, tar::EntryType::Directory, MODE_DIR, 0)?;
                    walk(tree, &sub, rel, name, rules, tar)?;
                }
                EntryKind::File(file) => pack_file(tree.content(&file, rel)?, name, tar)?,
            }
            name.truncate(name_len);
        }
        rel.pop();
    }
    Ok(())
}

/// Why `name` cannot be one component of a tar entry's name, whatever tree it came from: the
/// last line of defence for what [`extract`] (and any tar tool) would otherwise resolve outside
/// its destination. Trees check their own, stricter rules first (git's: `source::git::tree`).
fn unsafe_component(name: &[u8]) -> Option<&'static str> {
    match name {
        b"" => Some("an entry has an empty name, which makes the path absolute"),
        b"." | b".." => Some(
            "an entry is named `.` or `..`, which would reach outside the directory the \
             artifact is extracted into",
        ),
        _ if name.contains(&b'/') => Some("an entry's name contains `/`"),
        _ if name.contains(&0) => Some("an entry's name contains a NUL byte"),
        _ => None,
    }
}

fn pack_file(content: Content<'_>, name: &[u8], tar: &mut TarStream) -> Result<(), PackError> {
    let mode = |executable| if executable { MODE_EXEC } else { MODE_FILE };
    match content {
        Content::Stream {
            mut reader,
            size,
            executable,
            path,
        } => {
            tar.header(name, tar::EntryType::Regular, mode(executable), size)?;
            tar.copy_file(&mut reader, size, &path)
        }
        Content::Bytes { data, executable } => {
            let size = data.len() as u64;
            tar.header(name, tar::EntryType::Regular, mode(executable), size)?;
            tar.put(data)?;
            tar.pad(size)
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::artifact::extract::extract;
    use crate::artifact::tree::{Entries, TreeEntry};
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    pub(crate) fn write(root: &Path, rel: &str, content: &[u8]) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    pub(crate) fn no_rules() -> IgnoreRules {
        IgnoreRules::for_bucket(None, None).unwrap()
    }

    pub(crate) fn pack(dir: &Path, rules: &IgnoreRules) -> (Vec<u8>, Packed) {
        let mut bytes = Vec::new();
        let packed = pack_dir(dir, rules, &mut bytes).unwrap();
        (bytes, packed)
    }

    struct Seen {
        name: Vec<u8>,
        kind: tar::EntryType,
        mode: u32,
        content: Vec<u8>,
    }

    fn entries(bytes: &[u8]) -> Vec<Seen> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.mtime().unwrap(), 0);
            assert_eq!(header.username_bytes(), Some(&b""[..]));
            assert_eq!(header.groupname_bytes(), Some(&b""[..]));
            let name = entry.path_bytes().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            seen.push(Seen {
                name,
                kind: header.entry_type(),
                mode: header.mode().unwrap(),
                content,
            });
        }
        seen
    }

    pub(crate) fn sample_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "b.yaml", b"kind: B\n");
        write(root, "a/x.yaml", b"kind: X\n");
        write(root, "a-b", b"dash\n");
        write(root, "a/nested/deep.yaml", &vec![b'y'; 70_000]);
        write(root, "run.sh", b"#!/bin/sh\necho hi\n");
        fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        write(root, "group-exec", b"x");
        fs::set_permissions(root.join("group-exec"), fs::Permissions::from_mode(0o610)).unwrap();
        fs::create_dir_all(root.join("empty")).unwrap();
        std::os::unix::fs::symlink("b.yaml", root.join("link.yaml")).unwrap();
        std::os::unix::fs::symlink("a", root.join("linkdir")).unwrap();
        write(root, ".git/HEAD", b"ref: refs/heads/main\n");
        dir
    }

    #[test]
    fn same_tree_same_bytes() {
        let dir = sample_tree();
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        let (first, packed) = pack(dir.path(), &rules);
        let (second, again) = pack(dir.path(), &rules);
        assert_eq!(first, second);
        assert_eq!(packed, again);
        assert_eq!(packed.size, first.len() as u64);
        assert_eq!(
            packed.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&first)))
        );

        // A copy made at another time, with other mtimes and modes, packs identically.
        let copy = tempfile::tempdir().unwrap();
        for (rel, content) in [
            ("a/nested/deep.yaml", vec![b'y'; 70_000]),
            ("a-b", b"dash\n".to_vec()),
            ("b.yaml", b"kind: B\n".to_vec()),
            ("a/x.yaml", b"kind: X\n".to_vec()),
            ("run.sh", b"#!/bin/sh\necho hi\n".to_vec()),
            ("group-exec", b"x".to_vec()),
        ] {
            write(copy.path(), rel, &content);
        }
        fs::set_permissions(
            copy.path().join("run.sh"),
            fs::Permissions::from_mode(0o500),
        )
        .unwrap();
        fs::set_permissions(
            copy.path().join("group-exec"),
            fs::Permissions::from_mode(0o601),
        )
        .unwrap();
        fs::set_permissions(
            copy.path().join("b.yaml"),
            fs::Permissions::from_mode(0o444),
        )
        .unwrap();
        fs::create_dir_all(copy.path().join("empty")).unwrap();
        let (third, _) = pack(copy.path(), &rules);
        assert_eq!(first, third);
    }

    /// Pins the byte format: a change here means every artifact digest changes (a tar layout
    /// change, or a gzip backend/level/version change). Update deliberately, never casually.
    #[test]
    fn golden_digest() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", b"apiVersion: v1\nkind: ConfigMap\n");
        write(dir.path(), "bin/run.sh", b"#!/bin/sh\nexit 0\n");
        fs::set_permissions(
            dir.path().join("bin/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        write(
            dir.path(),
            &format!("deep/{}.yaml", "x".repeat(110)),
            &[b'z'; 3000],
        );
        fs::create_dir_all(dir.path().join("empty")).unwrap();
        let (bytes, packed) = pack(dir.path(), &no_rules());
        assert_eq!(packed.size, bytes.len() as u64);
        assert_eq!(
            packed.digest,
            "sha256:7d43f7ed8936f674b3bff16b6bfa1fa91240b29ffa7a695eb589ce6c28f66817"
        );
    }

    #[test]
    fn headers_order_and_types() {
        let dir = sample_tree();
        let rules = IgnoreRules::for_git(dir.path(), None).unwrap();
        let (bytes, _) = pack(dir.path(), &rules);
        // Deterministic gzip header: magic, deflate, no flags, mtime 0, xfl 0, OS 255.
        assert_eq!(&bytes[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);

        let seen = entries(&bytes);
        let names: Vec<String> = seen
            .iter()
            .map(|e| String::from_utf8(e.name.clone()).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "a-b",
                "a/",
                "a/nested/",
                "a/nested/deep.yaml",
                "a/x.yaml",
                "b.yaml",
                "empty/",
                "group-exec",
                "run.sh",
            ]
        );
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "stream order is the byte order of the names");
        for entry in &seen {
            let expected = match (entry.kind, entry.name.as_slice()) {
                (tar::EntryType::Directory, _) => 0o750,
                (tar::EntryType::Regular, b"run.sh" | b"group-exec") => 0o700,
                (tar::EntryType::Regular, _) => 0o600,
                (other, _) => panic!("unexpected entry type {other:?}"),
            };
            assert_eq!(
                entry.mode,
                expected,
                "{:?}",
                String::from_utf8_lossy(&entry.name)
            );
        }
        let deep = seen
            .iter()
            .find(|e| e.name == b"a/nested/deep.yaml")
            .unwrap();
        assert_eq!(deep.content, vec![b'y'; 70_000]);
    }

    #[test]
    fn excluded_directory_contributes_nothing() {
        let dir = sample_tree();
        let rules = IgnoreRules::for_git(dir.path(), Some("/a/\n")).unwrap();
        let (bytes, _) = pack(dir.path(), &rules);
        let seen = entries(&bytes);
        assert!(seen.iter().all(|e| !e.name.starts_with(b"a/")));
        assert!(seen.iter().any(|e| e.name == b"a-b"));
    }

    #[test]
    fn unicode_and_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let long_file = format!("{}.yaml", "n".repeat(115));
        assert_eq!(long_file.len(), 120);
        let long_dir = "d".repeat(120);
        let unicode = "überprüfung/配置-ñ.yaml";
        write(dir.path(), &long_file, b"long\n");
        write(dir.path(), &format!("{long_dir}/{long_file}"), b"longer\n");
        write(dir.path(), unicode, "ünï\n".as_bytes());
        write(dir.path(), &"e".repeat(100), b"exactly 100\n");
        let rules = no_rules();
        let (bytes, _) = pack(dir.path(), &rules);
        let (again, _) = pack(dir.path(), &rules);
        assert_eq!(bytes, again);
        let names: Vec<String> = entries(&bytes)
            .into_iter()
            .map(|e| String::from_utf8(e.name).unwrap())
            .collect();
        let mut expected = vec![
            format!("{long_dir}/"),
            format!("{long_dir}/{long_file}"),
            "e".repeat(100),
            long_file.clone(),
            "überprüfung/".to_string(),
            unicode.to_string(),
        ];
        expected.sort();
        assert_eq!(names, expected);

        let out = tempfile::tempdir().unwrap();
        let artifact = out.path().join("a.tar.gz");
        fs::write(&artifact, &bytes).unwrap();
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        extract(&artifact, &digest, &out.path().join("x")).unwrap();
        assert_eq!(
            fs::read(out.path().join("x").join(&long_dir).join(&long_file)).unwrap(),
            b"longer\n"
        );
        assert_eq!(
            fs::read(out.path().join("x").join(unicode)).unwrap(),
            "ünï\n".as_bytes()
        );
    }

    /// A tree that lists whatever names it is given, as a crafted git tree can.
    struct Listed(Vec<&'static [u8]>);

    impl Tree for Listed {
        type Dir = ();
        type File = ();
        fn root(&self) {}
        fn entries(&mut self, _: &(), rel: &Path) -> Result<Entries<Self>, PackError> {
            use std::os::unix::ffi::OsStrExt;
            if !rel.as_os_str().is_empty() {
                return Ok(Vec::new());
            }
            Ok(self
                .0
                .iter()
                .map(|name| TreeEntry {
                    name: std::ffi::OsStr::from_bytes(name).to_os_string(),
                    kind: EntryKind::Dir(()),
                })
                .collect())
        }
        fn content(&mut self, _: &(), _: &Path) -> Result<Content<'_>, PackError> {
            Ok(Content::Bytes {
                data: b"",
                executable: false,
            })
        }
    }

    #[test]
    fn names_that_escape_are_refused_whatever_the_tree() {
        for bad in [&b""[..], b".", b"..", b"a/../../x", b"/etc", b"nul\0byte"] {
            let err = pack_tree(Listed(vec![b"ok", bad]), &no_rules(), io::sink()).unwrap_err();
            assert!(
                matches!(&err, PackError::UnsafeName { path, .. } if path.as_bytes() == bad),
                "{err}"
            );
        }
        pack_tree(Listed(vec![b"ok", b"..."]), &no_rules(), io::sink()).unwrap();
    }

    #[test]
    fn missing_dir_is_an_error() {
        let err = pack_dir(Path::new("/nonexistent/gitopsd"), &no_rules(), io::sink()).unwrap_err();
        assert!(matches!(err, PackError::Read { .. }));
    }

    #[test]
    fn write_failure_is_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let dir = sample_tree();
        let err = pack_dir(dir.path(), &no_rules(), Broken).unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
