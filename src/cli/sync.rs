//! `gitopsd sync`: the sidecar's job (git-sync's) from flags alone, no config file.
//!
//! The flags are turned into the config document they stand for (one configuration named
//! `--name`, its source publishing into `--dest`) and that document goes through the same
//! loader as a file: the same `Settings`, the same checks, the same engine as `gitopsd run`,
//! so flag mode cannot drift from config mode. The document is JSON (a subset of YAML), one
//! key per line, so that a problem the loader reports at a line is traced back to the flag that
//! set that key and told as `--interval (GITOPSD_INTERVAL) "5x": ...`.
//!
//! Every flag also reads a `GITOPSD_*` variable, the way Kubernetes manifests pass settings.

use super::check::INVALID_CONFIG;
use super::Output;
use crate::escape;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// What `gitopsd sync` takes; see `gitopsd sync --help`.
#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The repository: https://, http://, ssh://, git://, file:// or a local path.
    #[arg(long, env = "GITOPSD_URL")]
    pub url: String,
    /// A branch (`main`), or a full ref name (`refs/pull/1/head`). Default: the remote's HEAD.
    #[arg(long = "ref", env = "GITOPSD_REF")]
    pub reference: Option<String>,
    /// A tag.
    #[arg(long, env = "GITOPSD_TAG")]
    pub tag: Option<String>,
    /// A semver range over tags, e.g. ">=1.0.0 <2.0.0".
    #[arg(long, env = "GITOPSD_SEMVER")]
    pub semver: Option<String>,
    /// A commit id (with --ref: fetched from that branch).
    #[arg(long, env = "GITOPSD_COMMIT")]
    pub commit: Option<String>,
    /// Where the files go: DEST/<link> -> DEST/.revisions/<commit>, or with --no-symlink
    /// DEST itself holds them. DEST must not be a mount point; its parent must be writable.
    #[arg(long, env = "GITOPSD_DEST")]
    pub dest: PathBuf,
    /// The symlink's name under DEST.
    #[arg(long, env = "GITOPSD_LINK", default_value = "current")]
    pub link: String,
    /// Publish the files in DEST itself, swapped whole by rename, for consumers that cannot
    /// follow symlinks.
    #[arg(long, env = "GITOPSD_NO_SYMLINK")]
    pub no_symlink: bool,
    /// How often to poll (Go duration: 30s, 1m, 1h30m).
    #[arg(long, env = "GITOPSD_INTERVAL", default_value = "1m")]
    pub interval: String,
    /// How long one fetch may take.
    #[arg(long, env = "GITOPSD_TIMEOUT")]
    pub timeout: Option<String>,
    /// Sync once and exit: 0 when DEST holds the revision (an init container's job).
    #[arg(long, env = "GITOPSD_ONCE")]
    pub once: bool,
    /// gitopsd's own directory: artifacts, the git cache, the state.
    #[arg(long, env = "GITOPSD_STATE_DIR", default_value = "/var/lib/gitopsd")]
    pub state_dir: PathBuf,
    /// The HTTP API's address (health, readiness, metrics, artifacts).
    #[arg(long, env = "GITOPSD_LISTEN", default_value = "127.0.0.1:9090")]
    pub listen: String,
    /// The configuration's name, as the status and metrics show it.
    #[arg(long, env = "GITOPSD_NAME", default_value = "sync")]
    pub name: String,
    /// HTTPS basic auth user (with --password-file).
    #[arg(long, env = "GITOPSD_USERNAME")]
    pub username: Option<String>,
    /// A file holding the HTTPS password or token, read again at every sync.
    #[arg(long, env = "GITOPSD_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// A file holding a bearer token for HTTPS.
    #[arg(long, env = "GITOPSD_BEARER_TOKEN_FILE")]
    pub bearer_token_file: Option<PathBuf>,
    /// An SSH private key file.
    #[arg(long, env = "GITOPSD_SSH_KEY_FILE")]
    pub ssh_key_file: Option<PathBuf>,
    /// An SSH known_hosts file (default: the built-in list for the big git hosts).
    #[arg(long, env = "GITOPSD_KNOWN_HOSTS_FILE")]
    pub known_hosts_file: Option<PathBuf>,
    /// A CA certificate (PEM) for the HTTPS server, instead of the system's.
    #[arg(long, env = "GITOPSD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
    /// A directory of Flux-style secret keys (username, password, identity, known_hosts,
    /// ca.crt, ...), e.g. a mounted Kubernetes Secret.
    #[arg(long, env = "GITOPSD_AUTH_DIR")]
    pub auth_dir: Option<PathBuf>,
    /// A program to run after each new publish, with GITOPSD_REVISION, GITOPSD_DIRECTORY and
    /// GITOPSD_SOURCE in its environment; retried with backoff while it fails.
    #[arg(long, env = "GITOPSD_EXECHOOK_COMMAND")]
    pub exechook_command: Option<PathBuf>,
    /// A URL to POST {"source","revision","directory"} to after each new publish; retried.
    #[arg(long, env = "GITOPSD_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// How long one run of a hook may take.
    #[arg(long, env = "GITOPSD_HOOK_TIMEOUT")]
    pub hook_timeout: Option<String>,
    /// With --once: print the result as text, JSON or YAML.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// Which flag (and variable) set each key of the generated document.
