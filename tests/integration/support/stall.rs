//! Hung git servers on loopback: one that accepts connections and never says a word, and a
//! proxy in front of a real server (git daemon, nginx) that passes on the first N bytes of
//! each answer and then stops forwarding, which stalls a client mid-advertisement or
//! mid-pack, depending on N.
//!
//! Accepted connections are held open until the server is dropped, also after
//! [`StallingServer::stop_accepting`]: a client stuck on one stays stuck unless it gives up
//! by itself, which is what the hang tests check.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::git::BareRepo;
use super::process::{free_port, loopback};

/// What a [`StallingServer`] does with a connection.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Silent,
    /// Forward to `127.0.0.1:upstream`; of each answer, pass on `bytes` bytes only.
    Truncate {
        upstream: u16,
        bytes: usize,
    },
}

#[derive(Debug)]
pub struct StallingServer {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Every socket of every connection, kept open until drop.
    held: Mutex<Vec<TcpStream>>,
    accepted: AtomicUsize,
    accepting: AtomicBool,
}

impl StallingServer {
    /// Accepts every connection and never answers.
    pub fn silent() -> Self {
        Self::start(free_port(), Behaviour::Silent)
    }

    /// [`StallingServer::silent`], on a port chosen beforehand (a daemon's config may name it
    /// before the server exists: until then, connections are refused).
    pub fn silent_on(port: u16) -> Self {
        Self::start(port, Behaviour::Silent)
    }

    /// A proxy to the server on `upstream` that passes on the first `bytes` bytes of each
    /// connection's answer, then nothing more (the request always goes through whole).
    pub fn truncating(upstream: u16, bytes: usize) -> Self {
        Self::truncating_on(free_port(), upstream, bytes)
    }

    /// [`StallingServer::truncating`] on a port chosen beforehand.
    pub fn truncating_on(port: u16, upstream: u16, bytes: usize) -> Self {
        Self::start(port, Behaviour::Truncate { upstream, bytes })
    }

    fn start(port: u16, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))
            .unwrap_or_else(|e| panic!("bind the stalling server to port {port}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let shared = Arc::new(Shared {
            accepting: AtomicBool::new(true),
            ..Default::default()
        });
        let state = shared.clone();
        let acceptor = std::thread::spawn(move || {
            // Polled, so that stop_accepting can close the listener from another thread.
            while state.accepting.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        state.accepted.fetch_add(1, Ordering::SeqCst);
                        let _ = client.set_nonblocking(false);
                        serve(&state, client, behaviour);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        StallingServer {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `git://127.0.0.1:PORT/<name>.git`.
    pub fn git_url(&self, bare: &BareRepo) -> String {
        format!("git://127.0.0.1:{}/{}.git", self.port, bare.name())
    }

    /// `http://127.0.0.1:PORT/git/<name>.git`, the path [`super::HttpGitServer`] serves.
    pub fn http_url(&self, bare: &BareRepo) -> String {
        format!("http://127.0.0.1:{}/git/{}.git", self.port, bare.name())
    }

    /// `ssh://git@127.0.0.1:PORT/<name>.git`.
    pub fn ssh_url(&self, bare: &BareRepo) -> String {
        format!("ssh://git@127.0.0.1:{}/{}.git", self.port, bare.name())
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Close the listening socket (new connections are refused); the accepted ones stay open.
    pub fn stop_accepting(&mut self) {
        self.shared.accepting.store(false, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Drop for StallingServer {
    fn drop(&mut self) {
        self.stop_accepting();
        let held = std::mem::take(
            &mut *self
                .shared
                .held
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        // Ends the forwarding threads too: their reads and writes fail.
        for stream in held {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

fn hold(shared: &Shared, stream: &TcpStream) {
    if let Ok(clone) = stream.try_clone() {
        shared
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(clone);
    }
}

fn serve(shared: &Arc<Shared>, client: TcpStream, behaviour: Behaviour) {
    hold(shared, &client);
    let Behaviour::Truncate { upstream, bytes } = behaviour else {
        return;
    };
    let Ok(server) = TcpStream::connect_timeout(&loopback(upstream), Duration::from_secs(5)) else {
        return;
    };
    hold(shared, &server);
    let (Ok(mut client_in), Ok(mut server_out)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_in, &mut server_out);
    });
    let (mut server_in, mut client_out) = (server, client);
    std::thread::spawn(move || {
        let mut left = bytes;
        let mut buf = [0u8; 8192];
        while left > 0 {
            let n = match server_in.read(&mut buf[..left.min(8192)]) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if client_out.write_all(&buf[..n]).is_err() {
                return;
            }
            left -= n;
        }
        // Budget spent: forward nothing more, keep both connections open (see `hold`).
    });
}
