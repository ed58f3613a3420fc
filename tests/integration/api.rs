//! The HTTP API's self-protection, against a real `gitopsd run` process: header and body read
//! timeouts, the connection cap (also under a low open-file limit), the bearer token (and the
//! CLI client sending it), the warning for an open API beyond loopback, and control
//! characters escaped in error bodies and logs.
//!
//! Every daemon listens on, and every test connects to, 127.0.0.1 only (the warning test binds
//! 0.0.0.0 but connects to 127.0.0.1). Nothing asserts how long something took: waits poll
//! with generous deadlines; "no answer yet" checks can only pass spuriously, never fail.

use crate::support::{describe, free_port, gitopsd_bin, noise, text, Repo};
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// `server.readTimeout` in the timeout tests: short, so that the tests are quick.
const READ_TIMEOUT_SECS: u64 = 2;
/// How long after the read timeout the server may take to close a connection (noisy machine).
const SLACK: Duration = Duration::from_secs(20);

/// A temp dir holding one daemon's config (a `file://` repository), state dir and log.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    config: PathBuf,
    _repo: Repo,
}

impl Setup {
    /// `server` is the YAML flow mapping's content besides `listen`, e.g. `tokenFile: t`;
    /// `listen_host` is 127.0.0.1 except for the warning test.
    fn new(listen_host: &str, server: &str, kustomization_path: &str) -> Setup {
        Setup::with_files(listen_host, server, kustomization_path, &[])
    }

