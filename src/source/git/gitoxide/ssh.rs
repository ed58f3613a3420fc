//! Git over SSH through an `ssh` process of gitopsd's own (see [`ssh_transport`] for why not
//! gix's).

use super::protocol::WithoutDeepenRelative;
use super::session::SshSession;
use super::BoxedTransport;
use crate::source::git::cancel::{Watch, WatchedPipe};
use std::fs;

/// Git over SSH through a process of our own: the session's `ssh` wrapper running
/// `git-upload-pack` on the server, its stdout and stdin the connection.
///
/// gix's own ssh transport waits up to 5 ms for an error on ssh's stderr after every read
/// that returns less than was asked for, and reads from a pipe nearly always do: that capped
/// a pack download at a few MB/s (README, Performance). Here ssh's stderr goes to a file that
/// [`super::Session`] reads when the connection fails.
pub(super) fn ssh_transport<'i>(
    url: &gix::Url,
    ssh: &SshSession,
    watch: Watch<'i>,
) -> std::io::Result<BoxedTransport<'i>> {
    use gix::protocol::transport::client::git;
    use std::process::{Command, Stdio};
    let host = url
        .host()
        .ok_or_else(|| std::io::Error::other("the URL names no host"))?;
    let destination = match url.user() {
        Some(user) => format!("{user}@{host}"),
        None => host.to_string(),
    };
    let mut path = url.path.to_string();
    // `ssh://host/~user/repo` means a path relative to a home directory, as in git.
    if path.starts_with("/~") {
        path.remove(0);
    }
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ssh.remote_stderr)?;
    let mut command = Command::new(&ssh.program);
    if let Some(port) = url.port {
        command.arg("-p").arg(port.to_string());
    }
    command
        .args(["-o", "SendEnv=GIT_PROTOCOL", "--", &destination])
        .arg(format!("git-upload-pack {}", shell_quote(&path)))
        .env("GIT_PROTOCOL", "version=2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(Box::new(git::blocking_io::Connection::new(
        SshOutput {
            stdout: WithoutDeepenRelative::new(WatchedPipe::new(stdout, watch)),
            child,
        },
        stdin,
        gix::protocol::transport::Protocol::V2,
        url.path.clone(),
        None::<(String, Option<u16>)>,
        git::ConnectMode::Process,
        false,
    )))
}

/// `text` in single quotes for the remote shell, as git quotes the path it asks for.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// ssh's stdout; the process is stopped and reaped with the connection, which is also how a
/// cancelled or stalled fetch ends an ssh session that is still waiting for the server.
/// (Requests are written to ssh's stdin unwatched: they are small, and ssh reads them into
/// its own buffers whatever the server does.)
struct SshOutput<'i> {
    stdout: WithoutDeepenRelative<WatchedPipe<'i, std::process::ChildStdout>>,
    child: std::process::Child,
}

impl std::io::Read for SshOutput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for SshOutput<'_> {
    fn drop(&mut self) {
        // By now the fetch is over or has failed: nothing more is wanted from the server.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
