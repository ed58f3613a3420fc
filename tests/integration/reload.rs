//! Hot reload of a running `gitopsd run`: by editing the config in place, by an editor's
//! rename-over-save, by a Kubernetes ConfigMap's `..data` symlink swap, and by SIGHUP with a
//! bad and then a good file; a reload that changes one of three configurations leaves the
//! other two's in-flight syncs alone; the listen address can change.

use crate::support::{free_port, text, Repo, Running, StallingServer};
use serde_json::Value;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo(content: &str) -> Repo {
    let repo = Repo::new();
    repo.write(
        "deploy/cm.yaml",
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {content}\n"),
    );
    repo.commit(content);
    repo
}

/// A config serving on `port`, state in `state`, one configuration per `(name, url)`.
fn config_text(state: &Path, port: u16, sources: &[(&str, &str)]) -> String {
    let mut text = format!(
        "stateDir: {}\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n",
        state.display()
    );
    for (name, url) in sources {
        text.push_str(&format!(
            "  - name: {name}\n    source: {{ kind: git, url: \"{url}\", interval: 1m, timeout: 1m }}\n"
        ));
    }
    text
}

fn start(config: &Path, port: u16, log: &Path, notify: Option<&Path>) -> Running {
    let env: Vec<(&str, &std::ffi::OsStr)> = notify
        .map(|n| vec![("NOTIFY_SOCKET", n.as_os_str())])
        .unwrap_or_default();
    Running::start_with_env(
        &["run".as_ref(), "--config".as_ref(), config.as_os_str()],
        &env,
        &format!("127.0.0.1:{port}"),
        log,
    )
}

fn names(status: &Value) -> Vec<String> {
    let mut names: Vec<String> = status["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn revision_of(status: &Value, name: &str) -> Option<String> {
    status["sources"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["revision"]
        .as_str()
        .map(str::to_string)
}

/// Start with configuration `one`, then let `change` write a config with `one` and `two`;
/// the daemon picks `two` up without a signal.
fn reload_seen_after(change: impl FnOnce(&Path, &str), config_path: impl FnOnce(&Path) -> PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let port = free_port();
    let state = dir.path().join("state");
    let config = config_path(dir.path());
    let first = config_text(&state, port, &[("one", &a.path().display().to_string())]);
    std::fs::write(&config, &first).unwrap();
    let mut daemon = start(&config, port, &dir.path().join("log"), None);
    daemon.wait_status("one synced", |st| revision_of(st, "one"));
    let second = config_text(
        &state,
        port,
        &[
            ("one", &a.path().display().to_string()),
            ("two", &b.path().display().to_string()),
        ],
    );
    change(dir.path(), &second);
    daemon.wait_status("two synced after the edit", |st| revision_of(st, "two"));
    assert!(daemon.log().contains("config reloaded"), "{}", daemon.log());
}

#[test]
fn an_edit_in_place_reloads() {
    reload_seen_after(
        |dir, text| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(dir.join("config.yaml"))
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        },
        |dir| dir.join("config.yaml"),
    );
}

#[test]
fn an_editors_rename_over_save_reloads() {
    reload_seen_after(
        |dir, text| {
            let temp = dir.join(".config.yaml.swp");
            std::fs::write(&temp, text).unwrap();
            std::fs::rename(&temp, dir.join("config.yaml")).unwrap();
        },
        |dir| dir.join("config.yaml"),
    );
}

#[test]
fn a_configmap_data_symlink_swap_reloads() {
    // The kubelet's layout: config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>/.
    use std::os::unix::fs::symlink;
    reload_seen_after(
        |dir, text| {
            let mount = dir.join("cm");
            std::fs::create_dir(mount.join("..v2")).unwrap();
            std::fs::write(mount.join("..v2/config.yaml"), text).unwrap();
            symlink("..v2", mount.join("..data_tmp")).unwrap();
            std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).unwrap();
            std::fs::remove_dir_all(mount.join("..v1")).unwrap();
        },
        |dir| {
            let mount = dir.join("cm");
            std::fs::create_dir_all(mount.join("..v1")).unwrap();
            symlink("..v1", mount.join("..data")).unwrap();
            symlink("..data/config.yaml", mount.join("config.yaml")).unwrap();
            // The first config is written through the symlinks, into ..v1.
            mount.join("config.yaml")
        },
    );
}

fn notifications(socket: &UnixDatagram) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut out = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buffer) {
        out.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
    }
    out
}

