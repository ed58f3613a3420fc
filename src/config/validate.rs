//! Turns the raw schema into [`Settings`]: parses every value, applies defaults and Flux's ref
//! precedence, resolves paths, and checks what spans several fields (unique names, dependsOn
//! references and cycles). Every problem is recorded at the value that causes it, and
//! checking goes on, so one run shows them all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::duration::{self, DurationError};
use super::model::{
    Configuration, GitImplementation, GitReference, KubernetesSettings, Kustomization, Publish,
    SecretRef, Settings, SourceKind, SourceSettings, Target, DEFAULT_INTERVAL,
};
use super::positions::{Pos, Problems};
use super::schema::{
    RawConfiguration, RawGitRef, RawKubernetes, RawKustomization, RawPublish, RawRender,
    RawSettings, RawSource, Text,
};
use crate::render::{RenderSettings, SandboxMode};
use crate::source::git::semver::Range;

/// Where state lives when `stateDir` is not set.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/gitopsd";
/// The status/artifact API's address when `server.listen` is not set.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9090));
pub const DEFAULT_MAX_CONCURRENT_FETCHES: usize = 4;
pub const DEFAULT_NAMESPACE: &str = "default";
pub const DEFAULT_PUBLISH_LINK: &str = "current";

/// The shortest interval and retryInterval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

const DURATION_HINT: &str = "expected a Go duration such as 90s, 10m or 1h30m";
const LABEL_RULES: &str = "expected a DNS-1123 label: at most 63 lowercase letters, digits \
                           and '-', starting and ending with a letter or digit";

/// Validates `raw`. `base_dir` must be absolute; relative paths in the file resolve against
/// it. The result is only meaningful when `problems` stayed empty.
pub fn validate(raw: &RawSettings, base_dir: &Path, problems: &mut Problems) -> Settings {
    let state_dir = match &raw.state_dir {
        Some(text) => directory(text, "stateDir", base_dir, problems),
        None => PathBuf::from(DEFAULT_STATE_DIR),
    };
    let listen = raw
        .server
        .as_ref()
        .and_then(|server| server.listen.as_ref())
        .and_then(|text| match text.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid listen address {:?} for server.listen: expected an IP address \
                         and port such as 127.0.0.1:9090 or [::1]:9090",
                        text.value
                    ),
                );
                None
            }
        })
        .unwrap_or(DEFAULT_LISTEN);
    let max_concurrent_fetches = match &raw.max_concurrent_fetches {
        Some(text) => match text.value.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid value {:?} for maxConcurrentFetches: expected a whole number \
                         of at least 1",
                        text.value
                    ),
                );
                DEFAULT_MAX_CONCURRENT_FETCHES
            }
        },
        None => DEFAULT_MAX_CONCURRENT_FETCHES,
    };

    let kubernetes = raw
        .kubernetes
        .as_ref()
        .and_then(|k| kubernetes(k, base_dir, problems));
    let cluster = Cluster {
        configured: raw.kubernetes.is_some(),
        settings: kubernetes.as_ref(),
    };

    let render = render(raw.render.as_ref(), RenderSettings::default(), problems);

    let raw_configurations = raw.configurations.as_deref().unwrap_or_default();
    let mut configurations = Vec::with_capacity(raw_configurations.len());
    // (namespace, name) → line of the first definition.
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for raw_configuration in raw_configurations {
        if let Some(name) = &raw_configuration.name {
            let namespace = raw_configuration
                .namespace
                .as_ref()
                .map_or(DEFAULT_NAMESPACE, |n| n.as_str());
            let key = (namespace.to_string(), name.value.clone());
            if let Some(first_line) = seen.get(&key) {
                problems.push(
                    name.pos,
                    format!(
                        "duplicate configuration `{}` in namespace `{}` (first defined at line {first_line})",
                        key.1, key.0
                    ),
                );
            } else {
                seen.insert(key, name.pos.line);
            }
        }
        if let Some(configuration) =
            configuration(raw_configuration, base_dir, cluster, render, problems)
        {
            configurations.push(configuration);
        }
    }

    check_collisions(raw_configurations, base_dir, problems);

    Settings {
        state_dir,
        listen,
        max_concurrent_fetches,
        kubernetes,
        render,
        configurations,
    }
}

