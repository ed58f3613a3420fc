//! The gix backend: ls-refs, shallow fetch into a per-source bare cache, and materialising
//! the commit's tree into the snapshot directory.

use super::cancel::{Watch, WatchedPipe, WatchedSocket, CONNECT_LIMIT, STALL_LIMIT};
use super::error::{self, untyped, GitError, Problem};
use super::refs::{self, RemoteRef, Wanted};
use crate::config::GitReference;
use gix::protocol::transport::client::blocking_io::http as transport_http;
use gix::remote::Direction;
use std::fs;
use std::io::Write;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The refs the remote advertises under the reference's prefixes.
pub fn list_refs(
    repo: &gix::Repository,
    url: &str,
    reference: &GitReference,
    interrupt: &AtomicBool,
    session: &Session,
) -> Result<Vec<RemoteRef>, GitError> {
    let Some(prefixes) = refs::listing_prefixes(reference) else {
        return Ok(Vec::new());
    };
    let specs: Vec<String> = prefixes.iter().map(|p| listing_spec(p)).collect();
    let remote = remote(repo, url, &specs)?;
    let connection = connect(&remote, url, session, Watch::new(interrupt))?;
    let (ref_map, _handshake) = connection
        .ref_map(gix::progress::Discard, Default::default())
        .map_err(|e| session.failure(url, &e))?;
    Ok(ref_map.remote_refs.iter().map(to_remote_ref).collect())
}

/// Fetch what `wanted` names into `repo`. Refs land under `refs/gitopsd/`, so that the
/// cache never mixes with anything a user might have configured.
pub fn fetch(
    repo: &gix::Repository,
    url: &str,
    wanted: &Wanted,
    interrupt: &AtomicBool,
    session: &Session,
) -> Result<(), GitError> {
    let specs = wanted.refspecs();
    let remote = remote(repo, url, &specs)?;
    let connection = connect(&remote, url, session, Watch::new(interrupt))?;
    let mut prepare = connection
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| session.failure(url, &e))?;
    if wanted.shallow {
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(NonZeroU32::MIN));
    } else if repo.is_shallow().unwrap_or(false) {
        // A commit pinned on a branch needs the branch's history to find the commit in it.
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::undo());
    }
    prepare
        .receive(gix::progress::Discard, interrupt)
        .map_err(|e| session.failure(url, &e))?;
    Ok(())
}

/// The gix implementation of [`super::Backend`]: the cache repository and this sync's
/// credentials session.
pub struct Backend {
    pub repo: gix::Repository,
    pub session: Session,
}

impl super::Backend for Backend {
    fn list_refs(
        &self,
        url: &str,
        reference: &GitReference,
        interrupt: &AtomicBool,
    ) -> Result<Vec<RemoteRef>, GitError> {
        list_refs(&self.repo, url, reference, interrupt, &self.session)
    }
    fn fetch(&self, url: &str, wanted: &Wanted, interrupt: &AtomicBool) -> Result<(), GitError> {
        fetch(&self.repo, url, wanted, interrupt, &self.session)
    }
    fn has_commit(&self, commit: &str) -> bool {
        has_commit(&self.repo, commit)
    }
    fn commit_time(&self, commit: &str) -> Option<i64> {
        commit_time(&self.repo, commit)
    }
    fn is_shallow(&self) -> bool {
        self.repo.is_shallow().unwrap_or(false)
    }
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

/// A transport may borrow the fetch's interrupt flag (`'i`, see [`Watch`]).
type BoxedTransport<'i> =
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send + 'i>;

type Connection<'a, 'r, 'i> = gix::remote::Connection<'a, 'static, 'r, BoxedTransport<'i>>;

/// Connect for fetching. `git://` gets a socket of our own with Nagle's algorithm off: the
/// client sends its request as several small packets, and with Nagle on, each waits for the
/// server's delayed ACK (40 ms on Linux), which made an unchanged poll cost ~50 ms instead of
/// a few.
///
/// The connections gitopsd makes itself (`git://`, ssh) give up once `watch` says so; curl
/// gets its low-speed limit (see [`super::cancel`]).
fn connect<'a, 'r, 'i>(
    remote: &'a gix::Remote<'r>,
    url: &str,
    session: &Session,
    watch: Watch<'i>,
) -> Result<Connection<'a, 'r, 'i>, GitError> {
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).ok();
    if let Some(parsed) = parsed
        .as_ref()
        .filter(|u| u.scheme == gix::url::Scheme::Git)
    {
        let transport = git_daemon_transport(parsed, watch)
            .map_err(|e| GitError::new(url, error::classify(&e, None)))?;
        return Ok(remote.to_connection_with_transport(transport));
    }
    if let (Some(parsed), Some(ssh)) = (
        parsed
            .as_ref()
            .filter(|u| u.scheme == gix::url::Scheme::Ssh),
        &session.ssh,
    ) {
        let transport = ssh_transport(parsed, ssh, watch).map_err(|e| session.failure(url, &e))?;
        return Ok(remote.to_connection_with_transport(transport));
    }
    let proxy = crate::source::proxy::for_url(url);
    // Plain http through a proxy goes through our own client too: curl keeps the connection
    // to the proxy for the next request, and when the proxy has closed it meanwhile (tinyproxy
    // always does, without saying so), curl must send the POST body again, which gix's
    // transport cannot rewind ("Send failed since rewinding of the data stream failed").
    let plain_via_proxy = proxy.is_some() && url.to_ascii_lowercase().starts_with("http://");
    if session.client_tls.is_some() || plain_via_proxy {
        use gix::protocol::transport::client::blocking_io::http;
        use gix::protocol::transport::client::TransportWithoutIO;
        let client = match &session.client_tls {
            Some((cert, key)) => mtls::Client::new(
                cert,
                key.expose(),
                session.ca_pem.as_deref(),
                proxy.clone(),
                watch,
            )
            .map_err(|e| GitError::new(url, e))?,
            None => mtls::Client::plain(proxy.clone(), watch),
        };
        let parsed = gix::url::parse(gix::bstr::BStr::new(url))
            .map_err(|_| GitError::new(url, Problem::UnparsableUrl))?;
        let mut transport = http::Transport::new_http(
            client,
            parsed,
            gix::protocol::transport::Protocol::V2,
            false,
        );
        // Over plain http the credentials already go as a header (see `Session::prepare`);
        // gix refuses an identity there.
        if let Some((username, password)) = session.basic.as_ref().filter(|_| !plain_via_proxy) {
            transport
                .set_identity(gix::sec::identity::Account {
                    username: username.clone(),
                    password: password.clone(),
                    oauth_refresh_token: None,
                })
                .map_err(|e| GitError::new(url, error::classify(&e, proxy.as_ref())))?;
        }
        let transport: BoxedTransport<'i> = Box::new(transport);
        let connection = remote.to_connection_with_transport(transport);
        return Ok(connection.with_credentials(credentials_callback(session.basic.clone())));
    }
    if !is_http(url) {
        let connection = remote
            .connect(Direction::Fetch)
            .map_err(|e| session.failure(url, &e))?;
        return Ok(connection.with_credentials(credentials_callback(session.basic.clone())));
    }
    // gix's curl transport, with the ref advertisement filtered (see `FilteredCurl`).
    let (parsed, version) = remote
        .sanitized_url_and_version(Direction::Fetch)
        .map_err(|e| session.failure(url, &e))?;
    let transport = transport_http::Transport::new_http(
        FilteredCurl(Default::default()),
        parsed,
        version,
        false,
    );
    let transport: BoxedTransport<'i> = Box::new(transport);
    let mut connection = remote.to_connection_with_transport(transport);
    connection.set_transport_options(http_options(remote.repo(), url, proxy.as_ref())?);
    Ok(connection.with_credentials(credentials_callback(session.basic.clone())))
}

