//! `gitopsd bench`: whole-system throughput, each figure next to a baseline measured in the
//! same run on the same data (the git CLI, `tar | gzip`), so that the ratio means something on
//! a noisy machine.
//!
//! The object-store sources (`azblob` against Azurite, `bucket` against SeaweedFS) are
//! measured by `cargo bench --bench objects` (benches/objects.rs), on the test harness's servers.

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
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Fetch at depth 1 + pack, vs `git clone --depth 1` + `tar | gzip -6`.
    FetchPack,
    /// A poll of an unchanged remote (ls-refs only), vs `git ls-remote`.
    UnchangedPoll,
    /// Resident memory of an idle daemon with 10 sources.
    IdleMemory,
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
            crate::reconcile::snapshot::store(
                &store, &snapshot, "git", "bench", "repo", &revision, None,
            )?;
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

/// Median wall time of `runs` runs. (Shared with the cargo benches in benches/.)
pub fn measure(runs: usize, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

/// One result line: gitopsd's time, the baseline's, and the ratio.
pub fn report(what: &str, ours: Duration, baseline_name: &str, baseline: Duration) {
    println!(
        "{what}: gitopsd {:.1} ms, {baseline_name} {:.1} ms, ratio {:.2}x",
        ours.as_secs_f64() * 1e3,
        baseline.as_secs_f64() * 1e3,
        baseline.as_secs_f64() / ours.as_secs_f64()
    );
}

/// `work/name`, emptied.
pub fn fresh_dir(work: &Path, name: &str) -> anyhow::Result<PathBuf> {
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
