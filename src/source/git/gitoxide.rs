//! The gix backend: ls-refs, shallow fetch into a per-source bare cache, and materialising
//! the commit's tree into the snapshot directory.

use super::refs::{self, RemoteRef, Wanted};
use crate::config::GitReference;
use gix::prelude::FindExt;
use gix::remote::Direction;
use std::fs;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// A failure, already worded for the status field (one sentence, no secret).
pub type Failure = String;

/// The refs the remote advertises under the reference's prefixes.
pub fn list_refs(
    repo: &gix::Repository,
    url: &str,
    reference: &GitReference,
) -> Result<Vec<RemoteRef>, Failure> {
    let Some(prefixes) = refs::listing_prefixes(reference) else {
        return Ok(Vec::new());
    };
    let specs: Vec<String> = prefixes.iter().map(|p| listing_spec(p)).collect();
    let remote = remote(repo, url, &specs)?;
    let connection = connect(&remote, url)?;
    let (ref_map, _handshake) = connection
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| network_error(url, &e))?;
    Ok(ref_map.remote_refs.iter().map(to_remote_ref).collect())
}

/// Fetch what `wanted` names into `repo`. Refs land under `refs/gitopsd/`, so that the
/// cache never mixes with anything a user might have configured.
pub fn fetch(
    repo: &gix::Repository,
    url: &str,
    wanted: &Wanted,
    interrupt: &AtomicBool,
) -> Result<(), Failure> {
    let specs: Vec<String> = if wanted.refs.is_empty() {
        // A bare commit: protocol v2 servers hand out any reachable object by id.
        vec![format!("{}:refs/gitopsd/commit", wanted.commit)]
    } else {
        wanted
            .refs
            .iter()
            .enumerate()
            .map(|(i, r)| format!("+{r}:refs/gitopsd/want/{i}"))
            .collect()
    };
    let remote = remote(repo, url, &specs)?;
    let connection = connect(&remote, url)?;
    let mut prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| network_error(url, &e))?;
    if wanted.shallow {
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN));
    } else if repo.is_shallow().unwrap_or(false) {
        // A commit pinned on a branch needs the branch's history to find the commit in it.
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::undo());
    }
    prepare
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| network_error(url, &e))?;
    Ok(())
}

/// Whether the fetch brought the commit (a server may answer a want for an unknown id with
/// nothing rather than an error).
pub fn has_commit(repo: &gix::Repository, commit: &str) -> bool {
    gix::ObjectId::from_hex(commit.as_bytes())
        .ok()
        .and_then(|id| repo.find_commit(id).ok())
        .is_some()
}

/// Committer time (seconds) of a fetched commit, for semver tie-breaks.
pub fn commit_time(repo: &gix::Repository, commit: &str) -> Option<i64> {
    let id = gix::ObjectId::from_hex(commit.as_bytes()).ok()?;
    let commit = repo.find_commit(id).ok()?;
    commit.time().ok().map(|t| t.seconds)
}

