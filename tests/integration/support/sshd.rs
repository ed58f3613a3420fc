//! Git over SSH: Debian's OpenSSH server, `sshd -D -e -f <own config>` on a free loopback
//! port, with its own host key and `authorized_keys` in its temp dir. No system file is read
//! or changed, except that `/run/sshd` (the privilege-separation directory sshd insists on)
//! is created when missing.
//!
//! Logins are as the user running the tests (root in CI). Under `UsePAM no`, sshd refuses a
//! user whose password field is locked (`!...`); `*` (no password, not locked) is fine, and is
//! what Debian's root has in a container. Repositories are served by absolute path:
//! `ssh://<user>@127.0.0.1:PORT/<path>/<name>.git`.
//!
//! `AcceptEnv GIT_PROTOCOL` lets clients ask for protocol v2, as GitHub, GitLab and Gitea
//! do; a stock sshd (Debian's included) drops the variable and git falls back to v0.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;

use super::git::BareRepo;
use super::process::{start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError};

#[derive(Debug)]
pub struct SshServer {
    sshd: ServerProcess,
    port: u16,
    user: String,
    dir: TempDir,
}

impl SshServer {
    /// Starts sshd; panics if it cannot.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// Starts an sshd that drops `GIT_PROTOCOL`, as a stock one does: git speaks protocol v0
    /// to it.
    pub fn start_v0_only() -> Self {
        Self::start_with(false)
    }

    fn start_with(accept_git_protocol: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-sshd-")
            .tempdir()
            .expect("create temp dir for sshd");
        let user = current_user();
        check_login_allowed(&user);
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        }
        let host_key = dir.path().join("host_ed25519");
        keygen(&host_key, "ed25519", &[]);
        fs::write(dir.path().join("authorized_keys"), "").expect("write authorized_keys");
        let (sshd, port) = start_on_free_port("sshd", |port| {
            let conf = dir.path().join("sshd_config");
            let mut config = sshd_config(dir.path(), port, &user);
            if accept_git_protocol {
                config.push_str("AcceptEnv GIT_PROTOCOL\n");
            }
            fs::write(&conf, config).expect("write sshd_config");
            let log = dir.path().join(format!("sshd-{port}.log"));
            let mut command = Command::new(program("sshd"));
            command.arg("-D").arg("-e").arg("-f").arg(&conf);
            let mut process = ServerProcess::spawn("sshd", command, &log).map_err(|e| {
                StartError::Failed(format!(
                    "cannot run sshd (run scripts/install-test-deps.sh): {e}"
                ))
            })?;
            let listening = format!("Server listening on 127.0.0.1 port {port}");
            wait_until_ready(&mut process, || {
                if process_log(&log).contains(&listening) {
                    Probe::Ready
                } else {
                    Probe::NotYet
                }
            })?;
            Ok((process, port))
        });
        SshServer {
            sshd,
            port,
            user,
            dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ssh://<user>@127.0.0.1:PORT<absolute path of bare>`.
    pub fn url(&self, bare: &BareRepo) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            self.user,
            self.port,
            bare.path().display()
        )
    }

    /// Accept logins with this public key (one `authorized_keys` line). sshd reads the file
    /// at each login, so this works while it runs.
    pub fn authorize(&self, public_key: &str) {
        use std::io::Write;
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("authorized_keys"))
            .expect("open authorized_keys");
        writeln!(file, "{}", public_key.trim()).expect("append to authorized_keys");
    }

    /// The host key as a `known_hosts` line: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        let public = fs::read_to_string(self.dir.path().join("host_ed25519.pub"))
            .expect("read host public key");
        let mut fields = public.split_whitespace();
        let kind = fields.next().expect("key type");
        let key = fields.next().expect("key");
        format!("[127.0.0.1]:{} {kind} {key}", self.port)
    }

    /// `SHA256:...` of the host key.
    pub fn host_key_fingerprint(&self) -> String {
        fingerprint(&self.dir.path().join("host_ed25519.pub"))
    }

    /// sshd's log (`-e`: to stderr, which the harness keeps), for diagnosing a failing test.
    pub fn log(&self) -> String {
        self.sshd.log()
    }

    pub fn stop(&mut self) {
        self.sshd.stop();
    }
}

impl Drop for SshServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Generate a key pair at `path` (and `path.pub`) with `ssh-keygen -t kind` plus `extra`
/// arguments (e.g. `["-m", "PEM"]`, `["-N", "passphrase"]`; the passphrase defaults to none).
pub fn keygen(path: &Path, kind: &str, extra: &[&str]) {
    let mut command = Command::new("ssh-keygen");
    command
        .args(["-q", "-t", kind, "-C", "gitopsd-test", "-f"])
        .arg(path);
    if !extra.contains(&"-N") {
        command.args(["-N", ""]);
    }
    command.args(extra);
    let output = command.output().unwrap_or_else(|e| {
        panic!("cannot run ssh-keygen (run scripts/install-test-deps.sh): {e}")
    });
    assert!(
        output.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// `SHA256:...` of a public key file.
pub fn fingerprint(public_key: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .expect("run ssh-keygen -lf");
    let text = String::from_utf8_lossy(&output.stdout);
    text.split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("no fingerprint in {text:?}"))
        .to_string()
}

fn sshd_config(dir: &Path, port: u16, user: &str) -> String {
    let d = dir.display();
    format!(
        "Port {port}\n\
         ListenAddress 127.0.0.1\n\
         HostKey {d}/host_ed25519\n\
         PidFile {d}/sshd.pid\n\
         AuthorizedKeysFile {d}/authorized_keys\n\
         AllowUsers {user}\n\
         UsePAM no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PubkeyAuthentication yes\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         UseDNS no\n\
         PrintMotd no\n\
         LogLevel VERBOSE\n\
         MaxStartups 64\n"
    )
}

fn current_user() -> String {
    let output = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// sshd without PAM refuses a locked account (password field starting with `!`).
fn check_login_allowed(user: &str) {
    let Ok(shadow) = fs::read_to_string("/etc/shadow") else {
        return; // not readable: not root; sshd will say if it refuses
    };
    let field = shadow
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{user}:")))
        .and_then(|rest| rest.split(':').next())
        .unwrap_or("*");
    assert!(
        !field.starts_with('!'),
        "the account {user} is locked (password field starts with '!'), so sshd refuses it \
         under UsePAM no; unlock it without a password with: usermod -p '*' {user}"
    );
}

fn process_log(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}