/// Two writers of one file or directory undo each other: two kustomizations rendering into
/// the same `<directory>/<name>.yaml`, or two sources publishing into one directory (each
/// collects the other's revisions as garbage, leaving its `current` link dangling). Both
/// places are named so the user can pick which to move.
fn check_collisions(raws: &[RawConfiguration], base_dir: &Path, problems: &mut Problems) {
    let mut publishers: HashMap<PathBuf, Pos> = HashMap::new();
    let mut targets: HashMap<PathBuf, Pos> = HashMap::new();
    for configuration in raws {
        let publish = configuration
            .source
            .as_ref()
            .and_then(|s| s.publish.as_ref())
            .and_then(|p| p.directory.as_ref());
        if let Some(text) = publish.filter(|t| !t.value.is_empty()) {
            let directory = resolve(base_dir, Path::new(&text.value));
            match publishers.get(&directory) {
                Some(first) => problems.push(
                    text.pos,
                    format!(
                        "publish.directory {} is also the publish directory of the source at \
                         line {}, column {}; two sources cannot publish into one directory",
                        directory.display(),
                        first.line,
                        first.column
                    ),
                ),
                None => {
                    publishers.insert(directory, text.pos);
                }
            }
        }
        for kustomization in &configuration.kustomizations {
            let directory = kustomization
                .target
                .as_ref()
                .and_then(|t| t.directory.as_ref())
                .filter(|t| !t.value.is_empty());
            let (Some(text), Some(name)) = (directory, kustomization.name.as_ref()) else {
                continue;
            };
            let file =
                resolve(base_dir, Path::new(&text.value)).join(format!("{}.yaml", name.value));
            match targets.get(&file) {
                Some(first) => problems.push(
                    text.pos,
                    format!(
                        "kustomization `{}` would write {}, which the kustomization at line {}, \
                         column {} writes too; give one of them another target directory",
                        name.value,
                        file.display(),
                        first.line,
                        first.column
                    ),
                ),
                None => {
                    targets.insert(file, text.pos);
                }
            }
        }
    }
}

/// A `render` section over `inherited`: each key it sets replaces the inherited value.
fn render(
    raw: Option<&RawRender>,
    inherited: RenderSettings,
    problems: &mut Problems,
) -> RenderSettings {
    let Some(raw) = raw else {
        return inherited;
    };
    let sandbox = match &raw.sandbox {
        None => inherited.sandbox,
        Some(text) => SandboxMode::parse(text.as_str()).unwrap_or_else(|| {
            problems.push(
                text.pos,
                format!(
                    "invalid render.sandbox {:?}: expected `auto`, `landlock`, `namespace` or \
                     `none`",
                    text.value
                ),
            );
            inherited.sandbox
        }),
    };
    let remote_bases = match &raw.remote_bases {
        None => inherited.remote_bases,
        some => boolean(some, "render.remoteBases", problems),
    };
    RenderSettings {
        sandbox,
        remote_bases,
    }
}

/// What the configurations need to know about the top-level `kubernetes` section.
#[derive(Clone, Copy)]
struct Cluster<'a> {
    /// The section is written (valid or not: a broken one was reported already).
    configured: bool,
    /// The section, when valid.
    settings: Option<&'a KubernetesSettings>,
}

