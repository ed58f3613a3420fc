//! Confining `kustomize build` to the extracted artifact.
//!
//! kustomize runs with `--load-restrictor LoadRestrictionsNone` (as in Flux, an overlay may
//! read `../common/patch.yaml`), which also lets a kustomization name `/etc/shadow` or
//! `../../keys/...` in a generator, a resource or a patch. Rather than trying to recognise
//! such paths in YAML, the build runs where the only files it can open are the artifact,
//! the kustomize binary and the libraries it loads:
//!
//! - **Landlock** (Linux 5.13+): a ruleset that handles every filesystem right the kernel
//!   knows and allows reading beneath the artifact root only (see [`landlock`]).
//! - **Namespaces**, where Landlock is missing: a user and mount namespace whose root holds
//!   only those files (see [`namespace`]).
//!
//! Which one a configuration uses is `render.sandbox`: `auto` (Landlock, else namespaces),
//! `landlock`, `namespace`, or `none`, the operator's explicit opt-out. What the machine
//! offers is probed once ([`Support::detect`]); a mode it cannot honour makes every render of
//! that configuration fail with one sentence ([`SandboxError`]) rather than run unconfined.
//!
//! With remote bases allowed (Flux's default), the sandbox also lets kustomize run `git`,
//! read the system's CA certificates and name-service files, write a private temp dir, and
//! reach the network. With `render.remoteBases: false` it can do none of that, and TCP is
//! denied outright (Landlock ABI 4+, or a network namespace of its own).

mod landlock;
mod namespace;

use std::fmt;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// `render.sandbox`: how a configuration's builds are confined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Landlock where the kernel has it, else user and mount namespaces.
    #[default]
    Auto,
    Landlock,
    Namespace,
    /// No confinement: the operator opted out, and is warned at start-up.
    None,
}

impl SandboxMode {
    pub fn parse(text: &str) -> Option<SandboxMode> {
        match text {
            "auto" => Some(SandboxMode::Auto),
            "landlock" => Some(SandboxMode::Landlock),
            "namespace" => Some(SandboxMode::Namespace),
            "none" => Some(SandboxMode::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SandboxMode::Auto => "auto",
            SandboxMode::Landlock => "landlock",
            SandboxMode::Namespace => "namespace",
            SandboxMode::None => "none",
        }
    }
}

impl fmt::Display for SandboxMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `render` settings, top-level or of one configuration (which inherits what it does not
/// set).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderSettings {
    pub sandbox: SandboxMode,
    /// Let kustomize fetch remote bases and resources (`github.com/org/repo//dir?ref=v1`,
    /// `https://host/file.yaml`), as Flux does unless `--no-remote-bases` is set.
    pub remote_bases: bool,
}

impl Default for RenderSettings {
    fn default() -> Self {
        RenderSettings {
            sandbox: SandboxMode::Auto,
            remote_bases: true,
        }
    }
}

/// The mechanism one build runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confinement {
    Landlock,
    Namespace,
    /// `render.sandbox: none`.
    Unconfined,
}

impl Confinement {
    pub fn as_str(self) -> &'static str {
        match self {
            Confinement::Landlock => "Landlock",
            Confinement::Namespace => "namespace",
            Confinement::Unconfined => "unconfined",
        }
    }
}

/// Why a mechanism is not available on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(String);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn errno_text(errno: i32) -> String {
    io::Error::from_raw_os_error(errno).to_string()
}

