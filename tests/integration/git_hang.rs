//! Hung git servers: one that accepts and never answers, and one that stops mid-advertisement
//! or mid-pack ([`StallingServer`]), on both implementations, over `git://`, `http://` and
//! ssh. A fetch from them must end: `run --once` exits soon after the source's timeout, a
//! daemon's threads and sockets go back to what they were, and SIGTERM stops a daemon whose
//! fetches are stuck well within the systemd unit's `TimeoutStopSec` (45 s).
//!
//! No timing asserts beyond generous bounds: every wait polls with a deadline.

use crate::support::{
    free_port, gitopsd_bin, implementation_name, noise, text, GitDaemon, HttpGitServer, Proxy,
    Repo, StallingServer,
};
use serde_json::Value;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The source timeout the tests configure.
const TIMEOUT_SECS: u64 = 3;
/// How long after its timeout `run --once` may take to exit (a noisy machine, the process
/// start, the kustomization-less report): far below a hang.
const EXIT_SLACK: Duration = Duration::from_secs(20);
/// The unit's `TimeoutStopSec` is 45 s: SIGTERM must end the daemon well before.
const STOP_BOUND: Duration = Duration::from_secs(40);

/// A repository whose pack is far bigger than the truncating proxy lets through: 1 MiB that
/// does not compress.
fn big_repo() -> Repo {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", "kind: ConfigMap\n");
    repo.write("blob.bin", noise(1 << 20, 7));
    repo.commit("big");
    repo.push_all();
    repo
}

/// A temp dir with a config naming one git source per `(name, url)`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    port: u16,
}

impl Setup {
    fn new(sources: &[(&str, &str)], timeout: &str, retry: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut yaml = format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n"
        );
        for (name, url) in sources {
            yaml.push_str(&format!(
                "  - name: {name}\n    source:\n      kind: git\n      url: {url}\n      \
                 gitImplementation: {}\n      interval: 1h\n      timeout: {timeout}\n      \
                 retryInterval: {retry}\n    kustomizations: []\n",
                implementation_name()
            ));
        }
        let config = dir.path().join("gitopsd.yaml");
        fs::write(&config, yaml).unwrap();
        Setup { dir, config, port }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("gitopsd.log")
    }

    fn log(&self) -> String {
        fs::read(self.log_path())
            .map(|b| text(&b))
            .unwrap_or_default()
    }

    fn command(&self, extra: &[&str]) -> Command {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut command = Command::new(gitopsd_bin());
        command
            .args(["run", "--config"])
            .arg(&self.config)
            .args(extra)
            .env("GITOPSD_LOG", "info,gitopsd=debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .stderr(log);
        command
    }

    /// Starts the daemon (stdout into the log too).
    fn start(&self) -> Daemon {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.log_path())
            .ok();
        let mut command = self.command(&[]);
        if let Some(log) = log {
            command.stdout(log);
        }
        Daemon {
            child: command.spawn().expect("spawn gitopsd run"),
            port: self.port,
        }
    }
}

