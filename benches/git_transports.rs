//! Fetch + pack over smart HTTP and over SSH: gix against git2 against the git CLI, on a small
//! repository and on one with ~50 MB of history. These are the figures behind
//! `gitImplementation: auto` (README, Performance).
//!
//! The servers are the test harness's (nginx + fcgiwrap + `git http-backend`, and OpenSSH's
//! sshd), so every contender talks to the same real server over loopback. Each contender
//! starts from an empty state dir every run, as a new configuration would: the work measured
//! is ref discovery, a depth-1 fetch, checkout and the deterministic tar.gz. The git CLI does
//! the same with `git clone --depth 1` and `tar | gzip -6`. The unchanged poll (the daemon's
//! most frequent operation) is measured too, against `git ls-remote`.
//!
//! `cargo bench --bench git_transports` prints the medians and ratios. Under `cargo test`
//! (no `--bench` argument) it runs each contender once on the small repository instead and
//! checks that gix and git2 produce the same revision and byte-identical artifacts over both
//! transports, so the bench cannot rot unnoticed.

// The integration tests' harness; a bench uses only part of it.
#[path = "../tests/integration/support/mod.rs"]
#[allow(dead_code, unused_imports, unused_macros)]
mod support;

use gitopsd::artifact::store::ArtifactStore;
use gitopsd::cli::bench::{fresh_dir, measure};
use gitopsd::config::{GitImplementation, GitReference};
use gitopsd::source::git::auth::{GitAuthSettings, SecretBytes, SecretSource, SourceAuth};
use gitopsd::source::git::GitSource;
use gitopsd::source::{FetchOutcome, Revision, Source};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use support::{keygen, HttpGitServer, Repo, SshServer};

/// SplitMix64: the same bytes on every machine, so runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// A GitOps-style tree of `manifests` small YAML files, then `commits` commits that each
/// rewrite `churn` bytes of binary data in place and add `growth` new bytes: the history is
/// about `commits * (churn + growth)` bytes while the tip holds only the growth and the last
/// churn, which is what makes a depth-1 fetch worth having.
fn make_repo(name: &str, manifests: usize, commits: usize, churn: usize, growth: usize) -> Repo {
    let repo = Repo::named(name);
    let mut rng = Rng(manifests as u64 * 31 + commits as u64);
    for i in 0..manifests {
        let body = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-{i}\n  namespace: team-{}\ndata:\n  replicas: \"{}\"\n  image: registry.local/app-{i}:{}\n",
            i % 17,
            rng.next() % 9 + 1,
            rng.next() % 1000,
        );
        repo.write(format!("apps/team-{}/cm-{i}.yaml", i % 17), body);
    }
    repo.commit("manifests");
    for c in 0..commits {
        if churn > 0 {
            repo.write("data/churn.bin", rng.bytes(churn));
        }
        if growth > 0 {
            repo.write(format!("data/grow-{c}.bin"), rng.bytes(growth));
        }
        repo.commit(&format!("data {c}"));
    }
    repo.push_all();
    repo
}

/// `count` refs `refs/pull/<n>/head`, all at `main`, written straight into the bare
/// repository's packed-refs.
fn add_pull_refs(repo: &Repo, count: usize) {
    let head = repo.head();
    let packed = repo.bare().path().join("packed-refs");
    let mut text = fs::read_to_string(&packed).unwrap_or_default();
    for n in 0..count {
        text.push_str(&format!("{head} refs/pull/{n}/head\n"));
    }
    fs::write(packed, text).unwrap();
}

/// How a contender reaches the server.
struct Transport {
    name: &'static str,
    url: String,
    auth: GitAuthSettings,
    /// Environment for the git CLI (`GIT_SSH_COMMAND` with the same key and known hosts).
    cli_env: Vec<(String, String)>,
}

impl Transport {
    /// A source on `main` with its cache repository in `state`.
    fn source(&self, state: &Path, implementation: GitImplementation) -> GitSource {
        GitSource {
            id: "bench/repo".into(),
            url: self.url.clone(),
            reference: GitReference::Branch("main".into()),
            implementation,
            cache_dir: state.join("cache.git"),
            auth: SourceAuth {
                settings: self.auth.clone(),
                generated_key: None,
            },
        }
    }
}

