//! Object-store sources against real servers on loopback: an `azblob` source against Azurite
//! and a `bucket` source against SeaweedFS (`weed mini`), both started by the test harness
//! (tests/integration/support/azurite.rs, tests/integration/support/seaweed.rs; installed by
//! scripts/install-test-deps.sh). These are the figures behind the README's Performance section.
//!
//! - `azblob-sync`: a full sync of many small blobs and of two large ones, and an unchanged
//!   poll, next to Microsoft's JavaScript SDK (`@azure/storage-blob` under node, installed by
//!   scripts/install-test-deps.sh) downloading the same container when it is installed; then
//!   the peak memory of the bench process.
//! - `bucket-sync`: many small objects, a few large ones, and an unchanged poll, plus
//!   `gitopsd run --once` (sync + pack) with its peak RSS, next to `aws s3 sync` (awscli from
//!   PyPI, `pip install awscli`) when `aws` is on PATH or `GITOPSD_AWS` names it.
//!
//! `cargo bench --bench objects` runs both (`cargo bench --bench objects -- bucket-sync` runs
//! the scenarios whose name contains an argument). Settings, from the environment:
//!
//! - `GITOPSD_BENCH_AZBLOB_OBJECTS`: 1 KiB blobs the azblob scenario syncs (default 5,000);
//! - `GITOPSD_BENCH_BUCKET_OBJECTS`: 1 KiB objects the bucket scenario syncs (default 10,000);
//! - `GITOPSD_BENCH_OBJECTS`: both counts at once (the two above win over it);
//! - `GITOPSD_BENCH_RUNS`: repetitions per measurement, the median is reported (default 5;
//!   the bucket scenario runs at most 3, the azblob unchanged poll at least 5);
//! - `GITOPSD_BENCH_LARGE_MB`: size of each large object (default 16 MB for the 2 blobs,
//!   32 MB for the 4 bucket objects).
//!
//! Under `cargo test` (no `--bench` argument) it runs each scenario once, side by side, on 50
//! small objects and 1 MB large ones instead, so the bench cannot rot unnoticed. Either way
//! every sync is checked: its revision is Flux's revision computed here from the server's own
//! listing, the scratch directory holds as many files as were uploaded, and a second fetch
//! with that revision comes back unchanged.

// The integration tests' harness; a bench uses only part of it.
#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod support;

use anyhow::{bail, ensure};
use gitopsd::cli::bench::{fresh_dir, measure, report};
use gitopsd::config::{
    AzureAuth, AzureBlobSettings, BucketCredentials, BucketSettings, Secret, SecretValue,
};
use gitopsd::source::azblob::AzureBlobSource;
use gitopsd::source::bucket::BucketSource;
use gitopsd::source::objects::{self, ObjectSource, PARALLEL_DOWNLOADS};
use gitopsd::source::{FetchOutcome, Revision, SourceError};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::azurite::{self, Azurite};
use support::seaweed::{self, Seaweed};

/// What one invocation measures.
struct Settings {
    azblob_objects: usize,
    bucket_objects: usize,
    runs: usize,
    azblob_large_mb: usize,
    bucket_large_mb: usize,
}

impl Settings {
    /// `cargo test`: one quick run.
    fn smoke() -> Settings {
        Settings {
            azblob_objects: 50,
            bucket_objects: 50,
            runs: 1,
            azblob_large_mb: 1,
            bucket_large_mb: 1,
        }
    }

    /// `cargo bench`: the defaults, or the environment's.
    fn from_env() -> Settings {
        let var = |name: &str| -> Option<usize> {
            let value = std::env::var(name).ok()?;
            Some(
                value
                    .trim()
                    .replace(['_', ','], "")
                    .parse()
                    .unwrap_or_else(|e| panic!("{name}={value}: {e}")),
            )
        };
        let objects = var("GITOPSD_BENCH_OBJECTS");
        let large = var("GITOPSD_BENCH_LARGE_MB");
        Settings {
            azblob_objects: var("GITOPSD_BENCH_AZBLOB_OBJECTS")
                .or(objects)
                .unwrap_or(5000),
            bucket_objects: var("GITOPSD_BENCH_BUCKET_OBJECTS")
                .or(objects)
                .unwrap_or(10_000),
            runs: var("GITOPSD_BENCH_RUNS").unwrap_or(5),
            azblob_large_mb: large.unwrap_or(16),
            bucket_large_mb: large.unwrap_or(32),
        }
    }
}