/// gix's curl client with [`WithoutDeepenRelative`] on its answers to `GET .../info/refs`,
/// where a protocol v0 server lists its capabilities; everything else passes through.
struct FilteredCurl(transport_http::curl::Curl);

type CurlHttp = transport_http::curl::Curl;

impl transport_http::Http for FilteredCurl {
    type Headers = <CurlHttp as transport_http::Http>::Headers;
    type ResponseBody =
        std::io::BufReader<WithoutDeepenRelative<<CurlHttp as transport_http::Http>::ResponseBody>>;
    type PostBody = <CurlHttp as transport_http::Http>::PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<transport_http::GetResponse<Self::Headers, Self::ResponseBody>> {
        let response = self.0.get(url, base_url, headers)?;
        Ok(transport_http::GetResponse {
            headers: response.headers,
            body: std::io::BufReader::new(WithoutDeepenRelative::new(response.body)),
        })
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        body: transport_http::PostBodyDataKind,
    ) -> gix::error::Result<
        transport_http::PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>,
    > {
        let response = self.0.post(url, base_url, headers, body)?;
        Ok(transport_http::PostResponse {
            post_body: response.post_body,
            headers: response.headers,
            body: std::io::BufReader::new(WithoutDeepenRelative::passthrough(response.body)),
        })
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result<()> {
        self.0.configure(config)
    }
}

fn is_http(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// The curl transport's options for `url`: what the cache repository's configuration says
/// (the bearer header, the CA file), with the proxy decided by [`crate::source::proxy`].
///
/// Left alone, gix would take the proxy from `http.proxy` in the machine's git configuration
/// or from its own reading of the environment (where `http_proxy` also serves https URLs),
/// and curl would then apply `NO_PROXY` its own way. So the proxy is always set explicitly:
/// the chosen URL, or an empty one, which makes curl use none and skip the environment; and
/// curl's own `NO_PROXY` is an empty list, as the rule has applied it already. The proxy
/// URL's credentials reach curl inside the URL (gix's proxy authentication would ask the
/// machine's git credential helpers, which a daemon must never do), as Basic from the first
/// request: curl's default probes without them first, and a proxy that closes the connection
/// after its 407 (tinyproxy does) then fails the CONNECT.
fn http_options(
    repo: &gix::Repository,
    url: &str,
    proxy: Option<&crate::source::proxy::Proxy>,
) -> Result<Box<dyn std::any::Any>, GitError> {
    use gix::protocol::transport::client::blocking_io::http::Options;
    let configured = repo.transport_options(url, None).map_err(|e| {
        let detail = crate::error::chain_lines(&e);
        let detail = proxy.map_or(detail.clone(), |p| p.scrub(&detail));
        GitError::new(url, Problem::HttpSettings(detail))
    })?;
    let mut options = configured
        .and_then(|o| o.downcast::<Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    options.proxy = Some(proxy.map(|p| p.url().to_string()).unwrap_or_default());
    options.no_proxy = Some(String::new());
    options.proxy_authenticate = None;
    // A server that stops sending must not hold the fetch thread: curl drops a transfer
    // slower than a byte a second for the stall limit (see `super::cancel`).
    options.low_speed_limit_bytes_per_second = 1;
    options.low_speed_time_seconds = STALL_LIMIT.as_secs();
    options.connect_timeout = Some(CONNECT_LIMIT);
    if proxy.is_some_and(|p| p.credentials().is_some()) {
        use gix::protocol::transport::client::blocking_io::http::options::ProxyAuthMethod;
        options.proxy_auth_method = ProxyAuthMethod::Basic;
    }
    Ok(Box::new(options))
}

/// Always our own callback: gix's default would run the machine's git credential helpers and
/// could prompt, which a daemon must never do.
fn credentials_callback(
    basic: Option<(String, String)>,
) -> impl FnMut(
    gix::credentials::helper::Action,
) -> gix::Result<Option<gix::credentials::protocol::Outcome>> {
    move |action| {
        use gix::credentials::helper::{Action, NextAction};
        match (action, &basic) {
            (Action::Get(context), Some((username, password))) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: username.clone(),
                        password: password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: NextAction::from(context),
                }))
            }
            _ => Ok(None),
        }
    }
}

fn git_daemon_transport<'i>(
    url: &gix::Url,
    watch: Watch<'i>,
) -> std::io::Result<BoxedTransport<'i>> {
    use gix::protocol::transport::client::git;
    use std::net::{TcpStream, ToSocketAddrs};
    let host = url.host().unwrap_or("localhost");
    let port = url.port;
    let unresolvable = || std::io::Error::other(error::Unresolvable(host.to_string()));
    let address = (host, port.unwrap_or(9418))
        .to_socket_addrs()
        .map_err(|_| unresolvable())?
        .next()
        .ok_or_else(unresolvable)?;
    let read = TcpStream::connect_timeout(&address, CONNECT_LIMIT)?;
    read.set_nodelay(true)?;
    let read = WatchedSocket::new(read, watch)?;
    let write = read.try_clone()?;
    Ok(Box::new(git::blocking_io::Connection::new(
        WithoutDeepenRelative::new(read),
        write,
        gix::protocol::transport::Protocol::V2,
        url.path.clone(),
        Some((host.to_string(), port)),
        git::ConnectMode::Daemon,
        false,
    )))
}

