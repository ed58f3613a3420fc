//! `git daemon`: the `git://` protocol on a loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::git::{git_command, BareRepo};
use super::process::StartError;
use super::process::{exchange, start_on_free_port, wait_until_ready, Probe, ServerProcess};

/// `git daemon` serving the bare repositories linked into its own base directory.
///
/// ```ignore
/// let daemon = GitDaemon::start();
/// let url = daemon.serve(repo.bare()); // git://127.0.0.1:PORT/repo.git
/// ```
#[derive(Debug)]
pub struct GitDaemon {
    process: ServerProcess,
    port: u16,
    base: PathBuf,
    _dir: TempDir,
}

impl GitDaemon {
    /// Starts a daemon with nothing to serve yet; panics if it cannot start.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-git-daemon-")
            .tempdir()
            .expect("create temp dir for git daemon");
        let base = dir.path().join("repos");
        std::fs::create_dir(&base).expect("create git daemon base dir");
        let (process, port) = start_on_free_port("git daemon", |port| {
            let process = spawn(dir.path(), &base, port)?;
            Ok((process, port))
        });
        GitDaemon {
            process,
            port,
            base,
            _dir: dir,
        }
    }

    /// Starts a daemon serving `bare`; returns it with the repository's URL.
    pub fn serving(bare: &BareRepo) -> (Self, String) {
        let daemon = Self::start();
        let url = daemon.serve(bare);
        (daemon, url)
    }

    /// Publishes `bare` as `<name>.git` and returns its URL. It is served live: later pushes
    /// into the bare repository are visible at once.
    pub fn serve(&self, bare: &BareRepo) -> String {
        link_repo(&self.base, bare);
        self.url(bare.name())
    }

    /// `git://127.0.0.1:PORT/<name>.git` (`.git` is added unless `name` has it).
    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{}", self.port, repo_file_name(name))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory the daemon serves (`--base-path`).
    pub fn base_path(&self) -> &Path {
        &self.base
    }

    /// The process group the daemon and its children run in.
    pub fn process_group(&self) -> u32 {
        self.process.id()
    }

    /// Stops the daemon and everything it started. Also done on drop.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

fn spawn(dir: &Path, base: &Path, port: u16) -> Result<ServerProcess, StartError> {
    // git_command scrubs GIT_* and config from the environment; the daemon and the
    // upload-packs it runs inherit that.
    let mut command: Command = git_command(dir);
    command
        .env("HOME", dir)
        .arg("daemon")
        .arg("--reuseaddr")
        .arg("--export-all")
        .arg("--informative-errors")
        .arg("--verbose")
        .arg("--listen=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()));
    let mut process = ServerProcess::spawn("git daemon", command, &dir.join("daemon.log"))
        .map_err(|e| StartError::Failed(format!("cannot run git daemon: {e}")))?;
    wait_until_ready(&mut process, || probe(port))?;
    Ok(process)
}

/// Asks for a repository that does not exist: a git daemon answers with an `ERR` pkt-line
/// naming it, which tells it apart from whatever else might hold the port.
fn probe(port: u16) -> Probe {
    let path = "/gitopsd-harness-probe.git";
    let payload = format!("git-upload-pack {path}\0host=127.0.0.1\0");
    let request = format!("{:04x}{payload}", payload.len() + 4);
    match exchange(port, request.as_bytes()) {
        None => Probe::NotYet,
        Some(answer) => {
            let answer = String::from_utf8_lossy(&answer);
            if answer.contains("ERR ") && answer.contains(path) {
                Probe::Ready
            } else if answer.is_empty() {
                // Accepted but closed without a word: not listening properly yet, or not git.
                Probe::NotYet
            } else {
                Probe::Foreign(answer.chars().take(200).collect())
            }
        }
    }
}

/// `name.git`, unless `name` already ends in `.git`.
pub(crate) fn repo_file_name(name: &str) -> String {
    let name = name.trim_start_matches('/');
    if name.ends_with(".git") {
        name.to_string()
    } else {
        format!("{name}.git")
    }
}

/// Links `bare` into a server's repository directory as `<name>.git`.
pub(crate) fn link_repo(base: &Path, bare: &BareRepo) {
    let link = base.join(repo_file_name(bare.name()));
    if let Ok(existing) = std::fs::read_link(&link) {
        assert_eq!(
            existing,
            bare.path(),
            "another repository is already served as {}",
            link.display()
        );
        return;
    }
    std::os::unix::fs::symlink(bare.path(), &link).unwrap_or_else(|e| {
        panic!(
            "link {} into {}: {e}",
            bare.path().display(),
            base.display()
        )
    });
}
