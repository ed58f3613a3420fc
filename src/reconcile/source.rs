//! Reconcile a source: fetch, and on a new revision pack, store, collect old artifacts and
//! publish; then record the outcome in the source's status and the metrics.
//!
//! [`reconcile`] takes the configuration and the engine's shared resources and returns an
//! [`Action`] for the scheduler; [`record`] is the pure part that turns an outcome into the
//! status, so that what a status says after a fetch is unit-tested without a server.

use super::error::ReconcileError;
use super::metrics::{source_labels, FetchResult};
use super::scheduler::Action;
use super::{digest, memory, source_key, Engine, KEEP_ARTIFACTS};
use crate::artifact::Artifact;
use crate::config::{Configuration, SourceKind};
use crate::source::git::refs::redact_url;
use crate::source::{FetchOutcome, Revision};
use crate::state::{set_condition, SourceStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A successful fetch: the new artifact, or `None` when the remote had not moved.
pub type Fetched = Option<Artifact>;

/// Fetch configuration `idx`'s source and record the outcome. A fetch cancelled because
/// gitopsd is stopping leaves the status as it was.
pub(super) async fn reconcile(
    engine: &Arc<Engine>,
    idx: usize,
) -> (Action, Result<(), ReconcileError>) {
    let c = &engine.settings.configurations[idx];
    let key = source_key(c);
    let digest = digest::settings_digest(c);
    let previous = engine.state.read(|st| {
        st.sources.get(&key).and_then(|s| {
            let usable = s.settings_digest == digest && s.artifact.is_some();
            usable.then(|| s.revision.clone()).flatten()
        })
    });
    // With the outcome's line below, this brackets every fetch in the log (the receivers'
    // burst test reads them to see that fetches of one source never overlap).
    tracing::debug!(source = %key, "fetch started");
    let started = Instant::now();
    let interrupt = Arc::new(AtomicBool::new(false));
    let outcome = tokio::select! {
        outcome = fetch_in_time(engine, idx, previous, interrupt.clone()) => outcome,
        _ = engine.stopping.cancelled() => {
            interrupt.store(true, Ordering::Relaxed);
            tracing::info!(source = %key, "fetch cancelled: gitopsd is stopping");
            let error = ReconcileError::FetchCancelled { url: redact_url(&c.source.url) };
            return (error.action(), Err(error));
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    memory::release();
    let labels = source_labels(&c.namespace, &c.name, c.source.kind().as_str());
    engine.metrics.record_fetch(
        &labels,
        elapsed,
        match &outcome {
            Ok(Some(_)) => FetchResult::Stored,
            Ok(None) => FetchResult::Unchanged,
            Err(_) => FetchResult::Failed,
        },
    );
    let now = crate::state::now_rfc3339();
    engine
        .state
        .update_source(&key, |s| record(s, &outcome, &digest, &now));
    if let Some(event) = event(c, &outcome) {
        engine.emit(event);
    }
    match outcome {
        Ok(Some(a)) => {
            tracing::info!(source = %key, revision = %a.revision, digest = %a.digest, "stored artifact");
            (Action::requeue_after(c.source.interval), Ok(()))
        }
        Ok(None) => {
            tracing::debug!(source = %key, "unchanged");
            (Action::requeue_after(c.source.interval), Ok(()))
        }
        Err(e) => {
            // The configuration's loop logs failures at a slowing rate (see failure_log).
            tracing::debug!(source = %key, error = %e, "fetch failed");
            (e.action(), Err(e))
        }
    }
}

/// What a fetch's outcome makes of the source's status. `now` is RFC 3339.
pub(super) fn record(
    s: &mut SourceStatus,
    outcome: &Result<Fetched, ReconcileError>,
    settings_digest: &str,
    now: &str,
) {
    s.last_attempt_time = Some(now.to_string());
    match outcome {
        Ok(fetched) => {
            s.last_error = None;
            s.last_success_time = Some(now.to_string());
            if let Some(artifact) = fetched {
                s.revision = Some(artifact.revision.clone());
                s.artifact = Some(artifact.clone());
                s.settings_digest = settings_digest.to_string();
            }
            let rev = s
                .revision
                .as_ref()
                .map(|r| r.to_string())
                .unwrap_or_default();
            set_condition(
                &mut s.conditions,
                "Ready",
                true,
                "Succeeded",
                &format!("stored artifact for revision '{rev}'"),
            );
        }
        Err(e) => {
            let message = e.to_string();
            set_condition(&mut s.conditions, "Ready", false, "FetchFailed", &message);
            s.last_error = Some(message);
        }
    }
}

/// The alert event for a fetch's outcome: a new artifact (info) or a failure (error); an
/// unchanged poll says nothing, as Flux's source-controller.
pub(super) fn event(
    c: &Configuration,
    outcome: &Result<Fetched, ReconcileError>,
) -> Option<crate::events::alert::Event> {
    use crate::config::Severity;
    use crate::events::alert::{Event, ObjectRef};
    let (object, failed_reason) = match c.source.kind() {
        SourceKind::Git => (
            ObjectRef::git_repository(&c.namespace, &c.name),
            "GitOperationFailed",
        ),
        SourceKind::Bucket | SourceKind::AzureBlob => (
            ObjectRef::bucket(&c.namespace, &c.name),
            "BucketOperationFailed",
        ),
    };
    match outcome {
        Ok(None) => None,
        Ok(Some(artifact)) => Some(Event::new(
            object,
            Severity::Info,
            "NewArtifact",
            format!(
                "fetched revision '{}', stored artifact {}",
                artifact.revision, artifact.digest
            ),
            [
                ("revision".to_string(), artifact.revision.to_string()),
                ("digest".to_string(), artifact.digest.clone()),
            ]
            .into(),
        )),
        // Errors name URLs redacted and never a credential (see `ReconcileError`).
        Err(e) => Some(Event::new(
            object,
            Severity::Error,
            failed_reason,
            e.to_string(),
            Default::default(),
        )),
    }
}

/// Fetch and pack within the source's timeout. On timeout the interrupt flag is set and
/// the blocking job is left to wind down (it keeps the source's fetch lock until it has).
async fn fetch_in_time(
    engine: &Arc<Engine>,
    idx: usize,
    previous: Option<Revision>,
    interrupt: Arc<AtomicBool>,
) -> Result<Fetched, ReconcileError> {
    let c = &engine.settings.configurations[idx];
    let timed_out = |previous_still_ending| ReconcileError::FetchTimedOut {
        url: redact_url(&c.source.url),
        after: c.source.timeout,
        previous_still_ending,
    };
    // The semaphore is never closed while the engine lives; a closed one means stopping.
    let Ok(_permit) = engine.fetch_permits.acquire().await else {
        return Err(ReconcileError::FetchCancelled {
            url: redact_url(&c.source.url),
        });
    };
    let deadline = tokio::time::Instant::now() + c.source.timeout;
    let lock = engine.fetch_locks[idx].clone();
    let Ok(guard) = tokio::time::timeout_at(deadline, lock.lock_owned()).await else {
        return Err(timed_out(true));
    };
    let span = tracing::info_span!("fetch", source = %source_key(c));
    // A task of its own holding the fetch lock, so that on timeout it is left to wind down.
    let job = {
        let engine = engine.clone();
        let flag = interrupt.clone();
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                let _guard = guard;
                fetch_and_pack(engine, idx, previous, flag).await
            },
            span,
        ))
    };
    match tokio::time::timeout_at(deadline, job).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ReconcileError::FetchCrashed {
            url: redact_url(&c.source.url),
            source: join,
        }),
        Err(_) => {
            interrupt.store(true, Ordering::Relaxed);
            Err(timed_out(false))
        }
    }
}

