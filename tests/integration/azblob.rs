//! `azblob` sources against Azurite (the Azure Storage emulator) and a local Entra ID stand-in
//! (tests/support/token_server.rs): every sign-in mode end to end (credential → token →
//! listing → artifact), Flux's revision, no download when unchanged, and one clear sentence
//! without secrets for each failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::AtomicBool;

use crate::support::azurite::{account_sas, block_on, unix_now, Azurite, ACCOUNT_KEY};
use crate::support::token_server::TokenServer;
use crate::support::{free_port, gitopsd_bin};
use crate::support::{openssl, TestPki};
use gitopsd::config::{AzureAuth, AzureBlobSettings, Secret, SecretValue};
use gitopsd::source::azblob::AzureBlobSource;
use gitopsd::source::{objects, FetchOutcome, Snapshot};
use serde_json::Value;
use sha2::{Digest, Sha256};

const TENANT: &str = "72f988bf-0000-4000-8000-2d7cd011db47";
const CLIENT_SECRET: &str = "s3cr3t-Value~with.chars";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    )
}

/// The objects every test container starts with.
const FLEET: &[(&str, &[u8])] = &[
    (
        "apps/web.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  a: b\n",
    ),
    (
        "apps/db/db.yaml",
        b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db\n",
    ),
    ("notes/skip.txt", b"left out by .sourceignore\n"),
    (".sourceignore", b"notes/\n"),
];

/// Flux's revision for what `azurite` lists in `container` (keys ending in `/` and the root
/// `.sourceignore` skipped; `ignored` keys left out; ETags hex-encoded).
fn flux_revision(azurite: &Azurite, container: &str, ignored: &[&str]) -> String {
    let mut lines: Vec<String> = azurite
        .list(container)
        .into_iter()
        .filter(|(key, _)| key != ".sourceignore" && !ignored.iter().any(|i| key.starts_with(i)))
        .map(|(key, etag)| format!("{key} {}\n", hex::encode(etag.as_bytes())))
        .collect();
    lines.sort();
    format!("sha256:{}", hex::encode(Sha256::digest(lines.concat())))
}

fn seeded(azurite: &Azurite, container: &str) {
    azurite.create_container(container);
    azurite.put(container, FLEET);
}

/// Runs `gitopsd run --once -o json` on `source_yaml` (the mapping's body, indented for
/// `source:`), in `dir` (state kept between calls).
fn run_once(dir: &Path, source_yaml: &str) -> (Value, Output) {
    run_once_with_env(dir, source_yaml, &[])
}

fn run_once_with_env(dir: &Path, source_yaml: &str, env: &[(&str, &str)]) -> (Value, Output) {
    let config = dir.join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{}\" }}\nconfigurations:\n  - name: fleet\n    source:\n{source_yaml}",
            free_port()
        ),
    )
    .unwrap();
    let output = Command::new(gitopsd_bin())
        .args(["run", "--once", "-o", "json", "--config"])
        .arg(&config)
        .env("GITOPSD_LOG", "debug")
        .env_remove("IDENTITY_ENDPOINT")
        .env_remove("MSI_ENDPOINT")
        .envs(env.iter().copied())
        .output()
        .expect("run gitopsd");
    let report: Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
    (report, output)
}

/// `run_once` in a fresh dir on the container `fleet` of `azurite`, with `auth` fields.
fn sync_fleet(azurite: &Azurite, auth: &[(&str, &str)]) -> (Value, Output) {
    run_once(
        tempfile::tempdir().unwrap().path(),
        &source_yaml(&azurite.endpoint(), "fleet", auth),
    )
}

fn source_yaml(url: &str, container: &str, extra: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "      kind: azblob\n      url: \"{url}\"\n      containerName: {container}\n      interval: 1m\n      timeout: 1m\n"
    );
    for (key, value) in extra {
        yaml.push_str(&format!("      {key}: {value}\n"));
    }
    yaml
}

