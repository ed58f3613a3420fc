//! Smoke tests of the test harness itself: every server really serves git, and every process
//! it starts is gone after the server is dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::thread;

use crate::support::{file_url, git, git_command, git_output, GitDaemon, HttpGitServer, Repo};

/// A repository with two commits on main and a lightweight and an annotated tag, published
/// to its bare mirror.
fn sample_repo() -> Repo {
    let repo = Repo::new();
    repo.write("README.md", "hello\n");
    repo.write("deploy/app/kustomization.yaml", "resources: []\n");
    repo.commit("first");
    repo.write_exec("bin/run.sh", "#!/bin/sh\necho run\n");
    repo.write("README.md", "hello again\n");
    repo.commit("second");
    repo.tag("v1.0.0");
    repo.tag_annotated("v1.0.1", "release 1.0.1");
    repo.push_all();
    repo
}

/// `git clone --depth 1 <url>` into a temp dir; returns the clone's HEAD.
fn shallow_clone_head(url: &str) -> String {
    let dest = tempfile::tempdir().unwrap();
    let target = dest.path().join("clone");
    git(
        dest.path(),
        ["clone", "-q", "--depth", "1", url, target.to_str().unwrap()],
    );
    assert_eq!(
        git(&target, ["rev-list", "--count", "HEAD"]),
        "1",
        "clone is shallow"
    );
    git(&target, ["rev-parse", "HEAD"])
}

fn ls_remote(url: &str) -> String {
    git(std::env::temp_dir(), ["ls-remote", url])
}

/// Status line of a plain `GET path` to the server on 127.0.0.1:`port`.
fn http_status(port: u16, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer.lines().next().unwrap_or_default().to_string()
}

/// The process group exists (some member is alive or unreaped).
fn group_alive(pgid: u32) -> bool {
    let pgid = libc::pid_t::try_from(pgid).unwrap();
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(-pgid, 0) == 0 }
}

#[test]
fn repo_history_is_deterministic_and_ordered() {
    let a = sample_repo();
    let b = sample_repo();
    assert_eq!(a.head(), b.head(), "same steps give the same shas");
    assert_eq!(a.head().len(), 40);
    assert_eq!(
        a.rev_parse("v1.0.1"),
        b.rev_parse("v1.0.1"),
        "annotated tags too"
    );
    assert_ne!(
        a.rev_parse("v1.0.1"),
        a.head(),
        "annotated tag is its own object"
    );
    assert_eq!(a.rev_parse("v1.0.1^{commit}"), a.head());
    let dates = a.git(["log", "--format=%ct %at", "main"]);
    let dates: Vec<&str> = dates.lines().collect();
    assert_eq!(dates, ["1700000060 1700000060", "1700000000 1700000000"]);

    let mode = a.git(["ls-files", "-s", "bin/run.sh"]);
    assert!(
        mode.starts_with("100755 "),
        "write_exec makes it executable: {mode}"
    );

    assert_eq!(a.bare().rev_parse("refs/heads/main"), a.head());
    assert_eq!(a.bare().rev_parse("refs/tags/v1.0.0"), a.head());
}

#[test]
fn repo_branches_removals_and_push_all() {
    let repo = sample_repo();
    let main = repo.head();
    repo.branch("dev");
    repo.checkout("dev");
    repo.remove("deploy");
    repo.mkdir("empty/dir");
    repo.symlink("link", "README.md");
    let dev = repo.commit("dev work");
    assert_ne!(dev, main);
    assert_eq!(
        repo.git(["ls-tree", "--name-only", "HEAD"]),
        "README.md\nbin\nlink"
    );
    repo.checkout("main");
    assert_eq!(repo.head(), main);

    // Not yet published: the bare mirror has no dev branch.
    assert!(!git_output(
        repo.bare().path(),
        ["rev-parse", "--verify", "-q", "refs/heads/dev"]
    )
    .status
    .success());
    repo.git(["tag", "-d", "v1.0.0"]);
    repo.push_all();
    assert_eq!(repo.bare().rev_parse("refs/heads/dev"), dev);
    let tags = repo.bare().git(["tag", "--list"]);
    assert_eq!(
        tags, "v1.0.1",
        "a tag deleted in the work repo is deleted when published"
    );
}

