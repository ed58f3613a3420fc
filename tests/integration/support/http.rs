//! Git smart HTTP: nginx in front of fcgiwrap running `git http-backend`, all on loopback
//! and configured from files inside the server's own temp dir (no system config is read or
//! touched).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tempfile::TempDir;

use super::daemon::{link_repo, repo_file_name};
use super::git::{git, scrub_environment, BareRepo};
use super::process::{
    exchange, start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError,
};

const READY_PATH: &str = "/gitopsd-harness-ready";

/// How to set up an [`HttpGitServer`]; start with [`HttpGitServer::builder`].
#[derive(Debug, Default, Clone)]
pub struct HttpGitServerBuilder {
    basic_auth: Option<(String, String)>,
    bearer_token: Option<String>,
    tls: Option<TlsFiles>,
}

/// PEM files for the TLS listener: the server's certificate and key, and the CA whose client
/// certificates `/mtls/git/` accepts.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl HttpGitServerBuilder {
    /// Also serve every repository under `/auth/git/`, behind HTTP basic auth with this one
    /// user (see [`HttpGitServer::auth_url`]). `/git/` stays open.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        assert!(
            !user.contains(':') && !user.contains('\n') && !password.contains('\n'),
            "user may not contain ':' and neither may contain a newline"
        );
        self.basic_auth = Some((user.to_string(), password.to_string()));
        self
    }

    /// Also serve every repository under `/bearer/git/`, for requests carrying
    /// `Authorization: Bearer <token>` only (see [`HttpGitServer::bearer_url`]).
    pub fn bearer_token(mut self, token: &str) -> Self {
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b)));
        self.bearer_token = Some(token.to_string());
        self
    }

    /// Also listen with TLS on a second port (see [`HttpGitServer::https_base_url`]); there,
    /// `/mtls/git/` additionally requires a client certificate signed by `client_ca`.
    pub fn tls(mut self, files: TlsFiles) -> Self {
        self.tls = Some(files);
        self
    }

    /// Starts nginx and fcgiwrap; panics if they cannot start.
    pub fn start(self) -> HttpGitServer {
        HttpGitServer::start_with(self)
    }
}

/// Git smart HTTP (protocol v0, v1 and v2) at `http://127.0.0.1:PORT/git/<name>.git`.
///
/// nginx runs with `daemon off` as the leader of its own process group; fcgiwrap listens on a
/// unix socket in the temp dir and runs `git http-backend` for each request. Both stop, with
/// every process they started, on drop.
///
/// Started as root, nginx would switch its workers to `nobody`, who cannot reach the fcgiwrap
/// socket inside the test's private (0700) temp dir; the generated config therefore says
/// `user root;` when the harness runs as root. Only loopback is listened on.
///
/// Extending it (e.g. TLS with a harness-made CA): add the directives to [`nginx_conf`] and a
/// builder option; the readiness probe and process handling stay as they are.
#[derive(Debug)]
pub struct HttpGitServer {
    nginx: ServerProcess,
    fcgiwrap: ServerProcess,
    port: u16,
    repos: PathBuf,
    basic_auth: Option<(String, String)>,
    tls_port: Option<u16>,
    dir: TempDir,
}

impl HttpGitServer {
    /// Starts a server without authentication.
    pub fn start() -> Self {
        Self::builder().start()
    }

    pub fn builder() -> HttpGitServerBuilder {
        HttpGitServerBuilder::default()
    }

    /// Starts a server serving `bare`; returns it with the repository's URL.
    pub fn serving(bare: &BareRepo) -> (Self, String) {
        let server = Self::start();
        let url = server.serve(bare);
        (server, url)
    }