/// Files in a `.tar.gz` artifact.
fn artifact_files(path: &Path) -> Vec<String> {
    let output = Command::new("tar")
        .arg("-tzf")
        .arg(path)
        .output()
        .expect("run tar");
    assert!(output.status.success(), "{}", describe(&output));
    let mut files: Vec<String> = text(&output.stdout)
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.trim_start_matches("./").to_string())
        .collect();
    files.sort();
    files
}

/// Asserts a successful sync of the seeded fleet and returns the artifact path.
fn assert_synced(azurite: &Azurite, container: &str, report: &Value, output: &Output) -> PathBuf {
    let source = &report["sources"][0];
    assert_eq!(source["error"], Value::Null, "{}", describe(output));
    assert_eq!(
        source["revision"],
        flux_revision(azurite, container, &["notes/"]).as_str(),
        "{}",
        describe(output)
    );
    let path = PathBuf::from(source["artifact"]["path"].as_str().unwrap());
    assert_eq!(
        artifact_files(&path),
        vec!["apps/db/db.yaml".to_string(), "apps/web.yaml".to_string()]
    );
    path
}

/// Asserts a failed sync whose error names the endpoint and container, contains every
/// `expected` fragment, and whose output (stdout and logs) contains none of `secrets`.
fn assert_failed(report: &Value, output: &Output, expected: &[&str], secrets: &[&str]) -> String {
    let error = report["sources"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error expected\n{}", describe(output)))
        .to_string();
    assert!(error.contains("container "), "{error}");
    for fragment in expected {
        assert!(error.contains(fragment), "{fragment:?} not in: {error}");
    }
    assert!(!error.contains('\n'), "one line: {error}");
    eprintln!("sync error as reported: {error}");
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for secret in secrets {
        assert!(
            !secret.is_empty() && !all.contains(secret),
            "secret leaked:\n{all}"
        );
    }
    error
}

#[test]
fn account_key_lists_ignores_and_packs_with_flux_revision() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    let yaml = source_yaml(
        &azurite.endpoint(),
        "fleet",
        &[("accountKey", &format!("\"{ACCOUNT_KEY}\""))],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    let first = assert_synced(&azurite, "fleet", &report, &output);
    assert!(!text(&output.stderr).contains(ACCOUNT_KEY));

    // A changed object changes the revision.
    azurite.put(
        "fleet",
        &[(
            "apps/web.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web2\n",
        )],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    let second = assert_synced(&azurite, "fleet", &report, &output);
    assert_ne!(first, second);
}

#[test]
fn prefix_limits_the_listing_and_keys_keep_it() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    let yaml = source_yaml(
        &azurite.endpoint(),
        "fleet",
        &[
            ("accountKey", &format!("\"{ACCOUNT_KEY}\"")),
            ("prefix", "apps/db"),
        ],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    let source = &report["sources"][0];
    assert_eq!(source["error"], Value::Null, "{}", describe(&output));
    let path = PathBuf::from(source["artifact"]["path"].as_str().unwrap());
    assert_eq!(artifact_files(&path), vec!["apps/db/db.yaml".to_string()]);
}

fn library_source(azurite: &Azurite, container: &str, auth: AzureAuth) -> AzureBlobSource {
    AzureBlobSource {
        id: "default/fleet".into(),
        endpoint: azurite.endpoint(),
        settings: AzureBlobSettings {
            container: container.into(),
            prefix: None,
            auth,
            authority_host: None,
            msi_endpoint: None,
            ca_file: None,
        },
        ignore: None,
    }
}

#[test]
fn unchanged_revision_downloads_nothing_and_empty_container_is_an_empty_snapshot() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let source = library_source(
        &azurite,
        "fleet",
        AzureAuth::AccountKey(SecretValue::Inline(Secret(ACCOUNT_KEY.into()))),
    );
    let stop = AtomicBool::new(false);
    let scratch = tempfile::tempdir().unwrap();
    let revision = match block_on(objects::fetch(
        &source,
        None,
        scratch.path().join("a"),
        &stop,
    ))
    .unwrap()
    {
        FetchOutcome::Fetched {
            revision,
            snapshot: Snapshot::Dir(dir),
        } => {
            assert!(dir.join("apps/web.yaml").is_file());
            revision
        }
        other => panic!("expected a fetch, got {other:?}"),
    };
    assert_eq!(
        revision.as_str(),
        flux_revision(&azurite, "fleet", &["notes/"])
    );
    let again = scratch.path().join("b");
    match block_on(objects::fetch(
        &source,
        Some(&revision),
        again.clone(),
        &stop,
    ))
    .unwrap()
    {
        FetchOutcome::Unchanged => {}
        other => panic!("expected unchanged, got {other:?}"),
    }
    assert!(!again.exists(), "nothing written for an unchanged revision");

    azurite.create_container("empty");
    let empty = library_source(
        &azurite,
        "empty",
        AzureAuth::AccountKey(SecretValue::Inline(Secret(ACCOUNT_KEY.into()))),
    );
    match block_on(objects::fetch(
        &empty,
        None,
        scratch.path().join("c"),
        &stop,
    ))
    .unwrap()
    {
        FetchOutcome::Fetched {
            revision,
            snapshot: Snapshot::Dir(dir),
        } => {
            assert_eq!(
                revision.as_str(),
                format!("sha256:{}", hex::encode(Sha256::digest(b"")))
            );
            assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
        }
        other => panic!("expected an empty fetch, got {other:?}"),
    }
}

#[test]
fn sas_token_works_and_expired_or_tampered_ones_fail_clearly() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    let good = account_sas("rl", unix_now() + 3600);
    let (report, output) = run_once(
        dir.path(),
        &source_yaml(
            &azurite.endpoint(),
            "fleet",
            &[("sasToken", &format!("\"?{good}\""))],
        ),
    );
    assert_synced(&azurite, "fleet", &report, &output);
    let good_sig = good.rsplit("sig=").next().unwrap().to_string();
    assert!(!text(&output.stderr).contains(&good_sig));

    let expired = account_sas("rl", unix_now() - 3600);
    let expired_sig = expired.rsplit("sig=").next().unwrap().to_string();
    let (report, output) = sync_fleet(&azurite, &[("sasToken", &format!("\"{expired}\""))]);
    assert_failed(
        &report,
        &output,
        &["HTTP 403", "failed to authenticate"],
        &[&expired_sig],
    );

    // Permissions widened after signing: the signature no longer matches.
    let tampered = good.replace("sp=rl", "sp=rwdl");
    let (report, output) = sync_fleet(&azurite, &[("sasToken", &format!("\"{tampered}\""))]);
    assert_failed(
        &report,
        &output,
        &["HTTP 403", "failed to authenticate"],
        &[&good_sig],
    );
}

