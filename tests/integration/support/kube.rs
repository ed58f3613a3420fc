//! A real Kubernetes API server on loopback: etcd and kube-apiserver, for the tests of
//! `localAuthRef: { secret: NAME }` (no fake, no mock: the Secrets are read through the same
//! API, RBAC and TLS a cluster has).
//!
//! Both binaries are built by `scripts/install-test-deps.sh` from the Go module proxy into
//! `${GITOPSD_CACHE:-$HOME/.cache/gitopsd}/kube/<version>/`; `GITOPSD_KUBE_APISERVER` and
//! `GITOPSD_ETCD` point elsewhere. The API server serves a certificate of the harness CA
//! ([`TestPki`]), authenticates two users by static bearer tokens and authorizes with RBAC:
//!
//! - an admin (group `system:masters`, allowed everything), whose kubeconfig the tests give
//!   gitopsd for the successful cases and which the harness itself uses to create namespaces
//!   and Secrets;
//! - a limited user with no RBAC binding at all, so that reading a Secret is forbidden.
//!
//! The harness talks to the API server with the `kube` crate (a dependency of gitopsd, so no
//! kubectl is needed) on a runtime of its own.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tempfile::TempDir;

use super::process::{
    exchange, free_port, start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError,
};
use super::tls::TestPki;

/// The version `scripts/install-test-deps.sh` builds (keep the two in step).
pub const KUBE_VERSION: &str = "v1.34.4";
pub const ADMIN_USER: &str = "gitopsd-admin";
pub const ADMIN_TOKEN: &str = "admin-token-4f8e2a9c7b1d";
/// A user without any RBAC binding: every read of a Secret is forbidden.
pub const LIMITED_USER: &str = "gitopsd-limited";
pub const LIMITED_TOKEN: &str = "limited-token-93b7d0e5a2c6";

/// The API server takes several seconds to start (more on a busy 2-core machine): its
/// post-start hooks create the bootstrap RBAC policy and the `default` namespace.
const APISERVER_READY_TIMEOUT: Duration = Duration::from_secs(120);

fn cache_dir() -> PathBuf {
    std::env::var_os("GITOPSD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
        })
}

/// The kube-apiserver binary.
pub fn apiserver_bin() -> PathBuf {
    std::env::var_os("GITOPSD_KUBE_APISERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            cache_dir()
                .join("kube")
                .join(KUBE_VERSION)
                .join("kube-apiserver")
        })
}

/// The etcd binary.
pub fn etcd_bin() -> PathBuf {
    std::env::var_os("GITOPSD_ETCD")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("kube").join(KUBE_VERSION).join("etcd"))
}

/// kube-controller-manager or kube-scheduler, built beside the API server.
fn kube_bin(name: &str) -> PathBuf {
    cache_dir().join("kube").join(KUBE_VERSION).join(name)
}

/// The kwok version `scripts/install-test-deps.sh` builds, and its directory (the binary and
/// `stages.yaml`, the stage definitions it needs to move nodes and pods along).
const KWOK_VERSION: &str = "v0.8.0";

fn kwok_dir() -> PathBuf {
    cache_dir()
        .join("kube")
        .join(format!("kwok-{KWOK_VERSION}"))
}

/// The fake node kwok manages: pods scheduled there become Running and Ready.
pub const FAKE_NODE: &str = "kwok-node-0";

/// etcd and kube-apiserver (and, from [`KubeCluster::start_with_workers`], the controllers, the
/// scheduler and a kwok node), stopped (with their data) on drop.
pub struct KubeCluster {
    /// kube-controller-manager, kube-scheduler and kwok, stopped before the API server.
    workers: Vec<ServerProcess>,
    /// `None` once stopped with [`KubeCluster::stop_apiserver`].
    apiserver: Option<ServerProcess>,
    etcd: ServerProcess,
    etcd_port: u16,
    port: u16,
    pki: TestPki,
    admin: kube::Client,
    runtime: tokio::runtime::Runtime,
    dir: TempDir,
}

impl std::fmt::Debug for KubeCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubeCluster({})", self.url())
    }
}

