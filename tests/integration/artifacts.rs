//! End-to-end tests of the artifacts `gitopsd run --once` produces: reproducible bytes, the
//! entries Flux's ignore rules leave in, normalised headers, GC of old artifacts, and
//! publishing into a directory.

use crate::support::{describe, free_port, gitopsd_bin, peak_rss_kib, sha256_file, text, Repo};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A state dir and a config for one git source `web` (namespace `default`) reading `url`.
/// `extra` is appended to the source's mapping (indented YAML lines).
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(url: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gitopsd.yaml");
        let yaml = format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
configurations:
  - name: web
    source:
      kind: git
      url: "{url}"
      ref: {{ branch: main }}
{extra}"#,
            port = free_port()
        );
        std::fs::write(&config, yaml).unwrap();
        Setup { dir, config }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The directory holding this source's artifacts.
    fn artifacts_dir(&self) -> PathBuf {
        self.state().join("artifacts/git/default/web")
    }

    /// `run --once -o json`, which must succeed; returns the source's report.
    fn sync(&self) -> Value {
        let output = Command::new(gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd");
        assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        let source = report["sources"][0].clone();
        assert_eq!(source["name"], "web", "{report:#}");
        source
    }

    /// Syncs and returns the artifact's path after checking its digest.
    fn sync_artifact(&self) -> PathBuf {
        let source = self.sync();
        let path = PathBuf::from(source["artifact"]["path"].as_str().expect("artifact path"));
        assert_eq!(source["artifact"]["digest"], sha256_file(&path).as_str());
        path
    }
}

/// Runs `command` and returns stdout; panics with stderr on failure.
fn checked(mut command: Command) -> Vec<u8> {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?}\n{}",
        describe(&output)
    );
    output.stdout
}

/// GNU tar with names printed as they are (no octal escapes for UTF-8) and times in UTC.
fn tar() -> Command {
    let mut command = Command::new("tar");
    command
        .arg("--quoting-style=literal")
        .env("TZ", "UTC")
        .env("LC_ALL", "C.UTF-8");
    command
}

/// Entry names, without a leading `./` or a trailing `/`.
fn normalise(listing: &[u8]) -> BTreeSet<String> {
    text(listing)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let l = l.strip_prefix("./").unwrap_or(l);
            l.trim_end_matches('/').to_string()
        })
        .filter(|l| !l.is_empty() && l != ".")
        .collect()
}

/// `tar -tzf <artifact>`, normalised.
fn artifact_listing(artifact: &Path) -> BTreeSet<String> {
    let mut command = tar();
    command.arg("-tzf").arg(artifact);
    normalise(&checked(command))
}

/// `git archive --format=tar <commit>` as bytes.
fn git_archive(repo: &Repo, commit: &str) -> Vec<u8> {
    let mut command = crate::support::git_command(repo.path());
    command.args(["archive", "--format=tar", commit]);
    checked(command)
}

/// `git archive --format=tar <commit> | tar -t`, normalised.
fn commit_listing(repo: &Repo, commit: &str) -> BTreeSet<String> {
    let archive = git_archive(repo, commit);
    let mut child = tar()
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tar -t");
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    normalise(&output.stdout)
}

/// Extracts the files of `commit` into a new temp dir.
fn commit_tree(repo: &Repo, commit: &str) -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let archive = git_archive(repo, commit);
    let mut child = tar()
        .arg("-x")
        .arg("-C")
        .arg(dest.path())
        .stdin(Stdio::piped())
        .spawn()
        .expect("run tar -x");
    child.stdin.take().unwrap().write_all(&archive).unwrap();
    assert!(child.wait().unwrap().success());
    dest
}

