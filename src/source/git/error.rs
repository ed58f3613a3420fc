//! Why a git fetch failed, as a value: [`GitError`], with a [`Kind`] a caller acts on
//! (retry, fix credentials, fix the configuration) and one sentence for people as its
//! `Display`.
//!
//! Both backends report through this one type, so that the same failure reads the same on
//! gix and git2 (the integration tests compare their sentences). The sentence is built from
//! the typed [`Cause`], never from a transport's own text, except in [`Cause::Other`]: a
//! failure nothing here recognises is shown in the transport's words, shortened.
//!
//! Transport errors are *classified* in [`classify`] from typed information (gix's error
//! classes and the `io::Error`/`curl::Error` values in its chain, `git2::Error`'s class and
//! code, the typed errors of gitopsd's own transports). A few failures exist only as text
//! (ssh's log, what a server wrote on its error channel, libgit2 messages whose class covers
//! several causes); [`untyped`] reads those, in one place, each with the reason it has to.
//!
//! No raw transport error is kept as a `source()`: its text may quote the URL's credentials
//! or a proxy password, and a chain printed somewhere else would leak them. What is kept is
//! data (a status, a kind), and free text only after redaction ([`GitError::redact`]).

use crate::source::proxy::Proxy;
pub use crate::source::proxy::ProxyFailure;
use std::error::Error;
use std::fmt;

/// What kind of failure a [`GitError`] is: what a caller can do about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Credentials missing, unreadable or refused (HTTP 401/403, an SSH key refused).
    Auth,
    /// The SSH server's host key is unknown or changed.
    HostKey,
    /// The server's TLS certificate could not be verified, or the client's could not be used.
    Tls,
    /// No repository at the URL.
    NotFound,
    /// The repository has no such branch, tag, ref or commit, or no tag matches the range.
    RefNotFound,
    /// The server could not be reached, or the connection broke.
    Network,
    /// The proxy refused, could not be reached, or wanted credentials.
    Proxy,
    /// The fetch was cancelled: its timeout expired, the server stalled, or gitopsd stops.
    Timeout,
    /// The source's settings cannot work as given (an invalid URL, a mode the backend lacks).
    Config,
    /// A local failure (the cache, private files) or one nothing here recognises.
    Internal,
}

impl Kind {
    /// Whether trying again unchanged may succeed. Everything about the remote can change
    /// (a server comes back, a branch appears, a rotated secret is read again at the next
    /// fetch); only settings that cannot work need the configuration to change first.
    pub fn retryable(self) -> bool {
        !matches!(self, Kind::Config)
    }
}

/// A git fetch failure: the source's URL (redacted), the reference when the failure concerns
/// fetching it, and the problem.
#[derive(Debug)]
pub struct GitError {
    url: String,
    reference: Option<String>,
    problem: Problem,
}

impl GitError {
    /// A failure fetching from `url` (its credentials are never shown).
    pub fn new(url: &str, problem: impl Into<Problem>) -> GitError {
        GitError {
            url: super::refs::redact_url(url),
            reference: None,
            problem: problem.into(),
        }
    }

    /// The same failure, naming the reference being fetched (`(ref: ...)` at the end).
    pub fn on(mut self, reference: &super::config::GitReference) -> GitError {
        self.reference = Some(super::refs::describe(reference));
        self
    }

    pub fn kind(&self) -> Kind {
        self.problem.kind()
    }

    /// See [`Kind::retryable`].
    pub fn retryable(&self) -> bool {
        self.kind().retryable()
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The same error with `url`'s credentials taken out of any free text it holds (a
    /// transport may quote them in its own words, see [`super::refs::redact_text`]).
    pub fn redact(mut self, url: &str) -> GitError {
        self.problem = self.problem.map_text(|t| super::refs::redact_text(&t, url));
        self
    }

    /// The same error with `secret` replaced in any free text (a password a transport quoted).
    pub fn scrub(mut self, secret: &str) -> GitError {
        if !secret.is_empty() {
            self.problem = self
                .problem
                .map_text(|t| t.replace(secret, super::refs::REDACTED));
        }
        self
    }
}

impl fmt::Display for GitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.url;
        match &self.problem {
            Problem::InvalidUrl(detail) => write!(f, "invalid git URL {url}: {detail}")?,
            Problem::InvalidRefspec(detail) => write!(f, "invalid ref for {url}: {detail}")?,
            Problem::Resolve(e) => write!(f, "{e}")?,
            Problem::CommitNotFound { commit, branch } => match branch {
                Some(b) => write!(f, "commit {commit} not found on branch '{b}' in {url}")?,
                None => write!(f, "commit {commit} not found in {url}")?,
            },
            other => write!(f, "cannot fetch from {url}: {other}")?,
        }
        if let Some(reference) = &self.reference {
            write!(f, " (ref: {reference})")?;
        }
        Ok(())
    }
}

