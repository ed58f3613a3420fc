//! `bucket` sources: an S3-compatible bucket (AWS S3, MinIO, SeaweedFS, ...), Flux's Bucket
//! with the `generic` provider.
//!
//! This module only says how to reach the bucket (object_store's S3 client: path-style
//! requests, SigV4 with static keys or unsigned anonymous requests, a custom CA, proxies from
//! the environment) and how S3's failures read. Listing, the revision and the download are
//! [`super::objects`]'. Keys given as files or through `localAuthRef` are read again at every
//! sync, so rotating them needs no restart.

pub(crate) mod config;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::ObjectStore;

use self::config::{BucketCredentials, BucketSettings};
use super::objects::error::{http_answer, request_kind, transport, without_urls};
use super::objects::{self, ErrorKind, ObjectError, ObjectSource, Reason};

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

    /// A setting or credential that cannot work as written.
    fn setting(&self, clause: String) -> ObjectError {
        self.fail(ErrorKind::Config, Reason::Setting(clause))
    }

    /// The keys for this sync, `None` for anonymous access.
    async fn keys(&self) -> Result<Option<Keys>, ObjectError> {
        match &self.settings.credentials {
            BucketCredentials::Anonymous => Ok(None),
            BucketCredentials::Keys {
                access_key,
                secret_key,
            } => Ok(Some(Keys {
                access_key: self.secret_value(access_key, "bucketAccessKeyFile").await?,
                secret_key: self.secret_value(secret_key, "bucketSecretKeyFile").await?,
            })),
            BucketCredentials::LocalAuthRef(dir) => {
                let read = |name: &'static str| {
                    self.read_key(
                        dir.join(name),
                        format!("cannot read `{name}` from localAuthRef {}", dir.display()),
                        format!("`{name}` in localAuthRef {} is empty", dir.display()),
                    )
                };
                Ok(Some(Keys {
                    access_key: read(ACCESS_KEY_FILE).await?,
                    secret_key: read(SECRET_KEY_FILE).await?,
                }))
            }
            BucketCredentials::LocalAuthSecret(reference) => {
                // The same keys as in a directory, fetched whole for this sync.
                let data = crate::cluster::read_secret(reference)
                    .await
                    .map_err(|e| self.fail(ErrorKind::from(&e), Reason::Secret(e)))?;
                let read = |name: &str| -> Result<String, ObjectError> {
                    let text = data
                        .get(name)
                        .map(|value| String::from_utf8_lossy(value).trim().to_string())
                        .unwrap_or_default();
                    if text.is_empty() {
                        return Err(self.setting(format!(
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

    async fn secret_value(&self, value: &SecretValue, key: &str) -> Result<String, ObjectError> {
        match value {
            SecretValue::Inline(secret) => Ok(secret.0.trim().to_string()),
            SecretValue::File(path) => {
                self.read_key(
                    path.clone(),
                    format!("cannot read {key} {}", path.display()),
                    format!("{key} {} is empty", path.display()),
                )
                .await
            }
        }
    }

    /// A key file's content without surrounding whitespace (`echo` adds a newline), read now
    /// so that every sync sees the current one; `cannot_read` and `empty` are the clauses
    /// for its two failures.
    async fn read_key(
        &self,
        path: PathBuf,
        cannot_read: String,
        empty: String,
    ) -> Result<String, ObjectError> {
        let bytes = tokio::fs::read(&path).await.map_err(|source| {
            self.fail(
                ErrorKind::Config,
                Reason::Read {
                    what: cannot_read,
                    source,
                },
            )
        })?;
        let text = String::from_utf8_lossy(&bytes).trim().to_string();
        if text.is_empty() {
            return Err(self.setting(empty));
        }
        Ok(text)
    }

    /// The bucket as an object store, with the keys as they are now.
    pub async fn store(&self) -> Result<Arc<dyn ObjectStore>, ObjectError> {
        let options = objects::client_options(
            self.settings.insecure,
            self.settings.ca_file.as_deref(),
            &[&self.endpoint],
        )
        .await
        .map_err(|reason| self.fail(ErrorKind::Config, reason))?;
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(self.endpoint.clone())
            .with_bucket_name(&self.settings.bucket_name)
            .with_region(&self.settings.region)
            .with_virtual_hosted_style_request(false)
            .with_allow_http(self.settings.insecure)
            .with_retry(objects::retry_config())
            .with_client_options(options);
        builder = match self.keys().await? {
            None => builder.with_skip_signature(true),
            Some(keys) => builder
                .with_access_key_id(keys.access_key)
                .with_secret_access_key(keys.secret_key),
        };
        let store = builder.build().map_err(|e| {
            self.setting(format!(
                "invalid client settings: {}",
                crate::error::chain(&e)
            ))
        })?;
        Ok(Arc::new(store))
    }

    /// One sentence for a failed request.
    pub fn explain(&self, error: &object_store::Error) -> ObjectError {
        let (kind, clause) = explain(error, self.credential_name());
        let no_answer = transport(error).is_some();
        let (kind, clause) = objects::blame_proxy(kind, clause, no_answer, &self.endpoint);
        self.fail(kind, Reason::Request(clause))
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

/// The text of an XML element of an S3 error body.
fn xml_tag<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))? + start;
    Some(body[start..end].trim())
}

/// The reasoning behind [`BucketSource::explain`]: S3's error code first, then the status,
/// then the transport. Request URLs are left out (they only repeat the endpoint and key).
fn explain(error: &object_store::Error, credential: &str) -> (ErrorKind, String) {
    let kind = request_kind(error);
    let answer = http_answer(error);
    if let Some(code) = answer.as_ref().and_then(|(_, body)| xml_tag(body, "Code")) {
        let body = answer.as_ref().map_or("", |(_, body)| body.as_str());
        let message = xml_tag(body, "Message").unwrap_or_default();
        return match code {
            "SignatureDoesNotMatch" => (
                ErrorKind::Auth,
                format!(
                    "the server rejected the request signature made with {credential} \
                     (SignatureDoesNotMatch): the secret key does not match the access key"
                ),
            ),
            "InvalidAccessKeyId" => (
                ErrorKind::Auth,
                format!(
                    "the server does not know {credential} (InvalidAccessKeyId); check the \
                     access key id"
                ),
            ),
            "NoSuchBucket" => (
                ErrorKind::NotFound,
                "the bucket does not exist (NoSuchBucket); check bucketName".to_string(),
            ),
            "AccessDenied" => (
                ErrorKind::Auth,
                format!(
                    "access denied to {credential} (AccessDenied); the credential may not list \
                     or read this bucket"
                ),
            ),
            _ if message.is_empty() => (kind, format!("the server refused the request ({code})")),
            _ => (
                kind,
                format!("the server refused the request ({code}: {message})"),
            ),
        };
    }
    if let Some((status, _)) = answer {
        let hint = match status {
            401 | 403 => " (check the access key, secret key and permissions)",
            404 => " (check bucketName and the endpoint)",
            _ => "",
        };
        return (kind, format!("the server answered HTTP {status}{hint}"));
    }
    if let Some(http) = transport(error) {
        return (
            kind,
            format!(
                "cannot reach the endpoint: {}",
                crate::error::messages(http).last().unwrap_or_default()
            ),
        );
    }
    match error {
        object_store::Error::NotFound { .. } => (
            ErrorKind::NotFound,
            "not found (check bucketName and the endpoint)".to_string(),
        ),
        _ => (kind, without_urls(&crate::error::chain(error))),
    }
}

impl ObjectSource for BucketSource {
    fn prefix(&self) -> Option<&str> {
        self.settings.prefix.as_deref()
    }

    fn ignore(&self) -> Option<&str> {
        self.ignore.as_deref()
    }

    fn connect(&self) -> impl Future<Output = Result<Arc<dyn ObjectStore>, ObjectError>> + Send {
        self.store()
    }

    fn explain_error(&self, error: &object_store::Error) -> ObjectError {
        self.explain(error)
    }

    fn store_missing(&self, error: &object_store::Error) -> bool {
        http_answer(error).is_some_and(|(_, body)| xml_tag(&body, "Code") == Some("NoSuchBucket"))
    }

    fn subject(&self) -> String {
        self.location()
    }

    fn describe(&self) -> String {
        format!("{}/{}", self.endpoint, self.settings.bucket_name)
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
    }

    #[derive(Debug, thiserror::Error)]
    #[error("Server returned non-2xx status code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>")]
    struct NoSuchBucket;

    #[test]
    fn a_missing_bucket_is_not_found() {
        let error = object_store::Error::NotFound {
            path: "x".into(),
            source: Box::new(NoSuchBucket),
        };
        let (kind, clause) = explain(&error, "anonymous access");
        assert_eq!(kind, ErrorKind::NotFound);
        assert_eq!(
            clause,
            "the bucket does not exist (NoSuchBucket); check bucketName"
        );
    }
}
