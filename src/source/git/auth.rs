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
use std::io::Write;
use std::path::{Path, PathBuf};

use super::config::looks_like_private_key;
pub use super::config::{GitAuthSettings, SecretBytes, SecretSource, UrlKind};
use crate::vocab::SecretRef;

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
    pub fn resolve(&self, url: &str) -> Result<Credentials, String> {
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
                    return Err(format!(
                        "{} has `username` but no `password`",
                        origin.unwrap_or_default()
                    ))
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
                return Err("the bearer token is empty".into());
            }
            if creds.bearer.is_some() && creds.basic.is_some() {
                return Err("both a bearer token and a user/password are given; use one".into());
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
                    return Err("the CA certificate is not a PEM certificate".into());
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
                _ => return Err("a client certificate needs both tls.crt and tls.key".into()),
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
                    return Err(format!(
                        "{} has no `identity` (the SSH private key)",
                        origin.unwrap_or_default()
                    ))
                }
                None => match &self.generated_key {
                    Some(path) => (ensure_generated_key(path)?, true),
                    None => return Err("no SSH private key is configured".into()),
                },
            };
            if !looks_like_private_key(private_key.expose()) {
                return Err(
                    "the SSH private key is not a PEM or OpenSSH private key (corrupt key?)".into(),
                );
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
                    .map_err(|_| "the known hosts are not text".to_string())?,
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
    fn load(settings: &'a GitAuthSettings) -> Result<FluxKeys<'a>, String> {
        if let Some(reference) = &settings.local_auth_secret {
            let data = crate::cluster::read_secret_blocking(reference)
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|(key, value)| (key, SecretBytes::new(value)))
                .collect();
            return Ok(FluxKeys::Secret { reference, data });
        }
        match settings.local_auth_ref.as_deref() {
            Some(dir) if !dir.is_dir() => Err(format!(
                "localAuthRef directory {} does not exist or is not a directory",
                dir.display()
            )),
            Some(dir) => Ok(FluxKeys::Directory(dir)),
            None => Ok(FluxKeys::None),
        }
    }

    fn get(&self, key: &str) -> Result<Option<SecretBytes>, String> {
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

fn read(source: &SecretSource, key: &str) -> Result<SecretBytes, String> {
    match source {
        SecretSource::Inline(bytes) => Ok(bytes.clone()),
        SecretSource::File(path) => read_file(path, &format!("{key}File")),
    }
}

fn read_file(path: &Path, what: &str) -> Result<SecretBytes, String> {
    fs::read(path)
        .map(SecretBytes::new)
        .map_err(|e| format!("cannot read {what} {}: {}", path.display(), io_reason(&e)))
}

fn read_optional(path: &Path, what: &str) -> Result<Option<SecretBytes>, String> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(SecretBytes::new(bytes))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!(
            "cannot read {what} {}: {}",
            path.display(),
            io_reason(&e)
        )),
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
pub fn ensure_generated_key(path: &Path) -> Result<SecretBytes, String> {
    if let Ok(bytes) = fs::read(path) {
        if !pub_path(path).exists() {
            // Only the public half was lost (or never written): derive it again.
            write_public_key(path)?;
        }
        return Ok(SecretBytes::new(bytes));
    }
    let parent = path.parent().unwrap_or(Path::new("."));
    crate::atomic::create_private_dir(parent)
        .map_err(|e| format!("cannot create {}: {}", parent.display(), io_reason(&e)))?;
    let scratch = tempfile_dir(parent)?;
    let temp_key = scratch.join("key");
    let comment = format!(
        "gitopsd:{}",
        path.strip_prefix(parent.parent().and_then(Path::parent).unwrap_or(parent))
            .unwrap_or(path)
            .display()
    );
    let output = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", &comment, "-f"])
        .arg(&temp_key)
        .output();
    let result = match output {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "ssh-keygen failed to generate a key: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!(
            "cannot run ssh-keygen to generate a key (install openssh-client): {}",
            io_reason(&e)
        )),
    };
    let written = result.and_then(|()| {
        let private = SecretBytes::new(
            fs::read(&temp_key).map_err(|e| format!("cannot read the new key: {e}"))?,
        );
        let public = fs::read(temp_key.with_extension("pub"))
            .map_err(|e| format!("cannot read the new public key: {e}"))?;
        write_private(path, private.expose())?;
        crate::atomic::write(&pub_path(path), &public)
            .map_err(|e| format!("cannot write {}.pub: {}", path.display(), io_reason(&e)))?;
        Ok(private)
    });
    let _ = fs::remove_dir_all(&scratch);
    if written.is_ok() {
        tracing::info!(key = %path.display(), "generated an ssh key pair; add the public key as a deploy key");
    }
    written
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

fn write_public_key(path: &Path) -> Result<(), String> {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-y", "-P", "", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {}", io_reason(&e)))?;
    if !out.status.success() {
        return Err(format!(
            "the generated key {} is unreadable; delete it to generate a new one",
            path.display()
        ));
    }
    crate::atomic::write(&pub_path(path), &out.stdout)
        .map_err(|e| format!("cannot write {}.pub: {}", path.display(), io_reason(&e)))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error| format!("cannot write {}: {}", path.display(), io_reason(&e));
    let mut file = crate::atomic::AtomicFile::create(path).map_err(fail)?;
    file.file()
        .set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(fail)?;
    file.file().write_all(bytes).map_err(fail)?;
    file.commit().map_err(fail)
}

/// A private (0700) directory for one sync's files, below `parent`.
pub fn tempfile_dir(parent: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    for _ in 0..16 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = parent.join(format!(
            ".gitopsd-auth-{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(format!(
                    "cannot create a private directory in {}: {}",
                    parent.display(),
                    io_reason(&e)
                ))
            }
        }
    }
    Err(format!(
        "cannot create a private directory in {}",
        parent.display()
    ))
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
            err,
            "cannot read sshPrivateKeyFile /nonexistent/key: No such file or directory"
        );
    }
}
