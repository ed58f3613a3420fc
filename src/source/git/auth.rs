//! Git credentials, independent of the git library that uses them.
//!
//! A source's [`GitAuthSettings`] say where each secret comes from: inline in the config
//! (already decoded at load), a file (`...File`), or a `localAuthRef` holding Flux's secret
//! keys: a directory of files, or a Kubernetes Secret read through the API. Both forms become
//! the same key → bytes lookup (`FluxKeys`), so everything after it is shared.
//! [`SourceAuth::resolve`] reads them again at every sync, so a rotated token or key works
//! without a restart, and returns [`Credentials`]: plain bytes a backend hands to
//! its transport (gix: `http.extraHeader`, `http.sslCAInfo`, a credentials callback, the
//! `ssh` program; a git2 backend: `RemoteCallbacks::credentials`, `certificate_check`, the
//! same bytes). An ssh URL without any key uses a key gitopsd generates once per
//! configuration ([`ensure_generated_key`]).
//!
//! Nothing here ever formats a secret: [`SecretBytes`] has no `Display`, its `Debug` is
//! redacted, and it is wiped when dropped.

use std::fs;
use std::path::{Path, PathBuf};

use super::config::looks_like_private_key;
pub use super::config::{GitAuthSettings, SecretBytes, SecretSource, UrlKind};
use crate::vocab::SecretRef;

/// Why a source's credentials could not be read for a sync. One clause without any secret
/// (the caller adds the URL).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{origin} has `username` but no `password`")]
    UserWithoutPassword { origin: String },
    #[error("the bearer token is empty")]
    EmptyBearerToken,
    #[error("both a bearer token and a user/password are given; use one")]
    BearerAndBasic,
    #[error("the CA certificate is not a PEM certificate")]
    CaNotPem,
    #[error("a client certificate needs both tls.crt and tls.key")]
    HalfClientCertificate,
    #[error("{origin} has no `identity` (the SSH private key)")]
    NoIdentity { origin: String },
    #[error("no SSH private key is configured")]
    NoSshKey,
    #[error("the SSH private key is not a PEM or OpenSSH private key (corrupt key?)")]
    NotAPrivateKey,
    #[error("the known hosts are not text")]
    KnownHostsNotText,
    #[error("localAuthRef directory {} does not exist or is not a directory", .0.display())]
    NoAuthDirectory(PathBuf),
    #[error("{0}")]
    Secret(#[from] crate::cluster::ClusterError),
    /// `what`: the setting or key, e.g. `sshPrivateKeyFile`.
    #[error("cannot read {what} {}: {}", path.display(), io_reason(source))]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    GeneratedKey(#[from] KeyError),
}

/// Why the generated SSH key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot create {}: {}", path.display(), io_reason(source))]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}: {}", path.display(), io_reason(source))]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the generated key {} is unreadable; delete it to generate a new one", path.display())]
    Unreadable { path: PathBuf },
    #[error("cannot generate an SSH key: {0}")]
    Generate(#[source] ssh_key::Error),
}

/// What a [`super::GitSource`] needs to authenticate: the settings and where the generated
/// key lives (`<stateDir>/keys/<namespace>/<name>`).
#[derive(Clone, Debug, Default)]
pub struct SourceAuth {
    pub settings: GitAuthSettings,
    /// Used for ssh URLs when no key is configured; `None` (tests, bench): no generated key.
    pub generated_key: Option<PathBuf>,
}

/// Credentials for one sync, read from their sources just now.
#[derive(Debug, Default)]
pub struct Credentials {
    /// HTTP basic: user and password or token.
    pub basic: Option<(String, SecretBytes)>,
    /// Sent as `Authorization: Bearer <token>`.
    pub bearer: Option<SecretBytes>,
    /// PEM CA certificates to trust instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// Mutual TLS: PEM certificate (chain) and private key.
    pub client_tls: Option<(Vec<u8>, SecretBytes)>,
    pub ssh: Option<SshCredentials>,
}

impl Credentials {
    /// The first configured mode the libgit2 backend cannot use, by its config name: only a
    /// client certificate, as libgit2 has no way to present one.
    pub fn unsupported_by_libgit2(&self) -> Option<&'static str> {
        if self.client_tls.is_some() {
            Some("client certificates (tlsClientCertFile)")
        } else {
            None
        }
    }
}

