//! The libgit2 backend (git2): the same steps as [`super::gitoxide`] (list refs, fetch into
//! the bare cache at depth 1, write the commit's tree), so that both give the same revisions,
//! artifacts and error wording.
//!
//! libgit2 speaks protocol v1 only: the server advertises every ref and peeled tags arrive as
//! separate `^{}` entries, which [`list_refs`] folds into the tag they peel.

use super::auth::{Credentials, SecretBytes};
use super::config::GitReference;
use super::error::{self, untyped, Cause, GitError, Problem, SshFailure};
use super::known_hosts::known_hosts_name;
use super::refs::{self, RemoteRef, Wanted};
use git2::{
    AutotagOption, CertificateCheckStatus, CredentialType, Direction, FetchOptions, Oid,
    RemoteCallbacks,
};
use std::cell::RefCell;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// A failure of one step: libgit2's own error, which [`Backend::explain`] words (a callback
/// may know better why it happened), or one already worded.
pub enum Failure {
    Libgit2(git2::Error),
    Worded(GitError),
}

impl From<git2::Error> for Failure {
    fn from(e: git2::Error) -> Failure {
        Failure::Libgit2(e)
    }
}

/// Open the bare cache, or make a new one.
pub fn open(dir: &Path) -> Result<git2::Repository, git2::Error> {
    super::cancel::libgit2_timeouts();
    git2::Repository::open_bare(dir).or_else(|_| git2::Repository::init_bare(dir))
}

/// The refs the remote advertises under the reference's prefixes, annotated tags peeled.
pub fn list_refs(
    repo: &git2::Repository,
    url: &str,
    reference: &GitReference,
    callbacks: RemoteCallbacks<'_>,
    headers: &[&str],
) -> Result<Vec<RemoteRef>, Failure> {
    let Some(prefixes) = refs::listing_prefixes(reference) else {
        return Ok(Vec::new());
    };
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Failure::Worded(invalid_url(url, &e)))?;
    if !headers.is_empty() {
        // `connect_auth` cannot send extra headers (a bearer token), but a download can. With
        // no refspec libgit2 would fetch HEAD; a refspec that matches no ref makes it connect,
        // read the advertisement and want nothing. The connection stays open for `list`.
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(callbacks)
            .custom_headers(headers)
            .proxy_options(proxy(url))
            .download_tags(AutotagOption::None);
        remote.download(&[LIST_ONLY], Some(&mut options))?;
        let heads = remote.list()?;
        return Ok(fold_heads(heads, &prefixes));
    }
    let connection = remote.connect_auth(Direction::Fetch, Some(callbacks), Some(proxy(url)))?;
    let heads = connection.list()?;
    Ok(fold_heads(heads, &prefixes))
}

/// A refspec no server ref matches: a download with it transfers nothing.
const LIST_ONLY: &str = "refs/gitopsd-list-only/*:refs/gitopsd/list-only/*";

/// The advertised refs under `prefixes`, each annotated tag replaced by the commit it peels to.
fn fold_heads(heads: &[git2::RemoteHead<'_>], prefixes: &[String]) -> Vec<RemoteRef> {
    let wanted = |name: &str| {
        prefixes.iter().any(|p| {
            if p.ends_with('/') {
                name.starts_with(p.as_str())
            } else {
                name == p
            }
        })
    };
    let mut out: Vec<RemoteRef> = Vec::new();
    for head in heads {
        let name = head.name();
        if let Some(tag) = name.strip_suffix("^{}") {
            // The commit an annotated tag points at replaces the tag object's id.
            if let Some(r) = out.iter_mut().find(|r| r.name == tag) {
                r.commit = head.oid().to_string();
            }
            continue;
        }
        if wanted(name) {
            out.push(RemoteRef {
                name: name.to_string(),
                commit: if head.oid().is_zero() {
                    String::new()
                } else {
                    head.oid().to_string()
                },
                symref_target: head.symref_target().map(str::to_string),
            });
        }
    }
    out
}

/// The proxy for `url`, decided by [`crate::source::proxy`] as for the gix backend, given to
/// libgit2 explicitly. libgit2's automatic setting would read `http.proxy` from the machine's
/// git configuration, ignore `ALL_PROXY`, and match `NO_PROXY` entries literally (no
/// subdomains, no networks, no blanks after commas); without a proxy, "none" keeps it from
/// looking at all.
fn proxy(url: &str) -> git2::ProxyOptions<'static> {
    let mut options = git2::ProxyOptions::new();
    if let Some(proxy) = crate::source::proxy::for_url(url) {
        options.url(proxy.url());
    }
    options
}