    /// As [`Setup::new`], with extra files in the repository.
    fn with_files(
        listen_host: &str,
        server: &str,
        kustomization_path: &str,
        files: &[(&str, &[u8])],
    ) -> Setup {
        let repo = Repo::new();
        repo.write(
            "app/configmap.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n",
        );
        for (path, content) in files {
            repo.write(path, content);
        }
        repo.commit("first");
        repo.push_all();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("gitopsd.yaml");
        let separator = if server.is_empty() { "" } else { ", " };
        let yaml = format!(
            "stateDir: ./state\n\
             server: {{ listen: \"{listen_host}:{port}\"{separator}{server} }}\n\
             configurations:\n  \
               - name: web\n    \
                 source: {{ kind: git, url: \"{}\", ref: {{ branch: main }}, interval: 1h }}\n    \
                 kustomizations:\n      \
                   - {{ name: app, path: {kustomization_path} }}\n",
            repo.bare().file_url()
        );
        fs::write(&config, yaml).unwrap();
        Setup {
            dir,
            port,
            config,
            _repo: repo,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `gitopsd run`, optionally under an open-file limit; stderr and stdout go to the
    /// log.
    fn start(&self, nofile: Option<u64>) -> Daemon {
        let log_path = self.path("gitopsd.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let mut command = Command::new(gitopsd_bin());
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .env("GITOPSD_LOG", "info,gitopsd=debug")
            .env_remove("GITOPSD_CONFIG")
            .env_remove("GITOPSD_TOKEN")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(limit) = nofile {
            // SAFETY: between fork and exec the closure only calls setrlimit(2), which is
            // async-signal-safe, and touches no memory but its own stack.
            unsafe {
                command.pre_exec(move || {
                    let rlimit = libc::rlimit {
                        rlim_cur: limit,
                        rlim_max: limit,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = command.spawn().expect("spawn gitopsd run");
        let mut daemon = Daemon {
            child,
            port: self.port,
            log: log_path,
        };
        daemon.wait_healthy();
        daemon
    }

    /// Runs a client subcommand (`status`, `reconcile`) with extra environment.
    fn client(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut command = Command::new(gitopsd_bin());
        command
            .args(args)
            .env_remove("GITOPSD_CONFIG")
            .env_remove("GITOPSD_TOKEN")
            .stdin(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        command.output().expect("run gitopsd client")
    }
}

/// A running `gitopsd run`; killed and reaped on drop, its log printed if the test failed.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read(&self.log).map(|b| text(&b)).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("--- gitopsd log ---\n{}", self.log())
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("gitopsd exited with {status}\n{}", self.context());
        }
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            if exchange(self.port, &request("GET", "/healthz", &[]))
                .is_some_and(|answer| status_of(&answer) == Some(200))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gitopsd not healthy after {DEADLINE:?}\n{}",
                self.context()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Polls until the log contains `needle`.
    fn wait_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let log = self.log();
            if log.contains(needle) {
                return log;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log after {DEADLINE:?}\n{}",
                self.context()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("{}", self.context());
        }
    }
}

/// A complete HTTP/1.1 request that asks the server to close the connection afterwards.
fn request(method: &str, target: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to gitopsd");
    stream
        .set_read_timeout(Some(Duration::from_secs(READ_TIMEOUT_SECS) + SLACK))
        .unwrap();
    stream
}

/// Sends `bytes` on a new connection and reads until the server closes it; None if nothing
/// came back.
fn exchange(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(SLACK)).unwrap();
    stream.write_all(bytes).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (!answer.is_empty()).then_some(answer)
}

fn status_of(answer: &[u8]) -> Option<u16> {
    text(answer)
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The value of header `name` (case-insensitive) in a raw response.
fn header_of(answer: &[u8], name: &str) -> Option<String> {
    let answer = text(answer);
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name)
            .then(|| value.trim().to_string())
    })
}

fn body_of(answer: &[u8]) -> String {
    let answer = text(answer);
    answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

/// Reads until the server closes `stream`. Panics if it stays open past the read timeout
/// plus [`SLACK`]. Returns what the server sent before closing.
fn read_until_closed(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return answer,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return answer,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("{what}: still open well after the read timeout ({answer:?})")
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

#[test]
fn half_sent_requests_time_out_and_leave_the_api_reachable() {
    let setup = Setup::new(
        "127.0.0.1",
        &format!("readTimeout: {READ_TIMEOUT_SECS}s"),
        "./app",
    );
    // 200 descriptors: the connection cap defaults to half of them, so 300 half-sent requests
    // can never exhaust the daemon's table (before, 250 made the API unreachable for good).
    let mut daemon = setup.start(Some(200));
    let mut half_sent: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = connect(setup.port);
            stream
                .write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                .unwrap();
            stream
        })
        .collect();

    // A complete request gets through once the server has shed the half-sent ones.
    let answer = {
        let deadline = Instant::now() + DEADLINE;
        loop {
            daemon.assert_running();
            if let Some(answer) = exchange(setup.port, &request("GET", "/healthz", &[])) {
                break answer;
            }
            assert!(
                Instant::now() < deadline,
                "API unreachable\n{}",
                daemon.context()
            );
            std::thread::sleep(POLL);
        }
    };
    assert_eq!(status_of(&answer), Some(200), "{}", text(&answer));

    // Every half-sent connection is closed by the server, with a 408 if it says anything.
    for (i, stream) in half_sent.iter_mut().enumerate() {
        let answer = read_until_closed(stream, &format!("half-sent connection {i}"));
        assert!(
            answer.is_empty() || status_of(&answer) == Some(408),
            "connection {i}: {}",
            text(&answer)
        );
    }
    daemon.assert_running();
    assert!(
        !daemon.log().contains("cannot accept"),
        "the descriptor table ran full\n{}",
        daemon.context()
    );
}

#[test]
fn a_slow_body_is_cut_off() {
    let setup = Setup::new(
        "127.0.0.1",
        &format!("readTimeout: {READ_TIMEOUT_SECS}s"),
        "./app",
    );
    let mut daemon = setup.start(None);
    let mut stream = connect(setup.port);
    stream
        .write_all(
            b"POST /api/v1/reconcile/web HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\nab",
        )
        .unwrap();
    // The other 98 bytes never come.
    let answer = read_until_closed(&mut stream, "slow body");
    assert_eq!(status_of(&answer), Some(408), "{}", text(&answer));
    assert!(
        body_of(&answer).contains("did not arrive within 2s"),
        "{}",
        text(&answer)
    );
    daemon.assert_running();

    // A body that does arrive in time is fine.
    let answer = exchange(
        setup.port,
        b"POST /api/v1/reconcile/web HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}",
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(202), "{}", text(&answer));
}

#[test]
fn the_connection_cap_holds() {
    // A long read timeout, so that only the cap decides who is served.
    let setup = Setup::new("127.0.0.1", "maxConnections: 3, readTimeout: 1h", "./app");
    let mut daemon = setup.start(None);
    let mut holders: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut stream = connect(setup.port);
            stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
            stream
        })
        .collect();

    let mut waiting = connect(setup.port);
    waiting.write_all(&request("GET", "/healthz", &[])).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut first = [0u8; 1];
    match waiting.read(&mut first) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "a fourth connection was served while three held every slot: {other:?}\n{}",
            daemon.context()
        ),
    }

    // One slot frees up: the waiting connection is served.
    holders.pop();
    waiting.set_read_timeout(Some(SLACK)).unwrap();
    let answer = read_until_closed(&mut waiting, "the fourth connection");
    assert_eq!(status_of(&answer), Some(200), "{}", text(&answer));
    daemon.assert_running();
}

