//! Webhook receivers against a real `gitopsd run` syncing from the smart-HTTP git server:
//! each receiver type with a right, a wrong and no signature, GitHub's ping and the `events`
//! filter, an oversized body, the hook paths in `gitopsd status`, a burst of 2,000 webhooks
//! from 50 connections, and a slow-loris client.
//!
//! Sources poll every hour: a new revision that shows up in the status came from a webhook.
//! Signatures are computed by `openssl dgst -hmac`, independently of gitopsd's code. Nothing
//! asserts how long something took except that a half-sent request is cut off at all; waits
//! poll with generous deadlines.

use crate::support::{free_port, gitopsd_bin, text, HttpGitServer, Repo};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// A running `gitopsd run` with its config in a temp dir; killed on drop, its log printed if
/// the test failed.
pub(crate) struct Daemon {
    child: Child,
    pub api: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts gitopsd with `yaml` (which must use `stateDir: ./state` and `server.listen` on
    /// `api`), and waits until the API answers.
    pub fn start(api: u16, yaml: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gitopsd.yaml");
        fs::write(&config, yaml).unwrap();
        Daemon::start_in(dir, api)
    }

    /// As [`Daemon::start`], with the config already written to `dir/gitopsd.yaml`.
    pub fn start_in(dir: tempfile::TempDir, api: u16) -> Daemon {
        let log = dir.path().join("gitopsd.log");
        let file = fs::File::create(&log).unwrap();
        let child = Command::new(gitopsd_bin())
            .args(["run", "--config"])
            .arg(dir.path().join("gitopsd.yaml"))
            .env("GITOPSD_LOG", "info,gitopsd=debug")
            .env_remove("GITOPSD_CONFIG")
            .env_remove("GITOPSD_TOKEN")
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("spawn gitopsd run");
        let mut daemon = Daemon {
            child,
            api,
            log,
            _dir: dir,
        };
        daemon.wait_until("the API answers", |d| {
            http(d.api, "GET", "/healthz", &[], b"").is_some_and(|(s, _)| s == 200)
        });
        daemon
    }

    pub fn log(&self) -> String {
        fs::read(&self.log).map(|b| text(&b)).unwrap_or_default()
    }

    /// Polls `check` until it holds; panics with the log after [`DEADLINE`].
    pub fn wait_until(&mut self, what: &str, mut check: impl FnMut(&Daemon) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gitopsd exited with {status}\n{}", self.log());
            }
            if check(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not after {DEADLINE:?}\n{}",
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = http(self.api, "GET", "/api/v1/status", &[], b"").expect("status");
        assert_eq!(code, 200, "{}", text(&body));
        serde_json::from_slice(&body).expect("status JSON")
    }

    /// The revision of source `name`, if it has one.
    pub fn revision(&self, name: &str) -> Option<String> {
        self.status()["sources"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?["revision"]
            .as_str()
            .map(str::to_string)
    }

    /// The sum of every `/metrics` sample whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metric_where(prefix, "")
    }

    /// The sum of the samples whose line starts with `prefix` and contains `label`.
    pub fn metric_where(&self, prefix: &str, label: &str) -> f64 {
        let (_, body) = http(self.api, "GET", "/metrics", &[], b"").expect("metrics");
        text(&body)
            .lines()
            .filter(|l| l.starts_with(prefix) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- gitopsd log ---\n{}", self.log());
        }
    }
}

/// One HTTP/1.1 request on a new connection (closed after it); the status and the body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    // A refused body may be answered before it is all written; the answer is what counts.
    let _ = stream.write_all(body);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let status = text(&answer[..split])
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, answer[split + 4..].to_vec()))
}

