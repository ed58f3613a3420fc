//! `azblob` sources: an Azure Blob Storage container (Flux's Bucket with `provider: azure`).
//!
//! Blob I/O goes through object_store's Azure client. Every sign-in mode of
//! `az k8s-configuration flux create` maps onto it: account key, SAS token, service principal
//! with a secret, managed identity, and (the one object_store lacks, see [`certificate`]) a
//! service principal with a client certificate. `localAuthRef` names a directory holding
//! Flux's secret keys; it is read again at every sync, so rotating a key needs no restart.
//!
//! Listing, the revision, ignore rules and the download are the shared object-source layer's;
//! this module only says how to reach the container, how Azure's ETags enter the revision
//! (hex-encoded, as source-controller does), and how Azure's failures read.

pub mod certificate;
pub(crate) mod config;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::{HttpConnector, ReqwestConnector};
use object_store::{ClientOptions, ObjectStore};

use self::certificate::{ClientCertificate, ClientCertificateCredential, TokenError};
use self::config::{AzureAuth, AzureBlobSettings};
use super::objects::error::{chain_kind, http_answer, request_kind, transport, without_urls};
use super::objects::{self, ErrorKind, ObjectError, ObjectSource, Reason};

use crate::vocab::SecretValue;

/// Entra ID's public-cloud token endpoint base.
pub const DEFAULT_AUTHORITY_HOST: &str = "https://login.microsoftonline.com";
/// Where a managed identity gets its token when no endpoint is configured (Azure's instance
/// metadata service, object_store's default too).
const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// An Azure Blob container (or a prefix of one) as a source.
#[derive(Debug, Clone)]
pub struct AzureBlobSource {
    /// `<namespace>/<name>`, for logs.
    pub id: String,
    /// The account endpoint, without a trailing `/`.
    pub endpoint: String,
    pub settings: AzureBlobSettings,
    /// The source's `ignore` field.
    pub ignore: Option<String>,
}

/// The sign-in resolved for one sync (secrets read, `localAuthRef` expanded).
enum Credential {
    Anonymous,
    AccountKey(String),
    Sas(Vec<(String, String)>),
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: String,
    },
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        certificate: ClientCertificate,
        send_chain: bool,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
}

impl AzureBlobSource {
    /// Where this source reads from, for messages: `<endpoint>/<container>[/<prefix>]`.
    pub fn location(&self) -> String {
        match &self.settings.prefix {
            Some(prefix) => format!(
                "container {} (prefix {prefix}) at {}",
                self.settings.container, self.endpoint
            ),
            None => format!("container {} at {}", self.settings.container, self.endpoint),
        }
    }

    /// A setting or credential that cannot work as written.
    fn setting(&self, clause: impl Into<String>) -> ObjectError {
        self.fail(ErrorKind::Config, Reason::Setting(clause.into()))
    }

    /// The storage account's name: the first label of `<account>.blob.core.windows.net`, or
    /// the first path segment for path-style endpoints (an IP address or `localhost`, as
    /// Azurite and Azure Stack use).
    pub fn account_name(&self) -> Result<String, ObjectError> {
        account_name(&self.endpoint).ok_or_else(|| {
            self.setting("cannot tell the storage account name from the endpoint URL")
        })
    }

    /// The authority host: `localAuthRef`'s `authorityHost`, else the config's, else Azure's
    /// public cloud.
    fn authority_host(&self, from_secret: Option<String>) -> String {
        from_secret
            .or_else(|| self.settings.authority_host.clone())
            .unwrap_or_else(|| DEFAULT_AUTHORITY_HOST.to_string())
            .trim_end_matches('/')
            .to_string()
    }