impl Error for GitError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.problem.source()
    }
}

/// What went wrong, worded as the clause after "cannot fetch from URL: " (except the few
/// that [`GitError`]'s `Display` words whole).
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    /// The source's credentials could not be read.
    #[error("{0}")]
    Credentials(#[source] super::auth::AuthError),
    #[error("libgit2 cannot present {0}; set gitImplementation: gix")]
    Libgit2CannotPresent(&'static str),
    /// libgit2 1.9 writes a proxy-style request for http:// and then sends it straight to
    /// the server (libgit2 issue #5650): refused rather than silently bypassing the proxy.
    #[error(
        "libgit2 cannot send http:// requests through the proxy {proxy} (from {variable}), it \
         only tunnels https; set gitImplementation: gix, or exempt the host in NO_PROXY"
    )]
    Libgit2HttpProxy {
        proxy: String,
        variable: &'static str,
    },
    #[error("a client certificate (mutual TLS) needs an https URL")]
    ClientTlsNeedsHttps,
    #[error("the HTTPS password or token is not UTF-8 text")]
    PasswordNotText,
    #[error("the bearer token has characters that cannot go into an HTTP header")]
    BearerNotHeaderSafe,
    /// The error would quote the value, which may be a token: only what failed is said.
    #[error("the credentials could not be applied to the git configuration")]
    CredentialsNotApplied,
    /// The client certificate, its key or the CA could not be set up for mutual TLS.
    #[error("{0}")]
    ClientTls(#[from] super::gitoxide::mtls::SetupError),
    #[error("invalid URL")]
    UnparsableUrl,
    #[error("invalid HTTP settings: {0}")]
    HttpSettings(String),
    #[error("invalid git URL: {0}")]
    InvalidUrl(String),
    #[error("invalid ref: {0}")]
    InvalidRefspec(String),
    /// A local file or directory this sync needs (private files, the cache's shallow file).
    #[error("{}", match what { Some(what) => format!("{what}: {source}"), None => source.to_string() })]
    Local {
        what: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Resolve(#[from] super::refs::ResolveError),
    #[error("commit {commit} not found")]
    CommitNotFound {
        commit: String,
        branch: Option<String>,
    },
    /// The transport failed (see [`classify`]).
    #[error("{0}")]
    Remote(#[from] Cause),
}

impl Problem {
    pub fn kind(&self) -> Kind {
        match self {
            Problem::Credentials(_) | Problem::PasswordNotText | Problem::BearerNotHeaderSafe => {
                Kind::Auth
            }
            Problem::ClientTls(e) => e.kind(),
            Problem::Libgit2CannotPresent(_)
            | Problem::Libgit2HttpProxy { .. }
            | Problem::ClientTlsNeedsHttps
            | Problem::UnparsableUrl
            | Problem::HttpSettings(_)
            | Problem::InvalidUrl(_)
            | Problem::InvalidRefspec(_) => Kind::Config,
            Problem::CredentialsNotApplied | Problem::Local { .. } => Kind::Internal,
            Problem::Resolve(e) => e.kind(),
            Problem::CommitNotFound { .. } => Kind::RefNotFound,
            Problem::Remote(cause) => cause.kind(),
        }
    }

    fn map_text(self, clean: impl Fn(String) -> String) -> Problem {
        match self {
            Problem::HttpSettings(t) => Problem::HttpSettings(clean(t)),
            Problem::InvalidUrl(t) => Problem::InvalidUrl(clean(t)),
            Problem::InvalidRefspec(t) => Problem::InvalidRefspec(clean(t)),
            Problem::Local { what, source } => Problem::Local {
                what: what.map(&clean),
                source: std::io::Error::new(source.kind(), clean(source.to_string())),
            },
            Problem::Remote(Cause::Other { text, kind }) => Problem::Remote(Cause::Other {
                text: clean(text),
                kind,
            }),
            other => other,
        }
    }
}

/// A local I/O failure, optionally saying what was being done.
pub fn local(what: Option<String>, source: std::io::Error) -> Problem {
    Problem::Local { what, source }
}

/// Why the transport failed, as far as it can be told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Cause {
    #[error("authentication failed (HTTP 401): check the user and password or token")]
    Unauthorized,
    #[error("access denied (HTTP 403): the credentials are not allowed to read this repository")]
    Forbidden,
    #[error(
        "the server's TLS certificate could not be verified: give the CA that signed it as \
         httpsCACert or httpsCACertFile"
    )]
    Certificate,
    #[error("connection refused, is the server running?")]
    Refused,
    #[error("host name could not be resolved")]
    Unresolvable,
    #[error("connection timed out")]
    ConnectTimeout,
    #[error("HTTP 404: no repository at this URL")]
    NoRepository,
    #[error("not a git repository")]
    NotARepository,
    #[error("{0}")]
    Ssh(#[from] SshFailure),
    #[error("the proxy {proxy} (from {variable}) {failure}")]
    Proxy {
        /// Redacted.
        proxy: String,
        variable: &'static str,
        failure: ProxyFailure,
    },
    /// Nothing recognised: the transport's own words (redacted, one line, shortened), and the
    /// kind its typed errors still tell (a timeout, a broken connection).
    #[error("{text}")]
    Other { text: String, kind: Kind },
}

impl Cause {
    pub fn kind(&self) -> Kind {
        match self {
            Cause::Unauthorized | Cause::Forbidden => Kind::Auth,
            Cause::Certificate => Kind::Tls,
            Cause::Refused | Cause::Unresolvable | Cause::ConnectTimeout => Kind::Network,
            Cause::NoRepository | Cause::NotARepository => Kind::NotFound,
            Cause::Ssh(ssh) => ssh.kind(),
            Cause::Proxy { .. } => Kind::Proxy,
            Cause::Other { kind, .. } => *kind,
        }
    }

    /// The same cause, told as the proxy's when a proxy is in between and the cause is one a
    /// proxy produces: every TCP connection then goes to the proxy, so a refused or
    /// unresolvable connection is the proxy's.
    fn through(self, proxy: Option<&Proxy>) -> Cause {
        let Some(proxy) = proxy else { return self };
        let failure = match self {
            Cause::Refused => ProxyFailure::Refused,
            Cause::Unresolvable => ProxyFailure::Unresolvable,
            other => return other,
        };
        proxy_cause(proxy, failure)
    }
}

pub fn proxy_cause(proxy: &Proxy, failure: ProxyFailure) -> Cause {
    Cause::Proxy {
        proxy: proxy.redacted(),
        variable: proxy.variable(),
        failure,
    }
}

/// Why an SSH session failed, from ssh's log (gix) or the callbacks (git2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshFailure {
    #[error(
        "the host key of {host} has changed: the server offered {offered}, which does not \
         match the known hosts (update knownHosts if the change is expected)"
    )]
    HostKeyChanged { host: String, offered: String },
    #[error(
        "the host key of {host} is not in the known hosts: the server offered {offered} \
         (add it to knownHosts after checking the fingerprint)"
    )]
    HostKeyUnknown { host: String, offered: String },
    #[error("the server's SSH host key could not be read")]
    HostKeyUnreadable,
    #[error("the SSH private key could not be decrypted: wrong passphrase")]
    WrongPassphrase,
    #[error("the SSH private key could not be loaded (invalid format or corrupt key)")]
    KeyUnreadable,
    #[error("the SSH private key is encrypted and no passphrase was given (sshPassphrase)")]
    NoPassphrase,
    #[error(
        "{host} refused the SSH key (permission denied): add its public key to the repository \
         as a deploy key"
    )]
    KeyRefused { host: String },
}

