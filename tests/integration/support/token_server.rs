//! A small Microsoft Entra ID stand-in over https on a loopback port, in this test process.
//!
//! - `POST /<tenant>/oauth2/v2.0/token`, client-credentials grant: checks a registered
//!   client's secret, or verifies a client assertion (RS256 signature against the registered
//!   certificate, `aud` = this token URL, `exp` in the future, `x5t` = the certificate's
//!   thumbprint);
//! - `GET /msi/token?resource=...&client_id=...` with `Metadata: true`: the managed-identity
//!   (IMDS-style) endpoint for registered identities.
//!
//! Tokens it issues are JWTs that Azurite's `--oauth basic` accepts: issuer
//! `https://sts.windows.net/<tenant>/`, audience `https://storage.azure.com`, iat/nbf/exp.
//! Refusals are 400/401 with an Entra-like JSON error body.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};
use openssl::x509::X509;

use super::azurite::unix_now;
use super::tls::TestPki;

/// How a registered application signs in.
#[derive(Clone)]
pub enum ClientCredential {
    Secret(String),
    Certificate(X509),
}

#[derive(Default)]
struct Registry {
    clients: HashMap<String, ClientCredential>,
    identities: Vec<String>,
}

/// The running server; stops on drop.
pub struct TokenServer {
    port: u16,
    registry: Arc<Mutex<Registry>>,
    issued: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl TokenServer {
    /// Serves https with `ca`'s server certificate, for tenant `tenant`.
    pub fn start(ca: &TestPki, tenant: &str) -> TokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let port = listener.local_addr().unwrap().port();
        let mut acceptor = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        acceptor
            .set_private_key_file(ca.server_key(), SslFiletype::PEM)
            .unwrap();
        acceptor
            .set_certificate_chain_file(ca.server_cert())
            .unwrap();
        let acceptor = Arc::new(acceptor.build());
        let signing_key = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let server = TokenServer {
            port,
            registry: Arc::default(),
            issued: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let shared = Shared {
            port,
            tenant: tenant.to_string(),
            registry: server.registry.clone(),
            issued: server.issued.clone(),
            requests: server.requests.clone(),
            signing_key,
        };
        let shared = Arc::new(shared);
        let stop = server.stop.clone();
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nonblocking(false);
                    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
                    let acceptor = acceptor.clone();
                    let shared = shared.clone();
                    std::thread::spawn(move || {
                        if let Ok(tls) = acceptor.accept(tcp) {
                            shared.serve(tls);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        });
        server
    }

    /// `https://127.0.0.1:PORT`: what `authorityHost` should be.
    pub fn authority_host(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// The managed-identity endpoint.
    pub fn msi_endpoint(&self) -> String {
        format!("https://127.0.0.1:{}/msi/token", self.port)
    }

    pub fn register_secret(&self, client_id: &str, secret: &str) {
        self.registry.lock().unwrap().clients.insert(
            client_id.to_string(),
            ClientCredential::Secret(secret.to_string()),
        );
    }

    pub fn register_certificate(&self, client_id: &str, certificate_pem: &[u8]) {
        let certificate = X509::from_pem(certificate_pem).expect("certificate PEM");
        self.registry.lock().unwrap().clients.insert(
            client_id.to_string(),
            ClientCredential::Certificate(certificate),
        );
    }

    pub fn register_identity(&self, client_id: &str) {
        self.registry
            .lock()
            .unwrap()
            .identities
            .push(client_id.to_string());
    }

    /// How many tokens were handed out.
    pub fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }

    /// One line per request: method, path, and what the server decided.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Shared {
    port: u16,
    tenant: String,
    registry: Arc<Mutex<Registry>>,
    issued: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    signing_key: PKey<Private>,
}

struct Answer {
    status: u16,
    body: serde_json::Value,
    note: String,
}

fn refuse(status: u16, error: &str, description: &str) -> Answer {
    Answer {
        status,
        body: serde_json::json!({
            "error": error,
            "error_description": format!("{description}\r\nTrace ID: 0\r\nTimestamp: now"),
            "error_codes": [],
        }),
        note: format!("refused: {error}: {description}"),
    }
}

impl Shared {
    fn serve<S: Read + Write>(&self, stream: S) {
        let mut reader = BufReader::new(stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        let mut headers: HashMap<String, String> = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let target = parts.next().unwrap_or_default().to_string();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let answer = if method == "POST" && path == format!("/{}/oauth2/v2.0/token", self.tenant) {
            self.token(path, &form(&String::from_utf8_lossy(&body)))
        } else if method == "POST" && path.ends_with("/oauth2/v2.0/token") {
            refuse(400, "invalid_request", "AADSTS90002: Tenant not found.")
        } else if method == "GET" && path == "/msi/token" {
            self.managed_identity(&form(query), &headers)
        } else {
            refuse(404, "not_found", "no such endpoint")
        };
        self.requests
            .lock()
            .unwrap()
            .push(format!("{method} {path}: {}", answer.note));
        let body = answer.body.to_string();
        let reason = match answer.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            _ => "Error",
        };
        let response = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            answer.status,
            body.len()
        );
        let mut stream = reader.into_inner();
        let _ = stream.write_all(response.as_bytes());
        let _ = stream.flush();
    }

    fn token(&self, path: &str, form: &HashMap<String, String>) -> Answer {
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return refuse(400, "unsupported_grant_type", "AADSTS70003: grant type");
        }
        if form.get("scope").map(String::as_str) != Some("https://storage.azure.com/.default") {
            return refuse(400, "invalid_scope", "AADSTS70011: unexpected scope");
        }
        let Some(client_id) = form.get("client_id") else {
            return refuse(400, "invalid_request", "AADSTS900144: client_id missing");
        };
        let registered = self
            .registry
            .lock()
            .unwrap()
            .clients
            .get(client_id)
            .cloned();
        let Some(registered) = registered else {
            return refuse(
                400,
                "unauthorized_client",
                "AADSTS700016: Application not found in the directory.",
            );
        };
        match registered {
            ClientCredential::Secret(secret) => {
                if form.get("client_secret") != Some(&secret) {
                    return refuse(
                        401,
                        "invalid_client",
                        "AADSTS7000215: Invalid client secret provided.",
                    );
                }
            }
            ClientCredential::Certificate(certificate) => {
                if form.get("client_assertion_type").map(String::as_str)
                    != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
                {
                    return refuse(400, "invalid_request", "AADSTS7000218: assertion missing");
                }
                let audience = format!("https://127.0.0.1:{}{path}", self.port);
                let assertion = form.get("client_assertion").cloned().unwrap_or_default();
                match verify_assertion(&assertion, &certificate, client_id, &audience) {
                    Ok(true) => return self.issue(&format!("{client_id} (with x5c)"), false),
                    Ok(false) => {}
                    Err(why) => return refuse(401, "invalid_client", &why),
                }
            }
        }
        self.issue(client_id, false)
    }