    /// The managed-identity endpoint: config, then the environment (as Azure SDKs read it).
    fn msi_endpoint(&self) -> Option<String> {
        self.settings.msi_endpoint.clone().or_else(|| {
            ["IDENTITY_ENDPOINT", "MSI_ENDPOINT"]
                .iter()
                .find_map(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
        })
    }

    /// Reads secrets and `localAuthRef`. The second value is an authority host from the
    /// secret directory, if it names one.
    async fn credential(&self) -> Result<(Credential, Option<String>), ObjectError> {
        Ok(match &self.settings.auth {
            AzureAuth::Anonymous => (Credential::Anonymous, None),
            AzureAuth::AccountKey(key) => (
                Credential::AccountKey(self.secret_text(key, "accountKeyFile").await?),
                None,
            ),
            AzureAuth::SasToken(sas) => (
                Credential::Sas(self.sas_pairs(&self.secret_text(sas, "sasTokenFile").await?)?),
                None,
            ),
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => (
                Credential::ClientSecret {
                    tenant_id: tenant_id.clone(),
                    client_id: client_id.clone(),
                    // Kept as written: a client secret may end in spaces.
                    secret: match secret {
                        SecretValue::Inline(inline) => inline.0.clone(),
                        SecretValue::File(_) => {
                            self.secret_text(secret, "spClientSecretFile").await?
                        }
                    },
                },
                None,
            ),
            AzureAuth::ClientCertificate {
                tenant_id,
                client_id,
                certificate,
                password,
                send_chain,
            } => {
                // Inline it is base64 (as the az CLI takes it); a file holds it raw.
                let bytes = match certificate {
                    SecretValue::Inline(inline) => decode_base64(&inline.0).ok_or_else(|| {
                        self.setting("spClientCert is not base64 of a PEM or PKCS#12 certificate")
                    })?,
                    SecretValue::File(_) => {
                        self.secret_bytes(certificate, "spClientCertFile").await?
                    }
                };
                let password = match password {
                    Some(p) => Some(self.secret_text(p, "spClientCertPasswordFile").await?),
                    None => None,
                };
                let certificate =
                    ClientCertificate::parse(&bytes, password.as_deref()).map_err(|source| {
                        self.fail(
                            ErrorKind::Config,
                            Reason::Credential {
                                origin: "spClientCert".into(),
                                source: Box::new(source),
                            },
                        )
                    })?;
                (
                    Credential::ClientCertificate {
                        tenant_id: tenant_id.clone(),
                        client_id: client_id.clone(),
                        certificate,
                        send_chain: *send_chain,
                    },
                    None,
                )
            }
            AzureAuth::ManagedIdentity { client_id } => (
                Credential::ManagedIdentity {
                    client_id: client_id.clone(),
                },
                None,
            ),
            AzureAuth::LocalAuthRef(dir) => {
                let keys = SecretKeys::read(dir).await.map_err(|source| {
                    self.fail(
                        ErrorKind::Config,
                        Reason::Read {
                            what: format!("cannot read localAuthRef directory {}", dir.display()),
                            source,
                        },
                    )
                })?;
                self.local_auth_ref(&keys, &format!("localAuthRef {}", dir.display()))?
            }
            AzureAuth::LocalAuthSecret(reference) => {
                let data = crate::cluster::read_secret(reference)
                    .await
                    .map_err(|e| self.fail(ErrorKind::from(&e), Reason::Secret(e)))?;
                let origin = format!("the Kubernetes Secret `{reference}`");
                self.local_auth_ref(&SecretKeys(data), &origin)?
            }
        })
    }

    /// A secret's text without surrounding whitespace (see [`Self::secret_bytes`]).
    async fn secret_text(&self, value: &SecretValue, key: &str) -> Result<String, ObjectError> {
        let bytes = self.secret_bytes(value, key).await?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_string())
    }

    /// A secret's bytes; a file is read now (so every sync sees the current one).
    async fn secret_bytes(&self, value: &SecretValue, key: &str) -> Result<Vec<u8>, ObjectError> {
        match value {
            SecretValue::Inline(inline) => Ok(inline.0.clone().into_bytes()),
            SecretValue::File(path) => match tokio::fs::read(path).await {
                Ok(bytes) if !bytes.is_empty() => Ok(bytes),
                Ok(_) => Err(self.setting(format!("{key} {} is empty", path.display()))),
                Err(source) => Err(self.fail(
                    ErrorKind::Config,
                    Reason::Read {
                        what: format!("cannot read {key} {}", path.display()),
                        source,
                    },
                )),
            },
        }
    }

