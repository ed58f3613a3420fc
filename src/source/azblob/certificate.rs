//! Service principal sign-in with a client certificate, which object_store does not offer.
//!
//! Microsoft Entra ID's client-credentials grant accepts, instead of a secret, a JWT "client
//! assertion" signed with the certificate's private key. The header names the certificate by
//! its SHA-1 thumbprint (`x5t`) and, when the tenant uses subject-name/issuer authentication,
//! carries the chain (`x5c`). The token is cached until shortly before it expires, in a
//! process-wide table, because a new source (and credential) is built for every sync.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::{header, Method, Request};
use object_store::azure::AzureCredential;
use object_store::client::{HttpClient, HttpRequestBody};
use object_store::CredentialProvider;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::x509::X509;

use crate::source::objects::error::{chain_kind, kind_of_status, ErrorKind};

/// Why a client certificate cannot be used. Never quotes the input.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(
        "the PEM client certificate holds no readable private key (it must contain the key and \
         the certificate; an encrypted key needs its password)"
    )]
    PemKey,
    #[error("the PEM client certificate holds no readable certificate")]
    PemCertificate,
    #[error(
        "the client certificate is neither PEM nor PKCS#12 (base64 of either is expected inline)"
    )]
    Format,
    #[error("cannot open the PKCS#12 client certificate: wrong or missing password")]
    Pkcs12Password,
    #[error("the PKCS#12 client certificate holds no private key")]
    Pkcs12Key,
    #[error(
        "the client certificate's key is not an RSA key, which Entra ID requires for client \
         assertions"
    )]
    NotRsa,
    #[error("no certificate in the client certificate file matches its private key")]
    NoMatchingCertificate,
    #[error("no randomness: {0}")]
    Random(#[source] openssl::error::ErrorStack),
    #[error("cannot sign the client assertion: {0}")]
    Sign(#[source] openssl::error::ErrorStack),
}

/// The audience every Azure Storage token is asked for.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// A token is renewed when less than this is left of its lifetime.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// How long a client assertion is valid (Entra ID accepts up to ten minutes).
const ASSERTION_LIFETIME: u64 = 600;

/// A certificate with its private key, parsed from PEM (key and certificates in one file) or
/// PKCS#12 (optionally password protected).
#[derive(Clone)]
pub struct ClientCertificate {
    key: PKey<Private>,
    /// The leaf (the certificate of `key`) first, then the rest of the chain.
    chain: Vec<X509>,
}

impl std::fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("thumbprint", &self.thumbprint())
            .finish_non_exhaustive()
    }
}

impl ClientCertificate {
    /// Parses `bytes`; `password` decrypts a PKCS#12 file or an encrypted PEM key. Errors never
    /// quote the input.
    pub fn parse(bytes: &[u8], password: Option<&str>) -> Result<Self, CertificateError> {
        let is_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
        let (key, mut certs) = if is_pem {
            let key = match password {
                Some(p) if !p.is_empty() => {
                    PKey::private_key_from_pem_passphrase(bytes, p.as_bytes())
                }
                _ => PKey::private_key_from_pem(bytes),
            }
            .map_err(|_| CertificateError::PemKey)?;
            let certs =
                X509::stack_from_pem(bytes).map_err(|_| CertificateError::PemCertificate)?;
            (key, certs)
        } else {
            let pkcs12 =
                openssl::pkcs12::Pkcs12::from_der(bytes).map_err(|_| CertificateError::Format)?;
            let parsed = pkcs12
                .parse2(password.unwrap_or(""))
                .map_err(|_| CertificateError::Pkcs12Password)?;
            let key = parsed.pkey.ok_or(CertificateError::Pkcs12Key)?;
            let mut certs: Vec<X509> = parsed.cert.into_iter().collect();
            if let Some(ca) = parsed.ca {
                certs.extend(ca);
            }
            (key, certs)
        };
        if key.rsa().is_err() {
            return Err(CertificateError::NotRsa);
        }
        let leaf = certs
            .iter()
            .position(|c| c.public_key().is_ok_and(|pk| pk.public_eq(&key)))
            .ok_or(CertificateError::NoMatchingCertificate)?;
        let leaf = certs.remove(leaf);
        certs.insert(0, leaf);
        Ok(ClientCertificate { key, chain: certs })
    }