    fn start_with(options: HttpGitServerBuilder) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-http-")
            .tempdir()
            .expect("create temp dir for the HTTP git server");
        let repos = dir.path().join("repos");
        fs::create_dir(&repos).expect("create repository root");
        for sub in ["body", "fastcgi", "proxy", "scgi", "uwsgi"] {
            fs::create_dir_all(dir.path().join("nginx-tmp").join(sub))
                .expect("create nginx temp dirs");
        }
        let htpasswd = options.basic_auth.as_ref().map(|(user, password)| {
            let path = dir.path().join("htpasswd");
            // nginx accepts the {PLAIN} scheme: no hashing tool needed for a test password.
            fs::write(&path, format!("{user}:{{PLAIN}}{password}\n")).expect("write htpasswd");
            path
        });

        let socket = dir.path().join("fcgiwrap.sock");
        let backend = http_backend_path();
        let fcgiwrap = start_fcgiwrap(dir.path(), &socket, &backend);

        let (nginx, port, tls_port) = start_on_free_port("nginx", |port| {
            let tls_port = options.tls.as_ref().map(|_| super::process::free_port());
            let token = unique_token(port);
            let conf = nginx_conf(&NginxSite {
                dir: dir.path(),
                port,
                socket: &socket,
                backend: &backend,
                repos: &repos,
                ready_token: &token,
                htpasswd: htpasswd.as_deref(),
                bearer_token: options.bearer_token.as_deref(),
                tls: options.tls.as_ref().zip(tls_port),
            });
            let conf_path = dir.path().join("nginx.conf");
            fs::write(&conf_path, conf).expect("write nginx.conf");
            let nginx = spawn_nginx(dir.path(), &conf_path, port, &token)?;
            Ok((nginx, port, tls_port))
        });

        HttpGitServer {
            nginx,
            fcgiwrap,
            port,
            repos,
            basic_auth: options.basic_auth,
            tls_port,
            dir,
        }
    }

    /// Publishes `bare` as `<name>.git` and returns its open URL. Served live: later pushes
    /// into the bare repository are visible at once.
    pub fn serve(&self, bare: &BareRepo) -> String {
        link_repo(&self.repos, bare);
        self.url(bare.name())
    }

    /// `http://127.0.0.1:PORT/git/<name>.git` (`.git` is added unless `name` has it).
    pub fn url(&self, name: &str) -> String {
        format!("{}/git/{}", self.base_url(), repo_file_name(name))
    }

    /// `http://127.0.0.1:PORT/v0/git/<name>.git`: the same repository from a backend that
    /// speaks protocol v0 only.
    pub fn v0_url(&self, name: &str) -> String {
        format!("{}/v0/git/{}", self.base_url(), repo_file_name(name))
    }

    /// `http://127.0.0.1:PORT/auth/git/<name>.git`: the same repository behind basic auth.
    /// Panics unless the server was built with [`HttpGitServerBuilder::basic_auth`].
    pub fn auth_url(&self, name: &str) -> String {
        assert!(
            self.basic_auth.is_some(),
            "server was started without basic auth"
        );
        format!("{}/auth/git/{}", self.base_url(), repo_file_name(name))
    }

    /// [`HttpGitServer::auth_url`] with the user and password in it.
    pub fn auth_url_with_credentials(&self, name: &str) -> String {
        let (user, password) = self
            .basic_auth
            .as_ref()
            .expect("server was started without basic auth");
        format!(
            "http://{}:{}@127.0.0.1:{}/auth/git/{}",
            percent_encode(user),
            percent_encode(password),
            self.port,
            repo_file_name(name)
        )
    }

    /// Rotates the basic-auth password: nginx reads the htpasswd file at every request, so the
    /// next request needs the new one. Panics unless built with basic auth.
    pub fn set_password(&mut self, password: &str) {
        let (user, old) = self
            .basic_auth
            .as_mut()
            .expect("server was started without basic auth");
        assert!(
            !password.contains('\n'),
            "a password may not contain a newline"
        );
        let htpasswd = self.dir.path().join("htpasswd");
        let temp = self.dir.path().join("htpasswd.new");
        fs::write(&temp, format!("{user}:{{PLAIN}}{password}\n")).expect("write htpasswd");
        fs::rename(&temp, &htpasswd).expect("replace htpasswd");
        *old = password.to_string();
    }

    /// `https://127.0.0.1:TLS_PORT`; panics unless built with [`HttpGitServerBuilder::tls`].
    pub fn https_base_url(&self) -> String {
        format!(
            "https://127.0.0.1:{}",
            self.tls_port.expect("server was started without TLS")
        )
    }

    /// `http://127.0.0.1:PORT/bearer/git/<name>.git`: behind the bearer token.
    pub fn bearer_url(&self, name: &str) -> String {
        format!("{}/bearer/git/{}", self.base_url(), repo_file_name(name))
    }

    /// `https://127.0.0.1:TLS_PORT/<prefix>/git/<name>.git` for prefix `""` (open), `auth`,
    /// `bearer` or `mtls` (client certificate required).
    pub fn https_url(&self, prefix: &str, name: &str) -> String {
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("/{prefix}")
        };
        format!(
            "{}{prefix}/git/{}",
            self.https_base_url(),
            repo_file_name(name)
        )
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory served as `GIT_PROJECT_ROOT`.
    pub fn project_root(&self) -> &Path {
        &self.repos
    }

    /// The process groups of nginx and of fcgiwrap (with the backends it runs).
    pub fn process_groups(&self) -> [u32; 2] {
        [self.nginx.id(), self.fcgiwrap.id()]
    }

    /// nginx's error log (including git http-backend's stderr) and access log, for
    /// diagnosing a failing test.
    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- nginx error log ---\n{}--- nginx access log ---\n{}--- fcgiwrap ---\n{}",
            read("nginx-error.log"),
            read("nginx-access.log"),
            self.fcgiwrap.log()
        )
    }

    /// Stops nginx, then fcgiwrap, with everything they started. Also done on drop.
    pub fn stop(&mut self) {
        self.nginx.stop();
        self.fcgiwrap.stop();
    }
}