    /// Flux's order: tenantId + clientId + clientSecret; tenantId + clientId +
    /// clientCertificate; clientId alone (managed identity); accountKey; sasKey. `origin`
    /// names where the keys are, for messages.
    fn local_auth_ref(
        &self,
        keys: &SecretKeys,
        origin: &str,
    ) -> Result<(Credential, Option<String>), ObjectError> {
        let authority_host = keys.text("authorityHost");
        let client_id = keys.text("clientId");
        let tenant_id = keys.text("tenantId");
        if let (Some(tenant_id), Some(client_id)) = (&tenant_id, &client_id) {
            if let Some(secret) = keys.text("clientSecret") {
                return Ok((
                    Credential::ClientSecret {
                        tenant_id: tenant_id.clone(),
                        client_id: client_id.clone(),
                        secret,
                    },
                    authority_host,
                ));
            }
            if let Some(bytes) = keys.bytes("clientCertificate") {
                let password = keys.text("clientCertificatePassword");
                let certificate =
                    ClientCertificate::parse(&bytes, password.as_deref()).map_err(|source| {
                        self.fail(
                            ErrorKind::Config,
                            Reason::Credential {
                                origin: format!("clientCertificate in {origin}"),
                                source: Box::new(source),
                            },
                        )
                    })?;
                let send_chain = keys
                    .text("clientCertificateSendChain")
                    .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
                return Ok((
                    Credential::ClientCertificate {
                        tenant_id: tenant_id.clone(),
                        client_id: client_id.clone(),
                        certificate,
                        send_chain,
                    },
                    authority_host,
                ));
            }
        }
        if tenant_id.is_none() {
            if let Some(client_id) = client_id {
                return Ok((
                    Credential::ManagedIdentity {
                        client_id: Some(client_id),
                    },
                    authority_host,
                ));
            }
        }
        if let Some(key) = keys.text("accountKey") {
            return Ok((Credential::AccountKey(key), authority_host));
        }
        if let Some(sas) = keys.text("sasKey") {
            return Ok((Credential::Sas(self.sas_pairs(&sas)?), authority_host));
        }
        Err(self.setting(format!(
            "{origin} holds no usable credential: expected `accountKey`, `sasKey`, \
             `tenantId` + `clientId` + `clientSecret`, `tenantId` + `clientId` + \
             `clientCertificate`, or `clientId` alone"
        )))
    }

    fn sas_pairs(&self, sas: &str) -> Result<Vec<(String, String)>, ObjectError> {
        let pairs = object_store::azure::split_sas(sas.trim())
            .map_err(|_| self.setting("the SAS token is not a valid query string"))?;
        if pairs.is_empty() {
            return Err(self.setting("the SAS token is empty"));
        }
        Ok(pairs)
    }

    async fn client_options(&self, authority_host: &str) -> Result<ClientOptions, ObjectError> {
        let plain_http = |url: &str| url.to_ascii_lowercase().starts_with("http://");
        // Every host this source may talk to gets the shared proxy rule's answer: the blob
        // endpoint, the token endpoint, and the managed-identity endpoint (Azure's instance
        // metadata address when none is configured).
        let msi = self
            .msi_endpoint()
            .unwrap_or_else(|| IMDS_ENDPOINT.to_string());
        objects::client_options(
            plain_http(&self.endpoint) || plain_http(authority_host),
            self.settings.ca_file.as_deref(),
            &[&self.endpoint, authority_host, &msi],
        )
        .await
        .map_err(|reason| self.fail(ErrorKind::Config, reason))
    }