/// Git over SSH through a process of our own: the session's `ssh` wrapper running
/// `git-upload-pack` on the server, its stdout and stdin the connection.
///
/// gix's own ssh transport waits up to 5 ms for an error on ssh's stderr after every read
/// that returns less than was asked for, and reads from a pipe nearly always do: that capped
/// a pack download at a few MB/s (README, Performance). Here ssh's stderr goes to a file that
/// [`Session::failure`] reads when the connection fails.
fn ssh_transport<'i>(
    url: &gix::Url,
    ssh: &SshSession,
    watch: Watch<'i>,
) -> std::io::Result<BoxedTransport<'i>> {
    use gix::protocol::transport::client::git;
    use std::process::{Command, Stdio};
    let host = url
        .host()
        .ok_or_else(|| std::io::Error::other("the URL names no host"))?;
    let destination = match url.user() {
        Some(user) => format!("{user}@{host}"),
        None => host.to_string(),
    };
    let mut path = url.path.to_string();
    // `ssh://host/~user/repo` means a path relative to a home directory, as in git.
    if path.starts_with("/~") {
        path.remove(0);
    }
    let stderr = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&ssh.remote_stderr)?;
    let mut command = Command::new(&ssh.program);
    if let Some(port) = url.port {
        command.arg("-p").arg(port.to_string());
    }
    command
        .args(["-o", "SendEnv=GIT_PROTOCOL", "--", &destination])
        .arg(format!("git-upload-pack {}", shell_quote(&path)))
        .env("GIT_PROTOCOL", "version=2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn()?;
    let stdin = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");
    Ok(Box::new(git::blocking_io::Connection::new(
        SshOutput {
            stdout: WithoutDeepenRelative::new(WatchedPipe::new(stdout, watch)),
            child,
        },
        stdin,
        gix::protocol::transport::Protocol::V2,
        url.path.clone(),
        None::<(String, Option<u16>)>,
        git::ConnectMode::Process,
        false,
    )))
}

/// `text` in single quotes for the remote shell, as git quotes the path it asks for.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// ssh's stdout; the process is stopped and reaped with the connection, which is also how a
/// cancelled or stalled fetch ends an ssh session that is still waiting for the server.
/// (Requests are written to ssh's stdin unwatched: they are small, and ssh reads them into
/// its own buffers whatever the server does.)
struct SshOutput<'i> {
    stdout: WithoutDeepenRelative<WatchedPipe<'i, std::process::ChildStdout>>,
    child: std::process::Child,
}

impl std::io::Read for SshOutput<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stdout.read(buf)
    }
}

impl Drop for SshOutput<'_> {
    fn drop(&mut self) {
        // By now the fetch is over or has failed: nothing more is wanted from the server.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server's reply with `deepen-relative` taken out of a protocol v0 capability list.
///
/// Over protocol v0/v1, gix (0.90) asks for every capability the server offers, and
/// `deepen-relative` turns `deepen 1` into "one more commit below the client's shallow
/// boundary": for an empty cache repository there is none, so git's upload-pack sent the
/// whole history (traced against sshd without `AcceptEnv GIT_PROTOCOL`). Hiding the capability
/// keeps depth 1 absolute, as git means it. Only the first pkt-line can hold capabilities
/// (after a NUL); a protocol v2 reply starts with `version 2` and passes untouched.
struct WithoutDeepenRelative<R> {
    inner: R,
    /// The first pkt-line, rewritten, still to be handed out; `None` once it has been.
    first: Option<(Vec<u8>, usize)>,
}

impl<R: std::io::Read> WithoutDeepenRelative<R> {
    fn new(inner: R) -> Self {
        WithoutDeepenRelative {
            inner,
            first: Some((Vec::new(), 0)),
        }
    }

    /// No filtering: for answers that hold no capability list.
    fn passthrough(inner: R) -> Self {
        WithoutDeepenRelative { inner, first: None }
    }

    /// Reads the first pkt-line whole and rewrites it; over smart HTTP, the service
    /// announcement and its flush come first and pass as they are.
    fn first_line(&mut self) -> std::io::Result<Vec<u8>> {
        let Some((raw, payload)) = self.pkt()? else {
            return Ok(Vec::new());
        };
        if !payload.starts_with(b"# service=") {
            return Ok(without_deepen_relative(raw, &payload));
        }
        let mut out = raw;
        if let Some((flush, _)) = self.pkt()? {
            out.extend_from_slice(&flush);
            if let Some((raw, payload)) = self.pkt()? {
                out.extend_from_slice(&without_deepen_relative(raw, &payload));
            }
        }
        Ok(out)
    }

    /// One pkt-line: its bytes as read and its payload (empty for flush and other special
    /// packets, and for anything that is not a pkt-line). `None` at the end of the stream.
    fn pkt(&mut self) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        let mut header = [0u8; 4];
        match self.inner.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = std::str::from_utf8(&header)
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok());
        let Some(len) = len.filter(|&l| l > 4) else {
            return Ok(Some((header.to_vec(), Vec::new())));
        };
        let mut payload = vec![0u8; len - 4];
        self.inner.read_exact(&mut payload)?;
        Ok(Some(([&header[..], &payload].concat(), payload)))
    }
}

/// A pkt-line (`raw`, with its `payload`) with `deepen-relative` taken out of the capability
/// list that follows a NUL, if there is one.
fn without_deepen_relative(raw: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    let Some(nul) = payload.iter().position(|&b| b == 0) else {
        return raw;
    };
    let (refs, capabilities) = payload.split_at(nul);
    let capabilities: Vec<&[u8]> = capabilities[1..]
        .split(|&b| b == b' ')
        .filter(|c| *c != b"deepen-relative" && *c != b"deepen-relative\n")
        .collect();
    let mut line = refs.to_vec();
    line.push(0);
    line.extend_from_slice(&capabilities.join(&b' '));
    if payload.ends_with(b"\n") && !line.ends_with(b"\n") {
        line.push(b'\n');
    }
    [format!("{:04x}", line.len() + 4).as_bytes(), &line].concat()
}