/// What this machine offers, probed once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version.
    pub landlock: Result<u32, Unavailable>,
    pub namespaces: Result<(), Unavailable>,
}

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "render.sandbox is `landlock`, but Landlock is not available ({0}); use `auto` or \
         `namespace`, or `none` to render without a sandbox"
    )]
    LandlockUnavailable(Unavailable),
    #[error(
        "render.sandbox is `namespace`, but this process cannot create user and mount \
         namespaces ({0}); use `auto` or `landlock`, or `none` to render without a sandbox"
    )]
    NamespaceUnavailable(Unavailable),
    #[error(
        "refusing to render: no sandbox can confine kustomize to the artifact on this machine \
         (Landlock: {landlock}; user namespaces: {namespaces}); enable Landlock or \
         unprivileged user namespaces, or set render.sandbox: none to render without one"
    )]
    NoneAvailable {
        landlock: Unavailable,
        namespaces: Unavailable,
    },
    #[error("cannot prepare the {mechanism} sandbox for the build: {source}")]
    Prepare {
        mechanism: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Support {
    /// Probe the kernel: Landlock's ABI version, and whether a user and mount namespace can
    /// be created (tried in a short-lived child).
    pub fn detect() -> Support {
        let landlock = landlock::abi_version().map_err(|e| {
            Unavailable(match e.raw_os_error() {
                Some(libc::ENOSYS) => "not supported by this kernel".to_string(),
                Some(libc::EOPNOTSUPP) => "disabled at boot".to_string(),
                _ => e.to_string(),
            })
        });
        let namespaces = namespace::probe().map_err(|errno| Unavailable(errno_text(errno)));
        Support {
            landlock,
            namespaces,
        }
    }

    /// The mechanism `mode` asks for, if this machine has it.
    pub fn resolve(&self, mode: SandboxMode) -> Result<Confinement, SandboxError> {
        match mode {
            SandboxMode::None => Ok(Confinement::Unconfined),
            SandboxMode::Landlock => self
                .landlock
                .clone()
                .map(|_| Confinement::Landlock)
                .map_err(SandboxError::LandlockUnavailable),
            SandboxMode::Namespace => self
                .namespaces
                .clone()
                .map(|_| Confinement::Namespace)
                .map_err(SandboxError::NamespaceUnavailable),
            SandboxMode::Auto => match (&self.landlock, &self.namespaces) {
                (Ok(_), _) => Ok(Confinement::Landlock),
                (Err(_), Ok(())) => Ok(Confinement::Namespace),
                (Err(landlock), Err(namespaces)) => Err(SandboxError::NoneAvailable {
                    landlock: landlock.clone(),
                    namespaces: namespaces.clone(),
                }),
            },
        }
    }

    /// One line for the start-up log, e.g. `Landlock ABI 7; user namespaces available`.
    pub fn describe(&self) -> String {
        let landlock = match &self.landlock {
            Ok(abi) => format!("Landlock ABI {abi}"),
            Err(why) => format!("no Landlock ({why})"),
        };
        let namespaces = match &self.namespaces {
            Ok(()) => "user namespaces available".to_string(),
            Err(why) => format!("no user namespaces ({why})"),
        };
        format!("{landlock}; {namespaces}")
    }
}

/// System library directories a dynamically linked binary loads from.
const LIBRARY_PATHS: &[&str] = &[
    "/lib",
    "/lib64",
    "/lib32",
    "/usr/lib",
    "/usr/lib64",
    "/usr/lib32",
    "/etc/ld.so.cache",
];

/// The system's program directories, for git's helpers and scripts (remote bases only).
const SYSTEM_PROGRAMS: &[&str] = &["/bin", "/usr/bin"];

/// What a remote base needs besides `git` and the libraries: CA certificates, name
/// resolution, and randomness for git's temporary files (`/dev/null`, which git's children
/// also write, is allowed separately).
const REMOTE_READ_PATHS: &[&str] = &[
    "/dev/urandom",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
];

/// What one build may touch besides its artifact.
struct Allowed {
    /// Executables and the libraries they load: read and execute.
    executables: Vec<PathBuf>,
    /// Read-only files and directories.
    read: Vec<PathBuf>,
    /// A private writable directory (TMPDIR and HOME), for remote bases only.
    scratch: Option<PathBuf>,
}

/// How an executable starts: whether it needs the dynamic loader, and the interpreter of a
/// `#!` script.
fn loader_needs(binary: &Path) -> (bool, Option<PathBuf>) {
    let mut head = [0u8; 4096];
    let read = std::fs::File::open(binary)
        .and_then(|mut f| f.read(&mut head))
        .unwrap_or(0);
    let head = &head[..read];
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
        let interpreter = String::from_utf8_lossy(line)
            .split_whitespace()
            .next()
            .map(PathBuf::from);
        return (true, interpreter);
    }
    (elf_has_interpreter(head), None)
}