/// How many files are under `dir`.
fn count_files(dir: &Path) -> anyhow::Result<usize> {
    let mut count = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            count += count_files(&entry.path())?;
        } else {
            count += 1;
        }
    }
    Ok(count)
}

/// Flux's revision of `index` (key → etag as it enters the line): `sha256:` over the lines
/// `"<key> <etag>\n"` sorted by key.
fn flux_revision(index: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, etag) in index {
        hasher.update(format!("{key} {etag}\n").as_bytes());
    }
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// `n` small YAML-ish objects of 1 KiB under `dir`.
fn small_objects(n: usize, dir: &str) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let mut body =
                format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: o{i}\n").into_bytes();
            body.resize(1024, b'#');
            (format!("{dir}/team-{:02}/obj-{i:05}.yaml", i % 50), body)
        })
        .collect()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut body = vec![0u8; len];
    openssl::rand::rand_bytes(&mut body).expect("random bytes");
    body
}

/// Uploads `objects` through `store`, `parallel` at a time.
fn upload(
    store: &Arc<dyn ObjectStore>,
    objects: Vec<(String, Vec<u8>)>,
    parallel: usize,
) -> anyhow::Result<()> {
    block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for (key, body) in objects {
            while tasks.len() >= parallel {
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

/// Runs `future` on a runtime of a few threads, as the daemon's.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime can be built")
        .block_on(future)
}

/// The object-store sources' async fetch, run to completion for a measurement.
trait Fetch {
    fn fetch_now(
        &self,
        previous: Option<&Revision>,
        scratch: PathBuf,
        stop: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError>;
}

impl<S: ObjectSource> Fetch for S {
    fn fetch_now(
        &self,
        previous: Option<&Revision>,
        scratch: PathBuf,
        stop: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError> {
        block_on(objects::fetch(self, previous, scratch, stop))
    }
}

/// A full sync of `source` into `work/<scratch>/snap`, `runs` times; its median, the revision,
/// and the checks: Flux's `expected` revision, `count` files, and an unchanged second fetch.
fn full_sync(
    source: &impl Fetch,
    work: &Path,
    scratch: &str,
    runs: usize,
    count: usize,
    expected: &str,
) -> anyhow::Result<(Duration, Revision)> {
    let stop = AtomicBool::new(false);
    let mut revision = None;
    let full = measure(runs, || {
        let scratch = fresh_dir(work, scratch)?;
        match source
            .fetch_now(None, scratch.join("snap"), &stop)
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            FetchOutcome::Fetched { revision: r, .. } => revision = Some(r),
            FetchOutcome::Unchanged => bail!("a full sync found nothing to do"),
        }
        Ok(())
    })?;
    let revision = revision.expect("at least one run");
    ensure!(
        revision.as_str() == expected,
        "synced revision {revision}, Flux's revision of the listing is {expected}"
    );
    let files = count_files(&work.join(scratch).join("snap"))?;
    ensure!(
        files == count,
        "{count} objects uploaded, {files} files synced"
    );
    match source
        .fetch_now(Some(&revision), work.join(scratch).join("again"), &stop)
        .map_err(|e| anyhow::anyhow!("{e}"))?
    {
        FetchOutcome::Unchanged => Ok((full, revision)),
        FetchOutcome::Fetched { revision: r, .. } => {
            bail!("a second fetch of {revision} was not unchanged: {r}")
        }
    }
}

/// An unchanged poll of `source` at `revision`, `runs` times; its median.
fn unchanged_poll(
    source: &impl Fetch,
    revision: &Revision,
    work: &Path,
    scratch: &str,
    runs: usize,
    what: &str,
) -> anyhow::Result<Duration> {
    let stop = AtomicBool::new(false);
    measure(runs, || {
        let scratch = fresh_dir(work, scratch)?;
        match source
            .fetch_now(Some(revision), scratch.join("snap"), &stop)
            .map_err(|e| anyhow::anyhow!("{e}"))?
        {
            FetchOutcome::Unchanged => Ok(()),
            FetchOutcome::Fetched { .. } => bail!("an unchanged {what} was downloaded"),
        }
    })
}

/// The `azblob-sync` scenario: Azurite from the harness, filled through object_store.
mod azblob_sync {
    use super::*;

    const LARGE_COUNT: usize = 2;

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
                auth: AzureAuth::AccountKey(SecretValue::Inline(Secret(
                    azurite::ACCOUNT_KEY.into(),
                ))),
                authority_host: None,
                msi_endpoint: None,
                ca_file: None,
            },
            ignore: None,
        }
    }

    /// Flux's revision of `container` from Azurite's listing (Azure etags enter hex-encoded).
    fn expected_revision(azurite: &Azurite, container: &str) -> String {
        let etag = |e: &str| hex::encode(e.trim_start_matches("W/").trim_matches('"'));
        flux_revision(
            &azurite
                .list(container)
                .into_iter()
                .map(|(key, e)| (key, etag(&e)))
                .collect(),
        )
    }

    pub fn run(work: &Path, settings: &Settings) -> anyhow::Result<()> {
        let objects = settings.azblob_objects;
        let runs = settings.runs;
        let large_mb = settings.azblob_large_mb;
        let azurite = Azurite::start();
        let endpoint = azurite.endpoint();

        eprintln!(
            "uploading {objects} small blobs and {LARGE_COUNT} x {large_mb} MB to Azurite..."
        );
        azurite.create_container("small");
        azurite.create_container("large");
        let small = small_objects(objects, "apps");
        let small_bytes: usize = small.iter().map(|(_, b)| b.len()).sum();
        upload(&azurite.admin("small"), small, 64)?;
        let large: Vec<(String, Vec<u8>)> = (0..LARGE_COUNT)
            .map(|i| (format!("blobs/large-{i}.bin"), random_bytes(large_mb << 20)))
            .collect();
        upload(&azurite.admin("large"), large, 64)?;
        println!("azblob: Azurite at {endpoint}");

        for (container, count, bytes) in [
            ("small", objects, small_bytes),
            ("large", LARGE_COUNT, LARGE_COUNT * (large_mb << 20)),
        ] {
            let source = source(&endpoint, container);
            let expected = expected_revision(&azurite, container);
            let (full, revision) =
                full_sync(&source, work, "azblob-scratch", runs, count, &expected)?;
            let secs = full.as_secs_f64();
            if let Some(modules) = azure_sdk_modules() {
                let script = work.join("azblob-baseline.js");
                std::fs::write(&script, BASELINE_JS)?;
                let baseline = measure(runs, || {
                    let out = fresh_dir(work, "azblob-baseline")?;
                    let status = Command::new("node")
                        .arg(&script)
                        .args([
                            endpoint.as_str(),
                            azurite::ACCOUNT,
                            azurite::ACCOUNT_KEY,
                            container,
                        ])
                        .arg(&out)
                        .arg(PARALLEL_DOWNLOADS.to_string())
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
            let unchanged = unchanged_poll(
                &source,
                &revision,
                work,
                "azblob-scratch",
                runs.max(5),
                "container",
            )?;
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

/// The `bucket-sync` scenario: SeaweedFS from the harness, filled through object_store;
/// gitopsd's bucket sync against `aws s3 sync` on the same objects.
mod bucket_sync {
    use super::*;

    const BUCKET: &str = "bench";
    const LARGE_COUNT: usize = 4;

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
                    access_key: SecretValue::Inline(Secret(seaweed::ADMIN_ACCESS_KEY.into())),
                    secret_key: SecretValue::Inline(Secret(seaweed::ADMIN_SECRET_KEY.into())),
                },
                ca_file: None,
            },
            ignore: None,
        }
    }

    /// Flux's revision of the objects under `prefix`, from the server's listing (etags
    /// without their quotes).
    fn expected_revision(store: &Arc<dyn ObjectStore>, prefix: &str) -> anyhow::Result<String> {
        let index = block_on(async {
            let mut index = BTreeMap::new();
            let mut dirs = vec![ObjectPath::from(prefix.trim_end_matches('/'))];
            while let Some(dir) = dirs.pop() {
                let listed = store.list_with_delimiter(Some(&dir)).await?;
                for meta in listed.objects {
                    let etag = meta.e_tag.unwrap_or_default();
                    let etag = etag.trim_start_matches("W/").trim_matches('"').to_string();
                    index.insert(meta.location.to_string(), etag);
                }
                dirs.extend(listed.common_prefixes);
            }
            anyhow::Ok(index)
        })?;
        Ok(flux_revision(&index))
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
            .env("AWS_ACCESS_KEY_ID", seaweed::ADMIN_ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", seaweed::ADMIN_SECRET_KEY)
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
                 bucketAccessKey: {}\n      bucketSecretKey: {}\n",
                support::free_port(),
                seaweed::ADMIN_ACCESS_KEY,
                seaweed::ADMIN_SECRET_KEY,
            ),
        )?;
        let mut command = Command::new(support::gitopsd_bin());
        command
            .args(["run", "--once", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "warn");
        Ok(command)
    }

    pub fn run(work: &Path, settings: &Settings) -> anyhow::Result<()> {
        let objects = settings.bucket_objects;
        let runs = settings.runs.clamp(1, 3);
        let large_mb = settings.bucket_large_mb;
        let weed = Seaweed::start(&[BUCKET]);
        let endpoint = weed.endpoint();
        let store = weed.admin(BUCKET);
        eprintln!(
            "uploading {objects} small objects and {LARGE_COUNT} x {large_mb} MB to SeaweedFS..."
        );
        let small = small_objects(objects, "small");
        let small_bytes: usize = small.iter().map(|(_, b)| b.len()).sum();
        upload(&store, small, 32)?;
        for i in 0..LARGE_COUNT {
            let body = random_bytes(large_mb << 20);
            upload(&store, vec![(format!("large/blob-{i}.bin"), body)], 1)?;
        }
        let aws = aws_bin();
        println!(
            "bucket: SeaweedFS {} at {endpoint}; baseline: {}",
            seaweed::weed_bin().display(),
            aws.as_ref()
                .map(|a| format!("{} s3 sync", a.display()))
                .unwrap_or_else(|| "none (pip install awscli, or set GITOPSD_AWS)".into())
        );
        for (prefix, count, bytes) in [
            ("small/", objects, small_bytes),
            ("large/", LARGE_COUNT, LARGE_COUNT * (large_mb << 20)),
        ] {
            let source = source(&endpoint, prefix);
            let expected = expected_revision(&store, prefix)?;
            let (full, revision) =
                full_sync(&source, work, "bucket-scratch", runs, count, &expected)?;
            let unchanged =
                unchanged_poll(&source, &revision, work, "bucket-scratch", runs, "bucket")?;
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

type Scenario = fn(&Path, &Settings) -> anyhow::Result<()>;

const SCENARIOS: [(&str, Scenario); 2] = [
    ("azblob-sync", azblob_sync::run),
    ("bucket-sync", bucket_sync::run),
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench = args.iter().any(|a| a == "--bench");
    let settings = if bench {
        Settings::from_env()
    } else {
        Settings::smoke()
    };
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let work = tempfile::tempdir().unwrap();
    let run = |name: &str, scenario: Scenario| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        scenario(&dir, &settings).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    };
    let selected = SCENARIOS.into_iter().filter(|(name, _)| {
        filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
    });
    if bench {
        // One at a time: the figures are wall times and the process's peak memory.
        selected.for_each(|(name, scenario)| run(name, scenario));
    } else {
        // Side by side: most of a smoke run is waiting for the servers to start.
        std::thread::scope(|s| {
            for (name, scenario) in selected {
                s.spawn(move || run(name, scenario));
            }
        });
        println!("objects: smoke run ok");
    }
}
