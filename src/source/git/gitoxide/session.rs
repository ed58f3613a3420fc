//! One sync's credentials, set up for gix: config overrides (bearer header, CA file, the ssh
//! program), the basic-auth identity, the private files the `ssh` program reads, and the
//! wording of a failure from what ssh logged.

use crate::source::git::error::{self, untyped, GitError, Problem};
use crate::source::git::known_hosts::known_hosts_name;
use crate::source::git::refs;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use zeroize::Zeroizing;

/// One sync's credentials, set up for gix: config overrides (bearer header, CA file, the ssh
/// program), the basic-auth identity for the credentials callback, and the private files the
/// `ssh` program reads. The files live in a 0700 directory removed on drop.
pub struct Session {
    pub(super) basic: Option<(String, Zeroizing<String>)>,
    /// Mutual TLS: certificate and key, with the CA to trust; served by [`super::mtls`].
    pub(super) client_tls: Option<(Vec<u8>, crate::source::git::auth::SecretBytes)>,
    pub(super) ca_pem: Option<Vec<u8>>,
    /// `key=value` config overrides, applied in memory only (never written to the cache's
    /// config file). May hold a token: never logged, and errors about them are generic.
    overrides: Vec<Zeroizing<String>>,
    pub(super) ssh: Option<SshSession>,
    /// 0700, removed when the session is dropped.
    dir: Option<tempfile::TempDir>,
}

pub(super) struct SshSession {
    /// The wrapper script that runs `ssh` with this sync's key and known hosts.
    pub(super) program: std::path::PathBuf,
    /// `ssh -E`: everything ssh logs (at debug1, which names the host key it was offered).
    pub(super) log: std::path::PathBuf,
    /// What the remote command wrote to stderr (`fatal: ... does not appear to be a git
    /// repository`, say).
    pub(super) remote_stderr: std::path::PathBuf,
    /// `host` or `[host]:port`, as known_hosts writes it.
    pub(super) host: String,
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
        credentials: crate::source::git::auth::Credentials,
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
                session.set(format!(
                    "http.extraHeader=Authorization: Basic {}",
                    encode_block(pair.as_bytes())
                ));
            }
            session.basic = Some((user.clone(), Zeroizing::new(password.to_string())));
        }
        if let Some(token) = &credentials.bearer {
            let token = token
                .expose_str()
                .filter(|t| t.bytes().all(|b| b.is_ascii_graphic()))
                .ok_or_else(|| fail(Problem::BearerNotHeaderSafe))?;
            session.set(format!("http.extraHeader=Authorization: Bearer {token}"));
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
            let dir = tempfile::Builder::new()
                .prefix(".gitopsd-auth-")
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir_in(&parent)
                .map_err(|e| local("a private directory", e))?;
            session.dir = Some(dir);
        }
        let dir = session
            .dir
            .as_ref()
            .map(|d| d.path().to_path_buf())
            .unwrap_or_default();
        // Written 0600 and atomically; the scripts are then made executable (0700).
        let write = |name: &str, bytes: &[u8], mode: u32| -> Result<std::path::PathBuf, GitError> {
            let path = dir.join(name);
            crate::atomic::write_private(&path, bytes)
                .and_then(|()| fs::set_permissions(&path, fs::Permissions::from_mode(mode)))
                .map_err(|e| fail(error::local(Some(format!("cannot write {name}")), e)))?;
            Ok(path)
        };
        if let Some(pem) = &credentials.ca_pem {
            let path = write("ca.pem", pem, 0o600)?;
            session.set(format!("http.sslCAInfo={}", path.display()));
        }
        if let Some(ssh) = &credentials.ssh {
            let mut key = Zeroizing::new(ssh.private_key.expose().to_vec());
            if !key.ends_with(b"\n") {
                key.push(b'\n'); // ssh refuses a key file without the final newline
            }
            let key_path = write("identity", &key, 0o600)?;
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
            session.set(format!("core.sshCommand={}", wrapper.display()));
            session.set("ssh.variant=ssh");
            session.ssh = Some(SshSession {
                program: wrapper,
                log,
                remote_stderr: dir.join("remote-stderr.log"),
                host: known_hosts_name(url),
            });
        }
        Ok(session)
    }

    /// Add a `key=value` override.
    fn set(&mut self, setting: impl Into<String>) {
        self.overrides.push(Zeroizing::new(setting.into()));
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
                self.overrides.iter().map(|o| o.as_str()),
                gix::config::Source::Api,
            )
            .map_err(not_applied)?;
        config.commit().map_err(not_applied)?;
        Ok(())
    }

    /// A network error, worded from what ssh logged when there is an ssh log.
    pub(super) fn failure(&self, url: &str, e: &(dyn std::error::Error + 'static)) -> GitError {
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
        let failure = super::network_error(url, e);
        match &self.basic {
            Some((_, secret)) => failure.scrub(secret.as_str()),
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