/// Every file below `root` (symlinks not followed) as relative path → content.
fn files_below(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

fn configmap(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

#[test]
fn same_commit_gives_identical_bytes_and_the_default_exclusions_apply() {
    let repo = Repo::new();
    repo.write("README.md", "fixture\n");
    repo.write("deploy/app.yaml", configmap("app"));
    repo.write("deploy/base/service.yaml", configmap("svc"));
    repo.write_exec("scripts/check.sh", "#!/bin/sh\nexit 0\n");
    repo.write("logo.png", b"\x89PNG\r\n\x1a\nnot really an image");
    repo.write(".github/workflows/ci.yml", "on: push\n");
    repo.write(".gitignore", "*.log\n");
    // git keeps no empty directory: it must not show up in the artifact either.
    repo.mkdir("empty/dir");
    let commit = repo.commit("fixture");
    repo.push_all();

    let first = Setup::new(&repo.bare().file_url(), "");
    let second = Setup::new(&repo.bare().file_url(), "");
    let a = first.sync_artifact();
    let b = second.sync_artifact();
    assert_ne!(a, b, "two state dirs, two files");
    assert_eq!(
        a.file_name().unwrap().to_str().unwrap(),
        format!("{commit}.tar.gz")
    );
    assert_eq!(sha256_file(&a), sha256_file(&b));
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "identical bytes"
    );

    let packed = artifact_listing(&a);
    let in_commit = commit_listing(&repo, &commit);
    for excluded in [
        "logo.png",
        ".github",
        ".github/workflows",
        ".github/workflows/ci.yml",
        ".gitignore",
    ] {
        assert!(in_commit.contains(excluded), "fixture has {excluded}");
        assert!(!packed.contains(excluded), "{excluded} is excluded");
    }
    let expected: BTreeSet<String> = in_commit
        .into_iter()
        .filter(|n| n != "logo.png" && n != ".gitignore" && !n.starts_with(".github"))
        .collect();
    assert_eq!(packed, expected);
    assert!(
        !packed.iter().any(|n| n.starts_with("empty")),
        "no empty directory"
    );
}

#[test]
fn nested_sourceignore_applies_below_its_directory_and_drops_the_defaults() {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", configmap("app"));
    repo.write("deploy/.sourceignore", "*.secret\n");
    repo.write("deploy/x.secret", "hidden\n");
    repo.write("deploy/sub/y.secret", "hidden too\n");
    repo.write("other/x.secret", "kept\n");
    repo.write("logo.png", b"\x89PNG");
    let commit = repo.commit("fixture");
    repo.push_all();

    let setup = Setup::new(&repo.bare().file_url(), "");
    let packed = artifact_listing(&setup.sync_artifact());
    assert_eq!(
        packed,
        set(&[
            "deploy",
            "deploy/.sourceignore",
            "deploy/app.yaml",
            "deploy/sub",
            "logo.png",
            "other",
            "other/x.secret",
        ]),
        "commit {commit}"
    );
}

#[test]
fn ignore_field_excludes_like_a_sourceignore() {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", configmap("app"));
    repo.write("deploy/x.secret", "hidden\n");
    repo.write("other/x.secret", "kept\n");
    repo.write("logo.png", b"\x89PNG");
    repo.write(".github/workflows/ci.yml", "on: push\n");
    repo.commit("fixture");
    repo.push_all();

    let setup = Setup::new(
        &repo.bare().file_url(),
        "      ignore: |\n        # secrets of the deploy dir only\n        /deploy/*.secret\n",
    );
    let packed = artifact_listing(&setup.sync_artifact());
    assert_eq!(
        packed,
        set(&[
            ".github",
            ".github/workflows",
            ".github/workflows/ci.yml",
            "deploy",
            "deploy/app.yaml",
            "logo.png",
            "other",
            "other/x.secret",
        ])
    );
}

#[test]
fn entries_have_normalised_modes_owners_and_times() {
    let repo = Repo::new();
    repo.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    repo.write("config/app.yaml", configmap("app"));
    repo.write("config/nested/deep.yaml", configmap("deep"));
    repo.write("notes.txt", "plain\n");
    repo.commit("fixture");
    repo.push_all();

    let setup = Setup::new(&repo.bare().file_url(), "");
    let artifact = setup.sync_artifact();
    let mut command = tar();
    command
        .args(["--numeric-owner", "--full-time", "-tvzf"])
        .arg(&artifact);
    let listing = text(&checked(command));
    let mut seen = BTreeMap::new();
    for line in listing.lines().filter(|l| !l.is_empty()) {
        // -rwx------ 0/0 20 1970-01-01 00:00:00 bin/run.sh
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() >= 6, "unexpected tar -tv line {line:?}");
        let name = fields[5..].join(" ");
        let name = name.trim_end_matches('/').to_string();
        assert_eq!(fields[1], "0/0", "uid/gid of {name}: {line}");
        assert_eq!(
            (fields[3], fields[4]),
            ("1970-01-01", "00:00:00"),
            "mtime of {name}: {line}"
        );
        seen.insert(name, fields[0].to_string());
    }
    let expected: BTreeMap<String, String> = [
        ("bin", "drwxr-x---"),
        ("bin/run.sh", "-rwx------"),
        ("config", "drwxr-x---"),
        ("config/app.yaml", "-rw-------"),
        ("config/nested", "drwxr-x---"),
        ("config/nested/deep.yaml", "-rw-------"),
        ("notes.txt", "-rw-------"),
    ]
    .into_iter()
    .map(|(n, m)| (n.to_string(), m.to_string()))
    .collect();
    assert_eq!(seen, expected, "{listing}");

    // No user or group names either (tar -tv would show numbers for empty names too).
    let file = std::fs::File::open(&artifact).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        assert_eq!(header.mtime().unwrap(), 0, "{name}");
        assert_eq!(
            (header.uid().unwrap(), header.gid().unwrap()),
            (0, 0),
            "{name}"
        );
        assert!(
            header.username_bytes().is_none_or(|u| u.is_empty()),
            "{name}"
        );
        assert!(
            header.groupname_bytes().is_none_or(|g| g.is_empty()),
            "{name}"
        );
    }
}