impl Drop for HttpGitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a daemon lives: Debian puts them in /usr/sbin, which a non-root PATH may lack.
fn program(name: &str) -> PathBuf {
    let sbin = Path::new("/usr/sbin").join(name);
    if sbin.exists() {
        sbin
    } else {
        PathBuf::from(name)
    }
}

fn http_backend_path() -> PathBuf {
    let exec_path = git(std::env::temp_dir(), ["--exec-path"]);
    let backend = Path::new(&exec_path).join("git-http-backend");
    assert!(
        backend.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        backend.display()
    );
    backend
}

fn start_fcgiwrap(dir: &Path, socket: &Path, backend: &Path) -> ServerProcess {
    let mut command = Command::new(program("fcgiwrap"));
    scrub_environment(&mut command);
    command.current_dir(dir);
    command
        .env("HOME", dir)
        // Several workers: a fetch by gitopsd and a clone by the test may overlap.
        .args(["-c", "4", "-f", "-s"])
        .arg(format!("unix:{}", socket.display()))
        .arg("-p")
        .arg(backend);
    let mut process = ServerProcess::spawn("fcgiwrap", command, &dir.join("fcgiwrap.log"))
        .unwrap_or_else(|e| panic!("cannot run fcgiwrap (run scripts/install-test-deps.sh): {e}"));
    let ready = wait_until_ready(&mut process, || {
        if UnixStream::connect(socket).is_ok() {
            Probe::Ready
        } else {
            Probe::NotYet
        }
    });
    if let Err(StartError::Failed(detail) | StartError::PortTaken(detail)) = ready {
        panic!("fcgiwrap failed to start: {detail}");
    }
    process
}

