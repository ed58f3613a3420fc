//! A `git` source's settings, and the rules that check them: the URL, the ref and Flux's
//! precedence among its fields, the implementation, and the credential keys named after
//! `az k8s-configuration flux create`'s arguments.
//!
//! This module owns everything both the config loader and the runtime need about a git
//! source's settings ([`GitSettings`], [`GitAuthSettings`] and the secret values in it,
//! [`UrlKind`]), so that `config` never reaches into `auth`'s runtime code: `config` decodes
//! the common source keys and calls [`decode`] and [`validate`] for these. It depends on
//! `syntax` for positions and value rules, on `vocab` for [`SecretRef`], and on `semver` to
//! check a range parses.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use super::semver::Range;
use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{Pos, Problems};
use crate::syntax::values::resolve;
use crate::vocab::SecretRef;

/// A `git` source's own settings; the URL and what every kind has are in the caller's.
#[derive(Debug, Clone)]
pub struct GitSettings {
    pub reference: GitReference,
    pub implementation: GitImplementation,
    pub auth: GitAuthSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GitImplementation {
    Auto,
    Gix,
    Git2,
}

/// The git ref to follow, after Flux's precedence (commit > name > tag > semver > branch)
/// has been applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitReference {
    /// No ref given: the branch the remote's HEAD points at.
    RemoteHead,
    Branch(String),
    Tag(String),
    /// A Masterminds range, already checked to parse.
    Semver(String),
    /// A full ref name such as `refs/pull/1/head`.
    Name(String),
    Commit {
        sha: String,
        branch: Option<String>,
    },
}

/// The fields of `ref`.
pub const REF_FIELDS: &[&str] = &["branch", "tag", "semver", "commit", "name"];

/// The credential keys, named after `az k8s-configuration flux create`'s arguments;
/// `localAuthRef` is shared with the other kinds.
pub const AUTH_FIELDS: &[&str] = &[
    "httpsUser",
    "httpsKey",
    "httpsKeyFile",
    "bearerToken",
    "bearerTokenFile",
    "httpsCACert",
    "httpsCACertFile",
    "tlsClientCertFile",
    "tlsClientKeyFile",
    "sshPrivateKey",
    "sshPrivateKeyFile",
    "sshPassphrase",
    "sshPassphraseFile",
    "knownHosts",
    "knownHostsFile",
];

/// A git source's keys as written (`ref` and `gitImplementation` are listed with the common
/// keys, as every kind's `source` mapping shows them, but only git reads them).
#[derive(Debug, Clone, Default)]
pub struct RawGit {
    pub reference: Option<RawGitRef>,
    pub implementation: Option<Text>,
    pub auth: RawGitAuth,
}

#[derive(Debug, Clone)]
pub struct RawGitRef {
    pub pos: Pos,
    pub branch: Option<Text>,
    pub tag: Option<Text>,
    pub semver: Option<Text>,
    pub commit: Option<Text>,
    pub name: Option<Text>,
}

/// The credential keys as written (one entry per key of [`AUTH_FIELDS`], same order).
#[derive(Debug, Clone, Default)]
pub struct RawGitAuth {
    pub fields: Vec<(&'static str, Text)>,
}

impl RawGitAuth {
    pub fn get(&self, key: &str) -> Option<&Text> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, t)| t)
    }
}

/// Reads the git keys of a `source` mapping (whatever its kind: the caller rejects them on
/// other kinds).
pub fn decode(fields: &Fields<'_>, problems: &mut Problems) -> RawGit {
    let reference = fields
        .mapping("ref", REF_FIELDS, problems)
        .map(|f| RawGitRef {
            pos: f.pos,
            branch: f.text("branch", problems),
            tag: f.text("tag", problems),
            semver: f.text("semver", problems),
            commit: f.text("commit", problems),
            name: f.text("name", problems),
        });
    RawGit {
        reference,
        implementation: fields.text("gitImplementation", problems),
        auth: RawGitAuth {
            fields: AUTH_FIELDS
                .iter()
                .filter_map(|key| Some((*key, fields.text(key, problems)?)))
                .collect(),
        },
    }
}

