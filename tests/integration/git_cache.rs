//! The git cache repository stays bounded: many syncs of a changing repository, over
//! `file://` and `git://`, on both implementations, never leave more than
//! [`MAX_PACKS`] packs nor much more than that many changes' worth of objects, and the
//! history `git2` brings over `file://` (it cannot fetch shallow there) does not stay. The
//! daemon reports the cache's size in `/metrics`.

use crate::support::{free_port, gitopsd_bin, implementation, noise, text, GitDaemon, Repo};
use gitopsd::config::GitReference;
use gitopsd::source::git::cache::MAX_PACKS;
use gitopsd::source::git::GitSource;
use gitopsd::source::{FetchOutcome, Revision, Source};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Size of the file each commit rewrites: noise, so that each revision costs this much.
const CHANGE: usize = 256 << 10;

/// Files under `dir` and their total size; packs under `objects/pack`.
fn usage(dir: &Path) -> (usize, u64) {
    fn walk(dir: &Path, packs: &mut usize, bytes: &mut u64) {
        for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                walk(&path, packs, bytes);
            } else {
                *bytes += meta.len();
                if path.extension().is_some_and(|e| e == "pack") {
                    *packs += 1;
                }
            }
        }
    }
    let (mut packs, mut bytes) = (0, 0);
    walk(dir, &mut packs, &mut bytes);
    (packs, bytes)
}

/// A repository with six revisions of the big file already: history a depth-1 cache has no
/// business holding.
fn changing_repo() -> Repo {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", "kind: ConfigMap\n");
    for seed in 0..6 {
        repo.write("blob.bin", noise(CHANGE, seed));
        repo.commit(&format!("history {seed}"));
    }
    repo.push_all();
    repo
}

fn syncs_keep_the_cache_bounded(url: &str, repo: &Repo) {
    let state = tempfile::tempdir().unwrap();
    let source = GitSource {
        id: "test/cache".into(),
        url: url.into(),
        reference: GitReference::Branch("main".into()),
        implementation: implementation(),
        cache_dir: state.path().join("git/test/cache.git"),
        auth: Default::default(),
    };
    let mut previous: Option<Revision> = None;
    for round in 0..14u64 {
        if round > 0 {
            repo.write("blob.bin", noise(CHANGE, 100 + round));
            repo.commit(&format!("change {round}"));
            repo.push_all();
        }
        let scratch = state.path().join(format!("scratch-{round}"));
        fs::create_dir_all(&scratch).unwrap();
        let outcome = source
            .fetch(previous.as_ref(), scratch, &AtomicBool::new(false))
            .unwrap_or_else(|e| panic!("sync {round} of {url}: {e}"));
        let FetchOutcome::Fetched { revision, snapshot } = outcome else {
            panic!("sync {round} of {url}: nothing new fetched");
        };
        assert_eq!(revision.as_str(), format!("main@sha1:{}", repo.head()));
        // The compacted cache still gives the whole snapshot.
        let (_guard, files) = crate::support::unpack(&snapshot, &revision);
        assert_eq!(
            fs::read(files.join("blob.bin")).unwrap(),
            noise(CHANGE, if round == 0 { 5 } else { 100 + round }),
            "sync {round} of {url}"
        );
        let (packs, bytes) = usage(&source.cache_dir);
        eprintln!("sync {round} of {url}: {packs} packs, {bytes} bytes");
        assert!(
            packs <= MAX_PACKS,
            "sync {round} of {url}: {packs} packs in the cache"
        );
        // Each pack holds about one change; the rest (refs, config, index) is small.
        let bound = (packs as u64 + 1) * (CHANGE as u64 + (32 << 10));
        assert!(
            bytes <= bound,
            "sync {round} of {url}: the cache holds {bytes} bytes in {packs} packs (bound {bound})"
        );
        assert!(
            source.cache_dir.join("shallow").is_file(),
            "sync {round} of {url}: the cache lost its shallow boundary"
        );
        if round == 1 {
            // The second revision came on top of the first, not as a rebuilt cache: the
            // fetch was incremental and the cache was left as it was.
            assert_eq!(packs, 2, "sync 1 of {url}");
        }
        previous = Some(revision);
    }
}

fn over_file() {
    let repo = changing_repo();
    syncs_keep_the_cache_bounded(&repo.bare().file_url(), &repo);
}

fn over_git_daemon() {
    let repo = changing_repo();
    let (_daemon, url) = GitDaemon::serving(repo.bare());
    syncs_keep_the_cache_bounded(&url, &repo);
}

on_both!(over_file, over_git_daemon);

/// `/metrics` has the cache's size, as found on disk.
#[test]
fn metrics_report_the_cache_size() {
    let repo = changing_repo();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("gitopsd.yaml");
    fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n  \
             - name: fleet\n    source:\n      kind: git\n      url: {}\n      interval: 1h\n    \
             kustomizations: []\n",
            repo.bare().file_url()
        ),
    )
    .unwrap();
    let log = dir.path().join("gitopsd.log");
    let mut child = Command::new(gitopsd_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("GITOPSD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let cache = dir.path().join("state/git/default/fleet.git");
    let family = "gitopsd_source_git_cache_bytes";
    let deadline = Instant::now() + Duration::from_secs(60);
    let reported = loop {
        let metrics = ureq::get(&format!("http://127.0.0.1:{port}/metrics"))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .unwrap_or_default();
        let ready = metrics
            .lines()
            .any(|l| l.starts_with("gitopsd_source_ready{") && l.ends_with(" 1"));
        let value = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains("name=\"fleet\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
        if let (true, Some(value)) = (ready, value) {
            break value;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "no {family} for a ready source:\n{metrics}\n{}",
                text(&fs::read(&log).unwrap_or_default())
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (_, on_disk) = usage(&cache);
    let _ = child.kill();
    let _ = child.wait();
    assert!(on_disk > CHANGE as u64, "{on_disk}");
    assert_eq!(reported, on_disk);
}
