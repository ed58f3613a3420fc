//! The cluster connection: a Kubernetes API client made from the top-level `kubernetes`
//! section (a kubeconfig file and one of its contexts, the pod's service account, or whatever
//! kubectl would find), optionally acting as another user (impersonation).
//!
//! Sources read the Secrets that `localAuthRef: { secret: NAME }` names through it
//! ([`read_secret`]); the Kubernetes target applies through a [`Connection`] from the
//! [`Clusters`] pool. Errors are [`ClusterError`]s that read as one clause naming the API
//! server or the object and the cause, never a secret value, with a [`ClusterErrorKind`]
//! taken from the API's status code or the transport's typed causes.
//!
//! The client is async: the object-store sources await [`read_secret`] inside their fetch, so
//! the fetch's timeout and shutdown cut it short; the blocking git backends use
//! [`read_secret_blocking`] from their `spawn_blocking` thread.
//!
//! A secret read makes a client for each use: the kubeconfig is then read again each time,
//! like every other secret, so a rotated kubeconfig needs no restart, and one handshake per
//! sync costs nothing next to a sync's git traffic. The applier talks to the cluster far more
//! (every object, every interval, a thousand kustomizations), so it keeps one client per
//! cluster and identity in [`Clusters`], made again only when the kubeconfig file changes.

mod connect;

pub use connect::{connect, Clusters, Connection};

use std::collections::BTreeMap;
use std::error::Error as StdError;

use k8s_openapi::api::core::v1::Secret;

use crate::error::chain;
use crate::vocab::SecretRef;

/// OpenSSL's "certificate verify failed" reason (`SSL_R_CERTIFICATE_VERIFY_FAILED` in
/// ssl.h), which the `openssl` crate does not name.
const SSL_R_CERTIFICATE_VERIFY_FAILED: std::os::raw::c_int = 134;

/// Why the cluster could not be reached or would not answer.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig could not be read, parsed, or has no usable context.
    #[error("cannot use {from}: {}", chain(&**source))]
    Kubeconfig {
        /// `kubeconfig /path`, or `the pod's service account`.
        from: String,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot reach the Kubernetes API server at {server}: {cause}")]
    Unreachable { server: String, cause: Transport },
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
    /// Blocking callers only: no runtime could be made to run the client on.
    #[error("cannot start the Kubernetes client: {0}")]
    Runtime(#[source] std::io::Error),
    /// Any other answer of the API server: its status code and message.
    #[error("the Kubernetes API server at {server} answered HTTP {code}: {reason}")]
    Api {
        server: String,
        code: u16,
        reason: String,
    },
}

/// What [`ClusterError::kind`] says, for callers that decide whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterErrorKind {
    /// The kubeconfig cannot be used as it is.
    Config,
    /// The Secret does not exist.
    NotFound,
    /// The credentials were refused, or RBAC forbids the read.
    Auth,
    Tls,
    Network,
    Timeout,
    /// An answer gitopsd did not expect.
    Internal,
}

impl ClusterError {
    pub fn kind(&self) -> ClusterErrorKind {
        match self {
            ClusterError::Kubeconfig { .. } => ClusterErrorKind::Config,
            ClusterError::Unreachable { cause, .. } => match cause {
                Transport::Certificate | Transport::Handshake(_) => ClusterErrorKind::Tls,
                Transport::TimedOut => ClusterErrorKind::Timeout,
                Transport::Refused
                | Transport::Closed
                | Transport::UnknownHost
                | Transport::Other(_) => ClusterErrorKind::Network,
            },
            ClusterError::SecretNotFound { .. } => ClusterErrorKind::NotFound,
            ClusterError::Forbidden { .. } | ClusterError::Unauthorized { .. } => {
                ClusterErrorKind::Auth
            }
            ClusterError::Api { code, .. } if *code >= 500 || *code == 429 => {
                ClusterErrorKind::Network
            }
            ClusterError::Api { .. } | ClusterError::Runtime(_) => ClusterErrorKind::Internal,
        }
    }
}