    fn managed_identity(
        &self,
        query: &HashMap<String, String>,
        headers: &HashMap<String, String>,
    ) -> Answer {
        if headers.get("metadata").map(String::as_str) != Some("true") {
            return refuse(
                400,
                "invalid_request",
                "Required metadata header not specified",
            );
        }
        if query.get("resource").map(String::as_str) != Some("https://storage.azure.com") {
            return refuse(400, "invalid_resource", "unexpected resource");
        }
        let client_id = query.get("client_id").cloned().unwrap_or_default();
        if !self
            .registry
            .lock()
            .unwrap()
            .identities
            .contains(&client_id)
        {
            return refuse(
                400,
                "invalid_request",
                "Identity not found for the given client_id",
            );
        }
        self.issue(&client_id, true)
    }

    fn issue(&self, client_id: &str, imds: bool) -> Answer {
        let now = unix_now();
        let header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
        let claims = serde_json::json!({
            "aud": "https://storage.azure.com",
            "iss": format!("https://sts.windows.net/{}/", self.tenant),
            "iat": now,
            "nbf": now,
            "exp": now + 3600,
            "appid": client_id,
            "tid": self.tenant,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let mut signer =
            openssl::sign::Signer::new(MessageDigest::sha256(), &self.signing_key).unwrap();
        signer.update(input.as_bytes()).unwrap();
        let token = format!("{input}.{}", b64url(&signer.sign_to_vec().unwrap()));
        self.issued.fetch_add(1, Ordering::SeqCst);
        let body = if imds {
            serde_json::json!({
                "access_token": token,
                "expires_in": "3600",
                "expires_on": (now + 3600).to_string(),
                "resource": "https://storage.azure.com",
                "token_type": "Bearer",
            })
        } else {
            serde_json::json!({
                "access_token": token,
                "expires_in": 3600,
                "token_type": "Bearer",
            })
        };
        Answer {
            status: 200,
            body,
            note: format!("issued a token to {client_id}"),
        }
    }
}

/// Checks an RS256 client assertion as Entra ID does for a registered certificate; true when
/// the header carries the chain (`x5c`), whose first entry must then be that certificate.
fn verify_assertion(
    assertion: &str,
    certificate: &X509,
    client_id: &str,
    audience: &str,
) -> Result<bool, String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 {
        return Err("AADSTS50027: JWT token is invalid or malformed.".into());
    }
    let header: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[0]).ok_or("AADSTS50027: header")?)
            .map_err(|_| "AADSTS50027: header is not JSON")?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64url_decode(parts[1]).ok_or("AADSTS50027: claims")?)
            .map_err(|_| "AADSTS50027: claims are not JSON")?;
    let signature = b64url_decode(parts[2]).ok_or("AADSTS50027: signature")?;
    if header["alg"] != "RS256" {
        return Err("AADSTS5002738: only RS256 is accepted".into());
    }
    let thumbprint = b64url(&certificate.digest(MessageDigest::sha1()).unwrap());
    if header["x5t"].as_str() != Some(thumbprint.as_str()) {
        return Err(
            "AADSTS700027: The certificate with identifier used to sign the client assertion \
             is not registered on application."
                .into(),
        );
    }
    let key = certificate.public_key().unwrap();
    let mut verifier = openssl::sign::Verifier::new(MessageDigest::sha256(), &key).unwrap();
    verifier
        .update(format!("{}.{}", parts[0], parts[1]).as_bytes())
        .unwrap();
    if !verifier.verify(&signature).unwrap_or(false) {
        return Err("AADSTS700027: Client assertion contains an invalid signature.".into());
    }
    if claims["aud"].as_str() != Some(audience) {
        return Err(format!(
            "AADSTS700212: No matching federated identity record found for presented \
             assertion audience '{}'.",
            claims["aud"]
        ));
    }
    if claims["iss"].as_str() != Some(client_id) || claims["sub"].as_str() != Some(client_id) {
        return Err("AADSTS700021: Client assertion application identifier doesn't match".into());
    }
    let exp = claims["exp"].as_u64().unwrap_or(0);
    if exp <= unix_now() {
        return Err("AADSTS700024: Client assertion is not within its valid time range.".into());
    }
    match header["x5c"].as_array() {
        None => Ok(false),
        Some(chain) => {
            let leaf = chain
                .first()
                .and_then(|c| c.as_str())
                .and_then(|c| openssl::base64::decode_block(c).ok());
            if leaf != certificate.to_der().ok() {
                return Err("AADSTS700027: x5c does not start with the signing certificate".into());
            }
            Ok(true)
        }
    }
}

fn b64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn b64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut standard = text.replace('-', "+").replace('_', "/");
    while !standard.len().is_multiple_of(4) {
        standard.push('=');
    }
    openssl::base64::decode_block(&standard).ok()
}

/// `a=b&c=d` with `+` and `%XX` decoded.
fn form(text: &str) -> HashMap<String, String> {
    let decode = |s: &str| -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}