/// Why libgit2 cannot fetch `url` through the proxy the environment gives it, if so: libgit2
/// 1.9 tunnels https through a proxy, but for an http:// URL it writes the proxy-style
/// request and then sends it straight to the server (libgit2 issue #5650), bypassing the
/// proxy. Refused rather than silently going around the proxy.
pub fn unsupported_proxy(url: &str) -> Option<Problem> {
    if !url.to_ascii_lowercase().starts_with("http://") {
        return None;
    }
    let proxy = crate::source::proxy::for_url(url)?;
    Some(Problem::Libgit2HttpProxy {
        proxy: proxy.redacted(),
        variable: proxy.variable(),
    })
}

/// Fetch what `wanted` names into `repo`, under `refs/gitopsd/` like the gix backend.
pub fn fetch<'a>(
    repo: &git2::Repository,
    url: &str,
    wanted: &Wanted,
    interrupt: &'a AtomicBool,
    mut callbacks: RemoteCallbacks<'a>,
    headers: &[&str],
) -> Result<(), Failure> {
    let specs = wanted.refspecs();
    // Returning false from a progress callback makes libgit2 stop the transfer; a server
    // that sends nothing at all is left to libgit2's server timeout (`super::cancel`).
    callbacks.transfer_progress(move |_| !interrupt.load(Ordering::Relaxed));
    callbacks.sideband_progress(move |_| !interrupt.load(Ordering::Relaxed));
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(callbacks)
        .custom_headers(headers)
        .proxy_options(proxy(url))
        .download_tags(AutotagOption::None);
    // libgit2 reads file:// repositories in-process, and that transport cannot do shallow
    // fetches: a local source's first fetch gets full history, which the cache compaction
    // then drops (`super::cache`); later ones only what the cache's refs lack. Above all a
    // shallow cache must not ask for its history back here.
    let local = url.starts_with("file://") || !url.contains("://");
    if wanted.shallow {
        if !local {
            options.depth(1);
        }
    } else if repo.is_shallow() {
        // A commit pinned on a branch needs the branch's history; i32::MAX unshallows.
        options.depth(i32::MAX);
    }
    // The local transport also reports no shallow boundary after a fetch, and libgit2 then
    // deletes the `shallow` file of a shallow cache although the old boundary's parents are
    // still missing: put it back (new commits sit on top of it, it stays true).
    let shallow_file = repo.path().join("shallow");
    let boundary = local.then(|| std::fs::read(&shallow_file).ok()).flatten();
    let mut remote = repo
        .remote_anonymous(url)
        .map_err(|e| Failure::Worded(invalid_url(url, &e)))?;
    remote.fetch(&specs, Some(&mut options), None)?;
    if let Some(boundary) = boundary.filter(|_| wanted.shallow && !shallow_file.exists()) {
        crate::atomic::write(&shallow_file, &boundary).map_err(|e| {
            let what = format!("cannot write {}", shallow_file.display());
            Failure::Worded(GitError::new(url, error::local(Some(what), e)))
        })?;
    }
    Ok(())
}

/// The libgit2 implementation of [`super::Backend`]. Credentials: HTTP basic, a bearer token
/// (an extra header), a custom CA (checked here, in `certificate_check`), SSH keys from memory
/// with host keys checked against the known hosts. A client certificate (mutual TLS) is
/// refused before a backend is built ([`Credentials::unsupported_by_libgit2`]).
pub struct Backend {
    repo: git2::Repository,
    credentials: Credentials,
    /// `Authorization: Bearer ...`, for [`FetchOptions::custom_headers`] (wiped on drop).
    headers: Vec<SecretBytes>,
    /// The reason a callback refused (host key, key, certificate), as the gix backend tells
    /// it; it replaces libgit2's own error, which only says that a callback failed.
    reason: RefCell<Option<Cause>>,
    /// Why loading the SSH key would have failed, used when libgit2 says it could not.
    key_load: RefCell<Option<Cause>>,
}

impl Backend {
    pub fn new(repo: git2::Repository, credentials: Credentials) -> Backend {
        let headers = credentials
            .bearer
            .as_ref()
            .and_then(|t| t.expose_str())
            .map(|t| SecretBytes::new(format!("Authorization: Bearer {t}").into_bytes()))
            .into_iter()
            .collect();
        Backend {
            repo,
            credentials,
            headers,
            reason: RefCell::new(None),
            key_load: RefCell::new(None),
        }
    }

