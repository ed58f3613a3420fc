//! End-to-end tests of the long-running daemon (`gitopsd run --config F` as a child process):
//! its HTTP API, the `status` and `reconcile` subcommands, restarts, failure isolation with
//! backoff, and recovery after `kill -9`.
//!
//! Nothing here asserts how long something took: every wait polls with a generous deadline.

use crate::support::{
    describe, free_port, gitopsd_bin, noise, sha256_file, text, GitDaemon, HttpGitServer, Repo,
};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long anything the daemon does in the background may take before a test gives up.
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    context: impl Fn() -> String,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("gave up after {limit:?} waiting for {what}\n{}", context());
        }
        std::thread::sleep(POLL);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// An HTTP client that returns every status as a response rather than an error.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

/// GET `url` with optional extra headers; None when nothing answered.
fn http_get(url: &str, headers: &[(&str, &str)]) -> Option<Reply> {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().ok()?;
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .ok()?;
    Some(Reply { status, etag, body })
}

/// The status code for a request line sent exactly as given (no client-side normalisation
/// of `..` or percent-escapes).
fn raw_status(port: u16, target: &str) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to gitopsd");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = text(&answer);
    answer
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status line for {target}: {answer:?}"))
}

/// A temp dir holding one daemon's config, state dir and log.
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    config: PathBuf,
}

impl Setup {
    /// `configurations` is the YAML list (items indented by two spaces).
    fn new(configurations: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("gitopsd.yaml");
        let yaml = format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n{configurations}"
        );
        fs::write(&config, yaml).unwrap();
        Setup { dir, port, config }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("gitopsd.log")
    }

    fn server(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts `gitopsd run --config F`; its stderr and stdout are appended to the log.
    fn start(&self) -> Daemon {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(gitopsd_bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("GITOPSD_LOG", "info,gitopsd=debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gitopsd run");
        Daemon {
            child,
            port: self.port,
            log: self.log_path(),
        }
    }

    /// Runs a client subcommand (`status`, `reconcile`) of the binary.
    fn client(&self, args: &[&str]) -> Output {
        Command::new(gitopsd_bin())
            .args(args)
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd client")
    }
}

/// A running `gitopsd run`; killed and reaped on drop, its log printed if the test failed.
struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        fs::read(&self.log).map(|b| text(&b)).unwrap_or_default()
    }

    fn context(&self) -> String {
        format!("--- gitopsd log ---\n{}", self.log())
    }

    fn get(&self, path: &str) -> Option<Reply> {
        http_get(&self.url(path), &[])
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("gitopsd exited with {status}\n{}", self.context());
        }
    }

    /// Waits until `/readyz` answers 200.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            self.assert_running();
            if self.get("/readyz").is_some_and(|r| r.status == 200) {
                return;
            }
            if Instant::now() > deadline {
                panic!("gitopsd not ready after {DEADLINE:?}\n{}", self.context());
            }
            std::thread::sleep(POLL);
        }
    }

    /// `GET /api/v1/status`, parsed.
    fn status(&self) -> Value {
        let reply = self
            .get("/api/v1/status")
            .unwrap_or_else(|| panic!("no answer from /api/v1/status\n{}", self.context()));
        assert_eq!(reply.status, 200, "{}", self.context());
        serde_json::from_slice(&reply.body).unwrap()
    }

    /// The status document, or None while the server does not answer (yet).
    fn try_status(&self) -> Option<Value> {
        let reply = self.get("/api/v1/status")?;
        (reply.status == 200).then(|| serde_json::from_slice(&reply.body).unwrap())
    }

    /// Polls the status until `check` finds what it wants in it.
    fn wait_status<T>(&self, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
        wait_for(
            what,
            DEADLINE,
            || self.context(),
            || check(&self.try_status()?),
        )
    }

    fn metrics(&self) -> String {
        let reply = self.get("/metrics").expect("metrics answer");
        assert_eq!(reply.status, 200);
        text(&reply.body)
    }

    /// SIGTERM, then the exit status (waiting up to 30 s).
    fn terminate(&mut self) -> ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet, so
        // the pid is still ours.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "gitopsd still running 30 s after SIGTERM\n{}",
                    self.context()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// The source named `name` in a status document.
fn source<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["sources"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn kustomization<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["kustomizations"]
        .as_array()?
        .iter()
        .find(|k| k["name"] == name)
}

/// The value of the metric line that starts with `prefix` (name and labels).
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

