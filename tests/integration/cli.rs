//! End-to-end tests of the `gitopsd` command line: `check`, `run` with an invalid config,
//! `run --once -o json` against real git servers, and `--help`.

use crate::support::{
    describe, free_port, gitopsd_bin, port_in_use, sha256_file, text, GitDaemon, HttpGitServer,
    Repo,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs `gitopsd <args>` to completion (with no git or proxy settings of the caller leaking
/// in) and returns its output.
fn gitopsd(args: &[&str]) -> Output {
    Command::new(gitopsd_bin())
        .args(args)
        .env_remove("GITOPSD_CONFIG")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("run gitopsd")
}

/// Writes `gitopsd.yaml` into `dir` and returns its path.
fn write_config(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("gitopsd.yaml");
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// The object's keys, sorted.
fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value
        .as_object()
        .unwrap_or_else(|| panic!("expected an object, got {value}"))
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sorted(names: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    names.sort();
    names
}

/// A repository with one kustomization directory on main.
fn app_repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "app/configmap.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: edge\n",
    );
    repo.write(
        "app/service.yaml",
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports:\n  - port: 80\n",
    );
    repo.write("README.md", "fixture\n");
    repo.commit("app");
    repo.push_all();
    repo
}

/// One problem per kind the loader reports, each at a known line and column.
const BAD_CONFIG: &str = r#"stateDir: ./state
server: { listen: "127.0.0.1:PORT" }
configurations:
  - name: web
    source:
      kind: git
      url: "file:///srv/git/web.git"
      ref: { semver: ">=1.0 <<2" }
      interval: 10 minutes
      colour: blue
    kustomizations:
      - name: a
        path: ../outside
        dependsOn: [b]
      - name: b
        dependsOn: [a]
  - name: web
    source: { kind: git, url: "file:///srv/git/web.git" }
"#;

/// (line, column, start of the message) of every problem in [`BAD_CONFIG`].
const BAD_CONFIG_PROBLEMS: [(usize, usize, &str); 6] = [
    (8, 22, "invalid semver range \">=1.0 <<2\""),
    (9, 17, "invalid duration \"10 minutes\" for interval"),
    (10, 7, "unknown field `colour` in `source`"),
    (13, 15, "path \"../outside\" escapes"),
    (16, 21, "dependsOn cycle: a -> b -> a"),
    (17, 11, "duplicate configuration `web`"),
];

/// Every stderr line is `file:line:col: message`, one per problem, in file order.
fn assert_bad_config_diagnostics(config: &Path, output: &Output) {
    let stderr = text(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        BAD_CONFIG_PROBLEMS.len(),
        "one line per problem\n{}",
        describe(output)
    );
    assert!(
        stderr.ends_with('\n'),
        "the last diagnostic ends its line\n{}",
        describe(output)
    );
    for (line, (l, c, message)) in lines.iter().zip(BAD_CONFIG_PROBLEMS) {
        let prefix = format!("{}:{l}:{c}: {message}", config.display());
        assert!(
            line.starts_with(&prefix),
            "expected a line starting with {prefix:?}, got {line:?}\n{}",
            describe(output)
        );
    }
}

#[test]
fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        r#"stateDir: ./state
server: { listen: "127.0.0.1:9999" }
configurations:
  - name: web
    namespace: edge
    source:
      kind: git
      url: "file:///srv/git/web.git"
      ref: { semver: ">=1.0.0 <2.0.0" }
      interval: 1m30s
    kustomizations:
      - { name: infra, path: ./infra }
      - { name: apps, path: ./apps, dependsOn: [infra], target: { directory: ./out } }
"#,
    );
    let output = gitopsd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    assert!(
        text(&output.stdout).contains("valid"),
        "{}",
        describe(&output)
    );
    assert!(
        !dir.path().join("state").exists(),
        "check creates no state dir"
    );
}