/// Where a git source may find its credentials besides its own keys: the shared
/// `localAuthRef`, as written, and its Secret form once checked.
pub struct LocalAuth<'a> {
    pub directory: Option<&'a Text>,
    pub secret: Option<&'a Text>,
    pub secret_ref: Option<SecretRef>,
}

/// The settings of a `git` source whose URL (already checked by [`url`]; `None` when it was
/// invalid) is `url`. `None` when something is invalid (reported in `problems`).
pub fn validate(
    raw: &RawGit,
    url: Option<&str>,
    local_auth: LocalAuth<'_>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<GitSettings> {
    let (reference, implementation) = reference_and_implementation(raw, problems);
    let mut auth = auth(
        &raw.auth,
        local_auth.directory,
        local_auth.secret,
        url,
        base_dir,
        problems,
    );
    auth.local_auth_secret = local_auth.secret_ref;
    Some(GitSettings {
        reference: reference?,
        implementation,
        auth,
    })
}

/// For a source of another kind: the credential keys are reported as out of place; `ref` and
/// `gitImplementation` are still checked (a bucket source reports them itself too).
pub fn reject(raw: &RawGit, problems: &mut Problems) {
    reference_and_implementation(raw, problems);
    for (key, text) in &raw.auth.fields {
        problems.push(
            text.pos,
            format!("`{key}` applies only to sources of kind `git`"),
        );
    }
}

fn reference_and_implementation(
    raw: &RawGit,
    problems: &mut Problems,
) -> (Option<GitReference>, GitImplementation) {
    let reference = match &raw.reference {
        Some(reference) => git_reference(reference, problems),
        None => Some(GitReference::RemoteHead),
    };
    let implementation = match &raw.implementation {
        None => GitImplementation::Auto,
        Some(text) => match text.as_str() {
            "auto" => GitImplementation::Auto,
            "gix" => GitImplementation::Gix,
            "git2" => GitImplementation::Git2,
            other => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid gitImplementation {other:?}: expected `auto`, `gix` or `git2`"
                    ),
                );
                GitImplementation::Auto
            }
        },
    };
    (reference, implementation)
}

/// Checks every ref field that is set, then applies Flux's precedence:
/// commit > name > tag > semver > branch.
fn git_reference(raw: &RawGitRef, problems: &mut Problems) -> Option<GitReference> {
    let mut valid = true;
    let mut check =
        |text: &Option<Text>, key: &str, check: &dyn Fn(&str) -> Result<(), RefProblem>| {
            let text = text.as_ref()?;
            match check(&text.value) {
                Ok(()) => Some(text.value.clone()),
                Err(reason) => {
                    problems.push(
                        text.pos,
                        format!("invalid {key} {:?} in source.ref: {reason}", text.value),
                    );
                    valid = false;
                    None
                }
            }
        };
    let branch = check(&raw.branch, "branch", &check_ref_component);
    let tag = check(&raw.tag, "tag", &check_ref_component);
    let semver = check(&raw.semver, "semver range", &|range| {
        Range::parse(range)
            .map(drop)
            .map_err(|err| RefProblem::Semver(err.reason))
    });
    let name = check(&raw.name, "ref name", &check_full_ref_name);
    let commit = check(&raw.commit, "commit", &check_commit);
    if !valid {
        return None;
    }
    Some(if let Some(sha) = commit {
        GitReference::Commit {
            sha: sha.to_ascii_lowercase(),
            branch,
        }
    } else if let Some(name) = name {
        GitReference::Name(name)
    } else if let Some(tag) = tag {
        GitReference::Tag(tag)
    } else if let Some(range) = semver {
        GitReference::Semver(range)
    } else if let Some(branch) = branch {
        GitReference::Branch(branch)
    } else {
        GitReference::RemoteHead
    })
}