fn kubernetes(
    raw: &RawKubernetes,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<KubernetesSettings> {
    let kubeconfig = raw.kubeconfig.as_ref().and_then(|text| {
        if text.value.trim().is_empty() {
            problems.push(
                text.pos,
                "kubernetes.kubeconfig must not be empty; expected the path of a kubeconfig file",
            );
            return None;
        }
        Some(resolve(base_dir, Path::new(&text.value)))
    });
    let context = match &raw.context {
        Some(text) if text.value.trim().is_empty() => {
            problems.push(
                text.pos,
                "kubernetes.context must not be empty; leave it out to use the kubeconfig's \
                 current-context",
            );
            return None;
        }
        Some(text) => Some(text.value.clone()),
        None => None,
    };
    Some(KubernetesSettings {
        kubeconfig: kubeconfig?,
        context,
    })
}

/// A `localAuthRef.secret`: a valid Secret name and a cluster to read it from. Every source
/// kind takes it, as the same keys a `localAuthRef.directory` holds.
fn secret_ref(
    raw: &RawSource,
    namespace: Option<&str>,
    cluster: Cluster<'_>,
    problems: &mut Problems,
) -> Option<SecretRef> {
    let text = raw.azure_blob.local_auth_ref_secret.as_ref()?;
    let mut valid = true;
    if !is_dns1123_subdomain(&text.value) {
        problems.push(
            text.pos,
            format!(
                "invalid Secret name {:?} in localAuthRef.secret: expected a DNS-1123 \
                 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and \
                 ending with a letter or digit",
                text.value
            ),
        );
        valid = false;
    }
    if !cluster.configured {
        problems.push(
            text.pos,
            "`localAuthRef.secret` names a Kubernetes Secret, which needs a cluster: add the \
             top-level `kubernetes: { kubeconfig: PATH }`, or use `localAuthRef.directory`",
        );
        valid = false;
    }
    if !valid {
        return None;
    }
    Some(SecretRef {
        kubernetes: cluster.settings?.clone(),
        namespace: namespace?.to_string(),
        name: text.value.clone(),
    })
}

fn configuration(
    raw: &RawConfiguration,
    base_dir: &Path,
    cluster: Cluster<'_>,
    inherited: RenderSettings,
    problems: &mut Problems,
) -> Option<Configuration> {
    let name = raw
        .name
        .as_ref()
        .and_then(|text| label(text, "configuration name", problems));
    let namespace = match &raw.namespace {
        Some(text) => label(text, "namespace", problems),
        None => Some(DEFAULT_NAMESPACE.to_string()),
    };
    if let Some(scope) = &raw.scope {
        // Accepted for Azure compatibility; nothing acts on it yet.
        if !matches!(scope.as_str(), "cluster" | "namespace") {
            problems.push(
                scope.pos,
                format!(
                    "invalid scope {:?}: expected `cluster` or `namespace`",
                    scope.value
                ),
            );
        }
    }
    let suspend = boolean(&raw.suspend, "suspend", problems);
    let render = render(raw.render.as_ref(), inherited, problems);
    let source = raw
        .source
        .as_ref()
        .and_then(|s| source(s, base_dir, namespace.as_deref(), cluster, problems));
    let kustomizations = kustomizations(&raw.kustomizations, base_dir, problems);
    Some(Configuration {
        name: name?,
        namespace: namespace?,
        suspend,
        render,
        source: source?,
        kustomizations,
    })
}

fn source(
    raw: &RawSource,
    base_dir: &Path,
    namespace: Option<&str>,
    cluster: Cluster<'_>,
    problems: &mut Problems,
) -> Option<SourceSettings> {
    let kind = raw.kind.as_ref().and_then(|kind| match kind.as_str() {
        "git" => Some(SourceKind::Git),
        "azblob" => Some(SourceKind::AzureBlob),
        "bucket" => Some(SourceKind::Bucket),
        other => {
            problems.push(
                kind.pos,
                format!("unknown source kind {other:?}: expected `git`, `bucket` or `azblob`"),
            );
            None
        }
    });
    let is_azblob = kind == Some(SourceKind::AzureBlob);
    let is_bucket = kind == Some(SourceKind::Bucket);
    let bucket_insecure = boolean(&raw.bucket.insecure, "bucketInsecure", problems);
    let url = raw.url.as_ref().and_then(|url| {
        let checked = if is_azblob {
            azblob::account_endpoint(&url.value)
        } else if is_bucket {
            bucket::endpoint(&url.value, bucket_insecure)
        } else {
            git_url(&url.value, base_dir)
        };
        match checked {
            Ok(url) => Some(url),
            Err(reason) => {
                // The URL itself is not repeated: it may carry credentials.
                problems.push(url.pos, format!("invalid URL for source.url: {reason}"));
                None
            }
        }
    });
    let reference = match &raw.reference {
        Some(reference) => git_reference(reference, problems),
        None => Some(GitReference::RemoteHead),
    };
    let git_implementation = match &raw.git_implementation {
        None => GitImplementation::Auto,
        Some(text) => match text.as_str() {
            "auto" => GitImplementation::Auto,
            "gix" => GitImplementation::Gix,
            "git2" => GitImplementation::Git2,
            other => {
                problems.push(
                    text.pos,
                    format!(
                        "invalid gitImplementation {other:?}: expected `auto`, `gix` or `git2`"
                    ),
                );
                GitImplementation::Auto
            }
        },
    };
    let interval = polling_interval(&raw.interval, "interval", problems);
    let timeout = positive_duration(&raw.timeout, "timeout", problems);
    let retry_interval = polling_interval(&raw.retry_interval, "retryInterval", problems);
    let suspend = boolean(&raw.suspend, "suspend", problems);
    let publish = match &raw.publish {
        Some(publish) => Some(self::publish(publish, base_dir, problems)?),
        None => None,
    };
    let local_auth_secret = secret_ref(raw, namespace, cluster, problems);
    let mut git_auth = crate::source::git::auth::validate(
        &raw.git_auth,
        raw.azure_blob.local_auth_ref.as_ref(),
        raw.azure_blob.local_auth_ref_secret.as_ref(),
        kind.is_none_or(|k| k == SourceKind::Git),
        url.as_deref(),
        base_dir,
        problems,
    );
    if kind == Some(SourceKind::Git) {
        git_auth.local_auth_secret = local_auth_secret.clone();
    }
    let bucket = match is_bucket {
        true => {
            bucket::reject_git_keys(raw, problems);
            Some(bucket::settings(
                raw,
                bucket_insecure,
                local_auth_secret.clone(),
                base_dir,
                problems,
            )?)
        }
        false => {
            bucket::reject_keys(&raw.bucket, problems);
            None
        }
    };
    Some(SourceSettings {
        kind: kind?,
        url: url?,
        reference: reference?,
        interval,
        timeout,
        retry_interval,
        git_implementation,
        ignore: raw.ignore.as_ref().map(|text| text.value.clone()),
        suspend,
        publish,
        git_auth,
        azure_blob: match is_azblob {
            true => Some(azblob::settings(
                &raw.azure_blob,
                raw.pos,
                local_auth_secret,
                base_dir,
                problems,
            )?),
            false => {
                azblob::reject_keys(&raw.azure_blob, problems);
                None
            }
        },
        bucket,
    })
}

/// The `bucket` kind: an S3-compatible endpoint, a bucket, and static keys or none.
mod bucket {
    use std::path::Path;

    use super::super::model::{BucketCredentials, BucketSettings, Secret, SecretRef, SecretValue};
    use super::super::positions::Problems;
    use super::super::schema::{RawBucket, RawSource, Text};
    use super::resolve;

    /// S3's default region, which S3-compatible servers accept.
    pub const DEFAULT_REGION: &str = "us-east-1";

    /// `http(s)://host[:port]`, or Flux's bare `host[:port]` (https, or http with
    /// `bucketInsecure`). Plain http needs `bucketInsecure: true`, as Flux's `insecure`.
    /// Returned without a trailing `/`; the reason never quotes the URL.
    pub fn endpoint(url: &str, insecure: bool) -> Result<String, String> {
        const EXPECTED: &str = "expected the S3 endpoint, such as https://s3.example.com or \
                                http://127.0.0.1:8333 (with bucketInsecure: true)";
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains a space or control character".into());
        }
        let (scheme, rest) = match url.split_once("://") {
            Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
            None if insecure => ("http".to_string(), url),
            None => ("https".to_string(), url),
        };
        if scheme != "http" && scheme != "https" {
            return Err(format!("only http and https are supported; {EXPECTED}"));
        }
        if scheme == "http" && !insecure {
            return Err("plain http needs `bucketInsecure: true`".into());
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') {
            return Err("it must not contain credentials; use bucketAccessKey and \
                        bucketSecretKey, their ...File variants, or localAuthRef"
                .into());
        }
        if rest.contains(['/', '?', '#']) {
            return Err(format!(
                "it must be only scheme, host and port (give the bucket as bucketName and a \
                 key prefix as prefix); {EXPECTED}"
            ));
        }
        if rest.is_empty() || rest.starts_with(':') {
            return Err(format!("it has no host; {EXPECTED}"));
        }
        if let Some((_, port)) = rest.rsplit_once(':') {
            if !rest.ends_with(']') && port.parse::<u16>().is_err() {
                return Err(format!("its port is not a number; {EXPECTED}"));
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
    pub fn reject_git_keys(raw: &RawSource, problems: &mut Problems) {
        if let Some(reference) = &raw.reference {
            problems.push(
                reference.pos,
                "`ref` applies only to sources of kind `git`; a bucket source follows the \
                 objects under its prefix",
            );
        }
        if let Some(text) = &raw.git_implementation {
            problems.push(
                text.pos,
                "`gitImplementation` applies only to sources of kind `git`",
            );
        }
    }

    pub fn settings(
        raw: &RawSource,
        insecure: bool,
        local_auth_secret: Option<SecretRef>,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> Option<BucketSettings> {
        let keys = &raw.bucket;
        let bucket_name = match &keys.bucket_name {
            None => {
                problems.push(
                    raw.pos,
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
        let prefix = raw
            .azure_blob
            .prefix
            .as_ref()
            .map(|p| p.value.trim_start_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let ca_file = raw
            .azure_blob
            .ca_file
            .as_ref()
            .map(|text| resolve(base_dir, Path::new(&text.value)));
        let credentials = credentials(raw, local_auth_secret, base_dir, problems);
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
        raw: &RawSource,
        local_auth_secret: Option<SecretRef>,
        base_dir: &Path,
        problems: &mut Problems,
    ) -> Option<BucketCredentials> {
        let keys = &raw.bucket;
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
        let local_auth_ref = &raw.azure_blob.local_auth_ref;
        let either_form = local_auth_ref
            .as_ref()
            .or(raw.azure_blob.local_auth_ref_secret.as_ref());
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
                    raw.pos,
                    "an access key needs a secret key: add `bucketSecretKey` or \
                     `bucketSecretKeyFile`",
                );
                None
            }
            (None, Some(_)) => {
                problems.push(
                    raw.pos,
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
}

/// Checks every ref field that is set, then applies Flux's precedence:
/// commit > name > tag > semver > branch.
fn git_reference(raw: &RawGitRef, problems: &mut Problems) -> Option<GitReference> {
    let mut valid = true;
    let mut check = |text: &Option<Text>, key: &str, check: fn(&str) -> Result<(), String>| {
        let text = text.as_ref()?;
        match check(&text.value) {
            Ok(()) => Some(text.value.clone()),
            Err(reason) => {
                problems.push(
                    text.pos,
                    format!("invalid {key} {:?} in source.ref: {reason}", text.value),
                );
                valid = false;
                None
            }
        }
    };
    let branch = check(&raw.branch, "branch", check_ref_component);
    let tag = check(&raw.tag, "tag", check_ref_component);
    let semver = check(&raw.semver, "semver range", |range| {
        Range::parse(range).map(|_| ()).map_err(|err| err.reason)
    });
    let name = check(&raw.name, "ref name", check_full_ref_name);
    let commit = check(&raw.commit, "commit", check_commit);
    if !valid {
        return None;
    }
    Some(if let Some(sha) = commit {
        GitReference::Commit {
            sha: sha.to_ascii_lowercase(),
            branch,
        }
    } else if let Some(name) = name {
        GitReference::Name(name)
    } else if let Some(tag) = tag {
        GitReference::Tag(tag)
    } else if let Some(range) = semver {
        GitReference::Semver(range)
    } else if let Some(branch) = branch {
        GitReference::Branch(branch)
    } else {
        GitReference::RemoteHead
    })
}

fn publish(raw: &RawPublish, base_dir: &Path, problems: &mut Problems) -> Option<Publish> {
    let directory = raw
        .directory
        .as_ref()
        .map(|text| directory(text, "publish.directory", base_dir, problems));
    let link = match &raw.link {
        None => DEFAULT_PUBLISH_LINK.to_string(),
        Some(text) => {
            let link = text.as_str();
            if link.is_empty() || link == "." || link == ".." || link.contains(['/', '\\', '\0']) {
                problems.push(
                    text.pos,
                    format!(
                        "invalid publish.link {link:?}: expected a plain file name such as \
                         `current`, without `/`"
                    ),
                );
            }
            link.to_string()
        }
    };
    Some(Publish {
        directory: directory?,
        link,
    })
}

fn kustomizations(
    raws: &[RawKustomization],
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<Kustomization> {
    let mut result = Vec::with_capacity(raws.len());
    // name → index in `raws` of its first definition.
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, raw) in raws.iter().enumerate() {
        if let Some(name) = &raw.name {
            if let Some(&first) = index.get(name.as_str()) {
                let first_line = raws[first].name.as_ref().map_or(0, |n| n.pos.line);
                problems.push(
                    name.pos,
                    format!(
                        "duplicate kustomization `{}` in this configuration (first defined at line {first_line})",
                        name.value
                    ),
                );
            } else {
                index.insert(name.as_str(), i);
            }
        }
        if let Some(kustomization) = kustomization(raw, base_dir, problems) {
            result.push(kustomization);
        }
    }
    check_dependencies(raws, &index, problems);
    result
}

fn kustomization(
    raw: &RawKustomization,
    base_dir: &Path,
    problems: &mut Problems,
) -> Option<Kustomization> {
    let name = raw
        .name
        .as_ref()
        .and_then(|text| label(text, "kustomization name", problems));
    let path = match &raw.path {
        None => Some(String::new()),
        Some(text) => match artifact_path(&text.value) {
            Some(path) => Some(path),
            None => {
                problems.push(
                    text.pos,
                    format!(
                        "path {:?} escapes the source's root through `..`; expected a path \
                         inside the source such as ./apps",
                        text.value
                    ),
                );
                None
            }
        },
    };
    let mut depends_on: Vec<String> = Vec::with_capacity(raw.depends_on.len());
    for dependency in &raw.depends_on {
        if !depends_on.contains(&dependency.value) {
            depends_on.push(dependency.value.clone());
        }
    }
    let target = match &raw.target {
        None => Some(Target::None),
        Some(target) => target
            .directory
            .as_ref()
            .map(|text| Target::Directory(directory(text, "target.directory", base_dir, problems))),
    };
    Some(Kustomization {
        name: name?,
        path: path?,
        prune: boolean(&raw.prune, "prune", problems),
        depends_on,
        interval: polling_interval(&raw.interval, "interval", problems),
        retry_interval: polling_interval(&raw.retry_interval, "retryInterval", problems),
        timeout: positive_duration(&raw.timeout, "timeout", problems),
        wait: boolean(&raw.wait, "wait", problems),
        force: boolean(&raw.force, "force", problems),
        suspend: boolean(&raw.suspend, "suspend", problems),
        target: target?,
    })
}

/// Every dependsOn entry must name a kustomization of the same configuration, and the
/// dependencies must not loop (Flux never notices a loop; its kustomizations just never apply).
fn check_dependencies(
    raws: &[RawKustomization],
    index: &HashMap<&str, usize>,
    problems: &mut Problems,
) {
    // Edges from each first definition to the first definitions it depends on, with the
    // position of the dependsOn entry.
    let mut edges: Vec<Vec<(usize, Pos)>> = vec![Vec::new(); raws.len()];
    for (i, raw) in raws.iter().enumerate() {
        let Some(name) = &raw.name else { continue };
        if index.get(name.as_str()) != Some(&i) {
            continue; // a duplicate, reported already
        }
        for dependency in &raw.depends_on {
            match index.get(dependency.as_str()) {
                Some(&target) => {
                    if !edges[i].iter().any(|(t, _)| *t == target) {
                        edges[i].push((target, dependency.pos));
                    }
                }
                None => problems.push(
                    dependency.pos,
                    format!(
                        "kustomization `{}` depends on `{}`, which is not a kustomization of \
                         this configuration",
                        name.value, dependency.value
                    ),
                ),
            }
        }
    }

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    struct Search<'a> {
        raws: &'a [RawKustomization],
        edges: &'a [Vec<(usize, Pos)>],
        marks: Vec<Mark>,
        path: Vec<usize>,
        problems: &'a mut Problems,
    }
    impl Search<'_> {
        fn name(&self, i: usize) -> &str {
            self.raws[i].name.as_ref().map_or("", |n| n.as_str())
        }

        fn visit(&mut self, from: usize) {
            self.marks[from] = Mark::OnPath;
            self.path.push(from);
            for &(to, pos) in &self.edges[from] {
                match self.marks[to] {
                    Mark::New => self.visit(to),
                    Mark::OnPath => {
                        let start = self.path.iter().position(|&p| p == to).unwrap_or(0);
                        let mut names: Vec<&str> =
                            self.path[start..].iter().map(|&i| self.name(i)).collect();
                        names.push(self.name(to));
                        let message = format!("dependsOn cycle: {}", names.join(" -> "));
                        self.problems.push(pos, message);
                    }
                    Mark::Done => {}
                }
            }
            self.path.pop();
            self.marks[from] = Mark::Done;
        }
    }
    let mut search = Search {
        raws,
        edges: &edges,
        marks: vec![Mark::New; raws.len()],
        path: Vec::new(),
        problems,
    };
    for i in 0..raws.len() {
        if search.marks[i] == Mark::New {
            search.visit(i);
        }
    }
}

fn label(text: &Text, what: &str, problems: &mut Problems) -> Option<String> {
    if is_dns1123_label(&text.value) {
        Some(text.value.clone())
    } else {
        problems.push(
            text.pos,
            format!("invalid {what} {:?}: {LABEL_RULES}", text.value),
        );
        None
    }
}

/// Kubernetes' DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
/// A Kubernetes object name: dot-separated DNS-1123 labels, 253 characters at most.
pub fn is_dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns1123_label)
}

pub fn is_dns1123_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
}

fn boolean(text: &Option<Text>, key: &str, problems: &mut Problems) -> bool {
    let Some(text) = text else { return false };
    match text.as_str() {
        "true" | "True" | "TRUE" => true,
        "false" | "False" | "FALSE" => false,
        other => {
            problems.push(
                text.pos,
                format!("invalid value {other:?} for {key}: expected true or false"),
            );
            false
        }
    }
}

/// An interval or timeout: a Go duration greater than zero, [`DEFAULT_INTERVAL`] when unset.
fn positive_duration(text: &Option<Text>, key: &str, problems: &mut Problems) -> Duration {
    let Some(text) = text else {
        return DEFAULT_INTERVAL;
    };
    match duration::parse_positive(&text.value) {
        Ok(duration) => duration,
        Err(err) => {
            let reason = match err {
                DurationError::Syntax => DURATION_HINT.to_string(),
                DurationError::NotPositive => format!("must be greater than zero; {DURATION_HINT}"),
                other => format!("{other}; {DURATION_HINT}"),
            };
            problems.push(
                text.pos,
                format!("invalid duration {:?} for {key}: {reason}", text.value),
            );
            DEFAULT_INTERVAL
        }
    }
}

/// An interval or retryInterval: a duration of at least [`MIN_INTERVAL`]. Shorter ones turn
/// polling into a busy loop (1ns polled 94 times a second) against someone else's server.
fn polling_interval(text: &Option<Text>, key: &str, problems: &mut Problems) -> Duration {
    let value = positive_duration(text, key, problems);
    if let Some(text) = text {
        if value < MIN_INTERVAL {
            problems.push(
                text.pos,
                format!(
                    "invalid duration {:?} for {key}: must be at least {}s",
                    text.value,
                    MIN_INTERVAL.as_secs()
                ),
            );
        }
    }
    value
}

/// A directory from the file: relative ones resolve against the config file's directory.
fn directory(text: &Text, key: &str, base_dir: &Path, problems: &mut Problems) -> PathBuf {
    if text.value.is_empty() {
        problems.push(
            text.pos,
            format!("{key} must not be empty; expected a directory path"),
        );
    }
    resolve(base_dir, Path::new(&text.value))
}

/// `base.join(path)` with `.` and `..` removed lexically (without touching the file system,
/// which may not have the directory yet).
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    let mut resolved = PathBuf::new();
    for component in base.join(path).components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match resolved.components().next_back() {
                Some(Component::Normal(_)) => {
                    resolved.pop();
                }
                // `/..` is `/`.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => resolved.push(component),
            },
            other => resolved.push(other),
        }
    }
    resolved
}

/// Normalises a kustomization path inside the artifact: `./apps/../infra/` → `infra`, `./` →
/// `` (the root). An absolute path counts from the artifact root, as in Flux. `None` when
/// `..` climbs above the root.
pub fn artifact_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// The URL to fetch: a local path written as such (`/srv/git/repo`, `./repo`, `..`) becomes a
/// `file://` URL, relative paths counting from the config file's directory; anything else must
/// be a URL [`check_git_url`] accepts and is kept as written.
fn git_url(url: &str, base_dir: &Path) -> Result<String, String> {
    let is_local_path = url == "."
        || url == ".."
        || url.starts_with('/')
        || url.starts_with("./")
        || url.starts_with("../");
    if !is_local_path {
        check_git_url(url)?;
        return Ok(url.to_string());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains a space or control character".into());
    }
    let path = resolve(base_dir, Path::new(url));
    Ok(format!("file://{}", path.display()))
}

/// Accepts `file://`, `git://`, `http://`, `https://`, `ssh://` URLs and scp-like
/// `user@host:path`. The reason never quotes the URL, which may hold a password.
fn check_git_url(url: &str) -> Result<(), String> {
    const ACCEPTED: &str = "expected file://, git://, http://, https://, ssh://, scp-like \
                            user@host:path, or a local path starting with /, ./ or ../";
    if url.is_empty() {
        return Err(format!("it is empty; {ACCEPTED}"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains a space or control character".into());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        return match scheme.as_str() {
            "file" => {
                if path.len() <= 1 {
                    Err(
                        "a file:// URL needs an absolute path, such as file:///srv/git/repo.git"
                            .into(),
                    )
                } else {
                    Ok(())
                }
            }
            "git" | "http" | "https" | "ssh" => {
                check_authority(authority)?;
                if path.len() <= 1 {
                    Err("it names no repository path after the host".into())
                } else {
                    Ok(())
                }
            }
            _ => Err(format!("unsupported scheme `{scheme}`; {ACCEPTED}")),
        };
    }
    // scp-like: user@host:path, where no '/' comes before the ':'.
    if let Some((user_host, path)) = url.split_once(':') {
        if let Some((user, host)) = user_host.split_once('@') {
            if !user_host.contains('/') && !user.is_empty() {
                if !is_host_name(host) {
                    return Err("the host part of user@host:path is not a valid host name".into());
                }
                if path.is_empty() {
                    return Err("it names no repository path after `:`".into());
                }
                return Ok(());
            }
        }
    }
    Err(format!("it is not a URL; {ACCEPTED}"))
}

/// `[user[:password]@]host[:port]` of a network URL.
fn check_authority(authority: &str) -> Result<(), String> {
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or("its IPv6 address lacks the closing `]`")?;
        if address.parse::<Ipv6Addr>().is_err() {
            return Err("its bracketed host is not an IPv6 address".into());
        }
        if after.is_empty() {
            None
        } else {
            Some(
                after
                    .strip_prefix(':')
                    .ok_or("unexpected text after the IPv6 address")?,
            )
        }
    } else {
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        };
        if !is_host_name(host) {
            return Err(if host.is_empty() {
                "it has no host".into()
            } else {
                "its host is not a valid host name".into()
            });
        }
        port
    };
    if let Some(port) = port {
        if port.parse::<u16>().is_err() {
            return Err("its port is not a number between 0 and 65535".into());
        }
    }
    Ok(())
}

fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '%'))
}

/// A branch or tag as git's check-ref-format accepts it (without the `refs/heads/` part).
fn check_ref_component(name: &str) -> Result<(), String> {
    let bad = name.is_empty()
        || name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.ends_with(".lock")
        || name.contains("..")
        || name.contains("//")
        || name.contains("@{")
        || name == "@"
        || name.contains("/.")
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        Err("not a valid git ref name (no spaces, `..`, `~^:?*[\\`, and not ending in `/`, `.` or `.lock`)".into())
    } else {
        Ok(())
    }
}

fn check_full_ref_name(name: &str) -> Result<(), String> {
    match name.strip_prefix("refs/") {
        Some(rest) if check_ref_component(rest).is_ok() => Ok(()),
        _ => Err("expected a full ref name starting with refs/, such as refs/pull/1/head".into()),
    }
}

fn check_commit(sha: &str) -> Result<(), String> {
    if sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("expected a full 40-character hexadecimal SHA-1".into())
    }
}

/// The `azblob` kind: account endpoint, container, and exactly one way to sign in.
mod azblob {
    use std::path::Path;

    use super::super::model::{AzureAuth, AzureBlobSettings, Secret, SecretRef, SecretValue};
    use super::super::positions::{Pos, Problems};
    use super::super::schema::{RawAzureBlob, Text};
    use super::{boolean, resolve};

