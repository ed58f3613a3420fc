//! Cancelling a fetch for real, on every transport.
//!
//! The reconciler bounds each fetch with the source's `timeout` and sets the fetch's interrupt
//! flag when it expires or the daemon stops. A flag alone stops nothing that is blocked in a
//! read from a server that never answers, so every connection also has to wake up on its own:
//!
//! - sockets and pipes gitopsd owns (`git://` on gix, gix's `ssh` process, the small HTTP
//!   client for mutual TLS) read and write with a short timeout, look at the flag between
//!   tries, and give up when the server has sent nothing for [`STALL_LIMIT`];
//! - curl (gix over http/https) drops a transfer slower than one byte per second for
//!   [`STALL_LIMIT`] (its low-speed limit), and connects within [`CONNECT_LIMIT`];
//! - libgit2 gets the same two limits as its server timeouts, which cover its sockets, its
//!   TLS streams and libssh2 sessions ([`libgit2_timeouts`]).
//!
//! Where the flag cannot be seen (curl, libgit2), a stuck fetch thread lives on for at most
//! [`STALL_LIMIT`] after the timeout; the reconciler does not start another fetch of the
//! same source meanwhile, and neither `run --once` nor a stopping daemon waits for it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long a server may send nothing (or take nothing) before the connection is dropped.
/// Long enough for a server that is busy compressing a big pack (git sends progress while
/// it does), short enough that a dead connection does not hold a thread for long.
pub const STALL_LIMIT: Duration = Duration::from_secs(30);

/// How long establishing a TCP connection may take.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(30);

/// How often a blocked read or write wakes up to look at the interrupt flag.
const TICK: Duration = Duration::from_millis(200);

/// When to give up on a connection: the fetch's interrupt flag, and the stall limit.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'i> {
    interrupt: &'i AtomicBool,
    stall: Duration,
}

impl<'i> Watch<'i> {
    pub fn new(interrupt: &'i AtomicBool) -> Watch<'i> {
        Watch {
            interrupt,
            stall: STALL_LIMIT,
        }
    }

    /// With another stall limit (tests).
    pub fn with_stall_limit(self, stall: Duration) -> Watch<'i> {
        Watch { stall, ..self }
    }

    /// An error when the fetch was cancelled or nothing moved since `waiting_since`.
    /// `TimedOut`, not `Interrupted`: `read_exact` and `write_all` retry `Interrupted`.
    fn check(&self, waiting_since: Instant) -> io::Result<()> {
        if self.interrupt.load(Ordering::Relaxed) {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the fetch was cancelled (timed out, or gitopsd is stopping)",
            ));
        }
        if waiting_since.elapsed() >= self.stall {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "timed out: the server sent nothing for {}",
                    humantime::format_duration(self.stall)
                ),
            ));
        }
        Ok(())
    }
}

/// A TCP connection whose reads and writes return an error once the fetch is cancelled or
/// the server stalls, instead of blocking the thread for as long as the server keeps the
/// connection open.
#[derive(Debug)]
pub struct WatchedSocket<'i> {
    stream: TcpStream,
    watch: Watch<'i>,
}

impl<'i> WatchedSocket<'i> {
    pub fn new(stream: TcpStream, watch: Watch<'i>) -> io::Result<WatchedSocket<'i>> {
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(TICK))?;
        Ok(WatchedSocket { stream, watch })
    }

    /// The same connection, for the writing half (the timeouts belong to the socket).
    pub fn try_clone(&self) -> io::Result<WatchedSocket<'i>> {
        Ok(WatchedSocket {
            stream: self.stream.try_clone()?,
            watch: self.watch,
        })
    }
}

fn is_tick(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl Read for WatchedSocket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.stream.read(buf) {
                Err(e) if is_tick(&e) => self.watch.check(since)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

impl Write for WatchedSocket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            match self.stream.write(buf) {
                Err(e) if is_tick(&e) => self.watch.check(since)?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}

/// A pipe (a child process's stdout) read only once `poll` says it has data, so that the
/// read gives up like [`WatchedSocket`]'s does.
pub struct WatchedPipe<'i, R> {
    inner: R,
    watch: Watch<'i>,
}

impl<'i, R: Read + AsRawFd> WatchedPipe<'i, R> {
    pub fn new(inner: R, watch: Watch<'i>) -> WatchedPipe<'i, R> {
        WatchedPipe { inner, watch }
    }
}

impl<R: Read + AsRawFd> Read for WatchedPipe<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            let mut fd = libc::pollfd {
                fd: self.inner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let tick = libc::c_int::try_from(TICK.as_millis()).unwrap_or(libc::c_int::MAX);
            // SAFETY: `fd` is a valid pollfd for a descriptor `self.inner` owns and keeps
            // open for the duration of the call; the count (1) matches.
            let ready = unsafe { libc::poll(&mut fd, 1, tick) };
            match ready {
                // Data, end of file or an error: the read reports which, without blocking.
                1.. => return self.inner.read(buf),
                0 => self.watch.check(since)?,
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
    }
}

/// Give libgit2 the stall and connect limits. They are process-wide settings of libgit2,
/// written once: the first call (before the daemon starts its threads, or before the first
/// libgit2 use) sets them, and every later call waits for it and does nothing.
pub fn libgit2_timeouts() {
    static SET: std::sync::Once = std::sync::Once::new();
    SET.call_once(|| {
        let millis = |d: Duration| libc::c_int::try_from(d.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: these write two plain ints inside libgit2. `Once` makes this the only
        // write, and it happens before any libgit2 connection of this process is made (every
        // libgit2 use in gitopsd goes through this call first), so no read races with it.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(millis(CONNECT_LIMIT));
            let _ = git2::opts::set_server_timeout_in_milliseconds(millis(STALL_LIMIT));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that accepts and never answers: the read ends when the flag is set, and by
    /// itself after the stall limit.
    #[test]
    fn a_silent_socket_gives_up_on_interrupt_and_after_the_stall_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let interrupt = AtomicBool::new(false);
        let stream = TcpStream::connect(address).unwrap();
        let _held = listener.accept().unwrap();
        let watch = Watch::new(&interrupt).with_stall_limit(Duration::from_secs(600));
        let mut socket = WatchedSocket::new(stream, watch).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(500));
                interrupt.store(true, Ordering::Relaxed);
            });
            let error = socket.read(&mut [0u8; 16]).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::TimedOut);
            assert!(error.to_string().contains("cancelled"), "{error}");
        });

        let quiet = AtomicBool::new(false);
        let stream = TcpStream::connect(address).unwrap();
        let _held = listener.accept().unwrap();
        let watch = Watch::new(&quiet).with_stall_limit(Duration::from_millis(600));
        let error = WatchedSocket::new(stream, watch)
            .unwrap()
            .read(&mut [0u8; 16])
            .unwrap_err();
        assert!(error.to_string().contains("sent nothing"), "{error}");
    }

    #[test]
    fn a_silent_pipe_gives_up_and_a_talking_one_is_read() {
        let interrupt = AtomicBool::new(false);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "printf hello; sleep 30"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let watch = Watch::new(&interrupt).with_stall_limit(Duration::from_millis(600));
        let mut pipe = WatchedPipe::new(stdout, watch);
        let mut buf = [0u8; 5];
        pipe.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let error = pipe.read(&mut buf).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        let _ = child.kill();
        let _ = child.wait();
    }
}
