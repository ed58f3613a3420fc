//! `gitopsd status` against a running daemon: the table, `-o yaml`, and `--watch` printing a
//! new table when something changed (its output is a pipe here, so no colours and no redraw).

use crate::support::{free_port, gitopsd_bin, text, Repo, Running};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn setup(dir: &std::path::Path) -> (Running, String, Repo) {
    let repo = Repo::new();
    repo.write(
        "deploy/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n",
    );
    repo.commit("one");
    let port = free_port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: {}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n  - name: web\n    \
             source: {{ kind: git, url: {} }}\n    kustomizations:\n      - {{ name: site, path: ./deploy, \
             target: {{ directory: {} }} }}\n",
            dir.join("state").display(),
            repo.path().display(),
            dir.join("out").display()
        ),
    )
    .unwrap();
    let server = format!("127.0.0.1:{port}");
    let mut daemon = Running::start(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &server,
        &dir.join("gitopsd.log"),
    );
    daemon.wait_status("the kustomization applied", |st| {
        st["kustomizations"][0]["lastAppliedRevision"]
            .is_string()
            .then_some(())
    });
    (daemon, server, repo)
}

#[test]
fn status_prints_a_table_yaml_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, _, _repo) = setup(dir.path());
    let table = daemon.client(&["status"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let table = text(&table.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE  NAME"), "{table}");
    assert!(
        lines[0].contains("REVISION") && lines[0].contains("AGE"),
        "{table}"
    );
    let web: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&web[..3], ["default", "web", "GitRepository"], "{table}");
    assert!(web[3].starts_with("main@sha1:") && web[3].len() == "main@sha1:".len() + 12);
    assert_eq!(&web[4..6], ["False", "True"], "{table}");
    let site: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        &site[..3],
        ["default", "web/site", "Kustomization"],
        "{table}"
    );
    assert!(!table.contains('\x1b'), "no colours into a pipe: {table:?}");

    let yaml = daemon.client(&["status", "-o", "yaml"]);
    assert!(yaml.status.success(), "{}", text(&yaml.stderr));
    let yaml = text(&yaml.stdout);
    assert!(yaml.starts_with("sources:"), "{yaml}");
    assert!(
        yaml.contains("name: web") && yaml.contains("kustomizations:"),
        "{yaml}"
    );
    let json = daemon.client(&["status", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["sources"][0]["name"], "web");
}

#[test]
fn status_watch_prints_the_table_again_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (daemon, server, _repo) = setup(dir.path());
    let mut watch = Command::new(gitopsd_bin())
        .args(["status", "--watch", "--server", &server])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // The first table, up to its blank separator line.
    let mut first = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.is_empty() {
            break;
        }
        first.push(line);
    }
    assert!(first.iter().any(|l| l.contains("web/site")), "{first:?}");
    assert!(daemon.client(&["suspend", "web/site"]).status.success());
    // A later table shows it suspended (each table ends with a blank line).
    let mut suspended = false;
    let mut table = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.is_empty() {
            suspended = table.iter().any(|l: &String| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.get(1) == Some(&"web/site") && cells.get(4) == Some(&"True")
            });
            if suspended {
                break;
            }
            table.clear();
        } else {
            table.push(line);
        }
    }
    watch.kill().unwrap();
    watch.wait().unwrap();
    assert!(suspended, "no table showed web/site suspended");
}
