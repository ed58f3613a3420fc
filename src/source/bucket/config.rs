//! A `bucket` source's settings (an S3-compatible endpoint, a bucket, and static keys or
//! none) and the rules that check them. `config` calls [`decode`] and [`settings`] for a
//! source of kind `bucket`, and [`reject_keys`] for any other.

use std::path::{Path, PathBuf};

use crate::source::config::RawShared;
use crate::source::git::config::RawGit;
use crate::syntax::fields::{Fields, Text};
use crate::syntax::positions::{Pos, Problems};
use crate::syntax::values::{boolean, resolve};
use crate::vocab::{Secret, SecretRef, SecretValue};

/// The `bucket` kind's own source keys (see [`RawBucket`]); `prefix`, `localAuthRef` and
/// `caFile` are shared with `azblob` ([`RawShared`]).
pub const FIELDS: &[&str] = &[
    "bucketName",
    "region",
    "bucketInsecure",
    "bucketAccessKey",
    "bucketSecretKey",
    "bucketAccessKeyFile",
    "bucketSecretKeyFile",
];

/// The `bucket` keys of a source, as written; [`settings`] decides what combines.
#[derive(Debug, Clone, Default)]
pub struct RawBucket {
    pub bucket_name: Option<Text>,
    pub region: Option<Text>,
    pub insecure: Option<Text>,
    pub access_key: Option<Text>,
    pub secret_key: Option<Text>,
    pub access_key_file: Option<Text>,
    pub secret_key_file: Option<Text>,
}

/// Reads the bucket keys of a `source` mapping (whatever its kind: see [`reject_keys`]).
pub fn decode(fields: &Fields<'_>, problems: &mut Problems) -> RawBucket {
    RawBucket {
        bucket_name: fields.text("bucketName", problems),
        region: fields.text("region", problems),
        insecure: fields.text("bucketInsecure", problems),
        access_key: fields.text("bucketAccessKey", problems),
        secret_key: fields.text("bucketSecretKey", problems),
        access_key_file: fields.text("bucketAccessKeyFile", problems),
        secret_key_file: fields.text("bucketSecretKeyFile", problems),
    }
}

/// `bucketInsecure`, which the endpoint's check needs before the rest (read, and reported
/// when it is not a boolean, whatever the kind).
pub fn insecure(keys: &RawBucket, problems: &mut Problems) -> bool {
    boolean(&keys.insecure, "bucketInsecure", problems)
}

/// A `bucket` source (S3-compatible): `url` is the endpoint, `http(s)://host[:port]`.
#[derive(Debug, Clone)]
pub struct BucketSettings {
    pub bucket_name: String,
    /// Only keys starting with this string are fetched; they keep it (as in Flux).
    pub prefix: Option<String>,
    /// `us-east-1` unless set.
    pub region: String,
    /// Plain http allowed (Flux's `insecure`).
    pub insecure: bool,
    pub credentials: BucketCredentials,
    /// Extra PEM CA certificates trusted for an https endpoint.
    pub ca_file: Option<PathBuf>,
}

/// How a `bucket` source signs its requests.
#[derive(Debug, Clone)]
pub enum BucketCredentials {
    /// Unsigned requests: a bucket with public read access.
    Anonymous,
    Keys {
        access_key: SecretValue,
        secret_key: SecretValue,
    },
    /// A directory holding Flux's `accesskey` and `secretkey` files.
    LocalAuthRef(PathBuf),
    /// The same keys in a Kubernetes Secret, read through the API at every sync.
    LocalAuthSecret(SecretRef),
}

const EXPECTED: &str = "expected the S3 endpoint, such as https://s3.example.com or \
                        http://127.0.0.1:8333 (with bucketInsecure: true)";