/// `gitopsd run --once -o json`, killed if it outlives `limit`: its exit status (None when
/// it had to be killed), stdout and how long it ran.
fn run_once(
    setup: &Setup,
    limit: Duration,
    env: &[(&str, String)],
) -> (Option<ExitStatus>, String, Duration) {
    let started = Instant::now();
    let mut child = setup
        .command(&["--once", "-o", "json"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn gitopsd run --once");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut { stdout }, &mut out);
        out
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    (status, reader.join().unwrap_or_default(), took)
}

/// `run --once` against `url` ends soon after the timeout, with an error naming the URL
/// and saying it timed out.
fn once_times_out(url: &str) {
    once_times_out_with(url, &[]);
}

/// [`once_times_out`] with extra environment variables for gitopsd.
fn once_times_out_with(url: &str, env: &[(&str, String)]) {
    let setup = Setup::new(&[("stuck", url)], &format!("{TIMEOUT_SECS}s"), "1m");
    let limit = Duration::from_secs(TIMEOUT_SECS) + EXIT_SLACK;
    let (status, stdout, took) = run_once(&setup, limit, env);
    let Some(status) = status else {
        panic!(
            "run --once against {url} still ran after {limit:?}: the stuck fetch held it\n{}",
            setup.log()
        );
    };
    assert_eq!(status.code(), Some(1), "{stdout}\n{}", setup.log());
    let report: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\n{}", setup.log()));
    let error = report["sources"][0]["error"].as_str().unwrap_or_default();
    assert_eq!(report["sources"][0]["name"], "stuck");
    assert!(
        error.contains("timed out") && error.contains(url),
        "the error should name {url} and say it timed out: {error:?}"
    );
    eprintln!("run --once against {url} exited after {took:?}");
}

fn silent_git_server() {
    let repo = Repo::new();
    let server = StallingServer::silent();
    once_times_out(&server.git_url(repo.bare()));
    assert!(server.accepted() >= 1, "gitopsd never connected");
}

fn silent_http_server() {
    let repo = Repo::new();
    let server = StallingServer::silent();
    once_times_out(&server.http_url(repo.bare()));
    assert!(server.accepted() >= 1, "gitopsd never connected");
}

/// Plain http through a proxy goes through gitopsd's own HTTP client on gix (see the README's
/// Proxies); the proxy forwards to a server that never answers.
#[test]
fn gix_silent_http_server_through_a_proxy() {
    let repo = Repo::new();
    let server = StallingServer::silent();
    let proxy = Proxy::start();
    crate::support::IMPLEMENTATION.with(|i| i.set(gitopsd::config::GitImplementation::Gix));
    let env = [
        ("http_proxy", proxy.url()),
        ("no_proxy", String::new()),
        ("NO_PROXY", String::new()),
    ];
    once_times_out_with(&server.http_url(repo.bare()), &env);
    assert!(server.accepted() >= 1, "the proxy never connected");
}

fn silent_ssh_server() {
    let repo = Repo::new();
    let server = StallingServer::silent();
    once_times_out(&server.ssh_url(repo.bare()));
    assert!(server.accepted() >= 1, "gitopsd never connected");
}

/// 16 bytes: a pkt-line header and a few bytes of the first line of the advertisement (over
/// HTTP, not even the whole status line).
fn git_server_stops_mid_advertisement() {
    let repo = big_repo();
    let (daemon, _) = GitDaemon::serving(repo.bare());
    let proxy = StallingServer::truncating(daemon.port(), 16);
    once_times_out(&proxy.git_url(repo.bare()));
}

fn http_server_stops_mid_advertisement() {
    let repo = big_repo();
    let (http, _) = HttpGitServer::serving(repo.bare());
    let proxy = StallingServer::truncating(http.port(), 16);
    once_times_out(&proxy.http_url(repo.bare()));
}

/// 64 KiB per connection: the advertisement and the ref listing pass, the 1 MiB pack does not.
fn git_server_stops_mid_pack() {
    let repo = big_repo();
    let (daemon, _) = GitDaemon::serving(repo.bare());
    let proxy = StallingServer::truncating(daemon.port(), 64 << 10);
    once_times_out(&proxy.git_url(repo.bare()));
    // One connection listed the refs; the stall was in the next one's pack.
    assert!(
        proxy.accepted() >= 2,
        "the fetch never got past the ref listing"
    );
}

fn http_server_stops_mid_pack() {
    let repo = big_repo();
    let (http, _) = HttpGitServer::serving(repo.bare());
    let proxy = StallingServer::truncating(http.port(), 64 << 10);
    once_times_out(&proxy.http_url(repo.bare()));
}

/// A running `gitopsd run`; killed and reaped on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        ureq::get(&url)
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default()
    }

    /// `gitopsd_source_fetch_errors_total` of source `name`.
    fn fetch_errors(&self, name: &str) -> u64 {
        metric(&self.metrics(), "gitopsd_source_fetch_errors_total", name).map_or(0, |v| v as u64)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `family` for the source called `name` in a Prometheus text.
fn metric(text: &str, family: &str, name: &str) -> Option<f64> {
    let label = format!("name=\"{name}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")) && l.contains(&label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn wait_for(what: &str, limit: Duration, context: impl Fn() -> String, check: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        if Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn socket_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                fs::read_link(e.path())
                    .is_ok_and(|target| target.to_string_lossy().starts_with("socket:"))
            })
            .count()
    })
}

/// The fewest threads and sockets seen over `window`: idle runtime threads come and go, the
/// baseline is what remains between them.
fn quietest(pid: u32, window: Duration) -> (usize, usize) {
    let end = Instant::now() + window;
    let (mut threads, mut sockets) = (usize::MAX, usize::MAX);
    while Instant::now() < end {
        threads = threads.min(thread_count(pid));
        sockets = sockets.min(socket_count(pid));
        std::thread::sleep(Duration::from_millis(50));
    }
    (threads, sockets)
}