fn fetch_and_pack(
    work: &Path,
    transport: &Transport,
    implementation: GitImplementation,
) -> (Revision, PathBuf) {
    let state = fresh_dir(work, "state").unwrap();
    let source = transport.source(&state, implementation);
    let scratch = state.join("snapshot");
    fs::create_dir_all(&scratch).unwrap();
    let outcome = source
        .fetch(None, scratch, &AtomicBool::new(false))
        .unwrap_or_else(|e| panic!("{implementation:?} over {}: {e}", transport.name));
    let FetchOutcome::Fetched { revision, snapshot } = outcome else {
        panic!("an empty state dir came back unchanged");
    };
    let store = ArtifactStore::new(state.join("artifacts"));
    let artifact = gitopsd::reconcile::snapshot::store(
        &store, &snapshot, "git", "bench", "repo", &revision, None,
    )
    .unwrap();
    // Keep the artifact outside the state dir, which the next run wipes.
    let kept = work.join(format!("{implementation:?}-{}.tar.gz", transport.name));
    fs::rename(&artifact.path, &kept).unwrap();
    (revision, kept)
}

fn cli_fetch_and_pack(work: &Path, transport: &Transport) {
    let dir = fresh_dir(work, "cli").unwrap();
    let script = format!(
        "git clone -q --depth 1 --branch main {url} {d}/c && tar -c -C {d}/c --exclude=.git . | gzip -6 > {d}/out.tar.gz",
        url = transport.url,
        d = dir.display()
    );
    sh(&script, &transport.cli_env);
}

/// An unchanged poll: the revision is known, the remote has not moved.
fn poll(
    work: &Path,
    transport: &Transport,
    implementation: GitImplementation,
    runs: usize,
) -> Duration {
    let state = fresh_dir(work, "poll").unwrap();
    let source = transport.source(&state, implementation);
    let scratch = state.join("snapshot");
    fs::create_dir_all(&scratch).unwrap();
    let FetchOutcome::Fetched { revision, .. } = source
        .fetch(None, scratch, &AtomicBool::new(false))
        .unwrap()
    else {
        panic!("expected a fetch");
    };
    measure(runs, || {
        let outcome = source
            .fetch(
                Some(&revision),
                state.join("unused"),
                &AtomicBool::new(false),
            )
            .unwrap();
        assert!(matches!(outcome, FetchOutcome::Unchanged));
        Ok(())
    })
    .unwrap()
}

fn cli_poll(transport: &Transport, runs: usize) -> Duration {
    let script = format!(
        "git ls-remote {} refs/heads/main > /dev/null",
        transport.url
    );
    measure(runs, || {
        sh(&script, &transport.cli_env);
        Ok(())
    })
    .unwrap()
}

fn sh(script: &str, env: &[(String, String)]) {
    let status = Command::new("sh")
        .arg("-c")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .status()
        .unwrap();
    assert!(status.success(), "baseline command failed: {script}");
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

/// The two transports, both serving `repo`; the servers live as long as the returned guards.
fn transports(repo: &Repo, keys: &Path) -> (HttpGitServer, SshServer, Vec<Transport>) {
    let http = HttpGitServer::start();
    let http_url = http.serve(repo.bare());
    let ssh = SshServer::start();
    let key = keys.join("id_ed25519");
    if !key.exists() {
        keygen(&key, "ed25519", &[]);
    }
    ssh.authorize(&fs::read_to_string(keys.join("id_ed25519.pub")).unwrap());
    let known_hosts = keys.join(format!("known_hosts-{}", ssh.port()));
    fs::write(&known_hosts, format!("{}\n", ssh.known_hosts_line())).unwrap();
    let ssh_auth = GitAuthSettings {
        ssh_private_key: Some(SecretSource::File(key.clone())),
        known_hosts: Some(SecretSource::Inline(SecretBytes::new(
            fs::read(&known_hosts).unwrap(),
        ))),
        ..Default::default()
    };
    let ssh_command = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        key.display(),
        known_hosts.display()
    );
    let transports = vec![
        Transport {
            name: "http",
            url: http_url,
            auth: GitAuthSettings::default(),
            cli_env: Vec::new(),
        },
        Transport {
            name: "ssh",
            url: ssh.url(repo.bare()),
            auth: ssh_auth,
            cli_env: vec![("GIT_SSH_COMMAND".into(), ssh_command)],
        },
    ];
    (http, ssh, transports)
}