const FLAG_OF_KEY: &[(&str, &str)] = &[
    ("url", "--url (GITOPSD_URL)"),
    ("branch", "--ref (GITOPSD_REF)"),
    ("name", "--ref (GITOPSD_REF) or --name (GITOPSD_NAME)"),
    ("tag", "--tag (GITOPSD_TAG)"),
    ("semver", "--semver (GITOPSD_SEMVER)"),
    ("commit", "--commit (GITOPSD_COMMIT)"),
    ("directory", "--dest (GITOPSD_DEST)"),
    ("link", "--link (GITOPSD_LINK)"),
    ("mode", "--no-symlink (GITOPSD_NO_SYMLINK)"),
    ("interval", "--interval (GITOPSD_INTERVAL)"),
    ("timeout", "--timeout (GITOPSD_TIMEOUT)"),
    ("stateDir", "--state-dir (GITOPSD_STATE_DIR)"),
    ("listen", "--listen (GITOPSD_LISTEN)"),
    ("httpsUser", "--username (GITOPSD_USERNAME)"),
    ("httpsKeyFile", "--password-file (GITOPSD_PASSWORD_FILE)"),
    (
        "bearerTokenFile",
        "--bearer-token-file (GITOPSD_BEARER_TOKEN_FILE)",
    ),
    ("sshPrivateKeyFile", "--ssh-key-file (GITOPSD_SSH_KEY_FILE)"),
    (
        "knownHostsFile",
        "--known-hosts-file (GITOPSD_KNOWN_HOSTS_FILE)",
    ),
    ("httpsCACertFile", "--ca-file (GITOPSD_CA_FILE)"),
    ("localAuthRef", "--auth-dir (GITOPSD_AUTH_DIR)"),
    ("execHook", "--exechook-command (GITOPSD_EXECHOOK_COMMAND)"),
    ("webhook", "--webhook-url (GITOPSD_WEBHOOK_URL)"),
    ("hookTimeout", "--hook-timeout (GITOPSD_HOOK_TIMEOUT)"),
];

pub fn sync(args: &SyncArgs) -> anyhow::Result<i32> {
    let cwd = std::env::current_dir()?;
    let text = document(args, &cwd);
    let settings = match crate::config::load_str(&text, Path::new("flags"), &cwd) {
        Ok(settings) => settings,
        Err(diagnostics) => {
            for d in diagnostics.iter() {
                let flag = flag_at(&text, d.line).unwrap_or("the flags");
                eprintln!("error: {flag}: {}", escape::control(&d.message));
            }
            return Ok(INVALID_CONFIG);
        }
    };
    if let Err(problem) = check_dest(&args.dest, args.no_symlink) {
        eprintln!(
            "error: --dest (GITOPSD_DEST) {}: {problem}",
            escape::control(&args.dest.display().to_string())
        );
        return Ok(INVALID_CONFIG);
    }
    super::run::run_settings(settings, &text, None, args.once, args.output)
}