/// Why a ref field's value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefProblem {
    #[error(
        "not a valid git ref name (no spaces, `..`, `~^:?*[\\`, and not ending in `/`, `.` or \
         `.lock`)"
    )]
    InvalidName,
    #[error("expected a full ref name starting with refs/, such as refs/pull/1/head")]
    NotFullName,
    #[error("expected a full 40-character hexadecimal SHA-1")]
    NotCommit,
    /// The semver parser's own reason.
    #[error("{0}")]
    Semver(String),
}

/// A branch or tag as git's check-ref-format accepts it (without the `refs/heads/` part).
fn check_ref_component(name: &str) -> Result<(), RefProblem> {
    // Two-character sequences git refuses anywhere in a name.
    let refused_pair = |pair: &[u8]| matches!(pair, b".." | b"//" | b"@{" | b"/.");
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.as_bytes().windows(2).any(refused_pair)
        || name == "@"
        || name.chars().any(|c| {
            c.is_control()
                || c.is_whitespace()
                || matches!(c, '~' | '^' | ':' | '?' | '*' | '[' | '\\')
        });
    if bad {
        Err(RefProblem::InvalidName)
    } else {
        Ok(())
    }
}

fn check_full_ref_name(name: &str) -> Result<(), RefProblem> {
    match name.strip_prefix("refs/") {
        Some(rest) if check_ref_component(rest).is_ok() => Ok(()),
        _ => Err(RefProblem::NotFullName),
    }
}

fn check_commit(sha: &str) -> Result<(), RefProblem> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(RefProblem::NotCommit)
    }
}

const ACCEPTED: &str = "expected file://, git://, http://, https://, ssh://, scp-like \
                        user@host:path, or a local path starting with /, ./ or ../";

/// Why a git URL is refused. Never quotes the URL, which may hold a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("it is empty; {ACCEPTED}")]
    Empty,
    #[error("it contains a space or control character")]
    SpaceOrControl,
    #[error("a file:// URL needs an absolute path, such as file:///srv/git/repo.git")]
    FileWithoutPath,
    #[error("it names no repository path after the host")]
    NoPath,
    #[error("unsupported scheme `{0}`; {ACCEPTED}")]
    Scheme(String),
    #[error("the host part of user@host:path is not a valid host name")]
    ScpHost,
    #[error("it names no repository path after `:`")]
    ScpNoPath,
    #[error("it is not a URL; {ACCEPTED}")]
    NotAUrl,
    #[error("its IPv6 address lacks the closing `]`")]
    UnclosedIpv6,
    #[error("its bracketed host is not an IPv6 address")]
    NotIpv6,
    #[error("unexpected text after the IPv6 address")]
    AfterIpv6,
    #[error("it has no host")]
    NoHost,
    #[error("its host is not a valid host name")]
    BadHost,
    #[error("its port is not a number between 0 and 65535")]
    BadPort,
}

/// The URL to fetch: a local path written as such (`/srv/git/repo`, `./repo`, `..`) becomes a
/// `file://` URL, relative paths counting from the config file's directory; anything else must
/// be a URL [`check_url`] accepts and is kept as written.
pub fn url(url: &str, base_dir: &Path) -> Result<String, UrlProblem> {
    let is_local_path = url == "."
        || url == ".."
        || url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../");
    if !is_local_path {
        check_url(url)?;
        return Ok(url.to_string());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::SpaceOrControl);
    }
    let path = resolve(base_dir, Path::new(url));
    Ok(format!("file://{}", path.display()))
}

/// Accepts `file://`, `git://`, `http://`, `https://`, `ssh://` URLs and scp-like
/// `user@host:path`.
fn check_url(url: &str) -> Result<(), UrlProblem> {
    if url.is_empty() {
        return Err(UrlProblem::Empty);
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(UrlProblem::SpaceOrControl);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        return match scheme.as_str() {
            "file" if path.len() <= 1 => Err(UrlProblem::FileWithoutPath),
            "file" => Ok(()),
            "git" | "http" | "https" | "ssh" => {
                check_authority(authority)?;
                if path.len() <= 1 {
                    Err(UrlProblem::NoPath)
                } else {
                    Ok(())
                }
            }
            _ => Err(UrlProblem::Scheme(scheme)),
        };
    }
    // scp-like: user@host:path, where no '/' comes before the ':'.
    if let Some((user_host, path)) = url.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            if !user_host.contains('/') && !user.is_empty() {
                if !is_host_name(host) {
                    return Err(UrlProblem::ScpHost);
                }
                if path.is_empty() {
                    return Err(UrlProblem::ScpNoPath);
                }
                return Ok(());
            }
        }
    }
    Err(UrlProblem::NotAUrl)
}