/// A repository with one kustomization directory, `app`, on main.
fn app_repo() -> Repo {
    let repo = Repo::new();
    repo.write("app/configmap.yaml", configmap("settings"));
    repo.commit("first");
    repo.push_all();
    repo
}

/// One configuration `web` following `url`'s main branch, with kustomization `app`.
fn web_configuration(url: &str, interval: &str) -> String {
    format!(
        r#"  - name: web
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }}, interval: {interval} }}
    kustomizations:
      - {{ name: app, path: ./app }}
"#
    )
}

#[test]
fn serves_health_status_metrics_and_artifacts() {
    let repo = app_repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let setup = Setup::new(&web_configuration(&url, "1h"));
    let mut daemon = setup.start();
    daemon.wait_ready();

    let health = daemon.get("/healthz").expect("healthz answers");
    assert_eq!(health.status, 200);

    let revision = format!("main@sha1:{}", repo.head());
    let status = daemon.wait_status("the kustomization to be applied", |st| {
        let k = kustomization(st, "app")?;
        (k["lastAppliedRevision"] == revision.as_str()).then(|| st.clone())
    });
    let s = source(&status, "web").expect("source web in the status");
    assert_eq!(s["revision"], revision.as_str(), "{status:#}");
    assert_eq!(s["namespace"], "default");
    let artifact = &s["artifact"];
    let digest = artifact["digest"].as_str().expect("artifact digest");
    let url_path = artifact["urlPath"].as_str().expect("artifact urlPath");
    let path = PathBuf::from(artifact["path"].as_str().unwrap());
    assert_eq!(digest, sha256_file(&path));
    let k = kustomization(&status, "app").unwrap();
    assert_eq!(k["objects"], 1, "{status:#}");

    let metrics = daemon.metrics();
    let fetches = metric(
        &metrics,
        "gitopsd_source_fetches_total{namespace=\"default\",name=\"web\"",
    );
    assert!(fetches.is_some_and(|n| n >= 1.0), "{metrics}");
    let last_success = metric(
        &metrics,
        "gitopsd_source_last_success_timestamp_seconds{namespace=\"default\",name=\"web\"",
    );
    assert!(last_success.is_some_and(|t| t > 0.0), "{metrics}");

    let download = daemon
        .get(&format!("/artifacts/{url_path}"))
        .expect("artifact answers");
    assert_eq!(download.status, 200, "{}", daemon.context());
    assert_eq!(sha256_hex(&download.body), digest);
    let etag = format!("\"{digest}\"");
    assert_eq!(download.etag.as_deref(), Some(etag.as_str()));
    let cached = http_get(
        &daemon.url(&format!("/artifacts/{url_path}")),
        &[("If-None-Match", &etag)],
    )
    .expect("conditional GET answers");
    assert_eq!(cached.status, 304);
    assert!(cached.body.is_empty());

    assert!(setup.state().join("state.json").is_file());
    for escape in [
        "/artifacts/../state.json",
        "/artifacts/%2e%2e/state.json",
        "/artifacts/..%2fstate.json",
        "/artifacts/git/default/web/../../../../state.json",
        "/artifacts/git/default/web/..%2F..%2F..%2F..%2Fstate.json",
        "/artifacts/git/default/web/nothing.tar.gz",
    ] {
        assert_eq!(raw_status(setup.port, escape), 404, "{escape}");
    }
}

#[test]
fn status_subcommand_prints_the_api_document() {
    let repo = app_repo();
    let (_server, url) = GitDaemon::serving(repo.bare());
    let setup = Setup::new(&web_configuration(&url, "1h"));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let revision = format!("main@sha1:{}", repo.head());
    daemon.wait_status("the kustomization to be applied", |st| {
        (kustomization(st, "app")?["lastAppliedRevision"] == revision.as_str()).then_some(())
    });

    // The document only changes when the daemon syncs; compare once it held still around
    // the CLI call.
    let server = setup.server();
    let mut attempts = 0;
    loop {
        let before = daemon.status();
        let output = setup.client(&["status", "-o", "json", "--server", &server]);
        let after = daemon.status();
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let printed: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("status -o json is not JSON: {e}\n{}", describe(&output)));
        if before == after {
            assert_eq!(printed, before);
            break;
        }
        attempts += 1;
        assert!(attempts < 20, "the status never held still");
    }
}