#[test]
fn check_reports_every_problem_as_file_line_col() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &BAD_CONFIG.replace("PORT", "9999"));
    let output = gitopsd(&["check", "--config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert_bad_config_diagnostics(&config, &output);
}

#[test]
fn run_with_an_invalid_config_exits_2_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &BAD_CONFIG.replace("PORT", &port.to_string()));
    // Not --once: an invalid config must stop the daemon before it starts anything.
    let mut child = Command::new(gitopsd_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .env_remove("GITOPSD_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn gitopsd run");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "gitopsd run kept running with an invalid config\n{}",
                describe(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert_bad_config_diagnostics(&config, &output);
    assert!(
        !dir.path().join("state").exists(),
        "no state dir was created\n{}",
        describe(&output)
    );
    assert!(!port_in_use(port), "nothing listens on the configured port");
}

#[test]
fn run_once_json_reports_the_artifact_and_the_render() {
    let repo = app_repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
configurations:
  - name: web
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
    kustomizations:
      - {{ name: app, path: ./app }}
"#,
            port = free_port()
        ),
    );
    let output = gitopsd(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--once",
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", describe(&output));
    // The whole of stdout is one JSON document.
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
    assert_eq!(keys(&report), sorted(&["sources", "kustomizations"]));

    let sources = report["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1, "{report:#}");
    let source = &sources[0];
    assert_eq!(
        keys(source),
        sorted(&["name", "revision", "artifact", "error"])
    );
    let revision = format!("main@sha1:{}", repo.head());
    assert_eq!(source["name"], "web");
    assert_eq!(source["revision"], revision.as_str());
    assert_eq!(source["error"], Value::Null);
    let artifact = &source["artifact"];
    assert_eq!(keys(artifact), sorted(&["path", "digest", "size"]));
    let path = PathBuf::from(artifact["path"].as_str().unwrap());
    assert!(path.is_absolute(), "artifact path {}", path.display());
    assert!(path.is_file(), "artifact {} exists", path.display());
    let digest = artifact["digest"].as_str().unwrap();
    let hex_part = digest.strip_prefix("sha256:").expect("sha256: prefix");
    assert!(
        hex_part.len() == 64
            && hex_part
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "digest {digest}"
    );
    assert_eq!(digest, sha256_file(&path));
    assert_eq!(
        artifact["size"].as_u64(),
        Some(std::fs::metadata(&path).unwrap().len())
    );

    let kustomizations = report["kustomizations"].as_array().unwrap();
    assert_eq!(kustomizations.len(), 1, "{report:#}");
    let k = &kustomizations[0];
    assert_eq!(
        keys(k),
        sorted(&["name", "revision", "target", "objects", "applied", "error"])
    );
    // Each object and what the pass did to it: a first render creates both.
    let applied: Vec<(&str, &str)> = k["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["id"]["kind"].as_str().unwrap(),
                o["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(applied.len(), 2, "{k:#}");
    assert!(applied.contains(&("ConfigMap", "created")), "{k:#}");
    assert!(applied.contains(&("Service", "created")), "{k:#}");
    assert_eq!(k["name"], "app");
    assert_eq!(k["revision"], revision.as_str());
    assert_eq!(k["objects"], 2);
    assert_eq!(k["error"], Value::Null);
    let target = PathBuf::from(k["target"].as_str().unwrap());
    let rendered = std::fs::read_to_string(&target)
        .unwrap_or_else(|e| panic!("read target {}: {e}", target.display()));
    assert!(
        rendered.contains("kind: ConfigMap") && rendered.contains("kind: Service"),
        "{rendered}"
    );
}

#[test]
fn run_once_with_a_failing_source_still_syncs_the_others() {
    let repo = app_repo();
    let (_daemon, url) = GitDaemon::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            r#"stateDir: ./state
server: {{ listen: "127.0.0.1:{port}" }}
configurations:
  - name: broken
    source: {{ kind: git, url: "{url}", ref: {{ branch: no-such-branch }} }}
  - name: fine
    source: {{ kind: git, url: "{url}", ref: {{ branch: main }} }}
"#,
            port = free_port()
        ),
    );
    let output = gitopsd(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--once",
        "-o",
        "json",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", describe(&output));
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
    let sources = report["sources"].as_array().unwrap();
    let by_name = |name: &str| {
        sources
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no source {name} in {report:#}"))
    };

    let broken = by_name("broken");
    let error = broken["error"].as_str().expect("an error for broken");
    assert!(
        error.contains(&url) && error.contains("no-such-branch"),
        "the error names the URL and the branch: {error}"
    );
    assert_eq!(broken["artifact"], Value::Null);

    let fine = by_name("fine");
    assert_eq!(fine["error"], Value::Null, "{report:#}");
    assert_eq!(
        fine["revision"],
        format!("main@sha1:{}", repo.head()).as_str()
    );
    let path = PathBuf::from(fine["artifact"]["path"].as_str().unwrap());
    assert_eq!(fine["artifact"]["digest"], sha256_file(&path).as_str());
}

#[test]
fn help_mentions_the_subcommands_and_flags() {
    let output = gitopsd(&["--help"]);
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&output.stdout);
    for word in ["run", "check", "status", "reconcile"] {
        assert!(help.contains(word), "--help mentions {word}:\n{help}");
    }

    let output = gitopsd(&["run", "--help"]);
    assert!(output.status.success(), "{}", describe(&output));
    let help = text(&output.stdout);
    for flag in ["--config", "--once", "--output"] {
        assert!(help.contains(flag), "run --help mentions {flag}:\n{help}");
    }
}

/// A config that holds an alias bomb under `configurations`: expanded, it would need tens of
/// gigabytes.
const ALIAS_BOMB_CONFIG: &str = "stateDir: ./state
lol: &a [x, x, x, x, x, x, x, x, x, x]
lol1: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
lol2: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
lol3: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
lol4: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
lol5: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
lol6: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
lol7: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
lol8: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
configurations: [*i, *i, *i, *i, *i, *i, *i, *i, *i, *i]
";

#[test]
fn check_refuses_an_alias_bomb_within_a_memory_limit() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), ALIAS_BOMB_CONFIG);
    // 1 GiB of address space: far more than a config needs, far less than the bomb expands to.
    let output = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" check --config \"$1\"")
        .arg(gitopsd_bin())
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .expect("run gitopsd check under ulimit");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let stderr = text(&output.stderr);
    assert!(
        stderr.starts_with(&format!("{}:7:", config.display())) && stderr.contains("alias bomb"),
        "{}",
        describe(&output)
    );
}

