//! `bucket` sources against a real S3 server that checks SigV4 signatures (SeaweedFS, see
//! tests/support/seaweed.rs): listing, ignore rules, Flux's revision, unchanged syncs, prefixes,
//! every way to give keys, anonymous access, https with a private CA, clear failures without
//! secrets, the last good artifact kept, large objects streamed with flat memory, and objects
//! that change or vanish between the listing and their download (through a proxy that
//! modifies the bucket just before forwarding the object's GET).
//!
//! Most tests run the real binary (`gitopsd run --once -o json`); the "no download when
//! unchanged" test calls the library so that it can compare SeaweedFS's request counters
//! around exactly one fetch.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::support::seaweed::{
    block_on, Seaweed, ADMIN_ACCESS_KEY, ADMIN_SECRET_KEY, PUBLIC_BUCKET, READER_ACCESS_KEY,
    READER_SECRET_KEY,
};
use crate::support::TestPki;
use crate::support::{describe, free_port, gitopsd_bin, peak_rss_kib, text};
use gitopsd::config::{BucketCredentials, BucketSettings, Secret, SecretValue};
use gitopsd::source::bucket::BucketSource;
use gitopsd::source::{objects, FetchOutcome, Revision, Snapshot};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The fixture: what a fleet bucket holds. `.sourceignore` drops `notes/`; the sources below
/// add `ignore: "*.bak"`.
const FLEET: &[(&str, &[u8])] = &[
    ("apps/web.yaml", b"kind: ConfigMap\nmetadata: {name: web}\n"),
    (
        "apps/db/db.yaml",
        b"kind: ConfigMap\nmetadata: {name: db}\n",
    ),
    ("apps/old.bak", b"stale\n"),
    ("notes/readme.md", b"# notes\n"),
    (".sourceignore", b"notes/\n"),
];
/// What the artifact of [`FLEET`] holds.
const FLEET_PACKED: &[&str] = &["apps/db/db.yaml", "apps/web.yaml"];

/// Flux's revision computed without gitopsd: the ETag of an object written by one PUT is the
/// MD5 of its content, and the revision is sha256 over the sorted `"<key> <etag>\n"` lines.
fn expected_revision(objects: &[(&str, &[u8])], kept: &[&str]) -> String {
    let mut lines: Vec<String> = objects
        .iter()
        .filter(|(key, _)| kept.contains(key))
        .map(|(key, body)| {
            let md5 = openssl::hash::hash(openssl::hash::MessageDigest::md5(), body).unwrap();
            format!("{key} {}\n", hex::encode(md5))
        })
        .collect();
    lines.sort();
    format!("sha256:{}", hex::encode(Sha256::digest(lines.concat())))
}

/// A config directory whose state persists between `run --once` calls.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn write_config(&self, source_yaml: &str, port: u16) -> PathBuf {
        let config = self.path().join("gitopsd.yaml");
        std::fs::write(
            &config,
            format!(
                "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{port}\" }}\n\
                 configurations:\n  - name: fleet\n    source:\n{source_yaml}"
            ),
        )
        .unwrap();
        config
    }

    /// `gitopsd run --once -o json` with debug logs; returns the report and the output.
    fn run_once(&self, source_yaml: &str) -> (Value, Output) {
        let config = self.write_config(source_yaml, free_port());
        let output = Command::new(gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        (report, output)
    }
}

/// The `source:` body of a bucket source (each line indented for the config above).
fn source_yaml(endpoint: &str, bucket: &str, extra: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "      kind: bucket\n      url: \"{endpoint}\"\n      bucketName: {bucket}\n      \
         interval: 1m\n      timeout: 1m\n"
    );
    if endpoint.starts_with("http://") {
        yaml.push_str("      bucketInsecure: true\n");
    }
    for (key, value) in extra {
        yaml.push_str(&format!("      {key}: {value}\n"));
    }
    yaml
}

fn admin_keys() -> Vec<(&'static str, &'static str)> {
    vec![
        ("bucketAccessKey", ADMIN_ACCESS_KEY),
        ("bucketSecretKey", ADMIN_SECRET_KEY),
    ]
}

