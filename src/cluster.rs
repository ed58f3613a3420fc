//! The cluster connection: a Kubernetes API client made from the top-level `kubernetes`
//! section (a kubeconfig file and, optionally, one of its contexts).
//!
//! Today it reads the Secrets that `localAuthRef: { secret: NAME }` names; the Kubernetes
//! applier will use [`connect`] too. Errors are [`ClusterError`]s that read as one clause
//! naming the API server or the Secret and the cause, never a secret value.
//!
//! A client is made for each use rather than kept for the daemon's lifetime: the kubeconfig is
//! then read again each time, like every other secret, so a rotated kubeconfig (k3s renews its
//! client certificates, a token gets replaced) needs no restart. What that costs, one file read
//! and one TLS handshake per sync, is nothing next to a sync's git traffic at a 10-minute
//! interval.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::chain;
use crate::vocab::{KubernetesSettings, SecretRef};

/// How long to wait for a TCP connection (and TLS handshake) to the API server. The API
/// server answers a GET of one object in milliseconds; a sync should not hang on a dead one.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the API server's answer once connected.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the cluster could not be reached or would not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read, parsed, or has no usable context.
    #[error("cannot use kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("cannot reach the Kubernetes API server at {server}: {reason}")]
    Unreachable { server: String, reason: String },
    #[error("Kubernetes Secret `{secret}` not found")]
    SecretNotFound { secret: String },
    /// RBAC said no; `reason` is the API server's own sentence, which names the user, the
    /// verb and the namespace (`User "x" cannot get resource "secrets" ... in the namespace
    /// "y"`).
    #[error("reading Kubernetes Secret `{secret}` is forbidden: {reason}")]
    Forbidden { secret: String, reason: String },
    #[error(
        "the Kubernetes API server at {server} refused the kubeconfig's credentials \
         (HTTP 401 Unauthorized)"
    )]
    Unauthorized { server: String },
    /// Any other answer of the API server: its status code and message.
    #[error("the Kubernetes API server at {server} answered HTTP {code}: {reason}")]
    Api {
        server: String,
        code: u16,
        reason: String,
    },
}

/// A client for the cluster the settings name, and the API server's URL (for messages). The
/// caller must be inside a tokio runtime: the client's connection pool runs on it.
pub async fn connect(
    settings: &KubernetesSettings,
) -> Result<(kube::Client, String), ClusterError> {
    let path = settings.kubeconfig.display().to_string();
    let fail = |reason: String| ClusterError::Kubeconfig {
        path: path.clone(),
        reason,
    };
    let kubeconfig = Kubeconfig::read_from(&settings.kubeconfig).map_err(|e| fail(chain(&e)))?;
    let options = KubeConfigOptions {
        context: settings.context.clone(),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| fail(chain(&e)))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let server = config.cluster_url.to_string();
    let server = server.trim_end_matches('/').to_string();
    let client = kube::Client::try_from(config).map_err(|e| fail(chain(&e)))?;
    Ok((client, server))
}

/// The `data` of the Secret, base64-decoded: key → bytes, as a directory of one file per
/// key would give them. (`stringData` is write-only: the API server folds it into `data`.)
pub async fn read_secret(reference: &SecretRef) -> Result<BTreeMap<String, Vec<u8>>, ClusterError> {
    let (client, server) = connect(&reference.kubernetes).await?;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(client, &reference.namespace);
    let secret = secrets
        .get(&reference.name)
        .await
        .map_err(|e| api_error(e, &server, reference))?;
    Ok(secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect())
}

/// [`read_secret`] for blocking code (sources fetch on `spawn_blocking` threads): on the
/// runtime the thread belongs to, else on a small runtime of its own (tests, `gitopsd bench`).
pub fn read_secret_blocking(
    reference: &SecretRef,
) -> Result<BTreeMap<String, Vec<u8>>, ClusterError> {
    block_on(read_secret(reference))
}

fn block_on<F: Future>(future: F) -> F::Output {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(future),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime can be built")
            .block_on(future),
    }
}

/// One clause for a failed request: the API server's status for answers, the deepest cause
/// for transport failures (connection refused, TLS verification, timeouts).
fn api_error(error: kube::Error, server: &str, reference: &SecretRef) -> ClusterError {
    let secret = reference.to_string();
    match error {
        kube::Error::Api(status) => match status.code {
            404 => ClusterError::SecretNotFound { secret },
            403 => ClusterError::Forbidden {
                secret,
                reason: forbidden_reason(&status.message),
            },
            401 => ClusterError::Unauthorized {
                server: server.to_string(),
            },
            code => ClusterError::Api {
                server: server.to_string(),
                code,
                reason: if status.message.is_empty() {
                    status.reason.clone()
                } else {
                    status.message.clone()
                },
            },
        },
        other => ClusterError::Unreachable {
            server: server.to_string(),
            reason: transport_reason(&other),
        },
    }
}

/// `secrets "x" is forbidden: User "u" cannot get ...` without its first clause, which the
/// message around it says already.
fn forbidden_reason(message: &str) -> String {
    match message.split_once(" is forbidden: ") {
        Some((_, rest)) => rest.to_string(),
        None => message.to_string(),
    }
}

fn transport_reason(error: &kube::Error) -> String {
    let text = chain(error);
    let lower = text.to_ascii_lowercase();
    if lower.contains("connection refused") {
        "connection refused (is it running?)".into()
    } else if lower.contains("certificate verify failed")
        || lower.contains("self-signed certificate")
        || lower.contains("unable to get local issuer certificate")
    {
        "its TLS certificate could not be verified with the kubeconfig's certificate-authority"
            .into()
    } else if lower.contains("timed out") || lower.contains("timeout") || lower.contains("elapsed")
    {
        "no answer in time (timed out)".into()
    } else if lower.contains("dns error") || lower.contains("failed to lookup address") {
        "its host name could not be resolved".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_keeps_the_api_servers_reason() {
        assert_eq!(
            forbidden_reason(
                "secrets \"git\" is forbidden: User \"viewer\" cannot get resource \"secrets\" \
                 in API group \"\" in the namespace \"team\""
            ),
            "User \"viewer\" cannot get resource \"secrets\" in API group \"\" in the \
             namespace \"team\""
        );
        assert_eq!(forbidden_reason("nope"), "nope");
    }

    #[test]
    fn a_missing_kubeconfig_is_named() {
        let reference = SecretRef {
            kubernetes: KubernetesSettings {
                kubeconfig: "/nonexistent/kubeconfig".into(),
                context: None,
            },
            namespace: "default".into(),
            name: "git".into(),
        };
        let err = read_secret_blocking(&reference).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot use kubeconfig /nonexistent/kubeconfig: "),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }
}