impl KubeCluster {
    /// Starts etcd, then the API server, and waits until `/readyz` says ok.
    pub fn start() -> Self {
        for bin in [apiserver_bin(), etcd_bin()] {
            assert!(
                bin.is_file(),
                "{} is missing: run scripts/install-test-deps.sh (it builds kube-apiserver and \
                 etcd {KUBE_VERSION} into the cache)",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-kube-")
            .tempdir()
            .expect("create temp dir for the cluster");
        let pki = TestPki::new();
        let (etcd, etcd_port) = start_etcd(dir.path());
        let files = ApiserverFiles::write(dir.path(), &pki);
        let (apiserver, port) = start_on_free_port("kube-apiserver", |port| {
            start_apiserver(dir.path(), &files, &pki, etcd_port, port)
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build the harness's tokio runtime");
        let url = format!("https://127.0.0.1:{port}");
        let admin_kubeconfig = dir.path().join("admin.kubeconfig");
        write_kubeconfig(&admin_kubeconfig, &url, &pki.ca_cert(), ADMIN_TOKEN);
        write_kubeconfig(
            &dir.path().join("limited.kubeconfig"),
            &url,
            &pki.ca_cert(),
            LIMITED_TOKEN,
        );
        let admin = runtime.block_on(async {
            let kubeconfig = kube::config::Kubeconfig::read_from(&admin_kubeconfig)
                .expect("read the admin kubeconfig");
            let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .expect("load the admin kubeconfig");
            kube::Client::try_from(config).expect("make the admin client")
        });
        KubeCluster {
            workers: Vec::new(),
            apiserver: Some(apiserver),
            etcd,
            etcd_port,
            port,
            pki,
            admin,
            runtime,
            dir,
        }
    }

    /// A cluster that runs workloads: [`KubeCluster::start`], then kube-controller-manager
    /// (namespaces finalize, garbage collection, Deployments get ReplicaSets and pods),
    /// kube-scheduler, and kwok with one fake node ([`FAKE_NODE`]) whose pods become Ready, so
    /// that Deployments roll out and Jobs complete as on a real node.
    pub fn start_with_workers() -> Self {
        let mut cluster = KubeCluster::start();
        for bin in [
            kube_bin("kube-controller-manager"),
            kube_bin("kube-scheduler"),
            kwok_dir().join("kwok"),
        ] {
            assert!(
                bin.is_file(),
                "{} is missing: run scripts/install-test-deps.sh",
                bin.display()
            );
        }
        let dir = cluster.dir.path().to_path_buf();
        let kubeconfig = cluster.admin_kubeconfig();
        let mut controllers = Command::new(kube_bin("kube-controller-manager"));
        controllers
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            // No HTTPS endpoint of its own: nothing here reads its metrics or health.
            .arg("--secure-port=0")
            .arg("--controllers=*")
            // The token controller signs service account tokens with the API server's key
            // and puts the CA into every namespace's kube-root-ca.crt.
            .arg(format!(
                "--service-account-private-key-file={}",
                cluster.pki.server_key().display()
            ))
            .arg(format!(
                "--root-ca-file={}",
                cluster.pki.ca_cert().display()
            ))
            .arg("--use-service-account-credentials=false")
            // kwok's heartbeat stage renews the node's status every 20-45 s: a grace period
            // shorter than that marks the node NotReady between two beats, taints it, and
            // pods stop being scheduled (a Deployment then never becomes available).
            .arg("--node-monitor-grace-period=2m")
            .arg("--v=1");
        cluster.workers.push(
            ServerProcess::spawn(
                "kube-controller-manager",
                controllers,
                &dir.join("kube-controller-manager.log"),
            )
            .expect("start kube-controller-manager"),
        );
        let mut scheduler = Command::new(kube_bin("kube-scheduler"));
        scheduler
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("--leader-elect=false")
            .arg("--secure-port=0")
            .arg("--v=1");
        cluster.workers.push(
            ServerProcess::spawn("kube-scheduler", scheduler, &dir.join("kube-scheduler.log"))
                .expect("start kube-scheduler"),
        );
        let kwok_port = free_port();
        let mut kwok = Command::new(kwok_dir().join("kwok"));
        kwok.arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg("-c")
            .arg(kwok_dir().join("stages.yaml"))
            .arg("--manage-all-nodes=false")
            .arg("--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake")
            .arg(format!("--server-address=127.0.0.1:{kwok_port}"))
            .arg("--node-ip=127.0.0.1");
        cluster
            .workers
            .push(ServerProcess::spawn("kwok", kwok, &dir.join("kwok.log")).expect("start kwok"));
        cluster.create_fake_node();
        cluster
    }

    /// The node kwok plays. Created without taints; kwok's node stages mark it Ready.
    fn create_fake_node(&self) {
        let node: Node = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": FAKE_NODE,
                "annotations": { "kwok.x-k8s.io/node": "fake" },
                "labels": { "type": "kwok", "kubernetes.io/hostname": FAKE_NODE },
            },
            "spec": {},
        }))
        .expect("a Node object");
        let api: Api<Node> = Api::all(self.admin.clone());
        self.runtime
            .block_on(api.create(&PostParams::default(), &node))
            .unwrap_or_else(|e| panic!("create node {FAKE_NODE}: {e}"));
    }