/// Regular files in a `.tar.gz`, sorted.
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

/// The synced source's revision and artifact path, after checking there was no error.
fn synced(report: &Value, output: &Output) -> (String, PathBuf) {
    let source = &report["sources"][0];
    assert_eq!(source["error"], Value::Null, "{}", describe(output));
    let revision = source["revision"].as_str().expect("a revision").to_string();
    let path = PathBuf::from(source["artifact"]["path"].as_str().expect("an artifact"));
    (revision, path)
}

/// The one-line error of a failed sync; checks it names the bucket and endpoint and that no
/// `secret` appears in it or anywhere in the output (report and debug logs).
fn failed(report: &Value, output: &Output, bucket: &str, secrets: &[&str]) -> String {
    let error = report["sources"][0]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("an error expected\n{}", describe(output)))
        .to_string();
    assert!(error.contains(&format!("bucket {bucket} at ")), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    for secret in secrets {
        assert!(!all.contains(secret), "secret {secret:?} leaked:\n{all}");
    }
    eprintln!("sync error as reported: {error}");
    error
}

#[test]
fn lists_applies_ignore_rules_and_packs_with_flux_revision() {
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put("fleet", FLEET);
    let setup = Setup::new();
    let mut extra = admin_keys();
    extra.push(("ignore", "\"*.bak\""));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &extra));
    let (revision, path) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    assert_eq!(artifact_files(&path), FLEET_PACKED);
    // Stored as <hex>.tar.gz under artifacts/bucket/<namespace>/<name>/.
    let hex = revision.strip_prefix("sha256:").unwrap();
    assert_eq!(
        path.file_name().unwrap().to_str().unwrap(),
        format!("{hex}.tar.gz")
    );
    assert!(
        path.parent()
            .unwrap()
            .ends_with(Path::new("artifacts/bucket/default/fleet")),
        "{}",
        path.display()
    );
    // The packed files are the uploaded bytes.
    let unpacked = tempfile::tempdir().unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(&path)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    for (key, body) in FLEET.iter().filter(|(k, _)| FLEET_PACKED.contains(k)) {
        assert_eq!(&std::fs::read(unpacked.path().join(key)).unwrap(), body);
    }
}

#[test]
fn git_directories_in_a_bucket_are_never_published() {
    let seaweed = Seaweed::start(&["fleet"]);
    let mut objects = FLEET.to_vec();
    let git_like: [(&str, &[u8]); 5] = [
        (".git/config", b"[core]\n\thooksPath = /tmp\n"),
        (".git/hooks/post-checkout", b"#!/bin/sh\necho pwned\n"),
        ("apps/.git", b"gitdir: /elsewhere\n"),
        ("apps/.gitkeep", b""),
        (".github/workflows/ci.yaml", b"on: push\n"),
    ];
    objects.extend_from_slice(&git_like);
    seaweed.put("fleet", &objects);
    let setup = Setup::new();
    let mut extra = admin_keys();
    // A negation in the field cannot bring them back.
    extra.push(("ignore", "\"*.bak\\n!.git/\\n!.git\""));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &extra));
    let (revision, path) = synced(&report, &output);
    let kept = [
        ".github/workflows/ci.yaml",
        "apps/.gitkeep",
        "apps/db/db.yaml",
        "apps/web.yaml",
    ];
    assert_eq!(artifact_files(&path), kept);
    assert_eq!(revision, expected_revision(&objects, &kept));
}

fn library_source(endpoint: &str, bucket: &str, prefix: Option<&str>) -> BucketSource {
    BucketSource {
        id: "default/fleet".into(),
        endpoint: endpoint.into(),
        settings: BucketSettings {
            bucket_name: bucket.into(),
            prefix: prefix.map(str::to_string),
            region: "us-east-1".into(),
            insecure: true,
            credentials: BucketCredentials::Keys {
                access_key: SecretValue::Inline(Secret(READER_ACCESS_KEY.into())),
                secret_key: SecretValue::Inline(Secret(READER_SECRET_KEY.into())),
            },
            ca_file: None,
        },
        ignore: Some("*.bak".into()),
    }
}

