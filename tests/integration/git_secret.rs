//! `localAuthRef: { secret: NAME }`: git credentials in a Kubernetes Secret, read through a
//! real kube-apiserver (with etcd, RBAC and TLS; tests/support/kube.rs) at every sync, on both
//! git implementations. The `gitopsd` binary runs as a user would run it (`run --once -o json`,
//! or the daemon with its status API), with a config whose top-level `kubernetes.kubeconfig`
//! is a relative path.
//!
//! Failures (no such Secret, a user RBAC does not allow, an API server that is down) must read
//! as one sentence naming the source URL and the cause, and no secret value (passwords, the
//! SSH key, the kubeconfig's tokens) may appear in stdout, stderr or the state file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::kube::{KubeCluster, ADMIN_TOKEN, LIMITED_TOKEN, LIMITED_USER};
use crate::support::{keygen, HttpGitServer, Repo, SshServer};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55word-from-k8s";
const ROTATED_PASSWORD: &str = "r0tated-Pa55word-from-k8s";
const SECRET: &str = "git-auth";

on_both!(
    basic_auth_from_a_secret_syncs,
    ssh_identity_and_known_hosts_from_a_secret_sync,
    rotated_secret_is_used_at_the_next_sync_without_a_restart,
    missing_secret_forbidden_user_and_unreachable_apiserver_fail_cleanly,
);

/// The test binary's shared cluster; every test works in namespaces of its own.
fn cluster() -> &'static KubeCluster {
    KubeCluster::shared()
}

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", "kind: ConfigMap\n");
    repo.commit("c1");
    repo.push_all();
    repo
}

fn http_server(password: &str) -> HttpGitServer {
    HttpGitServer::builder().basic_auth(USER, password).start()
}

/// `repo` served behind basic auth with [`PASSWORD`]: the server and the repository's URL.
fn basic_auth_server(repo: &Repo) -> (HttpGitServer, String) {
    let server = http_server(PASSWORD);
    server.serve(repo.bare());
    let url = server.auth_url(repo.bare().name());
    (server, url)
}

/// The source mapping of a git source at `url` whose credentials are the Secret [`SECRET`].
fn secret_source(url: &str) -> String {
    format!("kind: git, url: \"{url}\", localAuthRef: {{ secret: {SECRET} }}")
}

/// [`SECRET`] in `namespace` with [`USER`] and `password`.
fn put_basic_secret(cluster: &KubeCluster, namespace: &str, password: &[u8]) {
    cluster.put_secret(
        namespace,
        SECRET,
        &[("username", USER.as_bytes()), ("password", password)],
    );
}

/// A config dir for `gitopsd`: the kubeconfig copied in as `./kubeconfig`, state in `./state`.
struct Gitopsd {
    dir: tempfile::TempDir,
    config: PathBuf,
}

/// What one `gitopsd run --once -o json` did.
struct Once {
    code: i32,
    json: serde_json::Value,
    /// stdout, stderr and the state file, for leak checks.
    everything: String,
}

impl Once {
    fn source(&self) -> &serde_json::Value {
        &self.json["sources"][0]
    }

    fn error(&self) -> String {
        self.source()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {}", self.everything))
            .to_string()
    }

    fn assert_synced(&self) -> String {
        assert_eq!(self.code, 0, "{}", self.everything);
        assert!(self.source()["error"].is_null(), "{}", self.everything);
        self.source()["revision"].as_str().unwrap().to_string()
    }

    /// The run failed with one sentence that names `url`; returns it.
    fn assert_failed(&self, url: &str) -> String {
        assert_eq!(self.code, 1, "{}", self.everything);
        let error = self.error();
        eprintln!("expected failure: {error}");
        assert!(error.contains(url), "error does not name the URL: {error}");
        assert!(!error.contains('\n'), "not one line: {error}");
        error
    }

    fn assert_no_secret(&self, secrets: &[&str]) {
        for secret in secrets.iter().chain(&[ADMIN_TOKEN, LIMITED_TOKEN]) {
            assert!(
                !self.everything.contains(secret),
                "secret {secret:?} leaked:\n{}",
                self.everything
            );
        }
    }
}

