//! Why a reconcile failed, typed: the scheduler acts on the kind ([`ReconcileError::action`]),
//! the status shows the sentence (`Display`, worded as gitopsd always worded it).

use super::scheduler::Action;
use crate::apply::ApplyError;
use crate::render::sandbox::SandboxError;
use crate::render::RenderError;
use crate::source::SourceError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn shown(d: &Duration) -> humantime::FormattedDuration {
    humantime::format_duration(*d)
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// `url` is redacted.
    #[error("fetch of {url} timed out after {}{}", shown(after), if *previous_still_ending {
        " (the previous fetch of this source is still ending)"
    } else {
        ""
    })]
    FetchTimedOut {
        url: String,
        after: Duration,
        /// The previous fetch, abandoned on its own timeout, still holds the source's cache.
        previous_still_ending: bool,
    },
    #[error("fetch of {url} cancelled: gitopsd is stopping")]
    FetchCancelled { url: String },
    #[error("fetch of {url} crashed: {source}")]
    FetchCrashed {
        url: String,
        #[source]
        source: tokio::task::JoinError,
    },
    /// The fetch itself; its sentence names the source URL.
    #[error(transparent)]
    Source(#[from] Box<SourceError>),
    #[error("cannot make a scratch directory: {0}")]
    Scratch(#[source] std::io::Error),
    /// Packing and storing the artifact.
    #[error(transparent)]
    Store(#[from] Box<super::snapshot::SnapshotError>),
    #[error("cannot publish {name} into {}: {source}", directory.display())]
    Publish {
        name: String,
        directory: PathBuf,
        #[source]
        source: Box<crate::artifact::publish::PublishError>,
    },
    /// No kustomize binary: shared by every render, so kept once and shared.
    #[error(transparent)]
    NoRenderer(Arc<RenderError>),
    #[error(transparent)]
    Sandbox(#[from] Box<SandboxError>),
    #[error("cannot extract artifact {}: {source}", path.display())]
    Extract {
        path: PathBuf,
        #[source]
        source: Box<crate::artifact::pack::PackError>,
    },
    /// `path` as written in the kustomization (`./app`).
    #[error("kustomize build of '{path}' failed: {source}")]
    Build {
        path: String,
        #[source]
        source: Box<RenderError>,
    },
    #[error(transparent)]
    Apply(#[from] Box<ApplyError>),
    #[error(transparent)]
    PostBuild(Box<crate::render::substitute::PostBuildError>),
    /// A `substituteFrom` object that is not `optional` does not exist.
    #[error("postBuild.substituteFrom: {kind} {namespace}/{name} not found")]
    ValuesMissing {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("source {source_name} has no artifact yet")]
    NoArtifact { source_name: String },
    #[error("dependency '{dependency}' is not ready at revision '{revision}'")]
    DependencyNotReady {
        dependency: String,
        revision: String,
    },
    #[error("kustomization {name} crashed: {source}")]
    KustomizationCrashed {
        name: String,
        #[source]
        source: tokio::task::JoinError,
    },
    #[error("kustomization {name} timed out after {}", shown(after))]
    KustomizationTimedOut { name: String, after: Duration },
}

impl ReconcileError {
    /// Flux's reason for the Ready condition this failure sets.
    pub fn reason(&self) -> &'static str {
        match self {
            ReconcileError::DependencyNotReady { .. } => "DependencyNotReady",
            ReconcileError::NoArtifact { .. } | ReconcileError::Extract { .. } => "ArtifactFailed",
            ReconcileError::Build { .. }
            | ReconcileError::NoRenderer(_)
            | ReconcileError::Sandbox(_)
            | ReconcileError::PostBuild(_)
            | ReconcileError::ValuesMissing { .. } => "BuildFailed",
            ReconcileError::Apply(e) => match **e {
                ApplyError::NotReady { .. } => "HealthCheckFailed",
                ApplyError::PruneFailed { .. } => "PruneFailed",
                ApplyError::Invalid { .. } => "ValidationFailed",
                _ => "ReconciliationFailed",
            },
            _ => "ReconciliationFailed",
        }
    }

    /// What the scheduler does next.
    pub fn action(&self) -> Action {
        match self {
            ReconcileError::FetchCancelled { .. } => Action::Abandoned,
            ReconcileError::Apply(e) if matches!(**e, ApplyError::Cancelled) => Action::Abandoned,
            ReconcileError::DependencyNotReady { .. } | ReconcileError::NoArtifact { .. } => {
                Action::AwaitDependency
            }
            // Decided by the source's error kind (a config problem), never by its sentence.
            ReconcileError::Source(e) if !e.retryable() => Action::Stalled,
            _ => Action::Backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_keep_their_wording() {
        let timed_out = ReconcileError::FetchTimedOut {
            url: "https://example.com/fleet".into(),
            after: Duration::from_secs(90),
            previous_still_ending: true,
        };
        assert_eq!(
            timed_out.to_string(),
            "fetch of https://example.com/fleet timed out after 1m 30s (the previous fetch of \
             this source is still ending)"
        );
        let waiting = ReconcileError::DependencyNotReady {
            dependency: "infra".into(),
            revision: "main@sha1:1".into(),
        };
        assert_eq!(
            waiting.to_string(),
            "dependency 'infra' is not ready at revision 'main@sha1:1'"
        );
        assert_eq!(waiting.action(), Action::AwaitDependency);
        let cancelled = ReconcileError::FetchCancelled { url: "u".into() };
        assert_eq!(cancelled.action(), Action::Abandoned);
        assert_eq!(timed_out.action(), Action::Backoff);
    }
}