fn fetch(source: &BucketSource, previous: Option<&Revision>) -> (FetchOutcome, tempfile::TempDir) {
    let scratch = tempfile::tempdir().unwrap();
    let stop = AtomicBool::new(false);
    let outcome = block_on(objects::fetch(
        source,
        previous,
        scratch.path().join("snapshot"),
        &stop,
    ))
    .unwrap_or_else(|e| panic!("fetch failed: {e}"));
    (outcome, scratch)
}

#[test]
fn unchanged_bucket_downloads_nothing_and_a_changed_object_gives_a_new_revision() {
    // No `.sourceignore` here: its GET would count as a download.
    let seaweed = Seaweed::start(&["fleet"]);
    let objects: &[(&str, &[u8])] = &[
        ("apps/web.yaml", b"web: 1\n"),
        ("apps/db.yaml", b"db: 1\n"),
        ("apps/old.bak", b"old\n"),
    ];
    seaweed.put("fleet", objects);
    let source = library_source(&seaweed.endpoint(), "fleet", None);

    let (first, _keep) = fetch(&source, None);
    let FetchOutcome::Fetched { revision, .. } = first else {
        panic!("the first fetch downloads")
    };
    assert_eq!(
        revision.as_str(),
        expected_revision(objects, &["apps/db.yaml", "apps/web.yaml"])
    );
    let gets_before = seaweed.successful_gets("fleet");
    assert!(gets_before >= 2, "the first fetch downloaded the objects");

    let (again, _scratch) = fetch(&source, Some(&revision));
    assert!(matches!(again, FetchOutcome::Unchanged), "{again:?}");
    assert_eq!(
        seaweed.successful_gets("fleet"),
        gets_before,
        "an unchanged bucket must not be downloaded"
    );

    let changed: &[(&str, &[u8])] = &[("apps/web.yaml", b"web: 2\n")];
    seaweed.put("fleet", changed);
    let (third, scratch) = fetch(&source, Some(&revision));
    let FetchOutcome::Fetched {
        revision: new_revision,
        snapshot: Snapshot::Dir(dir),
    } = third
    else {
        panic!("a changed object is fetched")
    };
    assert_ne!(new_revision, revision);
    assert_eq!(
        new_revision.as_str(),
        expected_revision(
            &[("apps/web.yaml", b"web: 2\n"), ("apps/db.yaml", b"db: 1\n")],
            &["apps/db.yaml", "apps/web.yaml"]
        )
    );
    assert_eq!(
        std::fs::read(dir.join("apps/web.yaml")).unwrap(),
        b"web: 2\n"
    );
    drop(scratch);

    // A deleted object is a new revision too.
    seaweed.delete("fleet", "apps/db.yaml");
    let (fourth, _s) = fetch(&source, Some(&new_revision));
    let FetchOutcome::Fetched {
        revision: r4,
        snapshot: Snapshot::Dir(dir),
    } = fourth
    else {
        panic!("a deletion is fetched")
    };
    assert_eq!(
        r4.as_str(),
        expected_revision(&[("apps/web.yaml", b"web: 2\n")], &["apps/web.yaml"])
    );
    assert!(!dir.join("apps/db.yaml").exists());
}