impl SshFailure {
    pub fn kind(&self) -> Kind {
        match self {
            SshFailure::HostKeyChanged { .. }
            | SshFailure::HostKeyUnknown { .. }
            | SshFailure::HostKeyUnreadable => Kind::HostKey,
            _ => Kind::Auth,
        }
    }
}

/// An HTTP status gitopsd's own HTTP client got (carried inside an `io::Error`, which the
/// gix transport interface requires).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Received HTTP status {0}")]
pub struct HttpStatus(pub u16);

/// A proxy's answer to CONNECT other than 2xx, from gitopsd's own HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("proxy answered the CONNECT with HTTP {0}")]
pub struct TunnelRefused(pub u16);

/// The proxy itself could not be reached by gitopsd's own HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to the proxy {proxy}: {source}")]
pub struct ProxyUnreachable {
    pub proxy: String,
    #[source]
    pub source: std::io::Error,
}

/// A host name gitopsd's own transports could not resolve to any address.
#[derive(Debug, thiserror::Error)]
#[error("could not resolve {0}")]
pub struct Unresolvable(pub String);

/// The server's certificate failed verification in gitopsd's own TLS client.
#[derive(Debug, thiserror::Error)]
#[error("SSL certificate problem: {0}")]
pub struct CertificateRejected(pub String);

