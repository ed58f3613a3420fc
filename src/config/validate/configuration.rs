//! A configuration: its name, namespace and scope, its `render` over the inherited one, its
//! source, and its kustomizations. The source's common keys are read here; its kind's own keys
//! are handed to the kind (`source::<kind>::config`), which owns their rules.

use std::path::Path;

use super::super::model::{
    Configuration, Publish, PublishMode, SourceKind, SourceSettings, SourceSpec,
};
use super::super::schema::{RawConfiguration, RawPublish, RawSource};
use super::kustomization::{kustomizations, Place};
use super::{render, DEFAULT_NAMESPACE, DEFAULT_PUBLISH_LINK};
use crate::render::RenderSettings;
use crate::source::azblob::config as azblob;
use crate::source::bucket::config as bucket;
use crate::source::config::{secret_ref, Cluster};
use crate::source::git::config::{self as git, LocalAuth};
use crate::syntax::fields::Text;
use crate::syntax::positions::Problems;
use crate::syntax::values::{
    boolean, directory, is_dns1123_label, polling_interval, positive_duration,
};

const LABEL_RULES: &str = "expected a DNS-1123 label: at most 63 lowercase letters, digits \
                           and '-', starting and ending with a letter or digit";

pub(super) fn configuration(
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
    let place = Place {
        cluster,
        namespace: namespace.as_deref(),
        namespaced_scope: raw
            .scope
            .as_ref()
            .is_some_and(|s| s.as_str() == "namespace"),
    };
    let kustomizations = kustomizations(&raw.kustomizations, base_dir, place, problems);
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
    let bucket_insecure = bucket::insecure(&raw.bucket, problems);
    let url = raw.url.as_ref().and_then(|url| {
        // The URL itself is never repeated: it may carry credentials.
        let mut invalid = |reason: &dyn std::fmt::Display| {
            problems.push(url.pos, format!("invalid URL for source.url: {reason}"));
        };
        match kind {
            Some(SourceKind::AzureBlob) => azblob::account_endpoint(&url.value)
                .map_err(|reason| invalid(&reason))
                .ok(),
            Some(SourceKind::Bucket) => bucket::endpoint(&url.value, bucket_insecure)
                .map_err(|reason| invalid(&reason))
                .ok(),
            Some(SourceKind::Git) | None => git::url(&url.value, base_dir)
                .map_err(|reason| invalid(&reason))
                .ok(),
        }
    });
    let interval = polling_interval(&raw.interval, "interval", problems);
    let timeout = positive_duration(&raw.timeout, "timeout", problems);
    let retry_interval = polling_interval(&raw.retry_interval, "retryInterval", problems);
    let suspend = boolean(&raw.suspend, "suspend", problems);
    // `None`: no publish; `Some(None)`: an invalid one (reported).
    let publish = raw
        .publish
        .as_ref()
        .map(|publish| self::publish(publish, base_dir, problems));
    let local_auth_secret = secret_ref(&raw.shared, namespace, cluster, problems);
    let local_auth = LocalAuth {
        directory: raw.shared.local_auth_ref.as_ref(),
        secret: raw.shared.local_auth_ref_secret.as_ref(),
        secret_ref: local_auth_secret.clone(),
    };
    // Each kind checks its own keys; the others' keys are reported as out of place.
    let spec = match kind {
        Some(SourceKind::Git) | None => {
            let git = git::validate(&raw.git, url.as_deref(), local_auth, base_dir, problems);
            bucket::reject_keys(&raw.bucket, problems);
            azblob::reject_keys(&raw.azure_blob, problems);
            kind.and(git).map(SourceSpec::Git)
        }
        Some(SourceKind::Bucket) => {
            bucket::reject_git_keys(&raw.git, problems);
            git::reject(&raw.git, problems);
            azblob::reject_keys(&raw.azure_blob, problems);
            bucket::settings(
                &raw.bucket,
                &raw.shared,
                bucket_insecure,
                raw.pos,
                local_auth_secret,
                base_dir,
                problems,
            )
            .map(SourceSpec::Bucket)
        }
        Some(SourceKind::AzureBlob) => {
            git::reject(&raw.git, problems);
            bucket::reject_keys(&raw.bucket, problems);
            azblob::settings(
                &raw.azure_blob,
                &raw.shared,
                raw.pos,
                local_auth_secret,
                base_dir,
                problems,
            )
            .map(SourceSpec::AzureBlob)
        }
    };
    Some(SourceSettings {
        url: url?,
        interval,
        timeout,
        retry_interval,
        ignore: raw.ignore.as_ref().map(|text| text.value.clone()),
        suspend,
        publish: match publish {
            Some(publish) => Some(publish?),
            None => None,
        },
        spec: spec?,
    })
}

/// How long one run of a publish hook may take, unless `publish.hookTimeout` says otherwise.
const DEFAULT_HOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

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
    let mode = match raw.mode.as_ref().map(|t| (t, t.as_str())) {
        None | Some((_, "symlink")) => PublishMode::Symlink,
        Some((_, "directory")) => PublishMode::Directory,
        Some((text, other)) => {
            problems.push(
                text.pos,
                format!("invalid publish.mode {other:?}: expected symlink or directory"),
            );
            PublishMode::Symlink
        }
    };
    let exec_hook = raw
        .exec_hook
        .as_ref()
        .map(|text| base_dir.join(text.as_str()));
    let webhook = raw
        .webhook
        .as_ref()
        .and_then(|text| match url::Url::parse(text.as_str()) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(text.value.clone()),
            _ => {
                problems.push(
                    text.pos,
                    "invalid publish.webhook: expected an http:// or https:// URL".to_string(),
                );
                None
            }
        });
    let hook_timeout = match &raw.hook_timeout {
        None => DEFAULT_HOOK_TIMEOUT,
        some => crate::syntax::values::positive_duration(some, "publish.hookTimeout", problems),
    };
    Some(Publish {
        directory: directory?,
        link,
        mode,
        exec_hook,
        webhook,
        hook_timeout,
    })
}

pub(super) fn label(text: &Text, what: &str, problems: &mut Problems) -> Option<String> {
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
