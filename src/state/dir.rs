//! The state directory is the daemon's alone: it is checked, locked and cleaned here, once, at
//! start.
//!
//! - A stateDir that is `/` or a system directory (`/var`, `/tmp`, `/etc`, ...) is refused: the
//!   daemon creates and removes files below it, and a typo there must not reach the host's own
//!   files. So is one owned by another user: its contents could have been planted.
//! - An exclusive `flock` on `<stateDir>/lock` keeps a second daemon (or `run --once`) off the
//!   same directory; two writers would flip state.json and fight over the git caches. The lock
//!   dies with the process, so a `kill -9` never leaves a stale lock behind.
//! - Scratch space lives in `<stateDir>/scratch`, marked as gitopsd's by a marker file; only a
//!   marked scratch directory is emptied at start, and only of entries named the way
//!   [`ScratchDir`] names them. Nothing else below the state dir is ever removed wholesale.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name under the state dir; it holds the owner's pid, for the error message.
const LOCK_FILE: &str = "lock";
/// The scratch root's name under the state dir.
const SCRATCH_DIR: &str = "scratch";
/// Present in a scratch root that gitopsd made; without it, the directory is left alone.
const SCRATCH_MARKER: &str = ".gitopsd-scratch";
/// Every scratch directory's name starts with this, so that cleaning at start can tell
/// gitopsd's own leftovers from anything else.
const SCRATCH_PREFIX: &str = "gitopsd-";

/// Directories that are never a state dir (after symlinks are resolved): the root, the FHS's
/// top-level directories, and the shared parents a service's own directory lives in.
const SYSTEM_DIRECTORIES: &[&str] = &[
    "/",
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/local",
    "/usr/sbin",
    "/usr/share",
    "/var",
    "/var/cache",
    "/var/lib",
    "/var/log",
    "/var/run",
    "/var/spool",
    "/var/tmp",
];

#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    #[error(
        "stateDir {} is a system directory; gitopsd creates and deletes files in its state \
         directory, so give it one of its own such as /var/lib/gitopsd",
        path.display()
    )]
    SystemDirectory { path: PathBuf },
    #[error("stateDir {} exists and is not a directory", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "stateDir {} is owned by uid {owner}, not by uid {uid} that gitopsd runs as; \
         give gitopsd a directory of its own (or chown this one)",
        path.display()
    )]
    NotOwned { path: PathBuf, owner: u32, uid: u32 },
    #[error(
        "stateDir {} is in use by another gitopsd{}; stop it or give this one another stateDir",
        path.display(),
        match pid { Some(pid) => format!(" (pid {pid})"), None => String::new() }
    )]
    Locked { path: PathBuf, pid: Option<u32> },
    #[error(
        "{} was not made by gitopsd and is not empty; move it away so that gitopsd can use it \
         for scratch space",
        path.display()
    )]
    ForeignScratch { path: PathBuf },
    #[error("cannot prepare stateDir {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Suspensions(#[from] super::suspensions::SuspensionsError),
}

impl StateDirError {
    /// A problem with the configuration or with another process, not with this run: the CLI
    /// exits 2 for these, as for an invalid config.
    pub fn is_usage(&self) -> bool {
        !matches!(
            self,
            StateDirError::Io { .. } | StateDirError::Suspensions(_)
        )
    }
}

/// A checked, locked state directory. The lock is held for as long as this value lives.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    scratch: PathBuf,
    /// Holds the `flock`; closing it (drop, exit, `kill -9`) releases the lock.
    _lock: File,
}

