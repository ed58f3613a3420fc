//! Webhook receivers: is an incoming request a genuine event from the git host it claims to
//! come from, and should it trigger a sync? Flux's notification-controller semantics, as pure
//! functions over the request's headers and body (the listener that reads requests, with its
//! size cap and timeouts, is separate), so that every signature scheme is unit-tested here.
//!
//! - The URL path is `/hook/<sha256(token + name + namespace)>`, as Flux derives it: knowing
//!   the path already takes the token, and the path alone is what `generic` checks.
//! - `generic-hmac`: `X-Signature: <sha1|sha256|sha512>=<hex>`, an HMAC of the body.
//! - `github`: `X-Hub-Signature-256: sha256=<hex>` (or the older `X-Hub-Signature: sha1=`),
//!   `X-GitHub-Event` names the event; `ping` is answered and triggers nothing.
//! - `gitlab`: `X-Gitlab-Token` equals the token; `X-Gitlab-Event` names the event.
//! - `bitbucket` (Server / Data Center): `X-Hub-Signature: sha256=<hex>`; `X-Event-Key`
//!   names the event (`diagnostics:ping` is a ping).
//!
//! Every comparison of a secret-derived value is constant-time (`Mac::verify_slice`,
//! `subtle`). A rejection says nothing about why to the caller's client: the reason is for the
//! log and the counter only.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// The kinds of receiver, with Flux's names (defined with the config that names them).
pub use crate::config::ReceiverType;

/// The path a receiver answers on: `/hook/` and the hex SHA-256 of token, name and namespace.
pub fn hook_path(token: &[u8], name: &str, namespace: &str) -> String {
    let mut digest = Sha256::new();
    digest.update(token);
    digest.update(name.as_bytes());
    digest.update(namespace.as_bytes());
    format!("/hook/{}", hex::encode(digest.finalize()))
}

/// A receiver as the status API shows it: where a git host must send its webhook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookStatus {
    pub name: String,
    pub namespace: String,
    #[serde(rename = "type")]
    pub kind: ReceiverType,
    /// `/hook/<sha256>`, on the receivers' listen address.
    pub path: String,
    /// `namespace/name` of each configuration it triggers.
    pub configurations: Vec<String>,
}

/// What to do with a verified request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Trigger the receiver's resources. `event` is the host's event name, when it sends one.
    Trigger { event: Option<String> },
    /// A ping: answer it, trigger nothing.
    Pong,
    /// Genuine, but an event the receiver does not subscribe to.
    Ignored { event: String },
}

/// Why a request was refused (401 to the client, this for the log and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("the signature header is missing")]
    MissingSignature,
    #[error("the signature header is malformed or names an unsupported algorithm")]
    MalformedSignature,
    #[error("the signature does not match the body")]
    BadSignature,
    #[error("the token does not match")]
    BadToken,
}

/// Request headers, looked up case-insensitively by the caller's header map.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }
}

/// Checks one request against a receiver of `kind` with `token`, subscribed to `events`
/// (empty: all). The path has already matched [`hook_path`].
pub fn verify(
    kind: ReceiverType,
    token: &[u8],
    events: &[String],
    headers: &impl Headers,
    body: &[u8],
) -> Result<Verdict, Rejection> {
    let event = match kind {
        ReceiverType::Generic => None,
        ReceiverType::GenericHmac => {
            let header = headers
                .get("X-Signature")
                .ok_or(Rejection::MissingSignature)?;
            check_hmac(token, header, body)?;
            None
        }
        ReceiverType::Github => {
            let header = headers
                .get("X-Hub-Signature-256")
                .or_else(|| headers.get("X-Hub-Signature"))
                .ok_or(Rejection::MissingSignature)?;
            check_hmac(token, header, body)?;
            let event = headers.get("X-GitHub-Event").unwrap_or_default();
            if event == "ping" {
                return Ok(Verdict::Pong);
            }
            Some(event.to_string())
        }
        ReceiverType::Gitlab => {
            let given = headers
                .get("X-Gitlab-Token")
                .ok_or(Rejection::MissingSignature)?;
            if !bool::from(given.as_bytes().ct_eq(token)) {
                return Err(Rejection::BadToken);
            }
            Some(
                headers
                    .get("X-Gitlab-Event")
                    .unwrap_or_default()
                    .to_string(),
            )
        }
        ReceiverType::Bitbucket => {
            let header = headers
                .get("X-Hub-Signature")
                .ok_or(Rejection::MissingSignature)?;
            check_hmac(token, header, body)?;
            let event = headers.get("X-Event-Key").unwrap_or_default();
            if event == "diagnostics:ping" {
                return Ok(Verdict::Pong);
            }
            Some(event.to_string())
        }
    };
    match event {
        Some(event)
            if !events.is_empty() && !events.iter().any(|e| e.eq_ignore_ascii_case(&event)) =>
        {
            Ok(Verdict::Ignored { event })
        }
        event => Ok(Verdict::Trigger { event }),
    }
}

