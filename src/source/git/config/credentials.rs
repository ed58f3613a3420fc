//! A git source's credential settings, which both the config loader and `auth` (at every
//! sync) need: where each secret comes from ([`SecretSource`]), the secret bytes themselves
//! ([`SecretBytes`]), how a URL reaches its server ([`UrlKind`]), and the rules that check the
//! credential keys against each other and the URL.

use std::fmt;
use std::path::{Path, PathBuf};

use super::RawGitAuth;
use crate::syntax::fields::Text;
use crate::syntax::positions::Problems;
use crate::syntax::values::resolve;
use crate::vocab::SecretRef;

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
        // `zeroize` wipes the spare capacity too, in a way the compiler cannot drop as a dead
        // store.
        zeroize::Zeroize::zeroize(&mut self.0);
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

/// The credential keys ([`AUTH_FIELDS`](super::AUTH_FIELDS)). `url` is the validated source URL (absent when
/// it was invalid); `local_auth_ref` the shared `localAuthRef.directory` and
/// `local_auth_secret` its `secret` form, as written. The caller sets
/// [`GitAuthSettings::local_auth_secret`]: the Secret's namespace and cluster are not known here.
pub(super) fn validate(
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
    if let (Some(url_text), Some(user)) = (url, raw.get("httpsUser")) {
        if let Some(rest) = url_text.split_once("://").map(|(_, r)| r) {
            let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
            if authority.contains('@') {
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
    fn a_secret_is_used_instead_of_the_generated_key() {
        let url = "ssh://git@h/r";
        let mut auth = GitAuthSettings::default();
        assert!(crate::source::git::auth::uses_generated_key(&auth, url));
        auth.local_auth_secret = Some(SecretRef {
            kubernetes: crate::vocab::KubernetesSettings {
                connection: crate::vocab::KubeConnection::Kubeconfig(PathBuf::from("/k")),
                context: None,
            },
            namespace: "default".into(),
            name: "s".into(),
        });
        assert!(!crate::source::git::auth::uses_generated_key(&auth, url));
    }
}