/// Whether a 64-bit little-endian ELF image (its first bytes) asks for a program
/// interpreter (`PT_INTERP`), i.e. is dynamically linked. Anything else that is not clearly
/// static counts as dynamic: granting the library directories is the safe mistake.
fn elf_has_interpreter(head: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let u16_at = |at: usize| {
        head.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        head.get(at..at + 8).map(|b| {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(b);
            u64::from_le_bytes(bytes)
        })
    };
    let is_elf64_le =
        head.starts_with(b"\x7fELF") && head.get(4) == Some(&2) && head.get(5) == Some(&1);
    if !is_elf64_le {
        return true;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return true;
    };
    let Ok(phoff) = usize::try_from(phoff) else {
        return true;
    };
    (0..usize::from(phnum)).any(|i| {
        // A header beyond what was read cannot be checked: assume dynamic.
        u32_at(phoff + i * usize::from(phentsize)).is_none_or(|kind| kind == PT_INTERP)
    })
}

fn existing(paths: &'static [&'static str]) -> impl Iterator<Item = PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .filter(|p| std::fs::symlink_metadata(p).is_ok())
}

/// Everything a build of `binary` needs besides the artifact.
fn allowed(binary: &Path, remote_bases: bool, scratch: &Path) -> io::Result<Allowed> {
    let binary = binary.canonicalize()?;
    let mut executables = vec![binary.clone()];
    let (mut dynamic, interpreter) = loader_needs(&binary);
    // As written in the `#!` line: the namespace sandbox recreates the links on the way.
    executables.extend(interpreter);
    let mut read = Vec::new();
    let mut scratch_dir = None;
    if remote_bases {
        // kustomize clones remote bases with the git CLI, which runs git-remote-https and
        // shell scripts (`git submodule`) with the system's tools. Executing a program gives
        // it no more than the sandbox allows (no new privileges, the same rules), so the
        // system's program directories are allowed whole.
        if let Some(git) =
            crate::render::find_on_path("git".as_ref(), std::env::var_os("PATH").as_ref())
        {
            if let Ok(git) = git.canonicalize() {
                executables.push(git);
            }
        }
        executables.extend(existing(SYSTEM_PROGRAMS));
        dynamic = true;
        read.extend(existing(REMOTE_READ_PATHS));
        let tmp = scratch.join("tmp");
        std::fs::create_dir_all(&tmp)?;
        scratch_dir = Some(tmp);
    }
    if dynamic {
        executables.extend(existing(LIBRARY_PATHS));
    }
    Ok(Allowed {
        executables,
        read,
        scratch: scratch_dir,
    })
}

/// The Landlock ruleset of a build: read beneath the artifact, read and execute the binary
/// and its libraries, and for remote bases the extras and the private temp dir.
fn landlock_ruleset(root: &Path, allowed: &Allowed, remote_bases: bool) -> io::Result<OwnedFd> {
    let abi = landlock::abi_version()?;
    let mut ruleset = landlock::Ruleset::new(abi, !remote_bases)?;
    let read = landlock::READ_FILE | landlock::READ_DIR;
    ruleset.allow(root, read, true)?;
    for path in &allowed.executables {
        ruleset.allow(path, read | landlock::EXECUTE, path.is_dir())?;
    }
    for path in &allowed.read {
        ruleset.allow(path, read, path.is_dir())?;
    }
    if let Some(tmp) = &allowed.scratch {
        ruleset.allow(tmp, u64::MAX, true)?;
        ruleset.allow(
            Path::new("/dev/null"),
            landlock::READ_FILE | landlock::WRITE_FILE,
            false,
        )?;
    }
    Ok(ruleset.into_fd())
}