#[test]
fn wrong_account_key_missing_container_and_unreachable_endpoint_fail_clearly() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    // A well-formed key that is not the account's.
    let wrong_key = openssl::base64::encode_block(&[7u8; 64]);
    let (report, output) = sync_fleet(&azurite, &[("accountKey", &format!("\"{wrong_key}\""))]);
    let error = assert_failed(
        &report,
        &output,
        &["HTTP 403", "failed to authenticate", "account key"],
        &[&wrong_key],
    );
    assert!(error.contains(&azurite.endpoint()), "{error}");

    let (report, output) = run_once(
        tempfile::tempdir().unwrap().path(),
        &source_yaml(
            &azurite.endpoint(),
            "nothere",
            &[("accountKey", &format!("\"{ACCOUNT_KEY}\""))],
        ),
    );
    assert_failed(
        &report,
        &output,
        &["ContainerNotFound", "nothere"],
        &[ACCOUNT_KEY],
    );

    let closed = format!("http://127.0.0.1:{}/devstoreaccount1", free_port());
    let (report, output) = run_once(
        tempfile::tempdir().unwrap().path(),
        &source_yaml(
            &closed,
            "fleet",
            &[("accountKey", &format!("\"{ACCOUNT_KEY}\""))],
        ),
    );
    assert_failed(
        &report,
        &output,
        &["cannot reach the endpoint", &closed],
        &[ACCOUNT_KEY],
    );
}

