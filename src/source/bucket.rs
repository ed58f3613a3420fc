//! `bucket` sources: an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, ...), Flux's Bucket
//! with the `generic` provider.
//!
//! This module only says how to reach the bucket (object_store's S3 client: path-style
//! requests, SigV4 with static keys or unsigned anonymous requests, a custom CA, proxies from
//! the environment) and how S3's failures read. Listing, the revision and the download are
//! [`super::objects`]'. Keys given as files or through `localAuthRef` are read again at every
//! sync, so rotating them needs no restart.

pub(crate) mod config;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig};

use self::config::{BucketCredentials, BucketSettings};
use super::objects::{self, ObjectSource};
use super::{FetchOutcome, Revision, SourceError};
use crate::vocab::SecretValue;

/// Flux's key names in a `localAuthRef` directory (a mounted Secret).
pub const ACCESS_KEY_FILE: &str = "accesskey";
pub const SECRET_KEY_FILE: &str = "secretkey";

/// An S3-compatible bucket (or a prefix of one) as a source.
#[derive(Debug, Clone)]
pub struct BucketSource {
    /// `<namespace>/<name>`, for logs.
    pub id: String,
    /// `http(s)://host[:port]`, checked at load.
    pub endpoint: String,
    pub settings: BucketSettings,
    /// The source's `ignore` field.
    pub ignore: Option<String>,
}

/// Keys as read for one sync. `Debug` shows the access key id only.
struct Keys {
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({}, <redacted>)", self.access_key)
    }
}

impl BucketSource {
    /// `bucket <name> at <endpoint>`, the subject of every message.
    pub fn location(&self) -> String {
        format!("bucket {} at {}", self.settings.bucket_name, self.endpoint)
    }

    fn fail(&self, cause: impl std::fmt::Display) -> SourceError {
        SourceError::Bucket(format!("{}: {cause}", self.location()))
    }

    /// The keys for this sync, `None` for anonymous access.
    fn keys(&self) -> Result<Option<Keys>, SourceError> {
        match &self.settings.credentials {
            BucketCredentials::Anonymous => Ok(None),
            BucketCredentials::Keys {
                access_key,
                secret_key,
            } => Ok(Some(Keys {
                access_key: self.secret_value(access_key, "bucketAccessKeyFile")?,
                secret_key: self.secret_value(secret_key, "bucketSecretKeyFile")?,
            })),
            BucketCredentials::LocalAuthRef(dir) => {
                let read = |name: &str| -> Result<String, SourceError> {
                    let path = dir.join(name);
                    let text = read_key_file(&path).map_err(|e| {
                        self.fail(format!(
                            "cannot read `{name}` from localAuthRef {}: {e}",
                            dir.display()
                        ))
                    })?;
                    if text.is_empty() {
                        return Err(self.fail(format!(
                            "`{name}` in localAuthRef {} is empty",
                            dir.display()
                        )));
                    }
                    Ok(text)
                };
                Ok(Some(Keys {
                    access_key: read(ACCESS_KEY_FILE)?,
                    secret_key: read(SECRET_KEY_FILE)?,
                }))
            }
            BucketCredentials::LocalAuthSecret(reference) => {
                // The same keys as in a directory, fetched whole for this sync.
                let data =
                    crate::cluster::read_secret_blocking(reference).map_err(|e| self.fail(e))?;
                let read = |name: &str| -> Result<String, SourceError> {
                    let text = data
                        .get(name)
                        .map(|value| String::from_utf8_lossy(value).trim().to_string())
                        .unwrap_or_default();
                    if text.is_empty() {
                        return Err(self.fail(format!(
                            "the Kubernetes Secret `{reference}` has no `{name}`"
                        )));
                    }
                    Ok(text)
                };
                Ok(Some(Keys {
                    access_key: read(ACCESS_KEY_FILE)?,
                    secret_key: read(SECRET_KEY_FILE)?,
                }))
            }
        }
    }

    fn secret_value(&self, value: &SecretValue, key: &str) -> Result<String, SourceError> {
        match value {
            SecretValue::Inline(secret) => Ok(secret.0.trim().to_string()),
            SecretValue::File(path) => {
                let text = read_key_file(path)
                    .map_err(|e| self.fail(format!("cannot read {key} {}: {e}", path.display())))?;
                if text.is_empty() {
                    return Err(self.fail(format!("{key} {} is empty", path.display())));
                }
                Ok(text)
            }
        }
    }

