//! Every ref kind, semver rule and revision string, over file://, git:// and smart HTTP,
//! against real repositories built with the git CLI and real servers.

use crate::support::{git, GitDaemon, HttpGitServer, Repo};
use gitopsd::config::{GitImplementation, GitReference};
use gitopsd::source::git::GitSource;
use gitopsd::source::{FetchOutcome, Revision, Source};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// The shas of the fixture's commits, in order.
struct History {
    repo: Repo,
    c1: String,
    c2: String,
    c3: String,
    c4: String,
}

/// main: c1 (v1.0.0) → c2 (annotated v1.1.0, v2.0.0-rc.1) → c3 (v1.2.0+build.1,
/// refs/pull/1/head) → c4 (v1.2.0+build.2); branch dev at c2.
fn history() -> History {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", "kind: ConfigMap\n");
    let c1 = repo.commit("c1");
    repo.tag("v1.0.0");
    repo.write("deploy/app.yaml", "kind: ConfigMap # 2\n");
    let c2 = repo.commit("c2");
    repo.tag_annotated("v1.1.0", "release 1.1.0");
    repo.tag("v2.0.0-rc.1");
    repo.branch("dev");
    repo.write("deploy/app.yaml", "kind: ConfigMap # 3\n");
    let c3 = repo.commit("c3");
    repo.tag("v1.2.0+build.1");
    repo.git(["update-ref", "refs/pull/1/head", &c3]);
    repo.write("deploy/app.yaml", "kind: ConfigMap # 4\n");
    let c4 = repo.commit("c4");
    repo.tag("v1.2.0+build.2");
    // Not semver (two parts), never selected.
    repo.tag("v9.9");
    repo.push_all();
    History {
        repo,
        c1,
        c2,
        c3,
        c4,
    }
}

/// Keeps the servers alive while a test uses their URLs.
const IMPLEMENTATIONS: [GitImplementation; 2] = [GitImplementation::Gix, GitImplementation::Git2];

struct Served {
    _daemon: GitDaemon,
    _http: HttpGitServer,
    urls: Vec<(String, String, GitImplementation)>,
}

fn serve(repo: &Repo) -> Served {
    let (daemon, git_url) = GitDaemon::serving(repo.bare());
    let (http, http_url) = HttpGitServer::serving(repo.bare());
    Served {
        _daemon: daemon,
        _http: http,
        // Every transport with both git implementations: they must agree on everything.
        urls: [
            ("file", repo.bare().file_url()),
            ("git", git_url),
            ("http", http_url),
        ]
        .into_iter()
        .flat_map(|(transport, url)| {
            IMPLEMENTATIONS.map(|imp| (format!("{transport} with {imp:?}"), url.clone(), imp))
        })
        .collect(),
    }
}

struct Fetcher {
    state: tempfile::TempDir,
    source: GitSource,
}

impl Fetcher {
    fn new(url: &str, reference: GitReference, implementation: GitImplementation) -> Fetcher {
        let state = tempfile::tempdir().unwrap();
        let source = GitSource {
            id: "test/repo".into(),
            url: url.into(),
            reference,
            implementation,
            cache_dir: state.path().join("cache.git"),
            auth: Default::default(),
        };
        Fetcher { state, source }
    }

    fn fetch(&self, previous: Option<&Revision>) -> Result<FetchOutcome, String> {
        let scratch = self.state.path().join(format!("snap-{}", next_id()));
        std::fs::create_dir_all(&scratch).unwrap();
        self.source
            .fetch(previous, scratch, &AtomicBool::new(false))
            .map_err(|e| e.to_string())
    }

    /// The revision and its files (extracted from the artifact; the guard keeps them).
    fn fetched(&self) -> (Revision, (tempfile::TempDir, PathBuf)) {
        match self.fetch(None) {
            Ok(FetchOutcome::Fetched { revision, snapshot }) => {
                let files = crate::support::unpack(&snapshot, &revision);
                (revision, files)
            }
            other => panic!("expected a fetch, got {other:?}"),
        }
    }