/// `[user[:password]@]host[:port]` of a network URL.
fn check_authority(authority: &str) -> Result<(), UrlProblem> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed.split_once(']').ok_or(UrlProblem::UnclosedIpv6)?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err(UrlProblem::NotIpv6);
        }
        if after.is_empty() {
            None
        } else {
            Some(after.strip_prefix(':').ok_or(UrlProblem::AfterIpv6)?)
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if !is_host_name(host) {
            return Err(if host.is_empty() {
                UrlProblem::NoHost
            } else {
                UrlProblem::BadHost
            });
        }
        port
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err(UrlProblem::BadPort);
        }
    }
    Ok(())
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
}

/// Secret bytes: never printed, zeroed on drop.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretBytes(Vec<u8>);

impl SecretBytes {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text (tokens, passwords); `None` when not UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// Without a trailing line break: a file written with `echo` or `kubectl create secret
    /// --from-file` ends in one that is not part of the token.
    pub(crate) fn trim_line_end(mut self) -> Self {
        while matches!(self.0.last(), Some(b'\n' | b'\r')) {
            self.0.pop();
        }
        self
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretBytes(<redacted>)")
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        for byte in self.0.iter_mut() {
            // SAFETY: a volatile write to a valid, exclusively borrowed byte; it keeps the
            // compiler from dropping the wipe as a dead store.
            unsafe { std::ptr::write_volatile(byte, 0) };
        }
    }
}

/// Where one secret comes from.
#[derive(Clone, Debug)]
pub enum SecretSource {
    /// Given in the config (base64 values already decoded).
    Inline(SecretBytes),
    /// Read at every sync.
    File(PathBuf),
}

/// A git source's credential settings, as validated from the config. All optional; an empty
/// value means "public repository" (or, for an ssh URL, "use the generated key").
#[derive(Clone, Debug, Default)]
pub struct GitAuthSettings {
    pub https_user: Option<String>,
    pub https_key: Option<SecretSource>,
    pub bearer_token: Option<SecretSource>,
    /// PEM, one or more CA certificates; replaces the system's trust store for this source.
    pub ca_cert: Option<SecretSource>,
    /// Mutual TLS: client certificate and key (PEM) files.
    pub tls_client_cert_file: Option<PathBuf>,
    pub tls_client_key_file: Option<PathBuf>,
    pub ssh_private_key: Option<SecretSource>,
    pub ssh_passphrase: Option<SecretSource>,
    /// `known_hosts` text; absent: [`super::known_hosts::BUILT_IN`].
    pub known_hosts: Option<SecretSource>,
    /// A directory of Flux's secret keys (`username`, `password`, `bearerToken`, `ca.crt`,
    /// `tls.crt`, `tls.key`, `identity`, `known_hosts`), e.g. a mounted Kubernetes Secret.
    pub local_auth_ref: Option<PathBuf>,
    /// The same keys in a Kubernetes Secret, read through the API at every sync
    /// (`localAuthRef: { secret: NAME }`). Never set together with `local_auth_ref`.
    pub local_auth_secret: Option<SecretRef>,
}

/// How a URL reaches its server, as far as credentials go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UrlKind {
    Http,
    Https,
    Ssh,
    /// `file://`, `git://`: no credentials.
    Other,
}

impl UrlKind {
    pub fn of(url: &str) -> UrlKind {
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("https://") {
            UrlKind::Https
        } else if lower.starts_with("http://") {
            UrlKind::Http
        } else if lower.starts_with("ssh://")
            || lower.starts_with("git+ssh://")
            || (!lower.contains("://") && is_scp_like(url))
        {
            UrlKind::Ssh
        } else {
            UrlKind::Other
        }
    }