#[test]
fn prefix_limits_the_listing_keys_keep_it_and_an_empty_prefix_is_an_empty_artifact() {
    let seaweed = Seaweed::start(&["fleet"]);
    let objects: &[(&str, &[u8])] = &[
        ("clusters/edge/app.yaml", b"a\n"),
        ("clusters/edge/sub/b.yaml", b"b\n"),
        ("clusters/edge-2/c.yaml", b"c\n"),
        ("clusters/core/d.yaml", b"d\n"),
    ];
    seaweed.put("fleet", objects);
    let setup = Setup::new();
    let mut extra = admin_keys();
    extra.push(("prefix", "clusters/edge/"));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &extra));
    let (revision, path) = synced(&report, &output);
    let kept = ["clusters/edge/app.yaml", "clusters/edge/sub/b.yaml"];
    assert_eq!(artifact_files(&path), kept);
    assert_eq!(revision, expected_revision(objects, &kept));

    // A prefix that is not a whole directory name matches like S3's: as a string.
    let setup = Setup::new();
    let mut extra = admin_keys();
    extra.push(("prefix", "clusters/edge"));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &extra));
    let (_, path) = synced(&report, &output);
    assert_eq!(
        artifact_files(&path),
        [
            "clusters/edge-2/c.yaml",
            "clusters/edge/app.yaml",
            "clusters/edge/sub/b.yaml"
        ]
    );

    let setup = Setup::new();
    let mut extra = admin_keys();
    extra.push(("prefix", "nothing-here/"));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &extra));
    let (revision, path) = synced(&report, &output);
    assert_eq!(
        revision,
        format!("sha256:{}", hex::encode(Sha256::digest(b"")))
    );
    assert!(artifact_files(&path).is_empty());
}

#[test]
fn keys_from_files_and_local_auth_ref_are_read_at_every_sync_and_anonymous_reads_public() {
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put("fleet", FLEET);
    seaweed.put(PUBLIC_BUCKET, FLEET);
    let setup = Setup::new();
    let keys = setup.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    std::fs::write(keys.join("access"), format!("{READER_ACCESS_KEY}\n")).unwrap();
    std::fs::write(keys.join("secret"), format!("{READER_SECRET_KEY}\n")).unwrap();
    let files = [
        ("bucketAccessKeyFile", "keys/access"),
        ("bucketSecretKeyFile", "keys/secret"),
        ("ignore", "\"*.bak\""),
    ];
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &files));
    let (revision, _) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    // The secret file changes: the next sync uses the new (wrong) content.
    std::fs::write(keys.join("secret"), "not-the-secret\n").unwrap();
    let (report, output) = setup.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &files));
    let error = failed(&report, &output, "fleet", &["not-the-secret"]);
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");

    // Flux's Secret layout: a directory with `accesskey` and `secretkey`.
    let setup2 = Setup::new();
    let flux_keys = setup2.path().join("flux-secret");
    std::fs::create_dir_all(&flux_keys).unwrap();
    std::fs::write(flux_keys.join("accesskey"), READER_ACCESS_KEY).unwrap();
    std::fs::write(flux_keys.join("secretkey"), READER_SECRET_KEY).unwrap();
    let local = [
        ("localAuthRef", "{ directory: flux-secret }"),
        ("ignore", "\"*.bak\""),
    ];
    let (report, output) = setup2.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &local));
    let (revision, _) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));

    // No keys at all: unsigned requests, which SeaweedFS allows on the public bucket only.
    let setup3 = Setup::new();
    let anonymous = [("ignore", "\"*.bak\"")];
    let (report, output) =
        setup3.run_once(&source_yaml(&seaweed.endpoint(), PUBLIC_BUCKET, &anonymous));
    let (revision, path) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    assert_eq!(artifact_files(&path), FLEET_PACKED);
    let (report, output) = setup3.run_once(&source_yaml(&seaweed.endpoint(), "fleet", &anonymous));
    let error = failed(&report, &output, "fleet", &[]);
    assert!(error.contains("AccessDenied"), "{error}");
}

