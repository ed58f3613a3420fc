//! One provider's delivery worker: takes events off its queue one at a time, builds the
//! provider's body (`payload`), and POSTs it, retrying failures that may pass (connection
//! errors, timeouts, 429 and 5xx) with a doubling backoff, then giving up with a log line and
//! a count in `/metrics`.
//!
//! The address is read at every delivery (an `addressFile` may be rotated) and never shown:
//! reqwest's errors carry the URL, so every one is stripped of it (`without_url`) before it
//! is logged. The body is signed for `generic-hmac` as Flux does: `X-Signature:
//! sha256=<hex HMAC-SHA256 of the body>`; other types send a configured secret as a bearer
//! token (Slack's `chat.postMessage` wants one).

use super::payload;
use super::Event;
use crate::config::{ProviderSettings, ProviderType};
use crate::events::metrics::{EventMetrics, ProviderLabels};
use crate::events::secret::{self, SecretError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Attempts per event, and the wait before the second (doubled before each next).
const ATTEMPTS: u32 = 3;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Why a delivery failed. Never contains the address, the secret or the body.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("cannot read the provider's {what}: {source}")]
    Secret {
        what: &'static str,
        #[source]
        source: SecretError,
    },
    #[error("cannot read certFile {}: {source}", path.display())]
    CertFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    #[error("the request failed: {0}")]
    Request(#[source] reqwest::Error),
    #[error("the provider answered HTTP {status}")]
    Status { status: u16 },
    #[error("the provider's client could not be set up (logged at start)")]
    Unusable,
}

impl DeliveryError {
    /// Whether another attempt may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            DeliveryError::Request(_) => true,
            DeliveryError::Status { status } => *status == 429 || *status >= 500,
            DeliveryError::Secret { .. }
            | DeliveryError::CertFile { .. }
            | DeliveryError::Client(_)
            | DeliveryError::Unusable => false,
        }
    }
}

pub(super) async fn worker(
    provider: ProviderSettings,
    mut queue: mpsc::Receiver<Event>,
    metrics: EventMetrics,
    pending: Arc<AtomicUsize>,
) {
    let labels = ProviderLabels {
        provider: provider.name.clone(),
    };
    let client = client(&provider).await;
    if let Err(e) = &client {
        tracing::error!(provider = %provider.name, error = %crate::error::chain(e), "alert provider unusable; its events will be dropped");
    }
    while let Some(event) = queue.recv().await {
        let result = match &client {
            Ok(client) => send_with_retries(client, &provider, &event).await,
            Err(_) => Err(DeliveryError::Unusable),
        };
        match result {
            Ok(()) => {
                metrics.alerts_sent.get_or_create(&labels).inc();
            }
            Err(e) => {
                metrics.alerts_failed.get_or_create(&labels).inc();
                if client.is_ok() {
                    tracing::warn!(provider = %provider.name, reason = %event.reason, error = %crate::error::chain(&e), "alert not delivered; dropped");
                }
            }
        }
        pending.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn client(provider: &ProviderSettings) -> Result<reqwest::Client, DeliveryError> {
    let mut builder = reqwest::Client::builder()
        .timeout(provider.timeout)
        // A redirect would re-send the signed body elsewhere; webhooks answer directly.
        .redirect(reqwest::redirect::Policy::none());
    builder = match &provider.proxy {
        Some(proxy) => builder.proxy(
            reqwest::Proxy::all(proxy.as_str())
                .map_err(|e| DeliveryError::Client(e.without_url()))?,
        ),
        // Only the configured proxy: the environment's is for the sources' hosts.
        None => builder.no_proxy(),
    };
    if let Some(path) = &provider.cert_file {
        let pem = tokio::fs::read(path)
            .await
            .map_err(|source| DeliveryError::CertFile {
                path: path.clone(),
                source,
            })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(DeliveryError::Client)?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| DeliveryError::Client(e.without_url()))
}

async fn send_with_retries(
    client: &reqwest::Client,
    provider: &ProviderSettings,
    event: &Event,
) -> Result<(), DeliveryError> {
    let mut wait = FIRST_RETRY;
    let mut attempt = 1;
    loop {
        match send(client, provider, event).await {
            Ok(()) => return Ok(()),
            Err(e) if e.retryable() && attempt < ATTEMPTS => {
                tracing::debug!(provider = %provider.name, attempt, error = %crate::error::chain(&e), "alert delivery failed; retrying");
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn send(
    client: &reqwest::Client,
    provider: &ProviderSettings,
    event: &Event,
) -> Result<(), DeliveryError> {
    let address = secret::read_value(&provider.address)
        .await
        .map_err(|source| DeliveryError::Secret {
            what: "address",
            source,
        })?;
    let mut url = String::from_utf8_lossy(&address).into_owned();
    if provider.kind == ProviderType::Discord && !url.ends_with("/slack") {
        // Discord takes Slack's body on its webhook URL + `/slack`, as Flux sends it.
        url.push_str("/slack");
    }
    let body = payload::body(
        provider.kind,
        event,
        provider.channel.as_deref(),
        provider.username.as_deref(),
    );
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut request = client
        .post(url.as_str())
        .header(reqwest::header::CONTENT_TYPE, "application/json");
    if let Some(secret) = &provider.secret {
        let key = secret::read_value(secret)
            .await
            .map_err(|source| DeliveryError::Secret {
                what: "secret",
                source,
            })?;
        if provider.kind == ProviderType::GenericHmac {
            request = request.header("X-Signature", format!("sha256={}", sign(&key, &body)));
        } else {
            let token = String::from_utf8_lossy(&key).into_owned();
            request = request.bearer_auth(token);
        }
    }
    let response = request
        .body(body)
        .send()
        .await
        .map_err(|e| DeliveryError::Request(e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(DeliveryError::Status {
            status: status.as_u16(),
        })
    }
}

/// Hex HMAC-SHA256 of `body` keyed with `key`.
pub fn sign(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_hmac_sha256_of_the_body() {
        // printf '%s' '{"ref":"main"}' | openssl dgst -sha256 -hmac secret
        assert_eq!(
            sign(b"secret", b"{\"ref\":\"main\"}"),
            "037e8019218b6f3526f73ce493693b2091270a17552a7ca43f059e494420f2f0"
        );
    }
}