/// Several timeouts against servers that hold their connections open forever (silent over
/// `git://` and ssh, stopping mid-pack over `http://`), then the servers stop accepting: the
/// daemon's threads and sockets go back to where they were before the first hang.
fn threads_and_sockets_return_to_baseline() {
    let repo = big_repo();
    let (http, _) = HttpGitServer::serving(repo.bare());
    let (git_port, http_port, ssh_port) = (free_port(), free_port(), free_port());
    let git_url = format!("git://127.0.0.1:{git_port}/repo.git");
    let http_url = format!("http://127.0.0.1:{http_port}/git/repo.git");
    let ssh_url = format!("ssh://git@127.0.0.1:{ssh_port}/repo.git");
    let sources = [
        ("viagit", git_url.as_str()),
        ("viahttp", http_url.as_str()),
        ("viassh", ssh_url.as_str()),
    ];
    let names = sources.map(|(name, _)| name);
    let setup = Setup::new(&sources, "2s", "5s");
    let daemon = setup.start();
    let pid = daemon.pid();
    let context = || format!("--- gitopsd log ---\n{}", setup.log());
    // Nothing listens yet: all fail at once (connection refused), which leaves nothing open.
    wait_for(
        "the first refused fetches",
        Duration::from_secs(60),
        context,
        || names.iter().all(|name| daemon.fetch_errors(name) >= 1),
    );
    let (threads, sockets) = quietest(pid, Duration::from_secs(8));
    eprintln!("baseline: {threads} threads, {sockets} sockets");

    let mut servers = [
        StallingServer::silent_on(git_port),
        StallingServer::truncating_on(http_port, http.port(), 64 << 10),
        StallingServer::silent_on(ssh_port),
    ];
    let before = names.map(|name| daemon.fetch_errors(name));
    wait_for(
        "three timeouts per source",
        Duration::from_secs(120),
        context,
        || {
            names
                .iter()
                .zip(before)
                .all(|(name, before)| daemon.fetch_errors(name) >= before + 3)
        },
    );
    assert!(servers.iter().all(|s| s.accepted() >= 1));
    let log = setup.log();
    assert!(log.contains("timed out after 2s"), "{log}");
    eprintln!(
        "while hung: {} threads, {} sockets",
        thread_count(pid),
        socket_count(pid)
    );
    // The held connections stay open: a fetch still blocked on one would never end.
    for server in &mut servers {
        server.stop_accepting();
    }
    let settled = || {
        let (now_threads, now_sockets) = quietest(pid, Duration::from_secs(3));
        now_threads <= threads && now_sockets <= sockets
    };
    wait_for(
        "threads and sockets back at the baseline",
        Duration::from_secs(120),
        || {
            format!(
                "baseline {threads} threads / {sockets} sockets, now {} / {}\n{}",
                thread_count(pid),
                socket_count(pid),
                context()
            )
        },
        settled,
    );
    drop(servers);
}

/// SIGTERM while fetches hang (timeout 10m, so only the stop can end them): the daemon
/// exits, with status 0, well before systemd would kill it.
fn sigterm_stops_a_daemon_with_stuck_fetches() {
    let repo = Repo::new();
    let git = StallingServer::silent();
    let web = StallingServer::silent();
    let (git_url, http_url) = (git.git_url(repo.bare()), web.http_url(repo.bare()));
    let setup = Setup::new(
        &[("viagit", &git_url), ("viahttp", &http_url)],
        "10m",
        "10m",
    );
    let mut daemon = setup.start();
    let context = || format!("--- gitopsd log ---\n{}", setup.log());
    wait_for(
        "both fetches to hang",
        Duration::from_secs(60),
        context,
        || git.accepted() >= 1 && web.accepted() >= 1,
    );
    // Let them settle into their blocking reads.
    std::thread::sleep(Duration::from_secs(1));
    // SAFETY: kill(2) on the child this test started and has not reaped yet.
    let sent = unsafe { libc::kill(daemon.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "cannot signal the daemon");
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = daemon.child.try_wait().unwrap() {
            break status;
        }
        if signalled.elapsed() > STOP_BOUND {
            panic!(
                "gitopsd still ran {STOP_BOUND:?} after SIGTERM (systemd kills at 45 s)\n{}",
                context()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{}", context());
    eprintln!("stopped {:?} after SIGTERM", signalled.elapsed());
}

on_both!(
    silent_git_server,
    silent_http_server,
    silent_ssh_server,
    git_server_stops_mid_advertisement,
    http_server_stops_mid_advertisement,
    git_server_stops_mid_pack,
    http_server_stops_mid_pack,
    threads_and_sockets_return_to_baseline,
    sigterm_stops_a_daemon_with_stuck_fetches,
);
