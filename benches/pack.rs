//! Packing a ~100 MB repository-like tree: `pack_dir` against `tar -c | gzip -6`.
//!
//! The tree is generated once, deterministically: thousands of small Kubernetes-style YAML
//! files (templated text with random names, numbers and some base64 payloads) and a few dozen
//! larger files ranging from incompressible (media) through structured records to log-like
//! text. Both contenders read it from the page cache and discard the output. Before the timed
//! runs, the CPU time of each contender is printed too: on a shared machine it is a steadier
//! comparison than wall time.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gitopsd::artifact::ignore::IgnoreRules;
use gitopsd::artifact::pack::pack_dir;
use std::fmt::Write as _;
use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const TARGET_BYTES: u64 = 100 << 20;
const YAML_FILES: usize = 8_000;

/// SplitMix64: tiny, fast, and the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn word<'a>(&mut self, words: &[&'a str]) -> &'a str {
        words[self.below(words.len() as u64) as usize]
    }
    fn fill(&mut self, out: &mut Vec<u8>, len: usize) {
        while out.len() + 8 <= len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        while out.len() < len {
            out.push(self.next() as u8);
        }
    }
}

const WORDS: &[&str] = &[
    "api",
    "web",
    "worker",
    "cache",
    "db",
    "queue",
    "auth",
    "billing",
    "search",
    "gateway",
    "metrics",
    "ingest",
    "notifier",
    "scheduler",
    "frontend",
    "backend",
    "edge",
    "sync",
];
const KINDS: &[&str] = &[
    "Deployment",
    "Service",
    "ConfigMap",
    "HorizontalPodAutoscaler",
    "Ingress",
    "ServiceAccount",
    "NetworkPolicy",
    "PodDisruptionBudget",
];
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn yaml(rng: &mut Rng) -> String {
    let kind = rng.word(KINDS);
    let app = format!("{}-{}", rng.word(WORDS), rng.word(WORDS));
    let mut s = String::with_capacity(4096);
    let _ = write!(
        s,
        "apiVersion: apps/v1\nkind: {kind}\nmetadata:\n  name: {app}\n  namespace: team-{}\n  labels:\n    app.kubernetes.io/name: {app}\n    app.kubernetes.io/part-of: {}\n    app.kubernetes.io/version: \"{}.{}.{}\"\n",
        rng.below(40),
        rng.word(WORDS),
        rng.below(5),
        rng.below(30),
        rng.below(100)
    );
    let _ = write!(
        s,
        "spec:\n  replicas: {}\n  template:\n    spec:\n      containers:\n",
        1 + rng.below(6)
    );
    for c in 0..1 + rng.below(4) {
        let _ = write!(
            s,
            "        - name: {}-{c}\n          image: registry.example.com/{}/{}:v{}.{}.{}\n          resources:\n            requests: {{ cpu: {}m, memory: {}Mi }}\n            limits: {{ cpu: {}m, memory: {}Mi }}\n          env:\n",
            rng.word(WORDS),
            rng.word(WORDS),
            rng.word(WORDS),
            rng.below(3),
            rng.below(20),
            rng.below(50),
            50 * (1 + rng.below(20)),
            64 * (1 + rng.below(32)),
            100 * (1 + rng.below(20)),
            128 * (1 + rng.below(32)),
        );
        for _ in 0..rng.below(12) {
            let _ = write!(
                s,
                "            - name: {}_{}_{}\n              value: \"{}\"\n",
                rng.word(WORDS).to_uppercase(),
                rng.word(WORDS).to_uppercase(),
                rng.below(1000),
                rng.next()
            );
        }
    }
    // Some manifests carry opaque payloads (certificates, embedded config).
    if rng.below(4) == 0 {
        s.push_str("data:\n  payload: |\n");
        for _ in 0..1 + rng.below(60) {
            s.push_str("    ");
            for _ in 0..76 {
                s.push(B64[rng.below(64) as usize] as char);
            }
            s.push('\n');
        }
    }
    s
}