/// Every error in `error`'s chain, outermost first: `source()` links, the payload of an
/// `io::Error` (which `source()` skips), and the errors a gix error holds at its boundary.
fn nodes<'a>(error: &'a (dyn Error + 'static)) -> Vec<&'a (dyn Error + 'static)> {
    let mut out: Vec<&'a (dyn Error + 'static)> = Vec::new();
    let mut pending = vec![error];
    while let Some(e) = pending.pop() {
        if out.len() > 64 {
            break;
        }
        if out.iter().any(|seen| std::ptr::addr_eq(*seen, e)) {
            continue;
        }
        out.push(e);
        if let Some(source) = e.source() {
            pending.push(source);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        if let Some(gix) = e.downcast_ref::<gix::Error>() {
            pending.extend(gix.iter_errors());
        }
    }
    out
}

/// The cause of a transport failure, from the error's types (see the module docs). `proxy`:
/// the proxy the request went through, if any.
pub fn classify(error: &(dyn Error + 'static), proxy: Option<&Proxy>) -> Cause {
    let nodes = nodes(error);
    let text = crate::error::chain_lines(error);
    // curl may report a refused CONNECT with the code of a failed connection: the proxy's
    // answer, when there is one, says more.
    if let Some(cause) = proxy.and_then(|p| untyped::tunnel(&text, p)) {
        return cause;
    }
    if let Some(cause) = nodes.iter().find_map(|e| typed(*e, proxy)) {
        return cause.through(proxy);
    }
    let classes = || gix::error::classify(error);
    if classes().is_unauthenticated() {
        return Cause::Unauthorized;
    }
    // gix marks a 403 as "permission denied"; a 401 carries the same io kind, checked above.
    if classes().is_permission_denied() {
        return Cause::Forbidden;
    }
    if let Some(cause) = untyped::cause(&text, proxy) {
        return cause;
    }
    let kind = if classes().is_cancelled()
        || nodes.iter().any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        }) {
        Kind::Timeout
    } else {
        Kind::Network
    };
    other(&text, kind, proxy)
}