    /// base64url of the leaf certificate's SHA-1 digest: the `x5t` header.
    pub fn thumbprint(&self) -> String {
        self.chain[0]
            .digest(MessageDigest::sha1())
            .map(|d| base64url(&d))
            .unwrap_or_default()
    }

    /// A signed client assertion for `audience` (the token endpoint URL).
    pub fn assertion(
        &self,
        client_id: &str,
        audience: &str,
        send_chain: bool,
    ) -> Result<String, CertificateError> {
        let mut header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": self.thumbprint(),
        });
        if send_chain {
            let chain: Vec<String> = self
                .chain
                .iter()
                .filter_map(|c| c.to_der().ok())
                .map(|der| openssl::base64::encode_block(&der))
                .collect();
            header["x5c"] = serde_json::json!(chain);
        }
        let now = unix_now();
        let mut jti = [0u8; 16];
        openssl::rand::rand_bytes(&mut jti).map_err(CertificateError::Random)?;
        let claims = serde_json::json!({
            "aud": audience,
            "iss": client_id,
            "sub": client_id,
            "jti": hex::encode(jti),
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        let signing_input = format!(
            "{}.{}",
            base64url(header.to_string().as_bytes()),
            base64url(claims.to_string().as_bytes())
        );
        let signature = openssl::sign::Signer::new(MessageDigest::sha256(), &self.key)
            .and_then(|mut signer| {
                signer.update(signing_input.as_bytes())?;
                signer.sign_to_vec()
            })
            .map_err(CertificateError::Sign)?;
        Ok(format!("{signing_input}.{}", base64url(&signature)))
    }
}

pub fn base64url(bytes: &[u8]) -> String {
    openssl::base64::encode_block(bytes)
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why the token endpoint gave no token; the message is a finished clause, safe to show (no
/// assertion, no key), so the source's explanation takes it as it is.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Assertion(#[source] CertificateError),
    #[error("invalid token endpoint URL {0} (check authorityHost)")]
    InvalidUrl(String),
    #[error("cannot reach the token endpoint {url}: {cause}")]
    Unreachable {
        url: String,
        /// The transport's chain on one line.
        cause: String,
        kind: ErrorKind,
    },
    #[error("reading the token endpoint's answer: {0}")]
    Answer(#[source] object_store::client::HttpError),
    #[error("the token endpoint {url} refused the client certificate (HTTP {status}{detail})")]
    Refused {
        url: String,
        status: u16,
        /// `, <error>: <description>` from the answer (see `aad_error_detail`).
        detail: String,
    },
    #[error("the token endpoint {0} answered without an access_token")]
    NoToken(String),
}

impl TokenError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenError::Assertion(_) | TokenError::NoToken(_) => ErrorKind::Internal,
            TokenError::InvalidUrl(_) => ErrorKind::Config,
            TokenError::Unreachable { kind, .. } => *kind,
            TokenError::Answer(_) => ErrorKind::Network,
            TokenError::Refused { status, .. } => match kind_of_status(*status) {
                ErrorKind::Network => ErrorKind::Network,
                _ => ErrorKind::Auth,
            },
        }
    }
}

type Cached = (Arc<AzureCredential>, Instant);

/// Tokens by (token URL, client id, certificate thumbprint), shared by every source.
fn token_cache() -> &'static Mutex<HashMap<String, Cached>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, Cached>>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// object_store credential provider for the client-certificate flow.
#[derive(Debug)]
pub struct ClientCertificateCredential {
    token_url: String,
    client_id: String,
    certificate: ClientCertificate,
    send_chain: bool,
    http: HttpClient,
    /// Held while looking up or fetching a token, so that the concurrent first requests of a
    /// sync (listing, `.sourceignore`) ask the token endpoint once.
    refresh: tokio::sync::Mutex<()>,
}