    /// Applies `object` (any kind, as JSON) with server-side apply as the harness, e.g. a
    /// Deployment for a test to watch roll out.
    pub fn apply_json(&self, object: serde_json::Value) {
        let object: kube::api::DynamicObject =
            serde_json::from_value(object).expect("a Kubernetes object");
        let types = object.types.clone().expect("apiVersion and kind");
        let name = object.metadata.name.clone().expect("a name");
        let api = self.dynamic_api(
            &types.api_version,
            &types.kind,
            object.metadata.namespace.as_deref(),
        );
        let params = PatchParams::apply("gitopsd-tests").force();
        self.runtime
            .block_on(api.patch(&name, &params, &Patch::Apply(&object)))
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", types.kind));
    }

    /// The object `apiVersion`/`kind` `namespace`/`name` as JSON, if it exists.
    pub fn get_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<serde_json::Value> {
        let api = self.dynamic_api(api_version, kind, namespace);
        self.runtime.block_on(async {
            api.get_opt(name)
                .await
                .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"))
                .map(|object| serde_json::to_value(object).expect("object as JSON"))
        })
    }

    /// Every object of `apiVersion`/`kind` (in `namespace`, or cluster-wide), as JSON.
    pub fn list_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let api = self.dynamic_api(api_version, kind, namespace);
        self.runtime.block_on(async {
            api.list(&Default::default())
                .await
                .unwrap_or_else(|e| panic!("list {kind}: {e}"))
                .items
                .into_iter()
                .map(|object| serde_json::to_value(object).expect("object as JSON"))
                .collect()
        })
    }

    /// An API for any kind, found through discovery.
    fn dynamic_api(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
    ) -> Api<kube::api::DynamicObject> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (resource, _) = self
            .runtime
            .block_on(kube::discovery::pinned_kind(&self.admin, &gvk))
            .unwrap_or_else(|e| panic!("discover {kind}: {e}"));
        match namespace {
            Some(namespace) => Api::namespaced_with(self.admin.clone(), namespace, &resource),
            None => Api::all_with(self.admin.clone(), &resource),
        }
    }

    /// One cluster for the whole test binary, started on first use: a start takes seconds,
    /// and tests keep apart by working in namespaces of their own. A static is never dropped,
    /// so an exit hook stops its processes and removes its files (etcd's alone take 120 MB).
    pub fn shared() -> &'static KubeCluster {
        static SHARED: OnceLock<KubeCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = KubeCluster::start();
            clean_up_at_exit(&cluster);
            cluster
        })
    }

    /// As [`KubeCluster::shared`], with controllers, a scheduler and a kwok node
    /// ([`KubeCluster::start_with_workers`]): for tests that wait for rollouts.
    pub fn shared_with_workers() -> &'static KubeCluster {
        static SHARED: OnceLock<KubeCluster> = OnceLock::new();
        SHARED.get_or_init(|| {
            let cluster = KubeCluster::start_with_workers();
            clean_up_at_exit(&cluster);
            cluster
        })
    }

    /// A JSON merge patch of the object, sent as field manager `kubectl-edit`: what a person's
    /// `kubectl edit` does.
    pub fn edit_json(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        patch: serde_json::Value,
    ) {
        let api = self.dynamic_api(api_version, kind, namespace);
        let params = PatchParams {
            field_manager: Some("kubectl-edit".into()),
            ..Default::default()
        };
        self.runtime
            .block_on(api.patch(name, &params, &Patch::Merge(&patch)))
            .unwrap_or_else(|e| panic!("edit {kind} {name}: {e}"));
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_cert(&self) -> PathBuf {
        self.pki.ca_cert()
    }

    /// A CA that signed nothing the API server presents.
    pub fn unrelated_ca_cert(&self) -> PathBuf {
        self.pki.other_ca_cert()
    }

    /// A kubeconfig (context `test`, the current one) for the admin user.
    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// A kubeconfig for the user without RBAC bindings.
    pub fn limited_kubeconfig(&self) -> PathBuf {
        self.dir.path().join("limited.kubeconfig")
    }

    /// Creates a namespace whose name starts with `prefix` and is unique in this cluster.
    pub fn create_namespace(&self, prefix: &str) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: Api<Namespace> = Api::all(self.admin.clone());
        self.runtime
            .block_on(api.create(&PostParams::default(), &namespace))
            .unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        name
    }

    /// Creates the Secret, or replaces its data (keys not given are removed), with
    /// server-side apply.
    pub fn put_secret(&self, namespace: &str, name: &str, data: &[(&str, &[u8])]) {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                namespace: Some(namespace.to_string()),
                ..Default::default()
            },
            data: Some(
                data.iter()
                    .map(|(key, value)| (key.to_string(), ByteString(value.to_vec())))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..Default::default()
        };
        let api: Api<Secret> = Api::namespaced(self.admin.clone(), namespace);
        let params = PatchParams::apply("gitopsd-tests").force();
        self.runtime
            .block_on(api.patch(name, &params, &Patch::Apply(&secret)))
            .unwrap_or_else(|e| panic!("apply Secret {namespace}/{name}: {e}"));
    }

    /// Starts the API server again on its port, after [`KubeCluster::stop_apiserver`], and
    /// waits until it is ready.
    pub fn restart_apiserver(&mut self) {
        if self.apiserver.is_some() {
            return;
        }
        let files = ApiserverFiles::write(self.dir.path(), &self.pki);
        let (apiserver, _) = start_apiserver(
            self.dir.path(),
            &files,
            &self.pki,
            self.etcd_port,
            self.port,
        )
        .unwrap_or_else(|e| panic!("restart kube-apiserver on port {}: {e:?}", self.port));
        self.apiserver = Some(apiserver);
    }

    /// Stops the API server (etcd keeps running): the cluster is down for its clients.
    pub fn stop_apiserver(&mut self) {
        if let Some(mut apiserver) = self.apiserver.take() {
            apiserver.stop();
        }
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        // Its clients first, then the API server: each would otherwise log the next one's
        // going away at length.
        for worker in &mut self.workers {
            worker.stop();
        }
        self.stop_apiserver();
        self.etcd.stop();
    }
}