/// `gitopsd run --once` with this state dir and one local source; returns its output.
fn run_once_with_state_dir(dir: &Path, state_dir: &str) -> Output {
    let repo = app_repo();
    let config = write_config(
        dir,
        &format!(
            "stateDir: {state_dir}\nserver: {{ listen: \"127.0.0.1:{}\" }}\nconfigurations:\n  - name: web\n    source: {{ kind: git, url: \"{}\" }}\n",
            free_port(),
            repo.bare().file_url()
        ),
    );
    gitopsd(&["run", "--config", config.to_str().unwrap(), "--once"])
}

#[test]
fn run_refuses_a_system_directory_as_state_dir() {
    let dir = tempfile::tempdir().unwrap();
    let output = run_once_with_state_dir(dir.path(), "/proc");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        text(&output.stderr).contains("stateDir /proc is a system directory"),
        "{}",
        describe(&output)
    );
}

#[test]
fn run_names_a_state_dir_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state"), "not a directory").unwrap();
    let output = run_once_with_state_dir(dir.path(), "./state");
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    let expected = format!(
        "stateDir {} exists and is not a directory",
        dir.path().join("state").display()
    );
    assert!(
        text(&output.stderr).contains(&expected),
        "{}",
        describe(&output)
    );
}

#[test]
fn start_removes_only_the_scratch_files_gitopsd_made() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // What an operator (or another program) keeps under the state dir's tmp/.
    std::fs::create_dir_all(state.join("tmp")).unwrap();
    std::fs::write(state.join("tmp/keep-me"), "mine").unwrap();
    let first = run_once_with_state_dir(dir.path(), "./state");
    assert_eq!(first.status.code(), Some(0), "{}", describe(&first));
    // A scratch directory a killed run left behind.
    let leftover = state.join("scratch/gitopsd-web-1-1");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("half-written"), "x").unwrap();

    let second = run_once_with_state_dir(dir.path(), "./state");
    assert_eq!(second.status.code(), Some(0), "{}", describe(&second));
    assert_eq!(
        std::fs::read_to_string(state.join("tmp/keep-me")).unwrap(),
        "mine"
    );
    assert!(!leftover.exists(), "gitopsd's own leftover is cleaned");
}

#[test]
fn a_second_gitopsd_on_one_state_dir_exits_2_naming_the_first() {
    let repo = app_repo();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n  - name: web\n    source: {{ kind: git, url: \"{}\", interval: 1h }}\n",
            repo.bare().file_url()
        ),
    );
    let mut first = Command::new(gitopsd_bin())
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the first gitopsd");
    // The state dir is locked before the API listens.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !port_in_use(port) {
        assert!(
            Instant::now() < deadline,
            "the first gitopsd never listened"
        );
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first gitopsd exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = gitopsd(&["run", "--config", config.to_str().unwrap(), "--once"]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(2), "{}", describe(&second));
    assert!(
        text(&second.stderr).contains(&format!(
            "is in use by another gitopsd (pid {})",
            first.id()
        )),
        "{}",
        describe(&second)
    );
}
