//! Running a child process under a deadline.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub(crate) struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

pub(crate) enum RunError {
    Spawn(io::Error),
    Wait(io::Error),
    /// The deadline passed; the process group was killed. Carries what stderr had so far.
    TimedOut {
        stderr: Vec<u8>,
    },
}

/// Run `command` with stdin closed, capturing stdout and stderr, and kill it if it is still
/// running after `timeout`.
///
/// The child runs in a process group of its own and the whole group is killed, because
/// kustomize may start helpers (git for remote bases) that would otherwise outlive it and keep
/// the output pipes open.
pub(crate) fn run_with_timeout(
    mut command: Command,
    timeout: Duration,
) -> Result<Finished, RunError> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(RunError::Spawn)?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                kill_group(&mut child);
                return Err(RunError::Wait(e));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            kill_group(&mut child);
            drop(join(stdout));
            return Err(RunError::TimedOut {
                stderr: join(stderr),
            });
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    Ok(Finished {
        status,
        stdout: join(stdout),
        stderr: join(stderr),
    })
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut pipe| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            // A read error only truncates what we report; the exit status decides success.
            let _ = pipe.read_to_end(&mut buf);
            buf
        })
    })
}

fn join(handle: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Kill the child's process group, then reap the child.
///
/// This runs before the child is reaped, so its pid (which is the group id) cannot have been
/// reused by an unrelated process.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the
        // process group the child leads (set up by `process_group(0)` above).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_status() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let Ok(done) = run_with_timeout(cmd, Duration::from_secs(10)) else {
            panic!("sh failed to run");
        };
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"out\n");
        assert_eq!(done.stderr, b"err\n");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        // `sleep` runs as a grandchild holding the pipes; killing only `sh` would leave the
        // readers blocked until it ends.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo started >&2; sleep 30; echo never"]);
        let start = Instant::now();
        match run_with_timeout(cmd, Duration::from_millis(300)) {
            Err(RunError::TimedOut { stderr }) => assert_eq!(stderr, b"started\n"),
            _ => panic!("expected a timeout"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }
}
