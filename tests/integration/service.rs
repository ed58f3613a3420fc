//! gitopsd as a systemd service: the notification protocol spoken by a real `gitopsd run` to a
//! datagram socket the test listens on (as systemd's would), and the shipped unit checked by
//! `systemd-analyze` (no running systemd is needed for either).

use crate::support::{free_port, gitopsd_bin, text, Repo};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A config with one local git source and one kustomization, serving on `port`.
fn write_config(dir: &Path, repo: &Repo, port: u16) -> std::path::PathBuf {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: {state}\nserver:\n  listen: \"127.0.0.1:{port}\"\nconfigurations:\n  - name: app\n    \
             namespace: default\n    source:\n      kind: git\n      url: {url}\n      interval: 1m\n    \
             kustomizations:\n      - name: app\n        path: ./deploy\n        target: {{ directory: {out} }}\n",
            state = dir.join("state").display(),
            url = repo.path().display(),
            out = dir.join("out").display(),
        ),
    )
    .unwrap();
    config
}

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n",
    );
    repo.commit("one config map");
    repo
}

fn receive(socket: &UnixDatagram) -> String {
    socket
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within 60 s");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

/// Starts `gitopsd run` with `NOTIFY_SOCKET=socket_name`, expects READY=1 (with the API
/// already answering), then SIGTERM and STOPPING=1, and a clean exit.
fn ready_then_stopping(listener: &UnixDatagram, socket_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let port = free_port();
    let config = write_config(dir.path(), &repo, port);
    let child = Command::new(gitopsd_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("NOTIFY_SOCKET", socket_name)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = receive(listener);
    assert!(ready.starts_with("READY=1\nSTATUS="), "{ready:?}");
    assert!(ready.contains(&format!("127.0.0.1:{port}")), "{ready:?}");
    // Ready means serving: the API answers at once, with nothing else awaited.
    let health = ureq::get(&format!("http://127.0.0.1:{port}/healthz")).call();
    assert!(
        health.is_ok(),
        "API not answering after READY=1: {health:?}"
    );
    // SAFETY: kill takes plain integers.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    // STATUS= lines (the summary changing as the first sync lands) may come before it.
    let mut message = receive(listener);
    while message.starts_with("STATUS=") {
        message = receive(listener);
    }
    assert_eq!(message, "STOPPING=1");
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn run_notifies_ready_and_stopping_on_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    ready_then_stopping(&listener, path.to_str().unwrap());
}

#[test]
fn run_notifies_ready_and_stopping_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("gitopsd-it-notify-{}-{}", std::process::id(), free_port());
    let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let listener = UnixDatagram::bind_addr(&address).unwrap();
    ready_then_stopping(&listener, &format!("@{name}"));
}

/// The shipped unit, with its binary path pointed at the binary under test (systemd-analyze
/// checks that every Exec* command exists and is executable).
fn unit_under_test(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/gitopsd.service"
    ))
    .unwrap()
    .replace("/usr/bin/gitopsd", gitopsd_bin().to_str().unwrap());
    let path = dir.join("gitopsd.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect(
            "systemd-analyze (Debian package systemd) is installed by scripts/install-test-deps.sh",
        );
    // verify prints problems on stderr and still exits 0 for some of them: both must be clean.
    let stderr = text(&output.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| line.contains("gitopsd.service"))
        .collect();
    assert!(
        output.status.success() && problems.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        output.status
    );
}

#[test]
fn systemd_analyze_security_rates_the_unit_ok_or_better() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let stdout = text(&output.stdout);
    let overall = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no overall rating:\n{stdout}\n{}", text(&output.stderr)));
    // "→ Overall exposure level for gitopsd.service: 1.9 OK 🙂"
    let score: f64 = overall
        .split(':')
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable rating: {overall}"));
    assert!(score <= 2.5, "exposure {score} > 2.5 (\"OK\"):\n{stdout}");
}

/// `gitopsd run --once` with stderr redirected to `log`, `JOURNAL_STREAM` set to `stream`.
fn run_once_logging_to(log: &Path, stream: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = write_config(dir.path(), &repo, free_port());
    let status = Command::new(gitopsd_bin())
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", stream)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(log).unwrap()
}

#[test]
fn logs_to_the_journal_carry_priorities_and_no_timestamps() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    std::fs::write(&log, "").unwrap();
    let meta = std::fs::metadata(&log).unwrap();
    let journal = run_once_logging_to(&log, &format!("{}:{}", meta.dev(), meta.ino()));
    assert!(!journal.is_empty());
    for line in journal.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "not a journal line: {line:?}\n{journal}"
        );
        assert!(
            !line.contains("INFO") && !line.contains('\u{1b}'),
            "{line:?}"
        );
    }
    // A JOURNAL_STREAM inherited from elsewhere (another device:inode) is ignored.
    let other = dir.path().join("stderr-2");
    let plain = run_once_logging_to(&other, &format!("{}:{}", meta.dev(), meta.ino()));
    assert!(plain.lines().any(|l| l.contains(" INFO ")), "{plain}");
    assert!(!plain.starts_with('<'), "{plain}");
}