impl Gitopsd {
    /// `source` is the flow mapping of the configuration's source, without `gitImplementation`
    /// (added here).
    fn new(kubeconfig: &Path, namespace: &str, source: &str) -> Gitopsd {
        let dir = tempfile::tempdir().unwrap();
        fs::copy(kubeconfig, dir.path().join("kubeconfig")).unwrap();
        let port = crate::support::free_port();
        let config = dir.path().join("gitopsd.yaml");
        fs::write(
            &config,
            format!(
                "stateDir: ./state\n\
                 server: {{ listen: \"127.0.0.1:{port}\" }}\n\
                 kubernetes: {{ kubeconfig: ./kubeconfig, context: test }}\n\
                 configurations:\n\
                 \x20 - name: fleet\n\
                 \x20   namespace: {namespace}\n\
                 \x20   source: {{ {source}, gitImplementation: {}, interval: 1h }}\n",
                crate::support::implementation_name()
            ),
        )
        .unwrap();
        Gitopsd { dir, config }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn state_file(&self) -> String {
        fs::read_to_string(self.dir.path().join("state/state.json")).unwrap_or_default()
    }

    fn run_once(&self) -> Once {
        let out = Command::new(crate::support::gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&self.config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("GITOPSD_CONFIG")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let everything = format!(
            "--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}\n--- state.json ---\n{}",
            self.state_file()
        );
        let json = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stdout is not the JSON report ({e}):\n{everything}"));
        Once {
            code: out.status.code().unwrap_or(-1),
            json,
            everything,
        }
    }
}

fn basic_auth_from_a_secret_syncs() {
    let cluster = cluster();
    let repo = repo();
    let (_server, url) = basic_auth_server(&repo);
    let namespace = cluster.create_namespace("basic");
    // As `kubectl create secret --from-file` stores a file written with echo.
    put_basic_secret(cluster, &namespace, format!("{PASSWORD}\n").as_bytes());
    let gitopsd = Gitopsd::new(
        &cluster.admin_kubeconfig(),
        &namespace,
        &secret_source(&url),
    );
    let once = gitopsd.run_once();
    let revision = once.assert_synced();
    assert_eq!(revision, format!("main@sha1:{}", repo.head()));
    once.assert_no_secret(&[PASSWORD]);
}

fn ssh_identity_and_known_hosts_from_a_secret_sync() {
    let cluster = cluster();
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("id_ed25519");
    keygen(&key, "ed25519", &[]);
    server.authorize(&fs::read_to_string(key.with_extension("pub")).unwrap());
    let private = fs::read(&key).unwrap();
    let known_hosts = format!("{}\n", server.known_hosts_line());
    let namespace = cluster.create_namespace("ssh");
    cluster.put_secret(
        &namespace,
        SECRET,
        &[
            ("identity", &private),
            ("known_hosts", known_hosts.as_bytes()),
        ],
    );
    let gitopsd = Gitopsd::new(
        &cluster.admin_kubeconfig(),
        &namespace,
        &secret_source(&url),
    );
    let once = gitopsd.run_once();
    once.assert_synced();
    let private_text = String::from_utf8(private).unwrap();
    let body_line = private_text.lines().nth(1).unwrap();
    once.assert_no_secret(&[body_line]);

    // Without `identity` the Secret is incomplete: said so, and no generated key stands in.
    cluster.put_secret(
        &namespace,
        SECRET,
        &[("known_hosts", known_hosts.as_bytes())],
    );
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "the Kubernetes Secret `{namespace}/{SECRET}` has no `identity`"
        )),
        "{error}"
    );
    assert!(!gitopsd.dir.path().join("state/keys").exists());
}