#[test]
fn unicode_file_names_survive() {
    let names = [
        "données/café.yaml",
        "日本語/設定.txt",
        "emoji-🚀.md",
        "Ünïcödé space.txt",
    ];
    let repo = Repo::new();
    for (i, name) in names.iter().enumerate() {
        repo.write(name, format!("content {i} of {name}\n"));
    }
    let commit = repo.commit("unicode");
    repo.push_all();

    let setup = Setup::new(&repo.bare().file_url(), "");
    let artifact = setup.sync_artifact();
    let packed = artifact_listing(&artifact);
    assert_eq!(packed, commit_listing(&repo, &commit));
    for name in names {
        assert!(packed.contains(name), "{name} in {packed:?}");
    }

    let dest = tempfile::tempdir().unwrap();
    let mut command = tar();
    command
        .arg("-xzf")
        .arg(&artifact)
        .arg("-C")
        .arg(dest.path());
    checked(command);
    let tree = commit_tree(&repo, &commit);
    assert_eq!(files_below(dest.path()), files_below(tree.path()));
}

#[test]
fn gc_keeps_the_newest_two_artifacts_and_no_temp_files() {
    let repo = Repo::new();
    let setup = Setup::new(&repo.bare().file_url(), "");
    let mut commits = Vec::new();
    for i in 1..=3 {
        repo.write("app/configmap.yaml", configmap(&format!("v{i}")));
        commits.push(repo.commit(&format!("commit {i}")));
        repo.push_all();
        let source = setup.sync();
        assert_eq!(
            source["revision"],
            format!("main@sha1:{}", commits[i - 1]).as_str()
        );
    }
    let mut present: Vec<String> = std::fs::read_dir(setup.artifacts_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    let mut expected = vec![
        format!("{}.tar.gz", commits[1]),
        format!("{}.tar.gz", commits[2]),
    ];
    expected.sort();
    assert_eq!(
        present, expected,
        "exactly the two newest artifacts, nothing else"
    );
}

#[test]
fn publish_links_current_to_the_files_of_the_commit() {
    let repo = Repo::new();
    repo.write("app/configmap.yaml", configmap("one"));
    repo.write_exec("bin/tool.sh", "#!/bin/sh\n");
    repo.write("docs/readme.txt", "first\n");
    let first = repo.commit("first");
    repo.push_all();

    let publish_root = tempfile::tempdir().unwrap();
    let published = publish_root.path().join("site");
    let setup = Setup::new(
        &repo.bare().file_url(),
        &format!(
            "      publish: {{ directory: \"{}\" }}\n",
            published.display()
        ),
    );

    let assert_published = |commit: &str| {
        let link = published.join("current");
        let meta =
            std::fs::symlink_metadata(&link).unwrap_or_else(|e| panic!("{}: {e}", link.display()));
        assert!(meta.file_type().is_symlink(), "current is a symlink");
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(
            target.file_name().unwrap().to_str().unwrap(),
            commit,
            "link target {}",
            target.display()
        );
        let tree = commit_tree(&repo, commit);
        assert_eq!(
            files_below(&link.canonicalize().unwrap()),
            files_below(tree.path()),
            "files published for {commit}"
        );
    };

    setup.sync_artifact();
    assert_published(&first);

    // The next revision moves the link; a removed directory is gone from the published files.
    repo.write("app/configmap.yaml", configmap("two"));
    repo.remove("docs");
    let second = repo.commit("second");
    repo.push_all();
    setup.sync_artifact();
    assert_published(&second);
}

/// `run --once -o json`, whatever its exit code: the code and the source's report.
fn sync_outcome(setup: &Setup) -> (Option<i32>, Value) {
    let output = Command::new(gitopsd_bin())
        .args(["run", "--once", "-o", "json", "--config"])
        .arg(&setup.config)
        .stdin(Stdio::null())
        .output()
        .expect("run gitopsd");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
    (output.status.code(), report["sources"][0].clone())
}

/// One entry of a crafted tree: mode, name, object id.
type TreeLine = (&'static str, &'static [u8], String);

#[test]
fn crafted_trees_with_escaping_names_are_refused_and_the_last_artifact_stays() {
    let repo = Repo::new();
    repo.write("app/configmap.yaml", configmap("good"));
    let good = repo.commit("good");
    repo.push_all();
    let bare = repo.bare();
    let blob = bare.write_blob(b"escaped\n");
    let file = |name: &'static [u8]| ("100644", name, blob.clone());
    let app = bare.rev_parse("main:app");
    let in_dir = |dir: &'static [u8], inner: TreeLine| {
        let sub = bare.write_tree_literally(&[(inner.0, inner.1, &inner.2)]);
        ("40000", dir, sub)
    };

    // (an extra entry of the root tree, the path the error must name). An empty name, which
    // would make the path absolute, cannot be served: git's pack-objects refuses to send it.
    let cases: Vec<(TreeLine, &str)> = vec![
        (file(b".."), ".."),
        (file(b"a/../../x"), "a/../../x"),
        (file(b"/etc/escaped"), "/etc/escaped"),
        (in_dir(b"deploy", file(b"..")), "deploy/.."),
        (in_dir(b"deploy", in_dir(b"..", file(b"x"))), "deploy/.."),
        (in_dir(b".GIT", file(b"config")), ".GIT"),
        (in_dir(b".git", file(b"config")), ".git"),
    ];
    for implementation in ["gix", "git2"] {
        let setup = Setup::new(
            &repo.bare().file_url(),
            &format!("      gitImplementation: {implementation}\n"),
        );
        let first = setup.sync_artifact();
        assert_eq!(first, setup.artifacts_dir().join(format!("{good}.tar.gz")));
        let digest = sha256_file(&first);

        for ((mode, name, id), path) in &cases {
            let entries = [
                ("40000", &b"app"[..], app.as_str()),
                (mode, name, id.as_str()),
            ];
            let commit = bare.commit_tree("main", &bare.write_tree_literally(&entries));

            let (code, source) = sync_outcome(&setup);
            let context = format!("{implementation}, {path:?}: {source:#}");
            assert_ne!(code, Some(0), "{context}");
            let error = source["error"].as_str().unwrap_or_default();
            assert!(
                error.contains(&format!("refusing to pack the path {path:?}")),
                "{context}"
            );
            assert!(!error.contains('\n'), "one sentence: {context}");
            eprintln!("{implementation}: refused as: {error}");
            // Nothing of the crafted commit was stored; the last good artifact is current.
            assert!(
                !setup
                    .artifacts_dir()
                    .join(format!("{commit}.tar.gz"))
                    .exists(),
                "{context}"
            );
            assert_eq!(
                source["artifact"]["path"],
                first.to_str().unwrap(),
                "{context}"
            );
            assert_eq!(source["artifact"]["digest"], digest.as_str(), "{context}");
            assert_eq!(
                source["revision"],
                format!("main@sha1:{good}").as_str(),
                "{context}"
            );
            let leftovers: Vec<_> = std::fs::read_dir(setup.artifacts_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(leftovers.len(), 1, "{context}: {leftovers:?}");
        }
        bare.git(["update-ref", "refs/heads/main", &good]);
    }
}

/// A 1 GiB file is packed from the git object database piece by piece, never held whole: a
/// whole sync stays under 64 MiB resident.
///
/// Fetched with libgit2 over `git://`: its indexer hashes a received object as it streams it.
/// gix's indexer (any transport) and libgit2's in-process `file://` transport hold the largest
/// object whole while fetching, which no packer can undo (README, Performance).
#[test]
fn a_large_file_is_packed_with_flat_memory() {
    const SIZE: u64 = 1 << 30;
    let repo = Repo::new();
    repo.write("app/configmap.yaml", configmap("app"));
    // Sparse zeros: nothing to write to disk, and git stores them whole (over its big-file
    // threshold, never as a delta), which is what a large binary in a repository looks like.
    let big = repo.path().join("blobs/big.bin");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::File::create(&big).unwrap().set_len(SIZE).unwrap();
    let commit = repo.commit("a large file");
    repo.push_all();
    std::fs::remove_file(&big).unwrap();
    let (_daemon, url) = crate::support::GitDaemon::serving(repo.bare());

    let setup = Setup::new(&url, "      gitImplementation: git2\n");
    let mut command = Command::new(gitopsd_bin());
    command
        .args(["run", "--once", "-o", "json", "--config"])
        .arg(&setup.config)
        .env("GITOPSD_LOG", "info");
    let (peak_kib, output) = peak_rss_kib(command);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    eprintln!(
        "peak RSS of `gitopsd run --once` for a {} MiB file: {peak_kib} KiB",
        SIZE >> 20
    );

    let artifact = setup.artifacts_dir().join(format!("{commit}.tar.gz"));
    let file = std::fs::File::open(&artifact).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut seen = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == b"blobs/big.bin" {
            assert_eq!(entry.header().size().unwrap(), SIZE);
            let mut count = 0u64;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = std::io::Read::read(&mut entry, &mut buf).unwrap();
                if n == 0 {
                    break;
                }
                assert!(buf[..n].iter().all(|b| *b == 0));
                count += n as u64;
            }
            assert_eq!(count, SIZE);
            seen = true;
        }
    }
    assert!(seen, "the large file is in the artifact");
    assert!(
        peak_kib < 64 << 10,
        "peak RSS {peak_kib} KiB for a {} MiB file: not streamed",
        SIZE >> 20
    );
}
