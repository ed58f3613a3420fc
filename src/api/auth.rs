//! The API's optional bearer token (`server.token` / `server.tokenFile`).
//!
//! Everything but the probes (`/healthz`, `/readyz`, `/metrics`, which orchestrators and
//! Prometheus call without credentials and which reveal no artifact content) needs
//! `Authorization: Bearer <token>` once a token is configured. A `tokenFile` is read again at
//! every request, like every other `...File` secret, so rotating the token needs no restart.

use crate::config::SecretValue;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;

/// The paths anyone may call.
pub const EXEMPT_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Why the configured token cannot be used. Never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read server.tokenFile {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid token in server.tokenFile {}: {problem}", path.display())]
    Invalid {
        path: PathBuf,
        problem: &'static str,
    },
}

/// Where the token comes from.
#[derive(Debug, Clone)]
pub struct TokenSource(SecretValue);

impl TokenSource {
    pub fn new(value: SecretValue) -> Self {
        TokenSource(value)
    }

    /// The token as it is now: the inline value, or the file's content without surrounding
    /// whitespace (files usually end in a newline).
    pub async fn current(&self) -> Result<Token, TokenError> {
        match &self.0 {
            SecretValue::Inline(secret) => Ok(Token(secret.0.clone())),
            SecretValue::File(path) => {
                let text =
                    tokio::fs::read_to_string(path)
                        .await
                        .map_err(|source| TokenError::Read {
                            path: path.clone(),
                            source,
                        })?;
                let token = text.trim();
                if let Some(problem) = crate::config::validate::token_problem(token) {
                    return Err(TokenError::Invalid {
                        path: path.clone(),
                        problem,
                    });
                }
                Ok(Token(token.to_string()))
            }
        }
    }
}

/// A token value. `Debug` never shows it.
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Whether `presented` is this token, in time that depends on neither value: both are
    /// hashed first (so lengths leak nothing either), then every byte of the digests is
    /// compared without an early exit.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(presented);
        let difference = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        // black_box keeps the optimiser from turning the fold into an early-exit compare.
        std::hint::black_box(difference) == 0
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Middleware: lets a request through when the path is exempt or the token matches.
pub async fn require_token(
    State(source): State<Arc<TokenSource>>,
    request: Request,
    next: Next,
) -> Response {
    if EXEMPT_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let token = match source.current().await {
        Ok(token) => token,
        Err(err) => {
            // Fail closed: without a readable token nobody gets in.
            tracing::error!(error = %err, "refusing an API request: the token is unavailable");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server's API token is unavailable; see its log\n",
            )
                .into_response();
        }
    };
    // RFC 6750: no credentials get the bare challenge, wrong ones `invalid_token`.
    let valid = bearer(request.headers()).map(|presented| token.matches(presented));
    let (challenge, body) = match valid {
        Some(true) => return next.run(request).await,
        None => (
            r#"Bearer realm="gitopsd""#,
            "this endpoint needs an `Authorization: Bearer <token>` header\n",
        ),
        Some(false) => (
            r#"Bearer realm="gitopsd", error="invalid_token""#,
            "the bearer token is not valid\n",
        ),
    };
    tracing::debug!(path = %request.uri().path(), "API request without a valid token");
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic abc")), None);
        assert_eq!(bearer(&headers("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    #[tokio::test]
    async fn token_comparison_and_file_trimming() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "s3cret-token\n").unwrap();
        let token = TokenSource::new(SecretValue::File(file.clone()))
            .current()
            .await
            .unwrap();
        assert!(token.matches(b"s3cret-token"));
        assert!(!token.matches(b"s3cret-toke"));
        assert!(!token.matches(b"s3cret-token2"));
        assert!(!token.matches(b""));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");

        let inline = TokenSource::new(SecretValue::Inline(Secret("abc".into())));
        assert!(inline.current().await.unwrap().matches(b"abc"));

        std::fs::write(&file, "two words\n").unwrap();
        let err = TokenSource::new(SecretValue::File(file.clone()))
            .current()
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Invalid { .. }), "{err}");
        assert!(!err.to_string().contains("words"), "{err}");
        let err = TokenSource::new(SecretValue::File(dir.path().join("missing")))
            .current()
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Read { .. }), "{err}");
    }
}