fn spawn_nginx(
    dir: &Path,
    conf: &Path,
    port: u16,
    token: &str,
) -> Result<ServerProcess, StartError> {
    let mut command = Command::new(program("nginx"));
    command
        .current_dir(dir)
        // -e: the log for messages before the config is read (the built-in default is a
        // system path or stderr).
        .arg("-e")
        .arg(dir.join("nginx-error.log"))
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(conf);
    let mut process = ServerProcess::spawn("nginx", command, &dir.join("nginx-stderr.log"))
        .map_err(|e| {
            StartError::Failed(format!(
                "cannot run nginx (run scripts/install-test-deps.sh): {e}"
            ))
        })?;
    let ready = wait_until_ready(&mut process, || {
        let request = format!("GET {READY_PATH} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        match exchange(port, request.as_bytes()) {
            None => Probe::NotYet,
            Some(answer) if answer.is_empty() => Probe::NotYet,
            Some(answer) => {
                let answer = String::from_utf8_lossy(&answer);
                if answer.starts_with("HTTP/1.1 200") && answer.ends_with(token) {
                    Probe::Ready
                } else {
                    Probe::Foreign(answer.chars().take(200).collect())
                }
            }
        }
    });
    match ready {
        Ok(()) => Ok(process),
        Err(e) => {
            let log = fs::read_to_string(dir.join("nginx-error.log")).unwrap_or_default();
            Err(match e {
                StartError::PortTaken(detail) => StartError::PortTaken(detail),
                _ if log.contains("Address already in use") => StartError::PortTaken(log),
                StartError::Failed(detail) => {
                    StartError::Failed(format!("{detail}\n--- nginx error log ---\n{log}"))
                }
            })
        }
    }
}

/// A string no other server would answer the readiness probe with.
fn unique_token(port: u16) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "gitopsd-harness-{}-{port}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

struct NginxSite<'a> {
    dir: &'a Path,
    port: u16,
    socket: &'a Path,
    backend: &'a Path,
    repos: &'a Path,
    ready_token: &'a str,
    htpasswd: Option<&'a Path>,
    bearer_token: Option<&'a str>,
    tls: Option<(&'a TlsFiles, u16)>,
}

/// The whole nginx configuration: every path nginx would otherwise take from its built-in
/// defaults (pid, logs, temp dirs) points into the server's temp dir.
fn nginx_conf(site: &NginxSite<'_>) -> String {
    let dir = site.dir.display();
    // SAFETY: geteuid has no preconditions.
    let as_root = unsafe { libc::geteuid() } == 0;
    let mut conf = String::new();
    let _ = writeln!(conf, "daemon off;");
    let _ = writeln!(conf, "master_process on;");
    let _ = writeln!(conf, "worker_processes 1;");
    if as_root {
        let _ = writeln!(conf, "user root;");
    }
    let _ = writeln!(conf, "pid {dir}/nginx.pid;");
    let _ = writeln!(conf, "error_log {dir}/nginx-error.log info;");
    let _ = writeln!(conf, "events {{ worker_connections 256; }}");
    let _ = writeln!(conf, "http {{");
    let _ = writeln!(conf, "    access_log {dir}/nginx-access.log;");
    for (directive, sub) in [
        ("client_body_temp_path", "body"),
        ("fastcgi_temp_path", "fastcgi"),
        ("proxy_temp_path", "proxy"),
        ("scgi_temp_path", "scgi"),
        ("uwsgi_temp_path", "uwsgi"),
    ] {
        let _ = writeln!(conf, "    {directive} {dir}/nginx-tmp/{sub};");
    }
    // Pushes and large negotiations: no body size limit.
    let _ = writeln!(conf, "    client_max_body_size 0;");
    let _ = writeln!(conf, "    server {{");
    let _ = writeln!(conf, "        listen 127.0.0.1:{};", site.port);
    if let Some((tls, tls_port)) = site.tls {
        let _ = writeln!(conf, "        listen 127.0.0.1:{tls_port} ssl;");
        let _ = writeln!(conf, "        ssl_certificate {};", tls.cert.display());
        let _ = writeln!(conf, "        ssl_certificate_key {};", tls.key.display());
        let _ = writeln!(
            conf,
            "        ssl_client_certificate {};",
            tls.client_ca.display()
        );
        let _ = writeln!(conf, "        ssl_verify_client optional;");
        let _ = writeln!(conf, "        location ~ ^/mtls/git(/.*)$ {{");
        let _ = writeln!(
            conf,
            "            if ($ssl_client_verify != SUCCESS) {{ return 403; }}"
        );
        write_backend(&mut conf, site);
        let _ = writeln!(conf, "        }}");
    }
    if let Some(token) = site.bearer_token {
        let _ = writeln!(conf, "        location ~ ^/bearer/git(/.*)$ {{");
        let _ = writeln!(
            conf,
            "            if ($http_authorization != \"Bearer {token}\") {{ return 401; }}"
        );
        write_backend(&mut conf, site);
        let _ = writeln!(conf, "        }}");
    }
    let _ = writeln!(conf, "        server_name 127.0.0.1;");
    let _ = writeln!(
        conf,
        "        location = {READY_PATH} {{ default_type text/plain; return 200 \"{}\"; }}",
        site.ready_token
    );
    let _ = writeln!(conf, "        location ~ ^/git(/.*)$ {{");
    write_backend(&mut conf, site);
    let _ = writeln!(conf, "        }}");
    let _ = writeln!(conf, "        location ~ ^/v0/git(/.*)$ {{");
    write_backend_speaking(&mut conf, site, false);
    let _ = writeln!(conf, "        }}");
    if let Some(htpasswd) = site.htpasswd {
        let _ = writeln!(conf, "        location ~ ^/auth/git(/.*)$ {{");
        let _ = writeln!(conf, "            auth_basic \"gitopsd test\";");
        let _ = writeln!(
            conf,
            "            auth_basic_user_file {};",
            htpasswd.display()
        );
        write_backend(&mut conf, site);
        let _ = writeln!(conf, "        }}");
    }
    let _ = writeln!(conf, "    }}");
    let _ = writeln!(conf, "}}");
    conf
}

