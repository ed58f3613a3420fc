//! Alerts from a real `gitopsd run` to HTTP servers this test runs: Flux's event JSON for
//! `generic`, the same signed for `generic-hmac` (the signature checked by openssl), Slack's
//! attachment and Teams' Adaptive Card shapes, alert filters (severity, sources with `*`,
//! exclusion), retries against a provider that fails twice, and syncs that go on while a
//! provider never answers. Secrets (the HMAC key, a token in a webhook URL) appear in no
//! payload and no log line.

use crate::receivers::{http, openssl_hmac, push_commit, served_repo, Daemon, DEADLINE};
use crate::support::{free_port, text};
use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request a [`Recorder`] received.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Received {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// How a [`Recorder`] answers a path.
#[derive(Debug, Clone)]
enum Answer {
    /// These statuses in turn, then 200.
    Statuses(VecDeque<u16>),
    /// Read the request, never answer (the connection is kept open).
    Never,
}

/// An HTTP server that records every request and answers as told, per path.
struct Recorder {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Recorder {
    fn start(answers: HashMap<String, Answer>) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let answers = Arc::new(Mutex::new(answers));
        {
            let received = received.clone();
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let Some(request) = read_request(&stream) else {
                        continue;
                    };
                    let answer = answers
                        .lock()
                        .unwrap()
                        .get_mut(&request.path)
                        .map(|a| match a {
                            Answer::Never => None,
                            Answer::Statuses(queue) => Some(queue.pop_front().unwrap_or(200)),
                        })
                        .unwrap_or(Some(200));
                    received.lock().unwrap().push(request);
                    match answer {
                        Some(status) => {
                            let mut stream = stream;
                            let _ = write!(
                                stream,
                                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            );
                        }
                        None => held.push(stream),
                    }
                }
            });
        }
        Recorder { port, received }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn at(&self, path: &str) -> Vec<Received> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has received at least `n` requests; returns them.
    fn wait_for(&self, path: &str, n: usize, daemon: &Daemon) -> Vec<Received> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = self.at(path);
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {} of {n} requests after {DEADLINE:?}\n{}",
                got.len(),
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn all(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn read_request(stream: &TcpStream) -> Option<Received> {
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let path = line.split_whitespace().nth(1)?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        path,
        headers,
        body,
    })
}

const HMAC_KEY: &str = "hmac-key-never-shown";
const SLACK_TOKEN: &str = "XXXXslacktokenXXXX";