#[test]
fn wrong_keys_missing_bucket_and_unreachable_endpoint_fail_in_one_clear_sentence() {
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put("fleet", FLEET);
    let setup = Setup::new();
    let wrong_secret = "wrong-secret-5d1e2a";
    let (report, output) = setup.run_once(&source_yaml(
        &seaweed.endpoint(),
        "fleet",
        &[
            ("bucketAccessKey", READER_ACCESS_KEY),
            ("bucketSecretKey", wrong_secret),
        ],
    ));
    let error = failed(
        &report,
        &output,
        "fleet",
        &[wrong_secret, READER_SECRET_KEY],
    );
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");
    assert!(error.contains("secret key does not match"), "{error}");

    let (report, output) = setup.run_once(&source_yaml(
        &seaweed.endpoint(),
        "fleet",
        &[
            ("bucketAccessKey", "nobody-knows-me"),
            ("bucketSecretKey", wrong_secret),
        ],
    ));
    let error = failed(&report, &output, "fleet", &[wrong_secret]);
    assert!(error.contains("InvalidAccessKeyId"), "{error}");

    let (report, output) = setup.run_once(&source_yaml(
        &seaweed.endpoint(),
        "no-such-bucket",
        &admin_keys(),
    ));
    let error = failed(&report, &output, "no-such-bucket", &[ADMIN_SECRET_KEY]);
    assert!(error.contains("NoSuchBucket"), "{error}");

    // A port nobody listens on.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (report, output) = setup.run_once(&source_yaml(&closed, "fleet", &admin_keys()));
    let error = failed(&report, &output, "fleet", &[ADMIN_SECRET_KEY]);
    assert!(error.contains("cannot reach the endpoint"), "{error}");
    assert!(
        error.to_lowercase().contains("connection refused"),
        "{error}"
    );
}

#[test]
fn config_rejects_bad_bucket_settings_with_positions() {
    let setup = Setup::new();
    let cases: &[(&str, &str)] = &[
        (
            "      kind: bucket\n      url: \"http://127.0.0.1:1\"\n      bucketInsecure: true\n",
            "missing required field `bucketName`",
        ),
        (
            "      kind: bucket\n      url: \"http://127.0.0.1:1\"\n      bucketName: fleet\n",
            "bucketInsecure",
        ),
        (
            "      kind: bucket\n      url: \"https://s3.example.com\"\n      bucketName: fleet\n      bucketAccessKey: AK\n",
            "an access key needs a secret key",
        ),
        (
            "      kind: bucket\n      url: \"https://s3.example.com\"\n      bucketName: fleet\n      ref: { branch: main }\n",
            "`ref` applies only to sources of kind `git`",
        ),
        (
            "      kind: git\n      url: \"https://example.com/repo.git\"\n      bucketName: fleet\n",
            "`bucketName` applies only to sources of kind `bucket`",
        ),
    ];
    for (yaml, expected) in cases {
        let config = setup.write_config(yaml, free_port());
        let output = Command::new(gitopsd_bin())
            .args(["check", "--config"])
            .arg(&config)
            .output()
            .expect("run gitopsd check");
        let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
        assert!(!output.status.success(), "{yaml} should be rejected");
        assert!(all.contains(expected), "{expected:?} not in:\n{all}");
        // file:line:col
        assert!(all.contains("gitopsd.yaml:"), "{all}");
    }
}

#[test]
fn https_endpoint_with_a_private_ca() {
    let ca = TestPki::new();
    let seaweed = Seaweed::start_https(&["fleet"], &ca);
    seaweed.put("fleet", FLEET);
    let setup = Setup::new();
    let mut extra = admin_keys();
    extra.push(("ignore", "\"*.bak\""));
    let without_ca = source_yaml(&seaweed.https_endpoint(), "fleet", &extra);
    let (report, output) = setup.run_once(&without_ca);
    let error = failed(&report, &output, "fleet", &[ADMIN_SECRET_KEY]);
    assert!(error.contains("cannot reach the endpoint"), "{error}");

    let ca_pem = ca.ca_cert().display().to_string();
    extra.push(("caFile", ca_pem.as_str()));
    let (report, output) = setup.run_once(&source_yaml(&seaweed.https_endpoint(), "fleet", &extra));
    let (revision, path) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    assert_eq!(artifact_files(&path), FLEET_PACKED);
}