    /// Refuse what libgit2 cannot carry, with gix's wording.
    fn check(&self, url: &str) -> Result<(), GitError> {
        let bad_token = self.credentials.bearer.as_ref().is_some_and(|t| {
            !t.expose_str()
                .is_some_and(|t| t.bytes().all(|b| b.is_ascii_graphic()))
        });
        if bad_token {
            return Err(GitError::new(url, Problem::BearerNotHeaderSafe));
        }
        Ok(())
    }

    fn callbacks(&self, url: &str) -> RemoteCallbacks<'_> {
        self.reason.replace(None);
        self.key_load.replace(None);
        let reason = &self.reason;
        let key_load = &self.key_load;
        let mut callbacks = RemoteCallbacks::new();
        let basic = self.credentials.basic.as_ref();
        let ssh = self.credentials.ssh.as_ref();
        let host = known_hosts_name(url);
        let mut tried = false;
        callbacks.credentials(move |_, user_from_url, allowed| {
            if let Some(ssh) = ssh {
                let user = user_from_url.unwrap_or("git");
                if allowed.contains(CredentialType::USERNAME) {
                    return git2::Cred::username(user);
                }
                if std::mem::replace(&mut tried, true) {
                    // libgit2 asks again when the server refused the key.
                    let refused = SshFailure::KeyRefused { host: host.clone() };
                    return Err(refuse(reason, refused.into()));
                }
                let key = ssh.private_key.expose_str().unwrap_or("");
                let encrypted = key_is_encrypted(key);
                if encrypted == Some(true) && ssh.passphrase.is_none() {
                    return Err(refuse(reason, SshFailure::NoPassphrase.into()));
                }
                let passphrase = ssh.passphrase.as_ref().and_then(|p| p.expose_str());
                // Should loading fail, this is why (libssh2 gives one text for every case).
                let why = if encrypted == Some(true) {
                    SshFailure::WrongPassphrase
                } else {
                    SshFailure::KeyUnreadable
                };
                key_load.replace(Some(why.into()));
                return git2::Cred::ssh_key_from_memory(user, None, key, passphrase);
            }
            // libgit2 asks again after a 401: a second answer would loop forever.
            match basic {
                Some((user, password)) if !std::mem::replace(&mut tried, true) => {
                    git2::Cred::userpass_plaintext(user, password.expose_str().unwrap_or(""))
                }
                _ => Err(refuse(reason, Cause::Unauthorized)),
            }
        });
        let ca_pem = self.credentials.ca_pem.as_deref();
        let host = known_hosts_name(url);
        callbacks.certificate_check(move |cert, hostname| {
            if let Some(key) = cert.as_hostkey() {
                let known = ssh.map_or(super::known_hosts::BUILT_IN, |s| s.known_hosts.as_str());
                let Some(blob) = key.hostkey() else {
                    return Err(refuse(reason, SshFailure::HostKeyUnreadable.into()));
                };
                return match check_host_key(known, &host, blob) {
                    Ok(()) => {
                        // Host key accepted: a later failure is about the client key.
                        Ok(CertificateCheckStatus::CertificateOk)
                    }
                    Err(why) => Err(refuse(reason, why.into())),
                };
            }
            match (cert.as_x509(), ca_pem) {
                (Some(leaf), Some(ca)) => match verify_leaf(leaf.data(), ca, hostname) {
                    Ok(()) => Ok(CertificateCheckStatus::CertificateOk),
                    Err(_) => Err(refuse(reason, Cause::Certificate)),
                },
                _ => Ok(CertificateCheckStatus::CertificatePassthrough),
            }
        });
        callbacks
    }

    fn headers(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter_map(SecretBytes::expose_str)
            .collect()
    }

    /// A failure: a callback's reason if one refused, else libgit2's error, classified.
    fn explain(&self, url: &str, failure: Failure) -> GitError {
        let error = match failure {
            Failure::Worded(worded) => return worded,
            Failure::Libgit2(error) => error,
        };
        let key_load = self.key_load.take().filter(|_| {
            error.class() == git2::ErrorClass::Ssh && untyped::libssh2_key_load(error.message())
        });
        let classified =
            || error::classify_git2(&error, crate::source::proxy::for_url(url).as_ref());
        let cause = match self.reason.take().or(key_load) {
            Some(reason) => reason,
            None => classified(),
        };
        GitError::new(url, cause)
    }
}