    fn cache(&self) -> &Path {
        &self.source.cache_dir
    }
}

fn next_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// Fetch `reference` over every transport and check the revision string and the content.
fn assert_revision(h: &History, reference: GitReference, expected: &str, content_commit: &str) {
    let served = serve(&h.repo);
    let want_content = git(
        h.repo.path(),
        ["show", &format!("{content_commit}:deploy/app.yaml")],
    );
    for (transport, url, imp) in &served.urls {
        let f = Fetcher::new(url, reference.clone(), *imp);
        let (revision, (_guard, dir)) = f.fetched();
        assert_eq!(revision.as_str(), expected, "over {transport}");
        let got = std::fs::read_to_string(dir.join("deploy/app.yaml")).unwrap();
        assert_eq!(got.trim_end(), want_content, "content over {transport}");
    }
}

#[test]
fn branch_revision_is_branch_at_sha() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Branch("main".into()),
        &format!("main@sha1:{}", h.c4),
        &h.c4,
    );
    assert_revision(
        &h,
        GitReference::Branch("dev".into()),
        &format!("dev@sha1:{}", h.c2),
        &h.c2,
    );
}

#[test]
fn no_ref_follows_the_remote_head_branch() {
    let h = history();
    // Point the served repository's HEAD at dev: gitopsd must follow it, not assume master.
    h.repo
        .bare()
        .git(["symbolic-ref", "HEAD", "refs/heads/dev"]);
    assert_revision(
        &h,
        GitReference::RemoteHead,
        &format!("dev@sha1:{}", h.c2),
        &h.c2,
    );
}

#[test]
fn lightweight_and_annotated_tags_give_the_tag_and_its_commit() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Tag("v1.0.0".into()),
        &format!("v1.0.0@sha1:{}", h.c1),
        &h.c1,
    );
    // An annotated tag's revision names the commit, not the tag object.
    assert_revision(
        &h,
        GitReference::Tag("v1.1.0".into()),
        &format!("v1.1.0@sha1:{}", h.c2),
        &h.c2,
    );
}

#[test]
fn semver_range_picks_the_highest_release() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Semver(">=1.0.0 <1.2.0".into()),
        &format!("v1.1.0@sha1:{}", h.c2),
        &h.c2,
    );
    assert_revision(
        &h,
        GitReference::Semver("~1.0".into()),
        &format!("v1.0.0@sha1:{}", h.c1),
        &h.c1,
    );
}

#[test]
fn semver_prerelease_only_when_the_range_names_one() {
    let h = history();
    // Without a prerelease in the range, v2.0.0-rc.1 is invisible.
    assert_revision(
        &h,
        GitReference::Semver(">=1.1.0 <1.2.0 || >=2.0.0".into()),
        &format!("v1.1.0@sha1:{}", h.c2),
        &h.c2,
    );
    assert_revision(
        &h,
        GitReference::Semver(">=2.0.0-0".into()),
        &format!("v2.0.0-rc.1@sha1:{}", h.c2),
        &h.c2,
    );
}

#[test]
fn semver_tie_on_build_metadata_goes_to_the_newer_commit() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Semver("1.2.x".into()),
        &format!("v1.2.0+build.2@sha1:{}", h.c4),
        &h.c4,
    );
}

#[test]
fn commit_alone_and_commit_on_a_branch() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Commit {
            sha: h.c2.clone(),
            branch: None,
        },
        &format!("sha1:{}", h.c2),
        &h.c2,
    );
    assert_revision(
        &h,
        GitReference::Commit {
            sha: h.c3.clone(),
            branch: Some("main".into()),
        },
        &format!("main@sha1:{}", h.c3),
        &h.c3,
    );
}

#[test]
fn full_ref_name() {
    let h = history();
    assert_revision(
        &h,
        GitReference::Name("refs/pull/1/head".into()),
        &format!("refs/pull/1/head@sha1:{}", h.c3),
        &h.c3,
    );
}