#[test]
fn reconcile_subcommand_makes_the_daemon_fetch_a_new_commit() {
    let repo = app_repo();
    let (_server, url) = GitDaemon::serving(repo.bare());
    // An hour's interval: only the trigger can explain a second fetch.
    let setup = Setup::new(&web_configuration(&url, "1h"));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let first = format!("main@sha1:{}", repo.head());
    daemon.wait_status("the first revision", |st| {
        (source(st, "web")?["revision"] == first.as_str()).then_some(())
    });

    repo.write("app/configmap.yaml", configmap("changed"));
    let second = format!("main@sha1:{}", repo.commit("second"));
    repo.push_all();

    let output = setup.client(&["reconcile", "web", "--server", &setup.server()]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    daemon.wait_status("the new revision after reconcile", |st| {
        (source(st, "web")?["revision"] == second.as_str()).then_some(())
    });
    daemon.wait_status("the kustomization at the new revision", |st| {
        (kustomization(st, "app")?["lastAppliedRevision"] == second.as_str()).then_some(())
    });
}

/// The source `namespace/name` in a status document.
fn source_in<'a>(status: &'a Value, namespace: &str, name: &str) -> Option<&'a Value> {
    status["sources"]
        .as_array()?
        .iter()
        .find(|s| s["namespace"] == namespace && s["name"] == name)
}

#[test]
fn reconcile_wakes_only_the_configuration_in_the_namespace_asked_for() {
    // Two configurations named `web`, in namespaces blue and green, each following its own
    // repository at an hour's interval: only a trigger explains a second fetch.
    let blue = app_repo();
    let green = app_repo();
    let configuration = |namespace: &str, url: &str| {
        format!(
            r#"  - name: web
    namespace: {namespace}
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }}, interval: 1h }}
    kustomizations:
      - {{ name: app, path: ./app }}
"#
        )
    };
    let setup = Setup::new(&format!(
        "{}{}",
        configuration("blue", &blue.bare().file_url()),
        configuration("green", &green.bare().file_url())
    ));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let first = |repo: &Repo| format!("main@sha1:{}", repo.head());
    let (blue_first, green_first) = (first(&blue), first(&green));
    let fetches = |st: &Value, namespace: &str| {
        source_in(st, namespace, "web").and_then(|s| s["metrics"]["fetchesTotal"].as_u64())
    };
    let before = daemon.wait_status("both first revisions", |st| {
        let synced = |namespace: &str, revision: &str| {
            source_in(st, namespace, "web").is_some_and(|s| s["revision"] == revision)
        };
        (synced("blue", &blue_first) && synced("green", &green_first)).then(|| st.clone())
    });
    for repo in [&blue, &green] {
        repo.write("app/configmap.yaml", configmap("changed"));
        repo.commit("second");
        repo.push_all();
    }
    let blue_second = format!("main@sha1:{}", blue.head());
    let green_second = format!("main@sha1:{}", green.head());
    let server = setup.server();

    // A bare name that both namespaces use is refused, naming the way out.
    let output = setup.client(&["reconcile", "web", "--server", &server]);
    assert!(!output.status.success(), "{}", describe(&output));
    let stderr = text(&output.stderr);
    for word in ["web", "blue", "green", "NAMESPACE/NAME"] {
        assert!(stderr.contains(word), "{word}\n{}", describe(&output));
    }

    let output = setup.client(&["reconcile", "blue/web", "--server", &server]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        text(&output.stdout).contains("reconcile of blue/web requested"),
        "{}",
        describe(&output)
    );
    daemon.wait_status("blue's new revision after its reconcile", |st| {
        (source_in(st, "blue", "web")?["revision"] == blue_second.as_str()).then_some(())
    });
    let after = daemon.status();
    let green_now = source_in(&after, "green", "web").expect("green/web in the status");
    assert_eq!(green_now["revision"], green_first.as_str(), "{after:#}");
    assert_eq!(
        fetches(&after, "green"),
        fetches(&before, "green"),
        "{after:#}"
    );
    assert_eq!(
        green_now["lastAttemptTime"],
        source_in(&before, "green", "web").unwrap()["lastAttemptTime"],
        "{after:#}"
    );

    // --namespace picks the other one.
    let output = setup.client(&[
        "reconcile",
        "web",
        "--namespace",
        "green",
        "--server",
        &server,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    daemon.wait_status("green's new revision after its reconcile", |st| {
        (source_in(st, "green", "web")?["revision"] == green_second.as_str()).then_some(())
    });

    let output = setup.client(&["reconcile", "red/web", "--server", &server]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("no configuration named web in namespace red"),
        "{}",
        describe(&output)
    );
}

#[test]
fn reconcile_of_an_unknown_name_fails_with_a_message() {
    let repo = app_repo();
    let setup = Setup::new(&web_configuration(&repo.bare().file_url(), "1h"));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let output = setup.client(&["reconcile", "no-such-config", "--server", &setup.server()]);
    assert!(!output.status.success(), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("no-such-config"),
        "the message names what was asked for\n{}",
        describe(&output)
    );
}

#[test]
fn restart_serves_the_kept_artifact_while_the_git_server_is_down() {
    let repo = app_repo();
    let (mut server, url) = GitDaemon::serving(repo.bare());
    // A short interval: after the restart the daemon polls the dead server at once.
    let setup = Setup::new(&web_configuration(&url, "1m"));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let revision = format!("main@sha1:{}", repo.head());
    let status = daemon.wait_status("the kustomization to be applied", |st| {
        (kustomization(st, "app")?["lastAppliedRevision"] == revision.as_str()).then(|| st.clone())
    });
    let artifact = source(&status, "web").unwrap()["artifact"].clone();
    let digest = artifact["digest"].as_str().unwrap().to_string();
    let url_path = artifact["urlPath"].as_str().unwrap().to_string();
    let target = PathBuf::from(
        kustomization(&status, "app").unwrap()["target"]
            .as_str()
            .unwrap(),
    );
    let rendered = fs::read(&target).unwrap();

    let exit = daemon.terminate();
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM exits cleanly\n{}",
        daemon.context()
    );
    server.stop();

    let mut daemon = setup.start();
    daemon.wait_ready();
    let download = daemon
        .get(&format!("/artifacts/{url_path}"))
        .expect("artifact answers");
    assert_eq!(download.status, 200, "{}", daemon.context());
    assert_eq!(sha256_hex(&download.body), digest, "the same artifact");

    let status = daemon.wait_status("the fetch error of the dead server", |st| {
        let s = source(st, "web")?;
        s["lastError"].as_str()?;
        Some(s.clone())
    });
    let error = status["lastError"].as_str().unwrap();
    assert!(error.contains(&url), "the error names the URL: {error}");
    assert_eq!(status["artifact"]["digest"], digest.as_str());
    assert_eq!(status["revision"], revision.as_str());
    assert_eq!(fs::read(&target).unwrap(), rendered, "the output is kept");
}