impl ClientCertificateCredential {
    /// `authority_host` without a trailing slash, e.g. `https://login.microsoftonline.com`.
    pub fn new(
        authority_host: &str,
        tenant_id: &str,
        client_id: &str,
        certificate: ClientCertificate,
        send_chain: bool,
        http: HttpClient,
    ) -> Self {
        ClientCertificateCredential {
            token_url: format!(
                "{}/{}/oauth2/v2.0/token",
                authority_host.trim_end_matches('/'),
                tenant_id
            ),
            client_id: client_id.to_string(),
            certificate,
            send_chain,
            http,
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cache_key(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.token_url,
            self.client_id,
            self.certificate.thumbprint(),
            self.send_chain
        )
    }

    async fn token(&self) -> Result<Arc<AzureCredential>, TokenError> {
        let _single_flight = self.refresh.lock().await;
        let key = self.cache_key();
        if let Some((token, expiry)) = token_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if Instant::now() + RENEW_BEFORE < *expiry {
                return Ok(token.clone());
            }
        }
        let assertion = self
            .certificate
            .assertion(&self.client_id, &self.token_url, self.send_chain)
            .map_err(TokenError::Assertion)?;
        let body = form(&[
            ("client_id", &self.client_id),
            ("scope", STORAGE_SCOPE),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", ASSERTION_TYPE),
            ("client_assertion", &assertion),
        ]);
        let request = Request::builder()
            .method(Method::POST)
            .uri(&self.token_url)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(HttpRequestBody::from(body))
            .map_err(|_| TokenError::InvalidUrl(self.token_url.clone()))?;
        let response = self
            .http
            .execute(request)
            .await
            .map_err(|e| TokenError::Unreachable {
                url: self.token_url.clone(),
                cause: crate::error::chain(&e),
                kind: chain_kind(&e).unwrap_or(ErrorKind::Network),
            })?;
        let status = response.status();
        let bytes = response
            .into_body()
            .bytes()
            .await
            .map_err(TokenError::Answer)?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        if !status.is_success() {
            return Err(TokenError::Refused {
                url: self.token_url.clone(),
                status: status.as_u16(),
                detail: super::aad_error_detail(&json),
            });
        }
        let access_token = json["access_token"]
            .as_str()
            .ok_or_else(|| TokenError::NoToken(self.token_url.clone()))?;
        let expires_in = json["expires_in"]
            .as_u64()
            .or_else(|| json["expires_in"].as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(3600);
        let token = Arc::new(AzureCredential::BearerToken(access_token.to_string()));
        let expiry = Instant::now() + Duration::from_secs(expires_in);
        token_cache()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (token.clone(), expiry));
        Ok(token)
    }
}

impl CredentialProvider for ClientCertificateCredential {
    type Credential = AzureCredential;

    // The trait is declared with `async_trait`; this is the signature that macro produces.
    fn get_credential<'life0, 'async_trait>(
        &'life0 self,
    ) -> Pin<
        Box<dyn Future<Output = object_store::Result<Arc<AzureCredential>>> + Send + 'async_trait>,
    >
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            self.token()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "MicrosoftAzure",
                    source: Box::new(e),
                })
        })
    }
}

/// `application/x-www-form-urlencoded` encoding.
fn form(pairs: &[(&str, &str)]) -> String {
    let encode = |s: &str| -> String {
        let mut out = String::with_capacity(s.len());
        for b in s.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    out.push(b as char)
                }
                b' ' => out.push('+'),
                _ => out.push_str(&format!("%{b:02X}")),
            }
        }
        out
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encoding_escapes_reserved_characters() {
        assert_eq!(
            form(&[("scope", STORAGE_SCOPE), ("a b", "c&d")]),
            "scope=https%3A%2F%2Fstorage.azure.com%2F.default&a+b=c%26d"
        );
    }

    #[test]
    fn base64url_has_no_padding_or_plus() {
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }
}