/// Hex HMAC of `body` with `key`, by openssl: `algorithm` is sha1, sha256 or sha512.
pub(crate) fn openssl_hmac(algorithm: &str, key: &str, body: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["dgst", &format!("-{algorithm}"), "-hmac", key, "-r"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(body).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    text(&output.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A repository served over smart HTTP, with one commit.
pub(crate) fn served_repo() -> (Repo, HttpGitServer, String) {
    let repo = Repo::new();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    repo.commit("first");
    repo.push_all();
    let (server, url) = HttpGitServer::serving(repo.bare());
    (repo, server, url)
}

/// Pushes a new commit; returns its hash.
pub(crate) fn push_commit(repo: &Repo, n: usize) -> String {
    repo.write("app/n.txt", format!("{n}\n"));
    let commit = repo.commit(&format!("commit {n}"));
    repo.push_all();
    commit
}

const SECRET: &str = "It's a Secret to Everybody";

fn receivers_config(api: u16, hooks_port: u16, url: &str, read_timeout: &str) -> String {
    format!(
        "stateDir: ./state
server: {{ listen: \"127.0.0.1:{api}\" }}
configurations:
  - name: web
    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }}, interval: 1h }}
receivers:
  listen: \"127.0.0.1:{hooks_port}\"
  readTimeout: {read_timeout}
  hooks:
    - {{ name: generic, type: generic, secret: \"{SECRET}\", configurations: [web] }}
    - {{ name: hmac, type: generic-hmac, secret: \"{SECRET}\", configurations: [web] }}
    - {{ name: github, type: github, secret: \"{SECRET}\", events: [push], configurations: [default/web] }}
    - {{ name: gitlab, type: gitlab, secret: \"{SECRET}\", configurations: [web] }}
    - {{ name: bitbucket, type: bitbucket, secret: \"{SECRET}\", configurations: [web] }}
"
    )
}

/// `name` → hook path, from the status API.
fn hook_paths(daemon: &Daemon) -> std::collections::HashMap<String, String> {
    daemon.status()["receivers"]
        .as_array()
        .expect("receivers in the status")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn each_receiver_type_triggers_a_fetch_when_signed_and_answers_401_otherwise() {
    let (repo, _server, url) = served_repo();
    let (api, hooks) = (free_port(), free_port());
    let mut daemon = Daemon::start(api, &receivers_config(api, hooks, &url, "10s"));
    let first = repo.head();
    daemon.wait_until("the first fetch", |d| {
        d.revision("web").is_some_and(|r| r.ends_with(&first))
    });
    let paths = hook_paths(&daemon);
    assert_eq!(paths.len(), 5, "{paths:?}");
    // Flux's path: sha256(token + name + namespace), checked with sha256sum's algorithm here.
    let expected = {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' \"{SECRET}githubdefault\" | sha256sum"))
            .output()
            .unwrap();
        format!(
            "/hook/{}",
            text(&out.stdout).split_whitespace().next().unwrap()
        )
    };
    assert_eq!(paths["github"], expected);
    // `gitopsd status` prints them too.
    let out = Command::new(gitopsd_bin())
        .args(["status", "--server", &format!("127.0.0.1:{api}")])
        .output()
        .unwrap();
    let printed = text(&out.stdout);
    assert!(
        printed.contains(&format!(
            "receiver default/github\ttype=github\tpath={expected}\ttriggers=default/web"
        )),
        "{printed}"
    );

    let body = br#"{"ref":"refs/heads/main"}"#;
    let sign = |alg: &str| format!("{alg}={}", openssl_hmac(alg, SECRET, body));
    // (hook, headers of a genuine event, headers of a forged one, headers without any proof)
    let sha256 = sign("sha256");
    let sha512 = sign("sha512");
    let forged = format!("sha256={}", openssl_hmac("sha256", "not the secret", body));
    type Headers<'a> = Vec<(&'a str, &'a str)>;
    let cases: Vec<(&str, Headers, Headers, Headers)> = vec![
        ("generic", vec![], vec![], vec![]),
        (
            "hmac",
            vec![("X-Signature", sha512.as_str())],
            vec![("X-Signature", forged.as_str())],
            vec![],
        ),
        (
            "github",
            vec![
                ("X-Hub-Signature-256", sha256.as_str()),
                ("X-GitHub-Event", "push"),
            ],
            vec![
                ("X-Hub-Signature-256", forged.as_str()),
                ("X-GitHub-Event", "push"),
            ],
            vec![("X-GitHub-Event", "push")],
        ),
        (
            "gitlab",
            vec![("X-Gitlab-Token", SECRET), ("X-Gitlab-Event", "Push Hook")],
            vec![("X-Gitlab-Token", "guess"), ("X-Gitlab-Event", "Push Hook")],
            vec![("X-Gitlab-Event", "Push Hook")],
        ),
        (
            "bitbucket",
            vec![
                ("X-Hub-Signature", sha256.as_str()),
                ("X-Event-Key", "repo:refs_changed"),
            ],
            vec![
                ("X-Hub-Signature", forged.as_str()),
                ("X-Event-Key", "repo:refs_changed"),
            ],
            vec![("X-Event-Key", "repo:refs_changed")],
        ),
    ];
    let mut refused = 0.0;
    for (n, (hook, good, bad, none)) in cases.iter().enumerate() {
        let path = &paths[*hook];
        let commit = push_commit(&repo, n);
        if *hook != "generic" {
            for headers in [bad, none] {
                let (code, answer) = http(hooks, "POST", path, headers, body).unwrap();
                assert_eq!(
                    (code, text(&answer)),
                    (401, String::new()),
                    "{hook} {headers:?}"
                );
                refused += 1.0;
            }
        }
        let (code, _) = http(hooks, "POST", path, good, body).unwrap();
        let accepted = Instant::now();
        assert_eq!(code, 202, "{hook}");
        // The interval is an hour: only the webhook can have fetched the new commit.
        daemon.wait_until(&format!("{hook}: the pushed commit fetched"), |d| {
            d.revision("web").is_some_and(|r| r.ends_with(&commit))
        });
        // Reported, not asserted (a busy machine may take longer); polled every 50 ms.
        eprintln!(
            "{hook}: new revision in the status {:?} after the 202",
            accepted.elapsed()
        );
    }
    assert_eq!(
        daemon.metric("gitopsd_receiver_requests_total{namespace=\"default\",name=\"github\",result=\"unauthorized\"}"),
        2.0
    );
    assert_eq!(
        daemon.metric_where(
            "gitopsd_receiver_requests_total{",
            "result=\"unauthorized\""
        ),
        refused,
        "every refusal is counted"
    );
    assert_eq!(
        daemon.metric_where("gitopsd_receiver_requests_total{", "result=\"accepted\""),
        5.0
    );

    // A ping is answered and triggers nothing; an event outside `events` is ignored.
    let fetches = daemon.metric("gitopsd_source_fetches_total{");
    let ping = [
        ("X-Hub-Signature-256", sha256.as_str()),
        ("X-GitHub-Event", "ping"),
    ];
    for _ in 0..2 {
        // GitHub redelivers pings on demand: a replayed one is answered the same way.
        let (code, answer) = http(hooks, "POST", &paths["github"], &ping, body).unwrap();
        assert_eq!((code, text(&answer)), (200, "pong\n".to_string()));
    }
    let release = [
        ("X-Hub-Signature-256", sha256.as_str()),
        ("X-GitHub-Event", "release"),
    ];
    let (code, _) = http(hooks, "POST", &paths["github"], &release, body).unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        daemon.metric("gitopsd_receiver_requests_total{namespace=\"default\",name=\"github\",result=\"ignored\"}"),
        1.0
    );
    assert_eq!(daemon.metric("gitopsd_source_fetches_total{"), fetches);

    // An unknown path, and a body over 1 MiB.
    let (code, _) = http(hooks, "POST", "/hook/0000", &[], body).unwrap();
    assert_eq!(code, 404);
    let big = vec![b'x'; 1024 * 1024 + 1];
    let (code, _) = http(hooks, "POST", &paths["generic"], &[], &big).unwrap();
    assert_eq!(code, 413);
    // The receivers are not the API: the admin endpoints are not on the receivers' port.
    let (code, _) = http(hooks, "GET", "/api/v1/status", &[], b"").unwrap();
    assert_eq!(code, 404);
}

#[test]
fn a_burst_of_2000_webhooks_coalesces_into_sequential_fetches_and_the_api_keeps_answering() {
    let (_repo, _server, url) = served_repo();
    let (api, hooks) = (free_port(), free_port());
    let mut daemon = Daemon::start(api, &receivers_config(api, hooks, &url, "10s"));
    daemon.wait_until("the first fetch", |d| d.revision("web").is_some());
    let path = hook_paths(&daemon)["generic"].clone();
    let before = daemon.metric("gitopsd_source_fetches_total{");

    const CONNECTIONS: usize = 50;
    const REQUESTS: usize = 2000;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let api_answers = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut answers = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if http(api, "GET", "/api/v1/status", &[], b"").is_some_and(|(c, _)| c == 200) {
                    answers += 1;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            answers
        })
    };
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                (0..REQUESTS / CONNECTIONS)
                    .map(|_| http(hooks, "POST", &path, &[], b"{}").map(|(c, _)| c))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let codes: Vec<Option<u16>> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = api_answers.join().unwrap();
    assert_eq!(codes.len(), REQUESTS);
    assert!(
        codes.iter().all(|c| *c == Some(202)),
        "{:?}",
        codes
            .iter()
            .filter(|c| **c != Some(202))
            .take(5)
            .collect::<Vec<_>>()
    );
    assert!(answers > 0, "the admin API answered during the burst");
    assert_eq!(
        daemon.metric("gitopsd_receiver_requests_total{namespace=\"default\",name=\"generic\",result=\"accepted\"}"),
        REQUESTS as f64
    );
    // Wait for the trigger still pending after the burst to run, then for quiet.
    std::thread::sleep(Duration::from_secs(2));
    let after = daemon.metric("gitopsd_source_fetches_total{");
    // One configuration loop fetches one at a time and keeps at most one wake-up pending:
    // the burst costs a handful of fetches, never one per webhook.
    assert!(after > before, "the burst fetched");
    assert!(
        after - before <= (REQUESTS / 20) as f64,
        "{} fetches for {REQUESTS} webhooks",
        after - before
    );
    // Never two fetches of the source at once: in the log, each "fetch started" is followed
    // by its outcome ("stored artifact", "unchanged", "fetch failed") before the next starts.
    let log = daemon.log();
    let mut in_flight = false;
    let mut started = 0;
    for line in log.lines().filter(|l| l.contains("source=default/web")) {
        if line.contains("fetch started") {
            assert!(
                !in_flight,
                "a fetch started while another ran: {line}\n{log}"
            );
            in_flight = true;
            started += 1;
        } else if ["stored artifact", "unchanged", "fetch failed"]
            .iter()
            .any(|outcome| line.contains(outcome))
        {
            in_flight = false;
        }
    }
    assert_eq!(started as f64, after, "every fetch is in the log");
}

#[test]
fn a_slow_loris_client_is_cut_off_by_the_receivers_read_timeout() {
    let (_repo, _server, url) = served_repo();
    let (api, hooks) = (free_port(), free_port());
    let daemon = Daemon::start(api, &receivers_config(api, hooks, &url, "2s"));
    // Headers that never end.
    let mut stream = TcpStream::connect(("127.0.0.1", hooks)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(b"POST /hook/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .unwrap();
    let mut rest = Vec::new();
    // The server closes the connection (EOF, or a reset) long before the client's own read
    // timeout would end the wait (that would be WouldBlock or TimedOut).
    match stream.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(
        !text(&rest).contains("202"),
        "no answer to a request that never arrived: {}",
        text(&rest)
    );
    // A body that never comes: answered 408 and closed.
    let path = hook_paths(&daemon)["generic"].clone();
    let mut stream = TcpStream::connect(("127.0.0.1", hooks)).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(
            format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n\r\n{{")
                .as_bytes(),
        )
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        text(&answer).starts_with("HTTP/1.1 408"),
        "{}",
        text(&answer)
    );
    // Meanwhile the daemon serves others.
    let (code, _) = http(hooks, "POST", &path, &[], b"{}").unwrap();
    assert_eq!(code, 202);
}

#[test]
fn a_hook_secret_from_a_kubernetes_secret_sets_its_path() {
    use crate::support::kube::KubeCluster;
    let cluster = KubeCluster::shared();
    let namespace = cluster.create_namespace("hooks");
    let token = "token-from-the-cluster";
    cluster.put_secret(&namespace, "hook-token", &[("token", token.as_bytes())]);
    let (repo, _server, url) = served_repo();
    let (api, hooks) = (free_port(), free_port());
    let yaml = format!(
        "stateDir: ./state
server: {{ listen: \"127.0.0.1:{api}\" }}
kubernetes: {{ kubeconfig: \"{kubeconfig}\" }}
configurations:
  - name: web
    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }}, interval: 1h }}
receivers:
  listen: \"127.0.0.1:{hooks}\"
  hooks:
    - name: push
      namespace: {namespace}
      type: generic
      localAuthRef: {{ secret: hook-token }}
      configurations: [default/web]
",
        kubeconfig = cluster.admin_kubeconfig().display(),
    );
    let mut daemon = Daemon::start(api, &yaml);
    daemon.wait_until("the first fetch", |d| d.revision("web").is_some());
    let expected = {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("printf '%s' '{token}push{namespace}' | sha256sum"))
            .output()
            .unwrap();
        format!(
            "/hook/{}",
            text(&out.stdout).split_whitespace().next().unwrap()
        )
    };
    assert_eq!(hook_paths(&daemon)["push"], expected);
    let commit = push_commit(&repo, 1);
    let (code, _) = http(hooks, "POST", &expected, &[], b"{}").unwrap();
    assert_eq!(code, 202);
    daemon.wait_until("the pushed commit fetched", |d| {
        d.revision("web").is_some_and(|r| r.ends_with(&commit))
    });
    // The token is nowhere in the log.
    assert!(!daemon.log().contains(token));
}