#[test]
fn a_failing_source_does_not_block_others_and_is_retried_with_backoff() {
    let repo = app_repo();
    let (_server, url) = GitDaemon::serving(repo.bare());
    // Nothing listens there: every fetch is refused at once.
    let dead_url = format!("git://127.0.0.1:{}/gone.git", free_port());
    let configurations = format!(
        "{}  - name: dead\n    source: {{ kind: git, url: \"{dead_url}\", interval: 1h }}\n",
        web_configuration(&url, "1h")
    );
    let setup = Setup::new(&configurations);
    let daemon = setup.start();

    let revision = format!("main@sha1:{}", repo.head());
    let status = daemon.wait_status("the good source to be ready", |st| {
        let s = source(st, "web")?;
        let ready = s["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && s["revision"] == revision.as_str() && s["artifact"].is_object())
            .then(|| st.clone())
    });
    let good = source(&status, "web").unwrap();
    let path = PathBuf::from(good["artifact"]["path"].as_str().unwrap());
    assert_eq!(good["artifact"]["digest"], sha256_file(&path).as_str());

    let dead = daemon.wait_status("the dead source's error", |st| {
        let s = source(st, "dead")?;
        s["lastError"].as_str()?;
        Some(s.clone())
    });
    let error = dead["lastError"].as_str().unwrap();
    assert!(
        error.contains(&dead_url),
        "the error names the URL: {error}"
    );
    assert!(dead["artifact"].is_null());

    // Retries with backoff (2 s, then 4 s, ...): within half a minute there are at least two
    // retries after the first failure; the limit here is only a generous deadline.
    let errors = |metrics: &str| {
        metric(
            metrics,
            "gitopsd_source_fetch_errors_total{namespace=\"default\",name=\"dead\"",
        )
    };
    let first = errors(&daemon.metrics()).expect("an error counter for dead");
    assert!(first >= 1.0);
    wait_for(
        "the dead source to be retried twice",
        DEADLINE,
        || daemon.context(),
        || errors(&daemon.metrics()).filter(|n| *n >= 3.0),
    );
    let status = daemon.status();
    let dead = source(&status, "dead").unwrap();
    assert!(dead["metrics"]["fetchErrorsTotal"].as_u64().unwrap() >= 3);
    // The good source was not dragged along: one fetch at start, an hour's interval.
    let good = source(&status, "web").unwrap();
    assert_eq!(good["metrics"]["fetchErrorsTotal"], 0, "{status:#}");
    assert!(good["lastError"].is_null());
}

/// Every file below `dir` whose name ends in `.tmp`.
fn temp_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(temp_files(&path));
        } else if path.to_string_lossy().ends_with(".tmp") {
            found.push(path);
        }
    }
    found
}