/// Why a bucket endpoint is refused. Never quotes the URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointProblem {
    #[error("it contains a space or control character")]
    SpaceOrControl,
    #[error("only http and https are supported; {EXPECTED}")]
    Scheme,
    #[error("plain http needs `bucketInsecure: true`")]
    InsecureHttp,
    #[error(
        "it must not contain credentials; use bucketAccessKey and bucketSecretKey, their \
         ...File variants, or localAuthRef"
    )]
    Credentials,
    #[error(
        "it must be only scheme, host and port (give the bucket as bucketName and a key prefix \
         as prefix); {EXPECTED}"
    )]
    Path,
    #[error("it has no host; {EXPECTED}")]
    NoHost,
    #[error("its port is not a number; {EXPECTED}")]
    BadPort,
}

/// S3's default region, which S3-compatible servers accept.
pub const DEFAULT_REGION: &str = "us-east-1";

/// `http(s)://host[:port]`, or Flux's bare `host[:port]` (https, or http with
/// `bucketInsecure`). Plain http needs `bucketInsecure: true`, as Flux's `insecure`.
/// Returned without a trailing `/`; the reason never quotes the URL.
pub fn endpoint(url: &str, insecure: bool) -> Result<String, EndpointProblem> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(EndpointProblem::SpaceOrControl);
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None if insecure => ("http".to_string(), url),
        None => ("https".to_string(), url),
    };
    if scheme != "http" && scheme != "https" {
        return Err(EndpointProblem::Scheme);
    }
    if scheme == "http" && !insecure {
        return Err(EndpointProblem::InsecureHttp);
    }
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') {
        return Err(EndpointProblem::Credentials);
    }
    if rest.contains(['/', '?', '#']) {
        return Err(EndpointProblem::Path);
    }
    if rest.is_empty() || rest.starts_with(':') {
        return Err(EndpointProblem::NoHost);
    }
    if let Some((_, port)) = rest.rsplit_once(':') {
        if !rest.ends_with(']') && port.parse::<u16>().is_err() {
            return Err(EndpointProblem::BadPort);
        }
    }
    Ok(format!("{scheme}://{rest}"))
}

/// Keys that only a `bucket` source may have, reported on any other kind.
pub fn reject_keys(raw: &RawBucket, problems: &mut Problems) {
    let keys = [
        (&raw.bucket_name, "bucketName"),
        (&raw.region, "region"),
        (&raw.insecure, "bucketInsecure"),
        (&raw.access_key, "bucketAccessKey"),
        (&raw.secret_key, "bucketSecretKey"),
        (&raw.access_key_file, "bucketAccessKeyFile"),
        (&raw.secret_key_file, "bucketSecretKeyFile"),
    ];
    for (text, key) in keys {
        if let Some(text) = text {
            problems.push(
                text.pos,
                format!("`{key}` applies only to sources of kind `bucket`"),
            );
        }
    }
}

/// Git's own keys on a bucket source.
pub fn reject_git_keys(raw: &RawGit, problems: &mut Problems) {
    if let Some(reference) = &raw.reference {
        problems.push(
            reference.pos,
            "`ref` applies only to sources of kind `git`; a bucket source follows the \
             objects under its prefix",
        );
    }
    if let Some(text) = &raw.implementation {
        problems.push(
            text.pos,
            "`gitImplementation` applies only to sources of kind `git`",
        );
    }
}