const IMPLEMENTATIONS: [GitImplementation; 2] = [GitImplementation::Gix, GitImplementation::Git2];

/// `cargo test`: one run of everything on a small repository, and the equivalence checks.
fn smoke() {
    let work = tempfile::tempdir().unwrap();
    let repo = make_repo("smoke", 40, 3, 4096, 4096);
    let (_http, _ssh, transports) = transports(&repo, work.path());
    let head = repo.head();
    let mut digests = Vec::new();
    for transport in &transports {
        for implementation in IMPLEMENTATIONS {
            let (revision, artifact) = fetch_and_pack(work.path(), transport, implementation);
            assert_eq!(revision.to_string(), format!("main@sha1:{head}"));
            digests.push((
                format!("{implementation:?} over {}", transport.name),
                support::sha256_file(&artifact),
            ));
            poll(work.path(), transport, implementation, 1);
        }
        cli_fetch_and_pack(work.path(), transport);
        cli_poll(transport, 1);
    }
    for (who, digest) in &digests[1..] {
        assert_eq!(
            digest, &digests[0].1,
            "{who} packed other bytes than {}",
            digests[0].0
        );
    }
    println!(
        "git_transports: smoke run ok, {} identical artifacts",
        digests.len()
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        smoke();
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let cases = [
        // ~1 MB: a typical fleet repository.
        ("small", make_repo("small", 400, 5, 64 << 10, 64 << 10), 7),
        // ~50 MB of history (50 commits x 1 MB), ~25 MB at the tip.
        (
            "large",
            make_repo("large", 2000, 50, 512 << 10, 512 << 10),
            3,
        ),
    ];
    println!("| repository | transport | gix | git2 | git CLI | CLI/gix | CLI/git2 |");
    println!("|---|---|---|---|---|---|---|");
    for (label, repo, runs) in &cases {
        let (_http, _ssh, transports) = transports(repo, work.path());
        for transport in &transports {
            let [gix, git2] = IMPLEMENTATIONS.map(|implementation| {
                measure(*runs, || {
                    fetch_and_pack(work.path(), transport, implementation);
                    Ok(())
                })
                .unwrap()
            });
            let cli = measure(*runs, || {
                cli_fetch_and_pack(work.path(), transport);
                Ok(())
            })
            .unwrap();
            println!(
                "| {label} | {} | {} | {} | {} | {:.2}x | {:.2}x |",
                transport.name,
                ms(gix),
                ms(git2),
                ms(cli),
                cli.as_secs_f64() / gix.as_secs_f64(),
                cli.as_secs_f64() / git2.as_secs_f64(),
            );
        }
    }
    // Polls against the small repository as it is, and with 5,000 pull-request refs beside
    // `main`, as a busy GitHub repository has: protocol v2 lets the client ask for `main`
    // alone, v0 (libgit2's only protocol) sends every ref at each poll.
    let many = make_repo("refs", 400, 5, 64 << 10, 64 << 10);
    add_pull_refs(&many, 5_000);
    println!();
    println!("| unchanged poll | gix | git2 | git ls-remote | CLI/gix | CLI/git2 |");
    println!("|---|---|---|---|---|---|");
    for (label, repo) in [("", &cases[0].1), (", 5,000 refs", &many)] {
        let (_http, _ssh, transports) = transports(repo, work.path());
        for transport in &transports {
            let [gix, git2] = IMPLEMENTATIONS
                .map(|implementation| poll(work.path(), transport, implementation, 21));
            let cli = cli_poll(transport, 21);
            println!(
                "| {}{label} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}x | {:.1}x |",
                transport.name,
                gix.as_secs_f64() * 1e3,
                git2.as_secs_f64() * 1e3,
                cli.as_secs_f64() * 1e3,
                cli.as_secs_f64() / gix.as_secs_f64(),
                cli.as_secs_f64() / git2.as_secs_f64(),
            );
        }
    }
}
