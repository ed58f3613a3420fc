//! Server processes and loopback ports.
//!
//! A server runs as the leader of a process group of its own, so that stopping it reaches
//! everything it forked (nginx workers, fcgiwrap's CGI children, git daemon's upload-packs),
//! and so that a Ctrl-C meant for the test run is not what stops it. Two safety nets cover the
//! cases where `Drop` is not enough:
//!
//! - The test process makes itself a child subreaper: whatever a server orphans while it stops
//!   is re-parented to the test process, which reaps it. (PID 1 of some sandboxes never reaps,
//!   which would leave zombies behind.)
//! - A watchdog shell joins each server's group and blocks reading a pipe whose only writer is
//!   the test process. If the test process dies without unwinding (SIGKILL, abort), the pipe
//!   closes and the watchdog kills its group.

use std::collections::BTreeSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, Once};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a server may take to become ready. Generous: CI has two cores and runs test
/// binaries' threads in parallel.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs in the server's process group. `read` returns only at end of file, which comes when
/// the test process (the pipe's only writer) is gone; `kill 0` then signals the whole group.
const WATCHDOG_SCRIPT: &str = "while read -r _; do :; done; kill -s KILL 0";

/// A process started by the harness, leader of its own process group.
#[derive(Debug)]
pub struct ServerProcess {
    name: String,
    leader: Child,
    pgid: libc::pid_t,
    watchdog: Option<Child>,
    log: PathBuf,
    stopped: bool,
    /// How long [`ServerProcess::stop`] waits after SIGTERM before SIGKILL.
    term_grace: Duration,
}

impl ServerProcess {
    /// Starts `command` as the leader of a new process group with stdin closed and stdout and
    /// stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> io::Result<Self> {
        become_subreaper();
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .process_group(0);
        let leader = command.spawn()?;
        let pgid = libc::pid_t::try_from(leader.id()).expect("pid fits pid_t");
        let mut process = ServerProcess {
            name: name.to_string(),
            leader,
            pgid,
            watchdog: None,
            log: log.to_path_buf(),
            stopped: false,
            term_grace: TERM_GRACE,
        };
        // The leader has not been waited for, so even if it exited already its group still
        // exists (as a zombie) and the watchdog can join it. On error, drop stops the leader.
        process.watchdog = Some(
            Command::new("/bin/sh")
                .args(["-c", WATCHDOG_SCRIPT, "gitopsd-test-watchdog"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(pgid)
                .spawn()?,
        );
        Ok(process)
    }

    /// A shorter wait between SIGTERM and SIGKILL, for a server whose state is throwaway and
    /// whose graceful shutdown is slow.
    pub fn with_term_grace(mut self, grace: Duration) -> Self {
        self.term_grace = grace;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Pid of the leader, which is also the process group id.
    pub fn id(&self) -> u32 {
        self.leader.id()
    }

    /// What the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// The leader's exit status, if it has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.leader.try_wait().ok().flatten()
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after a grace period, reaping
    /// every member. Idempotent; also done on drop.
    pub fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
        signal_group(self.pgid, libc::SIGTERM);
        if !self.wait_for_empty_group(self.term_grace) {
            signal_group(self.pgid, libc::SIGKILL);
            if !self.wait_for_empty_group(TERM_GRACE) {
                eprintln!(
                    "test harness: process group {} of {} did not go away",
                    self.pgid, self.name
                );
            }
        }
    }

    /// Reaps the leader, then any orphaned member re-parented to us; true once the group has
    /// no member left.
    fn wait_for_empty_group(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            // Once the leader is reaped, waiting on the group cannot steal std's child.
            let leader_reaped = !matches!(self.leader.try_wait(), Ok(None));
            if leader_reaped {
                reap_group(self.pgid);
                if !group_exists(self.pgid) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            sleep(POLL);
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn become_subreaper() {
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes plain integers and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            eprintln!(
                "test harness: cannot become child subreaper ({}); orphans of stopped servers \
                 may stay as zombies",
                io::Error::last_os_error()
            );
        }
    });
}

fn signal_group(pgid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill takes plain integers; a negative pid addresses the process group.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn group_exists(pgid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the group exists and may be signalled.
    let rc = unsafe { libc::kill(-pgid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn reap_group(pgid: libc::pid_t) {
    loop {
        // SAFETY: waitpid with a null status pointer is allowed; WNOHANG never blocks.
        let pid = unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
    }
}

/// A loopback port that nothing listens on right now and that this test process has not
/// handed out before. Another process may still take it before the server binds it: servers
/// therefore start through [`start_on_free_port`], which retries on a new port.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    for _ in 0..200 {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local address").port();
        drop(listener);
        let fresh = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(port);
        if fresh && !port_in_use(port) {
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_in_use(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
}

pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Why a server did not start.
#[derive(Debug)]
pub(crate) enum StartError {
    /// The port was (or became) someone else's: try another.
    PortTaken(String),
    /// Anything else: a broken setup that another port will not fix.
    Failed(String),
}

/// Starts a server with `start(port)` on a free port, retrying on a new port when the port
/// turns out to be taken by another program.
pub(crate) fn start_on_free_port<T>(
    what: &str,
    mut start: impl FnMut(u16) -> Result<T, StartError>,
) -> T {
    const ATTEMPTS: usize = 8;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port();
        if port_in_use(port) {
            continue;
        }
        match start(port) {
            Ok(server) => return server,
            Err(StartError::PortTaken(detail)) => last = format!("port {port}: {detail}"),
            Err(StartError::Failed(detail)) => {
                panic!("{what} failed to start on 127.0.0.1:{port}:\n{detail}")
            }
        }
    }
    panic!("{what}: every port tried was taken by another program; last: {last}");
}

/// What a readiness probe found on the server's port.
pub(crate) enum Probe {
    Ready,
    NotYet,
    /// Another program answered: the port was taken.
    Foreign(String),
}

/// Polls `probe` until the server answers, it exits, or [`READY_TIMEOUT`] passes.
pub(crate) fn wait_until_ready(
    process: &mut ServerProcess,
    mut probe: impl FnMut() -> Probe,
) -> Result<(), StartError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = process.exit_status() {
            let log = process.log();
            let detail = format!("{} exited with {status}; its log:\n{log}", process.name());
            return Err(if mentions_port_taken(&log) {
                StartError::PortTaken(detail)
            } else {
                StartError::Failed(detail)
            });
        }
        match probe() {
            Probe::Ready => return Ok(()),
            Probe::Foreign(what) => {
                return Err(StartError::PortTaken(format!(
                    "another program answered: {what}"
                )))
            }
            Probe::NotYet => {}
        }
        if Instant::now() >= deadline {
            let log = process.log();
            return Err(if mentions_port_taken(&log) {
                StartError::PortTaken(log)
            } else {
                StartError::Failed(format!(
                    "{} not ready after {READY_TIMEOUT:?}; its log:\n{log}",
                    process.name()
                ))
            });
        }
        sleep(POLL);
    }
}

fn mentions_port_taken(log: &str) -> bool {
    log.contains("Address already in use") || log.contains("unable to allocate any listen")
}

/// Sends `request` to 127.0.0.1:`port` and reads the answer until the peer closes (or a
/// short timeout passes). None when nothing could be connected or sent.
pub(crate) fn exchange(port: u16, request: &[u8]) -> Option<Vec<u8>> {
    let mut stream =
        TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    stream.write_all(request).ok()?;
    let mut answer = Vec::new();
    // A timeout still leaves what arrived in `answer`.
    let _ = stream.read_to_end(&mut answer);
    Some(answer)
}