#[test]
fn sighup_with_a_bad_file_keeps_the_running_config_and_a_good_one_applies() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let port = free_port();
    let state = dir.path().join("state");
    let config = dir.path().join("config.yaml");
    let first = config_text(&state, port, &[("one", &a.path().display().to_string())]);
    std::fs::write(&config, &first).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let mut daemon = start(&config, port, &dir.path().join("log"), Some(&socket_path));
    daemon.wait_status("one synced", |st| revision_of(st, "one"));

    // A field that does not exist, on line 6: rejected with its position.
    let bad = format!("{first}    colour: blue\n");
    std::fs::write(&config, &bad).unwrap();
    daemon.signal(libc::SIGHUP);
    let status = daemon.wait_status("the rejected reload", |st| {
        (st["reload"]["succeeded"] == false).then(|| st.clone())
    });
    let error = status["reload"]["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("{}:6:5", config.display())) && error.contains("colour"),
        "{error}"
    );
    assert_eq!(names(&status), ["one"], "the running config stays");
    let metrics = daemon.get("/metrics").unwrap();
    assert!(
        metrics.contains("gitopsd_config_last_reload_successful 0"),
        "{metrics}"
    );
    daemon.wait_for("the problem logged", |d| {
        d.log().contains("after SIGHUP").then_some(())
    });
    assert!(daemon.log().contains(":6:5:"), "{}", daemon.log());

    let good = config_text(
        &state,
        port,
        &[
            ("one", &a.path().display().to_string()),
            ("two", &b.path().display().to_string()),
        ],
    );
    std::fs::write(&config, &good).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_status("two synced after the good reload", |st| {
        (st["reload"]["succeeded"] == true).then_some(())?;
        revision_of(st, "two")
    });
    let metrics = daemon.get("/metrics").unwrap();
    assert!(
        metrics.contains("gitopsd_config_last_reload_successful 1"),
        "{metrics}"
    );
    // systemd saw each reload begin and end.
    let seen = notifications(&socket);
    let reloading = seen.iter().filter(|m| m.starts_with("RELOADING=1")).count();
    let ready_again = seen
        .iter()
        .skip_while(|m| !m.starts_with("RELOADING=1"))
        .filter(|m| m.starts_with("READY=1"))
        .count();
    assert!(reloading >= 2, "{seen:?}");
    assert!(ready_again >= reloading, "{seen:?}");
}

#[test]
fn changing_one_of_three_configurations_leaves_the_others_in_flight_syncs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, c2) = (repo("c1"), repo("c2"));
    // Two sources whose fetches hang (the server accepts and never answers) stay in flight
    // for the whole test: gitopsd gives up on a silent server after 30 s only.
    let (hang_a, hang_b) = (StallingServer::silent(), StallingServer::silent());
    let port = free_port();
    let state = dir.path().join("state");
    let config = dir.path().join("config.yaml");
    let url_a = hang_a.http_url(c1.bare());
    let url_b = hang_b.http_url(c1.bare());
    let c1_url = c1.path().display().to_string();
    let text = config_text(
        &state,
        port,
        &[("a", &url_a), ("b", &url_b), ("c", &c1_url)],
    );
    std::fs::write(&config, &text).unwrap();
    let mut daemon = start(&config, port, &dir.path().join("log"), None);
    daemon.wait_status("c synced", |st| revision_of(st, "c"));
    daemon.wait_for("both hanging fetches in flight", |_| {
        (hang_a.accepted() == 1 && hang_b.accepted() == 1).then_some(())
    });

    let c2_url = c2.path().display().to_string();
    let changed = config_text(
        &state,
        port,
        &[("a", &url_a), ("b", &url_b), ("c", &c2_url)],
    );
    std::fs::write(&config, &changed).unwrap();
    daemon.signal(libc::SIGHUP);
    let c2_revision = format!("main@sha1:{}", c2.head());
    daemon.wait_status("c on its new repository", |st| {
        (revision_of(st, "c")? == c2_revision).then_some(())
    });
    // a and b: still the one connection each, neither cancelled nor restarted.
    assert_eq!((hang_a.accepted(), hang_b.accepted()), (1, 1));
    let log = daemon.log();
    assert!(
        log.contains("configuration changed: restarting its loop configuration=default/c"),
        "{log}"
    );
    for kept in ["default/a", "default/b"] {
        assert!(
            !log.contains(&format!("restarting its loop configuration={kept}")),
            "{log}"
        );
    }
    assert!(!log.contains("fetch cancelled"), "{log}");
}

#[test]
fn a_reload_moves_the_api_to_a_new_address_and_removes_a_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (repo("a"), repo("b"));
    let (port, new_port) = (free_port(), free_port());
    let state = dir.path().join("state");
    let config = dir.path().join("config.yaml");
    let (url_a, url_b) = (
        a.path().display().to_string(),
        b.path().display().to_string(),
    );
    std::fs::write(
        &config,
        config_text(&state, port, &[("one", &url_a), ("two", &url_b)]),
    )
    .unwrap();
    let mut daemon = start(&config, port, &dir.path().join("log"), None);
    daemon.wait_status("two synced", |st| revision_of(st, "two"));
    std::fs::write(&config, config_text(&state, new_port, &[("one", &url_a)])).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.set_server(&format!("127.0.0.1:{new_port}"));
    let status = daemon.wait_status("the API on its new address", |st| {
        (names(st) == ["one"]).then(|| st.clone())
    });
    assert_eq!(status["reload"]["succeeded"], true, "{status}");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the old address still answers"
    );
    let out = daemon.client(&["status"]);
    assert!(text(&out.stdout).contains("one"), "{}", text(&out.stderr));
}