#[test]
fn a_large_object_streams_to_disk_with_flat_memory() {
    const SIZE: usize = 96 << 20;
    let seaweed = Seaweed::start(&["fleet"]);
    // Incompressible content, so that nothing in the path can keep it small by accident.
    let mut big = vec![0u8; SIZE];
    openssl::rand::rand_bytes(&mut big).unwrap();
    seaweed.put("fleet", &[("blobs/big.bin", &big), ("app.yaml", b"a: 1\n")]);
    let big_md5 =
        hex::encode(openssl::hash::hash(openssl::hash::MessageDigest::md5(), &big).unwrap());
    drop(big);

    let setup = Setup::new();
    let config = setup.write_config(
        &source_yaml(&seaweed.endpoint(), "fleet", &admin_keys()),
        free_port(),
    );
    let mut command = Command::new(gitopsd_bin());
    command
        .args(["run", "--once", "--config"])
        .arg(&config)
        .env("GITOPSD_LOG", "info");
    let (peak_kib, output) = peak_rss_kib(command);
    assert!(
        output.status.success(),
        "gitopsd failed\n{}",
        describe(&output)
    );
    eprintln!(
        "peak RSS of `gitopsd run --once` for a {} MiB object: {peak_kib} KiB",
        SIZE >> 20
    );
    assert!(
        peak_kib < (SIZE as i64 / 1024) / 2,
        "peak RSS {peak_kib} KiB for a {} MiB object: not streamed",
        SIZE >> 20
    );

    // The object arrived whole: the artifact holds it with the right bytes.
    let artifacts = setup.path().join("state/artifacts/bucket/default/fleet");
    let artifact = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".tar.gz"))
        .expect("an artifact");
    let unpacked = tempfile::tempdir().unwrap();
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&artifact)
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let got = std::fs::read(unpacked.path().join("blobs/big.bin")).unwrap();
    assert_eq!(got.len(), SIZE);
    assert_eq!(
        hex::encode(openssl::hash::hash(openssl::hash::MessageDigest::md5(), &got).unwrap()),
        big_md5
    );
}

/// `GET url` → (status, body).
fn http_get(url: &str) -> Option<(u16, Vec<u8>)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent.get(url).call().ok()?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_vec()
        .ok()?;
    Some((status, body))
}

fn wait_for<T>(what: &str, log: &Path, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            let log = std::fs::read(log).map(|b| text(&b)).unwrap_or_default();
            panic!("gave up waiting for {what}\n--- gitopsd log ---\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills and reaps the daemon on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn daemon_keeps_serving_the_last_good_artifact_when_credentials_break() {
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put("fleet", FLEET);
    let setup = Setup::new();
    let secret_dir = setup.path().join("flux-secret");
    std::fs::create_dir_all(&secret_dir).unwrap();
    std::fs::write(secret_dir.join("accesskey"), READER_ACCESS_KEY).unwrap();
    std::fs::write(secret_dir.join("secretkey"), READER_SECRET_KEY).unwrap();
    let port = free_port();
    let yaml = source_yaml(
        &seaweed.endpoint(),
        "fleet",
        &[
            ("localAuthRef", "{ directory: flux-secret }"),
            ("ignore", "\"*.bak\""),
            ("retryInterval", "1s"),
        ],
    )
    .replace("interval: 1m", "interval: 1s");
    let config = setup.write_config(&yaml, port);
    let log_path = setup.path().join("gitopsd.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let _daemon = Daemon(
        Command::new(gitopsd_bin())
            .args(["run", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn gitopsd run"),
    );
    let status_url = format!("http://127.0.0.1:{port}/api/v1/status");
    let status = || -> Option<Value> {
        let (code, body) = http_get(&status_url)?;
        (code == 200).then(|| serde_json::from_slice(&body).ok())?
    };
    let good = wait_for("the first artifact", &log_path, || {
        let st = status()?;
        let source = st["sources"][0].clone();
        source["artifact"]["urlPath"].as_str()?;
        Some(source)
    });
    let revision = good["revision"].as_str().unwrap().to_string();
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    let url_path = good["artifact"]["urlPath"].as_str().unwrap().to_string();

    // The key is rotated on the server's side but not here: every sync now fails.
    let rotated = "rotated-away-3c9f";
    std::fs::write(secret_dir.join("secretkey"), rotated).unwrap();
    let broken = wait_for("the sync to fail", &log_path, || {
        let st = status()?;
        let source = st["sources"][0].clone();
        source["lastError"].as_str()?;
        Some(source)
    });
    let error = broken["lastError"].as_str().unwrap();
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");
    assert!(error.contains("bucket fleet at "), "{error}");
    assert_eq!(broken["revision"].as_str(), Some(revision.as_str()));
    assert_eq!(
        broken["artifact"]["urlPath"].as_str(),
        Some(url_path.as_str())
    );
    let (code, body) =
        http_get(&format!("http://127.0.0.1:{port}/artifacts/{url_path}")).expect("artifact");
    assert_eq!(code, 200);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&body))),
        broken["artifact"]["digest"].as_str().unwrap()
    );

    // Retried with backoff, and never a secret in the logs.
    wait_for("a second failed attempt", &log_path, || {
        let log = text(&std::fs::read(&log_path).ok()?);
        (log.matches("SignatureDoesNotMatch").count() >= 2).then_some(())
    });
    let log = text(&std::fs::read(&log_path).unwrap());
    for secret in [READER_SECRET_KEY, rotated] {
        assert!(
            !log.contains(secret),
            "secret {secret:?} in the daemon log:\n{log}"
        );
    }
    let _ = std::io::stderr().flush();
}

