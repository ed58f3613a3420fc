//! Durable file writes: temp file in the same directory, fsync, rename, fsync the directory.
//!
//! Every file gitopsd writes goes through here, so that a `kill -9` at any moment leaves either
//! the old content or the new one, never a mix, and a later start can continue from it.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written next to its final path; it becomes visible only on [`commit`].
///
/// Dropping it without committing removes the temp file.
///
/// [`commit`]: AtomicFile::commit
pub struct AtomicFile {
    temp: PathBuf,
    dest: PathBuf,
    file: Option<File>,
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
        Self::create_with_mode(dest, 0o666)
    }

    /// As [`AtomicFile::create`], for a file only gitopsd's user may read (0600): it exists
    /// with that mode from the start, so not even the temp file is ever readable by others.
    pub fn create_private(dest: &Path) -> io::Result<Self> {
        Self::create_with_mode(dest, 0o600)
    }

    fn create_with_mode(dest: &Path, mode: u32) -> io::Result<Self> {
        let dir = parent_dir(dest);
        fs::create_dir_all(dir)?;
        let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        // The temp name starts with a dot and ends in .tmp so that GC and listings skip it;
        // pid + counter keep concurrent writers apart.
        let temp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), unique()));
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        #[cfg(not(unix))]
        let _ = mode;
        let file = options.open(&temp)?;
        Ok(Self {
            temp,
            dest: dest.to_path_buf(),
            file: Some(file),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is present until commit")
    }

    /// Flush to disk, rename over the destination, and make the rename durable.
    pub fn commit(mut self) -> io::Result<()> {
        let file = self.file.take().expect("file is present until commit");
        file.sync_all()?;
        drop(file);
        fs::rename(&self.temp, &self.dest)?;
        sync_dir(parent_dir(&self.dest))
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file().write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file().flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Write `bytes` to `dest` atomically and durably.
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// [`write`], for a file that may hold anything secret: mode 0600 (see
/// [`AtomicFile::create_private`]). A file that already exists with a wider mode is replaced,
/// so it ends up 0600 too.
pub fn write_private(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create_private(dest)?;
    f.write_all(bytes)?;
    f.commit()
}

/// `create_dir_all`, where every directory it creates is 0700 (existing ones are left as
/// they are): for directories below the state dir that hold credentials or cached content.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// fsync a directory so that renames and unlinks inside it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// A process-wide counter for temp names.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_write_leaves_nothing_and_commit_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a.txt");
        write(&dest, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&dest).unwrap();
            f.write_all(b"half").unwrap();
        }
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        write(&dest, b"new").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn private_files_and_dirs_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("state.json");
        write(&dest, b"old").unwrap();
        fs::set_permissions(&dest, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&dest, b"new").unwrap();
        assert_eq!(mode(&dest), 0o600);
        assert_eq!(fs::read(&dest).unwrap(), b"new");

        let nested = dir.path().join("a/b");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        assert_eq!(mode(&nested), 0o700);
    }
}
