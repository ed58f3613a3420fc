//! A `gitopsd run` child for the service-level tests (suspend, reload, sidecar): started with a
//! config, its log in a file, its status polled through the API, stopped and reaped on drop.

use super::{gitopsd_bin, text};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long anything the daemon does in the background may take before a test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

pub struct Running {
    child: Child,
    server: String,
    log: PathBuf,
}

impl Running {
    /// `gitopsd <args>` (e.g. `run --config F`), serving on `server` (`127.0.0.1:PORT`), its
    /// output appended to `log`.
    pub fn start(args: &[&std::ffi::OsStr], server: &str, log: &Path) -> Running {
        Running::start_with_env(args, &[], server, log)
    }

    /// [`Running::start`] with extra environment variables.
    pub fn start_with_env(
        args: &[&std::ffi::OsStr],
        env: &[(&str, &std::ffi::OsStr)],
        server: &str,
        log: &Path,
    ) -> Running {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(gitopsd_bin())
            .args(args)
            .env("GITOPSD_LOG", "info,gitopsd=debug")
            .env_remove("GITOPSD_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn gitopsd");
        Running {
            child,
            server: server.to_string(),
            log: log.to_path_buf(),
        }
    }

    /// The daemon now serves on `server` (its config changed the listen address).
    pub fn set_server(&mut self, server: &str) {
        self.server = server.to_string();
    }

    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| text(&b))
            .unwrap_or_default()
    }

    /// `GET /api/v1/status`, or None while nothing answers.
    pub fn try_status(&self) -> Option<Value> {
        let mut response = ureq::get(&format!("http://{}/api/v1/status", self.server))
            .call()
            .ok()?;
        serde_json::from_reader(response.body_mut().as_reader()).ok()
    }

    /// `GET path` as text, or None while nothing answers.
    pub fn get(&self, path: &str) -> Option<String> {
        let mut response = ureq::get(&format!("http://{}{path}", self.server))
            .call()
            .ok()?;
        response.body_mut().read_to_string().ok()
    }

    /// Polls the status until `check` finds what it wants in it.
    pub fn wait_status<T>(&mut self, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
        self.wait_for(what, |running| check(&running.try_status()?))
    }

    /// Polls `check` until it returns `Some`; panics with the log after [`DEADLINE`] or when
    /// the daemon exited.
    pub fn wait_for<T>(&mut self, what: &str, mut check: impl FnMut(&Self) -> Option<T>) -> T {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(value) = check(self) {
                return value;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "gitopsd exited with {status} while waiting for {what}\n{}",
                    self.log()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "gave up after {DEADLINE:?} waiting for {what}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Runs a client subcommand (`status`, `suspend`, ...) against this daemon.
    pub fn client(&self, args: &[&str]) -> Output {
        Command::new(gitopsd_bin())
            .args(args)
            .args(["--server", &self.server])
            .env_remove("GITOPSD_CONFIG")
            .env_remove("GITOPSD_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd client")
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet.
        unsafe { libc::kill(pid, signal) };
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gitopsd did not stop\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gitopsd log ---\n{}", self.log());
        }
    }
}