impl StateDir {
    /// Check `path`, create it (0700) if missing, take the lock and clean gitopsd's scratch.
    pub fn open(path: &Path) -> Result<StateDir, StateDirError> {
        let io_error = |source| StateDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        refuse_system_directory(path)?;
        match fs::symlink_metadata(path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                crate::atomic::create_private_dir(path).map_err(io_error)?
            }
            Err(e) => return Err(io_error(e)),
        }
        // Resolve symlinks now that it exists: `/srv/state -> /var` is still `/var`.
        let path = fs::canonicalize(path).map_err(io_error)?;
        refuse_system_directory(&path)?;
        let meta = fs::metadata(&path).map_err(io_error)?;
        if !meta.is_dir() {
            return Err(StateDirError::NotADirectory { path });
        }
        let uid = effective_uid();
        if meta.uid() != uid {
            return Err(StateDirError::NotOwned {
                owner: meta.uid(),
                uid,
                path,
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            // Keys, caches and state below it are nobody else's business.
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(io_error)?;
        }
        let lock = lock(&path)?;
        let scratch = path.join(SCRATCH_DIR);
        clean_scratch(&scratch)?;
        Ok(StateDir {
            path,
            scratch,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new private scratch directory, removed when the value is dropped.
    pub fn scratch(&self, label: &str) -> io::Result<ScratchDir> {
        ScratchDir::new(&self.scratch, label)
    }
}

fn refuse_system_directory(path: &Path) -> Result<(), StateDirError> {
    let normalised: PathBuf = path.components().collect();
    if SYSTEM_DIRECTORIES
        .iter()
        .any(|system| normalised == Path::new(system))
    {
        return Err(StateDirError::SystemDirectory {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

fn lock(state_dir: &Path) -> Result<File, StateDirError> {
    let path = state_dir.join(LOCK_FILE);
    let io_error = |source| StateDirError::Io {
        path: path.clone(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io_error)?;
    // SAFETY: flock on an fd this function owns; it only takes an advisory lock.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::WouldBlock {
            return Err(io_error(error));
        }
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        return Err(StateDirError::Locked {
            path: state_dir.to_path_buf(),
            pid: text.trim().parse().ok(),
        });
    }
    // Written in place, not renamed over: the lock belongs to this inode. A torn pid only
    // makes a later error message less precise.
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_error)?;
    Ok(file)
}

/// Empty the scratch root of what earlier runs left, if gitopsd made it; make and mark it
/// otherwise.
fn clean_scratch(scratch: &Path) -> Result<(), StateDirError> {
    let io_error = |source| StateDirError::Io {
        path: scratch.to_path_buf(),
        source,
    };
    let marker = scratch.join(SCRATCH_MARKER);
    match fs::read_dir(scratch) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            crate::atomic::create_private_dir(scratch).map_err(io_error)?;
        }
        Err(e) => return Err(io_error(e)),
        Ok(entries) => {
            let entries: Vec<fs::DirEntry> = entries.collect::<Result<_, _>>().map_err(io_error)?;
            // An empty, unmarked directory is one a killed start made before it wrote the marker.
            if !marker.exists() && !entries.is_empty() {
                return Err(StateDirError::ForeignScratch {
                    path: scratch.to_path_buf(),
                });
            }
            for entry in entries {
                let name = entry.file_name();
                let ours = name.to_str().is_some_and(|n| n.starts_with(SCRATCH_PREFIX));
                if ours {
                    remove_entry(&entry.path()).map_err(io_error)?;
                }
            }
        }
    }
    if !marker.exists() {
        crate::atomic::write(&marker, b"gitopsd scratch space: emptied at every start\n")
            .map_err(io_error)?;
    }
    Ok(())
}

/// Remove a file or a directory tree without following symlinks out of it.
fn remove_entry(path: &Path) -> io::Result<()> {
    if fs::symlink_metadata(path)?.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// A private directory under `<stateDir>/scratch`, removed when dropped.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(root: &Path, label: &str) -> io::Result<ScratchDir> {
        let dir = root.join(format!(
            "{SCRATCH_PREFIX}{label}-{}-{}",
            std::process::id(),
            crate::atomic::unique()
        ));
        crate::atomic::create_private_dir(&dir)?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_system_directories() {
        for path in [
            "/",
            "/var",
            "/var/",
            "/tmp",
            "/etc",
            "/usr/local",
            "/var/lib/../tmp",
        ] {
            let err = StateDir::open(Path::new(path)).unwrap_err();
            assert!(
                matches!(err, StateDirError::SystemDirectory { .. }),
                "{path}: {err}"
            );
            assert!(err.is_usage());
        }
    }

    #[test]
    fn refuses_a_symlink_to_a_system_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("state");
        std::os::unix::fs::symlink("/var", &link).unwrap();
        let err = StateDir::open(&link).unwrap_err();
        assert!(
            matches!(err, StateDirError::SystemDirectory { .. }),
            "{err}"
        );
    }

    #[test]
    fn refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("state");
        fs::write(&file, "x").unwrap();
        let err = StateDir::open(&file).unwrap_err();
        assert!(matches!(err, StateDirError::NotADirectory { .. }), "{err}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn second_open_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let first = StateDir::open(tmp.path()).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err();
        match err {
            StateDirError::Locked { pid, .. } => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other}"),
        }
        drop(first);
        StateDir::open(tmp.path()).expect("the lock is released with its holder");
    }

    #[test]
    fn cleans_only_its_own_scratch() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::open(tmp.path()).unwrap();
        let leftover = state.scratch("web").unwrap();
        let leftover_path = leftover.path().to_path_buf();
        fs::write(leftover_path.join("f"), "x").unwrap();
        std::mem::forget(leftover); // as a kill -9 would leave it
        let foreign = tmp.path().join("scratch/keep-me");
        fs::write(&foreign, "x").unwrap();
        let other = tmp.path().join("tmp");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("user-file"), "x").unwrap();
        drop(state);

        let _state = StateDir::open(tmp.path()).unwrap();
        assert!(
            !leftover_path.exists(),
            "gitopsd's leftover scratch is removed"
        );
        assert!(foreign.exists(), "a file gitopsd did not name is kept");
        assert!(
            other.join("user-file").exists(),
            "<stateDir>/tmp is not touched"
        );
    }

    #[test]
    fn leaves_an_unmarked_scratch_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let scratch = tmp.path().join("scratch");
        fs::create_dir(&scratch).unwrap();
        fs::create_dir(scratch.join("gitopsd-looks-like-ours")).unwrap();
        let err = StateDir::open(tmp.path()).unwrap_err();
        assert!(matches!(err, StateDirError::ForeignScratch { .. }), "{err}");
        assert!(scratch.join("gitopsd-looks-like-ours").exists());
    }

    #[test]
    fn refuses_a_directory_of_another_user() {
        if effective_uid() != 0 {
            return; // only root can hand a directory to another user
        }
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("state");
        fs::create_dir(&path).unwrap();
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let err = StateDir::open(&path).unwrap_err();
        assert!(
            matches!(err, StateDirError::NotOwned { owner: 65534, .. }),
            "{err}"
        );
    }

    #[test]
    fn new_state_dir_is_private() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("a/state");
        let state = StateDir::open(&path).unwrap();
        let mode = fs::metadata(state.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