#[test]
fn recovers_from_kill_9_during_a_sync() {
    let repo = Repo::new();
    for i in 0..8u64 {
        repo.write(format!("blobs/part-{i}.bin"), noise(1 << 20, i + 1));
        repo.write(format!("app/cm-{i}.yaml"), configmap(&format!("cm-{i}")));
    }
    repo.commit("big");
    repo.push_all();
    let (_server, url) = GitDaemon::serving(repo.bare());
    let setup = Setup::new(&web_configuration(&url, "1h"));
    let artifacts = setup.state().join("artifacts");

    let mut daemon = setup.start();
    // Kill it in the middle of the sync: as soon as the artifact is being written (or, should
    // that moment be missed, as soon as the artifact exists, or after a fallback delay).
    let started = Instant::now();
    let mut moment = "after the fallback delay";
    while started.elapsed() < Duration::from_secs(20) {
        if !temp_files(&artifacts).is_empty() {
            moment = "while the artifact was being written";
            break;
        }
        let written = fs::read_dir(artifacts.join("git/default/web"))
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with(".tar.gz"))
            })
            .unwrap_or(false);
        if written {
            moment = "just after the artifact was written";
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    daemon.kill9();
    eprintln!("killed {moment}; left behind: {:?}", temp_files(&artifacts));

    let mut daemon = setup.start();
    daemon.wait_ready();
    let revision = format!("main@sha1:{}", repo.head());
    let status = daemon.wait_status("the artifact after the restart", |st| {
        let s = source(st, "web")?;
        (s["revision"] == revision.as_str()).then(|| s.clone())
    });
    let path = PathBuf::from(status["artifact"]["path"].as_str().unwrap());
    assert_eq!(
        status["artifact"]["digest"],
        sha256_file(&path).as_str(),
        "{}",
        daemon.context()
    );
    assert_eq!(
        status["artifact"]["size"].as_u64(),
        Some(fs::metadata(&path).unwrap().len())
    );
    // A complete archive: every entry can be read back.
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&path).unwrap()));
    let mut files = 0;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.expect("a readable tar entry");
        if entry.header().entry_type().is_file() {
            let mut sink = Vec::new();
            entry.read_to_end(&mut sink).unwrap();
            files += 1;
        }
    }
    assert_eq!(files, 16);
    let leftovers = temp_files(&artifacts);
    assert!(
        leftovers.is_empty(),
        "temp files left in the artifacts dir: {leftovers:?}\n{}",
        daemon.context()
    );
}

/// Every file below `dir`, with its mode; directories too (marked by a trailing `/`).
fn tree_modes(dir: &Path) -> Vec<(PathBuf, u32, bool)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).unwrap();
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_dir() {
            out.push((path.clone(), mode, true));
            out.extend(tree_modes(&path));
        } else {
            out.push((path, mode, false));
        }
    }
    out
}

