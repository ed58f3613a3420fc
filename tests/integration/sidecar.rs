//! `gitopsd sync`, the sidecar's flag-only mode, end to end against the nginx smart-HTTP git
//! server: flags and `GITOPSD_*` variables, bad input, the no-symlink publish seen whole by a
//! reader polling during swaps, and a run the way the container image runs it (uid 65532,
//! environment only, everything read-only but the state dir and DEST).

use crate::support::{free_port, gitopsd_bin, text, HttpGitServer, Repo, Running};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write("a", "r0\n");
    repo.write("b", "r0\n");
    repo.commit("r0");
    repo.push_all();
    repo
}

/// `gitopsd sync` with `args` and only the `GITOPSD_*` variables given.
fn sync(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(gitopsd_bin());
    command.arg("sync").args(args).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("GITOPSD_") {
            command.env_remove(key);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

#[test]
fn flags_sync_a_repository_once_into_dest() {
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let state = dir.path().join("state");
    let out = sync(
        &[
            "--url",
            &url,
            "--ref",
            "main",
            "--dest",
            dest.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--once",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(dest.join("current/a")).unwrap(),
        "r0\n"
    );
    let target = std::fs::read_link(dest.join("current")).unwrap();
    assert_eq!(target, Path::new(".revisions").join(repo.head()));
}

#[test]
fn environment_variables_alone_sync_a_repository_without_symlinks() {
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let state = dir.path().join("state");
    let out = sync(
        &[],
        &[
            ("GITOPSD_URL", &url),
            ("GITOPSD_REF", "main"),
            ("GITOPSD_DEST", dest.to_str().unwrap()),
            ("GITOPSD_STATE_DIR", state.to_str().unwrap()),
            ("GITOPSD_NO_SYMLINK", "true"),
            ("GITOPSD_ONCE", "true"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(std::fs::symlink_metadata(&dest).unwrap().is_dir());
    assert_eq!(std::fs::read_to_string(dest.join("b")).unwrap(), "r0\n");
    assert_eq!(
        std::fs::read_to_string(dest.join(".gitopsd-revision"))
            .unwrap()
            .trim(),
        repo.head()
    );
}

#[test]
fn bad_input_is_one_sentence_and_exit_2_with_nothing_published() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let state = dir.path().join("state");
    let common = [
        ("GITOPSD_URL", "https://git.example.com/fleet"),
        ("GITOPSD_STATE_DIR", state.to_str().unwrap()),
    ];
    // A malformed variable: named, with the flag it stands for.
    let mut env = common.to_vec();
    env.extend([
        ("GITOPSD_DEST", dest.to_str().unwrap()),
        ("GITOPSD_INTERVAL", "5x"),
    ]);
    let out = sync(&["--once"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --interval (GITOPSD_INTERVAL): "),
        "{stderr}"
    );
    // A missing --dest.
    let out = sync(&["--once"], &common);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--dest"),
        "{}",
        text(&out.stderr)
    );
    // A DEST that cannot be written: a file where its parent should be.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let mut env = common.to_vec();
    let unwritable = dir.path().join("file/dest");
    env.push(("GITOPSD_DEST", unwritable.to_str().unwrap()));
    let out = sync(&["--once"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: --dest (GITOPSD_DEST) "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    // A malformed boolean is clap's usage error, exit 2 too.
    let mut env = common.to_vec();
    env.extend([
        ("GITOPSD_DEST", dest.to_str().unwrap()),
        ("GITOPSD_ONCE", "maybe"),
    ]);
    assert_eq!(sync(&[], &env).status.code(), Some(2));
    assert!(!dest.exists(), "nothing published");
}

#[test]
fn a_reader_polling_during_no_symlink_swaps_always_sees_one_whole_revision() {
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let state = dir.path().join("state");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let args: Vec<std::ffi::OsString> = [
        "sync",
        "--url",
        &url,
        "--ref",
        "main",
        "--no-symlink",
        "--interval",
        "1s",
        "--listen",
        &listen,
        "--dest",
        dest.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.into())
    .collect();
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|s| s.as_os_str()).collect();
    let mut daemon = Running::start(&args, &listen, &dir.path().join("log"));
    daemon.wait_for("the first publish", |_| {
        dest.join("a").is_file().then_some(())
    });

    // The reader opens DEST, then reads both files through that open directory, as a
    // consumer that walks a tree does; both must come from the same revision, every time.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (dest, stop) = (dest.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeSet::new();
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let handle = std::fs::File::open(&dest).expect("DEST always exists");
                let fd = std::os::unix::io::AsRawFd::as_raw_fd(&handle);
                let at = |name: &str| PathBuf::from(format!("/proc/self/fd/{fd}/{name}"));
                let a = std::fs::read_to_string(at("a")).expect("a always exists");
                let b = std::fs::read_to_string(at("b")).expect("b always exists");
                assert_eq!(a, b, "a and b from different revisions");
                seen.insert(a);
                reads += 1;
            }
            (seen, reads)
        })
    };
    for n in 1..=4 {
        repo.write("a", format!("r{n}\n"));
        repo.write("b", format!("r{n}\n"));
        repo.commit(&format!("r{n}"));
        repo.push_all();
        let want = format!("r{n}\n");
        daemon.wait_for("the new revision published", |_| {
            (std::fs::read_to_string(dest.join("a")).ok()? == want).then_some(())
        });
    }
    stop.store(true, Ordering::Relaxed);
    let (seen, reads) = reader.join().expect("the reader saw whole revisions only");
    assert!(seen.contains("r4\n") && reads > 0, "{seen:?}");
    // Beside DEST: the previous revision (kept for readers still inside it), no temp dirs.
    let mut beside: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dest"))
        .collect();
    beside.sort();
    assert_eq!(beside, [".dest.previous"]);
    let previous = dir.path().join(".dest.previous/a");
    assert_eq!(std::fs::read_to_string(previous).unwrap(), "r3\n");
}

/// The image's user.
const IMAGE_UID: u32 = 65532;

#[test]
fn runs_as_the_image_does_non_root_env_only_read_only_but_state_and_dest() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch to uid {IMAGE_UID} and mount read-only");
        return;
    }
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let shared = dir.path().join("shared"); // the emptyDir both containers mount
    for d in [&state, &shared] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(IMAGE_UID), Some(IMAGE_UID)).unwrap();
    }
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dest = shared.join("app");
    let c = |p: &Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (root, state_c, shared_c) = (c(Path::new("/")), c(&state), c(&shared));
    // The image's binary is world-readable in /usr/bin; the one cargo built may sit under a
    // directory only root may enter (CI's target dir lives in root's home), so a copy runs.
    let binary = dir.path().join("gitopsd");
    std::fs::copy(gitopsd_bin(), &binary).unwrap();
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut command = Command::new(&binary);
    command
        .arg("sync")
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &state)
        .env("GITOPSD_URL", &url)
        .env("GITOPSD_DEST", &dest)
        .env("GITOPSD_STATE_DIR", &state)
        .env("GITOPSD_ONCE", "true")
        .stdin(Stdio::null());
    // SAFETY: only async-signal-safe system calls between fork and exec, on strings made
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            let null: *const libc::c_char = std::ptr::null();
            let no_data: *const libc::c_void = std::ptr::null();
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                no_data,
            ))?;
            // The writable places become mounts of their own, then the root goes read-only.
            for w in [&state_c, &shared_c] {
                check(libc::mount(
                    w.as_ptr(),
                    w.as_ptr(),
                    null,
                    libc::MS_BIND,
                    no_data,
                ))?;
            }
            check(libc::mount(
                null,
                root.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                no_data,
            ))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setgid(IMAGE_UID))?;
            check(libc::setuid(IMAGE_UID))?;
            Ok(())
        });
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("current/a")).unwrap(),
        "r0\n"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dest.join("current/a")).unwrap().uid(),
        IMAGE_UID
    );
}