type Action = Box<dyn FnOnce() + Send>;
/// Triggers and the action each runs once (taken when it fires).
type Triggers = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<Action>)>>>;

/// A TCP proxy in front of SeaweedFS that runs an action just before forwarding the first
/// request whose bytes contain a trigger (e.g. `GET /fleet/apps/a.yaml `), so that an object
/// can change or vanish between the listing and its download. Requests pass unchanged, so the
/// server still checks their signatures (the signed Host is the proxy's, as sent).
fn mutating_proxy(upstream: u16, triggers: Vec<(String, Action)>) -> u16 {
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let triggers: Triggers = Arc::new(Mutex::new(
        triggers.into_iter().map(|(t, a)| (t, Some(a))).collect(),
    ));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let triggers = triggers.clone();
            std::thread::spawn(move || {
                let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    return;
                };
                let (mut server_read, mut client_write) =
                    (server.try_clone().unwrap(), client.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut server_read, &mut client_write);
                    let _ = client_write.shutdown(std::net::Shutdown::Both);
                });
                let mut buf = vec![0u8; 64 << 10];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let chunk = String::from_utf8_lossy(&buf[..n]).into_owned();
                    let due: Vec<Action> = triggers
                        .lock()
                        .unwrap()
                        .iter_mut()
                        .filter(|(t, a)| a.is_some() && chunk.contains(t.as_str()))
                        .filter_map(|(_, a)| a.take())
                        .collect();
                    for action in due {
                        action();
                    }
                    if server.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn objects_that_change_or_vanish_during_the_download_are_handled_as_flux_does() {
    use object_store::{ObjectStoreExt, PutPayload};
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put(
        "fleet",
        &[
            ("apps/a.yaml", b"a: 1\n"),
            ("apps/b.yaml", b"b: 1\n"),
            ("apps/c.yaml", b"c: 1\n"),
        ],
    );
    let upstream: u16 = seaweed
        .endpoint()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let admin = seaweed.admin("fleet");
    let (changer, deleter) = (admin.clone(), admin);
    let proxy = mutating_proxy(
        upstream,
        vec![
            (
                "GET /fleet/apps/a.yaml ".to_string(),
                Box::new(move || {
                    crate::support::seaweed::block_on(changer.put(
                        &object_store::path::Path::from("apps/a.yaml"),
                        PutPayload::from_static(b"a: 2, changed during the sync\n"),
                    ))
                    .unwrap();
                }) as Action,
            ),
            (
                "GET /fleet/apps/b.yaml ".to_string(),
                Box::new(move || {
                    crate::support::seaweed::block_on(
                        deleter.delete(&object_store::path::Path::from("apps/b.yaml")),
                    )
                    .unwrap();
                }) as Action,
            ),
        ],
    );
    let source = library_source(&format!("http://127.0.0.1:{proxy}"), "fleet", None);
    let (outcome, _scratch) = fetch(&source, None);
    let FetchOutcome::Fetched {
        revision,
        snapshot: Snapshot::Dir(dir),
    } = outcome
    else {
        panic!("a first fetch downloads")
    };
    assert_eq!(
        std::fs::read(dir.join("apps/a.yaml")).unwrap(),
        b"a: 2, changed during the sync\n"
    );
    assert!(
        !dir.join("apps/b.yaml").exists(),
        "a vanished object is left out"
    );
    assert_eq!(std::fs::read(dir.join("apps/c.yaml")).unwrap(), b"c: 1\n");
    // The revision describes what was downloaded, so the next poll sees no change.
    let now: &[(&str, &[u8])] = &[
        ("apps/a.yaml", b"a: 2, changed during the sync\n"),
        ("apps/c.yaml", b"c: 1\n"),
    ];
    assert_eq!(
        revision.as_str(),
        expected_revision(now, &["apps/a.yaml", "apps/c.yaml"])
    );
    let direct = library_source(&seaweed.endpoint(), "fleet", None);
    let (again, _s) = fetch(&direct, Some(&revision));
    assert!(matches!(again, FetchOutcome::Unchanged), "{again:?}");
}