/// A token given as the URL's user (`https://TOKEN@host/org/repo`, GitHub's form) appears in
/// no output and no file, in success and in failure, on both git implementations; the state
/// dir and the files that could hold a secret are the daemon's user's alone.
#[test]
fn a_token_in_the_url_is_shown_nowhere_and_state_files_are_private() {
    const TOKEN: &str = "ghp_R3dactMe0123456789abcdefghijklmn";
    let repo = app_repo();
    let server = HttpGitServer::builder()
        .basic_auth("deploy", "not-the-token")
        .start();
    server.serve(repo.bare());
    let with_token = |url: String| url.replacen("http://", &format!("http://{TOKEN}@"), 1);
    // `open` needs no credentials (the token is sent or not, the fetch works); `locked` asks
    // for other ones (401), so the URL ends up in an error.
    let open = with_token(server.url(repo.bare().name()));
    let locked = with_token(server.auth_url(repo.bare().name()));
    let mut configurations = String::new();
    for implementation in ["gix", "git2"] {
        for (name, url) in [("open", &open), ("locked", &locked)] {
            configurations.push_str(&format!(
                "  - name: {name}-{implementation}\n    source: {{ kind: git, url: \"{url}\", \
                 ref: {{ branch: main }}, interval: 1h, gitImplementation: {implementation} }}\n"
            ));
        }
    }
    let setup = Setup::new(&configurations);
    let mut daemon = setup.start();
    let status = daemon.wait_status("every source to have synced or failed", |st| {
        let done = ["open-gix", "open-git2", "locked-gix", "locked-git2"]
            .iter()
            .all(|name| {
                source(st, name).is_some_and(|s| {
                    let settled = if name.starts_with("open") {
                        s["artifact"].is_object()
                    } else {
                        s["lastError"].is_string()
                    };
                    settled && s["lastAttemptTime"].is_string()
                })
            });
        done.then(|| st.clone())
    });
    for name in ["locked-gix", "locked-git2"] {
        let error = source(&status, name).unwrap()["lastError"]
            .as_str()
            .unwrap();
        assert!(
            error.contains("http://<redacted>@127.0.0.1"),
            "the error names the URL, redacted: {error}"
        );
    }

    let mut outputs = vec![
        ("/api/v1/status".to_string(), status.to_string()),
        ("/metrics".to_string(), daemon.metrics()),
    ];
    for args in [
        &["status", "--server", &setup.server()][..],
        &["status", "-o", "json", "--server", &setup.server()][..],
    ] {
        let output = setup.client(args);
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        outputs.push((format!("gitopsd {args:?}"), describe(&output)));
    }
    assert_eq!(daemon.terminate().code(), Some(0), "{}", daemon.context());
    outputs.push(("the daemon's log".into(), daemon.log()));

    let once = Command::new(gitopsd_bin())
        .args(["run", "--once", "-o", "json", "--config"])
        .arg(&setup.config)
        .env("GITOPSD_LOG", "debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_ne!(once.status.code(), Some(0), "{}", describe(&once));
    let report = text(&once.stdout);
    assert!(report.contains("http://<redacted>@127.0.0.1"), "{report}");
    outputs.push(("run --once -o json".into(), describe(&once)));

    for (what, output) in &outputs {
        assert!(!output.contains(TOKEN), "the token is in {what}:\n{output}");
    }

    // No file of the state dir holds the token, whatever it is (state.json, the caches'
    // markers, git's own files); the state dir and its caches are 0700, and state.json and
    // the markers 0600.
    use std::os::unix::fs::PermissionsExt;
    let state = setup.state();
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "state dir");
    let entries = tree_modes(&state);
    for (path, mode, is_dir) in &entries {
        let shown = path.strip_prefix(&state).unwrap().display().to_string();
        if *is_dir {
            if shown == "git" || shown.starts_with("git/") && !shown.contains(".git/") {
                assert_eq!(*mode, 0o700, "{shown}");
            }
            continue;
        }
        let bytes = fs::read(path).unwrap();
        assert!(
            !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
            "the token is in {shown}"
        );
        if shown == "state.json" || shown.ends_with("/gitopsd-url") {
            assert_eq!(*mode, 0o600, "{shown}");
        }
    }
    assert!(
        entries.iter().any(|(p, _, _)| p.ends_with("gitopsd-url")),
        "{entries:?}"
    );
    let marker = fs::read_to_string(state.join("git/default/open-gix.git/gitopsd-url")).unwrap();
    assert_eq!(
        marker,
        format!(
            "http://<redacted>@127.0.0.1:{}/git/{}.git",
            server.port(),
            repo.bare().name()
        )
    );
}