#[test]
fn a_client_that_stops_reading_is_disconnected() {
    // Far more than the loopback socket buffers hold, so the server's writes stall.
    let big = noise(32 << 20, 1);
    let setup = Setup::with_files(
        "127.0.0.1",
        &format!("readTimeout: {READ_TIMEOUT_SECS}s"),
        "./app",
        &[("blob.bin", &big)],
    );
    let mut daemon = setup.start(None);
    let url_path = {
        let deadline = Instant::now() + DEADLINE;
        loop {
            daemon.assert_running();
            let answer = exchange(setup.port, &request("GET", "/api/v1/status", &[]));
            let status: Option<serde_json::Value> =
                answer.and_then(|a| serde_json::from_str(&body_of(&a)).ok());
            if let Some(path) = status
                .as_ref()
                .and_then(|st| st["sources"][0]["artifact"]["urlPath"].as_str())
            {
                break path.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no artifact\n{}",
                daemon.context()
            );
            std::thread::sleep(POLL);
        }
    };
    let mut stream = connect(setup.port);
    stream
        .write_all(&request("GET", &format!("/artifacts/{url_path}"), &[]))
        .unwrap();
    // Read nothing until the server has given up on this client.
    daemon.wait_log("the client stopped reading the response");
    let answer = read_until_closed(&mut stream, "the stalled download");
    let length: usize = header_of(&answer, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no Content-Length in {:?}",
                text(&answer[..answer.len().min(200)])
            )
        });
    let head = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    assert!(
        answer.len() - head - 4 < length,
        "the whole artifact arrived: {} bytes",
        answer.len()
    );
    // The server goes on serving others.
    let answer = exchange(setup.port, &request("GET", "/healthz", &[])).expect("an answer");
    assert_eq!(status_of(&answer), Some(200));
}