/// A cause from one error's type alone.
fn typed(e: &(dyn Error + 'static), proxy: Option<&Proxy>) -> Option<Cause> {
    if let Some(curl) = e.downcast_ref::<curl::Error>() {
        return curl_cause(curl);
    }
    if e.downcast_ref::<gix::protocol::transport::client::AuthenticationRequired>()
        .is_some()
    {
        return Some(Cause::Unauthorized);
    }
    // gix refuses to answer a 401 with credentials over plain http: the server wanted some.
    if let Some(gix::protocol::transport::client::Error::AuthenticationRefused(_)) =
        e.downcast_ref::<gix::protocol::transport::client::Error>()
    {
        return Some(Cause::Unauthorized);
    }
    if let Some(HttpStatus(status)) = e.downcast_ref::<HttpStatus>() {
        if *status == 407 {
            return proxy.map(|p| proxy_cause(p, ProxyFailure::RequiresAuth));
        }
        return http_status(*status);
    }
    if let Some(TunnelRefused(status)) = e.downcast_ref::<TunnelRefused>() {
        return proxy.map(|p| proxy_cause(p, ProxyFailure::tunnel(*status)));
    }
    if e.downcast_ref::<ProxyUnreachable>().is_some() {
        return proxy.map(|p| proxy_cause(p, ProxyFailure::Refused));
    }
    if e.downcast_ref::<Unresolvable>().is_some() {
        return Some(Cause::Unresolvable);
    }
    if e.downcast_ref::<CertificateRejected>().is_some() {
        return Some(Cause::Certificate);
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => Some(Cause::Refused),
            // A file:// URL whose directory does not exist.
            std::io::ErrorKind::NotFound => Some(Cause::NotARepository),
            _ => None,
        };
    }
    None
}

/// curl's error code, where it names one of the causes.
fn curl_cause(e: &curl::Error) -> Option<Cause> {
    if e.is_couldnt_resolve_proxy() {
        // Named as the proxy's by `Cause::through`, which knows the proxy.
        Some(Cause::Unresolvable)
    } else if e.is_couldnt_connect() {
        Some(Cause::Refused)
    } else if e.is_couldnt_resolve_host() {
        Some(Cause::Unresolvable)
    } else if e.is_peer_failed_verification() || e.is_ssl_cacert() || e.is_ssl_certproblem() {
        Some(Cause::Certificate)
    } else {
        None
    }
}

/// The cause an HTTP status names, if it names one.
fn http_status(status: u16) -> Option<Cause> {
    match status {
        401 => Some(Cause::Unauthorized),
        403 => Some(Cause::Forbidden),
        404 => Some(Cause::NoRepository),
        _ => None,
    }
}

/// The transport's own words, shortened to a status field's length, with a proxy password
/// taken out.
fn other(text: &str, kind: Kind, proxy: Option<&Proxy>) -> Cause {
    let text = match proxy {
        Some(proxy) => proxy.scrub(text),
        None => text.to_string(),
    };
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push('…');
    }
    Cause::Other { text: short, kind }
}

/// The cause of a libgit2 failure: its class and code first, then the words of the few
/// classes that cover several causes (see [`untyped`]).
pub fn classify_git2(e: &git2::Error, proxy: Option<&Proxy>) -> Cause {
    use git2::{ErrorClass, ErrorCode};
    let message = e.message();
    // libgit2 gives a 401 and a proxy's 407 the same code; only the message tells them apart.
    if e.code() == ErrorCode::Auth {
        if let (Some(proxy), true) = (proxy, untyped::libgit2_proxy_auth(message)) {
            return proxy_cause(proxy, ProxyFailure::RequiresAuth);
        }
        return Cause::Unauthorized;
    }
    if e.code() == ErrorCode::Certificate {
        return Cause::Certificate;
    }
    // A file:// URL whose directory holds no repository: libgit2 reports it with the
    // generic code of its repository class.
    if e.class() == ErrorClass::Repository && untyped::libgit2_no_repository(message) {
        return Cause::NotARepository;
    }
    if let Some(cause) = untyped::cause(message, proxy) {
        return cause;
    }
    if e.class() == ErrorClass::Ssl && untyped::libgit2_certificate(message) {
        return Cause::Certificate;
    }
    let kind = match e.class() {
        ErrorClass::Net | ErrorClass::Http | ErrorClass::Ssh | ErrorClass::Ssl => Kind::Network,
        ErrorClass::Callback => Kind::Timeout,
        _ => Kind::Internal,
    };
    other(message, kind, proxy)
}

/// The failures that reach gitopsd only as text, each with the reason no typed form exists.
/// Everything else is classified from types in [`classify`] and [`classify_git2`].
pub mod untyped {
    use super::{proxy_cause, Cause, ProxyFailure, SshFailure};
    use crate::source::proxy::Proxy;