#[test]
fn file_url_serves_the_bare_repo() {
    let repo = sample_repo();
    let url = file_url(repo.bare());
    assert!(url.starts_with("file:///"), "{url}");
    assert_eq!(url, repo.bare().file_url());
    assert_eq!(shallow_clone_head(&url), repo.head());
}

#[test]
fn git_daemon_serves_the_bare_repo() {
    let repo = sample_repo();
    let daemon = GitDaemon::start();
    let url = daemon.serve(repo.bare());
    assert_eq!(url, format!("git://127.0.0.1:{}/repo.git", daemon.port()));
    assert_eq!(shallow_clone_head(&url), repo.head());

    // Live: a new commit published afterwards is served without a restart.
    repo.write("README.md", "third\n");
    let third = repo.commit("third");
    repo.push_all();
    assert!(ls_remote(&url).contains(&format!("{third}\trefs/heads/main")));
}

#[test]
fn http_serves_the_bare_repo_over_protocol_v2() {
    let repo = sample_repo();
    let (server, url) = HttpGitServer::serving(repo.bare());
    assert_eq!(
        url,
        format!("http://127.0.0.1:{}/git/repo.git", server.port())
    );
    assert_eq!(shallow_clone_head(&url), repo.head(), "{}", server.logs());

    let refs = ls_remote(&url);
    let head = repo.head();
    assert!(
        refs.contains(&format!("{head}\trefs/tags/v1.0.0")),
        "{refs}"
    );
    let annotated = repo.rev_parse("v1.0.1");
    assert!(
        refs.contains(&format!("{annotated}\trefs/tags/v1.0.1")),
        "{refs}"
    );
    assert!(
        refs.contains(&format!("{head}\trefs/tags/v1.0.1^{{}}")),
        "{refs}"
    );

    let output = git_command(std::env::temp_dir())
        .env("GIT_TRACE_PACKET", "1")
        .args(["-c", "protocol.version=2", "ls-remote", &url])
        .output()
        .unwrap();
    assert!(output.status.success());
    let trace = String::from_utf8_lossy(&output.stderr);
    assert!(
        trace.contains("git< version 2"),
        "server speaks protocol v2:\n{trace}"
    );
}

#[test]
fn http_basic_auth_location_requires_the_password() {
    let repo = sample_repo();
    let server = HttpGitServer::builder()
        .basic_auth("fleet", "s3cret/pw")
        .start();
    let open = server.serve(repo.bare());
    assert_eq!(shallow_clone_head(&open), repo.head());

    let denied = git_output(
        std::env::temp_dir(),
        ["ls-remote", &server.auth_url("repo")],
    );
    assert!(!denied.status.success());
    let stderr = String::from_utf8_lossy(&denied.stderr);
    // With prompts disabled, git answers a 401 by failing to ask for a user name.
    assert!(stderr.contains("could not read Username"), "{stderr}");
    let status = http_status(server.port(), "/auth/git/repo.git/info/refs");
    assert_eq!(status, "HTTP/1.1 401 Unauthorized");
    assert_eq!(
        http_status(server.port(), "/git/repo.git/info/refs"),
        "HTTP/1.1 200 OK"
    );

    let url = server.auth_url_with_credentials("repo");
    assert!(url.contains("fleet:s3cret%2Fpw@"), "{url}");
    assert_eq!(shallow_clone_head(&url), repo.head(), "{}", server.logs());
}