#[test]
fn local_auth_ref_is_read_again_at_every_sync_and_the_last_good_artifact_stays() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secret");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("accountKey"), format!("{ACCOUNT_KEY}\n")).unwrap();
    let yaml = source_yaml(
        &azurite.endpoint(),
        "fleet",
        &[("localAuthRef", "{ directory: ./secret }")],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    let artifact = assert_synced(&azurite, "fleet", &report, &output);
    let revision = report["sources"][0]["revision"].clone();

    // Rotated to a wrong key: the sync fails, the artifact from before is still current.
    let wrong_key = openssl::base64::encode_block(&[9u8; 64]);
    std::fs::write(secrets.join("accountKey"), &wrong_key).unwrap();
    azurite.put(
        "fleet",
        &[(
            "apps/new.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: n\n",
        )],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    assert_failed(
        &report,
        &output,
        &["HTTP 403", "failed to authenticate"],
        &[&wrong_key],
    );
    assert_eq!(report["sources"][0]["revision"], revision);
    assert_eq!(
        report["sources"][0]["artifact"]["path"].as_str(),
        artifact.to_str()
    );
    assert!(artifact.is_file());

    // A SAS key instead: picked up at the next sync.
    std::fs::remove_file(secrets.join("accountKey")).unwrap();
    std::fs::write(secrets.join("sasKey"), account_sas("rl", unix_now() + 3600)).unwrap();
    let (report, output) = run_once(dir.path(), &yaml);
    assert_eq!(
        report["sources"][0]["error"],
        Value::Null,
        "{}",
        describe(&output)
    );
    assert_ne!(report["sources"][0]["revision"], revision);
}

/// https Azurite with `--oauth basic`, the token server, and the CA both use.
struct Entra {
    ca: TestPki,
    azurite: Azurite,
    tokens: TokenServer,
}

impl Entra {
    fn start() -> Entra {
        let ca = TestPki::new();
        let azurite = Azurite::start_https(&ca);
        seeded(&azurite, "fleet");
        let tokens = TokenServer::start(&ca, TENANT);
        Entra {
            ca,
            azurite,
            tokens,
        }
    }

    fn yaml(&self, extra: &[(&str, &str)]) -> String {
        let ca = self.ca.ca_cert().display().to_string();
        let authority = self.tokens.authority_host();
        let mut all: Vec<(&str, &str)> = vec![("caFile", &ca), ("authorityHost", &authority)];
        all.extend_from_slice(extra);
        source_yaml(&self.azurite.endpoint(), "fleet", &all)
    }

    /// A self-signed RSA certificate and key for a service principal: (PEM of key and
    /// certificate, certificate PEM, PKCS#12 protected with `password`).
    fn client_certificate(&self, name: &str, password: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let d = self.ca.dir();
        openssl(
            d,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        openssl(
            d,
            &[
                "pkcs12",
                "-export",
                "-inkey",
                &format!("{name}.key"),
                "-in",
                &format!("{name}.pem"),
                "-out",
                &format!("{name}.p12"),
                "-passout",
                &format!("pass:{password}"),
            ],
        );
        let key = std::fs::read(d.join(format!("{name}.key"))).unwrap();
        let cert = std::fs::read(d.join(format!("{name}.pem"))).unwrap();
        let p12 = std::fs::read(d.join(format!("{name}.p12"))).unwrap();
        ([key, cert.clone()].concat(), cert, p12)
    }
}

#[test]
fn service_principal_with_client_secret() {
    let entra = Entra::start();
    entra.tokens.register_secret("app-1", CLIENT_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let yaml = entra.yaml(&[
        ("spClientId", "app-1"),
        ("spTenantId", TENANT),
        ("spClientSecret", &format!("\"{CLIENT_SECRET}\"")),
    ]);
    let (report, output) = run_once(dir.path(), &yaml);
    assert_synced(&entra.azurite, "fleet", &report, &output);
    assert!(entra.tokens.issued() >= 1, "{:?}", entra.tokens.requests());
    assert!(!text(&output.stderr).contains(CLIENT_SECRET));

    let wrong = "not-the-secret-123";
    let yaml = entra.yaml(&[
        ("spClientId", "app-1"),
        ("spTenantId", TENANT),
        ("spClientSecret", wrong),
    ]);
    let (report, output) = run_once(tempfile::tempdir().unwrap().path(), &yaml);
    assert_failed(
        &report,
        &output,
        &[
            "token endpoint",
            "HTTP 401",
            "invalid_client",
            "AADSTS7000215",
        ],
        &[wrong, CLIENT_SECRET],
    );
}

#[test]
fn managed_identity_through_the_msi_endpoint() {
    let entra = Entra::start();
    entra.tokens.register_identity("mi-42");
    let endpoint = entra.tokens.msi_endpoint();
    let dir = tempfile::tempdir().unwrap();
    let (report, output) = run_once(
        dir.path(),
        &entra.yaml(&[("miClientId", "mi-42"), ("miEndpoint", &endpoint)]),
    );
    assert_synced(&entra.azurite, "fleet", &report, &output);
    assert!(
        entra
            .tokens
            .requests()
            .iter()
            .any(|r| r.contains("issued a token to mi-42")),
        "{:?}",
        entra.tokens.requests()
    );

    // The endpoint from the environment, as Azure SDKs read it.
    let from_env = tempfile::tempdir().unwrap();
    let (report, output) = run_once_with_env(
        from_env.path(),
        &entra.yaml(&[("miClientId", "mi-42")]),
        &[("IDENTITY_ENDPOINT", &endpoint)],
    );
    assert_synced(&entra.azurite, "fleet", &report, &output);

    let (report, output) = run_once(
        tempfile::tempdir().unwrap().path(),
        &entra.yaml(&[("miClientId", "mi-unknown"), ("miEndpoint", &endpoint)]),
    );
    assert_failed(
        &report,
        &output,
        &["token endpoint", "managed identity"],
        &[],
    );
}

#[test]
fn service_principal_with_client_certificate_pem_and_pkcs12() {
    let entra = Entra::start();
    let (pem, cert, p12) = entra.client_certificate("sp-cert", "p12-pass");
    entra.tokens.register_certificate("app-cert", &cert);

    // Inline base64 PEM, sending the chain.
    let inline = openssl::base64::encode_block(&pem);
    let first = tempfile::tempdir().unwrap();
    let (report, output) = run_once(
        first.path(),
        &entra.yaml(&[
            ("spClientId", "app-cert"),
            ("spTenantId", TENANT),
            ("spClientCert", &inline),
            ("spClientCertSendChain", "true"),
        ]),
    );
    assert_synced(&entra.azurite, "fleet", &report, &output);
    assert!(
        entra
            .tokens
            .requests()
            .iter()
            .any(|r| r.contains("issued a token to app-cert (with x5c)")),
        "{:?}",
        entra.tokens.requests()
    );
    let key_line = text(&pem).lines().nth(1).unwrap().to_string();
    assert!(!text(&output.stderr).contains(&key_line));

    // PKCS#12 with its password, through localAuthRef (Flux's keys).
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secret");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("tenantId"), TENANT).unwrap();
    std::fs::write(secrets.join("clientId"), "app-cert").unwrap();
    std::fs::write(secrets.join("clientCertificate"), &p12).unwrap();
    std::fs::write(secrets.join("clientCertificatePassword"), "p12-pass").unwrap();
    std::fs::write(secrets.join("authorityHost"), entra.tokens.authority_host()).unwrap();
    let yaml = source_yaml(
        &entra.azurite.endpoint(),
        "fleet",
        &[
            ("caFile", &entra.ca.ca_cert().display().to_string()),
            ("localAuthRef", "{ directory: ./secret }"),
        ],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    assert_synced(&entra.azurite, "fleet", &report, &output);
    assert!(!text(&output.stderr).contains("p12-pass"));

    // PKCS#12 and its password as files (raw, not base64).
    let files = tempfile::tempdir().unwrap();
    std::fs::write(files.path().join("sp.p12"), &p12).unwrap();
    std::fs::write(files.path().join("sp.pass"), "p12-pass\n").unwrap();
    let (report, output) = run_once(
        files.path(),
        &entra.yaml(&[
            ("spClientId", "app-cert"),
            ("spTenantId", TENANT),
            ("spClientCertFile", "./sp.p12"),
            ("spClientCertPasswordFile", "./sp.pass"),
        ]),
    );
    assert_synced(&entra.azurite, "fleet", &report, &output);

    // A certificate the token endpoint does not know for this application.
    let (other_pem, _, _) = entra.client_certificate("stranger", "x");
    let (report, output) = run_once(
        tempfile::tempdir().unwrap().path(),
        &entra.yaml(&[
            ("spClientId", "app-cert"),
            ("spTenantId", TENANT),
            ("spClientCert", &openssl::base64::encode_block(&other_pem)),
        ]),
    );
    assert_failed(
        &report,
        &output,
        &["refused the client certificate", "HTTP 401", "AADSTS700027"],
        &[],
    );
}

#[test]
fn config_takes_exactly_one_complete_sign_in_mode() {
    let dir = tempfile::tempdir().unwrap();
    let check = |source: &str| -> Output {
        let config = dir.path().join("c.yaml");
        std::fs::write(
            &config,
            format!("configurations:\n  - name: fleet\n    source:\n{source}"),
        )
        .unwrap();
        Command::new(gitopsd_bin())
            .arg("check")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap()
    };
    let both = source_yaml(
        "https://acct.blob.core.windows.net",
        "fleet",
        &[("accountKey", "abcd"), ("sasToken", "sv=1&sig=2")],
    );
    let output = check(&both);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(":10:") && stderr.contains("exactly one way to sign in"),
        "{stderr}"
    );
    assert!(!stderr.contains("abcd"), "{stderr}");

    let partial = source_yaml(
        "https://acct.blob.core.windows.net",
        "fleet",
        &[("spClientId", "app"), ("spClientSecret", "zzz")],
    );
    let output = check(&partial);
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("`spTenantId`"), "{stderr}");

    let empty = source_yaml(
        "https://acct.blob.core.windows.net",
        "fleet",
        &[("accountKey", "")],
    );
    let output = check(&empty);
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("`accountKey` must have a value"),
        "{}",
        describe(&output)
    );

    let ok = source_yaml(
        "https://acct.blob.core.windows.net",
        "fleet",
        &[("miClientId", "00000000-0000-0000-0000-000000000000")],
    );
    let output = check(&ok);
    assert!(output.status.success(), "{}", describe(&output));
}

#[test]
fn client_certificate_tokens_are_cached_between_syncs() {
    let entra = Entra::start();
    let (pem, cert, _) = entra.client_certificate("cached", "x");
    entra.tokens.register_certificate("app-cached", &cert);
    let source = AzureBlobSource {
        id: "default/fleet".into(),
        endpoint: entra.azurite.endpoint(),
        settings: AzureBlobSettings {
            container: "fleet".into(),
            prefix: None,
            auth: AzureAuth::ClientCertificate {
                tenant_id: TENANT.into(),
                client_id: "app-cached".into(),
                certificate: SecretValue::Inline(Secret(openssl::base64::encode_block(&pem))),
                password: None,
                send_chain: false,
            },
            authority_host: Some(entra.tokens.authority_host()),
            msi_endpoint: None,
            ca_file: Some(entra.ca.ca_cert()),
        },
        ignore: None,
    };
    let stop = AtomicBool::new(false);
    let scratch = tempfile::tempdir().unwrap();
    let revision = match block_on(objects::fetch(
        &source,
        None,
        scratch.path().join("1"),
        &stop,
    ))
    .unwrap()
    {
        FetchOutcome::Fetched { revision, .. } => revision,
        other => panic!("expected a fetch, got {other:?}"),
    };
    assert_eq!(
        revision.as_str(),
        flux_revision(&entra.azurite, "fleet", &["notes/"])
    );
    // A new source value (as the daemon builds for every sync) reuses the token.
    let again = source.clone();
    assert!(matches!(
        block_on(objects::fetch(
            &again,
            Some(&revision),
            scratch.path().join("2"),
            &stop
        ))
        .unwrap(),
        FetchOutcome::Unchanged
    ));
    assert_eq!(entra.tokens.issued(), 1, "{:?}", entra.tokens.requests());
}

#[test]
fn an_endpoint_certificate_from_an_unknown_ca_is_refused() {
    let entra = Entra::start();
    // No caFile: the test CA is not trusted.
    let yaml = source_yaml(
        &entra.azurite.endpoint(),
        "fleet",
        &[("accountKey", &format!("\"{ACCOUNT_KEY}\""))],
    );
    let (report, output) = run_once(tempfile::tempdir().unwrap().path(), &yaml);
    let error = assert_failed(
        &report,
        &output,
        &["cannot reach the endpoint"],
        &[ACCOUNT_KEY],
    );
    assert!(error.to_lowercase().contains("certificate"), "{error}");
}

/// GET `/api/v1/status` of a daemon on `port`; None while it does not answer.
fn daemon_status(port: u16) -> Option<Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://127.0.0.1:{port}/api/v1/status"))
        .call()
        .ok()?;
    let body = response.body_mut().read_to_vec().ok()?;
    serde_json::from_slice(&body).ok()
}