#[test]
fn ref_precedence_commit_over_name_over_tag_over_semver_over_branch() {
    // Precedence is applied when the config is loaded; check the loader picks as Flux does.
    let dir = tempfile::tempdir().unwrap();
    let sha = "a".repeat(40);
    let cases = [
        (format!("{{ branch: main, tag: v1.0.0, semver: '1.x', name: refs/pull/1/head, commit: {sha} }}"), GitReference::Commit { sha: sha.clone(), branch: Some("main".into()) }),
        ("{ branch: main, tag: v1.0.0, semver: '1.x', name: refs/pull/1/head }".to_string(), GitReference::Name("refs/pull/1/head".into())),
        ("{ branch: main, tag: v1.0.0, semver: '1.x' }".to_string(), GitReference::Tag("v1.0.0".into())),
        ("{ branch: main, semver: '1.x' }".to_string(), GitReference::Semver("1.x".into())),
        ("{ branch: main }".to_string(), GitReference::Branch("main".into())),
    ];
    for (yaml_ref, expected) in cases {
        let text = format!("configurations:\n  - name: a\n    source: {{ kind: git, url: 'git://127.0.0.1/r.git', ref: {yaml_ref} }}\n");
        let settings = gitopsd::config::load_str(&text, Path::new("t.yaml"), dir.path()).unwrap();
        assert_eq!(
            settings.configurations[0].source.git().unwrap().reference,
            expected,
            "{yaml_ref}"
        );
    }
}

#[test]
fn fetch_is_shallow_over_every_transport() {
    let h = history();
    let served = serve(&h.repo);
    for (transport, url, imp) in &served.urls {
        if *imp == GitImplementation::Git2 && url.starts_with("file://") {
            // libgit2's in-process local transport has no shallow fetch (documented).
            continue;
        }
        let f = Fetcher::new(url, GitReference::Branch("main".into()), *imp);
        f.fetched();
        let count = git(f.cache(), ["rev-list", "--count", "--all"]);
        assert_eq!(
            count, "1",
            "only the tip commit is fetched over {transport}"
        );
        assert!(
            f.cache().join("shallow").is_file(),
            "cache is shallow over {transport}"
        );
    }
}

#[test]
fn unchanged_remote_means_no_fetch_and_a_new_commit_is_fetched() {
    let h = history();
    let served = serve(&h.repo);
    for (transport, url, imp) in &served.urls {
        let f = Fetcher::new(url, GitReference::Branch("main".into()), *imp);
        let (revision, _) = f.fetched();
        let packs_before = pack_files(f.cache());
        match f.fetch(Some(&revision)).unwrap() {
            FetchOutcome::Unchanged => {}
            other => panic!("expected unchanged over {transport}, got {other:?}"),
        }
        assert_eq!(
            pack_files(f.cache()),
            packs_before,
            "no pack received over {transport}"
        );
    }
    h.repo.write("deploy/app.yaml", "kind: ConfigMap # 5\n");
    let c5 = h.repo.commit("c5");
    h.repo.push_all();
    for (transport, url, imp) in &served.urls {
        let f = Fetcher::new(url, GitReference::Branch("main".into()), *imp);
        let old = Revision(format!("main@sha1:{}", h.c4));
        match f.fetch(Some(&old)).unwrap() {
            FetchOutcome::Fetched { revision, .. } => {
                assert_eq!(
                    revision.as_str(),
                    format!("main@sha1:{c5}"),
                    "over {transport}"
                )
            }
            other => panic!("expected a fetch over {transport}, got {other:?}"),
        }
    }
}

#[test]
fn a_pinned_commit_already_fetched_needs_no_network() {
    let h = history();
    // An unreachable URL: if gitopsd talked to it, the fetch would fail.
    let f = Fetcher::new(
        "git://127.0.0.1:1/nothing.git",
        GitReference::Commit {
            sha: h.c1.clone(),
            branch: None,
        },
        GitImplementation::Auto,
    );
    let previous = Revision(format!("sha1:{}", h.c1));
    assert!(matches!(
        f.fetch(Some(&previous)).unwrap(),
        FetchOutcome::Unchanged
    ));
}