    /// A cause told only in words:
    /// - an HTTP status from gix's curl transport, which puts it in the message ("Received
    ///   HTTP status 404") and gives only 403 a class; from libgit2 ("unexpected http status
    ///   code: 404"), whose class `Http` covers every status;
    /// - a proxy's answer to CONNECT: curl and libgit2 report it in their message only;
    /// - the server saying there is no repository on its error channel (git's
    ///   `fatal: ... does not appear to be a git repository`): that is text by protocol;
    /// - libgit2's socket errors, which lose the errno ("failed to connect to h: Connection
    ///   refused", "failed to resolve address for h").
    pub fn cause(text: &str, proxy: Option<&Proxy>) -> Option<Cause> {
        let lower = text.to_ascii_lowercase();
        if let Some(cause) = proxy.and_then(|p| tunnel(text, p)) {
            return Some(cause);
        }
        if let Some(status) = http_status(&lower) {
            if status == 407 {
                return proxy.map(|p| proxy_cause(p, ProxyFailure::RequiresAuth));
            }
            return super::http_status(status);
        }
        if lower.contains("not a git repository")
            || lower.contains("does not appear to be a git repository")
        {
            return Some(Cause::NotARepository);
        }
        let cause = if lower.contains("connection refused") {
            Cause::Refused
        } else if lower.contains("failed to resolve address") {
            Cause::Unresolvable
        } else {
            return None;
        };
        Some(cause.through(proxy))
    }

    /// The proxy's refusal of a CONNECT, from the status in the client's message (see
    /// [`crate::source::proxy::tunnel_status`]).
    pub fn tunnel(text: &str, proxy: &Proxy) -> Option<Cause> {
        let status = crate::source::proxy::tunnel_status(&text.to_ascii_lowercase())?;
        Some(proxy_cause(proxy, ProxyFailure::tunnel(status)))
    }

    /// `NNN` after "Received HTTP status " (gix's curl transport) or "unexpected http status
    /// code: " (libgit2).
    fn http_status(lower: &str) -> Option<u16> {
        crate::source::proxy::number_after(
            lower,
            &["received http status ", "unexpected http status code: "],
        )
    }

    /// libgit2 reports a proxy's 407 with the same code as a server's 401 (`GIT_EAUTH`):
    /// "proxy authentication required but no callback set", "proxy requires authentication
    /// that we do not support".
    pub fn libgit2_proxy_auth(message: &str) -> bool {
        let lower = message.to_ascii_lowercase();
        lower.contains("proxy authentication") || lower.contains("proxy requires authentication")
    }

    /// libgit2 tells a missing repository (`could not find repository at ...`) only in words.
    pub fn libgit2_no_repository(message: &str) -> bool {
        message.starts_with("could not find repository")
    }

    /// libgit2's TLS class covers handshake and certificate failures alike.
    pub fn libgit2_certificate(message: &str) -> bool {
        message.to_ascii_lowercase().contains("certificate")
    }

    /// libssh2 gives one error for every way loading a private key can fail, and libgit2
    /// passes on only its message (class `Ssh`), so the message is what tells a key that
    /// could not be loaded from other SSH failures.
    pub fn libssh2_key_load(message: &str) -> bool {
        let lower = message.to_ascii_lowercase();
        lower.contains("private key") || lower.contains("passphrase")
    }

    /// The reason an ssh connection failed, from ssh's debug log (`ssh -v -E`): ssh reports
    /// everything as text on its log and a generic exit status. `None` when the log does
    /// not say; a connection-level reason comes back as the general cause.
    pub fn ssh_log(log: &str, host: &str) -> Option<Cause> {
        // "debug1: Server host key: ssh-ed25519 SHA256:..."
        let offered = log
            .lines()
            .find_map(|l| {
                l.split_once("Server host key: ")
                    .map(|(_, k)| k.trim().to_string())
            })
            .unwrap_or_else(|| "an unknown key".into());
        let host = host.to_string();
        let ssh = if log.contains("REMOTE HOST IDENTIFICATION HAS CHANGED") {
            SshFailure::HostKeyChanged { host, offered }
        } else if log.contains("Host key verification failed")
            || log.contains("host key is known for")
        {
            SshFailure::HostKeyUnknown { host, offered }
        } else if log.contains("incorrect passphrase") || log.contains("bad passphrase") {
            SshFailure::WrongPassphrase
        } else if log.contains("invalid format") || log.contains("error in libcrypto") {
            SshFailure::KeyUnreadable
        } else if log.contains("Permission denied") {
            // The server would take the key, but ssh could not use it: it is encrypted.
            if log.contains("Server accepts key") {
                if log.contains("read_passphrase") {
                    SshFailure::WrongPassphrase
                } else {
                    SshFailure::NoPassphrase
                }
            } else {
                SshFailure::KeyRefused { host }
            }
        } else if log.contains("Connection refused") {
            return Some(Cause::Refused);
        } else if log.contains("Could not resolve hostname") {
            return Some(Cause::Unresolvable);
        } else if log.contains("Connection timed out") {
            return Some(Cause::ConnectTimeout);
        } else {
            return None;
        };
        Some(Cause::Ssh(ssh))
    }