    /// The container as an object store, signed in as configured.
    pub async fn store(&self) -> Result<Arc<dyn ObjectStore>, ObjectError> {
        let (credential, secret_authority) = self.credential().await?;
        let authority_host = self.authority_host(secret_authority);
        let options = self.client_options(&authority_host).await?;
        let mut builder = MicrosoftAzureBuilder::new()
            .with_account(self.account_name()?)
            .with_container_name(&self.settings.container)
            .with_endpoint(self.endpoint.clone())
            .with_allow_http(options_allow_http(&self.endpoint))
            .with_retry(objects::retry_config());
        builder = match credential {
            Credential::Anonymous => builder.with_skip_signature(true),
            Credential::AccountKey(key) => {
                if decode_base64(&key).is_none() {
                    return Err(self.setting("the account key is not valid base64"));
                }
                builder.with_access_key(key)
            }
            Credential::Sas(pairs) => builder.with_sas_authorization(pairs),
            Credential::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => builder
                .with_client_secret_authorization(client_id, secret, tenant_id)
                .with_authority_host(authority_host),
            Credential::ClientCertificate {
                tenant_id,
                client_id,
                certificate,
                send_chain,
            } => {
                let http = ReqwestConnector::default().connect(&options).map_err(|e| {
                    self.fail(
                        ErrorKind::Internal,
                        Reason::Setting(crate::error::chain(&e)),
                    )
                })?;
                builder.with_credentials(Arc::new(ClientCertificateCredential::new(
                    &authority_host,
                    &tenant_id,
                    &client_id,
                    certificate,
                    send_chain,
                    http,
                )))
            }
            Credential::ManagedIdentity { client_id } => {
                let mut builder = builder.with_credential_type("managed_identity");
                if let Some(endpoint) = self.msi_endpoint() {
                    builder = builder.with_msi_endpoint(endpoint);
                }
                if let Some(client_id) = client_id {
                    builder = builder.with_client_id(client_id);
                }
                builder
            }
        };
        let store = builder
            .with_client_options(options)
            .build()
            .map_err(|e| self.setting(format!("invalid settings: {}", crate::error::chain(&e))))?;
        Ok(Arc::new(store))
    }

    /// One sentence for a failed request: what Azure (or the token endpoint) said, without
    /// URLs that may carry a SAS token and without any secret.
    pub fn explain(&self, error: &object_store::Error) -> ObjectError {
        let token_endpoint = self.token_endpoint();
        let explained = explain(error, self.credential_name(), &token_endpoint);
        // The proxy of the host the failed request went to.
        let url = if explained.token_request && !token_endpoint.is_empty() {
            token_endpoint.as_str()
        } else {
            self.endpoint.as_str()
        };
        let (kind, clause) =
            objects::blame_proxy(explained.kind, explained.clause, explained.no_answer, url);
        self.fail(kind, Reason::Request(clause))
    }

    /// The token endpoint the configured sign-in talks to, for messages ("" when unknown).
    fn token_endpoint(&self) -> String {
        match &self.settings.auth {
            AzureAuth::ClientSecret { tenant_id, .. } => format!(
                "{}/{tenant_id}/oauth2/v2.0/token",
                self.authority_host(None)
            ),
            AzureAuth::ManagedIdentity { .. } => self
                .msi_endpoint()
                .unwrap_or_else(|| "of the instance metadata service".to_string()),
            _ => String::new(),
        }
    }

    fn credential_name(&self) -> &'static str {
        match &self.settings.auth {
            AzureAuth::Anonymous => "anonymous access",
            AzureAuth::AccountKey(_) => "the account key",
            AzureAuth::SasToken(_) => "the SAS token",
            AzureAuth::ClientSecret { .. } => "the service principal's client secret",
            AzureAuth::ClientCertificate { .. } => "the service principal's client certificate",
            AzureAuth::ManagedIdentity { .. } => "the managed identity",
            AzureAuth::LocalAuthRef(dir) => local_auth_ref_name(dir),
            // Which keys the Secret holds is known only while it is read.
            AzureAuth::LocalAuthSecret(_) => "the credential from the Kubernetes Secret",
        }
    }
}

/// Which of Flux's keys a `localAuthRef` directory signs in with, in the order
/// [`AzureBlobSource::local_auth_ref`] picks them (file names only; nothing is read). Only
/// an error's wording needs it, so these few `stat` calls happen on the failure path alone.
fn local_auth_ref_name(dir: &Path) -> &'static str {
    let has = |key: &str| dir.join(key).is_file();
    let service_principal = has("tenantId") && has("clientId");
    if service_principal && has("clientSecret") {
        "the client secret from localAuthRef"
    } else if service_principal && has("clientCertificate") {
        "the client certificate from localAuthRef"
    } else if !has("tenantId") && has("clientId") {
        "the managed identity from localAuthRef"
    } else if has("accountKey") {
        "the account key from localAuthRef"
    } else if has("sasKey") {
        "the SAS key from localAuthRef"
    } else {
        "the localAuthRef credential"
    }
}

fn options_allow_http(endpoint: &str) -> bool {
    endpoint.to_ascii_lowercase().starts_with("http://")
}

/// Flux writes Azure ETags into the revision hex-encoded (`fmt.Sprintf("%x", etag)` over the
/// ETag string as listed, e.g. `0x8DB...`).
pub fn revision_etag(etag: &str) -> String {
    hex::encode(etag.as_bytes())
}