impl<R: std::io::Read> std::io::Read for WithoutDeepenRelative<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some((pending, _)) = &self.first {
            if pending.is_empty() {
                let line = self.first_line()?;
                self.first = Some((line, 0));
            }
        }
        match &mut self.first {
            Some((line, at)) => {
                let n = buf.len().min(line.len() - *at);
                buf[..n].copy_from_slice(&line[*at..*at + n]);
                *at += n;
                if *at == line.len() {
                    self.first = None;
                }
                Ok(n)
            }
            None => self.inner.read(buf),
        }
    }
}

fn remote<'r>(
    repo: &'r gix::Repository,
    url: &str,
    specs: &[String],
) -> Result<gix::Remote<'r>, GitError> {
    let detail = |e: &(dyn std::error::Error + 'static)| crate::error::chain_lines(e);
    repo.remote_at(url)
        .map_err(|e| GitError::new(url, Problem::InvalidUrl(detail(&e))))?
        .with_fetch_tags(gix::remote::fetch::Tags::None)
        .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
        .map_err(|e| GitError::new(url, Problem::InvalidRefspec(detail(&e))))
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

/// A transport failure. Through a proxy, a failure that the proxy caused is told as the
/// proxy's (the git2 backend does the same).
fn network_error(url: &str, e: &(dyn std::error::Error + 'static)) -> GitError {
    let proxy = crate::source::proxy::for_url(url);
    GitError::new(url, error::classify(e, proxy.as_ref()))
}

/// One sync's credentials, set up for gix: config overrides (bearer header, CA file, the ssh
/// program), the basic-auth identity for the credentials callback, and the private files the
/// `ssh` program reads. The files live in a 0700 directory removed on drop.
pub struct Session {
    basic: Option<(String, String)>,
    /// Mutual TLS: certificate and key, with the CA to trust; served by [`mtls`].
    client_tls: Option<(Vec<u8>, super::auth::SecretBytes)>,
    ca_pem: Option<Vec<u8>>,
    /// `key=value` config overrides, applied in memory only (never written to the cache's
    /// config file). May hold a token: never logged, and errors about them are generic.
    overrides: Vec<String>,
    ssh: Option<SshSession>,
    dir: Option<std::path::PathBuf>,
}

struct SshSession {
    /// The wrapper script that runs `ssh` with this sync's key and known hosts.
    program: std::path::PathBuf,
    /// `ssh -E`: everything ssh logs (at debug1, which names the host key it was offered).
    log: std::path::PathBuf,
    /// What the remote command wrote to stderr (`fatal: ... does not appear to be a git
    /// repository`, say).
    remote_stderr: std::path::PathBuf,
    /// `host` or `[host]:port`, as known_hosts writes it.
    host: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

impl Session {
    /// No credentials at all (public repositories, tests).
    pub fn anonymous() -> Session {
        Session {
            basic: None,
            client_tls: None,
            ca_pem: None,
            overrides: Vec::new(),
            ssh: None,
            dir: None,
        }
    }

    /// Prepare `credentials` for a sync of `url`; private files go below `private_parent`.
    pub fn prepare(
        credentials: super::auth::Credentials,
        url: &str,
        private_parent: &Path,
    ) -> Result<Session, GitError> {
        let safe = refs::redact_url(url);
        let fail = |problem: Problem| GitError::new(url, problem);
        let mut session = Session::anonymous();
        if credentials.client_tls.is_some() {
            if !url.to_ascii_lowercase().starts_with("https://") {
                return Err(fail(Problem::ClientTlsNeedsHttps));
            }
            session.client_tls = credentials.client_tls.clone();
            session.ca_pem = credentials.ca_pem.clone();
        }
        if let Some((user, password)) = &credentials.basic {
            let password = password
                .expose_str()
                .ok_or_else(|| fail(Problem::PasswordNotText))?;
            if url.to_ascii_lowercase().starts_with("http://") {
                // gix only answers a 401 with credentials over https; over plain http (a
                // LAN server, as git and Flux allow) they go preemptively as a header.
                tracing::warn!(url = %safe, "sending basic-auth credentials over plain http");
                use openssl::base64::encode_block;
                let pair = format!("{user}:{password}");
                session.overrides.push(format!(
                    "http.extraHeader=Authorization: Basic {}",
                    encode_block(pair.as_bytes())
                ));
            }
            session.basic = Some((user.clone(), password.to_string()));
        }
        if let Some(token) = &credentials.bearer {
            let token = token
                .expose_str()
                .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| fail(Problem::BearerNotHeaderSafe))?;
            session
                .overrides
                .push(format!("http.extraHeader=Authorization: Bearer {token}"));
        }
        let needs_dir = credentials.ca_pem.is_some() || credentials.ssh.is_some();
        if needs_dir {
            let parent = if is_shell_safe(private_parent) {
                private_parent.to_path_buf()
            } else {
                std::env::temp_dir()
            };
            let local = |what: &str, e| {
                let what = format!("cannot create {what} in {}", parent.display());
                fail(error::local(Some(what), e))
            };
            fs::create_dir_all(&parent).map_err(|e| local("a directory", e))?;
            let dir =
                super::auth::tempfile_dir(&parent).map_err(|e| local("a private directory", e))?;
            session.dir = Some(dir);
        }
        let dir = session.dir.clone().unwrap_or_default();
        let write = |name: &str, bytes: &[u8], mode: u32| -> Result<std::path::PathBuf, GitError> {
            let path = dir.join(name);
            write_private(&path, bytes, mode)
                .map_err(|e| fail(error::local(Some(format!("cannot write {name}")), e)))?;
            Ok(path)
        };
        if let Some(pem) = &credentials.ca_pem {
            let path = write("ca.pem", pem, 0o600)?;
            session
                .overrides
                .push(format!("http.sslCAInfo={}", path.display()));
        }
        if let Some(ssh) = &credentials.ssh {
            let mut key = ssh.private_key.expose().to_vec();
            if !key.ends_with(b"\n") {
                key.push(b'\n'); // ssh refuses a key file without the final newline
            }
            let key_path = write("identity", &key, 0o600)?;
            key.iter_mut().for_each(|b| *b = 0);
            let known_hosts = write("known_hosts", ssh.known_hosts.as_bytes(), 0o600)?;
            let log = dir.join("ssh.log");
            let mut script = String::from("#!/bin/sh\n");
            let mut options = vec![
                "-F /dev/null".to_string(),
                format!("-i {}", key_path.display()),
                "-o IdentitiesOnly=yes".into(),
                "-o IdentityAgent=none".into(),
                format!("-o UserKnownHostsFile={}", known_hosts.display()),
                "-o GlobalKnownHostsFile=/dev/null".into(),
                "-o StrictHostKeyChecking=yes".into(),
                "-o UpdateHostKeys=no".into(),
                "-o CheckHostIP=no".into(),
                "-o PasswordAuthentication=no".into(),
                "-o KbdInteractiveAuthentication=no".into(),
                "-o ConnectTimeout=30".into(),
                "-v".into(),
                format!("-E {}", log.display()),
            ];
            match &ssh.passphrase {
                Some(passphrase) => {
                    // ssh asks the askpass program, which prints the passphrase from a 0600
                    // file: never on a command line, never in the environment of others.
                    let file = write("passphrase", passphrase.expose(), 0o600)?;
                    let askpass = write(
                        "askpass",
                        format!("#!/bin/sh\ncat {}\n", file.display()).as_bytes(),
                        0o700,
                    )?;
                    script.push_str(&format!(
                        "SSH_ASKPASS={}\nSSH_ASKPASS_REQUIRE=force\nDISPLAY=gitopsd:0\n\
                         export SSH_ASKPASS SSH_ASKPASS_REQUIRE DISPLAY\n",
                        askpass.display()
                    ));
                    options.push("-o NumberOfPasswordPrompts=1".into());
                    options.push("-o BatchMode=no".into());
                }
                None => options.push("-o BatchMode=yes".into()),
            }
            script.push_str(&format!("exec ssh {} \"$@\"\n", options.join(" ")));
            let wrapper = write("ssh", script.as_bytes(), 0o700)?;
            session
                .overrides
                .push(format!("core.sshCommand={}", wrapper.display()));
            session.overrides.push("ssh.variant=ssh".into());
            session.ssh = Some(SshSession {
                program: wrapper,
                log,
                remote_stderr: dir.join("remote-stderr.log"),
                host: known_hosts_name(url),
            });
        }
        Ok(session)
    }

    /// Put the overrides into `repo`'s in-memory configuration.
    pub fn apply(&self, repo: &mut gix::Repository, url: &str) -> Result<(), GitError> {
        if self.overrides.is_empty() {
            return Ok(());
        }
        let mut config = repo.config_snapshot_mut();
        // The error would quote the value, which may be a token: say only what failed.
        let not_applied = |_| GitError::new(url, Problem::CredentialsNotApplied);
        config
            .append_config(
                self.overrides.iter().map(String::as_str),
                gix::config::Source::Api,
            )
            .map_err(not_applied)?;
        config.commit().map_err(not_applied)?;
        Ok(())
    }

    /// A network error, worded from what ssh logged when there is an ssh log.
    fn failure(&self, url: &str, e: &(dyn std::error::Error + 'static)) -> GitError {
        if let Some(ssh) = &self.ssh {
            let log = fs::read_to_string(&ssh.log).unwrap_or_default();
            if let Some(cause) = untyped::ssh_log(&log, &ssh.host) {
                return GitError::new(url, cause);
            }
            let remote = fs::read_to_string(&ssh.remote_stderr).unwrap_or_default();
            if let Some(said) = remote.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
                return GitError::new(url, untyped::remote_stderr(said));
            }
        }
        let failure = network_error(url, e);
        match &self.basic {
            Some((_, secret)) => failure.scrub(secret),
            None => failure,
        }
    }
}

/// Only characters that need no quoting in a shell command (gix runs `core.sshCommand`
/// through `sh` when it has anything else).
fn is_shell_safe(path: &Path) -> bool {
    path.to_str().is_some_and(|p| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+".contains(&b))
    })
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// `host`, or `[host]:port` for a port other than 22: how known_hosts names the server.
fn known_hosts_name(url: &str) -> String {
    match gix::url::parse(gix::bstr::BStr::new(url)) {
        Ok(parsed) => {
            let host = parsed.host().unwrap_or("?").to_string();
            match parsed.port {
                Some(port) if port != 22 => format!("[{host}]:{port}"),
                _ => host,
            }
        }
        Err(_) => "the server".into(),
    }
}

/// Mutual TLS for smart HTTP. gix's curl transport cannot present a client certificate, so a
/// source that has one talks HTTP/1.1 through this small client instead: OpenSSL with the
/// certificate, key and CA of the source, one connection per request (`Connection: close`).
/// It also carries plain `http://` through a proxy (absolute-form requests, see `connect`).
/// Responses are read whole into memory before gix sees them, which is fine for the
/// advertisement and negotiation and costs the pack's size in memory for a fetch. A proxy
/// chosen by [`crate::source::proxy`] is used through a CONNECT tunnel, as curl does for https.
pub mod mtls {
    use super::{Watch, WatchedSocket};
    use crate::source::git::error::{
        CertificateRejected, HttpStatus, Kind, ProxyUnreachable, TunnelRefused, Unresolvable,
    };
    use crate::source::proxy::Proxy;
    use gix::protocol::transport::client::blocking_io::http::{
        GetResponse, Http, Options, PostBodyDataKind, PostResponse,
    };
    use openssl::ssl::{SslConnector, SslMethod};
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::X509;
    use std::io::{self, BufRead, Cursor, Read, Write};
    use std::net::{TcpStream, ToSocketAddrs};
    use std::sync::{Arc, Mutex};

    /// Why the client certificate, its key or the CA could not be set up.
    #[derive(Debug, thiserror::Error)]
    pub enum SetupError {
        #[error("cannot set up TLS: {0}")]
        Tls(#[source] openssl::error::ErrorStack),
        #[error("the client certificate (tls.crt) is not PEM")]
        CertificateNotPem,
        #[error("the client certificate (tls.crt) is empty")]
        CertificateEmpty,
        #[error("the client certificate (tls.crt) cannot be used")]
        CertificateUnusable,
        #[error("the client certificate chain cannot be used")]
        ChainUnusable,
        #[error("the client key (tls.key) is not a PEM private key")]
        KeyNotPem,
        #[error("the client key (tls.key) does not belong to the client certificate")]
        KeyMismatch,
        #[error("the CA certificate is not PEM")]
        CaNotPem,
        #[error("{0}")]
        CaUnusable(#[source] openssl::error::ErrorStack),
    }

    impl SetupError {
        pub fn kind(&self) -> Kind {
            match self {
                SetupError::Tls(_) | SetupError::CaNotPem | SetupError::CaUnusable(_) => Kind::Tls,
                _ => Kind::Auth,
            }
        }
    }

    pub struct Client<'i> {
        /// `None`: plain http (through a proxy).
        connector: Option<Arc<SslConnector>>,
        extra_headers: Vec<String>,
        proxy: Option<Proxy>,
        /// Every connection gives up when the fetch is cancelled or the server stalls.
        watch: Watch<'i>,
    }

    impl<'i> Client<'i> {
        /// `cert_pem` may hold a chain (leaf first). `ca_pem`, when given, replaces the
        /// system's trust store. `proxy`: the proxy to tunnel through, if any.
        pub fn new(
            cert_pem: &[u8],
            key_pem: &[u8],
            ca_pem: Option<&[u8]>,
            proxy: Option<Proxy>,
            watch: Watch<'i>,
        ) -> Result<Client<'i>, SetupError> {
            let mut builder =
                SslConnector::builder(SslMethod::tls_client()).map_err(SetupError::Tls)?;
            let chain =
                X509::stack_from_pem(cert_pem).map_err(|_| SetupError::CertificateNotPem)?;
            let mut chain = chain.into_iter();
            let leaf = chain.next().ok_or(SetupError::CertificateEmpty)?;
            builder
                .set_certificate(&leaf)
                .map_err(|_| SetupError::CertificateUnusable)?;
            for extra in chain {
                builder
                    .add_extra_chain_cert(extra)
                    .map_err(|_| SetupError::ChainUnusable)?;
            }
            let key = openssl::pkey::PKey::private_key_from_pem(key_pem)
                .map_err(|_| SetupError::KeyNotPem)?;
            builder
                .set_private_key(&key)
                // OpenSSL refuses a key here when it does not match the certificate.
                .map_err(|_| SetupError::KeyMismatch)?;
            builder
                .check_private_key()
                .map_err(|_| SetupError::KeyMismatch)?;
            if let Some(ca) = ca_pem {
                let mut store = X509StoreBuilder::new().map_err(SetupError::CaUnusable)?;
                for cert in X509::stack_from_pem(ca).map_err(|_| SetupError::CaNotPem)? {
                    store.add_cert(cert).map_err(SetupError::CaUnusable)?;
                }
                builder
                    .set_verify_cert_store(store.build())
                    .map_err(SetupError::CaUnusable)?;
            }
            Ok(Client {
                connector: Some(Arc::new(builder.build())),
                extra_headers: Vec::new(),
                proxy,
                watch,
            })
        }

        /// Plain `http://` through `proxy`: no TLS, one connection to the proxy per request.
        pub fn plain(proxy: Option<Proxy>, watch: Watch<'i>) -> Client<'i> {
            Client {
                connector: None,
                extra_headers: Vec::new(),
                proxy,
                watch,
            }
        }

        fn pending(
            &self,
            method: &'static str,
            url: &str,
            headers: Vec<String>,
        ) -> Arc<Mutex<Pending<'i>>> {
            let mut all = headers;
            all.extend(self.extra_headers.iter().cloned());
            Arc::new(Mutex::new(Pending {
                connector: self.connector.clone(),
                proxy: self.proxy.clone(),
                method,
                url: url.to_string(),
                headers: all,
                body: Arc::new(Mutex::new(Vec::new())),
                result: None,
                watch: self.watch,
            }))
        }
    }

    impl<'i> Http for Client<'i> {
        type Headers = Lazy<'i>;
        type ResponseBody = Lazy<'i>;
        type PostBody = BodyWriter;

        fn get(
            &mut self,
            url: &str,
            _base_url: &str,
            headers: impl IntoIterator<Item = impl AsRef<str>>,
        ) -> gix::error::Result<GetResponse<Lazy<'i>, Lazy<'i>>> {
            let headers = headers
                .into_iter()
                .map(|h| h.as_ref().to_string())
                .collect();
            let pending = self.pending("GET", url, headers);
            // Fail here, as gix expects a GET to report the status itself.
            pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .run()
                .map_err(gix::error::Error::from_error)?;
            Ok(GetResponse {
                headers: Lazy::new(pending.clone(), Part::Headers),
                body: Lazy::new(pending, Part::Body),
            })
        }

        fn post(
            &mut self,
            url: &str,
            _base_url: &str,
            headers: impl IntoIterator<Item = impl AsRef<str>>,
            _body: PostBodyDataKind,
        ) -> gix::error::Result<PostResponse<Lazy<'i>, Lazy<'i>, BodyWriter>> {
            let headers = headers
                .into_iter()
                .map(|h| h.as_ref().to_string())
                .collect();
            let pending = self.pending("POST", url, headers);
            let body = pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .body
                .clone();
            Ok(PostResponse {
                post_body: BodyWriter(body),
                headers: Lazy::new(pending.clone(), Part::Headers),
                body: Lazy::new(pending, Part::Body),
            })
        }

        fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result<()> {
            if let Some(options) = config.downcast_ref::<Options>() {
                self.extra_headers = options.extra_headers.clone();
            }
            Ok(())
        }
    }

    /// The request body, collected until the response is first read.
    pub struct BodyWriter(Arc<Mutex<Vec<u8>>>);

    impl Write for BodyWriter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A response's header block and body, or the failure, shared: both parts report it.
    type Exchange = Result<(Vec<u8>, Vec<u8>), Arc<io::Error>>;

    /// One failed exchange, reported again by each part that reads it; its `source()` is the
    /// original error, so that its typed payload (a status, say) can still be found.
    #[derive(Debug)]
    struct Shared(Arc<io::Error>);

    impl std::fmt::Display for Shared {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }

    impl std::error::Error for Shared {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.0)
        }
    }

    struct Pending<'i> {
        watch: Watch<'i>,
        connector: Option<Arc<SslConnector>>,
        proxy: Option<Proxy>,
        method: &'static str,
        url: String,
        headers: Vec<String>,
        body: Arc<Mutex<Vec<u8>>>,
        result: Option<Exchange>,
    }

    impl Pending<'_> {
        fn run(&mut self) -> io::Result<()> {
            if self.result.is_none() {
                let body =
                    std::mem::take(&mut *self.body.lock().unwrap_or_else(|p| p.into_inner()));
                let body = (self.method == "POST").then_some(body);
                self.result = Some(
                    exchange(
                        self.connector.as_deref(),
                        self.proxy.as_ref(),
                        self.method,
                        &self.url,
                        &self.headers,
                        body,
                        self.watch,
                    )
                    .map_err(Arc::new),
                );
            }
            match self.result.as_ref().expect("set above") {
                Ok(_) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), Shared(e.clone()))),
            }
        }
    }

    #[derive(Clone, Copy)]
    pub enum Part {
        Headers,
        Body,
    }

    /// A response part, fetched on first read.
    pub struct Lazy<'i> {
        pending: Arc<Mutex<Pending<'i>>>,
        part: Part,
        data: Option<Cursor<Vec<u8>>>,
    }

    impl<'i> Lazy<'i> {
        fn new(pending: Arc<Mutex<Pending<'i>>>, part: Part) -> Lazy<'i> {
            Lazy {
                pending,
                part,
                data: None,
            }
        }

        fn load(&mut self) -> io::Result<&mut Cursor<Vec<u8>>> {
            if self.data.is_none() {
                let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
                pending.run()?;
                let Some(Ok((headers, body))) = pending.result.as_mut() else {
                    unreachable!("run succeeded");
                };
                let bytes = match self.part {
                    Part::Headers => std::mem::take(headers),
                    Part::Body => std::mem::take(body),
                };
                self.data = Some(Cursor::new(bytes));
            }
            Ok(self.data.as_mut().expect("loaded"))
        }
    }

    impl Read for Lazy<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.load()?.read(buf)
        }
    }

    impl BufRead for Lazy<'_> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.load()?.fill_buf()
        }
        fn consume(&mut self, amount: usize) {
            if let Some(data) = self.data.as_mut() {
                data.consume(amount);
            }
        }
    }

    /// One request over a new TLS connection; the response's header block (one header per
    /// line) and its decoded body. A status other than 2xx is an error naming the status.
    fn exchange(
        connector: Option<&SslConnector>,
        proxy: Option<&Proxy>,
        method: &str,
        url: &str,
        headers: &[String],
        body: Option<Vec<u8>>,
        watch: Watch<'_>,
    ) -> io::Result<(Vec<u8>, Vec<u8>)> {
        let (rest, default_port) = match (url.strip_prefix("https://"), connector) {
            (Some(rest), Some(_)) => (rest, 443),
            _ => match (url.strip_prefix("http://"), proxy) {
                (Some(rest), Some(_)) if connector.is_none() => (rest, 80),
                _ => {
                    return Err(io::Error::other(
                        "this client speaks https with a client certificate, or http through \
                         a proxy",
                    ))
                }
            },
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(stripped) = authority.strip_prefix('[') {
            let end = stripped.find(']').unwrap_or(stripped.len());
            let port = stripped[end..]
                .strip_prefix("]:")
                .and_then(|p| p.parse().ok());
            (&stripped[..end], port.unwrap_or(default_port))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().unwrap_or(default_port)),
                None => (authority, default_port),
            }
        };
        let (mut stream, mut request): (Box<dyn ReadWrite + '_>, String) = match (connector, proxy)
        {
            (Some(connector), proxy) => {
                let tcp = match proxy {
                    Some(proxy) => tunnel(proxy, host, port, watch)?,
                    None => connect(host, port, watch)?,
                };
                let tls = connector.connect(host, tcp).map_err(|e| {
                    // A failed verification is OpenSSL's verify result, not the handshake's
                    // text: the typed form of "certificate verify failed".
                    let rejected = match &e {
                        openssl::ssl::HandshakeError::Failure(mid) => {
                            mid.ssl().verify_result() != openssl::x509::X509VerifyResult::OK
                        }
                        _ => false,
                    };
                    if rejected {
                        io::Error::other(CertificateRejected(e.to_string()))
                    } else {
                        io::Error::other(format!("TLS handshake failed: {e}"))
                    }
                })?;
                (Box::new(tls), format!("{method} {path} HTTP/1.1\r\n"))
            }
            (None, Some(proxy)) => {
                // Plain http through the proxy: the absolute URL in the request line tells it
                // where to forward.
                let tcp = connect_proxy(proxy, watch)?;
                let mut line = format!("{method} http://{authority}{path} HTTP/1.1\r\n");
                if let Some(value) = proxy_authorization(proxy) {
                    line.push_str(&format!("Proxy-Authorization: {value}\r\n"));
                }
                (Box::new(tcp), line)
            }
            (None, None) => unreachable!("checked above"),
        };
        request.push_str(&format!("Host: {authority}\r\nConnection: close\r\n"));
        for header in headers {
            request.push_str(header.trim());
            request.push_str("\r\n");
        }
        if let Some(body) = &body {
            request.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes())?;
        if let Some(body) = &body {
            stream.write_all(body)?;
        }
        stream.flush()?;
        let mut response = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                // Servers often close without a TLS close_notify; completeness is checked below.
                // A cancelled or stalled exchange is a failure, however much had arrived.
                Err(e) if !response.is_empty() && e.kind() != io::ErrorKind::TimedOut => break,
                Err(e) => return Err(e),
            }
        }
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| io::Error::other("incomplete HTTP response"))?;
        let head = String::from_utf8_lossy(&response[..split]).into_owned();
        let raw_body = &response[split + 4..];
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("malformed HTTP status line"))?;
        if !(200..300).contains(&status) {
            let kind = if status == 401 || status == 403 {
                io::ErrorKind::PermissionDenied
            } else {
                io::ErrorKind::Other
            };
            return Err(io::Error::new(kind, HttpStatus(status)));
        }
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| v.trim().to_string())
            })
        };
        let body = if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            dechunk(raw_body)?
        } else if let Some(length) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        {
            if raw_body.len() < length {
                return Err(io::Error::other("the HTTP response was cut short"));
            }
            raw_body[..length].to_vec()
        } else {
            raw_body.to_vec()
        };
        let mut header_block = Vec::new();
        for line in lines {
            header_block.extend_from_slice(line.as_bytes());
            header_block.push(b'\n');
        }
        Ok((header_block, body))
    }

    /// A TCP connection to `host:port` that gives up when `watch` says so.
    fn connect<'i>(host: &str, port: u16, watch: Watch<'i>) -> io::Result<WatchedSocket<'i>> {
        let unresolvable = || io::Error::other(Unresolvable(host.to_string()));
        let address = (host, port)
            .to_socket_addrs()
            .map_err(|_| unresolvable())?
            .next()
            .ok_or_else(unresolvable)?;
        let tcp = TcpStream::connect_timeout(&address, super::CONNECT_LIMIT)?;
        WatchedSocket::new(tcp, watch)
    }

    /// Either kind of connection a request goes over.
    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    /// A TCP connection to the proxy itself. Only http:// proxies are spoken to (TLS to the
    /// proxy, or SOCKS, would need more than this small client has).
    fn connect_proxy<'i>(proxy: &Proxy, watch: Watch<'i>) -> io::Result<WatchedSocket<'i>> {
        if !proxy.url().to_ascii_lowercase().starts_with("http://") {
            return Err(io::Error::other(format!(
                "the proxy {} (from {}) is not an http:// proxy, the only kind gitopsd's own \
                 HTTP client (mutual TLS, or plain http through a proxy) can use",
                proxy.redacted(),
                proxy.variable()
            )));
        }
        let (host, port) = proxy
            .address()
            .ok_or_else(|| io::Error::other(format!("invalid proxy URL {}", proxy.redacted())))?;
        connect(&host, port, watch).map_err(|source| {
            io::Error::new(
                source.kind(),
                ProxyUnreachable {
                    proxy: proxy.redacted(),
                    source,
                },
            )
        })
    }

    /// `Basic <base64>` from the user and password in the proxy URL, sent with the first
    /// request (a 407 challenge would cost a round trip and a new connection).
    fn proxy_authorization(proxy: &Proxy) -> Option<String> {
        let (user, password) = proxy.credentials()?;
        let pair = openssl::base64::encode_block(format!("{user}:{password}").as_bytes());
        Some(format!("Basic {pair}"))
    }

    /// A connection to `host:port` through the proxy's CONNECT tunnel. TLS (with the client
    /// certificate) then runs end to end inside it: the proxy sees the host and port only.
    fn tunnel<'i>(
        proxy: &Proxy,
        host: &str,
        port: u16,
        watch: Watch<'i>,
    ) -> io::Result<WatchedSocket<'i>> {
        let mut tcp = connect_proxy(proxy, watch)?;
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(value) = proxy_authorization(proxy) {
            request.push_str(&format!("Proxy-Authorization: {value}\r\n"));
        }
        request.push_str("\r\n");
        tcp.write_all(request.as_bytes())?;
        // Byte by byte up to the blank line: anything after it belongs to the TLS session.
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(io::Error::other(
                    "the proxy's answer to CONNECT is too long",
                ));
            }
            if tcp.read(&mut byte)? == 0 {
                return Err(io::Error::other(
                    "the proxy closed the connection before answering the CONNECT",
                ));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status: u16 = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("the proxy's answer to CONNECT is not HTTP"))?;
        if !(200..300).contains(&status) {
            return Err(io::Error::other(TunnelRefused(status)));
        }
        Ok(tcp)
    }

    fn dechunk(mut data: &[u8]) -> io::Result<Vec<u8>> {
        let cut = || io::Error::other("the chunked HTTP response was cut short");
        let mut out = Vec::new();
        loop {
            let end = data.windows(2).position(|w| w == b"\r\n").ok_or_else(cut)?;
            let size_text = String::from_utf8_lossy(&data[..end]);
            let size_text = size_text.split(';').next().unwrap_or("").trim().to_string();
            let size = usize::from_str_radix(&size_text, 16)
                .map_err(|_| io::Error::other("malformed chunked HTTP response"))?;
            data = &data[end + 2..];
            if size == 0 {
                return Ok(out);
            }
            if data.len() < size + 2 {
                return Err(cut());
            }
            out.extend_from_slice(&data[..size]);
            data = &data[size + 2..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WithoutDeepenRelative;
    use std::io::Read;

    fn pkt(payload: &[u8]) -> Vec<u8> {
        [format!("{:04x}", payload.len() + 4).as_bytes(), payload].concat()
    }

    /// Reads everything through the filter, a few bytes at a time as a pipe would give them.
    fn filtered(input: Vec<u8>) -> Vec<u8> {
        let mut reader = WithoutDeepenRelative::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn deepen_relative_leaves_a_v0_capability_list_and_nothing_else_changes() {
        let sha = "aedcb21ac9f218e528d6838de7ec1f8a5121786d";
        let rest = [
            pkt(format!("{sha} refs/heads/main\n").as_bytes()),
            b"0000".to_vec(),
        ]
        .concat();
        for (offered, kept) in [
            (
                "multi_ack shallow deepen-since deepen-relative no-done agent=git/2.39.5\n",
                "multi_ack shallow deepen-since no-done agent=git/2.39.5\n",
            ),
            ("shallow deepen-relative\n", "shallow\n"),
            ("shallow ofs-delta", "shallow ofs-delta"),
        ] {
            let first = pkt(format!("{sha} HEAD\0{offered}").as_bytes());
            let want = pkt(format!("{sha} HEAD\0{kept}").as_bytes());
            assert_eq!(
                filtered([first, rest.clone()].concat()),
                [want, rest.clone()].concat(),
                "{offered:?}"
            );
        }
        // Smart HTTP: the service announcement and its flush come first.
        let service = [pkt(b"# service=git-upload-pack\n"), b"0000".to_vec()].concat();
        let first = pkt(format!("{sha} HEAD\0shallow deepen-relative agent=git\n").as_bytes());
        let want = pkt(format!("{sha} HEAD\0shallow agent=git\n").as_bytes());
        assert_eq!(
            filtered([service.clone(), first, rest.clone()].concat()),
            [service, want, rest.clone()].concat()
        );
        // Protocol v2 and an empty repository's flush pass untouched.
        let v2 = [
            pkt(b"version 2\n"),
            pkt(b"fetch=shallow\n"),
            b"0000".to_vec(),
        ]
        .concat();
        assert_eq!(filtered(v2.clone()), v2);
        assert_eq!(filtered(b"0000".to_vec()), b"0000");
    }
}