/// Write the files of `commit`'s tree into `dest`. Symlinks and submodules are skipped, as
/// Flux's artifacts hold regular files and directories only.
pub fn materialise(repo: &gix::Repository, commit: &str, dest: &Path) -> Result<(), Failure> {
    let describe = |e: &dyn std::fmt::Display| format!("cannot read commit {commit}: {e}");
    let id = gix::ObjectId::from_hex(commit.as_bytes()).map_err(|e| describe(&e))?;
    let commit_obj = repo.find_commit(id).map_err(|e| {
        format!("commit {commit} is not in the fetched history ({e}); check that it exists on the remote")
    })?;
    let tree = commit_obj.tree().map_err(|e| describe(&e))?;
    let mut recorder = gix::traverse::tree::Recorder::default();
    tree.traverse()
        .breadthfirst(&mut recorder)
        .map_err(|e| describe(&e))?;
    let mut buf = Vec::new();
    for entry in recorder.records {
        let rel = std::str::from_utf8(&entry.filepath)
            .map_err(|_| format!("commit {commit} has a path that is not UTF-8"))?;
        let path = dest.join(rel);
        if entry.mode.is_tree() {
            fs::create_dir_all(&path).map_err(|e| describe(&e))?;
        } else if entry.mode.is_blob() {
            let blob = repo
                .objects
                .find_blob(&entry.oid, &mut buf)
                .map_err(|e| describe(&e))?;
            write_file(&path, blob.data, entry.mode.is_executable()).map_err(|e| describe(&e))?;
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], executable: bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mode = if executable { 0o755 } else { 0o644 };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

type Connection<'a, 'r> = gix::remote::Connection<
    'a,
    'static,
    'r,
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
>;

/// Connect for fetching. `git://` gets a socket of our own with Nagle's algorithm off: the
/// client sends its request as several small packets, and with Nagle on, each waits for the
/// server's delayed ACK (40 ms on Linux), which made an unchanged poll cost ~50 ms instead of
/// a few.
fn connect<'a, 'r>(remote: &'a gix::Remote<'r>, url: &str) -> Result<Connection<'a, 'r>, Failure> {
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).ok();
    if let Some(parsed) = parsed.filter(|u| u.scheme == gix::url::Scheme::Git) {
        let transport = git_daemon_transport(&parsed).map_err(|e| {
            format!(
                "cannot fetch from {}: {}",
                refs::redact_url(url),
                super::summarise(&e.to_string())
            )
        })?;
        return Ok(remote.to_connection_with_transport(transport));
    }
    remote
        .connect(Direction::Fetch)
        .map_err(|e| network_error(url, &e))
}

fn git_daemon_transport(
    url: &gix::Url,
) -> std::io::Result<Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>> {
    use gix::protocol::transport::client::git;
    use std::net::{TcpStream, ToSocketAddrs};
    let host = url.host().unwrap_or("localhost");
    let port = url.port;
    let address = (host, port.unwrap_or(9418))
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("could not resolve {host}")))?;
    let read = TcpStream::connect_timeout(&address, std::time::Duration::from_secs(10))?;
    read.set_nodelay(true)?;
    let write = read.try_clone()?;
    Ok(Box::new(git::blocking_io::Connection::new(
        read,
        write,
        gix::protocol::transport::Protocol::V2,
        url.path.clone(),
        Some((host.to_string(), port)),
        git::ConnectMode::Daemon,
        false,
    )))
}

fn remote<'r>(
    repo: &'r gix::Repository,
    url: &str,
    specs: &[String],
) -> Result<gix::Remote<'r>, Failure> {
    let safe = refs::redact_url(url);
    repo.remote_at(url)
        .map_err(|e| format!("invalid git URL {safe}: {}", chain(&e)))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
        .map_err(|e| format!("invalid ref for {safe}: {}", chain(&e)))
}

/// A listing refspec for a prefix. Only used to list (ls-refs), never to fetch, so the
/// destination is never written; gix wants one for a glob.
fn listing_spec(prefix: &str) -> String {
    if prefix.ends_with('/') {
        format!("{prefix}*:refs/gitopsd/list/*")
    } else {
        prefix.to_string()
    }
}

fn to_remote_ref(r: &gix::protocol::handshake::Ref) -> RemoteRef {
    use gix::protocol::handshake::Ref;
    match r {
        Ref::Peeled {
            full_ref_name,
            object,
            ..
        }
        | Ref::Direct {
            full_ref_name,
            object,
        } => RemoteRef {
            name: full_ref_name.to_string(),
            commit: object.to_hex().to_string(),
            symref_target: None,
        },
        Ref::Symbolic {
            full_ref_name,
            target,
            object,
            ..
        } => RemoteRef {
            name: full_ref_name.to_string(),
            commit: object.to_hex().to_string(),
            symref_target: Some(target.to_string()),
        },
        // An unborn HEAD has no commit yet; resolution reports the empty repository.
        Ref::Unborn {
            full_ref_name,
            target,
        } => RemoteRef {
            name: full_ref_name.to_string(),
            commit: String::new(),
            symref_target: Some(target.to_string()),
        },
    }
}

fn network_error(url: &str, e: &(dyn std::error::Error + 'static)) -> Failure {
    format!(
        "cannot fetch from {}: {}",
        refs::redact_url(url),
        super::summarise(&chain(e))
    )
}

/// An error and its causes on one line, each distinct message once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let msg = err.to_string();
        let msg = msg.lines().next().unwrap_or("").trim().to_string();
        if !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}