/// A larger file: `style` 0 is incompressible, 1 structured records, 2 log-like text.
fn blob(rng: &mut Rng, style: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    match style {
        0 => rng.fill(&mut out, len),
        1 => {
            while out.len() < len {
                out.extend_from_slice(b"REC\x01");
                out.extend_from_slice(&(rng.below(1 << 20) as u32).to_le_bytes());
                out.extend_from_slice(rng.word(WORDS).as_bytes());
                out.extend_from_slice(&[0u8; 12]);
                let mut random = Vec::new();
                let n = 8 + rng.below(24) as usize;
                rng.fill(&mut random, n);
                out.extend_from_slice(&random);
            }
        }
        _ => {
            while out.len() < len {
                let line = format!(
                    "2024-0{}-{:02}T{:02}:{:02}:{:02}Z level={} component={} msg=\"{} {} done\" duration_ms={} id={:016x}\n",
                    1 + rng.below(9),
                    1 + rng.below(28),
                    rng.below(24),
                    rng.below(60),
                    rng.below(60),
                    ["info", "warn", "debug", "error"][rng.below(4) as usize],
                    rng.word(WORDS),
                    rng.word(WORDS),
                    rng.word(WORDS),
                    rng.below(5000),
                    rng.next()
                );
                out.extend_from_slice(line.as_bytes());
            }
        }
    }
    out.truncate(len);
    out
}

fn build_tree(root: &Path) -> u64 {
    let mut rng = Rng(0x6769_746f_7073_6421);
    let mut total = 0u64;
    for i in 0..YAML_FILES {
        let dir = root.join(format!(
            "apps/team-{:02}/{}-{:03}",
            i % 40,
            WORDS[i % WORDS.len()],
            i / 40
        ));
        fs::create_dir_all(&dir).unwrap();
        let text = yaml(&mut rng);
        total += text.len() as u64;
        fs::write(
            dir.join(format!("{}.yaml", KINDS[i % KINDS.len()].to_lowercase())),
            text,
        )
        .unwrap();
    }
    let names = [
        "assets/media-{}.webp",
        "data/records-{}.db",
        "logs/sample-{}.log",
    ];
    let mut n = 0;
    while total < TARGET_BYTES {
        let style = n % 3;
        let len = (512 << 10) + rng.below(4 << 20) as usize;
        let len = len.min((TARGET_BYTES - total) as usize).max(1);
        let path = root.join(names[style as usize].replace("{}", &n.to_string()));
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, blob(&mut rng, style, len)).unwrap();
        total += len as u64;
        n += 1;
    }
    total
}

fn pack_100mb(c: &mut Criterion) {
    let tree = tempfile::tempdir().unwrap();
    let bytes = build_tree(tree.path());
    let rules = IgnoreRules::for_git(tree.path(), None).unwrap();
    let packed = pack_dir(tree.path(), &rules, std::io::sink()).unwrap();
    eprintln!(
        "tree: {bytes} bytes in {YAML_FILES}+ files; artifact: {} bytes ({:.1}%)",
        packed.size,
        100.0 * packed.size as f64 / bytes as f64
    );

    report_cpu_time(tree.path(), &rules);

    let mut group = c.benchmark_group("pack_100mb");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("gitopsd_pack_dir", |b| {
        b.iter(|| black_box(pack_dir(tree.path(), &rules, std::io::sink()).unwrap()))
    });
    group.bench_function("tar_gzip_6", |b| b.iter(|| baseline(tree.path())));
    group.finish();
}

fn baseline(dir: &Path) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(r#"tar -c -C "$1" . | gzip -6 > /dev/null"#)
        .arg("sh")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
}

/// CPU seconds (user + system) of this process's threads and of its waited-for children,
/// from /proc/self/stat; `None` off Linux.
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<f64> = stat
        .rsplit_once(')')?
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime, stime, cutime, cstime are fields 14-17; USER_HZ is 100 on Linux.
    let ticks = |i: usize| fields.get(i - 3).copied().unwrap_or(0.0) / 100.0;
    Some((ticks(14) + ticks(15), ticks(16) + ticks(17)))
}

/// Wall time depends on what else the machine runs; CPU time much less so. Print both
/// contenders' CPU cost per run as a load-independent comparison.
fn report_cpu_time(dir: &Path, rules: &IgnoreRules) {
    const RUNS: u32 = 3;
    let Some((own_before, _)) = cpu_seconds() else {
        return;
    };
    for _ in 0..RUNS {
        black_box(pack_dir(dir, rules, std::io::sink()).unwrap());
    }
    let (own_after, children_before) = cpu_seconds().unwrap();
    for _ in 0..RUNS {
        baseline(dir);
    }
    let (_, children_after) = cpu_seconds().unwrap();
    let ours = (own_after - own_before) / f64::from(RUNS);
    let theirs = (children_after - children_before) / f64::from(RUNS);
    eprintln!(
        "cpu time per run: pack_dir {ours:.2} s, tar | gzip -6 {theirs:.2} s ({:.2}x)",
        theirs / ours
    );
}

criterion_group!(benches, pack_100mb);
criterion_main!(benches);