#[test]
fn alerts_reach_generic_hmac_slack_and_teams_in_fluxs_shapes() {
    let (repo, server, url) = served_repo();
    let recorder = Recorder::start(HashMap::new());
    let api = free_port();
    let slack_path = format!("/services/T0/B0/{SLACK_TOKEN}");
    let yaml = format!(
        "stateDir: ./state
server: {{ listen: \"127.0.0.1:{api}\" }}
configurations:
  - name: web
    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }}, interval: 1h }}
    kustomizations: [{{ name: app, path: ./app }}]
  - name: broken
    source: {{ kind: git, url: \"{missing}\", interval: 1h }}
providers:
  - {{ name: generic, type: generic, address: \"{generic}\" }}
  - {{ name: signed, type: generic-hmac, address: \"{hmac}\", secret: {HMAC_KEY} }}
  - {{ name: slack, type: slack, address: \"{slack}\", channel: '#ops' }}
  - {{ name: teams, type: msteams, address: \"{teams}\" }}
alerts:
  - {{ name: everything, provider: generic, eventSources: [{{ kind: '*', name: '*' }}] }}
  - {{ name: web-signed, provider: signed, eventSources: [{{ kind: GitRepository, name: web }}] }}
  - name: errors-to-slack
    provider: slack
    eventSeverity: error
    eventSources: [{{ kind: GitRepository, name: '*', namespace: default }}]
  - name: teams
    provider: teams
    eventSources: [{{ kind: GitRepository, name: 'w*' }}, {{ kind: Bucket, name: '*' }}]
    exclusionList: ['^never']
",
        missing = server.url("missing"),
        generic = recorder.url("/generic"),
        hmac = recorder.url("/hmac"),
        slack = recorder.url(&slack_path),
        teams = recorder.url("/teams"),
    );
    let daemon = Daemon::start(api, &yaml);
    let commit = repo.head();

    // generic: the three events, as Flux's eventv1.Event.
    let generic = recorder.wait_for("/generic", 3, &daemon);
    let by_name = |name: &str| {
        generic
            .iter()
            .map(Received::json)
            .find(|e| e["involvedObject"]["name"] == name)
            .unwrap_or_else(|| panic!("no event for {name}: {generic:?}"))
    };
    let stored = by_name("web");
    assert_eq!(stored["involvedObject"]["kind"], "GitRepository");
    assert_eq!(stored["involvedObject"]["namespace"], "default");
    assert_eq!(
        stored["involvedObject"]["apiVersion"],
        "source.toolkit.fluxcd.io/v1"
    );
    assert_eq!(stored["severity"], "info");
    assert_eq!(stored["reason"], "NewArtifact");
    assert_eq!(stored["reportingController"], "gitopsd");
    assert_eq!(
        stored["metadata"]["revision"],
        format!("main@sha1:{commit}")
    );
    assert!(stored["metadata"]["digest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(stored["message"].as_str().unwrap().contains(&commit));
    assert!(stored["timestamp"].as_str().unwrap().ends_with('Z'));
    let failed = by_name("broken");
    assert_eq!(failed["severity"], "error");
    assert_eq!(failed["reason"], "GitOperationFailed");
    assert_eq!(generic[0].headers["content-type"], "application/json");
    // The kustomization, named as Azure names its Flux object, with Flux's change set.
    let applied = by_name("web-app");
    assert_eq!(applied["involvedObject"]["kind"], "Kustomization");
    assert_eq!(
        applied["involvedObject"]["apiVersion"],
        "kustomize.toolkit.fluxcd.io/v1"
    );
    assert_eq!(applied["reason"], "ReconciliationSucceeded");
    assert_eq!(applied["severity"], "info");
    assert_eq!(
        applied["metadata"]["revision"],
        format!("main@sha1:{commit}")
    );
    assert!(
        applied["message"]
            .as_str()
            .unwrap()
            .contains("ConfigMap/a created"),
        "{applied}"
    );

    // generic-hmac: only `web`, signed over the exact body.
    let signed = recorder.wait_for("/hmac", 1, &daemon);
    assert_eq!(signed[0].json()["involvedObject"]["name"], "web");
    let expected = format!(
        "sha256={}",
        openssl_hmac("sha256", HMAC_KEY, &signed[0].body)
    );
    assert_eq!(signed[0].headers["x-signature"], expected);

    // slack: only the error, as an attachment.
    let slack = recorder.wait_for(&slack_path, 1, &daemon);
    let body = slack[0].json();
    assert_eq!(body["channel"], "#ops");
    assert_eq!(body["username"], "gitopsd");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["color"], "danger");
    assert_eq!(attachment["author_name"], "gitrepository/broken.default");
    assert_eq!(attachment["mrkdwn_in"][0], "text");
    assert_eq!(attachment["text"], failed["message"]);

    // msteams: the web event as an Adaptive Card.
    let teams = recorder.wait_for("/teams", 1, &daemon);
    let body = teams[0].json();
    assert_eq!(body["type"], "message");
    let attachment = &body["attachments"][0];
    assert_eq!(
        attachment["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    let card = &attachment["content"];
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["body"][0]["type"], "TextBlock");
    assert_eq!(card["body"][0]["text"], "gitrepository/web.default");
    assert_eq!(card["body"][1]["text"], stored["message"]);
    let facts = card["body"][2]["facts"].as_array().unwrap();
    assert!(facts
        .iter()
        .any(|f| f["title"] == "revision" && f["value"] == format!("main@sha1:{commit}")));

    // A new revision, fetched on request: a second NewArtifact; the filters still hold.
    let second = push_commit(&repo, 1);
    let (code, _) = http(api, "POST", "/api/v1/reconcile/web", &[], b"").unwrap();
    assert_eq!(code, 202);
    let signed = recorder.wait_for("/hmac", 2, &daemon);
    assert_eq!(
        signed[1].json()["metadata"]["revision"],
        format!("main@sha1:{second}")
    );
    assert_eq!(recorder.at(&slack_path).len(), 1, "slack takes errors only");
    assert!(recorder
        .at("/teams")
        .iter()
        .all(|r| r.json()["attachments"][0]["content"]["body"][0]["text"]
            == "gitrepository/web.default"));

    // The same events are readable from the daemon: `gitopsd events` and /api/v1/events.
    let out = std::process::Command::new(crate::support::gitopsd_bin())
        .args(["events", "--server", &format!("127.0.0.1:{api}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("\terror\tGitRepository/default/broken\tGitOperationFailed\t"),
        "{printed}"
    );
    assert!(
        printed.contains("\tinfo\tKustomization/default/web-app\tReconciliationSucceeded\t"),
        "{printed}"
    );
    let (code, body) = http(api, "GET", "/api/v1/events?since=1000", &[], b"").unwrap();
    assert_eq!(code, 200);
    let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(doc["events"].as_array().unwrap().is_empty(), "{doc}");
    assert!(doc["next"].as_u64().unwrap() >= 4, "{doc}");

    // No secret in any payload or in the log.
    for request in recorder.all() {
        let body = text(&request.body);
        assert!(
            !body.contains(HMAC_KEY) && !body.contains(SLACK_TOKEN),
            "{body}"
        );
    }
    let log = daemon.log();
    assert!(
        !log.contains(HMAC_KEY) && !log.contains(SLACK_TOKEN),
        "{log}"
    );
}

#[test]
fn a_failing_provider_is_retried_and_a_dead_one_never_slows_syncs() {
    let (repo, _server, url) = served_repo();
    let recorder = Recorder::start(HashMap::from([
        (
            "/flaky".to_string(),
            Answer::Statuses(VecDeque::from([500, 503])),
        ),
        ("/dead".to_string(), Answer::Never),
    ]));
    let api = free_port();
    let yaml = format!(
        "stateDir: ./state
server: {{ listen: \"127.0.0.1:{api}\" }}
configurations:
  - name: web
    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }}, interval: 1h }}
providers:
  - {{ name: flaky, type: generic, address: \"{flaky}\" }}
  - {{ name: dead, type: generic, address: \"{dead}\", timeout: 1h }}
alerts:
  - {{ name: flaky, provider: flaky, eventSources: [{{ kind: '*', name: '*' }}] }}
  - {{ name: dead, provider: dead, eventSources: [{{ kind: '*', name: '*' }}] }}
",
        flaky = recorder.url("/flaky"),
        dead = recorder.url("/dead"),
    );
    let mut daemon = Daemon::start(api, &yaml);

    // The first event: refused twice, delivered at the third attempt, the same body each time.
    let flaky = recorder.wait_for("/flaky", 3, &daemon);
    assert_eq!(flaky[0].body, flaky[1].body);
    assert_eq!(flaky[1].body, flaky[2].body);
    daemon.wait_until("the delivery counted", |d| {
        d.metric("gitopsd_alerts_sent_total{provider=\"flaky\"}") == 1.0
    });
    // The dead provider holds its first request and never answers ...
    recorder.wait_for("/dead", 1, &daemon);
    // ... while syncs go on: each pushed commit is fetched on request, one after another.
    for n in 0..5 {
        let commit = push_commit(&repo, n);
        let (code, _) = http(api, "POST", "/api/v1/reconcile/web", &[], b"").unwrap();
        assert_eq!(code, 202);
        daemon.wait_until(&format!("commit {n} fetched"), |d| {
            d.revision("web").is_some_and(|r| r.ends_with(&commit))
        });
    }
    // Their events reach the live provider; the dead one still has only its first request.
    recorder.wait_for("/flaky", 3 + 5, &daemon);
    assert_eq!(recorder.at("/dead").len(), 1);
    assert_eq!(
        daemon.metric("gitopsd_alerts_failed_total{provider=\"flaky\"}"),
        0.0
    );
}

#[test]
fn run_once_sends_its_alerts_before_it_exits() {
    let (repo, _server, url) = served_repo();
    let recorder = Recorder::start(HashMap::new());
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "stateDir: ./state
configurations:
  - name: web
    source: {{ kind: git, url: \"{url}\", ref: {{ branch: main }} }}
providers:
  - {{ name: generic, type: generic, address: \"{generic}\" }}
alerts:
  - {{ name: all, provider: generic, eventSources: [{{ kind: '*', name: '*' }}] }}
",
        generic = recorder.url("/generic"),
    );
    std::fs::write(dir.path().join("gitopsd.yaml"), yaml).unwrap();
    let out = std::process::Command::new(crate::support::gitopsd_bin())
        .args(["run", "--once", "--config"])
        .arg(dir.path().join("gitopsd.yaml"))
        .env_remove("GITOPSD_CONFIG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Delivered by the time the process exited: no waiting here.
    let got = recorder.at("/generic");
    assert_eq!(got.len(), 1, "{}", text(&out.stderr));
    let event = got[0].json();
    assert_eq!(event["reason"], "NewArtifact");
    assert_eq!(
        event["metadata"]["revision"],
        format!("main@sha1:{}", repo.head())
    );
}