/// The FastCGI parameters `git http-backend` needs; `$1` is the repository path captured by
/// the enclosing location.
fn write_backend(conf: &mut String, site: &NginxSite<'_>) {
    write_backend_speaking(conf, site, true);
}

/// [`write_backend`], with the client's `Git-Protocol` header passed on or not: without it
/// the backend speaks protocol v0 only, as old servers do.
fn write_backend_speaking(conf: &mut String, site: &NginxSite<'_>, v2: bool) {
    let _ = writeln!(
        conf,
        "            fastcgi_pass unix:{};",
        site.socket.display()
    );
    let params = [
        ("SCRIPT_FILENAME", site.backend.display().to_string()),
        ("GIT_PROJECT_ROOT", site.repos.display().to_string()),
        ("GIT_HTTP_EXPORT_ALL", "1".to_string()),
        ("GIT_CONFIG_NOSYSTEM", "1".to_string()),
        ("GIT_CONFIG_GLOBAL", "/dev/null".to_string()),
        ("HOME", site.dir.display().to_string()),
        ("PATH", "/usr/local/bin:/usr/bin:/bin".to_string()),
        ("PATH_INFO", "$1".to_string()),
        ("QUERY_STRING", "$query_string".to_string()),
        ("REQUEST_METHOD", "$request_method".to_string()),
        ("CONTENT_TYPE", "$content_type".to_string()),
        ("CONTENT_LENGTH", "$content_length".to_string()),
        ("REMOTE_ADDR", "$remote_addr".to_string()),
        ("SERVER_PROTOCOL", "$server_protocol".to_string()),
        ("REMOTE_USER", "$remote_user if_not_empty".to_string()),
    ];
    // The client's Git-Protocol header: without it the backend speaks protocol v0. nginx
    // also hands every request header to FastCGI as `HTTP_*`, and git http-backend reads
    // `HTTP_GIT_PROTOCOL` too, so a v0-only backend gets no request headers at all.
    if v2 {
        let _ = writeln!(
            conf,
            "            fastcgi_param GIT_PROTOCOL $http_git_protocol if_not_empty;"
        );
    } else {
        let _ = writeln!(conf, "            fastcgi_pass_request_headers off;");
    }
    for (name, value) in params {
        let _ = writeln!(conf, "            fastcgi_param {name} {value};");
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for URL userinfo.
fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}
