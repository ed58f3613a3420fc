//! The systemd notification protocol (`sd_notify`), spoken directly: one datagram per state
//! change to the socket named by `NOTIFY_SOCKET` (a path, or `@name` for an abstract socket).
//!
//! It is a dozen lines of protocol, so no crate: the maintained ones either link libsystemd
//! (absent from containers and many edge images) or pull in a D-Bus stack. Without
//! `NOTIFY_SOCKET` (not under systemd, or `Type=` other than notify) every call is a no-op, so
//! callers never need to ask. A failed send is logged once and otherwise ignored: a daemon
//! that cannot tell systemd it is ready will be restarted by systemd, which is the right
//! outcome, and crashing here would help nobody.
//!
//! The unit sets `NotifyAccess=main`, so child processes (kustomize, ssh) that inherit the
//! variable cannot change the service's state; gitopsd does not unset it (that would mean
//! mutating the environment of a multi-threaded process).

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where to send notifications, and how often systemd wants a watchdog ping.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (the watchdog applies only when
    /// its pid is ours, as sd_watchdog_enabled checks).
    pub fn from_env() -> io::Result<Notifier> {
        let socket = std::env::var("NOTIFY_SOCKET").ok();
        let watchdog_pid_matches = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && watchdog_pid_matches)
            .map(Duration::from_micros);
        Notifier::new(socket.as_deref(), watchdog)
    }

    /// Sends to `socket` (a path or `@abstract`); `None` makes every call a no-op.
    pub fn new(socket: Option<&str>, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let target = match socket.filter(|s| !s.is_empty()) {
            None => None,
            Some(name) => Some((UnixDatagram::unbound()?, address(name)?)),
        };
        Ok(Notifier {
            target,
            watchdog,
            warned: AtomicBool::new(false),
        })
    }

    /// How often to send `WATCHDOG=1`: half the interval systemd set, as sd_watchdog_enabled
    /// advises, so one late tick does not trip it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// `READY=1`, with a status line.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `RELOADING=1`, with the monotonic time systemd (253+) uses to tell reloads apart.
    pub fn reloading(&self) {
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    /// A status line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: "the main loop is alive". Call it from the loop whose progress it
    /// vouches for, never from a timer of its own.
    pub fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send("WATCHDOG=1");
        }
    }

    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
            if !self.warned.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot notify systemd through NOTIFY_SOCKET: {error}");
            }
        }
    }
}

/// The engine's supervisor is systemd: its loops' liveness becomes `WATCHDOG=1`, its summary
/// `STATUS=`.
impl crate::reconcile::supervise::Supervisor for Notifier {
    fn watchdog_interval(&self) -> Option<Duration> {
        Notifier::watchdog_interval(self)
    }

    fn alive(&self) {
        self.watchdog();
    }

    fn status(&self, line: &str) {
        Notifier::status(self, line);
    }
}

fn address(name: &str) -> io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(name),
    }
}

/// Status lines are one line each; a newline would start a new assignment.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 4096];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8_lossy(&buffer[..n]).into_owned()
    }

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str(), None).unwrap();
        notifier.ready("3 sources ready\nsecond line");
        assert_eq!(
            receive(&listener),
            "READY=1\nSTATUS=3 sources ready second line"
        );
        notifier.reloading();
        assert!(receive(&listener).starts_with("RELOADING=1\nMONOTONIC_USEC="));
        notifier.stopping();
        assert_eq!(receive(&listener), "STOPPING=1");
    }

    #[test]
    fn messages_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("gitopsd-test-notify-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        let notifier =
            Notifier::new(Some(&format!("@{name}")), Some(Duration::from_secs(10))).unwrap();
        notifier.watchdog();
        assert_eq!(receive(&listener), "WATCHDOG=1");
        assert_eq!(notifier.watchdog_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn without_a_socket_or_watchdog_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::new(None, None).unwrap();
        notifier.ready("ready");
        notifier.watchdog();
        assert_eq!(notifier.watchdog_interval(), None);
        // A socket nobody listens on: one warning, no error, no panic.
        let notifier = Notifier::new(Some("/nonexistent/notify"), None).unwrap();
        notifier.ready("ready");
        notifier.status("still here");
    }
}
