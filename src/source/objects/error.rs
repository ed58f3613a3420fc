//! Why an object-store fetch (`bucket`, `azblob`) failed: [`ObjectError`], one sentence that
//! names the store and the cause, with an [`ErrorKind`] a caller can act on.
//!
//! The kind comes from typed information wherever the libraries give it: object_store's
//! `Error` variants (`NotFound`, `PermissionDenied`, `Unauthenticated`), the transport's
//! [`HttpErrorKind`], `rustls` and `std::io` errors found by walking the `source()` chain, and
//! the Kubernetes client's [`ClusterError`]. object_store keeps the HTTP status and body of a
//! refused request in a private type, so those two are read from its message, in one place
//! ([`http_answer`]); the service's error code then comes from the body (XML or JSON), which
//! is data the server sent, not an error message of ours.
//!
//! This module names no source kind (`bucket`, `azblob`): each kind's module depends on it,
//! never the reverse. A kind's own error types (Azure's certificate credential) know their
//! [`ErrorKind`] themselves and travel as a boxed `source()`.
//!
//! The library error itself is not kept as a `source()`: its text quotes request URLs, and an
//! Azure URL can carry a SAS token. What it says is distilled into the sentence instead.

use object_store::client::{HttpError, HttpErrorKind};

use crate::cluster::ClusterError;

/// What went wrong, coarsely: enough to decide whether to retry soon, stall until the
/// configuration changes, or alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A credential was refused, or could not be read or used.
    Auth,
    /// The TLS handshake failed (typically: the server's certificate is not trusted).
    Tls,
    /// The bucket or container does not exist.
    NotFound,
    /// The endpoint could not be reached, or failed with a server-side error.
    Network,
    /// The proxy in between refused, failed, or wants credentials.
    Proxy,
    /// A request got no answer in time.
    Timeout,
    /// The fetch was interrupted: its `timeout` passed, or gitopsd is stopping.
    Cancelled,
    /// The settings cannot work as written (an unreadable file, an invalid key or token).
    Config,
    /// Anything else: a local I/O failure, an answer gitopsd does not understand.
    Internal,
}

impl ErrorKind {
    /// Whether the same settings may succeed on a later attempt. Credentials are read again at
    /// every sync, so `Auth` and `Config` failures recover too, but only once someone acts.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Network
                | ErrorKind::Proxy
                | ErrorKind::Timeout
                | ErrorKind::Cancelled
                | ErrorKind::Internal
        )
    }
}

/// A failed fetch of an object-store source: `<subject>: <reason>`, e.g. `bucket fleet at
/// http://127.0.0.1:8333: the bucket does not exist (NoSuchBucket); check bucketName`.
#[derive(Debug, thiserror::Error)]
#[error("{subject}: {reason}")]
pub struct ObjectError {
    subject: String,
    kind: ErrorKind,
    #[source]
    reason: Reason,
}