fn pack_files(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("objects/pack"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Fetch, expecting an error; return its text.
fn fetch_error(url: &str, reference: GitReference, imp: GitImplementation) -> String {
    match Fetcher::new(url, reference, imp).fetch(None) {
        Err(e) => e,
        Ok(o) => panic!("expected an error from {url}, got {o:?}"),
    }
}

#[test]
fn missing_refs_say_which_ref_and_url() {
    let h = history();
    let served = serve(&h.repo);
    for (transport, url, imp) in &served.urls {
        let e = fetch_error(url, GitReference::Branch("nope".into()), *imp);
        assert_eq!(
            e,
            format!("branch 'nope' not found in {url}"),
            "over {transport}"
        );
        let e = fetch_error(url, GitReference::Tag("v0.0.1".into()), *imp);
        assert_eq!(
            e,
            format!("tag 'v0.0.1' not found in {url}"),
            "over {transport}"
        );
        let e = fetch_error(url, GitReference::Semver(">=5.0.0".into()), *imp);
        assert_eq!(
            e,
            format!("no tag in {url} matches semver range '>=5.0.0'"),
            "over {transport}"
        );
        let missing = "0123456789abcdef0123456789abcdef01234567";
        let e = fetch_error(
            url,
            GitReference::Commit {
                sha: missing.into(),
                branch: None,
            },
            *imp,
        );
        assert!(
            e.contains(missing) && e.contains(url.as_str()),
            "over {transport}: {e}"
        );
        let e = fetch_error(
            url,
            GitReference::Commit {
                sha: missing.into(),
                branch: Some("main".into()),
            },
            *imp,
        );
        assert!(
            e.contains(missing) && e.contains("main"),
            "over {transport}: {e}"
        );
    }
}

#[test]
fn unreachable_server_and_non_repository_are_clear_errors() {
    for imp in IMPLEMENTATIONS {
        let port = crate::support::free_port();
        let url = format!("git://127.0.0.1:{port}/repo.git");
        let e = fetch_error(&url, GitReference::Branch("main".into()), imp);
        assert!(e.contains(&url) && e.contains("branch 'main'"), "{e}");
        assert!(e.contains("connection refused"), "{e}");

        let url = format!("http://127.0.0.1:{port}/repo.git");
        let e = fetch_error(&url, GitReference::Branch("main".into()), imp);
        assert!(e.contains(&url) && e.contains("connection refused"), "{e}");

        let not_a_repo = tempfile::tempdir().unwrap();
        let url = format!("file://{}", not_a_repo.path().display());
        let e = fetch_error(&url, GitReference::Branch("main".into()), imp);
        assert!(
            e.contains(&url) && e.contains("not a git repository"),
            "{e}"
        );

        let h = history();
        let http = HttpGitServer::start();
        let _ = http.serve(h.repo.bare());
        let url = http.url("missing");
        let e = fetch_error(&url, GitReference::Branch("main".into()), imp);
        assert!(e.contains(&url), "{e}");
    }
}

#[test]
fn snapshot_keeps_executables_and_unicode_and_drops_symlinks() {
    let repo = Repo::new();
    repo.write_exec("bin/run.sh", "#!/bin/sh\n");
    repo.write("ünïcødé/файл.yaml", "a: 1\n");
    repo.symlink("link.yaml", "ünïcødé/файл.yaml");
    repo.commit("files");
    repo.push_all();
    for imp in IMPLEMENTATIONS {
        let f = Fetcher::new(
            &repo.bare().file_url(),
            GitReference::Branch("main".into()),
            imp,
        );
        let (_, (_guard, dir)) = f.fetched();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("bin/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert!(mode & 0o100 != 0, "executable bit kept");
        assert_eq!(
            std::fs::read_to_string(dir.join("ünïcødé/файл.yaml")).unwrap(),
            "a: 1\n"
        );
        assert!(
            std::fs::symlink_metadata(dir.join("link.yaml")).is_err(),
            "symlinks are dropped"
        );
    }
}