/// Remember why a callback refused, and give libgit2 an error that aborts the transfer.
fn refuse(slot: &RefCell<Option<Cause>>, why: Cause) -> git2::Error {
    let error = git2::Error::from_str(&why.to_string());
    slot.replace(Some(why));
    error
}

impl super::Backend for Backend {
    fn list_refs(
        &self,
        url: &str,
        reference: &GitReference,
        interrupt: &AtomicBool,
    ) -> Result<Vec<RemoteRef>, GitError> {
        self.check(url)?;
        let mut callbacks = self.callbacks(url);
        callbacks.transfer_progress(move |_| !interrupt.load(Ordering::Relaxed));
        list_refs(&self.repo, url, reference, callbacks, &self.headers())
            .map_err(|f| self.explain(url, f))
    }
    fn fetch(&self, url: &str, wanted: &Wanted, interrupt: &AtomicBool) -> Result<(), GitError> {
        self.check(url)?;
        let callbacks = self.callbacks(url);
        fetch(
            &self.repo,
            url,
            wanted,
            interrupt,
            callbacks,
            &self.headers(),
        )
        .map_err(|f| self.explain(url, f))
    }
    fn has_commit(&self, commit: &str) -> bool {
        has_commit(&self.repo, commit)
    }
    fn commit_time(&self, commit: &str) -> Option<i64> {
        commit_time(&self.repo, commit)
    }
    fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }
}

/// Whether a private key is encrypted: PEM says so in its headers, OpenSSH names a cipher
/// other than `none`. `None`: the OpenSSH body cannot be read.
fn key_is_encrypted(key: &str) -> Option<bool> {
    if !key.contains("BEGIN OPENSSH PRIVATE KEY") {
        return Some(
            key.contains("Proc-Type: 4,ENCRYPTED") || key.contains("BEGIN ENCRYPTED PRIVATE KEY"),
        );
    }
    let body: String = key
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let bytes = openssl::base64::decode_block(&body).ok()?;
    let rest = bytes.strip_prefix(b"openssh-key-v1\0")?;
    let (cipher, _) = ssh_string(rest)?;
    Some(cipher != b"none")
}

/// One SSH wire-format string (u32 length, bytes) and what follows it.
fn ssh_string(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_be_bytes(data.get(..4)?.try_into().ok()?) as usize;
    let value = data.get(4..4 + len)?;
    Some((value, &data[4 + len..]))
}

/// Check the host key the server offered (`blob`, SSH wire format) against `known_hosts`
/// for `host` (`host` or `[host]:port`). Plain and hashed (`|1|salt|hash`) host names are
/// understood; wildcard patterns are not. Errors are the gix backend's sentences.
fn check_host_key(known_hosts: &str, host: &str, blob: &[u8]) -> Result<(), SshFailure> {
    let kind = ssh_string(blob)
        .and_then(|(k, _)| std::str::from_utf8(k).ok())
        .unwrap_or("unknown")
        .to_string();
    let mut same_type_known = false;
    let mut matched = false;
    for line in known_hosts.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.split_whitespace();
        let Some(mut names) = fields.next() else {
            continue;
        };
        let revoked = names == "@revoked";
        if names.starts_with('@') {
            if !revoked {
                continue; // @cert-authority: certificates are not offered to libgit2
            }
            let Some(next) = fields.next() else { continue };
            names = next;
        }
        let (Some(line_kind), Some(key)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !names.split(',').any(|n| host_matches(n, host)) {
            continue;
        }
        let Ok(key) = openssl::base64::decode_block(key) else {
            continue;
        };
        if key == blob {
            // A revoked key fails wherever its line is; found here, it is reported as changed.
            if revoked {
                matched = false;
                same_type_known = true;
                break;
            }
            matched = true;
        } else if line_kind == kind {
            same_type_known = true;
        }
    }
    if matched {
        return Ok(());
    }
    let digest = openssl::hash::hash(openssl::hash::MessageDigest::sha256(), blob)
        .map(|d| openssl::base64::encode_block(&d))
        .unwrap_or_default();
    let offered = format!("{kind} SHA256:{}", digest.trim_end_matches('='));
    let host = host.to_string();
    Err(if same_type_known {
        SshFailure::HostKeyChanged { host, offered }
    } else {
        SshFailure::HostKeyUnknown { host, offered }
    })
}