/// Flux's `accesskey` and `secretkey` in a Kubernetes Secret (`localAuthRef: { secret }`,
/// read through a real kube-apiserver, see tests/support/kube.rs) at every sync: a changed key
/// is what the next run uses, and a Secret without a key is named in the error.
#[test]
fn keys_from_a_kubernetes_secret_are_read_at_every_sync() {
    let cluster = crate::support::kube::KubeCluster::shared();
    let seaweed = Seaweed::start(&["fleet"]);
    seaweed.put("fleet", FLEET);
    let namespace = cluster.create_namespace("bucket");
    let keys = |secret_key: &str| {
        cluster.put_secret(
            &namespace,
            "s3-keys",
            &[
                ("accesskey", READER_ACCESS_KEY.as_bytes()),
                ("secretkey", secret_key.as_bytes()),
            ],
        )
    };
    keys(READER_SECRET_KEY);
    let setup = Setup::new();
    std::fs::copy(cluster.admin_kubeconfig(), setup.path().join("kubeconfig")).unwrap();
    let source = source_yaml(
        &seaweed.endpoint(),
        "fleet",
        &[
            ("localAuthRef", "{ secret: s3-keys }"),
            ("ignore", "\"*.bak\""),
        ],
    );
    let config = setup.path().join("gitopsd.yaml");
    std::fs::write(
        &config,
        format!(
            "stateDir: ./state\nserver: {{ listen: \"127.0.0.1:{}\" }}\n\
             kubernetes: {{ kubeconfig: ./kubeconfig }}\n\
             configurations:\n  - name: fleet\n    namespace: {namespace}\n    source:\n{source}",
            free_port()
        ),
    )
    .unwrap();
    let run = || {
        let output = Command::new(gitopsd_bin())
            .args(["run", "--once", "-o", "json", "--config"])
            .arg(&config)
            .env("GITOPSD_LOG", "debug")
            .env_remove("GITOPSD_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run gitopsd");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{}", describe(&output)));
        (report, output)
    };
    let (report, output) = run();
    let (revision, _) = synced(&report, &output);
    assert_eq!(revision, expected_revision(FLEET, FLEET_PACKED));
    let leaks = [
        READER_SECRET_KEY,
        crate::support::kube::ADMIN_TOKEN,
        "not-the-secret-key",
    ];
    assert!(
        !leaks.iter().any(|s| text(&output.stderr).contains(s)),
        "{}",
        describe(&output)
    );

    keys("not-the-secret-key");
    let (report, output) = run();
    let error = failed(&report, &output, "fleet", &leaks);
    assert!(error.contains("SignatureDoesNotMatch"), "{error}");

    cluster.put_secret(
        &namespace,
        "s3-keys",
        &[("accesskey", READER_ACCESS_KEY.as_bytes())],
    );
    let (report, output) = run();
    let error = failed(&report, &output, "fleet", &leaks);
    assert!(
        error.contains(&format!(
            "the Kubernetes Secret `{namespace}/s3-keys` has no `secretkey`"
        )),
        "{error}"
    );
}
