//! The gix backend: ls-refs and shallow fetches into a per-source bare cache.
//!
//! Split along what each part talks to:
//! - this module: the two steps ([`list_refs`], [`fetch`]), choosing a transport for a URL
//!   ([`connect`]), and `git://` over a socket of gitopsd's own;
//! - [`session`]: one sync's credentials set up for gix (config overrides, private files, the
//!   `ssh` wrapper) and the wording of its failures;
//! - [`ssh`]: git over an `ssh` process of gitopsd's own;
//! - [`http`]: gix's curl transport with its options and the capability filter;
//! - [`mtls`]: the small HTTP/1.1 client for mutual TLS and plain http through a proxy;
//! - [`protocol`]: the protocol v0 workaround every transport's reply goes through.

mod http;
pub mod mtls;
mod protocol;
mod session;
mod ssh;

pub use session::Session;

use super::cancel::{Watch, WatchedSocket, CONNECT_LIMIT};
use super::config::GitReference;
use super::error::{self, GitError, Problem};
use super::refs::{self, RemoteRef, Wanted};
use gix::protocol::transport::client::blocking_io::http as transport_http;
use gix::remote::Direction;
use http::{http_options, is_http, FilteredCurl};
use protocol::WithoutDeepenRelative;
use ssh::ssh_transport;
use std::num::NonZeroU32;
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
                    password: password.to_string(),
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

/// Always our own callback: gix's default would run the machine's git credential helpers and
/// could prompt, which a daemon must never do.
fn credentials_callback(
    basic: Option<(String, zeroize::Zeroizing<String>)>,
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
                        password: password.to_string(),
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
