//! The fallback where Landlock is missing: a user and mount namespace whose root holds only
//! what the build may read.
//!
//! The parent builds an empty skeleton (directories and empty files at the paths to be
//! mounted) and prepares every string; between fork and exec the child only makes system
//! calls: unshare, write its uid/gid maps, bind-mount the artifact, the binary and its
//! libraries into the skeleton read-only, `pivot_root` into it and detach the old root, so
//! that no path leads back to the host's files. Mount points keep the host's absolute paths,
//! so kustomize sees and reports the same paths as without the sandbox.

use std::ffi::{c_ulong, CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One bind mount into the new root.
struct Bind {
    source: CString,
    /// The mount point inside the skeleton.
    target: CString,
    /// Read-only: flags to remount with (the source's locked flags plus `MS_RDONLY`).
    /// `None`: writable.
    read_only: Option<c_ulong>,
}

/// Everything the child needs, prepared in the parent.
pub(super) struct Plan {
    unshare_flags: libc::c_int,
    uid_map: Vec<u8>,
    gid_map: Vec<u8>,
    new_root: CString,
    new_root_flags: c_ulong,
    binds: Vec<Bind>,
    /// Where the build runs, as seen inside the new root.
    workdir: CString,
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} contains a NUL byte", path.display()),
        )
    })
}

/// The mount flags a bind of `path` must keep when it is remounted: inside a user namespace
/// the kernel refuses to drop `nosuid`, `nodev`, `noexec` or the atime mode of a mount
/// inherited from the host.
fn locked_flags(path: &Path) -> io::Result<c_ulong> {
    let name = c_path(path)?;
    // SAFETY: `stat` is plain data the call fills in; `name` is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(name.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    Ok(pairs
        .iter()
        .filter(|(st, _)| stat.f_flag & st == *st)
        .fold(0, |flags, (_, ms)| flags | ms))
}

/// Builds the skeleton under `new_root` and the list of mounts.
pub(super) struct PlanBuilder {
    new_root: PathBuf,
    binds: Vec<Bind>,
}

impl PlanBuilder {
    pub(super) fn new(new_root: &Path) -> io::Result<PlanBuilder> {
        std::fs::create_dir_all(new_root)?;
        Ok(PlanBuilder {
            new_root: new_root.to_path_buf(),
            binds: Vec::new(),
        })
    }

    fn inside(&self, host: &Path) -> PathBuf {
        self.new_root.join(host.strip_prefix("/").unwrap_or(host))
    }

    /// Make `host` (absolute) visible at the same path, read-only unless `writable`.
    /// Symlinks on the way (`/bin` -> `usr/bin`, `/usr/bin/sh` -> `dash`) are recreated as
    /// symlinks and followed, so that the path as written resolves inside the sandbox too; a
    /// missing path is skipped.
    pub(super) fn expose(&mut self, host: &Path, writable: bool) -> io::Result<()> {
        let mut path = host.to_path_buf();
        // As the kernel does, give up on a chain of links that long.
        for _ in 0..40 {
            let Some((link, rest)) = first_symlink(&path) else {
                return self.bind(&path, writable);
            };
            let inside = self.inside(&link);
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let target = std::fs::read_link(&link)?;
            if std::fs::symlink_metadata(&inside).is_err() {
                std::os::unix::fs::symlink(&target, &inside)?;
            }
            let base = link.parent().unwrap_or(Path::new("/"));
            path = base.join(target);
            // (`join("")` would add a trailing slash, which only a directory satisfies.)
            if !rest.as_os_str().is_empty() {
                path.push(rest);
            }
        }
        Err(io::Error::from_raw_os_error(libc::ELOOP))
    }