/// Polls the daemon's status until `check` finds what it wants (60 s at most).
fn wait_status<T>(port: u16, log: &Path, what: &str, check: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Some(found) = daemon_status(port).and_then(|s| check(&s["sources"][0])) {
            return found;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "gave up waiting for {what}; status: {:#}\n--- log ---\n{}",
                daemon_status(port).unwrap_or_default(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn daemon_polls_without_downloading_keeps_the_last_good_artifact_and_recovers() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("secret");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("accountKey"), ACCOUNT_KEY).unwrap();
    let port = free_port();
    let config = dir.path().join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\nconfigurations:\n  \
             - name: fleet\n    source:\n      kind: azblob\n      url: \"{}\"\n      \
             containerName: fleet\n      interval: 1s\n      retryInterval: 2s\n      \
             localAuthRef: {{ directory: ./secret }}\n",
            azurite.endpoint()
        ),
    )
    .unwrap();
    let log = dir.path().join("gitopsd.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(gitopsd_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("GITOPSD_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn gitopsd run");
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _reap = Reap(&mut child);

    let expected = flux_revision(&azurite, "fleet", &["notes/"]);
    let artifact = wait_status(port, &log, "the first artifact", |s| {
        (s["revision"] == expected.as_str()).then(|| s["artifact"]["path"].clone())
    });
    // Unchanged polls download nothing.
    wait_status(port, &log, "two unchanged polls", |s| {
        (s["metrics"]["unchangedTotal"].as_u64()? >= 2).then_some(())
    });

    // A wrong key: the polls fail, the artifact stays.
    let wrong_key = openssl::base64::encode_block(&[5u8; 64]);
    std::fs::write(secrets.join("accountKey"), &wrong_key).unwrap();
    let error = wait_status(port, &log, "the failure", |s| {
        s["lastError"].as_str().map(str::to_string)
    });
    assert!(
        error.contains("HTTP 403") && error.contains("container fleet"),
        "{error}"
    );
    let status = daemon_status(port).unwrap();
    assert_eq!(status["sources"][0]["artifact"]["path"], artifact);
    assert_eq!(status["sources"][0]["revision"], expected.as_str());
    assert!(Path::new(artifact.as_str().unwrap()).is_file());

    // The right key again, and a new object: the next poll recovers.
    std::fs::write(secrets.join("accountKey"), ACCOUNT_KEY).unwrap();
    azurite.put(
        "fleet",
        &[(
            "apps/more.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: more\n",
        )],
    );
    let newer = flux_revision(&azurite, "fleet", &["notes/"]);
    wait_status(port, &log, "the recovery", |s| {
        (s["revision"] == newer.as_str() && s["lastError"].is_null()).then_some(())
    });
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        !logged.contains(&wrong_key) && !logged.contains(ACCOUNT_KEY),
        "{logged}"
    );
}

