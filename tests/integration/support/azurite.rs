//! Azurite, Microsoft's Azure Storage emulator (blob service only), on a loopback port.
//!
//! Installed by `scripts/install-test-deps.sh` from npm into the cache; found through
//! `GITOPSD_AZURITE_BLOB`, else `${GITOPSD_CACHE:-$HOME/.cache/gitopsd}/npm/node_modules/.bin`,
//! else PATH. Telemetry is always off.
//!
//! Plain http serves account-key and SAS requests. Bearer tokens need https: [`Azurite::start_https`]
//! runs it with `--oauth basic` and a server certificate from a [`TestPki`](super::TestPki), which checks a
//! token's issuer, audience and lifetime but not its signature.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use object_store::azure::MicrosoftAzureBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore};
use tempfile::TempDir;

pub use super::objects::block_on;

use super::process::{start_on_free_port, wait_until_ready, Probe, ServerProcess, StartError};
use super::tls::TestPki;

/// Azurite's well-known account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known (public) key of [`ACCOUNT`].
pub const ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// An Azurite blob service.
#[derive(Debug)]
pub struct Azurite {
    process: ServerProcess,
    port: u16,
    https: bool,
    ca_pem: Option<PathBuf>,
    _dir: TempDir,
}

impl Azurite {
    /// Plain http: account key and SAS.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// https with `--oauth basic`, serving `ca`'s server certificate.
    pub fn start_https(ca: &TestPki) -> Self {
        Self::start_with(Some(ca))
    }