/// One known_hosts name against `host`: literal, or hashed as `|1|base64(salt)|base64(hmac)`.
fn host_matches(name: &str, host: &str) -> bool {
    let Some(hashed) = name.strip_prefix("|1|") else {
        return name == host;
    };
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (
        openssl::base64::decode_block(salt),
        openssl::base64::decode_block(hash),
    ) else {
        return false;
    };
    let mac = openssl::pkey::PKey::hmac(&salt).and_then(|key| {
        let mut signer = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &key)?;
        signer.update(host.as_bytes())?;
        signer.sign_to_vec()
    });
    mac.is_ok_and(|mac| mac.len() == hash.len() && openssl::memcmp::eq(&mac, &hash))
}

/// Verify the server's leaf certificate (DER) against the source's CA certificates, host
/// name included. libgit2 hands over the leaf only: a server whose chain needs an
/// intermediate must have it in the CA bundle.
fn verify_leaf(der: &[u8], ca_pem: &[u8], hostname: &str) -> Result<(), LeafError> {
    use openssl::stack::Stack;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::verify::X509VerifyParam;
    use openssl::x509::{X509StoreContext, X509};
    let leaf = X509::from_der(der)?;
    let mut store = X509StoreBuilder::new()?;
    for ca in X509::stack_from_pem(ca_pem)? {
        store.add_cert(ca)?;
    }
    let mut param = X509VerifyParam::new()?;
    let host = hostname.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => param.set_ip(ip),
        Err(_) => param.set_host(host),
    }?;
    store.set_param(&param)?;
    let store = store.build();
    let chain = Stack::new()?;
    let mut context = X509StoreContext::new()?;
    context.init(&store, &leaf, &chain, |c| {
        Ok(if c.verify_cert()? {
            Ok(())
        } else {
            Err(LeafError::Rejected(c.error()))
        })
    })?
}