/// Fetch (an object store awaited, git on a blocking thread), then pack on a blocking thread.
async fn fetch_and_pack(
    engine: Arc<Engine>,
    idx: usize,
    previous: Option<Revision>,
    interrupt: Arc<AtomicBool>,
) -> Result<Fetched, ReconcileError> {
    let c = &engine.settings.configurations[idx];
    let source = crate::source::from_settings(
        &c.namespace,
        &c.name,
        &c.source,
        &engine.settings.state_dir.join("git"),
    );
    let scratch = {
        let engine = engine.clone();
        let name = c.name.clone();
        blocking(move || engine.state_dir.scratch(&name))
            .await
            .map_err(ReconcileError::Scratch)?
    };
    let fetched = source
        .fetch(previous, scratch.path().to_path_buf(), interrupt)
        .await;
    let engine = engine.clone();
    blocking(move || {
        // The scratch directory is removed here, off the async threads, once packed.
        let _scratch = scratch;
        let result = match fetched.map_err(Box::new)? {
            FetchOutcome::Unchanged => Ok(None),
            FetchOutcome::Fetched { revision, snapshot } => {
                pack(&engine, idx, &revision, &snapshot).map(Some)
            }
        };
        engine.measure_git_cache(idx);
        result
    })
    .await
}

/// Pack a fetched snapshot into the store, collect old artifacts, publish.
fn pack(
    engine: &Engine,
    idx: usize,
    revision: &Revision,
    snapshot: &crate::source::Snapshot,
) -> Result<Artifact, ReconcileError> {
    let c = &engine.settings.configurations[idx];
    let kind = c.source.kind().as_str();
    let artifact = super::snapshot::store(
        &engine.store,
        snapshot,
        kind,
        &c.namespace,
        &c.name,
        revision,
        c.source.ignore.as_deref(),
    )
    .map_err(Box::new)?;
    if let Err(e) = engine
        .store
        .gc(kind, &c.namespace, &c.name, &artifact.path, KEEP_ARTIFACTS)
    {
        tracing::warn!(source = %c.name, error = %e, "artifact GC failed");
    }
    if let Some(publish) = &c.source.publish {
        crate::artifact::publish::publish(publish, &artifact, revision.digest_hex()).map_err(
            |source| ReconcileError::Publish {
                name: c.name.clone(),
                directory: publish.directory.clone(),
                source: Box::new(source),
            },
        )?;
        let directory = match publish.mode {
            crate::artifact::publish::PublishMode::Symlink => publish.directory.join(&publish.link),
            crate::artifact::publish::PublishMode::Directory => publish.directory.clone(),
        };
        engine.hooks.after_publish(
            publish,
            super::hooks::Published {
                source: source_key(c),
                revision: revision.to_string(),
                directory,
            },
        );
    }
    Ok(artifact)
}