#[derive(Debug)]
pub struct SshCredentials {
    /// The private key file's content (OpenSSH or PEM format).
    pub private_key: SecretBytes,
    pub passphrase: Option<SecretBytes>,
    /// `known_hosts` text: the configured one, or the built-in list.
    pub known_hosts: String,
    /// Whether the key is the one gitopsd generated.
    pub generated: bool,
}

/// Flux's keys in a `localAuthRef` directory.
pub mod flux_keys {
    pub const USERNAME: &str = "username";
    pub const PASSWORD: &str = "password";
    pub const BEARER_TOKEN: &str = "bearerToken";
    pub const CA_CRT: &str = "ca.crt";
    pub const TLS_CRT: &str = "tls.crt";
    pub const TLS_KEY: &str = "tls.key";
    pub const IDENTITY: &str = "identity";
    pub const KNOWN_HOSTS: &str = "known_hosts";
}

impl SourceAuth {
    /// Read every configured secret for a sync of `url`. Errors are one clause without any
    /// secret (the caller adds the URL).
    pub fn resolve(&self, url: &str) -> Result<Credentials, AuthError> {
        let kind = UrlKind::of(url);
        let s = &self.settings;
        let mut creds = Credentials::default();
        let keys = FluxKeys::load(s)?;
        let flux_key = |key: &str| keys.get(key);
        // Whether a localAuthRef (of either form) is configured.
        let origin = keys.origin();
        if kind.is_http() {
            let password = match &s.https_key {
                Some(src) => Some(read(src, "httpsKey")?.trim_line_end()),
                None => flux_key(flux_keys::PASSWORD)?.map(SecretBytes::trim_line_end),
            };
            let user = match &s.https_user {
                Some(user) => Some(user.clone()),
                None => flux_key(flux_keys::USERNAME)?
                    .map(SecretBytes::trim_line_end)
                    .map(|u| String::from_utf8_lossy(u.expose()).into_owned()),
            };
            match (user, password) {
                (Some(user), Some(password)) => creds.basic = Some((user, password)),
                (Some(_), None) if origin.is_some() => {
                    return Err(AuthError::UserWithoutPassword {
                        origin: origin.unwrap_or_default(),
                    })
                }
                (None, Some(_)) if origin.is_some() && s.https_key.is_none() => {
                    // Flux: `password` alone is an ssh key passphrase; nothing to do over http.
                }
                _ => {}
            }
            creds.bearer = match &s.bearer_token {
                Some(src) => Some(read(src, "bearerToken")?.trim_line_end()),
                None => flux_key(flux_keys::BEARER_TOKEN)?.map(SecretBytes::trim_line_end),
            };
            if creds.bearer.as_ref().is_some_and(SecretBytes::is_empty) {
                return Err(AuthError::EmptyBearerToken);
            }
            if creds.bearer.is_some() && creds.basic.is_some() {
                return Err(AuthError::BearerAndBasic);
            }
            creds.ca_pem = match &s.ca_cert {
                Some(src) => Some(read(src, "httpsCACert")?.expose().to_vec()),
                None => flux_key(flux_keys::CA_CRT)?.map(|c| c.expose().to_vec()),
            };
            if let Some(pem) = &creds.ca_pem {
                if !pem
                    .windows(b"-----BEGIN CERTIFICATE-----".len())
                    .any(|w| w == b"-----BEGIN CERTIFICATE-----")
                {
                    return Err(AuthError::CaNotPem);
                }
            }
            let cert = match &s.tls_client_cert_file {
                Some(path) => Some(read_file(path, "tlsClientCertFile")?),
                None => flux_key(flux_keys::TLS_CRT)?,
            };
            let key = match &s.tls_client_key_file {
                Some(path) => Some(read_file(path, "tlsClientKeyFile")?),
                None => flux_key(flux_keys::TLS_KEY)?,
            };
            creds.client_tls = match (cert, key) {
                (Some(cert), Some(key)) => Some((cert.expose().to_vec(), key)),
                (None, None) => None,
                _ => return Err(AuthError::HalfClientCertificate),
            };
        }
        if kind == UrlKind::Ssh {
            let configured = match &s.ssh_private_key {
                Some(src) => Some(read(src, "sshPrivateKey")?),
                None => flux_key(flux_keys::IDENTITY)?,
            };
            let (private_key, generated) = match configured {
                Some(key) => (key, false),
                // A Secret is what the cluster's owner set up for this source: a missing key is
                // their mistake to see, not a reason to present a different (generated) one.
                None if s.local_auth_secret.is_some() => {
                    return Err(AuthError::NoIdentity {
                        origin: origin.unwrap_or_default(),
                    })
                }
                None => match &self.generated_key {
                    Some(path) => (ensure_generated_key(path)?, true),
                    None => return Err(AuthError::NoSshKey),
                },
            };
            if !looks_like_private_key(private_key.expose()) {
                return Err(AuthError::NotAPrivateKey);
            }
            let passphrase = match &s.ssh_passphrase {
                Some(src) => Some(read(src, "sshPassphrase")?.trim_line_end()),
                // Flux: `password` also decrypts an encrypted `identity`.
                None if !generated => {
                    flux_key(flux_keys::PASSWORD)?.map(SecretBytes::trim_line_end)
                }
                None => None,
            };
            let known_hosts = match &s.known_hosts {
                Some(src) => Some(read(src, "knownHosts")?),
                None => flux_key(flux_keys::KNOWN_HOSTS)?,
            };
            let known_hosts = match known_hosts {
                Some(text) => String::from_utf8(text.expose().to_vec())
                    .map_err(|_| AuthError::KnownHostsNotText)?,
                None => super::known_hosts::BUILT_IN.to_string(),
            };
            creds.ssh = Some(SshCredentials {
                private_key,
                passphrase,
                known_hosts,
                generated,
            });
        }
        Ok(creds)
    }
}