/// `<algorithm>=<hex>`: an HMAC of `body` keyed with `token`.
fn check_hmac(token: &[u8], header: &str, body: &[u8]) -> Result<(), Rejection> {
    let (algorithm, hex_signature) = header
        .trim()
        .split_once('=')
        .ok_or(Rejection::MalformedSignature)?;
    let signature = hex::decode(hex_signature).map_err(|_| Rejection::MalformedSignature)?;
    let verified = match algorithm.to_ascii_lowercase().as_str() {
        "sha1" => mac::<Hmac<sha1::Sha1>>(token, body).verify_slice(&signature),
        "sha256" => mac::<Hmac<Sha256>>(token, body).verify_slice(&signature),
        "sha512" => mac::<Hmac<Sha512>>(token, body).verify_slice(&signature),
        _ => return Err(Rejection::MalformedSignature),
    };
    verified.map_err(|_| Rejection::BadSignature)
}

fn mac<M: Mac + hmac::digest::KeyInit>(token: &[u8], body: &[u8]) -> M {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(token)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct Map(BTreeMap<String, String>);

    impl Headers for Map {
        fn get(&self, name: &str) -> Option<&str> {
            self.0.get(&name.to_ascii_lowercase()).map(String::as_str)
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> Map {
        Map(pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect())
    }

    /// GitHub's documented example delivery: secret "It's a Secret to Everybody", payload
    /// "Hello, World!".
    const GITHUB_SECRET: &[u8] = b"It's a Secret to Everybody";
    const GITHUB_BODY: &[u8] = b"Hello, World!";
    const GITHUB_SIGNATURE: &str =
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    #[test]
    fn github_deliveries_are_verified_by_their_hmac() {
        let push = headers(&[
            ("X-Hub-Signature-256", GITHUB_SIGNATURE),
            ("X-GitHub-Event", "push"),
        ]);
        assert_eq!(
            verify(ReceiverType::Github, GITHUB_SECRET, &[], &push, GITHUB_BODY),
            Ok(Verdict::Trigger {
                event: Some("push".into())
            })
        );
        assert_eq!(
            verify(
                ReceiverType::Github,
                b"another secret",
                &[],
                &push,
                GITHUB_BODY
            ),
            Err(Rejection::BadSignature)
        );
        assert_eq!(
            verify(
                ReceiverType::Github,
                GITHUB_SECRET,
                &[],
                &push,
                b"Hello, World?"
            ),
            Err(Rejection::BadSignature)
        );
        let unsigned = headers(&[("X-GitHub-Event", "push")]);
        assert_eq!(
            verify(
                ReceiverType::Github,
                GITHUB_SECRET,
                &[],
                &unsigned,
                GITHUB_BODY
            ),
            Err(Rejection::MissingSignature)
        );
    }

    #[test]
    fn github_pings_are_answered_and_other_events_filtered() {
        let ping = headers(&[
            ("X-Hub-Signature-256", GITHUB_SIGNATURE),
            ("X-GitHub-Event", "ping"),
        ]);
        assert_eq!(
            verify(ReceiverType::Github, GITHUB_SECRET, &[], &ping, GITHUB_BODY),
            Ok(Verdict::Pong)
        );
        let release = headers(&[
            ("X-Hub-Signature-256", GITHUB_SIGNATURE),
            ("X-GitHub-Event", "release"),
        ]);
        assert_eq!(
            verify(
                ReceiverType::Github,
                GITHUB_SECRET,
                &["push".into()],
                &release,
                GITHUB_BODY
            ),
            Ok(Verdict::Ignored {
                event: "release".into()
            })
        );
    }

    #[test]
    fn generic_hmac_accepts_sha1_sha256_and_sha512() {
        // Reference values: `printf '%s' BODY | openssl dgst -<alg> -hmac secret`.
        let body = b"{\"ref\":\"main\"}";
        for (algorithm, signature) in [
            ("sha1", "2720df955730668a9d02e6447ae1e7404a58fc17"),
            (
                "sha256",
                "037e8019218b6f3526f73ce493693b2091270a17552a7ca43f059e494420f2f0",
            ),
            (
                "sha512",
                "0166e4ca1e475d96cc620a5c863b2d2476733aa92a74652eb01a03c17fbc785149f343c901b889db\
                 1968dd6ed730a59a3af10194cdc878cfc67f35f99510dc97",
            ),
        ] {
            let good = headers(&[("X-Signature", &format!("{algorithm}={signature}"))]);
            assert_eq!(
                verify(ReceiverType::GenericHmac, b"secret", &[], &good, body),
                Ok(Verdict::Trigger { event: None }),
                "{algorithm}"
            );
        }
        let md5 = headers(&[("X-Signature", "md5=00")]);
        assert_eq!(
            verify(ReceiverType::GenericHmac, b"secret", &[], &md5, body),
            Err(Rejection::MalformedSignature)
        );
        let not_hex = headers(&[("X-Signature", "sha256=zz")]);
        assert_eq!(
            verify(ReceiverType::GenericHmac, b"secret", &[], &not_hex, body),
            Err(Rejection::MalformedSignature)
        );
    }

    #[test]
    fn gitlab_compares_the_token_and_bitbucket_signs_the_body() {
        let push = headers(&[("X-Gitlab-Token", "tok"), ("X-Gitlab-Event", "Push Hook")]);
        assert_eq!(
            verify(
                ReceiverType::Gitlab,
                b"tok",
                &["push hook".into()],
                &push,
                b"{}"
            ),
            Ok(Verdict::Trigger {
                event: Some("Push Hook".into())
            })
        );
        let wrong = headers(&[("X-Gitlab-Token", "tok2")]);
        assert_eq!(
            verify(ReceiverType::Gitlab, b"tok", &[], &wrong, b"{}"),
            Err(Rejection::BadToken)
        );
        let body = b"{\"changes\":[]}";
        // openssl dgst -sha256 -hmac bb
        let signature = "sha256=b1651c7ac2c3fca2e02c20377ed1da175f04e76d5eaee12ba43e75554bca899f";
        let push = headers(&[
            ("X-Hub-Signature", signature),
            ("X-Event-Key", "repo:refs_changed"),
        ]);
        assert_eq!(
            verify(ReceiverType::Bitbucket, b"bb", &[], &push, body),
            Ok(Verdict::Trigger {
                event: Some("repo:refs_changed".into())
            })
        );
        let ping = headers(&[
            ("X-Hub-Signature", signature),
            ("X-Event-Key", "diagnostics:ping"),
        ]);
        assert_eq!(
            verify(ReceiverType::Bitbucket, b"bb", &[], &ping, body),
            Ok(Verdict::Pong)
        );
    }

    #[test]
    fn the_hook_path_is_fluxs_digest_of_token_name_and_namespace() {
        // printf '%s' 'tokenwebflux-system' | sha256sum
        let expected = "/hook/210778179ed82deed7f85c2da86405c5f03ee4c81ad0f5b9c3ddb521748343f1";
        assert_eq!(hook_path(b"token", "web", "flux-system"), expected);
        assert_ne!(hook_path(b"token", "web", "other"), expected);
    }
}