    /// `http(s)://host[:port][/path]` without credentials, query or fragment; returned without
    /// a trailing `/`. The reason never quotes the URL.
    pub fn account_endpoint(url: &str) -> Result<String, String> {
        const EXPECTED: &str = "expected the storage account endpoint, such as \
                                https://<account>.blob.core.windows.net, or \
                                http://127.0.0.1:10000/devstoreaccount1 for Azurite";
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("it contains a space or control character".into());
        }
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!("it has no scheme; {EXPECTED}"));
        };
        if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
            return Err(format!("only http and https are supported; {EXPECTED}"));
        }
        let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("it has no host; {EXPECTED}"));
        }
        if authority.contains('@') {
            return Err(
                "it must not contain credentials; use accountKey, sasToken or localAuthRef".into(),
            );
        }
        if rest.contains(['?', '#']) {
            return Err(
                "it must not contain a query or fragment; give a SAS token as sasToken \
                         instead"
                    .into(),
            );
        }
        if let Some((_, port)) = authority.rsplit_once(':') {
            if !authority.ends_with(']') && port.parse::<u16>().is_err() {
                return Err(format!("its port is not a number; {EXPECTED}"));
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
        let prefix = raw
            .prefix
            .as_ref()
            .map(|p| p.value.trim_start_matches('/').to_string())
            .filter(|p| !p.is_empty());
        let auth = auth(raw, source_pos, local_auth_secret, base_dir, problems);
        let authority_host = raw
            .authority_host
            .as_ref()
            .and_then(|text| http_url(text, "authorityHost", problems));
        let msi_endpoint = raw
            .mi_endpoint
            .as_ref()
            .and_then(|text| http_url(text, "miEndpoint", problems));
        let ca_file = raw
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
        let with_cert = client_cert.is_some()
            || cert_password.is_some()
            || raw.sp_client_cert_send_chain.is_some();
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
                pos_of(&raw.local_auth_ref),
                pos_of(&raw.local_auth_ref_secret),
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
        if let Some(text) = &raw.local_auth_ref {
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
            && !name.contains("--")
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "cluster-config", "a1", "0", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn artifact_paths_normalise_and_never_escape() {
        assert_eq!(artifact_path("./").as_deref(), Some(""));
        assert_eq!(artifact_path("").as_deref(), Some(""));
        assert_eq!(artifact_path(".").as_deref(), Some(""));
        assert_eq!(
            artifact_path("./infrastructure").as_deref(),
            Some("infrastructure")
        );
        assert_eq!(artifact_path("/apps/edge/").as_deref(), Some("apps/edge"));
        assert_eq!(
            artifact_path("apps/../infra//x").as_deref(),
            Some("infra/x")
        );
        assert_eq!(artifact_path("../x"), None);
        assert_eq!(artifact_path("a/../../x"), None);
        assert_eq!(artifact_path("/.."), None);
    }

    #[test]
    fn resolves_against_the_base() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(
            resolve(base, Path::new("./state")),
            Path::new("/etc/gitopsd/state")
        );
        assert_eq!(resolve(base, Path::new("../x/./y")), Path::new("/etc/x/y"));
        assert_eq!(resolve(base, Path::new("/srv/app")), Path::new("/srv/app"));
        assert_eq!(resolve(base, Path::new("/../a")), Path::new("/a"));
    }

    #[test]
    fn git_urls() {
        for ok in [
            "https://github.com/org/repo",
            "http://localhost:3000/org/repo.git",
            "ssh://git@github.com/org/fleet",
            "ssh://git@[::1]:2222/org/fleet",
            "git://host/repo",
            "file:///srv/git/edge.git",
            "git@github.com:org/repo.git",
            "https://user:token@host/org/repo",
        ] {
            assert_eq!(check_git_url(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "github.com/org/repo",
            "ftp://host/repo",
            "https://",
            "https:///org/repo",
            "https://host",
            "https://host:port/repo",
            "https://host/org repo",
            "file://",
            "file://repo",
            "git@:repo",
            "git@host:",
            "ssh://git@[::1/repo",
        ] {
            assert!(check_git_url(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn local_paths_become_file_urls() {
        let base = Path::new("/etc/gitopsd");
        assert_eq!(git_url("..", base).as_deref(), Ok("file:///etc"));
        assert_eq!(git_url(".", base).as_deref(), Ok("file:///etc/gitopsd"));
        assert_eq!(
            git_url("./repo", base).as_deref(),
            Ok("file:///etc/gitopsd/repo")
        );
        assert_eq!(
            git_url("/srv/git/x.git", base).as_deref(),
            Ok("file:///srv/git/x.git")
        );
        assert_eq!(git_url("https://h/r", base).as_deref(), Ok("https://h/r"));
        assert!(git_url("repo", base).is_err());
        assert!(git_url("github.com/org/repo", base).is_err());
    }

    #[test]
    fn ref_names() {
        assert!(check_ref_component("main").is_ok());
        assert!(check_ref_component("release/1.x").is_ok());
        assert!(check_ref_component("v1.2.3").is_ok());
        for bad in ["", "a b", "a..b", "a/", "x.lock", "-x", "a~1", "a:b", "@"] {
            assert!(check_ref_component(bad).is_err(), "{bad:?}");
        }
        assert!(check_full_ref_name("refs/pull/1/head").is_ok());
        assert!(check_full_ref_name("main").is_err());
        assert!(check_full_ref_name("refs/").is_err());
        assert!(check_commit(&"a".repeat(40)).is_ok());
        assert!(check_commit(&"A".repeat(40)).is_ok());
        assert!(check_commit("abc123").is_err());
        assert!(check_commit(&"g".repeat(40)).is_err());
    }
}