/// Process groups to kill and directories to remove when the test process exits.
static AT_EXIT: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

fn clean_up_at_exit(cluster: &KubeCluster) {
    static REGISTER: Once = Once::new();
    {
        let mut at_exit = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
        at_exit
            .0
            .extend(cluster.workers.iter().map(ServerProcess::id));
        at_exit
            .0
            .extend(cluster.apiserver.as_ref().map(ServerProcess::id));
        at_exit.0.push(cluster.etcd.id());
        at_exit.1.push(cluster.dir.path().to_path_buf());
        if let Some(pki) = cluster.pki.ca_cert().parent() {
            at_exit.1.push(pki.to_path_buf());
        }
    }
    extern "C" fn clean_up() {
        let at_exit = AT_EXIT.lock().unwrap_or_else(|e| e.into_inner());
        for pgid in &at_exit.0 {
            // SAFETY: kill takes plain integers; a negative pid addresses the process group.
            unsafe { libc::kill(-(*pgid as libc::pid_t), libc::SIGKILL) };
        }
        for dir in &at_exit.1 {
            let _ = fs::remove_dir_all(dir);
        }
    }
    REGISTER.call_once(|| {
        // SAFETY: registers a plain function, which only takes a lock, signals and removes
        // files; nothing it touches is gone while exit handlers run.
        unsafe { libc::atexit(clean_up) };
    });
}

/// A kubeconfig with one cluster, one user (a bearer token) and one context, `test`, which is
/// the current one.
fn write_kubeconfig(path: &Path, url: &str, ca: &Path, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    \
         certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\n\
         contexts:\n- name: test\n  context: {{ cluster: test, user: user }}\n\
         current-context: test\n",
        ca.display()
    );
    fs::write(path, text).expect("write kubeconfig");
}

fn start_etcd(dir: &Path) -> (ServerProcess, u16) {
    start_on_free_port("etcd", |port| {
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let data = dir.join(format!("etcd-{port}"));
        let mut command = Command::new(etcd_bin());
        command
            .arg("--name=gitopsd-test")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=gitopsd-test={peer_url}"))
            // Test data need not survive a power cut; fsync would make every write wait.
            .arg("--unsafe-no-fsync")
            .arg("--log-level=warn");
        let log = dir.join("etcd.log");
        let mut process = ServerProcess::spawn("etcd", command, &log)
            .map_err(|e| StartError::Failed(e.to_string()))?;
        wait_until_ready(&mut process, || {
            match exchange(port, b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n") {
                None => Probe::NotYet,
                Some(answer) => {
                    let text = String::from_utf8_lossy(&answer);
                    if text.contains("\"health\":\"true\"") {
                        Probe::Ready
                    } else if text.contains("\"health\"") {
                        Probe::NotYet
                    } else {
                        Probe::Foreign(text.lines().next().unwrap_or_default().to_string())
                    }
                }
            }
        })
        .map_err(port_taken_lowercase)?;
        Ok((process, port))
    })
}