/// The password changes on the server and then in the Secret; the running daemon's next
/// syncs fail and then succeed without a restart.
fn rotated_secret_is_used_at_the_next_sync_without_a_restart() {
    let cluster = cluster();
    let repo = repo();
    let mut server = http_server(PASSWORD);
    server.serve(repo.bare());
    let url = server.auth_url(repo.bare().name());
    let namespace = cluster.create_namespace("rotate");
    let credentials = |password: &str| put_basic_secret(cluster, &namespace, password.as_bytes());
    credentials(PASSWORD);
    let gitopsd = Gitopsd::new(
        &cluster.admin_kubeconfig(),
        &namespace,
        &secret_source(&url),
    );
    let config_text = fs::read_to_string(&gitopsd.config).unwrap();
    let port: u16 = config_text
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|p| p.parse().ok())
        .unwrap();
    let log = gitopsd.dir.path().join("gitopsd.log");
    let out = fs::File::create(&log).unwrap();
    let daemon = KillOnDrop(
        Command::new(crate::support::gitopsd_bin())
            .args(["run", "--config"])
            .arg(&gitopsd.config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let status_url = format!("http://127.0.0.1:{port}/api/v1/status");
    let source = || -> Option<serde_json::Value> {
        let mut response = ureq::get(&status_url).call().ok()?;
        let status: serde_json::Value =
            serde_json::from_str(&response.body_mut().read_to_string().ok()?).ok()?;
        status["sources"].as_array()?.first().cloned()
    };
    let reconcile = || {
        ureq::post(&format!("http://127.0.0.1:{port}/api/v1/reconcile/fleet"))
            .send_empty()
            .unwrap();
    };
    let first = format!("main@sha1:{}", repo.head());
    wait_for("the first sync", &log, || {
        source().filter(|s| s["revision"] == first.as_str())
    });

    // The server takes only the new password now, and there is a new commit to fetch.
    server.set_password(ROTATED_PASSWORD);
    repo.write(
        "deploy/app.yaml",
        "kind: ConfigMap\nmetadata: { name: two }\n",
    );
    repo.commit("c2");
    repo.push_all();
    let second = format!("main@sha1:{}", repo.head());
    let attempts = |s: &serde_json::Value| s["metrics"]["fetchesTotal"].as_u64().unwrap_or(0);
    let before = attempts(&source().unwrap());
    reconcile();
    let failed = wait_for("a sync with the old password", &log, || {
        source().filter(|s| attempts(s) > before && !s["lastError"].is_null())
    });
    let error = failed["lastError"].as_str().unwrap();
    eprintln!("expected failure: {error}");
    assert!(error.contains("authentication failed"), "{error}");
    // The last good artifact stays.
    assert_eq!(failed["revision"], first.as_str(), "{failed}");

    credentials(ROTATED_PASSWORD);
    reconcile();
    let synced = wait_for("a sync with the rotated password", &log, || {
        source().filter(|s| s["revision"] == second.as_str())
    });
    assert!(synced["lastError"].is_null(), "{synced}");
    drop(daemon);

    let everything = format!(
        "{}{}",
        fs::read_to_string(&log).unwrap(),
        gitopsd.state_file()
    );
    for secret in [PASSWORD, ROTATED_PASSWORD, ADMIN_TOKEN] {
        assert!(
            !everything.contains(secret),
            "secret {secret:?} leaked:\n{everything}"
        );
    }
}

/// Every way reading the Secret fails: no such Secret, RBAC says no, an unknown token, an API
/// server certificate the kubeconfig's CA did not sign, nobody listening.
fn missing_secret_forbidden_user_and_unreachable_apiserver_fail_cleanly() {
    let cluster = cluster();
    let repo = repo();
    let (_server, url) = basic_auth_server(&repo);
    let namespace = cluster.create_namespace("fail");
    let source = secret_source(&url);

    // No such Secret.
    let gitopsd = Gitopsd::new(&cluster.admin_kubeconfig(), &namespace, &source);
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "Kubernetes Secret `{namespace}/{SECRET}` not found"
        )),
        "{error}"
    );
    once.assert_no_secret(&[]);

    // A user whom RBAC does not let read it: the API server's reason names user and namespace.
    put_basic_secret(cluster, &namespace, PASSWORD.as_bytes());
    let gitopsd = Gitopsd::new(&cluster.limited_kubeconfig(), &namespace, &source);
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "reading Kubernetes Secret `{namespace}/{SECRET}` is forbidden: User \
             \"{LIMITED_USER}\" cannot get resource \"secrets\""
        )),
        "{error}"
    );
    assert!(
        error.contains(&format!("in the namespace \"{namespace}\"")),
        "{error}"
    );
    once.assert_no_secret(&[PASSWORD]);

    // A token the API server does not know.
    let gitopsd = Gitopsd::new(&cluster.admin_kubeconfig(), &namespace, &source);
    let kubeconfig = fs::read_to_string(gitopsd.kubeconfig())
        .unwrap()
        .replace(ADMIN_TOKEN, "unknown-token-5d1c8e");
    fs::write(gitopsd.kubeconfig(), kubeconfig).unwrap();
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "the Kubernetes API server at {} refused the kubeconfig's credentials (HTTP 401 \
             Unauthorized)",
            cluster.url()
        )),
        "{error}"
    );
    once.assert_no_secret(&[PASSWORD, "unknown-token-5d1c8e"]);

    // An API server whose certificate the kubeconfig's CA did not sign.
    let gitopsd = Gitopsd::new(&cluster.admin_kubeconfig(), &namespace, &source);
    let kubeconfig = fs::read_to_string(gitopsd.kubeconfig()).unwrap().replace(
        &cluster.ca_cert().display().to_string(),
        &cluster.unrelated_ca_cert().display().to_string(),
    );
    fs::write(gitopsd.kubeconfig(), kubeconfig).unwrap();
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "cannot reach the Kubernetes API server at {}: its TLS certificate could not be \
             verified",
            cluster.url()
        )),
        "{error}"
    );
    once.assert_no_secret(&[PASSWORD]);

    // An API server that does not answer: the kubeconfig points at a port nobody listens on.
    let gitopsd = Gitopsd::new(&cluster.admin_kubeconfig(), &namespace, &source);
    let dead_port = crate::support::free_port();
    let kubeconfig = fs::read_to_string(gitopsd.kubeconfig()).unwrap().replace(
        &format!("127.0.0.1:{}", cluster.port()),
        &format!("127.0.0.1:{dead_port}"),
    );
    fs::write(gitopsd.kubeconfig(), kubeconfig).unwrap();
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{dead_port}: \
             connection refused"
        )),
        "{error}"
    );
    once.assert_no_secret(&[PASSWORD]);
}