/// The next notification, or `None` when `quiet` passes without one.
fn next_notification(socket: &UnixDatagram, quiet: Duration) -> Option<String> {
    socket.set_read_timeout(Some(quiet)).unwrap();
    let mut buffer = [0u8; 4096];
    match socket.recv(&mut buffer) {
        Ok(n) => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("notify socket: {e}"),
    }
}

/// `gitopsd run` under a watchdog of 2 s (pings every second), notifying `socket`.
fn run_with_watchdog(
    dir: &Path,
    config: &Path,
    socket: &Path,
    extra_env: &[(&str, &str)],
) -> std::process::Child {
    let mut command = Command::new(gitopsd_bin());
    command
        .args(["run", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    for (key, value) in extra_env {
        command.env(key, value);
    }
    command.spawn().unwrap()
}

#[test]
fn watchdog_pings_come_while_the_loops_turn_and_status_lines_say_what_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = write_config(dir.path(), &repo, free_port());
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    let mut child = run_with_watchdog(dir.path(), &config, &path, &[]);
    let mut pings = 0;
    let mut statuses = Vec::new();
    // Three pings after the source is ready prove the pings keep coming once the loop idles.
    while pings < 3
        || !statuses
            .iter()
            .any(|s: &String| s == "STATUS=1 source ready")
    {
        let message = next_notification(&listener, Duration::from_secs(60))
            .expect("a notification within 60 s");
        if message == "WATCHDOG=1" {
            if statuses.iter().any(|s| s == "STATUS=1 source ready") {
                pings += 1;
            }
        } else if message.starts_with("STATUS=") {
            statuses.push(message);
        }
    }
    // Sent when the summary changes, not at every tick.
    let repeated = statuses.windows(2).any(|w| w[0] == w[1]);
    assert!(!repeated, "{statuses:?}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_failing_source_is_named_with_its_cause_in_the_status_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = write_config(dir.path(), &repo, free_port());
    let missing = dir.path().join("no-such-repository");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &repo.path().display().to_string(),
        &missing.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    let mut child = run_with_watchdog(dir.path(), &config, &path, &[]);
    let line = loop {
        let message = next_notification(&listener, Duration::from_secs(60))
            .expect("a notification within 60 s");
        if message.contains("failing") {
            break message;
        }
    };
    assert!(
        line.starts_with("STATUS=0 sources ready, 1 failing: app ("),
        "{line:?}"
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_stuck_configuration_loop_stops_the_watchdog_pings() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let config = write_config(dir.path(), &repo, free_port());
    let path = dir.path().join("notify.sock");
    let listener = UnixDatagram::bind(&path).unwrap();
    // Debug builds only: each loop hangs after its first pass in a step whose limit is 1 s.
    let mut child = run_with_watchdog(
        dir.path(),
        &config,
        &path,
        &[("GITOPSD_DEBUG_STALL_LOOPS", "1")],
    );
    // Pings may come until the stall is seen; then none for several watchdog intervals.
    let mut quiet = false;
    for _ in 0..60 {
        match next_notification(&listener, Duration::from_secs(6)) {
            Some(_) => continue,
            None => {
                quiet = true;
                break;
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert!(quiet, "pings kept coming from a stuck scheduler:\n{log}");
    assert!(log.contains("stuck in one step"), "{log}");
}

#[test]
fn a_source_failing_over_and_over_is_logged_at_a_slowing_rate_and_its_recovery_once() {
    use crate::support::Running;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let missing = dir.path().join("repo-to-come");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: {}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n  - name: app\n    \
             source: {{ kind: git, url: {}, interval: 1s, retryInterval: 1s }}\n",
            dir.path().join("state").display(),
            missing.display()
        ),
    )
    .unwrap();
    let mut daemon = Running::start(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &format!("127.0.0.1:{port}"),
        &dir.path().join("log"),
    );
    let errors = |d: &Running| -> Option<u64> {
        d.get("/metrics")?
            .lines()
            .find(|l| l.starts_with("gitopsd_source_fetch_errors_total{"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    daemon.wait_for("ten failed fetches", |d| (errors(d)? >= 10).then_some(()));
    let logged = daemon
        .log()
        .lines()
        .filter(|l| l.contains("source failed") || l.contains("source still failing"))
        .count() as u64;
    let attempts = errors(&daemon).unwrap();
    // Logged at the 1st, 2nd, 4th, 8th, ... attempt: far fewer lines than attempts.
    assert!(
        logged >= 4 && logged <= u64::from(attempts.ilog2()) + 2,
        "{logged} lines for {attempts} attempts:\n{}",
        daemon.log()
    );
    let repo = repo();
    std::fs::rename(repo.path(), &missing).unwrap();
    daemon.wait_for("the recovery logged", |d| {
        d.log().contains("source recovered after").then_some(())
    });
    std::fs::rename(&missing, repo.path()).unwrap();
}