    pub fn is_http(self) -> bool {
        matches!(self, UrlKind::Http | UrlKind::Https)
    }
}

/// `[user@]host:path`, with a host of more than one letter (`C:` is a drive).
fn is_scp_like(url: &str) -> bool {
    let Some((host, _)) = url.split_once(':') else {
        return false;
    };
    let host = host.rsplit('@').next().unwrap_or(host);
    host.len() > 1 && !host.contains('/') && !url.starts_with('/') && !url.starts_with('.')
}

pub(crate) fn looks_like_private_key(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let text = text.trim();
    text.starts_with("-----BEGIN ")
        && text.contains("PRIVATE KEY-----")
        && text.ends_with("-----")
        && text.lines().count() >= 3
}

/// Strict standard base64 (with or without padding; whitespace and line breaks ignored), as
/// the az CLI produces for `--ssh-private-key`, `--known-hosts` and `--https-ca-cert`.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut padding = 0;
    for c in text.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                padding += 1;
                continue;
            }
            _ => return None,
        };
        if padding > 0 {
            return None; // data after padding
        }
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero and padding must complete a quantum.
    if padding > 2 || acc & ((1 << bits) - 1) != 0 || bits == 6 {
        return None;
    }
    if padding > 0 && (bits / 2) != padding {
        return None;
    }
    Some(out)
}