    /// What the remote side of an ssh session wrote on its stderr (git's `fatal: ...`): by
    /// protocol, text only.
    pub fn remote_stderr(said: &str) -> Cause {
        cause(said, None).unwrap_or_else(|| super::other(said, super::Kind::Internal, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_decide_retries() {
        assert!(Cause::Refused.kind().retryable());
        assert!(!GitError::new("https://h/r", Problem::UnparsableUrl).retryable());
        assert_eq!(
            GitError::new("https://u:p@h/r", Cause::Forbidden).to_string(),
            "cannot fetch from https://<redacted>@h/r: access denied (HTTP 403): the \
             credentials are not allowed to read this repository"
        );
    }

    /// Typed payloads are found wherever they sit in the chain, `io::Error` payloads included.
    #[test]
    fn typed_causes_are_found_in_the_chain() {
        use std::io;
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify(&refused, None), Cause::Refused);
        let status = io::Error::new(io::ErrorKind::PermissionDenied, HttpStatus(403));
        let wrapped = io::Error::other(status);
        assert_eq!(classify(&wrapped, None), Cause::Forbidden);
        let proxy = crate::source::proxy::for_url_with("https://h/r", &|name| {
            (name == "HTTPS_PROXY").then(|| "http://u:pw@p:3128".to_string())
        })
        .expect("a proxy");
        let tunnel = io::Error::other(TunnelRefused(407));
        let cause = classify(&tunnel, Some(&proxy));
        assert_eq!(cause.kind(), Kind::Proxy);
        assert_eq!(
            cause.to_string(),
            "the proxy http://p:3128 (from HTTPS_PROXY) requires authentication (HTTP 407): \
             check the user and password in the proxy URL"
        );
        // With a proxy in between, a refused connection is the proxy's.
        assert_eq!(
            classify(&refused, Some(&proxy)).to_string(),
            "the proxy http://p:3128 (from HTTPS_PROXY) refused the connection: is it running?"
        );
        let stalled = io::Error::new(io::ErrorKind::TimedOut, "the server sent nothing");
        assert_eq!(classify(&stalled, None).kind(), Kind::Timeout);
    }

    #[test]
    fn untyped_statuses_are_read_from_the_known_wordings() {
        assert_eq!(
            untyped::cause("Received HTTP status 404", None),
            Some(Cause::NoRepository)
        );
        assert_eq!(
            untyped::cause("unexpected http status code: 401", None),
            Some(Cause::Unauthorized)
        );
        assert_eq!(untyped::cause("Received HTTP status 500", None), None);
        assert_eq!(
            untyped::cause("fatal: '/x' does not appear to be a git repository", None),
            Some(Cause::NotARepository)
        );
    }

    #[test]
    fn ssh_log_names_the_host_key() {
        let log = "debug1: Server host key: ssh-ed25519 SHA256:abc\nHost key verification failed.";
        assert_eq!(
            untyped::ssh_log(log, "[h]:22").unwrap().to_string(),
            "the host key of [h]:22 is not in the known hosts: the server offered ssh-ed25519 \
             SHA256:abc (add it to knownHosts after checking the fingerprint)"
        );
        assert_eq!(untyped::ssh_log("debug1: hello", "h"), None);
    }
}