impl ObjectError {
    /// `subject` names the store (`bucket <name> at <endpoint>`, `azblob container ...`).
    pub fn new(subject: String, kind: ErrorKind, reason: Reason) -> Self {
        ObjectError {
            subject,
            kind,
            reason,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    pub fn reason(&self) -> &Reason {
        &self.reason
    }
}

/// The clause after the subject.
#[derive(Debug, thiserror::Error)]
pub enum Reason {
    /// A failed request, explained from the error's typed parts and the server's answer.
    #[error("{0}")]
    Request(String),
    /// A setting or credential that cannot be used, in a clause naming the setting.
    #[error("{0}")]
    Setting(String),
    /// A file the settings name (a key file, the CA bundle) could not be read.
    #[error("{what}: {source}")]
    Read {
        /// `cannot read caFile /etc/ca.pem`, ...
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A credential given as a file or value (e.g. Azure's client certificate) that could
    /// not be used; `source` is the kind's own error type.
    #[error("{origin}: {source}")]
    Credential {
        /// Where it came from: `spClientCert`, `clientCertificate in localAuthRef /dir`.
        origin: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The Kubernetes Secret named by `localAuthRef` could not be read.
    #[error("{0}")]
    Secret(#[source] ClusterError),
    /// The `ignore` field or the root `.sourceignore` does not parse.
    #[error("{0}")]
    Ignore(#[source] crate::artifact::ignore::IgnoreError),
    #[error("the fetch was interrupted (timeout or shutdown)")]
    Interrupted,
    #[error("object key {0:?} is not a safe path")]
    UnsafeKey(String),
    #[error("cannot write object {key:?} into the snapshot: {source}")]
    Write {
        key: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<&ClusterError> for ErrorKind {
    fn from(error: &ClusterError) -> Self {
        use crate::cluster::ClusterErrorKind as K;
        match error.kind() {
            K::Config => ErrorKind::Config,
            K::NotFound => ErrorKind::Config,
            K::Auth => ErrorKind::Auth,
            K::Tls => ErrorKind::Tls,
            K::Network => ErrorKind::Network,
            K::Timeout => ErrorKind::Timeout,
            K::Internal => ErrorKind::Internal,
        }
    }
}

/// What the server answered to a refused request: its status and body. object_store's
/// `RetryError` holds both but lives in a private module, so they are read from the message
/// its `RequestError` writes (`Server returned non-2xx status code: 403 Forbidden: <body>`,
/// or for an error inside a 200 answer, `Server returned error response: <body>`, status 0).
pub fn http_answer(error: &object_store::Error) -> Option<(u16, String)> {
    const STATUS: &str = "Server returned non-2xx status code: ";
    const INLINE: &str = "Server returned error response: ";
    crate::error::messages(error).find_map(|message| {
        if let Some(rest) = message.strip_prefix(STATUS) {
            let status = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|digits| digits.parse().ok())
                .unwrap_or(0);
            let body = rest.split_once(": ").map_or("", |(_, body)| body);
            return Some((status, body.to_string()));
        }
        message
            .strip_prefix(INLINE)
            .map(|body| (0, body.to_string()))
    })
}

/// The kind of a failed request from the typed parts of `error`: what the transport says
/// when no answer came, else object_store's variant, else the answer's status.
pub fn request_kind(error: &object_store::Error) -> ErrorKind {
    if let Some(kind) = chain_kind(error) {
        return kind;
    }
    match error {
        object_store::Error::NotFound { .. } => ErrorKind::NotFound,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => ErrorKind::Auth,
        object_store::Error::Generic { .. } => match http_answer(error) {
            Some((status, _)) => kind_of_status(status),
            None => ErrorKind::Internal,
        },
        object_store::Error::UnknownConfigurationKey { .. }
        | object_store::Error::InvalidPath { .. } => ErrorKind::Config,
        _ => ErrorKind::Internal,
    }
}

/// The kind of a transport failure in `error`'s chain; `None` when the chain holds none, i.e.
/// an answer came (or the failure was not a request's).
pub fn chain_kind(error: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
    let mut transport = None;
    for e in crate::error::causes(error) {
        if e.is::<rustls::Error>() {
            return Some(ErrorKind::Tls);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::TimedOut => return Some(ErrorKind::Timeout),
                std::io::ErrorKind::ConnectionRefused
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted => return Some(ErrorKind::Network),
                _ => {}
            }
        }
        if transport.is_none() {
            transport = e.downcast_ref::<HttpError>().map(HttpError::kind);
        }
    }
    transport.map(|kind| match kind {
        HttpErrorKind::Timeout => ErrorKind::Timeout,
        HttpErrorKind::Connect
        | HttpErrorKind::Request
        | HttpErrorKind::Interrupted
        | HttpErrorKind::Decode => ErrorKind::Network,
        _ => ErrorKind::Internal,
    })
}

/// The kind an HTTP status stands for.
pub fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 | 403 => ErrorKind::Auth,
        404 => ErrorKind::NotFound,
        407 => ErrorKind::Proxy,
        408 | 429 | 500..=599 => ErrorKind::Network,
        400..=499 => ErrorKind::Config,
        _ => ErrorKind::Internal,
    }
}

/// The transport error in `error`'s chain, if the request failed before an answer.
pub fn transport(error: &object_store::Error) -> Option<&HttpError> {
    crate::error::causes(error).find_map(|e| e.downcast_ref::<HttpError>())
}

/// `text` with every word that holds a URL replaced by `<url>`: request URLs only repeat the
/// endpoint and key, and an Azure one may carry a SAS token.
pub fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|word| if word.contains("://") { "<url>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("Server returned non-2xx status code: 403 Forbidden: <Error><Code>AccessDenied</Code></Error>")]
    struct Answer;

    #[test]
    fn the_answer_is_read_from_the_request_error() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Answer),
        };
        let (status, body) = http_answer(&error).unwrap();
        assert_eq!(status, 403);
        assert_eq!(body, "<Error><Code>AccessDenied</Code></Error>");
        assert_eq!(request_kind(&error), ErrorKind::Auth);
    }

    #[test]
    fn transport_kinds_come_from_the_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, refused)),
        };
        assert_eq!(request_kind(&error), ErrorKind::Network);
        assert!(transport(&error).is_some());
        let slow = object_store::Error::Generic {
            store: "S3",
            source: Box::new(HttpError::new(
                HttpErrorKind::Timeout,
                std::io::Error::other("deadline"),
            )),
        };
        assert_eq!(request_kind(&slow), ErrorKind::Timeout);
        assert!(ErrorKind::Timeout.retryable());
        assert!(!ErrorKind::Auth.retryable());
    }

    #[test]
    fn an_untrusted_certificate_is_a_tls_failure() {
        let verdict = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        // As hyper-rustls reports it: tokio-rustls' io::Error inside another.
        let io = std::io::Error::other(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            verdict,
        ));
        let error = object_store::Error::Generic {
            store: "MicrosoftAzure",
            source: Box::new(HttpError::new(HttpErrorKind::Connect, io)),
        };
        assert_eq!(request_kind(&error), ErrorKind::Tls);
    }

    #[test]
    fn urls_are_left_out() {
        assert_eq!(
            without_urls("GET https://a/b?sig=x failed"),
            "GET <url> failed"
        );
    }
}