/// Why [`verify_leaf`] refused a certificate.
#[derive(Debug, thiserror::Error)]
enum LeafError {
    #[error("certificate verify failed: {0}")]
    Rejected(openssl::x509::X509VerifyResult),
    #[error("cannot check the certificate: {0}")]
    Openssl(#[from] openssl::error::ErrorStack),
}

/// Whether the fetch brought the commit.
pub fn has_commit(repo: &git2::Repository, commit: &str) -> bool {
    Oid::from_str(commit).is_ok_and(|id| repo.find_commit(id).is_ok())
}

/// Committer time (seconds) of a fetched commit, for semver tie-breaks.
pub fn commit_time(repo: &git2::Repository, commit: &str) -> Option<i64> {
    let id = Oid::from_str(commit).ok()?;
    repo.find_commit(id).ok().map(|c| c.time().seconds())
}

fn invalid_url(url: &str, e: &git2::Error) -> GitError {
    GitError::new(url, Problem::InvalidUrl(e.message().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An SSH wire-format public key blob of type `kind` with `body` as its only field.
    fn blob(kind: &str, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for part in [kind.as_bytes(), body] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    fn line(host: &str, key: &[u8]) -> String {
        let kind = std::str::from_utf8(ssh_string(key).unwrap().0).unwrap();
        format!("{host} {kind} {}\n", openssl::base64::encode_block(key))
    }

    #[test]
    fn host_keys_match_by_name_port_and_hash() {
        let key = blob("ssh-ed25519", b"server");
        let other = blob("ssh-ed25519", b"impostor");
        let rsa = blob("ssh-rsa", b"rsa");
        assert!(check_host_key(&line("[h]:2222", &key), "[h]:2222", &key).is_ok());
        assert!(check_host_key(&line("x,h", &key), "h", &key).is_ok());
        // Same host on port 22 only: unknown on 2222.
        let err = check_host_key(&line("h", &key), "[h]:2222", &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not in the known hosts"), "{err}");
        assert!(err.contains("ssh-ed25519 SHA256:"), "{err}");
        assert!(!err.contains('='), "{err}");
        // Another key of the same type: changed; only another type: unknown.
        let err = check_host_key(&line("h", &other), "h", &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("has changed"), "{err}");
        let err = check_host_key(&line("h", &rsa), "h", &key)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not in the known hosts"), "{err}");
        // A revoked key never passes.
        let revoked = format!("{}@revoked {}", line("h", &key), line("h", &key));
        assert!(check_host_key(&revoked, "h", &key).is_err());
        // Hashed: |1|base64(salt)|base64(HMAC-SHA1(salt, host)).
        let salt = b"0123456789abcdefghij";
        let mac = {
            let pkey = openssl::pkey::PKey::hmac(salt).unwrap();
            let mut signer =
                openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &pkey).unwrap();
            signer.update(b"[h]:2222").unwrap();
            signer.sign_to_vec().unwrap()
        };
        let hashed = format!(
            "|1|{}|{}",
            openssl::base64::encode_block(salt),
            openssl::base64::encode_block(&mac)
        );
        assert!(check_host_key(&line(&hashed, &key), "[h]:2222", &key).is_ok());
        assert!(check_host_key(&line(&hashed, &key), "h", &key).is_err());
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        let openssh = |cipher: &str| {
            let mut body = b"openssh-key-v1\0".to_vec();
            body.extend_from_slice(&(cipher.len() as u32).to_be_bytes());
            body.extend_from_slice(cipher.as_bytes());
            format!(
                "-----BEGIN OPENSSH PRIVATE KEY-----\n{}\n-----END OPENSSH PRIVATE KEY-----\n",
                openssl::base64::encode_block(&body)
            )
        };
        assert_eq!(key_is_encrypted(&openssh("none")), Some(false));
        assert_eq!(key_is_encrypted(&openssh("aes256-ctr")), Some(true));
        assert_eq!(
            key_is_encrypted("-----BEGIN OPENSSH PRIVATE KEY-----\n***\n-----END"),
            None
        );
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAAAA\n";
        assert_eq!(key_is_encrypted(pem), Some(true));
        assert_eq!(
            key_is_encrypted("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            Some(false)
        );
    }

    /// A CA and a leaf it signed for `name` (DNS or IP), both made here.
    fn pki(name: &str) -> (Vec<u8>, Vec<u8>) {
        use openssl::asn1::Asn1Time;
        use openssl::bn::BigNum;
        use openssl::ec::{EcGroup, EcKey};
        use openssl::hash::MessageDigest;
        use openssl::nid::Nid;
        use openssl::pkey::PKey;
        use openssl::x509::extension::{BasicConstraints, SubjectAlternativeName};
        use openssl::x509::{X509NameBuilder, X509};
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = || PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let (ca_key, leaf_key) = (key(), key());
        let subject = |cn: &str| {
            let mut n = X509NameBuilder::new().unwrap();
            n.append_entry_by_text("CN", cn).unwrap();
            n.build()
        };
        let cert = |cn: &str, key: &PKey<openssl::pkey::Private>, ca: bool| {
            let mut b = X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_serial_number(
                &BigNum::from_u32(if ca { 1 } else { 2 })
                    .unwrap()
                    .to_asn1_integer()
                    .unwrap(),
            )
            .unwrap();
            b.set_subject_name(&subject(cn)).unwrap();
            b.set_issuer_name(&subject("test CA")).unwrap();
            b.set_pubkey(key).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
                .unwrap();
            if ca {
                b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
                    .unwrap();
            } else {
                let mut san = SubjectAlternativeName::new();
                if name.parse::<std::net::IpAddr>().is_ok() {
                    san.ip(name);
                } else {
                    san.dns(name);
                }
                let san = san.build(&b.x509v3_context(None, None)).unwrap();
                b.append_extension(san).unwrap();
            }
            b.sign(&ca_key, MessageDigest::sha256()).unwrap();
            b.build()
        };
        let ca = cert("test CA", &ca_key, true);
        let leaf = cert(name, &leaf_key, false);
        (ca.to_pem().unwrap(), leaf.to_der().unwrap())
    }

    #[test]
    fn leaf_is_checked_against_the_ca_and_the_host_name() {
        let (ca, leaf) = pki("git.example.com");
        assert!(verify_leaf(&leaf, &ca, "git.example.com").is_ok());
        let err = verify_leaf(&leaf, &ca, "other.example.com")
            .unwrap_err()
            .to_string();
        assert!(err.contains("certificate verify failed"), "{err}");
        let (other_ca, _) = pki("git.example.com");
        assert!(verify_leaf(&leaf, &other_ca, "git.example.com").is_err());
        let (ca, leaf) = pki("127.0.0.1");
        assert!(verify_leaf(&leaf, &ca, "127.0.0.1").is_ok());
        assert!(verify_leaf(&leaf, &ca, "127.0.0.2").is_err());
    }
}