/// `work` on a blocking thread; its panic is the caller's, as it would be inline.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// The size of a git source's cache repository, for `/metrics`; 0 for other kinds.
pub(super) fn git_cache_bytes(
    settings: &crate::config::Settings,
    c: &Configuration,
) -> Option<u64> {
    if c.source.kind() != SourceKind::Git {
        return None;
    }
    let root = settings.state_dir.join("git");
    Some(crate::source::git::cache::size(
        &crate::source::git::cache::dir(&root, &c.namespace, &c.name),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceError;

    fn artifact(rev: &str) -> Artifact {
        Artifact {
            path: format!("/state/artifacts/git/default/web/{rev}.tar.gz").into(),
            revision: Revision(format!("main@sha1:{rev}")),
            digest: format!("sha256:{rev}"),
            size: 1,
            last_update: "2026-01-01T00:00:00Z".into(),
            url_path: format!("git/default/web/{rev}.tar.gz"),
        }
    }

    #[test]
    fn a_stored_artifact_becomes_current_and_ready() {
        let mut s = SourceStatus::default();
        record(
            &mut s,
            &Ok(Some(artifact("1"))),
            "d1",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(s.revision, Some(Revision("main@sha1:1".into())));
        assert_eq!(s.settings_digest, "d1");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(
            s.conditions[0].message,
            "stored artifact for revision 'main@sha1:1'"
        );
        let before = s.clone();

        // Unchanged: only the times move, which the state file does not wait for.
        record(&mut s, &Ok(None), "d1", "2026-01-01T00:10:00Z");
        assert_eq!(s.last_attempt_time.as_deref(), Some("2026-01-01T00:10:00Z"));
        assert_eq!(s.conditions, before.conditions);
        assert_eq!(s.artifact, before.artifact);
    }

    #[test]
    fn events_for_a_new_artifact_and_a_failure_but_not_an_unchanged_poll() {
        let settings = crate::config::load_str(
            "configurations:\n  - name: web\n    source: { kind: git, url: https://h/r }\n",
            std::path::Path::new("gitopsd.yaml"),
            std::path::Path::new("/"),
        )
        .unwrap();
        let c = &settings.configurations[0];
        assert_eq!(event(c, &Ok(None)), None);
        let stored = event(c, &Ok(Some(artifact("1")))).unwrap();
        assert_eq!(stored.involved_object.kind, "GitRepository");
        assert_eq!(stored.reason, "NewArtifact");
        assert_eq!(stored.metadata["revision"], "main@sha1:1");
        assert_eq!(stored.metadata["digest"], "sha256:1");
        let error = ReconcileError::FetchCancelled {
            url: "https://h/r".into(),
        };
        let failed = event(c, &Err(error)).unwrap();
        assert_eq!(failed.severity, crate::config::Severity::Error);
        assert_eq!(failed.reason, "GitOperationFailed");
    }

    #[test]
    fn a_failure_keeps_the_artifact_and_says_why() {
        let mut s = SourceStatus::default();
        record(
            &mut s,
            &Ok(Some(artifact("1"))),
            "d1",
            "2026-01-01T00:00:00Z",
        );
        let error = ReconcileError::Source(Box::new(SourceError::Timeout {
            url: "https://example.com/fleet".into(),
            after: std::time::Duration::from_secs(60),
        }));
        record(&mut s, &Err(error), "d1", "2026-01-01T00:10:00Z");
        assert_eq!(s.artifact, Some(artifact("1")));
        assert_eq!(
            s.last_error.as_deref(),
            Some("fetch of https://example.com/fleet timed out after 60s")
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[0].reason, "FetchFailed");
        assert_eq!(s.last_success_time.as_deref(), Some("2026-01-01T00:00:00Z"));
    }
}