/// What a receiver answered (status) and was sent (body), request by request.
type Received = Arc<std::sync::Mutex<Vec<(u16, String)>>>;

/// A local HTTP receiver: answers 500 to its first request and 200 after, keeping each body.
fn receiver() -> (String, Received) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut seen = log.lock().unwrap();
            let status = if seen.is_empty() { 500 } else { 200 };
            seen.push((status, String::from_utf8_lossy(&body).into_owned()));
            let _ = write!(
                &stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (url, seen)
}

#[test]
fn exec_and_webhook_hooks_run_after_a_publish_and_are_retried_until_they_succeed() {
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("dest");
    let state = dir.path().join("state");
    // Fails its first run, then records what it was told.
    let hook = dir.path().join("hook.sh");
    let calls = dir.path().join("calls");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\necho \"$GITOPSD_SOURCE $GITOPSD_REVISION $GITOPSD_DIRECTORY\" >> {calls}\n\
             [ \"$(wc -l < {calls})\" -gt 1 ]\n",
            calls = calls.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (webhook, received) = receiver();
    let out = sync(
        &[
            "--url",
            &url,
            "--dest",
            dest.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--exechook-command",
            hook.to_str().unwrap(),
            "--webhook-url",
            &webhook,
            "--hook-timeout",
            "10s",
            "--once",
        ],
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let revision = format!("main@sha1:{}", repo.head());
    let current = dest.join("current");
    let calls = std::fs::read_to_string(&calls).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 2, "one failure, one retry: {calls}");
    assert_eq!(
        lines[1],
        format!("default/sync {revision} {}", current.display())
    );
    let received = received.lock().unwrap().clone();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!((received[0].0, received[1].0), (500, 200));
    let body: serde_json::Value = serde_json::from_str(&received[1].1).unwrap();
    assert_eq!(body["revision"], revision.as_str());
    assert_eq!(body["directory"], current.to_str().unwrap());
    let log = text(&out.stderr);
    assert!(log.contains("exec hook failed, retrying"), "{log}");
    assert!(log.contains("webhook failed, retrying"), "{log}");
}

#[test]
fn a_hook_that_hangs_is_killed_at_its_timeout() {
    let repo = repo();
    let (_server, url) = HttpGitServer::serving(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let hook = dir.path().join("hang.sh");
    std::fs::write(&hook, "#!/bin/sh\nexec sleep 600\n").unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let dest = dir.path().join("dest");
    let out = sync(
        &[
            "--url",
            &url,
            "--dest",
            dest.to_str().unwrap(),
            "--state-dir",
            dir.path().join("state").to_str().unwrap(),
            "--exechook-command",
            hook.to_str().unwrap(),
            "--hook-timeout",
            "1s",
            "--once",
        ],
        &[],
    );
    // The publish stands; the hook's failure is logged, one sentence per attempt.
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(dest.join("current/a").is_file());
    let log = text(&out.stderr);
    assert!(log.contains("did not finish within 1s"), "{log}");
    assert!(log.contains("exec hook failed 5 times, giving up"), "{log}");
}