/// The namespace plan of a build, and where its temp dir is as the build sees it.
fn namespace_plan(
    root: &Path,
    dir: &Path,
    work: &Path,
    allowed: &Allowed,
    remote_bases: bool,
) -> io::Result<namespace::Plan> {
    let mut plan = namespace::PlanBuilder::new(&work.join("root"))?;
    plan.expose(root, false)?;
    for path in allowed.executables.iter().chain(&allowed.read) {
        plan.expose(path, false)?;
    }
    if let Some(scratch) = &allowed.scratch {
        plan.expose(Path::new("/dev/null"), true)?;
        // At its own path, like everything else: mounted over /tmp it could hide the
        // artifact, which may live below /tmp.
        plan.expose(scratch, true)?;
    }
    plan.finish(dir, !remote_bases)
}

/// A build's sandbox, prepared in the parent; [`Jail::apply`] arms it on the command.
pub(crate) struct Jail {
    kind: JailKind,
    /// The program to run (the binary's canonical path inside a namespace root).
    program: PathBuf,
    /// Where TMPDIR and HOME point, for remote bases.
    tmp: Option<PathBuf>,
    /// The sandbox's own files (`<root>.sandbox`), held only to be removed when the build
    /// is over.
    _work: Option<WorkDir>,
}

enum JailKind {
    Unconfined,
    Landlock(Arc<OwnedFd>),
    Namespace(Arc<namespace::Plan>),
}

struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Jail {
    /// Prepare the sandbox for building `dir` (inside the canonical artifact `root`) with
    /// `binary`. Its working files go next to `root`, which is a private scratch copy.
    pub(crate) fn prepare(
        confinement: Confinement,
        root: &Path,
        dir: &Path,
        binary: &Path,
        remote_bases: bool,
    ) -> Result<Jail, SandboxError> {
        let mechanism = confinement.as_str();
        let failed = |source: io::Error| SandboxError::Prepare { mechanism, source };
        let prepare_work = || -> io::Result<(WorkDir, Allowed)> {
            // Beside the tree, one per build: builds of one configuration share its tree
            // and may run at the same time, each with its own temp dir and mount root.
            let mut work_name = root.as_os_str().to_os_string();
            work_name.push(format!(".sandbox-{}", crate::atomic::unique()));
            let work = WorkDir(PathBuf::from(work_name));
            std::fs::create_dir_all(&work.0)?;
            let allowed = allowed(binary, remote_bases, &work.0)?;
            Ok((work, allowed))
        };
        match confinement {
            Confinement::Unconfined => Ok(Jail {
                kind: JailKind::Unconfined,
                program: binary.to_path_buf(),
                tmp: None,
                _work: None,
            }),
            Confinement::Landlock => {
                let (work, allowed) = prepare_work().map_err(failed)?;
                let fd = landlock_ruleset(root, &allowed, remote_bases).map_err(failed)?;
                Ok(Jail {
                    kind: JailKind::Landlock(Arc::new(fd)),
                    program: binary.to_path_buf(),
                    tmp: allowed.scratch,
                    _work: Some(work),
                })
            }
            Confinement::Namespace => {
                let (work, allowed) = prepare_work().map_err(failed)?;
                let plan =
                    namespace_plan(root, dir, &work.0, &allowed, remote_bases).map_err(failed)?;
                Ok(Jail {
                    kind: JailKind::Namespace(Arc::new(plan)),
                    program: binary.canonicalize().map_err(failed)?,
                    tmp: allowed.scratch,
                    _work: Some(work),
                })
            }
        }
    }

    /// The path to execute.
    pub(crate) fn program(&self) -> &Path {
        &self.program
    }

    /// Arm the sandbox on `command`: it takes effect in the child, just before exec.
    pub(crate) fn apply(&self, command: &mut Command) {
        if let Some(tmp) = &self.tmp {
            command
                .env("TMPDIR", tmp)
                .env("HOME", tmp)
                .env("GIT_CONFIG_NOSYSTEM", "1");
        }
        match &self.kind {
            JailKind::Unconfined => {}
            JailKind::Landlock(fd) => {
                let fd = fd.clone();
                // SAFETY: the closure makes two system calls on a descriptor the parent keeps
                // open until spawn returns; it allocates nothing.
                unsafe {
                    command.pre_exec(move || landlock::restrict_self(fd.as_raw_fd()));
                }
            }
            JailKind::Namespace(plan) => {
                let plan = plan.clone();
                // SAFETY: `enter` makes system calls on data prepared in the parent only.
                unsafe {
                    command.pre_exec(move || plan.enter());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_resolve_against_what_the_machine_offers() {
        let both = Support {
            landlock: Ok(7),
            namespaces: Ok(()),
        };
        assert_eq!(
            both.resolve(SandboxMode::Auto).unwrap(),
            Confinement::Landlock
        );
        assert_eq!(
            both.resolve(SandboxMode::Namespace).unwrap(),
            Confinement::Namespace
        );
        assert_eq!(
            both.resolve(SandboxMode::None).unwrap(),
            Confinement::Unconfined
        );
        let namespaces_only = Support {
            landlock: Err(Unavailable("not supported by this kernel".into())),
            namespaces: Ok(()),
        };
        assert_eq!(
            namespaces_only.resolve(SandboxMode::Auto).unwrap(),
            Confinement::Namespace
        );
        assert!(matches!(
            namespaces_only.resolve(SandboxMode::Landlock),
            Err(SandboxError::LandlockUnavailable(_))
        ));
        let neither = Support {
            landlock: Err(Unavailable("not supported by this kernel".into())),
            namespaces: Err(Unavailable("Operation not permitted (os error 1)".into())),
        };
        let error = neither.resolve(SandboxMode::Auto).unwrap_err();
        assert_eq!(
            error.to_string(),
            "refusing to render: no sandbox can confine kustomize to the artifact on this \
             machine (Landlock: not supported by this kernel; user namespaces: Operation not \
             permitted (os error 1)); enable Landlock or unprivileged user namespaces, or set \
             render.sandbox: none to render without one"
        );
        assert_eq!(
            neither.resolve(SandboxMode::None).unwrap(),
            Confinement::Unconfined
        );
    }

    #[test]
    fn this_machine_has_both_mechanisms() {
        // The integration tests force each mechanism; they need both.
        let support = Support::detect();
        assert!(support.landlock.is_ok(), "{}", support.describe());
        assert!(support.namespaces.is_ok(), "{}", support.describe());
    }

    #[test]
    fn static_and_dynamic_binaries_are_told_apart() {
        let (dynamic, interpreter) = loader_needs(Path::new("/bin/sh"));
        assert!(dynamic && interpreter.is_none());
        let tmp = tempfile::tempdir().unwrap();
        let script = tmp.path().join("script");
        std::fs::write(&script, "#!/bin/sh -e\necho\n").unwrap();
        assert_eq!(
            loader_needs(&script),
            (true, Some(PathBuf::from("/bin/sh")))
        );
        // A static ELF: a header with one PT_LOAD program header and no PT_INTERP.
        let mut image = vec![0u8; 0x40 + 0x38];
        image[..6].copy_from_slice(b"\x7fELF\x02\x01");
        image[0x20..0x28].copy_from_slice(&0x40u64.to_le_bytes());
        image[0x36..0x38].copy_from_slice(&0x38u16.to_le_bytes());
        image[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        image[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
        assert!(!elf_has_interpreter(&image));
        image[0x40..0x44].copy_from_slice(&3u32.to_le_bytes());
        assert!(elf_has_interpreter(&image));
    }
}