    fn start_with(ca: Option<&TestPki>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("gitopsd-azurite-")
            .tempdir()
            .expect("create temp dir for azurite");
        let (process, port) = start_on_free_port("azurite", |port| {
            let process = spawn(dir.path(), port, ca)?;
            Ok((process, port))
        });
        Azurite {
            process,
            port,
            https: ca.is_some(),
            ca_pem: ca.map(TestPki::ca_cert),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The account endpoint, path-style: `http(s)://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// An object store on `container`, signed with the account key (for setting tests up).
    pub fn admin(&self, container: &str) -> Arc<dyn ObjectStore> {
        let mut options = ClientOptions::new().with_allow_http(!self.https);
        if let Some(ca) = &self.ca_pem {
            let pem = std::fs::read(ca).expect("read CA");
            options = options
                .with_root_certificate(object_store::Certificate::from_pem(&pem).expect("CA pem"));
        }
        Arc::new(
            MicrosoftAzureBuilder::new()
                .with_account(ACCOUNT)
                .with_access_key(ACCOUNT_KEY)
                .with_container_name(container)
                .with_endpoint(self.endpoint())
                .with_allow_http(!self.https)
                .with_client_options(options)
                .build()
                .expect("build admin object store"),
        )
    }

    /// Creates `container` (a PUT with `restype=container`, signed with the account key).
    pub fn create_container(&self, container: &str) {
        block_on(create_container(self, container));
    }

    /// Uploads `objects` (key, content) into `container`.
    pub fn put(&self, container: &str, objects: &[(&str, &[u8])]) {
        super::objects::put(&*self.admin(container), objects);
    }

    /// `(key, etag)` of every object in `container`, as listed.
    pub fn list(&self, container: &str) -> Vec<(String, String)> {
        let store = self.admin(container);
        block_on(async {
            let mut out = Vec::new();
            let mut dirs: Vec<Option<ObjectPath>> = vec![None];
            while let Some(dir) = dirs.pop() {
                let listed = store
                    .list_with_delimiter(dir.as_ref())
                    .await
                    .unwrap_or_else(|e| panic!("list {container}: {e}"));
                for meta in listed.objects {
                    out.push((meta.location.to_string(), meta.e_tag.unwrap_or_default()));
                }
                dirs.extend(listed.common_prefixes.into_iter().map(Some));
            }
            out.sort();
            out
        })
    }
}

/// See [`Azurite::account_sas`].
pub fn account_sas(permissions: &str, expiry: u64) -> String {
    let expiry = iso8601(expiry);
    let version = "2020-12-06";
    let string_to_sign = format!("{ACCOUNT}\n{permissions}\nb\nsco\n\n{expiry}\n\n\n{version}\n\n");
    let key = openssl::base64::decode_block(ACCOUNT_KEY).expect("account key is base64");
    let pkey = openssl::pkey::PKey::hmac(&key).expect("hmac key");
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).expect("signer");
    signer.update(string_to_sign.as_bytes()).expect("sign");
    let signature = openssl::base64::encode_block(&signer.sign_to_vec().expect("sign"));
    format!(
        "sv={version}&ss=b&srt=sco&sp={permissions}&se={}&sig={}",
        percent(&expiry),
        percent(&signature)
    )
}

fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SSZ` for UNIX seconds.
pub fn iso8601(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

async fn create_container(azurite: &Azurite, container: &str) {
    // object_store has no "create container": sign one PUT with the account key through a
    // store whose "container" is the account root, then name the container as the path.
    let url = format!("{}/{container}?restype=container", azurite.endpoint());
    let date = httpdate_now();
    let version = "2021-08-06";
    let canonical_headers = format!("x-ms-date:{date}\nx-ms-version:{version}\n");
    let canonical_resource = format!("/{ACCOUNT}/{ACCOUNT}/{container}\nrestype:container");
    // VERB, then eleven standard headers (all empty here: a zero Content-Length is signed
    // as empty), each line-terminated, then the canonical x-ms headers and the resource.
    let string_to_sign = format!(
        "PUT\n{}{canonical_headers}{canonical_resource}",
        "\n".repeat(11)
    );
    let key = openssl::base64::decode_block(ACCOUNT_KEY).unwrap();
    let pkey = openssl::pkey::PKey::hmac(&key).unwrap();
    let mut signer =
        openssl::sign::Signer::new(openssl::hash::MessageDigest::sha256(), &pkey).unwrap();
    signer.update(string_to_sign.as_bytes()).unwrap();
    let signature = openssl::base64::encode_block(&signer.sign_to_vec().unwrap());
    let status = raw_request(
        azurite,
        "PUT",
        &url,
        &[
            ("x-ms-date", &date),
            ("x-ms-version", version),
            ("Content-Length", "0"),
            ("Authorization", &format!("SharedKey {ACCOUNT}:{signature}")),
        ],
    );
    assert!(
        status == 201 || status == 409,
        "creating container {container} answered HTTP {status}; azurite log:\n{}",
        azurite.log()
    );
}

/// A one-shot HTTP/1.1 request over plain TCP or TLS (trusting the test CA); returns the status.
fn raw_request(azurite: &Azurite, method: &str, url: &str, headers: &[(&str, &str)]) -> u16 {
    use std::io::{Read, Write};
    let target = url.splitn(4, '/').nth(3).map(|p| format!("/{p}")).unwrap();
    let mut request = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n",
        azurite.port
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let tcp = std::net::TcpStream::connect(("127.0.0.1", azurite.port)).expect("connect azurite");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut answer = Vec::new();
    if let Some(ca) = &azurite.ca_pem {
        let mut connector =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
        connector.set_ca_file(ca).unwrap();
        let mut config = connector.build().configure().unwrap();
        config.set_verify_hostname(false);
        let mut tls = config.connect("127.0.0.1", tcp).expect("TLS to azurite");
        tls.write_all(request.as_bytes()).unwrap();
        let _ = tls.read_to_end(&mut answer);
    } else {
        let mut tcp = tcp;
        tcp.write_all(request.as_bytes()).unwrap();
        let _ = tcp.read_to_end(&mut answer);
    }
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// RFC 1123 date of now, as `x-ms-date` wants it.
fn httpdate_now() -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = unix_now();
    let iso = iso8601(secs);
    let (year, rest) = iso.split_at(4);
    let month: usize = rest[1..3].parse().unwrap();
    let day = &rest[4..6];
    let time = &rest[7..15];
    format!(
        "{}, {day} {} {year} {time} GMT",
        DAYS[((secs / 86_400) % 7) as usize],
        MONTHS[month - 1]
    )
}

/// Where the `azurite-blob` launcher is.
pub fn azurite_blob_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("GITOPSD_AZURITE_BLOB") {
        return PathBuf::from(path);
    }
    let cache = std::env::var_os("GITOPSD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/gitopsd")
        });
    let cached = cache.join("npm/node_modules/.bin/azurite-blob");
    if cached.exists() {
        return cached;
    }
    PathBuf::from("azurite-blob")
}

fn spawn(dir: &Path, port: u16, ca: Option<&TestPki>) -> Result<ServerProcess, StartError> {
    let mut command = Command::new(azurite_blob_bin());
    command
        .current_dir(dir)
        .args(["--blobHost", "127.0.0.1", "--blobPort"])
        .arg(port.to_string())
        .arg("--location")
        .arg(dir.join("data"))
        .args([
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ]);
    if let Some(ca) = ca {
        command
            .arg("--cert")
            .arg(ca.server_cert())
            .arg("--key")
            .arg(ca.server_key())
            .args(["--oauth", "basic"]);
    }
    let mut process =
        ServerProcess::spawn("azurite", command, &dir.join("azurite.log")).map_err(|e| {
            StartError::Failed(format!(
                "cannot run {} (run scripts/install-test-deps.sh): {e}",
                azurite_blob_bin().display()
            ))
        })?;
    let log = dir.join("azurite.log");
    wait_until_ready(&mut process, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("EADDRINUSE") {
            Probe::Foreign("EADDRINUSE".into())
        } else if text.contains("successfully listens") {
            Probe::Ready
        } else {
            Probe::NotYet
        }
    })?;
    Ok(process)
}