#[test]
fn servers_start_in_parallel_on_distinct_ports() {
    let repo = sample_repo();
    let head = repo.head();
    let ports: Vec<(u16, String)> = thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let repo = &repo;
                let head = &head;
                scope.spawn(move || {
                    let daemon = GitDaemon::start();
                    let http = HttpGitServer::start();
                    let daemon_url = daemon.serve(repo.bare());
                    let http_url = http.serve(repo.bare());
                    assert_eq!(&shallow_clone_head(&daemon_url), head);
                    assert_eq!(&shallow_clone_head(&http_url), head);
                    vec![(daemon.port(), daemon_url), (http.port(), http_url)]
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().unwrap())
            .collect()
    });
    let mut distinct: Vec<u16> = ports.iter().map(|(port, _)| *port).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
}

#[test]
fn dropped_servers_leave_no_process_behind() {
    let repo = sample_repo();
    let daemon = GitDaemon::start();
    let http = HttpGitServer::start();
    // Have them fork workers and backends before stopping.
    shallow_clone_head(&daemon.serve(repo.bare()));
    shallow_clone_head(&http.serve(repo.bare()));
    let mut groups = vec![daemon.process_group()];
    groups.extend(http.process_groups());
    let dirs = [
        daemon.base_path().to_path_buf(),
        http.project_root().to_path_buf(),
    ];
    for &group in &groups {
        assert!(group_alive(group));
    }
    drop(daemon);
    drop(http);
    for &group in &groups {
        assert!(!group_alive(group), "process group {group} still exists");
    }
    for dir in dirs {
        assert!(
            !Path::new(&dir).exists(),
            "temp dir removed: {}",
            dir.display()
        );
    }
}

#[test]
fn a_panicking_test_still_stops_its_servers() {
    let groups = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let daemon = GitDaemon::start();
        let http = HttpGitServer::start();
        let mut held = groups.lock().unwrap();
        held.push(daemon.process_group());
        held.extend(http.process_groups());
        drop(held);
        panic!("test failure while servers run");
    });
    assert!(result.is_err());
    let groups = groups.into_inner().unwrap();
    assert_eq!(groups.len(), 3);
    for group in groups {
        assert!(!group_alive(group), "process group {group} still exists");
    }
}

#[test]
fn gitopsd_binary_is_built() {
    let bin = crate::support::gitopsd_bin();
    assert!(bin.is_file(), "{}", bin.display());
}

/// The applier's tests need a cluster that runs workloads: controllers, a scheduler and a node.
/// This checks the chain the harness builds (kube-controller-manager, kube-scheduler, kwok with
/// its stage definitions, a fake node): a Deployment of 2 replicas gets its ReplicaSet and pods,
/// the pods land on the kwok node and become Ready, and the Deployment reports both available.
#[test]
fn a_cluster_with_workers_rolls_out_a_deployment_on_the_kwok_node() {
    use crate::support::kube::{KubeCluster, FAKE_NODE};
    let cluster = KubeCluster::start_with_workers();
    let namespace = cluster.create_namespace("rollout");
    cluster.apply_json(serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": "web", "namespace": namespace },
        "spec": {
            "replicas": 2,
            "selector": { "matchLabels": { "app": "web" } },
            "template": {
                "metadata": { "labels": { "app": "web" } },
                // kwok runs no containers: the image is never pulled.
                "spec": { "containers": [{ "name": "web", "image": "registry.invalid/web:1" }] },
            },
        },
    }));
    // Generous: on a busy 2-core machine the node, the scheduler and the controllers each take
    // their time; this bounds a hang, it does not measure anything.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(240);
    loop {
        let deployment = cluster
            .get_json("apps/v1", "Deployment", Some(&namespace), "web")
            .expect("the Deployment exists");
        if deployment["status"]["availableReplicas"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the Deployment never became available; last status: {}",
            deployment["status"]
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for pod in cluster.list_json("v1", "Pod", Some(&namespace)) {
        assert_eq!(
            pod["spec"]["nodeName"], FAKE_NODE,
            "pod {}",
            pod["metadata"]["name"]
        );
        assert_eq!(
            pod["status"]["phase"], "Running",
            "pod {}",
            pod["metadata"]["name"]
        );
    }
}
