//! An `azblob` source's settings (an account endpoint, a container, and exactly one way to
//! sign in) and the rules that check them. `config` calls [`decode`] and [`settings`] for a
//! source of kind `azblob`, and [`reject_keys`] for any other.

use std::path::{Path, PathBuf};

use crate::source::config::RawShared;
use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{NodeKind, Pos, Problems};
use crate::syntax::values::{boolean, resolve};
use crate::vocab::{Secret, SecretRef, SecretValue};

/// The `azblob` kind's source keys (see [`RawAzureBlob`]).
pub const FIELDS: &[&str] = &[
    "containerName",
    "prefix",
    "accountKey",
    "accountKeyFile",
    "sasToken",
    "sasTokenFile",
    "spClientId",
    "spTenantId",
    "spClientSecret",
    "spClientSecretFile",
    "spClientCert",
    "spClientCertFile",
    "spClientCertPassword",
    "spClientCertPasswordFile",
    "spClientCertSendChain",
    "miClientId",
    "miEndpoint",
    "authorityHost",
    "localAuthRef",
    "caFile",
];
/// The `azblob` keys of a source, as written. Which of them may be combined is decided in
/// [`settings`].
#[derive(Debug, Clone, Default)]
pub struct RawAzureBlob {
    pub container_name: Option<Text>,
    pub account_key: Option<Text>,
    pub account_key_file: Option<Text>,
    pub sas_token: Option<Text>,
    pub sas_token_file: Option<Text>,
    pub sp_client_id: Option<Text>,
    pub sp_tenant_id: Option<Text>,
    pub sp_client_secret: Option<Text>,
    pub sp_client_secret_file: Option<Text>,
    pub sp_client_cert: Option<Text>,
    pub sp_client_cert_file: Option<Text>,
    pub sp_client_cert_password: Option<Text>,
    pub sp_client_cert_password_file: Option<Text>,
    pub sp_client_cert_send_chain: Option<Text>,
    pub mi_client_id: Option<Text>,
    pub mi_endpoint: Option<Text>,
    pub authority_host: Option<Text>,
}

/// Reads the azblob keys of a `source` mapping (whatever its kind: see [`reject_keys`]).
pub fn decode(fields: &Fields<'_>, problems: &mut Problems) -> RawAzureBlob {
    // An empty credential key must not quietly mean "no credential" (anonymous access).
    for key in FIELDS {
        if let Some(entry) = fields.entries.iter().find(|e| e.key == *key) {
            if entry.value.kind == NodeKind::Null {
                problems.push(entry.key_pos, format!("`{key}` must have a value"));
            }
        }
    }
    RawAzureBlob {
        container_name: fields.text("containerName", problems),
        account_key: fields.text("accountKey", problems),
        account_key_file: fields.text("accountKeyFile", problems),
        sas_token: fields.text("sasToken", problems),
        sas_token_file: fields.text("sasTokenFile", problems),
        sp_client_id: fields.text("spClientId", problems),
        sp_tenant_id: fields.text("spTenantId", problems),
        sp_client_secret: fields.text("spClientSecret", problems),
        sp_client_secret_file: fields.text("spClientSecretFile", problems),
        sp_client_cert: fields.text("spClientCert", problems),
        sp_client_cert_file: fields.text("spClientCertFile", problems),
        sp_client_cert_password: fields.text("spClientCertPassword", problems),
        sp_client_cert_password_file: fields.text("spClientCertPasswordFile", problems),
        sp_client_cert_send_chain: fields.text("spClientCertSendChain", problems),
        mi_client_id: fields.text("miClientId", problems),
        mi_endpoint: fields.text("miEndpoint", problems),
        authority_host: fields.text("authorityHost", problems),
    }
}

/// An `azblob` source: `url` is the account endpoint (`https://<account>.blob.core.windows.net`,
/// or `http://127.0.0.1:10000/devstoreaccount1` for Azurite).
#[derive(Debug, Clone)]
pub struct AzureBlobSettings {
    pub container: String,
    /// Only objects under this key prefix are fetched (keys keep the prefix, as in Flux).
    pub prefix: Option<String>,
    pub auth: AzureAuth,
    /// Token endpoint base (`https://login.microsoftonline.com` unless set), for sovereign
    /// clouds; `localAuthRef`'s `authorityHost` key overrides it.
    pub authority_host: Option<String>,
    /// Managed-identity token endpoint; unset: `IDENTITY_ENDPOINT`/`MSI_ENDPOINT` from the
    /// environment, else the instance metadata service.
    pub msi_endpoint: Option<String>,
    /// Extra PEM CA certificates trusted for the endpoint and the token endpoints.
    pub ca_file: Option<PathBuf>,
}

