//! Every git auth mode against real servers, on both implementations (`gix` and `git2`):
//! nginx + git http-backend with basic auth, a bearer token and TLS (a CA made by the harness),
//! and OpenSSH's sshd. Negative cases check that the error is one sentence naming the source
//! URL, and that no secret appears in it; both implementations must word it the same way.
//! Mutual TLS runs on gix only: libgit2 cannot present a client certificate, and git2 refuses
//! such a source (tested below).

use crate::support::{
    fingerprint, implementation, keygen, HttpGitServer, Repo, SshServer, TestPki, TlsFiles,
};
use gitopsd::config::{GitImplementation, GitReference};
use gitopsd::source::git::auth::{GitAuthSettings, SecretBytes, SecretSource, SourceAuth};
use gitopsd::source::git::GitSource;
use gitopsd::source::{FetchOutcome, Source};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const USER: &str = "alice";
const PASSWORD: &str = "s3cret-Pa55word";
const TOKEN: &str = "tok-1234567890abcdef";

on_both!(
    https_basic_auth_fetches_and_a_wrong_password_fails_cleanly,
    https_key_file_is_read_again_at_each_sync,
    bearer_token_is_sent_and_a_wrong_one_fails_cleanly,
    local_auth_ref_directory_holds_flux_keys,
    https_with_a_custom_ca_and_its_failures,
    ssh_keys_of_every_type_and_format,
    encrypted_ssh_key_with_its_passphrase,
    ssh_key_the_server_does_not_know_is_refused,
    unknown_and_changed_host_keys_name_the_offered_fingerprint,
    hashed_known_hosts_entries_match,
    missing_and_corrupt_ssh_keys,
    generated_key_is_created_once_kept_and_accepted_once_authorized,
    daemon_generated_key_show_key_status_and_no_secret_in_logs,
    depth_one_over_protocol_v0,
);

fn repo() -> Repo {
    let repo = Repo::new();
    repo.write("deploy/app.yaml", "kind: ConfigMap\n");
    repo.commit("c1");
    repo.push_all();
    repo
}

struct Fetcher {
    state: tempfile::TempDir,
    source: GitSource,
}

impl Fetcher {
    fn new(url: &str, settings: GitAuthSettings) -> Fetcher {
        let state = tempfile::tempdir().unwrap();
        let source = GitSource {
            id: "test/auth".into(),
            url: url.into(),
            reference: GitReference::RemoteHead,
            implementation: implementation(),
            cache_dir: state.path().join("git/test/auth.git"),
            auth: SourceAuth {
                settings,
                generated_key: None,
            },
        };
        Fetcher { state, source }
    }

    /// The same, on an explicitly chosen implementation.
    fn on(implementation: GitImplementation, url: &str, settings: GitAuthSettings) -> Fetcher {
        let mut fetcher = Fetcher::new(url, settings);
        fetcher.source.implementation = implementation;
        fetcher
    }

    fn with_generated_key(mut self, path: PathBuf) -> Fetcher {
        self.source.auth.generated_key = Some(path);
        self
    }

