//! A real forward HTTP proxy for the proxy tests: Debian's `tinyproxy` (installed by
//! `scripts/install-test-deps.sh`), on a free loopback port, with its own config and log in a
//! temp dir.
//!
//! tinyproxy forwards plain `http://` requests (absolute-form `GET http://host/...`) and
//! tunnels anything else with `CONNECT host:port`, which is exactly the two ways clients use
//! a proxy. At log level `Info` it writes one `Request (file descriptor N): <line>` per
//! request with its target, which [`Proxy::requests`] reads back, so a test can prove that a
//! request did (or did not) go through the proxy. tinyproxy 1.11 allows CONNECT to every port
//! when the config has no `ConnectPort` line, so the test servers' random ports need none.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::process::{
    exchange, start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError,
};

const REQUEST_MARK: &str = "]: Request (file descriptor ";

/// A running tinyproxy; stopped (its whole process group) on drop.
#[derive(Debug)]
pub struct Proxy {
    /// Held for its drop, which stops tinyproxy.
    _process: ServerProcess,
    port: u16,
    log: PathBuf,
    /// The log's length once the readiness probe was answered: requests before it were the
    /// harness's own.
    ready_at: u64,
    _dir: TempDir,
}

impl Proxy {
    /// A proxy that lets every loopback client through.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// A proxy that answers `407` unless the client sends `user` and `password` (basic).
    pub fn start_with_auth(user: &str, password: &str) -> Self {
        assert!(
            [user, password]
                .iter()
                .all(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')),
            "keep proxy credentials to letters, digits and '-': they go into a config line"
        );
        Self::start_with(Some((user, password)))
    }

    fn start_with(auth: Option<(&str, &str)>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-proxy-")
            .tempdir()
            .expect("create temp dir for tinyproxy");
        let log = dir.path().join("tinyproxy.log");
        let (process, port, ready_at) = start_on_free_port("tinyproxy", |port| {
            let _ = fs::remove_file(&log);
            let conf = dir.path().join("tinyproxy.conf");
            fs::write(&conf, config(dir.path(), port, &log, auth)).expect("write tinyproxy.conf");
            let mut command = Command::new(tinyproxy_bin());
            // -d: stay in the foreground (the harness owns the process group).
            command
                .arg("-d")
                .arg("-c")
                .arg(&conf)
                .current_dir(dir.path());
            let mut process =
                ServerProcess::spawn("tinyproxy", command, &dir.path().join("stderr.log"))
                    .map_err(|e| {
                        StartError::Failed(format!(
                            "cannot run tinyproxy (run scripts/install-test-deps.sh): {e}"
                        ))
                    })?;
            wait_until_ready(&mut process, || probe(port)).map_err(|e| {
                // tinyproxy reports a taken port in its log file, not on stderr.
                let own_log = fs::read_to_string(&log).unwrap_or_default();
                match e {
                    StartError::Failed(_) if own_log.contains("Address already in use") => {
                        StartError::PortTaken(own_log)
                    }
                    StartError::Failed(detail) => {
                        StartError::Failed(format!("{detail}\n--- tinyproxy log ---\n{own_log}"))
                    }
                    taken => taken,
                }
            })?;
            let ready_at = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            Ok((process, port, ready_at))
        });
        Proxy {
            _process: process,
            port,
            log,
            ready_at,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://user:password@127.0.0.1:PORT`.
    pub fn url_with_credentials(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// The request lines the proxy received since it became ready, oldest first, without the
    /// protocol version: `GET http://127.0.0.1:1234/git/fleet.git/info/refs?...` for a
    /// forwarded request, `CONNECT 127.0.0.1:1234` for a tunnel.
    pub fn requests(&self) -> Vec<String> {
        let bytes = fs::read(&self.log).unwrap_or_default();
        let start = usize::try_from(self.ready_at).unwrap_or(0).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..])
            .lines()
            .filter_map(|line| {
                let rest = &line[line.find(REQUEST_MARK)? + REQUEST_MARK.len()..];
                let request = rest.split_once("): ")?.1.trim();
                Some(
                    request
                        .rsplit_once(" HTTP/")
                        .map_or(request, |(head, _)| head)
                        .to_string(),
                )
            })
            .collect()
    }

    /// Forwarded requests whose URL starts with `prefix` (e.g. `http://127.0.0.1:1234/`).
    pub fn forwarded_to(&self, prefix: &str) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| {
                r.split_once(' ')
                    .is_some_and(|(method, url)| method != "CONNECT" && url.starts_with(prefix))
            })
            .collect()
    }

    /// How many tunnels were opened to `127.0.0.1:port`.
    pub fn tunnels_to(&self, port: u16) -> usize {
        let target = format!("CONNECT 127.0.0.1:{port}");
        self.requests().iter().filter(|r| **r == target).count()
    }

    /// tinyproxy's whole log, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The binary: Debian's tinyproxy-bin puts it in /usr/bin.
fn tinyproxy_bin() -> PathBuf {
    let path = Path::new("/usr/bin/tinyproxy");
    if path.exists() {
        path.to_path_buf()
    } else {
        PathBuf::from("tinyproxy")
    }
}

/// The whole configuration: loopback only, every path in the temp dir, no `Via` header, no
/// `ConnectPort` restriction.
fn config(dir: &Path, port: u16, log: &Path, auth: Option<(&str, &str)>) -> String {
    let mut conf = String::new();
    let _ = writeln!(conf, "Port {port}");
    let _ = writeln!(conf, "Listen 127.0.0.1");
    let _ = writeln!(conf, "Timeout 60");
    let _ = writeln!(conf, "LogFile \"{}\"", log.display());
    let _ = writeln!(conf, "LogLevel Info");
    let _ = writeln!(conf, "PidFile \"{}\"", dir.join("tinyproxy.pid").display());
    let _ = writeln!(conf, "MaxClients 64");
    let _ = writeln!(conf, "Allow 127.0.0.1");
    let _ = writeln!(conf, "DisableViaHeader Yes");
    if let Some((user, password)) = auth {
        let _ = writeln!(conf, "BasicAuth {user} {password}");
    }
    conf
}

/// A request for the proxy's own address: tinyproxy answers it with an error page naming
/// itself, which no other program on the port would.
fn probe(port: u16) -> Probe {
    match exchange(port, b"GET / HTTP/1.0\r\n\r\n") {
        None => Probe::NotYet,
        Some(answer) if answer.is_empty() => Probe::NotYet,
        Some(answer) => {
            let answer = String::from_utf8_lossy(&answer);
            if answer.contains("tinyproxy") {
                Probe::Ready
            } else {
                Probe::Foreign(answer.chars().take(200).collect())
            }
        }
    }
}