fn write_token(setup: &Setup, token: &str) -> PathBuf {
    let path = setup.path("api-token");
    fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[test]
fn the_token_is_required_except_for_probes() {
    let setup = Setup::new("127.0.0.1", "tokenFile: api-token", "./app");
    let token_file = write_token(&setup, "first-token");
    let daemon = setup.start(None);
    let port = setup.port;
    let bearer = |token: &str| format!("Bearer {token}");

    for (method, path) in [
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/reconcile/web"),
        ("GET", "/artifacts/git/default/web/x.tar.gz"),
        ("GET", "/no-such-endpoint"),
    ] {
        let answer = exchange(port, &request(method, path, &[])).expect("an answer");
        assert_eq!(status_of(&answer), Some(401), "{path}: {}", text(&answer));
        assert_eq!(
            header_of(&answer, "www-authenticate").as_deref(),
            Some(r#"Bearer realm="gitopsd""#),
            "{path}"
        );
        let answer = exchange(
            port,
            &request(method, path, &[("Authorization", &bearer("wrong-token"))]),
        )
        .expect("an answer");
        assert_eq!(status_of(&answer), Some(401), "{path}: {}", text(&answer));
        assert_eq!(
            header_of(&answer, "www-authenticate").as_deref(),
            Some(r#"Bearer realm="gitopsd", error="invalid_token""#),
            "{path}"
        );
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let answer = exchange(port, &request("GET", path, &[])).expect("an answer");
        assert_ne!(status_of(&answer), Some(401), "{path}: {}", text(&answer));
    }
    let right = bearer("first-token");
    let answer = exchange(
        port,
        &request("GET", "/api/v1/status", &[("Authorization", &right)]),
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(200), "{}", text(&answer));
    assert!(body_of(&answer).contains("\"sources\""));

    // The CLI: the token from the config, from GITOPSD_TOKEN, from --token-file; none: 401.
    let config = setup.config.to_str().unwrap();
    let server = format!("127.0.0.1:{port}");
    let ok = |output: Output| {
        assert!(output.status.success(), "{}", describe(&output));
        text(&output.stdout)
    };
    assert!(ok(setup.client(&["status", "--config", config], &[])).contains("GitRepository"));
    ok(setup.client(
        &["status", "--server", &server],
        &[("GITOPSD_TOKEN", "first-token")],
    ));
    let reconciled = ok(setup.client(
        &[
            "reconcile",
            "web",
            "--server",
            &server,
            "--token-file",
            token_file.to_str().unwrap(),
        ],
        &[],
    ));
    assert!(
        reconciled.contains("reconcile of web requested"),
        "{reconciled}"
    );
    let refused = setup.client(&["status", "--server", &server], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));
    assert!(
        text(&refused.stderr).contains("HTTP 401")
            && text(&refused.stderr).contains("GITOPSD_TOKEN"),
        "{}",
        describe(&refused)
    );

    // The file is read at every request: a rotated token works at once, the old one no more.
    write_token(&setup, "second-token");
    let answer = exchange(
        port,
        &request("GET", "/api/v1/status", &[("Authorization", &right)]),
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(401), "{}", text(&answer));
    let answer = exchange(
        port,
        &request(
            "GET",
            "/api/v1/status",
            &[("Authorization", &bearer("second-token"))],
        ),
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(200), "{}", text(&answer));

    let log = daemon.log();
    assert!(
        !log.contains("first-token") && !log.contains("second-token"),
        "{log}"
    );
    assert!(!log.contains("without a token"), "{log}");
}

#[test]
fn an_open_api_beyond_loopback_is_warned_about() {
    // Bound to every interface; the test only ever connects to 127.0.0.1.
    let setup = Setup::new("0.0.0.0", "", "./app");
    let daemon = setup.start(None);
    let log = daemon.wait_log("beyond loopback without a token");
    assert!(
        log.lines()
            .any(|l| l.contains(" WARN ") && l.contains("beyond loopback without a token")),
        "{log}"
    );
}

#[test]
fn control_characters_are_escaped_in_error_bodies_and_logs() {
    // A state dir and a kustomization path with line breaks (valid YAML): both end up in log
    // lines (the artifact's path, the failed kustomization).
    let forged = "2026-01-01T00:00:00.000000Z  INFO gitopsd: forged";
    let setup = Setup::new(
        "127.0.0.1",
        "",
        &format!("\"./missing\\n{forged}\\u001b[2J\""),
    );
    let config = fs::read_to_string(&setup.config).unwrap().replace(
        "stateDir: ./state",
        &format!("stateDir: \"./state\\n{forged}\\r\""),
    );
    fs::write(&setup.config, config).unwrap();
    let daemon = setup.start(None);

    let answer = exchange(
        setup.port,
        &request("POST", "/api/v1/reconcile/web%0aINFO%20forged%1b%5B2J", &[]),
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(404), "{}", text(&answer));
    assert_eq!(
        body_of(&answer),
        "no configuration named web\\nINFO forged\\u{1b}[2J\n"
    );

    // A raw control byte in the request line never gets past the HTTP parser.
    let answer = exchange(
        setup.port,
        b"GET /api/v1/status\x1b[2J HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .expect("an answer");
    assert_eq!(status_of(&answer), Some(400), "{}", text(&answer));
    assert!(!answer.contains(&0x1b), "{answer:?}");

    let log = daemon.wait_log("kustomization failed");
    assert!(
        log.contains(&format!("missing\\n{forged}\\u{{1b}}[2J")),
        "the kustomization path is escaped in the log:\n{log}"
    );
    assert!(
        log.contains(&format!("state\\n{forged}\\r/artifacts/")),
        "the artifact path is escaped in the log:\n{log}"
    );
    assert!(!log.lines().any(|l| l.starts_with(forged)), "{log}");
    let raw: Vec<char> = log
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in\n{log}");
}

#[test]
fn invalid_server_settings_are_reported_with_positions() {
    let setup = Setup::new(
        "127.0.0.1",
        "token: \"two words\", tokenFile: t, maxConnections: 0, readTimeout: soon",
        "./app",
    );
    let output = setup.client(&["check", "--config", setup.config.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    for expected in [
        ":2:",
        "give either server.token or server.tokenFile, not both",
        "invalid value \"0\" for server.maxConnections",
        "invalid duration \"soon\" for server.readTimeout",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert!(!stderr.contains("two words"), "{stderr}");

    // A token file that cannot be read stops the daemon at start, naming the file only.
    let setup = Setup::new("127.0.0.1", "tokenFile: absent-token", "./app");
    let output = Command::new(gitopsd_bin())
        .args(["run", "--config"])
        .arg(&setup.config)
        .env_remove("GITOPSD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("cannot read server.tokenFile")
            && text(&output.stderr).contains(&*Path::new("absent-token").to_string_lossy()),
        "{}",
        describe(&output)
    );
}