    fn bind(&mut self, host: &Path, writable: bool) -> io::Result<()> {
        let Ok(meta) = std::fs::metadata(host) else {
            return Ok(());
        };
        let target = self.inside(host);
        let target_c = c_path(&target)?;
        if self.binds.iter().any(|b| b.target == target_c) {
            return Ok(());
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        if meta.is_dir() {
            std::fs::create_dir_all(&target)?;
        } else if std::fs::symlink_metadata(&target).is_err() {
            std::fs::File::create(&target)?;
        }
        let read_only = if writable {
            None
        } else {
            Some(locked_flags(host)? | libc::MS_RDONLY)
        };
        self.binds.push(Bind {
            source: c_path(host)?,
            target: target_c,
            read_only,
        });
        Ok(())
    }

    pub(super) fn finish(self, workdir: &Path, isolate_network: bool) -> io::Result<Plan> {
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut unshare_flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWIPC;
        if isolate_network {
            unshare_flags |= libc::CLONE_NEWNET;
        }
        Ok(Plan {
            unshare_flags,
            // The build keeps its own ids, mapped to themselves: it needs nobody else's.
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            new_root_flags: locked_flags(&self.new_root)? | libc::MS_RDONLY,
            new_root: c_path(&self.new_root)?,
            binds: self.binds,
            workdir: c_path(workdir)?,
        })
    }
}

/// The first component of `path` (absolute) that is a symlink, and the components after it.
fn first_symlink(path: &Path) -> Option<(PathBuf, PathBuf)> {
    let mut prefix = PathBuf::new();
    let mut components = path.components();
    while let Some(component) = components.next() {
        prefix.push(component);
        if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
            return Some((prefix, components.as_path().to_path_buf()));
        }
    }
    None
}

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Write `data` to the file `path` (a /proc control file). Async-signal-safe.
fn write_proc(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: `path` is NUL-terminated; `data` is a valid buffer of its length.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let written = libc::write(fd, data.as_ptr().cast(), data.len());
        let error = io::Error::last_os_error();
        libc::close(fd);
        if written < 0 || written as usize != data.len() {
            return Err(error);
        }
    }
    Ok(())
}

fn mount(source: Option<&CStr>, target: &CStr, flags: c_ulong) -> io::Result<()> {
    let none: *const libc::c_char = std::ptr::null();
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    check(unsafe {
        libc::mount(
            source.map_or(none, CStr::as_ptr),
            target.as_ptr(),
            none,
            flags,
            std::ptr::null(),
        )
    })
}

impl Plan {
    /// Enter the sandbox. Runs in the child between fork and exec: system calls on prepared
    /// data only, no allocation.
    pub(super) fn enter(&self) -> io::Result<()> {
        // SAFETY: plain system calls on prepared, NUL-terminated strings.
        unsafe {
            check(libc::unshare(self.unshare_flags))?;
        }
        write_proc(c"/proc/self/setgroups", b"deny")?;
        write_proc(c"/proc/self/uid_map", &self.uid_map)?;
        write_proc(c"/proc/self/gid_map", &self.gid_map)?;
        // Nothing mounted here may propagate back to the host.
        mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)?;
        // pivot_root needs the new root to be a mount point.
        mount(
            Some(&self.new_root),
            &self.new_root,
            libc::MS_BIND | libc::MS_REC,
        )?;
        for bind in &self.binds {
            mount(
                Some(&bind.source),
                &bind.target,
                libc::MS_BIND | libc::MS_REC,
            )?;
            if let Some(flags) = bind.read_only {
                mount(None, &bind.target, libc::MS_BIND | libc::MS_REMOUNT | flags)?;
            }
        }
        // SAFETY: as above.
        unsafe {
            check(libc::chdir(self.new_root.as_ptr()))?;
            // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
            // leaves no path to the host's files.
            let dot = c".".as_ptr();
            check(libc::syscall(libc::SYS_pivot_root, dot, dot) as libc::c_int)?;
            check(libc::umount2(dot, libc::MNT_DETACH))?;
            check(libc::chdir(c"/".as_ptr()))?;
        }
        mount(
            None,
            c"/",
            libc::MS_BIND | libc::MS_REMOUNT | self.new_root_flags,
        )?;
        // SAFETY: as above.
        unsafe {
            check(libc::chdir(self.workdir.as_ptr()))?;
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            // The build is root of its namespace when gitopsd runs as root: with an empty
            // bounding set it keeps no capability past exec, so it cannot remount or mount
            // anything itself.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
                    && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL)
                {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }
}

/// Whether this process may create a user and mount namespace: tried in a forked child that
/// exits at once.
pub(super) fn probe() -> Result<(), i32> {
    // SAFETY: the child makes system calls only and leaves with _exit, so forking a
    // multi-threaded process is safe; the parent reaps it.
    unsafe {
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO));
        }
        if pid == 0 {
            let entered = libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) == 0
                && libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ) == 0;
            let code = if entered {
                0
            } else {
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO)
            };
            libc::_exit(code.clamp(0, 255));
        }
        let mut status = 0;
        while libc::waitpid(pid, &mut status, 0) < 0 {
            if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return Err(libc::ECHILD);
            }
        }
        match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
            Some(0) => Ok(()),
            Some(errno) => Err(errno),
            None => Err(libc::EIO),
        }
    }
}