#[test]
fn secret_files_are_read_again_at_every_sync() {
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("account.key"), format!("{ACCOUNT_KEY}\n")).unwrap();
    let yaml = source_yaml(
        &azurite.endpoint(),
        "fleet",
        &[("accountKeyFile", "./account.key")],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    assert_synced(&azurite, "fleet", &report, &output);

    let wrong_key = openssl::base64::encode_block(&[3u8; 64]);
    std::fs::write(dir.path().join("account.key"), &wrong_key).unwrap();
    azurite.put(
        "fleet",
        &[(
            "apps/x.yaml",
            b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        )],
    );
    let (report, output) = run_once(dir.path(), &yaml);
    assert_failed(
        &report,
        &output,
        &["HTTP 403", "account key"],
        &[&wrong_key],
    );

    std::fs::remove_file(dir.path().join("account.key")).unwrap();
    let (report, output) = run_once(dir.path(), &yaml);
    assert_failed(&report, &output, &["cannot read accountKeyFile"], &[]);
}

/// Flux's keys in a Kubernetes Secret (`localAuthRef: { secret }`, read through a real
/// kube-apiserver, see tests/support/kube.rs) at every sync: an account key, then a SAS key
/// in its place, then nothing usable, each seen by the next run.
#[test]
fn local_auth_ref_secret_is_read_through_the_kubernetes_api_at_every_sync() {
    let cluster = crate::support::kube::KubeCluster::shared();
    let azurite = Azurite::start();
    seeded(&azurite, "fleet");
    let namespace = cluster.create_namespace("azblob");
    cluster.put_secret(
        &namespace,
        "azure",
        &[("accountKey", format!("{ACCOUNT_KEY}\n").as_bytes())],
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(cluster.admin_kubeconfig(), dir.path().join("kubeconfig")).unwrap();
    let config = dir.path().join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{}\" }}\n\
             kubernetes: {{ kubeconfig: ./kubeconfig }}\n\
             configurations:\n  - name: fleet\n    namespace: {namespace}\n    source:\n{}",
            free_port(),
            source_yaml(
                &azurite.endpoint(),
                "fleet",
                &[("localAuthRef", "{ secret: azure }")]
            )
        ),
    )
    .unwrap();
    let run = || {
        let output = Command::new(gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("IDENTITY_ENDPOINT")
            .env_remove("MSI_ENDPOINT")
            .output()
            .expect("run gitopsd");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        (report, output)
    };
    let (report, output) = run();
    assert_synced(&azurite, "fleet", &report, &output);
    let revision = report["sources"][0]["revision"].clone();
    for secret in [ACCOUNT_KEY, crate::support::kube::ADMIN_TOKEN] {
        assert!(
            !text(&output.stderr).contains(secret),
            "{}",
            describe(&output)
        );
    }

    let sas = account_sas("rl", unix_now() + 3600);
    cluster.put_secret(&namespace, "azure", &[("sasKey", sas.as_bytes())]);
    azurite.put("fleet", &[("apps/new.yaml", b"kind: ConfigMap\n")]);
    let (report, output) = run();
    assert_eq!(
        report["sources"][0]["error"],
        Value::Null,
        "{}",
        describe(&output)
    );
    assert_ne!(report["sources"][0]["revision"], revision);

    cluster.put_secret(&namespace, "azure", &[("unrelated", b"x")]);
    let (report, output) = run();
    assert_failed(
        &report,
        &output,
        &[&format!(
            "the Kubernetes Secret `{namespace}/azure` holds no usable credential"
        )],
        &[ACCOUNT_KEY, crate::support::kube::ADMIN_TOKEN],
    );
}