/// How an `azblob` source signs in; exactly one is configured.
#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// No credential: a container with public read access.
    Anonymous,
    AccountKey(SecretValue),
    SasToken(SecretValue),
    ClientSecret {
        tenant_id: String,
        client_id: String,
        secret: SecretValue,
    },
    ClientCertificate {
        tenant_id: String,
        client_id: String,
        /// PEM or PKCS#12: inline base64-encoded (as the az CLI takes it), a file raw.
        certificate: SecretValue,
        password: Option<SecretValue>,
        send_chain: bool,
    },
    ManagedIdentity {
        client_id: Option<String>,
    },
    /// A directory of Flux's secret keys (`accountKey`, `sasKey`, `tenantId`, `clientId`,
    /// `clientSecret`, `clientCertificate`, ...), read again at every sync.
    LocalAuthRef(PathBuf),
    /// The same keys in a Kubernetes Secret, read through the API at every sync.
    LocalAuthSecret(SecretRef),
}

const EXPECTED: &str = "expected the storage account endpoint, such as \
                        https://<account>.blob.core.windows.net, or \
                        http://127.0.0.1:10000/devstoreaccount1 for Azurite";

/// Why an account endpoint is refused. Never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointProblem {
    #[error("it contains a space or control character")]
    SpaceOrControl,
    #[error("it has no scheme; {EXPECTED}")]
    NoScheme,
    #[error("only http and https are supported; {EXPECTED}")]
    Scheme,
    #[error("it has no host; {EXPECTED}")]
    NoHost,
    #[error("it must not contain credentials; use accountKey, sasToken or localAuthRef")]
    Credentials,
    #[error("it must not contain a query or fragment; give a SAS token as sasToken instead")]
    Query,
    #[error("its port is not a number; {EXPECTED}")]
    BadPort,
}

/// `http(s)://host[:port][/path]` without credentials, query or fragment; returned without
/// a trailing `/`. The reason never quotes the URL.
pub fn account_endpoint(url: &str) -> Result<String, EndpointProblem> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EndpointProblem::SpaceOrControl);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(EndpointProblem::NoScheme);
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(EndpointProblem::Scheme);
    }
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    if authority.is_empty() || authority.starts_with(':') {
        return Err(EndpointProblem::NoHost);
    }
    if authority.contains('@') {
        return Err(EndpointProblem::Credentials);
    }
    if rest.contains(['?', '#']) {
        return Err(EndpointProblem::Query);
    }
    if let Some((_, port)) = authority.rsplit_once(':') {
        if !authority.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(EndpointProblem::BadPort);
        }
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Keys that only an `azblob` source may have, reported on any other kind.
pub fn reject_keys(raw: &RawAzureBlob, problems: &mut Problems) {
    let keys = [
        (&raw.container_name, "containerName"),
        (&raw.account_key, "accountKey"),
        (&raw.account_key_file, "accountKeyFile"),
        (&raw.sas_token, "sasToken"),
        (&raw.sas_token_file, "sasTokenFile"),
        (&raw.sp_client_secret_file, "spClientSecretFile"),
        (&raw.sp_client_cert_file, "spClientCertFile"),
        (
            &raw.sp_client_cert_password_file,
            "spClientCertPasswordFile",
        ),
        (&raw.sp_client_id, "spClientId"),
        (&raw.sp_tenant_id, "spTenantId"),
        (&raw.sp_client_secret, "spClientSecret"),
        (&raw.sp_client_cert, "spClientCert"),
        (&raw.sp_client_cert_password, "spClientCertPassword"),
        (&raw.sp_client_cert_send_chain, "spClientCertSendChain"),
        (&raw.mi_client_id, "miClientId"),
        (&raw.mi_endpoint, "miEndpoint"),
        (&raw.authority_host, "authorityHost"),
    ];
    for (text, key) in keys {
        if let Some(text) = text {
            problems.push(
                text.pos,
                format!("`{key}` applies only to sources of kind `azblob`"),
            );
        }
    }
}