    fn fetch(&self) -> Result<String, String> {
        static N: AtomicU64 = AtomicU64::new(0);
        let scratch = self
            .state
            .path()
            .join(format!("snap-{}", N.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir_all(&scratch).unwrap();
        match self.source.fetch(None, scratch, &AtomicBool::new(false)) {
            Ok(FetchOutcome::Fetched { revision, snapshot }) => {
                let (_guard, dir) = crate::support::unpack(&snapshot, &revision);
                let content = fs::read_to_string(dir.join("deploy/app.yaml")).unwrap();
                assert_eq!(content, "kind: ConfigMap\n");
                Ok(revision.to_string())
            }
            Ok(FetchOutcome::Unchanged) => panic!("nothing fetched"),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Fetch, expecting a failure; checks the wording rules and returns the message.
    fn fails(&self, secrets: &[&str]) -> String {
        let err = self.fetch().expect_err("fetch should fail");
        eprintln!("expected failure: {err}");
        assert!(
            err.contains(&redacted(&self.source.url)),
            "error does not name the URL: {err}"
        );
        for secret in secrets {
            assert!(!err.contains(secret), "secret in error: {err}");
        }
        assert!(!err.contains('\n'), "not one line: {err}");
        // No private file is left behind in the state dir.
        let leftovers: Vec<_> = fs::read_dir(self.state.path().join("git/test"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(
            leftovers
                .iter()
                .all(|n| !n.to_string_lossy().starts_with(".gitopsd-auth")),
            "{leftovers:?}"
        );
        err
    }
}

/// Every file below `dir`.
fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn redacted(url: &str) -> String {
    gitopsd::source::git::refs::redact_url(url)
}

fn inline(text: &str) -> Option<SecretSource> {
    Some(SecretSource::Inline(SecretBytes::new(
        text.as_bytes().to_vec(),
    )))
}

fn file(path: &Path) -> Option<SecretSource> {
    Some(SecretSource::File(path.to_path_buf()))
}

// ---------------------------------------------------------------- HTTP(S)

fn http_server(pki: Option<&TestPki>) -> HttpGitServer {
    let mut builder = HttpGitServer::builder()
        .basic_auth(USER, PASSWORD)
        .bearer_token(TOKEN);
    if let Some(pki) = pki {
        builder = builder.tls(TlsFiles {
            cert: pki.server_cert(),
            key: pki.server_key(),
            client_ca: pki.ca_cert(),
        });
    }
    builder.start()
}

fn basic(password: &str) -> GitAuthSettings {
    GitAuthSettings {
        https_user: Some(USER.into()),
        https_key: inline(password),
        ..Default::default()
    }
}

fn https_basic_auth_fetches_and_a_wrong_password_fails_cleanly() {
    let repo = repo();
    let server = http_server(None);
    server.serve(repo.bare());
    let url = server.auth_url(repo.bare().name());
    let revision = Fetcher::new(&url, basic(PASSWORD)).fetch().unwrap();
    assert!(revision.starts_with("main@sha1:"), "{revision}");

    let err = Fetcher::new(&url, basic("wrong-password")).fails(&["wrong-password", PASSWORD]);
    assert_refused(&err);

    let err = Fetcher::new(&url, GitAuthSettings::default()).fails(&[]);
    assert_refused(&err);
}

/// The server refused the credentials (HTTP 401).
fn assert_refused(err: &str) {
    assert!(
        err.contains("401") || err.contains("authentication"),
        "{err}"
    );
}

fn https_key_file_is_read_again_at_each_sync() {
    let repo = repo();
    let server = http_server(None);
    server.serve(repo.bare());
    let url = server.auth_url(repo.bare().name());
    let secrets = tempfile::tempdir().unwrap();
    let key_file = secrets.path().join("token");
    fs::write(&key_file, "old-token\n").unwrap();
    let settings = GitAuthSettings {
        https_user: Some(USER.into()),
        https_key: file(&key_file),
        ..Default::default()
    };
    let fetcher = Fetcher::new(&url, settings);
    fetcher.fails(&["old-token"]);
    fs::write(&key_file, format!("{PASSWORD}\n")).unwrap();
    fetcher.fetch().unwrap();
}

fn bearer_token_is_sent_and_a_wrong_one_fails_cleanly() {
    let repo = repo();
    let server = http_server(None);
    server.serve(repo.bare());
    let url = server.bearer_url(repo.bare().name());
    let ok = GitAuthSettings {
        bearer_token: inline(TOKEN),
        ..Default::default()
    };
    Fetcher::new(&url, ok.clone()).fetch().unwrap();
    if implementation() == GitImplementation::Git2 {
        // git2 lists refs with a bearer token through a download that must transfer nothing.
        let cache = tempfile::tempdir().unwrap();
        let repo = gitopsd::source::git::libgit2::open(cache.path()).unwrap();
        let credentials = SourceAuth {
            settings: ok,
            generated_key: None,
        }
        .resolve(&url)
        .unwrap();
        let backend = gitopsd::source::git::libgit2::Backend::new(repo, credentials);
        use gitopsd::source::git::Backend as _;
        let refs = backend
            .list_refs(
                &url,
                &GitReference::Branch("main".into()),
                &std::sync::atomic::AtomicBool::new(false),
            )
            .unwrap();
        assert_eq!(refs.len(), 1, "{refs:?}");
        let objects: Vec<_> = walkdir(&cache.path().join("objects"))
            .into_iter()
            .filter(|p| !p.ends_with("info") && !p.ends_with("pack"))
            .collect();
        assert!(objects.is_empty(), "listing downloaded {objects:?}");
    }
    let wrong = GitAuthSettings {
        bearer_token: inline("tok-wrong"),
        ..Default::default()
    };
    let err = Fetcher::new(&url, wrong).fails(&["tok-wrong", TOKEN]);
    assert_refused(&err);
}

fn local_auth_ref_directory_holds_flux_keys() {
    let repo = repo();
    let server = http_server(None);
    server.serve(repo.bare());
    let secret = tempfile::tempdir().unwrap();
    fs::write(secret.path().join("username"), USER).unwrap();
    fs::write(secret.path().join("password"), PASSWORD).unwrap();
    fs::write(secret.path().join("bearerToken"), TOKEN).unwrap();
    let basic_only = tempfile::tempdir().unwrap();
    fs::write(basic_only.path().join("username"), USER).unwrap();
    fs::write(basic_only.path().join("password"), PASSWORD).unwrap();
    let settings = GitAuthSettings {
        local_auth_ref: Some(basic_only.path().to_path_buf()),
        ..Default::default()
    };
    Fetcher::new(&server.auth_url(repo.bare().name()), settings)
        .fetch()
        .unwrap();
    let token_only = tempfile::tempdir().unwrap();
    fs::write(token_only.path().join("bearerToken"), format!("{TOKEN}\n")).unwrap();
    let settings = GitAuthSettings {
        local_auth_ref: Some(token_only.path().to_path_buf()),
        ..Default::default()
    };
    Fetcher::new(&server.bearer_url(repo.bare().name()), settings)
        .fetch()
        .unwrap();
    // Both at once is ambiguous.
    let settings = GitAuthSettings {
        local_auth_ref: Some(secret.path().to_path_buf()),
        ..Default::default()
    };
    let err =
        Fetcher::new(&server.auth_url(repo.bare().name()), settings).fails(&[PASSWORD, TOKEN]);
    assert!(
        err.contains("both a bearer token and a user/password"),
        "{err}"
    );
}

fn https_with_a_custom_ca_and_its_failures() {
    let pki = TestPki::new();
    let repo = repo();
    let server = http_server(Some(&pki));
    server.serve(repo.bare());
    let name = repo.bare().name();
    let ca_pem = fs::read_to_string(pki.ca_cert()).unwrap();

    // Inline CA, open location; CA file with basic auth; CA + bearer.
    let settings = GitAuthSettings {
        ca_cert: inline(&ca_pem),
        ..Default::default()
    };
    Fetcher::new(&server.https_url("", name), settings)
        .fetch()
        .unwrap();
    let settings = GitAuthSettings {
        ca_cert: file(&pki.ca_cert()),
        ..basic(PASSWORD)
    };
    Fetcher::new(&server.https_url("auth", name), settings)
        .fetch()
        .unwrap();
    let settings = GitAuthSettings {
        ca_cert: file(&pki.ca_cert()),
        bearer_token: inline(TOKEN),
        ..Default::default()
    };
    Fetcher::new(&server.https_url("bearer", name), settings)
        .fetch()
        .unwrap();

    // The wrong CA, and no CA at all (the system's store does not know the test CA).
    let settings = GitAuthSettings {
        ca_cert: file(&pki.other_ca_cert()),
        ..basic(PASSWORD)
    };
    let err = Fetcher::new(&server.https_url("auth", name), settings).fails(&[PASSWORD]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let err = Fetcher::new(&server.https_url("", name), GitAuthSettings::default()).fails(&[]);
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}

#[test]
fn mutual_tls_presents_the_client_certificate() {
    let pki = TestPki::new();
    let repo = repo();
    let server = http_server(Some(&pki));
    server.serve(repo.bare());
    let url = server.https_url("mtls", repo.bare().name());
    let with_cert = GitAuthSettings {
        ca_cert: file(&pki.ca_cert()),
        tls_client_cert_file: Some(pki.client_cert()),
        tls_client_key_file: Some(pki.client_key()),
        ..Default::default()
    };
    let fetcher = Fetcher::new(&url, with_cert.clone());
    fetcher.fetch().unwrap();
    // The same through localAuthRef's tls.crt / tls.key / ca.crt.
    let secret = tempfile::tempdir().unwrap();
    fs::copy(pki.client_cert(), secret.path().join("tls.crt")).unwrap();
    fs::copy(pki.client_key(), secret.path().join("tls.key")).unwrap();
    fs::copy(pki.ca_cert(), secret.path().join("ca.crt")).unwrap();
    let settings = GitAuthSettings {
        local_auth_ref: Some(secret.path().to_path_buf()),
        ..Default::default()
    };
    Fetcher::new(&url, settings).fetch().unwrap();
    // Open and basic-auth locations work over the same client too.
    Fetcher::new(&server.https_url("", repo.bare().name()), with_cert.clone())
        .fetch()
        .unwrap();
    let settings = GitAuthSettings {
        https_user: Some(USER.into()),
        https_key: inline(PASSWORD),
        ..with_cert.clone()
    };
    Fetcher::new(&server.https_url("auth", repo.bare().name()), settings)
        .fetch()
        .unwrap();
    let settings = GitAuthSettings {
        https_user: Some(USER.into()),
        https_key: inline("bad-password-123"),
        ..with_cert.clone()
    };
    let err = Fetcher::new(&server.https_url("auth", repo.bare().name()), settings)
        .fails(&["bad-password-123", PASSWORD]);
    assert_refused(&err);

    // Without a client certificate the server refuses.
    let settings = GitAuthSettings {
        ca_cert: file(&pki.ca_cert()),
        ..Default::default()
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(err.contains("403") || err.contains("denied"), "{err}");
    // A wrong CA for the server.
    let settings = GitAuthSettings {
        ca_cert: file(&pki.other_ca_cert()),
        ..with_cert.clone()
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(err.contains("certificate"), "{err}");
    // A key that does not belong to the certificate.
    let settings = GitAuthSettings {
        tls_client_key_file: Some(pki.server_key()),
        ..with_cert
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(err.contains("does not belong"), "{err}");
}

/// The same failure, worded the same by both implementations.
fn same_failure(url: &str, settings: GitAuthSettings, secrets: &[&str]) -> String {
    let gix = Fetcher::on(GitImplementation::Gix, url, settings.clone()).fails(secrets);
    let git2 = Fetcher::on(GitImplementation::Git2, url, settings).fails(secrets);
    assert_eq!(gix, git2, "gix and git2 word the failure differently");
    gix
}

#[test]
fn both_implementations_word_http_failures_the_same() {
    let pki = TestPki::new();
    let repo = repo();
    let plain = http_server(None);
    plain.serve(repo.bare());
    let tls = http_server(Some(&pki));
    tls.serve(repo.bare());
    let name = repo.bare().name();
    same_failure(
        &plain.auth_url(name),
        basic("wrong-password"),
        &["wrong-password"],
    );
    same_failure(&plain.auth_url(name), GitAuthSettings::default(), &[]);
    let wrong_token = GitAuthSettings {
        bearer_token: inline("tok-wrong"),
        ..Default::default()
    };
    same_failure(&plain.bearer_url(name), wrong_token, &["tok-wrong"]);
    let wrong_ca = GitAuthSettings {
        ca_cert: file(&pki.other_ca_cert()),
        ..basic(PASSWORD)
    };
    same_failure(&tls.https_url("auth", name), wrong_ca, &[PASSWORD]);
    same_failure(&tls.https_url("", name), GitAuthSettings::default(), &[]);
}

#[test]
fn both_implementations_word_ssh_failures_the_same() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    let passphrase = "correct horse battery";
    let encrypted = keys.make("enc", "ed25519", &["-N", passphrase]);
    server.authorize(&keys.public(&encrypted));
    let stranger = keys.make("stranger", "ed25519", &[]);
    same_failure(&url, ssh_settings(&server, &stranger), &[]);
    same_failure(&url, ssh_settings(&server, &encrypted), &[passphrase]);
    let wrong = GitAuthSettings {
        ssh_passphrase: inline("not the passphrase"),
        ..ssh_settings(&server, &encrypted)
    };
    same_failure(&url, wrong, &["not the passphrase", passphrase]);
    let unknown_host = GitAuthSettings {
        ssh_private_key: file(&stranger),
        ..Default::default()
    };
    let err = same_failure(&url, unknown_host, &[]);
    assert!(err.contains(&server.host_key_fingerprint()), "{err}");
    // Logged in, but there is no repository at that path.
    let good = keys.make("good", "ed25519", &[]);
    server.authorize(&keys.public(&good));
    let missing = url.replace(".git", "-missing.git");
    let err = same_failure(&missing, ssh_settings(&server, &good), &[]);
    assert!(
        err.ends_with(": not a git repository (ref: the default branch (HEAD))"),
        "{err}"
    );
}

/// libgit2 cannot present a client certificate: git2 refuses such a source in one sentence
/// rather than connecting without it.
#[test]
fn git2_refuses_a_client_certificate() {
    crate::support::IMPLEMENTATION.with(|i| i.set(GitImplementation::Git2));
    let pki = TestPki::new();
    let repo = repo();
    let server = http_server(Some(&pki));
    server.serve(repo.bare());
    let url = server.https_url("mtls", repo.bare().name());
    let settings = GitAuthSettings {
        ca_cert: file(&pki.ca_cert()),
        tls_client_cert_file: Some(pki.client_cert()),
        tls_client_key_file: Some(pki.client_key()),
        ..Default::default()
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(
        err.contains("libgit2 cannot present client certificates"),
        "{err}"
    );
}

// ---------------------------------------------------------------- SSH

struct Keys {
    dir: tempfile::TempDir,
}

impl Keys {
    fn new() -> Keys {
        Keys {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A new key pair `<name>` made with `ssh-keygen -t kind extra...`; returns the private
    /// key's path.
    fn make(&self, name: &str, kind: &str, extra: &[&str]) -> PathBuf {
        let path = self.dir.path().join(name);
        keygen(&path, kind, extra);
        path
    }

    fn public(&self, private: &Path) -> String {
        fs::read_to_string(format!("{}.pub", private.display())).unwrap()
    }
}

fn ssh_settings(server: &SshServer, key: &Path) -> GitAuthSettings {
    GitAuthSettings {
        ssh_private_key: file(key),
        known_hosts: inline(&format!("{}\n", server.known_hosts_line())),
        ..Default::default()
    }
}

fn ssh_keys_of_every_type_and_format() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    for (name, kind, extra) in [
        ("ed25519", "ed25519", &[][..]),
        ("ecdsa", "ecdsa", &[][..]),
        ("ecdsa-pem", "ecdsa", &["-m", "PEM"][..]),
        ("rsa", "rsa", &["-b", "3072"][..]),
        ("rsa-pem", "rsa", &["-b", "2048", "-m", "PEM"][..]),
        ("rsa-pkcs8", "rsa", &["-b", "2048", "-m", "PKCS8"][..]),
        ("ecdsa-pkcs8", "ecdsa", &["-m", "PKCS8"][..]),
    ] {
        let key = keys.make(name, kind, extra);
        server.authorize(&keys.public(&key));
        let result = Fetcher::new(&url, ssh_settings(&server, &key)).fetch();
        assert!(
            result.is_ok(),
            "{name}: {result:?}\n--- sshd ---\n{}",
            server.log()
        );
    }
    // The key given inline (the config holds it base64; the model holds it decoded).
    let key = keys.make("inline", "ed25519", &[]);
    server.authorize(&keys.public(&key));
    let settings = GitAuthSettings {
        ssh_private_key: inline(&fs::read_to_string(&key).unwrap()),
        ..ssh_settings(&server, &key)
    };
    Fetcher::new(&url, settings).fetch().unwrap();
}

fn encrypted_ssh_key_with_its_passphrase() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    let passphrase = "correct horse battery";
    let key = keys.make("enc", "ed25519", &["-N", passphrase]);
    server.authorize(&keys.public(&key));
    let pem_key = keys.make(
        "enc-pem",
        "rsa",
        &["-b", "2048", "-m", "PEM", "-N", passphrase],
    );
    server.authorize(&keys.public(&pem_key));

    for key in [&key, &pem_key] {
        let settings = GitAuthSettings {
            ssh_passphrase: inline(passphrase),
            ..ssh_settings(&server, key)
        };
        Fetcher::new(&url, settings).fetch().unwrap();
    }

    let settings = GitAuthSettings {
        ssh_passphrase: inline("not the passphrase"),
        ..ssh_settings(&server, &key)
    };
    let err = Fetcher::new(&url, settings).fails(&["not the passphrase", passphrase]);
    assert!(err.contains("passphrase"), "{err}");

    let err = Fetcher::new(&url, ssh_settings(&server, &key)).fails(&[passphrase]);
    assert!(err.contains("passphrase"), "{err}");
}

fn ssh_key_the_server_does_not_know_is_refused() {
    let repo = repo();
    let server = SshServer::start();
    let keys = Keys::new();
    let key = keys.make("stranger", "ed25519", &[]);
    let err = Fetcher::new(&server.url(repo.bare()), ssh_settings(&server, &key)).fails(&[]);
    assert!(err.contains("refused the SSH key"), "{err}");
}

fn unknown_and_changed_host_keys_name_the_offered_fingerprint() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    let key = keys.make("id", "ed25519", &[]);
    server.authorize(&keys.public(&key));
    let offered = server.host_key_fingerprint();
    let host = format!("[127.0.0.1]:{}", server.port());

    // No known hosts given: only the built-in list (github.com, ...) is trusted.
    let settings = GitAuthSettings {
        ssh_private_key: file(&key),
        ..Default::default()
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(err.contains("not in the known hosts"), "{err}");
    assert!(err.contains(&host), "{err}");
    assert!(err.contains(&offered), "{err}");

    // known_hosts has another key for the same host and port.
    let impostor = keys.make("impostor-host", "ed25519", &[]);
    let impostor_line = format!(
        "{host} {}",
        keys.public(&impostor)
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let settings = GitAuthSettings {
        ssh_private_key: file(&key),
        known_hosts: inline(&impostor_line),
        ..Default::default()
    };
    let err = Fetcher::new(&url, settings).fails(&[]);
    assert!(err.contains("has changed"), "{err}");
    assert!(err.contains(&host), "{err}");
    assert!(err.contains(&offered), "{err}");
    assert_ne!(
        offered,
        fingerprint(&PathBuf::from(format!("{}.pub", impostor.display())))
    );
}

/// known_hosts as `ssh-keygen -H` writes it: hashed host names still match.
fn hashed_known_hosts_entries_match() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    let key = keys.make("id", "ed25519", &[]);
    server.authorize(&keys.public(&key));
    let known = keys.dir.path().join("known_hosts");
    fs::write(&known, server.known_hosts_line() + "\n").unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = fs::read_to_string(&known).unwrap();
    assert!(hashed.starts_with("|1|"), "{hashed}");
    let settings = GitAuthSettings {
        ssh_private_key: file(&key),
        known_hosts: file(&known),
        ..Default::default()
    };
    Fetcher::new(&url, settings).fetch().unwrap();
}

/// A stock sshd drops `GIT_PROTOCOL`, and an old HTTP server ignores `Git-Protocol`, so the
/// fetch speaks protocol v0: it must still fetch the tip commit alone, not the history.
fn depth_one_over_protocol_v0() {
    let repo = repo();
    for n in 2..=4 {
        repo.write("deploy/history.txt", format!("commit {n}\n"));
        repo.commit(&format!("c{n}"));
    }
    repo.push_all();
    let server = SshServer::start_v0_only();
    let keys = Keys::new();
    let key = keys.make("id", "ed25519", &[]);
    server.authorize(&keys.public(&key));
    let http = HttpGitServer::start();
    http.serve(repo.bare());
    for (url, settings) in [
        (server.url(repo.bare()), ssh_settings(&server, &key)),
        (http.v0_url(repo.bare().name()), GitAuthSettings::default()),
    ] {
        let fetcher = Fetcher::new(&url, settings);
        fetcher.fetch().unwrap();
        let cache = &fetcher.source.cache_dir;
        assert!(
            cache.join("shallow").is_file(),
            "{url}: the cache is not shallow"
        );
        let count = crate::support::git(cache, ["rev-list", "--count", "--all"]);
        assert_eq!(
            count.trim(),
            "1",
            "{url}: more than the tip commit was fetched"
        );
    }
}

fn missing_and_corrupt_ssh_keys() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let keys = Keys::new();
    let missing = keys.dir.path().join("no-such-key");
    let err = Fetcher::new(&url, ssh_settings(&server, &missing)).fails(&[]);
    assert!(err.contains("cannot read sshPrivateKeyFile"), "{err}");

    // Unreadable: a directory where the file should be (root reads any file whatever its
    // mode), and a 0000 file when the tests do not run as root.
    let unreadable = keys.dir.path().join("a-directory");
    fs::create_dir(&unreadable).unwrap();
    let err = Fetcher::new(&url, ssh_settings(&server, &unreadable)).fails(&[]);
    assert!(err.contains("cannot read sshPrivateKeyFile"), "{err}");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        use std::os::unix::fs::PermissionsExt;
        let locked = keys.make("locked", "ed25519", &[]);
        fs::set_permissions(&locked, fs::Permissions::from_mode(0o000)).unwrap();
        let err = Fetcher::new(&url, ssh_settings(&server, &locked)).fails(&[]);
        assert!(err.contains("cannot read sshPrivateKeyFile"), "{err}");
    }

    let key = keys.make("good", "ed25519", &[]);
    server.authorize(&keys.public(&key));
    let text = fs::read_to_string(&key).unwrap();
    // Damage the body, keep the armour.
    let lines: Vec<&str> = text.lines().collect();
    let mut damaged: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    damaged[2] = "AAAA".repeat(damaged[2].len() / 4);
    let corrupt = keys.dir.path().join("corrupt");
    fs::write(&corrupt, damaged.join("\n") + "\n").unwrap();
    let err = Fetcher::new(&url, ssh_settings(&server, &corrupt)).fails(&[]);
    assert!(
        err.contains("could not be loaded") || err.contains("corrupt"),
        "{err}"
    );

    let not_a_key = keys.dir.path().join("not-a-key");
    fs::write(&not_a_key, "hello\n").unwrap();
    let err = Fetcher::new(&url, ssh_settings(&server, &not_a_key)).fails(&[]);
    assert!(err.contains("not a PEM or OpenSSH private key"), "{err}");
}

fn generated_key_is_created_once_kept_and_accepted_once_authorized() {
    let repo = repo();
    let server = SshServer::start();
    let url = server.url(repo.bare());
    let state = tempfile::tempdir().unwrap();
    let key_path = state.path().join("keys/test/auth");
    let settings = GitAuthSettings {
        known_hosts: inline(&server.known_hosts_line()),
        ..Default::default()
    };
    let fetcher = Fetcher::new(&url, settings.clone()).with_generated_key(key_path.clone());
    let err = fetcher.fails(&[]);
    assert!(err.contains("refused the SSH key"), "{err}");
    let public = gitopsd::source::git::auth::generated_public_key(&key_path).unwrap();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let private = fs::read(&key_path).unwrap();

    server.authorize(&public);
    fetcher.fetch().unwrap();
    // A new source object (as after a restart) uses the same key.
    let again = Fetcher::new(&url, settings).with_generated_key(key_path.clone());
    again.fetch().unwrap();
    assert_eq!(fs::read(&key_path).unwrap(), private);
    assert_eq!(
        gitopsd::source::git::auth::generated_public_key(&key_path).unwrap(),
        public
    );
}

// ---------------------------------------------------------------- the daemon

fn http_text(url: &str) -> Option<String> {
    let mut response = ureq::get(url).call().ok()?;
    response.body_mut().read_to_string().ok()
}

fn wait_for<T>(what: &str, log: &Path, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = check() {
            return found;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {what}\n--- gitopsd log ---\n{}",
                fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The generated key end to end: `show-key` creates and prints it, the daemon uses it and
/// shows it as `repositoryPublicKey`, sshd accepts it once authorized, and it survives a
/// restart. Alongside, an HTTP source with a wrong password and one with a bearer token:
/// neither secret may appear in the log or the status.
fn daemon_generated_key_show_key_status_and_no_secret_in_logs() {
    use std::process::{Command, Stdio};
    let imp = match implementation() {
        GitImplementation::Git2 => "git2",
        _ => "gix",
    };
    let repo = repo();
    let sshd = SshServer::start();
    let http = http_server(None);
    http.serve(repo.bare());
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    fs::write(
        dir.path().join("known_hosts"),
        sshd.known_hosts_line() + "\n",
    )
    .unwrap();
    fs::write(dir.path().join("wrong-password"), "wrong-Pa55word-xyz\n").unwrap();
    let config = dir.path().join("gitopsd.yaml");
    fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n\
             \x20 - name: fleet\n\
             \x20   source: {{ kind: git, url: \"{}\", knownHostsFile: ./known_hosts, gitImplementation: {imp}, interval: 1h }}\n\
             \x20 - name: basic\n\
             \x20   source: {{ kind: git, url: \"{}\", httpsUser: {USER}, httpsKeyFile: ./wrong-password, gitImplementation: {imp}, interval: 1h }}\n\
             \x20 - name: token\n\
             \x20   source: {{ kind: git, url: \"{}\", bearerToken: {TOKEN}, gitImplementation: {imp}, interval: 1h }}\n",
            sshd.url(repo.bare()),
            http.auth_url(repo.bare().name()),
            http.bearer_url(repo.bare().name()),
        ),
    )
    .unwrap();
    let show_key = || {
        let out = Command::new(crate::support::gitopsd_bin())
            .args(["show-key", "fleet", "--config"])
            .arg(&config)
            .env_remove("GITOPSD_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let public = show_key();
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert_eq!(show_key(), public);
    let key_file = dir.path().join("state/keys/default/fleet");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private = fs::read(&key_file).unwrap();

    let log = dir.path().join("gitopsd.log");
    let start = || {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        KillOnDrop(
            Command::new(crate::support::gitopsd_bin())
                .args(["run", "--config"])
                .arg(&config)
                .env("GITOPSD_LOG", "debug")
                .env_remove("GITOPSD_CONFIG")
                .stdin(Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .unwrap(),
        )
    };
    let status_url = format!("http://127.0.0.1:{port}/api/v1/status");
    let source = |status: &serde_json::Value, name: &str| -> Option<serde_json::Value> {
        status["sources"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    };
    let daemon = start();
    let status = wait_for("the first syncs", &log, || {
        let status: serde_json::Value = serde_json::from_str(&http_text(&status_url)?).ok()?;
        let done = ["fleet", "basic", "token"].iter().all(|n| {
            source(&status, n)
                .is_some_and(|s| !s["lastError"].is_null() || !s["artifact"].is_null())
        });
        done.then_some(status)
    });
    let fleet = source(&status, "fleet").unwrap();
    assert_eq!(fleet["repositoryPublicKey"], public.as_str(), "{fleet}");
    assert!(
        fleet["lastError"]
            .as_str()
            .unwrap()
            .contains("refused the SSH key"),
        "{fleet}"
    );
    let basic = source(&status, "basic").unwrap();
    assert!(
        basic["lastError"]
            .as_str()
            .unwrap()
            .contains("authentication failed"),
        "{basic}"
    );
    assert!(basic.get("repositoryPublicKey").is_none(), "{basic}");
    let token = source(&status, "token").unwrap();
    assert!(!token["artifact"].is_null(), "{token}");

    sshd.authorize(&public);
    ureq::post(&format!("http://127.0.0.1:{port}/api/v1/reconcile/fleet"))
        .send_empty()
        .unwrap();
    wait_for(
        "the ssh source to sync with the generated key",
        &log,
        || {
            let status: serde_json::Value = serde_json::from_str(&http_text(&status_url)?).ok()?;
            source(&status, "fleet").filter(|s| !s["artifact"].is_null())
        },
    );
    drop(daemon);

    // After a restart: the same key.
    let daemon = start();
    wait_for("the status after a restart", &log, || {
        let status: serde_json::Value = serde_json::from_str(&http_text(&status_url)?).ok()?;
        source(&status, "fleet").filter(|s| s["repositoryPublicKey"] == public.as_str())
    });
    drop(daemon);
    assert_eq!(fs::read(&key_file).unwrap(), private);

    let everything = format!(
        "{}{}",
        fs::read_to_string(&log).unwrap(),
        fs::read_to_string(dir.path().join("state/state.json")).unwrap()
    );
    for secret in ["wrong-Pa55word-xyz", TOKEN, PASSWORD] {
        assert!(
            !everything.contains(secret),
            "secret {secret} leaked:\n{everything}"
        );
    }
    let private_text = String::from_utf8(private).unwrap();
    let body_line = private_text.lines().nth(1).unwrap();
    assert!(!everything.contains(body_line), "private key leaked");
}