/// The credential keys ([`AUTH_FIELDS`]). `url` is the validated source URL (absent when
/// it was invalid); `local_auth_ref` the shared `localAuthRef.directory` and
/// `local_auth_secret` its `secret` form, as written. The caller sets
/// [`GitAuthSettings::local_auth_secret`]: the Secret's namespace and cluster are not known here.
fn auth(
    raw: &RawGitAuth,
    local_auth_ref: Option<&Text>,
    local_auth_secret: Option<&Text>,
    url: Option<&str>,
    base_dir: &Path,
    problems: &mut Problems,
) -> GitAuthSettings {
    let mut settings = GitAuthSettings::default();
    let kind = url.map(UrlKind::of);
    for (key, text) in &raw.fields {
        if text.value.is_empty() {
            problems.push(text.pos, format!("`{key}` must not be empty"));
        }
        let ssh_key = key.starts_with("ssh") || key.starts_with("knownHosts");
        match kind {
            Some(kind) if ssh_key && kind != UrlKind::Ssh => problems.push(
                text.pos,
                format!("`{key}` applies only to ssh URLs (ssh://... or user@host:path)"),
            ),
            Some(kind) if !ssh_key && !kind.is_http() => {
                problems.push(text.pos, format!("`{key}` applies only to http(s) URLs"))
            }
            _ => {}
        }
        if let Some(dir) = local_auth_ref.or(local_auth_secret) {
            problems.push(
                text.pos,
                format!(
                    "`{key}` cannot be combined with `localAuthRef` (line {}); put every \
                     credential in one place",
                    dir.pos.line
                ),
            );
        }
    }
    let path = |text: &Text| resolve(base_dir, Path::new(&text.value));
    let file = |key: &str| raw.get(key).map(|text| SecretSource::File(path(text)));
    // An inline value and its file variant: exactly one may be given.
    let pick = |inline: &str,
                decode: &dyn Fn(&Text) -> Option<SecretBytes>,
                problems: &mut Problems|
     -> Option<SecretSource> {
        let file_key = format!("{inline}File");
        match (raw.get(inline), raw.get(&file_key)) {
            (Some(_), Some(second)) => {
                problems.push(
                    second.pos,
                    format!("`{inline}` and `{file_key}` are both set; give one of them"),
                );
                None
            }
            (Some(text), None) => decode(text).map(SecretSource::Inline),
            (None, Some(_)) => file(&file_key),
            (None, None) => None,
        }
    };
    let plain = |text: &Text| Some(SecretBytes::new(text.value.clone().into_bytes()));
    let base64 = |what: &'static str, check: fn(&[u8]) -> bool| {
        move |text: &Text, problems: &mut Problems| -> Option<SecretBytes> {
            match decode_base64(&text.value) {
                None => {
                    problems.push(
                        text.pos,
                        format!("invalid base64 for {what}: expected the base64 encoding of the file's content (e.g. `base64 -w0 FILE`)"),
                    );
                    None
                }
                Some(bytes) if !check(&bytes) => {
                    problems.push(
                        text.pos,
                        format!("the base64 value does not decode to {what}"),
                    );
                    None
                }
                Some(bytes) => Some(SecretBytes::new(bytes)),
            }
        }
    };
    settings.https_user = raw.get("httpsUser").map(|t| t.value.clone());
    settings.https_key = pick("httpsKey", &plain, problems);
    settings.bearer_token = pick("bearerToken", &plain, problems);
    let ca = base64("a PEM CA certificate", |b| {
        b.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----")
    });
    settings.ca_cert = match (raw.get("httpsCACert"), raw.get("httpsCACertFile")) {
        (Some(_), Some(second)) => {
            problems.push(
                second.pos,
                "`httpsCACert` and `httpsCACertFile` are both set; give one of them",
            );
            None
        }
        (Some(text), None) => ca(text, problems).map(SecretSource::Inline),
        (None, Some(_)) => file("httpsCACertFile"),
        (None, None) => None,
    };
    let key = base64("an SSH private key", looks_like_private_key);
    settings.ssh_private_key = match (raw.get("sshPrivateKey"), raw.get("sshPrivateKeyFile")) {
        (Some(_), Some(second)) => {
            problems.push(
                second.pos,
                "`sshPrivateKey` and `sshPrivateKeyFile` are both set; give one of them",
            );
            None
        }
        (Some(text), None) => key(text, problems).map(SecretSource::Inline),
        (None, Some(_)) => file("sshPrivateKeyFile"),
        (None, None) => None,
    };
    settings.ssh_passphrase = pick("sshPassphrase", &plain, problems);
    let hosts = base64("known_hosts lines", |b| std::str::from_utf8(b).is_ok());
    settings.known_hosts = match (raw.get("knownHosts"), raw.get("knownHostsFile")) {
        (Some(_), Some(second)) => {
            problems.push(
                second.pos,
                "`knownHosts` and `knownHostsFile` are both set; give one of them",
            );
            None
        }
        (Some(text), None) => hosts(text, problems).map(SecretSource::Inline),
        (None, Some(_)) => file("knownHostsFile"),
        (None, None) => None,
    };
    settings.tls_client_cert_file = raw.get("tlsClientCertFile").map(path);
    settings.tls_client_key_file = raw.get("tlsClientKeyFile").map(path);
    settings.local_auth_ref = local_auth_ref.map(path);

    // Combinations.
    let key_given = raw.get("httpsKey").or(raw.get("httpsKeyFile"));
    match (raw.get("httpsUser"), key_given) {
        (Some(user), None) => problems.push(
            user.pos,
            "`httpsUser` needs `httpsKey` or `httpsKeyFile` (the password or token)",
        ),
        (None, Some(key)) => problems.push(key.pos, "`httpsKey` needs `httpsUser`"),
        _ => {}
    }
    if let (Some(_), Some(token)) = (
        raw.get("httpsUser"),
        raw.get("bearerToken").or(raw.get("bearerTokenFile")),
    ) {
        problems.push(
            token.pos,
            "a bearer token cannot be combined with `httpsUser`; use one of them",
        );
    }
    match (raw.get("tlsClientCertFile"), raw.get("tlsClientKeyFile")) {
        (Some(cert), None) => {
            problems.push(cert.pos, "`tlsClientCertFile` needs `tlsClientKeyFile`")
        }
        (None, Some(key)) => problems.push(key.pos, "`tlsClientKeyFile` needs `tlsClientCertFile`"),
        _ => {}
    }
    if let Some(passphrase) = raw.get("sshPassphrase").or(raw.get("sshPassphraseFile")) {
        if raw.get("sshPrivateKey").is_none() && raw.get("sshPrivateKeyFile").is_none() {
            problems.push(
                passphrase.pos,
                "`sshPassphrase` needs `sshPrivateKey` or `sshPrivateKeyFile` (a generated key \
                 has no passphrase)",
            );
        }
    }
    if let (Some(url_text), Some(_)) = (url, raw.get("httpsUser")) {
        if let Some(rest) = url_text.split_once("://").map(|(_, r)| r) {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if authority.contains('@') {
                let user = raw.get("httpsUser").expect("checked");
                problems.push(
                    user.pos,
                    "`httpsUser` is set and the URL has credentials too; remove them from the URL",
                );
            }
        }
    }
    settings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        assert_eq!(decode_base64("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVsbG8").unwrap(), b"hello");
        assert_eq!(decode_base64("aGVs\nbG8h").unwrap(), b"hello!");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("aGVsbG8*").is_none());
        assert!(decode_base64("a").is_none());
        assert!(decode_base64("aGVsbG8=x").is_none());
        assert!(decode_base64("aGVsbG9=").is_none());
    }

    #[test]
    fn url_kinds() {
        assert_eq!(UrlKind::of("https://h/r"), UrlKind::Https);
        assert_eq!(UrlKind::of("http://h/r"), UrlKind::Http);
        assert_eq!(UrlKind::of("ssh://git@h/r"), UrlKind::Ssh);
        assert_eq!(UrlKind::of("git@github.com:org/r.git"), UrlKind::Ssh);
        assert_eq!(UrlKind::of("file:///srv/r.git"), UrlKind::Other);
        assert_eq!(UrlKind::of("git://h/r"), UrlKind::Other);
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/org/repo",
            "http://localhost:3000/org/repo.git",
            "ssh://git@github.com/org/fleet",
            "ssh://git@[::1]:2222/org/fleet",
            "git://host/repo",
            "file:///srv/git/edge.git",
            "git@github.com:org/repo.git",
            "https://user:token@host/org/repo",
        ] {
            assert_eq!(check_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ftp://host/repo",
            "https://",
            "https:///org/repo",
            "https://host",
            "https://host:port/repo",
            "https://host/org repo",
            "file://",
            "file://repo",
            "git@:repo",
            "git@host:",
            "ssh://git@[::1/repo",
        ] {
            assert!(check_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn local_paths_become_file_urls() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(url("..", base).as_deref(), Ok("file:///etc"));
        assert_eq!(url(".", base).as_deref(), Ok("file:///etc/gitopsd"));
        assert_eq!(
            url("./repo", base).as_deref(),
            Ok("file:///etc/gitopsd/repo")
        );
        assert_eq!(
            url("/srv/git/x.git", base).as_deref(),
            Ok("file:///srv/git/x.git")
        );
        assert_eq!(url("https://h/r", base).as_deref(), Ok("https://h/r"));
        assert!(url("repo", base).is_err());
        assert!(url("github.com/org/repo", base).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(check_ref_component("main").is_ok());
        assert!(check_ref_component("release/1.x").is_ok());
        assert!(check_ref_component("v1.2.3").is_ok());
        for bad in ["", "a b", "a..b", "a/", "x.lock", "-x", "a~1", "a:b", "@"] {
            assert!(check_ref_component(bad).is_err(), "{bad:?}");
        }
        assert!(check_full_ref_name("refs/pull/1/head").is_ok());
        assert!(check_full_ref_name("main").is_err());
        assert!(check_full_ref_name("refs/").is_err());
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commit(&"A".repeat(40)).is_ok());
        assert!(check_commit("abc123").is_err());
        assert!(check_commit(&"g".repeat(40)).is_err());
    }

    #[test]
    fn a_secret_is_used_instead_of_the_generated_key() {
        let url = "ssh://git@h/r";
        let mut auth = GitAuthSettings::default();
        assert!(super::super::auth::uses_generated_key(&auth, url));
        auth.local_auth_secret = Some(SecretRef {
            kubernetes: crate::vocab::KubernetesSettings {
                kubeconfig: PathBuf::from("/k"),
                context: None,
            },
            namespace: "default".into(),
            name: "s".into(),
        });
        assert!(!super::super::auth::uses_generated_key(&auth, url));
    }
}