/// See [`AzureBlobSource::account_name`].
pub fn account_name(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://")?.1;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => host,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path_style =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok();
    let name = if path_style {
        path.trim_start_matches('/').split('/').next()?
    } else {
        host.split('.').next()?
    };
    Some(name.to_string()).filter(|n| !n.is_empty())
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    openssl::base64::decode_block(&compact)
        .ok()
        .filter(|b| !b.is_empty())
}

/// The keys `localAuthRef` may hold, by Flux's names.
const SECRET_KEYS: [&str; 9] = [
    "authorityHost",
    "clientId",
    "tenantId",
    "clientSecret",
    "clientCertificate",
    "clientCertificatePassword",
    "clientCertificateSendChain",
    "accountKey",
    "sasKey",
];

/// Flux's secret keys for this sync: read from a directory of one file per key (a mounted
/// Kubernetes Secret, or written by hand), or a Secret's data as read through the API.
struct SecretKeys(std::collections::BTreeMap<String, Vec<u8>>);

impl SecretKeys {
    /// Every key file `dir` holds; a missing one is simply absent.
    async fn read(dir: &Path) -> std::io::Result<SecretKeys> {
        if !tokio::fs::metadata(dir).await?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        let mut keys = std::collections::BTreeMap::new();
        for key in SECRET_KEYS {
            // Unreadable counts as absent, as it did when each key was looked up on its own.
            if let Ok(bytes) = tokio::fs::read(dir.join(key)).await {
                keys.insert(key.to_string(), bytes);
            }
        }
        Ok(SecretKeys(keys))
    }

    fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).filter(|b| !b.is_empty()).cloned()
    }

    /// The value with surrounding whitespace (a trailing newline from `echo`) removed.
    fn text(&self, key: &str) -> Option<String> {
        let bytes = self.bytes(key)?;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        Some(text).filter(|t| !t.is_empty())
    }
}

/// ` : <error>: <first line of error_description>` from an Entra ID error body, or nothing.
pub fn aad_error_detail(body: &serde_json::Value) -> String {
    let code = body["error"].as_str().unwrap_or_default();
    let description = body["error_description"]
        .as_str()
        .and_then(|d| d.lines().next())
        .unwrap_or_default()
        .trim();
    match (code.is_empty(), description.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(", {code}"),
        (true, false) => format!(", {description}"),
        (false, false) => format!(", {code}: {description}"),
    }
}

/// The `<Code>` and first line of `<Message>` of an Azure Storage error body.
fn storage_error(body: &str) -> Option<(String, String)> {
    let tag = |name: &str| -> Option<String> {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].trim().to_string())
    };
    let code = tag("Code")?;
    let message = tag("Message")
        .and_then(|m| m.lines().next().map(str::to_string))
        .unwrap_or_default();
    Some((code, message))
}

/// What [`explain`] concluded about a failed request.
struct Explained {
    kind: ErrorKind,
    clause: String,
    /// No answer came (the transport failed): a proxy in between may be the cause.
    no_answer: bool,
    /// The request was for a token (to Entra ID or the managed-identity endpoint).
    token_request: bool,
}

/// Whether `error` is object_store's failure to get a token. Its credential error type is
/// private to object_store, so its message (`Error performing token request: ...`) is the
/// only form that fact has.
fn is_token_request(error: &object_store::Error) -> bool {
    crate::error::messages(error).any(|m| m.starts_with("Error performing token request"))
}