    fn client_options(&self) -> Result<ClientOptions, SourceError> {
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(10))
            // No whole-request limit: a large object may take long; the source's `timeout`
            // bounds the sync.
            .with_timeout_disabled()
            .with_allow_http(self.settings.insecure);
        if let Some(ca_file) = &self.settings.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| self.fail(format!("cannot read caFile {}: {e}", ca_file.display())))?;
            let certificates = object_store::Certificate::from_pem_bundle(&pem).map_err(|_| {
                self.fail(format!(
                    "caFile {} holds no PEM certificate",
                    ca_file.display()
                ))
            })?;
            if certificates.is_empty() {
                return Err(self.fail(format!(
                    "caFile {} holds no PEM certificate",
                    ca_file.display()
                )));
            }
            for certificate in certificates {
                options = options.with_root_certificate(certificate);
            }
        }
        Ok(super::proxy::object_store_options(
            options,
            &[&self.endpoint],
        ))
    }

    /// The bucket as an object store, with the keys as they are now.
    pub fn store(&self) -> Result<Arc<dyn ObjectStore>, SourceError> {
        let retry = RetryConfig {
            max_retries: 2,
            retry_timeout: Duration::from_secs(20),
            ..RetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(self.endpoint.clone())
            .with_bucket_name(&self.settings.bucket_name)
            .with_region(&self.settings.region)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(self.settings.insecure)
            .with_retry(retry)
            .with_client_options(self.client_options()?);
        builder = match self.keys()? {
            None => builder.with_skip_signature(true),
            Some(keys) => builder
                .with_access_key_id(keys.access_key)
                .with_secret_access_key(keys.secret_key),
        };
        let store = builder.build().map_err(|e| {
            self.fail(format!(
                "invalid client settings: {}",
                crate::error::chain(&e)
            ))
        })?;
        Ok(Arc::new(store))
    }

    /// One sentence for a failed request.
    pub fn explain(&self, error: &object_store::Error) -> SourceError {
        let text = explain(error, self.credential_name());
        self.fail(super::proxy::reword_object_store_failure(
            text,
            &self.endpoint,
        ))
    }

    fn credential_name(&self) -> &'static str {
        match &self.settings.credentials {
            BucketCredentials::Anonymous => "anonymous access",
            BucketCredentials::Keys { .. } => "the configured access key",
            BucketCredentials::LocalAuthRef(_) => "the localAuthRef access key",
            BucketCredentials::LocalAuthSecret(_) => "the Kubernetes Secret's access key",
        }
    }
}

/// A key file's content without surrounding whitespace (`echo` adds a newline).
fn read_key_file(path: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The text of an XML element of an S3 error body.
fn xml_tag<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim())
}

/// The HTTP status a failed request's text reports (object_store keeps the type private).
fn status_of(text: &str) -> Option<u16> {
    const MARKERS: [&str; 2] = [
        "Server returned non-2xx status code: ",
        "Server returned error response: ",
    ];
    MARKERS.iter().find_map(|marker| {
        let at = text.find(marker)? + marker.len();
        text[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// The innermost cause of a transport failure, e.g. `Connection refused (os error 111)`.
fn transport_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error.to_string();
    let mut current = error.source();
    while let Some(e) = current {
        last = e.to_string();
        current = e.source();
    }
    last
}

/// The reasoning behind [`BucketSource::explain`]: S3's error code first, then the status,
/// then the transport. Request URLs are left out (they only repeat the endpoint and key).
fn explain(error: &object_store::Error, credential: &str) -> String {
    let text = crate::error::chain(error);
    if let Some(code) = xml_tag(&text, "Code") {
        let message = xml_tag(&text, "Message").unwrap_or_default();
        return match code {
            "SignatureDoesNotMatch" => format!(
                "the server rejected the request signature made with {credential} \
                 (SignatureDoesNotMatch): the secret key does not match the access key"
            ),
            "InvalidAccessKeyId" => format!(
                "the server does not know {credential} (InvalidAccessKeyId); check the access \
                 key id"
            ),
            "NoSuchBucket" => {
                "the bucket does not exist (NoSuchBucket); check bucketName".to_string()
            }
            "AccessDenied" => format!(
                "access denied to {credential} (AccessDenied); the credential may not list or \
                 read this bucket"
            ),
            _ if message.is_empty() => format!("the server refused the request ({code})"),
            _ => format!("the server refused the request ({code}: {message})"),
        };
    }
    if let Some(status) = status_of(&text) {
        let hint = match status {
            401 | 403 => " (check the access key, secret key and permissions)",
            404 => " (check bucketName and the endpoint)",
            _ => "",
        };
        return format!("the server answered HTTP {status}{hint}");
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(http) = e.downcast_ref::<object_store::client::HttpError>() {
            return format!("cannot reach the endpoint: {}", transport_cause(http));
        }
        current = e.source();
    }
    match error {
        object_store::Error::NotFound { .. } => {
            "not found (check bucketName and the endpoint)".to_string()
        }
        _ => text
            .split(' ')
            .map(|word| if word.contains("://") { "<url>" } else { word })
            .collect::<Vec<_>>()
            .join(" "),
    }
}

impl ObjectSource for BucketSource {
    fn prefix(&self) -> Option<&str> {
        self.settings.prefix.as_deref()
    }

    fn ignore(&self) -> Option<&str> {
        self.ignore.as_deref()
    }

    fn explain_error(&self, error: &object_store::Error) -> SourceError {
        self.explain(error)
    }

    fn failure(&self, cause: &str) -> SourceError {
        self.fail(cause)
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.endpoint, self.settings.bucket_name)
    }
}

impl super::Source for BucketSource {
    fn fetch(
        &self,
        previous: Option<&Revision>,
        scratch: PathBuf,
        interrupt: &AtomicBool,
    ) -> Result<FetchOutcome, SourceError> {
        let store = self.store()?;
        objects::fetch(self, store, previous, scratch, interrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_bodies_name_the_cause() {
        assert_eq!(
            xml_tag(
                "<Error><Code>NoSuchBucket</Code><Message>gone</Message></Error>",
                "Code"
            ),
            Some("NoSuchBucket")
        );
        assert_eq!(
            status_of("Server returned non-2xx status code: 403 Forbidden: <Error>"),
            Some(403)
        );
    }
}
