//! `gitopsd suspend` / `gitopsd resume` against a running daemon: what they stop, that they
//! survive a restart, that the status shows them, and that the config's `suspend: true` wins.

use crate::support::{free_port, text, Repo, Running};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: b\n",
    );
    repo.commit("one config map");
    repo
}

/// Two configurations on one repository: `app` (kustomizations `one` and `two`, polled every
/// second) and `held` (suspended in the file).
fn write_config(dir: &Path, repo: &Repo, port: u16) -> PathBuf {
    let config = dir.join("config.yaml");
    let kustomization = |name: &str| {
        format!(
            "      - name: {name}\n        path: ./deploy\n        interval: 1s\n        target: {{ directory: {} }}\n",
            dir.join("out").join(name).display()
        )
    };
    std::fs::write(
        &config,
        format!(
            "stateDir: {state}\nserver:\n  listen: \"127.0.0.1:{port}\"\nconfigurations:\n  - name: app\n    \
             source:\n      kind: git\n      url: {url}\n      interval: 1s\n    kustomizations:\n{one}{two}  \
             - name: held\n    suspend: true\n    source:\n      kind: git\n      url: {url}\n",
            state = dir.join("state").display(),
            url = repo.path().display(),
            one = kustomization("one"),
            two = kustomization("two"),
        ),
    )
    .unwrap();
    config
}

fn start(dir: &Path, config: &Path, port: u16) -> Running {
    Running::start(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &format!("127.0.0.1:{port}"),
        &dir.join("gitopsd.log"),
    )
}

fn source<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no source {name}: {status}"))
}

fn kustomization<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["kustomizations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == name)
        .unwrap_or_else(|| panic!("no kustomization {name}: {status}"))
}

fn commit_of(revision: &Value) -> Option<String> {
    Some(revision.as_str()?.rsplit(':').next()?.to_string())
}

#[test]
fn suspend_and_resume_a_configuration_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let first = repo.head();
    let port = free_port();
    let config = write_config(dir.path(), &repo, port);
    let mut daemon = start(dir.path(), &config, port);
    daemon.wait_status("the first revision", |st| {
        (commit_of(&source(st, "app")["revision"])? == first).then_some(())
    });

    let out = daemon.client(&["suspend", "app"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "default/app suspended");
    let status = daemon.try_status().unwrap();
    assert_eq!(source(&status, "app")["suspended"], true, "{status}");
    assert_eq!(kustomization(&status, "one")["suspended"], true, "{status}");
    assert!(dir.path().join("state/suspensions.json").is_file());

    // A new commit is not fetched while suspended, not even when asked for.
    repo.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  a: c\n",
    );
    repo.commit("second");
    let second = repo.head();
    assert!(daemon.client(&["reconcile", "app"]).status.success());
    // The source polls every second: a few seconds without the new commit show it is held.
    std::thread::sleep(std::time::Duration::from_secs(4));
    let status = daemon.try_status().unwrap();
    assert_eq!(
        commit_of(&source(&status, "app")["revision"]).unwrap(),
        first,
        "{status}"
    );

    // Still suspended after a restart, and listed as such by `gitopsd status`.
    assert!(daemon.stop().success());
    let mut daemon = start(dir.path(), &config, port);
    let status = daemon.wait_status("the restarted daemon", |st| Some(st.clone()));
    assert_eq!(source(&status, "app")["suspended"], true, "{status}");
    let table = daemon.client(&["status"]);
    // NAMESPACE NAME KIND REVISION SUSPENDED ...
    let rows = text(&table.stdout);
    let app = rows
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&"app"))
        .unwrap_or_else(|| panic!("no row for app:\n{rows}"));
    assert_eq!(app[2], "GitRepository", "{rows}");
    assert_eq!(app[4], "True", "{rows}");

    let out = daemon.client(&["resume", "app"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "default/app resumed");
    daemon.wait_status("the second revision after resume", |st| {
        let s = source(st, "app");
        (s["suspended"] == false && commit_of(&s["revision"])? == second).then_some(())
    });
}

#[test]
fn one_kustomization_can_be_suspended_alone_and_the_config_file_wins_over_resume() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo();
    let port = free_port();
    let config = write_config(dir.path(), &repo, port);
    let mut daemon = start(dir.path(), &config, port);
    daemon.wait_status("the first sync", |st| {
        source(st, "app")["artifact"].is_object().then_some(())
    });

    let out = daemon.client(&["suspend", "app/two"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "default/app/two suspended");
    let status = daemon.try_status().unwrap();
    assert_eq!(kustomization(&status, "two")["suspended"], true);
    assert_eq!(kustomization(&status, "one")["suspended"], false);
    assert_eq!(source(&status, "app")["suspended"], false);

    // Suspending twice says so; resuming what the file suspends is refused, exit 1.
    let again = daemon.client(&["suspend", "app/two"]);
    assert_eq!(
        text(&again.stdout).trim(),
        "default/app/two was already suspended"
    );
    let held = daemon.client(&["resume", "held"]);
    assert_eq!(held.status.code(), Some(1));
    assert!(
        text(&held.stderr).contains("suspended in the configuration file"),
        "{}",
        text(&held.stderr)
    );
    // Unknown names and a malformed one.
    let unknown = daemon.client(&["suspend", "app/three"]);
    assert!(text(&unknown.stderr).contains("has no kustomization named three"));
    let malformed = daemon.client(&["suspend", "a/b/c"]);
    assert_eq!(malformed.status.code(), Some(2));
}