/// The reasoning behind [`AzureBlobSource::explain`].
fn explain(error: &object_store::Error, credential: &str, token_endpoint: &str) -> Explained {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        // A failure of our own certificate credential carries its finished sentence.
        if let Some(token) = e.downcast_ref::<TokenError>() {
            return Explained {
                kind: token.kind(),
                clause: token.to_string(),
                no_answer: matches!(token, TokenError::Unreachable { .. }),
                token_request: true,
            };
        }
        current = e.source();
    }
    let kind = request_kind(error);
    let token_request = is_token_request(error);
    let answered = |kind: ErrorKind, clause: String| Explained {
        kind,
        clause,
        no_answer: false,
        token_request,
    };
    if let Some((status, body)) = http_answer(error) {
        let json_start = body.find('{').unwrap_or(body.len());
        let json: serde_json::Value = serde_json::from_str(&body[json_start..]).unwrap_or_default();
        if token_request || json.get("error").is_some() {
            let kind = match kind {
                ErrorKind::Network | ErrorKind::Proxy => kind,
                _ => ErrorKind::Auth,
            };
            return answered(
                kind,
                format!(
                    "the token endpoint {token_endpoint}{}refused {credential} (HTTP {status}{})",
                    if token_endpoint.is_empty() { "" } else { " " },
                    aad_error_detail(&json)
                ),
            );
        }
        if let Some((code, message)) = storage_error(&body) {
            let (kind, hint) = match code.as_str() {
                "ContainerNotFound" => (ErrorKind::NotFound, " (check containerName)"),
                "AuthenticationFailed" | "AuthorizationFailure" => (
                    ErrorKind::Auth,
                    " (check that the credential is right and not expired)",
                ),
                _ => (kind, ""),
            };
            return answered(
                kind,
                format!(
                    "Azure refused the request made with {credential}: HTTP {status} {code}: \
                     {message}{hint}"
                ),
            );
        }
        return answered(
            kind,
            format!("Azure answered HTTP {status} to the request made with {credential}"),
        );
    }
    if let Some(http) = transport(error) {
        let place = if !token_request {
            "the endpoint".to_string()
        } else if token_endpoint.is_empty() {
            "the token endpoint".to_string()
        } else {
            format!("the token endpoint {token_endpoint}")
        };
        let detail = std::error::Error::source(http)
            .map(crate::error::chain)
            .unwrap_or_else(|| http.to_string());
        let hint = if chain_kind(http) == Some(ErrorKind::Tls) {
            " (if the server's CA is private, give it as caFile)"
        } else {
            ""
        };
        return Explained {
            kind,
            clause: format!("cannot reach {place}: {detail}{hint}"),
            no_answer: true,
            token_request,
        };
    }
    if let object_store::Error::NotFound { .. } = error {
        return answered(
            ErrorKind::NotFound,
            "not found (check containerName and prefix)".to_string(),
        );
    }
    // Other errors: the message without request URIs, which may carry a SAS token.
    answered(kind, without_urls(&crate::error::chain(error)))
}

/// How Azure plugs into the shared object-source layer.
impl ObjectSource for AzureBlobSource {
    fn prefix(&self) -> Option<&str> {
        self.settings.prefix.as_deref()
    }

    fn ignore(&self) -> Option<&str> {
        self.ignore.as_deref()
    }

    fn revision_etag(&self, etag: &str) -> String {
        revision_etag(etag)
    }

    fn connect(&self) -> impl Future<Output = Result<Arc<dyn ObjectStore>, ObjectError>> + Send {
        self.store()
    }

    fn explain_error(&self, error: &object_store::Error) -> ObjectError {
        self.explain(error)
    }

    fn store_missing(&self, error: &object_store::Error) -> bool {
        http_answer(error)
            .and_then(|(_, body)| storage_error(&body))
            .is_some_and(|(code, _)| code == "ContainerNotFound")
    }

    fn subject(&self) -> String {
        format!("azblob {}", self.location())
    }

    fn describe(&self) -> String {
        self.location()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        assert_eq!(
            account_name("https://acct.blob.core.windows.net").as_deref(),
            Some("acct")
        );
        assert_eq!(
            account_name("http://127.0.0.1:10000/devstoreaccount1").as_deref(),
            Some("devstoreaccount1")
        );
        assert_eq!(
            account_name("https://localhost:443/dev/").as_deref(),
            Some("dev")
        );
        assert_eq!(account_name("http://127.0.0.1:10000"), None);
    }

    #[test]
    fn etags_are_hex_encoded_as_flux_does() {
        assert_eq!(revision_etag("0x8D"), "30783844");
    }

    #[test]
    fn storage_error_bodies() {
        let body = "<?xml version=\"1.0\"?><Error><Code>ContainerNotFound</Code><Message>The \
                    specified container does not exist.\nRequestId:1</Message></Error>";
        assert_eq!(
            storage_error(body),
            Some((
                "ContainerNotFound".into(),
                "The specified container does not exist.".into()
            ))
        );
    }
}