pub fn settings(
    raw: &RawAzureBlob,
    shared: &RawShared,
    source_pos: Pos,
    local_auth_secret: Option<SecretRef>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<AzureBlobSettings> {
    let container = match &raw.container_name {
        None => {
            problems.push(
                source_pos,
                "missing required field `containerName` for a source of kind `azblob`",
            );
            None
        }
        Some(text) if !is_container_name(&text.value) => {
            problems.push(
                text.pos,
                format!(
                    "invalid containerName {:?}: expected 3 to 63 lowercase letters, digits \
                     and single '-', starting and ending with a letter or digit",
                    text.value
                ),
            );
            None
        }
        Some(text) => Some(text.value.clone()),
    };
    let prefix = shared
        .prefix
        .as_ref()
        .map(|p| p.value.trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty());
    let auth = auth(
        raw,
        shared,
        source_pos,
        local_auth_secret,
        base_dir,
        problems,
    );
    let authority_host = raw
        .authority_host
        .as_ref()
        .and_then(|text| http_url(text, "authorityHost", problems));
    let msi_endpoint = raw
        .mi_endpoint
        .as_ref()
        .and_then(|text| http_url(text, "miEndpoint", problems));
    let ca_file = shared
        .ca_file
        .as_ref()
        .map(|text| resolve(base_dir, Path::new(&text.value)));
    Some(AzureBlobSettings {
        container: container?,
        prefix,
        auth: auth?,
        authority_host,
        msi_endpoint,
        ca_file,
    })
}

/// A secret given inline (`key`) or as a file (`keyFile`), not both: its value and the
/// position of whichever was given. `Err` when the pair is wrong (already reported).
fn secret(
    inline: &Option<Text>,
    file: &Option<Text>,
    key: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Result<Option<(Pos, SecretValue)>, ()> {
    match (inline, file) {
        (Some(_), Some(file)) => {
            problems.push(
                file.pos,
                format!("give either `{key}` or `{key}File`, not both"),
            );
            Err(())
        }
        (Some(text), None) => Ok(Some((
            text.pos,
            SecretValue::Inline(Secret(text.value.clone())),
        ))),
        (None, Some(text)) => Ok(Some((
            text.pos,
            SecretValue::File(resolve(base_dir, Path::new(&text.value))),
        ))),
        (None, None) => Ok(None),
    }
}

/// Exactly one sign-in mode, complete. Messages name keys, never values.
/// `local_auth_secret` is `localAuthRef.secret`, already checked.
fn auth(
    raw: &RawAzureBlob,
    shared: &RawShared,
    source_pos: Pos,
    local_auth_secret: Option<SecretRef>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<AzureAuth> {
    let account_key = secret(
        &raw.account_key,
        &raw.account_key_file,
        "accountKey",
        base_dir,
        problems,
    );
    let sas_token = secret(
        &raw.sas_token,
        &raw.sas_token_file,
        "sasToken",
        base_dir,
        problems,
    );
    let client_secret = secret(
        &raw.sp_client_secret,
        &raw.sp_client_secret_file,
        "spClientSecret",
        base_dir,
        problems,
    );
    let client_cert = secret(
        &raw.sp_client_cert,
        &raw.sp_client_cert_file,
        "spClientCert",
        base_dir,
        problems,
    );
    let cert_password = secret(
        &raw.sp_client_cert_password,
        &raw.sp_client_cert_password_file,
        "spClientCertPassword",
        base_dir,
        problems,
    );
    let (Ok(account_key), Ok(sas_token), Ok(client_secret), Ok(client_cert), Ok(cert_password)) = (
        account_key,
        sas_token,
        client_secret,
        client_cert,
        cert_password,
    ) else {
        return None;
    };
    let pos_of = |t: &Option<Text>| t.as_ref().map(|t| t.pos);
    let pos_of_secret = |s: &Option<(Pos, SecretValue)>| s.as_ref().map(|(p, _)| *p);
    let with_cert =
        client_cert.is_some() || cert_password.is_some() || raw.sp_client_cert_send_chain.is_some();
    // (mode, position of its first key)
    let mut modes: Vec<(&str, Pos)> = Vec::new();
    let mut note = |name: &'static str, positions: &[Option<Pos>]| {
        if let Some(pos) = positions.iter().flatten().next() {
            modes.push((name, *pos));
        }
    };
    note("accountKey", &[pos_of_secret(&account_key)]);
    note("sasToken", &[pos_of_secret(&sas_token)]);
    if with_cert {
        note(
            "a service principal with a client certificate (spClientCert)",
            &[
                pos_of(&raw.sp_client_id),
                pos_of(&raw.sp_tenant_id),
                pos_of_secret(&client_cert),
                pos_of_secret(&cert_password),
                pos_of(&raw.sp_client_cert_send_chain),
            ],
        );
    }
    if client_secret.is_some() || !with_cert {
        let positions: Vec<Option<Pos>> = if with_cert {
            vec![pos_of_secret(&client_secret)]
        } else {
            vec![
                pos_of(&raw.sp_client_id),
                pos_of(&raw.sp_tenant_id),
                pos_of_secret(&client_secret),
            ]
        };
        note(
            "a service principal with a client secret (spClientSecret)",
            &positions,
        );
    }
    note(
        "a managed identity (miClientId)",
        &[pos_of(&raw.mi_client_id)],
    );
    note(
        "localAuthRef",
        &[
            pos_of(&shared.local_auth_ref),
            pos_of(&shared.local_auth_ref_secret),
        ],
    );
    if modes.len() > 1 {
        let names: Vec<&str> = modes.iter().map(|(n, _)| *n).collect();
        problems.push(
            modes[1].1,
            format!(
                "an azblob source takes exactly one way to sign in, found {}",
                names.join(" and ")
            ),
        );
        return None;
    }
    let missing = |keys: &[(bool, &str)], mode: &str, problems: &mut Problems| {
        let absent: Vec<String> = keys
            .iter()
            .filter(|(present, _)| !present)
            .map(|(_, k)| format!("`{k}`"))
            .collect();
        if absent.is_empty() {
            return false;
        }
        problems.push(
            source_pos,
            format!("{mode} also needs {}", absent.join(" and ")),
        );
        true
    };
    if let Some((_, key)) = account_key {
        return Some(AzureAuth::AccountKey(key));
    }
    if let Some((_, sas)) = sas_token {
        return Some(AzureAuth::SasToken(sas));
    }
    if with_cert {
        if missing(
            &[
                (raw.sp_client_id.is_some(), "spClientId"),
                (raw.sp_tenant_id.is_some(), "spTenantId"),
                (client_cert.is_some(), "spClientCert` or `spClientCertFile"),
            ],
            "a service principal with a client certificate",
            problems,
        ) {
            return None;
        }
        let (pos, certificate) = client_cert?;
        if let SecretValue::Inline(inline) = &certificate {
            if decode_base64(&inline.0).is_none() {
                problems.push(
                    pos,
                    "spClientCert must be the base64 encoding of a PEM or PKCS#12 \
                     certificate with its private key",
                );
                return None;
            }
        }
        return Some(AzureAuth::ClientCertificate {
            tenant_id: raw.sp_tenant_id.as_ref()?.value.clone(),
            client_id: raw.sp_client_id.as_ref()?.value.clone(),
            certificate,
            password: cert_password.map(|(_, p)| p),
            send_chain: boolean(
                &raw.sp_client_cert_send_chain,
                "spClientCertSendChain",
                problems,
            ),
        });
    }
    if raw.sp_client_id.is_some() || raw.sp_tenant_id.is_some() || client_secret.is_some() {
        if missing(
            &[
                (raw.sp_client_id.is_some(), "spClientId"),
                (raw.sp_tenant_id.is_some(), "spTenantId"),
                (
                    client_secret.is_some(),
                    "spClientSecret` or `spClientSecretFile",
                ),
            ],
            "a service principal with a client secret",
            problems,
        ) {
            return None;
        }
        return Some(AzureAuth::ClientSecret {
            tenant_id: raw.sp_tenant_id.as_ref()?.value.clone(),
            client_id: raw.sp_client_id.as_ref()?.value.clone(),
            secret: client_secret?.1,
        });
    }
    if let Some(text) = &raw.mi_client_id {
        return Some(AzureAuth::ManagedIdentity {
            client_id: Some(text.value.clone()).filter(|id| !id.is_empty()),
        });
    }
    if let Some(text) = &shared.local_auth_ref {
        return Some(AzureAuth::LocalAuthRef(resolve(
            base_dir,
            Path::new(&text.value),
        )));
    }
    if let Some(secret) = local_auth_secret {
        return Some(AzureAuth::LocalAuthSecret(secret));
    }
    if raw.mi_endpoint.is_some() {
        // A managed-identity endpoint alone means the system-assigned identity.
        return Some(AzureAuth::ManagedIdentity { client_id: None });
    }
    Some(AzureAuth::Anonymous)
}

fn http_url(text: &Text, key: &str, problems: &mut Problems) -> Option<String> {
    match account_endpoint(&text.value) {
        Ok(url) => Some(url),
        Err(reason) => {
            problems.push(text.pos, format!("invalid URL for {key}: {reason}"));
            None
        }
    }
}

/// Azure's container naming rules.
fn is_container_name(name: &str) -> bool {
    let b = name.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    (3..=63).contains(&b.len())
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && !b.windows(2).any(|pair| pair == b"--")
}

/// Standard base64 (whitespace ignored).
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    openssl::base64::decode_block(&compact)
        .ok()
        .filter(|b| !b.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_endpoints() {
        for ok in [
            "https://acct.blob.core.windows.net",
            "https://acct.blob.core.windows.net/",
            "http://127.0.0.1:10000/devstoreaccount1",
        ] {
            assert!(account_endpoint(ok).is_ok(), "{ok}");
        }
        for bad in [
            "acct.blob.core.windows.net",
            "ftp://host",
            "https://",
            "https://user:pw@host",
            "https://host/?sv=x",
            "https://host:port",
        ] {
            assert!(account_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn container_names() {
        assert!(is_container_name("fleet-config"));
        assert!(!is_container_name("ab"));
        assert!(!is_container_name("Fleet"));
        assert!(!is_container_name("a--b"));
    }
}