/// The config document the flags stand for, pretty-printed (one key per line).
fn document(args: &SyncArgs, cwd: &Path) -> String {
    let mut source = Map::new();
    source.insert("kind".into(), json!("git"));
    source.insert("url".into(), json!(args.url));
    let mut reference = Map::new();
    if let Some(r) = &args.reference {
        let key = if r.starts_with("refs/") {
            "name"
        } else {
            "branch"
        };
        reference.insert(key.into(), json!(r));
    }
    for (key, value) in [
        ("tag", &args.tag),
        ("semver", &args.semver),
        ("commit", &args.commit),
    ] {
        if let Some(v) = value {
            reference.insert(key.into(), json!(v));
        }
    }
    if !reference.is_empty() {
        source.insert("ref".into(), Value::Object(reference));
    }
    source.insert("interval".into(), json!(args.interval));
    if let Some(timeout) = &args.timeout {
        source.insert("timeout".into(), json!(timeout));
    }
    let path = |p: &PathBuf| json!(cwd.join(p));
    for (key, value) in [
        ("httpsKeyFile", &args.password_file),
        ("bearerTokenFile", &args.bearer_token_file),
        ("sshPrivateKeyFile", &args.ssh_key_file),
        ("knownHostsFile", &args.known_hosts_file),
        ("httpsCACertFile", &args.ca_file),
    ] {
        if let Some(p) = value {
            source.insert(key.into(), path(p));
        }
    }
    if let Some(user) = &args.username {
        source.insert("httpsUser".into(), json!(user));
    }
    if let Some(dir) = &args.auth_dir {
        source.insert("localAuthRef".into(), json!({ "directory": cwd.join(dir) }));
    }
    let mut publish = Map::new();
    publish.insert("directory".into(), path(&args.dest));
    publish.insert("link".into(), json!(args.link));
    if args.no_symlink {
        publish.insert("mode".into(), json!("directory"));
    }
    if let Some(program) = &args.exechook_command {
        publish.insert("execHook".into(), path(program));
    }
    if let Some(url) = &args.webhook_url {
        publish.insert("webhook".into(), json!(url));
    }
    if let Some(timeout) = &args.hook_timeout {
        publish.insert("hookTimeout".into(), json!(timeout));
    }
    source.insert("publish".into(), Value::Object(publish));
    let document = json!({
        "stateDir": cwd.join(&args.state_dir),
        "server": { "listen": args.listen },
        "configurations": [{ "name": args.name, "source": Value::Object(source) }],
    });
    // Serialising a JSON value cannot fail.
    serde_json::to_string_pretty(&document).unwrap_or_default()
}

/// The flag whose key is on `line` (1-based) of the generated document.
fn flag_at(text: &str, line: usize) -> Option<&'static str> {
    let line = text.lines().nth(line.checked_sub(1)?)?;
    let key = line.trim_start().strip_prefix('"')?.split('"').next()?;
    FLAG_OF_KEY
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, flag)| *flag)
}

/// DEST must be usable before anything is fetched: its parent writable (the swap's temp
/// entries go there with --no-symlink), or DEST itself (the revisions and the link go there).
fn check_dest(dest: &Path, no_symlink: bool) -> Result<(), String> {
    let probe_dir = if no_symlink {
        match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    } else {
        dest.to_path_buf()
    };
    std::fs::create_dir_all(&probe_dir)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".gitopsd-probe")
                .tempfile_in(&probe_dir)
        })
        .map(drop)
        .map_err(|e| {
            format!(
                "cannot write in {}: {e}",
                escape::control(&probe_dir.display().to_string())
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SyncArgs,
    }

    fn args(flags: &[&str]) -> SyncArgs {
        let mut argv = vec!["gitopsd"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn flags_make_the_settings_a_config_file_would() {
        let a = args(&[
            "--url",
            "https://git.example.com/fleet",
            "--ref",
            "main",
            "--dest",
            "/srv/app",
            "--interval",
            "30s",
            "--state-dir",
            "/var/lib/gitopsd",
        ]);
        let text = document(&a, Path::new("/work"));
        let settings =
            crate::config::load_str(&text, Path::new("flags"), Path::new("/work")).unwrap();
        let file = "stateDir: /var/lib/gitopsd\nserver: { listen: \"127.0.0.1:9090\" }\n\
                    configurations:\n  - name: sync\n    source:\n      kind: git\n      \
                    url: https://git.example.com/fleet\n      ref: { branch: main }\n      \
                    interval: 30s\n      publish: { directory: /srv/app, link: current }\n";
        let expected =
            crate::config::load_str(file, Path::new("f.yaml"), Path::new("/work")).unwrap();
        assert_eq!(format!("{settings:?}"), format!("{expected:?}"));
    }

    #[test]
    fn a_problem_is_traced_back_to_its_flag() {
        let a = args(&["--url", "https://x/y", "--dest", "/srv", "--interval", "5x"]);
        let text = document(&a, Path::new("/"));
        let diagnostics =
            crate::config::load_str(&text, Path::new("flags"), Path::new("/")).unwrap_err();
        let flags: Vec<_> = diagnostics
            .iter()
            .filter_map(|d| flag_at(&text, d.line))
            .collect();
        assert_eq!(flags, ["--interval (GITOPSD_INTERVAL)"]);
    }
}