/// A commit whose tree holds an entry named `..` (made with `git hash-object --literally`,
/// served by a real git server) fails its sync naming the path; the daemon keeps serving the
/// last good artifact and stays ready.
#[test]
fn a_crafted_tree_is_refused_and_the_last_good_artifact_is_still_served() {
    let repo = app_repo();
    let (_server, url) = GitDaemon::serving(repo.bare());
    let setup = Setup::new(&web_configuration(&url, "1h"));
    let mut daemon = setup.start();
    daemon.wait_ready();
    let good = format!("main@sha1:{}", repo.head());
    let status = daemon.wait_status("the first artifact", |st| {
        let s = source(st, "web")?;
        (s["artifact"]["revision"] == good.as_str()).then(|| s.clone())
    });
    let url_path = status["artifact"]["urlPath"].as_str().unwrap().to_string();
    let digest = status["artifact"]["digest"].as_str().unwrap().to_string();

    let bare = repo.bare();
    let escaping = bare.write_blob(b"outside\n");
    let app = bare.rev_parse("main:app");
    let tree = bare.write_tree_literally(&[("40000", b"app", &app), ("100644", b"..", &escaping)]);
    let crafted = bare.commit_tree("main", &tree);

    let output = setup.client(&["reconcile", "web", "--server", &setup.server()]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    let error = daemon.wait_status("the crafted revision to fail", |st| {
        source(st, "web")?["lastError"].as_str().map(str::to_string)
    });
    assert!(
        error.contains("refusing to pack the path \"..\""),
        "{error}"
    );

    let status = daemon.status();
    let s = source(&status, "web").unwrap();
    assert_eq!(s["artifact"]["revision"], good.as_str(), "{status:#}");
    assert_eq!(s["artifact"]["digest"], digest.as_str(), "{status:#}");
    let served = daemon.get(&format!("/artifacts/{url_path}")).unwrap();
    assert_eq!(served.status, 200);
    assert_eq!(sha256_hex(&served.body), digest);
    assert_eq!(daemon.get("/readyz").unwrap().status, 200);
    let stored: Vec<_> = fs::read_dir(setup.state().join("artifacts/git/default/web"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        stored.iter().all(|name| !name.starts_with(&crafted)),
        "{stored:?}"
    );
}

/// Statuses are written only when they change: after a first pass over 100 sources, a second
/// pass that finds every remote unchanged writes nothing (the write counter stays, and
/// state.json keeps its inode and modification time), while the status in memory moves on.
#[test]
fn an_unchanged_poll_of_100_sources_writes_nothing() {
    use std::os::unix::fs::MetadataExt;

    let repo = app_repo();
    let url = repo.bare().file_url();
    let dir = tempfile::tempdir().unwrap();
    let mut config = format!(
        "stateDir: {}\nconfigurations:\n",
        dir.path().join("state").display()
    );
    for i in 0..100 {
        config.push_str(&format!(
            "  - name: s{i}\n    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }} }}\n"
        ));
    }
    let file = dir.path().join("gitopsd.yaml");
    fs::write(&file, config).unwrap();
    let settings = gitopsd::config::load(&file).expect("a valid config");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let engine = gitopsd::reconcile::Engine::new(settings).expect("engine");
        let first = engine.run_once().await;
        assert!(first.succeeded(), "{first:?}");
        assert_eq!(first.sources.len(), 100);
        let written = engine.state().writes();
        assert!(written >= 1, "the first pass stores 100 artifacts");
        let state_file = dir.path().join("state/state.json");
        let before = fs::metadata(&state_file).unwrap();
        let attempted = |engine: &gitopsd::reconcile::Engine| {
            engine.state().read(|st| {
                st.sources
                    .values()
                    .map(|s| s.last_attempt_time.clone())
                    .collect::<Vec<_>>()
            })
        };
        let first_attempts = attempted(&engine);

        // Attempt times have second precision: make the second pass's differ.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let second = engine.run_once().await;
        assert!(second.succeeded(), "{second:?}");
        assert_eq!(
            engine.state().writes(),
            written,
            "an unchanged pass wrote state.json"
        );
        let after = fs::metadata(&state_file).unwrap();
        assert_eq!(
            (after.ino(), after.mtime(), after.mtime_nsec()),
            (before.ino(), before.mtime(), before.mtime_nsec())
        );
        assert_ne!(
            attempted(&engine),
            first_attempts,
            "the status in memory moved on"
        );
        let unchanged: u64 = engine.state().read(|st| {
            st.sources
                .values()
                .map(|s| {
                    let labels =
                        gitopsd::reconcile::metrics::source_labels(&s.namespace, &s.name, &s.kind);
                    engine.metrics().source(&labels).unchanged_total
                })
                .sum()
        });
        assert_eq!(unchanged, 100, "every source found its remote unchanged");
    });
}