/// The settings of a `bucket` source; `source_pos` is the `source` mapping's, where missing
/// keys are reported; `local_auth_secret` is `localAuthRef.secret`, already checked.
pub fn settings(
    keys: &RawBucket,
    shared: &RawShared,
    insecure: bool,
    source_pos: Pos,
    local_auth_secret: Option<SecretRef>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<BucketSettings> {
    let bucket_name = match &keys.bucket_name {
        None => {
            problems.push(
                source_pos,
                "missing required field `bucketName` for a source of kind `bucket`",
            );
            None
        }
        Some(text) if !is_bucket_name(&text.value) => {
            problems.push(
                text.pos,
                format!(
                    "invalid bucketName {:?}: expected 3 to 63 letters, digits, '.', '-' \
                     or '_', without '/'",
                    text.value
                ),
            );
            None
        }
        Some(text) => Some(text.value.clone()),
    };
    let region = match &keys.region {
        Some(text) if text.value.trim().is_empty() => {
            problems.push(text.pos, "region must not be empty");
            None
        }
        Some(text) => Some(text.value.trim().to_string()),
        None => Some(DEFAULT_REGION.to_string()),
    };
    let prefix = shared
        .prefix
        .as_ref()
        .map(|p| p.value.trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty());
    let ca_file = shared
        .ca_file
        .as_ref()
        .map(|text| resolve(base_dir, Path::new(&text.value)));
    let credentials = credentials(
        keys,
        shared,
        source_pos,
        local_auth_secret,
        base_dir,
        problems,
    );
    Some(BucketSettings {
        bucket_name: bucket_name?,
        prefix,
        region: region?,
        insecure,
        credentials: credentials?,
        ca_file,
    })
}

/// Static keys (each inline or as a file), `localAuthRef` (a directory, or a Secret
/// already checked into `local_auth_secret`), or nothing (anonymous). Messages name keys,
/// never values.
fn credentials(
    keys: &RawBucket,
    shared: &RawShared,
    source_pos: Pos,
    local_auth_secret: Option<SecretRef>,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<BucketCredentials> {
    let one = |inline: &Option<Text>,
               file: &Option<Text>,
               names: (&str, &str),
               problems: &mut Problems|
     -> Result<Option<SecretValue>, ()> {
        match (inline, file) {
            (Some(_), Some(file)) => {
                problems.push(
                    file.pos,
                    format!("give either `{}` or `{}`, not both", names.0, names.1),
                );
                Err(())
            }
            (Some(text), None) if text.value.trim().is_empty() => {
                problems.push(text.pos, format!("`{}` must not be empty", names.0));
                Err(())
            }
            (Some(text), None) => Ok(Some(SecretValue::Inline(Secret(text.value.clone())))),
            (None, Some(text)) if text.value.is_empty() => {
                problems.push(text.pos, format!("`{}` must not be empty", names.1));
                Err(())
            }
            (None, Some(text)) => Ok(Some(SecretValue::File(resolve(
                base_dir,
                Path::new(&text.value),
            )))),
            (None, None) => Ok(None),
        }
    };
    let access = one(
        &keys.access_key,
        &keys.access_key_file,
        ("bucketAccessKey", "bucketAccessKeyFile"),
        problems,
    );
    let secret = one(
        &keys.secret_key,
        &keys.secret_key_file,
        ("bucketSecretKey", "bucketSecretKeyFile"),
        problems,
    );
    let (Ok(access), Ok(secret)) = (access, secret) else {
        return None;
    };
    let local_auth_ref = &shared.local_auth_ref;
    let either_form = local_auth_ref
        .as_ref()
        .or(shared.local_auth_ref_secret.as_ref());
    if let (Some(dir), true) = (either_form, access.is_some() || secret.is_some()) {
        problems.push(
            dir.pos,
            "a bucket source takes either keys (bucketAccessKey/bucketSecretKey or their \
             ...File variants) or localAuthRef, not both",
        );
        return None;
    }
    match (access, secret) {
        (Some(access_key), Some(secret_key)) => Some(BucketCredentials::Keys {
            access_key,
            secret_key,
        }),
        (Some(_), None) => {
            problems.push(
                source_pos,
                "an access key needs a secret key: add `bucketSecretKey` or \
                 `bucketSecretKeyFile`",
            );
            None
        }
        (None, Some(_)) => {
            problems.push(
                source_pos,
                "a secret key needs an access key: add `bucketAccessKey` or \
                 `bucketAccessKeyFile`",
            );
            None
        }
        (None, None) => match (local_auth_ref, local_auth_secret) {
            (Some(dir), _) => Some(BucketCredentials::LocalAuthRef(resolve(
                base_dir,
                Path::new(&dir.value),
            ))),
            (None, Some(secret)) => Some(BucketCredentials::LocalAuthSecret(secret)),
            (None, None) => Some(BucketCredentials::Anonymous),
        },
    }
}

/// S3's naming rules, loosened for S3-compatible servers (upper case and `_` allowed).
fn is_bucket_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}