/// An API server that goes down after a good sync: the next sync fails naming it, and the
/// last artifact stays (reported and on disk), as after any failed fetch. A cluster of its
/// own, since it gets stopped.
#[test]
fn apiserver_going_down_keeps_the_last_artifact() {
    crate::support::IMPLEMENTATION.with(|i| i.set(gitopsd::config::GitImplementation::Gix));
    let mut cluster = KubeCluster::start();
    let repo = repo();
    let (_server, url) = basic_auth_server(&repo);
    let namespace = cluster.create_namespace("down");
    put_basic_secret(&cluster, &namespace, PASSWORD.as_bytes());
    let gitopsd = Gitopsd::new(
        &cluster.admin_kubeconfig(),
        &namespace,
        &secret_source(&url),
    );
    let once = gitopsd.run_once();
    let revision = once.assert_synced();
    let artifact = once.source()["artifact"]["path"]
        .as_str()
        .unwrap()
        .to_string();

    cluster.stop_apiserver();
    let once = gitopsd.run_once();
    let error = once.assert_failed(&url);
    assert!(
        error.contains(&format!(
            "cannot reach the Kubernetes API server at {}: connection refused",
            cluster.url()
        )),
        "{error}"
    );
    assert_eq!(once.source()["revision"], revision.as_str());
    assert_eq!(once.source()["artifact"]["path"], artifact.as_str());
    assert!(Path::new(&artifact).is_file());
    once.assert_no_secret(&[PASSWORD]);
}

/// `localAuthRef.secret` without a cluster is a config error at the Secret's name.
#[test]
fn check_rejects_a_secret_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gitopsd.yaml");
    fs::write(
        &config,
        "configurations:\n  - name: fleet\n    source:\n      kind: git\n      url: https://example.com/fleet\n      localAuthRef: { secret: git-auth }\n",
    )
    .unwrap();
    let out = Command::new(crate::support::gitopsd_bin())
        .args(["check", "--config"])
        .arg(&config)
        .env_remove("GITOPSD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:31: `localAuthRef.secret` names a Kubernetes Secret, which needs a cluster",
            config.display()
        )),
        "{stderr}"
    );
}

fn wait_for<T>(what: &str, log: &Path, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(found) = check() {
            return found;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\n--- gitopsd log ---\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