/// etcd and kube-apiserver say "bind: address already in use" (lower case).
fn port_taken_lowercase(error: StartError) -> StartError {
    match error {
        StartError::Failed(detail) if detail.contains("address already in use") => {
            StartError::PortTaken(detail)
        }
        other => other,
    }
}

struct ApiserverFiles {
    tokens: PathBuf,
    service_account_key: PathBuf,
    service_account_public_key: PathBuf,
}

impl ApiserverFiles {
    fn write(dir: &Path, pki: &TestPki) -> Self {
        let tokens = dir.join("tokens.csv");
        // token,user,uid,"groups"
        fs::write(
            &tokens,
            format!(
                "{ADMIN_TOKEN},{ADMIN_USER},1,\"system:masters\"\n{LIMITED_TOKEN},{LIMITED_USER},2\n"
            ),
        )
        .expect("write tokens.csv");
        // The API server signs service account tokens with this key, and checks them with its
        // public half (it insists on both); the tests never use such a token, so the TLS key
        // of the harness does. The public half must be a PEM public key: a PKCS#8 private key
        // there is not read.
        let service_account_key = pki.server_key();
        let service_account_public_key = dir.join("service-account.pub");
        let output = Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&service_account_key)
            .arg("-out")
            .arg(&service_account_public_key)
            .output()
            .expect("run openssl");
        assert!(
            output.status.success(),
            "openssl pkey -pubout failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        ApiserverFiles {
            tokens,
            service_account_key,
            service_account_public_key,
        }
    }
}

fn start_apiserver(
    dir: &Path,
    files: &ApiserverFiles,
    pki: &TestPki,
    etcd_port: u16,
    port: u16,
) -> Result<(ServerProcess, u16), StartError> {
    let mut command = Command::new(apiserver_bin());
    command
        .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
        .arg(format!("--etcd-prefix=/gitopsd-test-{port}"))
        .arg("--bind-address=127.0.0.1")
        .arg("--advertise-address=127.0.0.1")
        .arg(format!("--secure-port={port}"))
        .arg(format!(
            "--cert-dir={}",
            dir.join("apiserver-certs").display()
        ))
        .arg(format!("--tls-cert-file={}", pki.server_cert().display()))
        .arg(format!(
            "--tls-private-key-file={}",
            pki.server_key().display()
        ))
        .arg(format!("--token-auth-file={}", files.tokens.display()))
        .arg("--authorization-mode=RBAC")
        .arg("--service-account-issuer=https://kubernetes.default.svc")
        .arg(format!(
            "--service-account-key-file={}",
            files.service_account_public_key.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            files.service_account_key.display()
        ))
        .arg("--service-cluster-ip-range=10.96.0.0/24")
        // No kubelets, controllers or load here: skip what only they need.
        .arg("--endpoint-reconciler-type=none")
        .arg("--enable-priority-and-fairness=false")
        .arg("--profiling=false")
        .arg("--v=1");
    let log = dir.join(format!("kube-apiserver-{port}.log"));
    let mut process = ServerProcess::spawn("kube-apiserver", command, &log)
        .map_err(|e| StartError::Failed(e.to_string()))?;
    let ca = pki.ca_cert();
    let deadline = Instant::now() + APISERVER_READY_TIMEOUT;
    // wait_until_ready's limit is made for servers that start in a second: poll it again
    // until the API server's own (longer) deadline.
    loop {
        let result = wait_until_ready(&mut process, || match readyz(port, &ca) {
            Some(200) => Probe::Ready,
            _ => Probe::NotYet,
        });
        match result.map_err(port_taken_lowercase) {
            Ok(()) => return Ok((process, port)),
            Err(StartError::Failed(detail))
                if Instant::now() < deadline && detail.contains("not ready after") => {}
            Err(other) => return Err(other),
        }
    }
}

/// The status code of `GET /readyz` over TLS (verifying the server against `ca`), if any
/// answer came.
fn readyz(port: u16, ca: &Path) -> Option<u16> {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    let mut builder = SslConnector::builder(SslMethod::tls_client()).ok()?;
    builder.set_ca_file(ca).ok()?;
    builder.set_verify(SslVerifyMode::PEER);
    let connector = builder.build();
    let stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut tls = connector.connect("127.0.0.1", stream).ok()?;
    tls.write_all(b"GET /readyz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next()?.split_whitespace().nth(1)?;
    let code = status.parse().ok();
    if code != Some(200) {
        sleep(Duration::from_millis(200));
    }
    code
}