/// Why no answer came from the API server, from the client error's typed causes.
#[derive(Debug, thiserror::Error)]
pub enum Transport {
    #[error("connection refused (is it running?)")]
    Refused,
    #[error(
        "its TLS certificate could not be verified with the kubeconfig's certificate-authority"
    )]
    Certificate,
    /// Another TLS failure: OpenSSL's reasons.
    #[error("{0}")]
    Handshake(String),
    #[error("no answer in time (timed out)")]
    TimedOut,
    /// The server closed the connection before its answer (it stopped, or restarted).
    #[error("the connection closed before the answer (did it stop?)")]
    Closed,
    #[error("its host name could not be resolved")]
    UnknownHost,
    /// Anything else: the client's error chain on one line.
    #[error("{0}")]
    Other(String),
}

impl Transport {
    /// Walks `error`'s causes for the first one that tells what happened.
    pub fn of(error: &kube::Error) -> Transport {
        for e in crate::error::causes(error) {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => return Transport::Refused,
                    std::io::ErrorKind::TimedOut => return Transport::TimedOut,
                    _ => {}
                }
            }
            if e.is::<tokio::time::error::Elapsed>() {
                return Transport::TimedOut;
            }
            if let Some(hyper) = e.downcast_ref::<hyper::Error>() {
                if hyper.is_incomplete_message() || hyper.is_canceled() {
                    return Transport::Closed;
                }
            }
            if let Some(ssl) = e.downcast_ref::<openssl::ssl::Error>() {
                let verify_failed = ssl.ssl_error().is_some_and(|stack| {
                    stack
                        .errors()
                        .iter()
                        .any(|e| e.reason_code() == SSL_R_CERTIFICATE_VERIFY_FAILED)
                });
                return if verify_failed {
                    Transport::Certificate
                } else {
                    Transport::Handshake(chain(ssl))
                };
            }
            // hyper-util's connector reports a failed name lookup as a `ConnectError` (a
            // private type) whose message is exactly this, over an `io::Error` of an unstable
            // kind: the message is the only form the fact has.
            if e.to_string() == "dns error" {
                return Transport::UnknownHost;
            }
        }
        Transport::Other(chain(error))
    }
}

/// The `data` of the Secret, base64-decoded: key → bytes, as a directory of one file per
/// key would give them. (`stringData` is write-only: the API server folds it into `data`.)
pub async fn read_secret(reference: &SecretRef) -> Result<BTreeMap<String, Vec<u8>>, ClusterError> {
    let Connection { client, server } = connect(&reference.kubernetes, None).await?;
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

/// [`read_secret`] for blocking code (the git backends fetch on `spawn_blocking` threads): on
/// the runtime the thread belongs to, else on a small runtime of its own (tests, `gitopsd
/// bench`). Async callers (the object-store sources) await [`read_secret`] instead.
pub fn read_secret_blocking(
    reference: &SecretRef,
) -> Result<BTreeMap<String, Vec<u8>>, ClusterError> {
    let read = read_secret(reference);
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle.block_on(read),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ClusterError::Runtime)?
            .block_on(read),
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
            cause: Transport::of(&other),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vocab::KubernetesSettings;

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

    fn reference() -> SecretRef {
        SecretRef {
            kubernetes: KubernetesSettings {
                connection: crate::vocab::KubeConnection::Kubeconfig(
                    "/nonexistent/kubeconfig".into(),
                ),
                context: None,
            },
            namespace: "team".into(),
            name: "git".into(),
        }
    }

    #[test]
    fn kinds_come_from_the_status_code_and_the_transport() {
        let status = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            }))
        };
        let kind = |e: kube::Error| api_error(e, "https://api:6443", &reference()).kind();
        assert_eq!(kind(status(404)), ClusterErrorKind::NotFound);
        assert_eq!(kind(status(403)), ClusterErrorKind::Auth);
        assert_eq!(kind(status(503)), ClusterErrorKind::Network);
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = api_error(
            kube::Error::Service(Box::new(refused)),
            "https://api:6443",
            &reference(),
        );
        assert_eq!(
            error.to_string(),
            "cannot reach the Kubernetes API server at https://api:6443: connection refused \
             (is it running?)"
        );
        assert_eq!(error.kind(), ClusterErrorKind::Network);
        let slow = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(
            kind(kube::Error::Service(Box::new(slow))),
            ClusterErrorKind::Timeout
        );
    }

    #[test]
    fn a_missing_kubeconfig_is_named() {
        let reference = SecretRef {
            kubernetes: KubernetesSettings {
                connection: crate::vocab::KubeConnection::Kubeconfig(
                    "/nonexistent/kubeconfig".into(),
                ),
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