/// Flux's keys of a source's `localAuthRef`, for one sync. A directory is read key by key as
/// asked (a missing file is a missing key); a Secret is fetched whole once, so that one sync
/// sees one version of it even while it is being rotated.
enum FluxKeys<'a> {
    None,
    Directory(&'a Path),
    Secret {
        reference: &'a SecretRef,
        data: std::collections::BTreeMap<String, SecretBytes>,
    },
}

impl<'a> FluxKeys<'a> {
    fn load(settings: &'a GitAuthSettings) -> Result<FluxKeys<'a>, AuthError> {
        if let Some(reference) = &settings.local_auth_secret {
            let data = crate::cluster::read_secret_blocking(reference)?
                .into_iter()
                .map(|(key, value)| (key, SecretBytes::new(value)))
                .collect();
            return Ok(FluxKeys::Secret { reference, data });
        }
        match settings.local_auth_ref.as_deref() {
            Some(dir) if !dir.is_dir() => Err(AuthError::NoAuthDirectory(dir.to_path_buf())),
            Some(dir) => Ok(FluxKeys::Directory(dir)),
            None => Ok(FluxKeys::None),
        }
    }

    fn get(&self, key: &str) -> Result<Option<SecretBytes>, AuthError> {
        match self {
            FluxKeys::None => Ok(None),
            FluxKeys::Directory(dir) => {
                read_optional(&dir.join(key), &format!("localAuthRef key {key}"))
            }
            FluxKeys::Secret { data, .. } => Ok(data.get(key).cloned()),
        }
    }

    /// How messages name where the keys came from; `None` without a localAuthRef.
    fn origin(&self) -> Option<String> {
        match self {
            FluxKeys::None => None,
            FluxKeys::Directory(_) => Some("localAuthRef".into()),
            FluxKeys::Secret { reference, .. } => {
                Some(format!("the Kubernetes Secret `{reference}`"))
            }
        }
    }
}

fn read(source: &SecretSource, key: &str) -> Result<SecretBytes, AuthError> {
    match source {
        SecretSource::Inline(bytes) => Ok(bytes.clone()),
        SecretSource::File(path) => read_file(path, &format!("{key}File")),
    }
}

fn read_file(path: &Path, what: &str) -> Result<SecretBytes, AuthError> {
    fs::read(path)
        .map(SecretBytes::new)
        .map_err(|source| AuthError::Read {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

fn read_optional(path: &Path, what: &str) -> Result<Option<SecretBytes>, AuthError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(SecretBytes::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Read {
            what: what.to_string(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The OS reason without Rust's " (os error N)" suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The generated key pair's private half at `path` (public half at `path.pub`), created on
/// first use: an ed25519 key in OpenSSH format, mode 0600, written atomically.
pub fn ensure_generated_key(path: &Path) -> Result<SecretBytes, KeyError> {
    if let Ok(bytes) = fs::read(path) {
        if !pub_path(path).exists() {
            // Only the public half was lost (or never written): derive it again.
            write_public_key(path, &bytes)?;
        }
        return Ok(SecretBytes::new(bytes));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    crate::atomic::create_private_dir(parent).map_err(|source| KeyError::CreateDir {
        path: parent.to_path_buf(),
        source,
    })?;
    let comment = format!(
        "gitopsd:{}",
        path.strip_prefix(parent.parent().and_then(Path::parent).unwrap_or(parent))
            .unwrap_or(path)
            .display()
    );
    let mut key =
        ssh_key::PrivateKey::random(&mut ssh_key::rand_core::OsRng, ssh_key::Algorithm::Ed25519)
            .map_err(KeyError::Generate)?;
    key.set_comment(comment);
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(KeyError::Generate)?;
    let public = public_line(&key)?;
    // The private half first: a key without its public half is repaired above, the other way
    // round would be a public key nobody holds.
    write_private(path, private.as_bytes())?;
    crate::atomic::write(&pub_path(path), public.as_bytes()).map_err(|source| KeyError::Write {
        path: pub_path(path),
        source,
    })?;
    tracing::info!(key = %path.display(), "generated an ssh key pair; add the public key as a deploy key");
    Ok(SecretBytes::new(private.as_bytes().to_vec()))
}

/// The `authorized_keys` line of `key`'s public half, with its comment.
fn public_line(key: &ssh_key::PrivateKey) -> Result<String, KeyError> {
    let line = key.public_key().to_openssh().map_err(KeyError::Generate)?;
    Ok(format!("{line}\n"))
}

/// Where a configuration's generated key lives: `<stateDir>/keys/<namespace>/<name>`, given
/// the git cache root `<stateDir>/git` (or any other directory directly below the state dir).
pub fn generated_key_path(cache_root: &Path, namespace: &str, name: &str) -> PathBuf {
    cache_root
        .parent()
        .unwrap_or(cache_root)
        .join("keys")
        .join(namespace)
        .join(name)
}

/// Whether a git source with these settings authenticates with the generated key: an ssh
/// URL and no key configured (inline, file, or `identity` in its localAuthRef).
pub fn uses_generated_key(settings: &GitAuthSettings, url: &str) -> bool {
    UrlKind::of(url) == UrlKind::Ssh
        && settings.ssh_private_key.is_none()
        // A Secret is expected to hold `identity` (see `SourceAuth::resolve`).
        && settings.local_auth_secret.is_none()
        && settings
            .local_auth_ref
            .as_ref()
            .is_none_or(|dir| !dir.join(flux_keys::IDENTITY).exists())
}

fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".pub");
    PathBuf::from(name)
}

/// The public half of a generated key, if it exists (`<path>.pub`), as one line.
pub fn generated_public_key(path: &Path) -> Option<String> {
    fs::read_to_string(pub_path(path))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn write_public_key(path: &Path, private: &[u8]) -> Result<(), KeyError> {
    let unreadable = || KeyError::Unreadable {
        path: path.to_path_buf(),
    };
    let key = ssh_key::PrivateKey::from_openssh(private).map_err(|_| unreadable())?;
    if key.is_encrypted() {
        return Err(unreadable());
    }
    crate::atomic::write(&pub_path(path), public_line(&key)?.as_bytes()).map_err(|source| {
        KeyError::Write {
            path: pub_path(path),
            source,
        }
    })
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::atomic::write_private(path, bytes).map_err(|source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let s = SecretBytes::new(b"hunter2".to_vec());
        assert!(!format!("{s:?}").contains("hunter2"));
        let src = SecretSource::Inline(s);
        assert!(!format!("{src:?}").contains("hunter2"));
    }

    #[test]
    fn local_auth_ref_keys_are_read_at_each_resolve() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("username"), "alice\n").unwrap();
        fs::write(dir.path().join("password"), "one\n").unwrap();
        let auth = SourceAuth {
            settings: GitAuthSettings {
                local_auth_ref: Some(dir.path().to_path_buf()),
                ..Default::default()
            },
            generated_key: None,
        };
        let creds = auth.resolve("https://h/r").unwrap();
        let (user, password) = creds.basic.unwrap();
        assert_eq!(user, "alice");
        assert_eq!(password.expose(), b"one");
        fs::write(dir.path().join("password"), "two").unwrap();
        let (_, password) = auth.resolve("https://h/r").unwrap().basic.unwrap();
        assert_eq!(password.expose(), b"two");
    }

    #[test]
    fn missing_key_file_is_named() {
        let auth = SourceAuth {
            settings: GitAuthSettings {
                ssh_private_key: Some(SecretSource::File("/nonexistent/key".into())),
                ..Default::default()
            },
            generated_key: None,
        };
        let err = auth.resolve("ssh://git@h/r").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read sshPrivateKeyFile /nonexistent/key: No such file or directory"
        );
    }
}
