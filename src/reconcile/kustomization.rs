//! Reconcile a kustomization: take the source's current artifact once its dependencies are
//! ready, render it (sandboxed kustomize, on a blocking thread), apply it to the target that
//! [`crate::apply::build`] makes from the settings, prune and wait when the target does, and
//! record the outcome.
//!
//! [`inputs`] and [`record`] are the pure parts (what may run, and what the status says after
//! it ran); [`reconcile`] drives the I/O between them and returns an [`Action`].

use super::error::ReconcileError;
use super::metrics::KustomizationLabels;
use super::scheduler::Action;
use super::{kustomization_key, memory, source_key, Engine};
use crate::apply::{ApplyContext, ApplyReport, Inventory, Target as _};
use crate::artifact::Artifact;
use crate::config::{Configuration, Kustomization};
use crate::render::{BuildOptions, Rendered};
use crate::source::Revision;
use crate::state::{set_condition, KustomizationStatus, State};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A render gets this much beyond the kustomization's timeout before it counts as stuck: the
/// build itself is killed at the timeout, and extracting the artifact comes before it.
const RENDER_SLACK: Duration = Duration::from_secs(5);

/// A successful reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub revision: Revision,
    pub inventory: Inventory,
}

/// The artifact to render and the previous inventory, once every dependency has applied the
/// same revision without error.
pub(super) fn inputs(
    state: &State,
    c: &Configuration,
    k: &Kustomization,
) -> Result<(Artifact, Inventory), ReconcileError> {
    let artifact = state
        .sources
        .get(&source_key(c))
        .and_then(|s| s.artifact.clone())
        .ok_or_else(|| ReconcileError::NoArtifact {
            source_name: c.name.clone(),
        })?;
    for dep in &k.depends_on {
        let ready = c
            .kustomizations
            .iter()
            .find(|d| &d.name == dep)
            .and_then(|d| state.kustomizations.get(&kustomization_key(c, d)))
            .is_some_and(|d| {
                d.last_error.is_none()
                    && d.last_applied_revision.as_ref() == Some(&artifact.revision)
            });
        if !ready {
            return Err(ReconcileError::DependencyNotReady {
                dependency: dep.clone(),
                revision: artifact.revision.to_string(),
            });
        }
    }
    let previous = state
        .kustomizations
        .get(&kustomization_key(c, k))
        .map(|s| s.inventory.clone())
        .unwrap_or_default();
    Ok((artifact, previous))
}

/// What an outcome makes of the kustomization's status. `now` is RFC 3339.
pub(super) fn record(
    ks: &mut KustomizationStatus,
    outcome: &Result<Applied, ReconcileError>,
    target: &str,
    now: &str,
) {
    ks.target = Some(target.to_string());
    match outcome {
        Ok(applied) => {
            ks.last_attempted_revision = Some(applied.revision.clone());
            ks.last_applied_revision = Some(applied.revision.clone());
            ks.objects = applied.inventory.len();
            ks.inventory = applied.inventory.clone();
            ks.last_error = None;
            ks.last_success_time = Some(now.to_string());
            set_condition(
                &mut ks.conditions,
                "Ready",
                true,
                "ReconciliationSucceeded",
                &format!("applied revision '{}'", applied.revision),
            );
        }
        Err(e) => {
            let message = e.to_string();
            set_condition(
                &mut ks.conditions,
                "Ready",
                false,
                "ReconciliationFailed",
                &message,
            );
            ks.last_error = Some(message);
        }
    }
}

/// Render and apply kustomization `ki` of configuration `idx`, and record the outcome.
pub(super) async fn reconcile(
    engine: &Arc<Engine>,
    idx: usize,
    ki: usize,
) -> (Action, Result<(), ReconcileError>) {
    let c = &engine.settings.configurations[idx];
    let k = &c.kustomizations[ki];
    let key = kustomization_key(c, k);
    let target = crate::apply::build(
        &k.target,
        &engine.settings.state_dir,
        &c.namespace,
        &c.name,
        &k.name,
    );
    let started = Instant::now();
    let outcome = match engine.state.read(|st| inputs(st, c, k)) {
        Err(e) => Err(e),
        Ok((artifact, previous)) => {
            let revision = artifact.revision.clone();
            let deadline = tokio::time::Instant::now() + k.timeout + RENDER_SLACK;
            match render_in_time(engine, idx, ki, artifact, deadline).await {
                Err(e) => Err(e),
                Ok(rendered) => {
                    let ctx = ApplyContext {
                        timeout: deadline.saturating_duration_since(tokio::time::Instant::now()),
                        cancel: engine.abandon.child_token(),
                        prune: k.prune,
                        force: k.force,
                        wait: k.wait,
                    };
                    apply(&target, &rendered, &previous, &ctx)
                        .await
                        .map(|report| {
                            log_changes(&key, &report);
                            Applied {
                                revision,
                                inventory: report.inventory,
                            }
                        })
                }
            }
        }
    };
    memory::release();
    engine.metrics.record_reconcile(
        &KustomizationLabels {
            namespace: c.namespace.clone(),
            configuration: c.name.clone(),
            name: k.name.clone(),
        },
        started.elapsed().as_secs_f64(),
        outcome.is_ok(),
    );
    let now = crate::state::now_rfc3339();
    let described = target.describe();
    engine
        .state
        .update_kustomization(&key, |ks| record(ks, &outcome, &described, &now));
    match outcome {
        Ok(applied) => {
            tracing::info!(kustomization = %key, revision = %applied.revision, objects = applied.inventory.len(), "applied");
            (Action::requeue_after(k.interval), Ok(()))
        }
        Err(e) => {
            // The configuration's loop logs failures at a slowing rate (see failure_log).
            tracing::debug!(kustomization = %key, error = %e, "kustomization failed");
            (e.action(), Err(e))
        }
    }
}

/// Apply, then prune what left the source and wait for health, as far as the context asks.
async fn apply(
    target: &impl crate::apply::Target,
    rendered: &Rendered,
    previous: &Inventory,
    ctx: &ApplyContext,
) -> Result<ApplyReport, ReconcileError> {
    let mut report = target
        .apply(rendered, previous, ctx)
        .await
        .map_err(Box::new)?;
    if ctx.prune {
        let stale = previous.stale(&report.inventory);
        let pruned = target.prune(&stale, ctx).await.map_err(Box::new)?;
        report.objects.extend(pruned);
    }
    if ctx.wait {
        target.wait(&report, ctx).await.map_err(Box::new)?;
    }
    Ok(report)
}

/// What the apply did to the objects, counted, at debug level (the `applied` line that
/// follows says the revision and the object count at info level).
fn log_changes(key: &str, report: &ApplyReport) {
    use crate::apply::ObjectAction;
    let count = |action| report.objects.iter().filter(|o| o.action == action).count();
    tracing::debug!(
        kustomization = %key,
        created = count(ObjectAction::Created),
        configured = count(ObjectAction::Configured),
        unchanged = count(ObjectAction::Unchanged),
        pruned = count(ObjectAction::Pruned),
        "objects applied"
    );
}

/// Extract and build on a blocking thread, within `deadline`.
async fn render_in_time(
    engine: &Arc<Engine>,
    idx: usize,
    ki: usize,
    artifact: Artifact,
    deadline: tokio::time::Instant,
) -> Result<Rendered, ReconcileError> {
    let k = &engine.settings.configurations[idx].kustomizations[ki];
    let job = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || render(&engine, idx, ki, &artifact))
    };
    match tokio::time::timeout_at(deadline, job).await {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(ReconcileError::KustomizationCrashed {
            name: k.name.clone(),
            source: join,
        }),
        Err(_) => Err(ReconcileError::KustomizationTimedOut {
            name: k.name.clone(),
            after: k.timeout,
        }),
    }
}

/// The blocking part: extract the artifact into scratch space and run kustomize there.
fn render(
    engine: &Engine,
    idx: usize,
    ki: usize,
    artifact: &Artifact,
) -> Result<Rendered, ReconcileError> {
    let c = &engine.settings.configurations[idx];
    let k = &c.kustomizations[ki];
    let renderer = engine.renderer()?;
    let confinement = engine.sandbox.resolve(c.render.sandbox).map_err(Box::new)?;
    let options = BuildOptions {
        timeout: k.timeout,
        confinement,
        remote_bases: c.render.remote_bases,
    };
    // Removed when dropped, at the end of this function.
    let scratch = engine
        .state_dir
        .scratch(&k.name)
        .map_err(ReconcileError::Scratch)?;
    let root = scratch.path().join("src");
    crate::artifact::extract::extract(&artifact.path, &artifact.digest, &root).map_err(
        |source| ReconcileError::Extract {
            path: artifact.path.clone(),
            source: Box::new(source),
        },
    )?;
    renderer
        .build(&root, &k.path, &options)
        .map_err(|source| ReconcileError::Build {
            path: display_path(&k.path),
            source: Box::new(source),
        })
}

fn display_path(p: &str) -> String {
    if p.is_empty() {
        "./".into()
    } else {
        format!("./{p}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::ObjectId;
    use crate::state::SourceStatus;
    use std::path::Path;

    fn configuration() -> Configuration {
        let yaml = r#"
configurations:
  - name: web
    source: { kind: git, url: "https://example.com/fleet" }
    kustomizations:
      - { name: infra, path: ./infra }
      - { name: apps, path: ./apps, dependsOn: [infra] }
"#;
        let mut settings =
            crate::config::load_str(yaml, Path::new("gitopsd.yaml"), Path::new("/")).unwrap();
        settings.configurations.remove(0)
    }

    fn with_artifact(c: &Configuration, rev: &str) -> State {
        let mut state = State::default();
        state.sources.insert(
            source_key(c),
            SourceStatus {
                artifact: Some(Artifact {
                    path: "/a.tar.gz".into(),
                    url_path: "git/default/web/a.tar.gz".into(),
                    revision: Revision(rev.into()),
                    digest: "sha256:0".into(),
                    size: 0,
                    last_update: String::new(),
                }),
                ..SourceStatus::default()
            },
        );
        state
    }

    #[test]
    fn waits_for_an_artifact_and_for_dependencies_at_its_revision() {
        let c = configuration();
        let (infra, apps) = (&c.kustomizations[0], &c.kustomizations[1]);
        let err = inputs(&State::default(), &c, infra).unwrap_err();
        assert_eq!(err.to_string(), "source web has no artifact yet");

        let mut state = with_artifact(&c, "main@sha1:2");
        let err = inputs(&state, &c, apps).unwrap_err();
        assert_eq!(err.action(), Action::AwaitDependency);
        assert_eq!(
            err.to_string(),
            "dependency 'infra' is not ready at revision 'main@sha1:2'"
        );
        // Ready at an older revision is not ready.
        let mut infra_status = KustomizationStatus {
            last_applied_revision: Some(Revision("main@sha1:1".into())),
            ..KustomizationStatus::default()
        };
        state
            .kustomizations
            .insert(kustomization_key(&c, infra), infra_status.clone());
        assert!(inputs(&state, &c, apps).is_err());
        infra_status.last_applied_revision = Some(Revision("main@sha1:2".into()));
        state
            .kustomizations
            .insert(kustomization_key(&c, infra), infra_status);
        assert!(inputs(&state, &c, apps).is_ok());
    }

    /// A cluster-like target: remembers what it was asked to prune and whether it waited.
    #[derive(Default)]
    struct Recording {
        pruned: std::sync::Mutex<Vec<ObjectId>>,
        waited: std::sync::atomic::AtomicBool,
    }

    impl crate::apply::Target for Recording {
        async fn apply(
            &self,
            rendered: &Rendered,
            _previous: &Inventory,
            _ctx: &ApplyContext,
        ) -> Result<ApplyReport, crate::apply::ApplyError> {
            let inventory = Inventory::from_objects(rendered.ids());
            Ok(ApplyReport {
                objects: rendered
                    .ids()
                    .map(|id| crate::apply::ObjectResult {
                        id: id.clone(),
                        action: crate::apply::ObjectAction::Configured,
                    })
                    .collect(),
                inventory,
                output: None,
            })
        }

        async fn prune(
            &self,
            stale: &[ObjectId],
            _ctx: &ApplyContext,
        ) -> Result<Vec<crate::apply::ObjectResult>, crate::apply::ApplyError> {
            self.pruned.lock().unwrap().extend(stale.iter().cloned());
            Ok(stale
                .iter()
                .map(|id| crate::apply::ObjectResult {
                    id: id.clone(),
                    action: crate::apply::ObjectAction::Pruned,
                })
                .collect())
        }

        async fn wait(
            &self,
            _report: &ApplyReport,
            _ctx: &ApplyContext,
        ) -> Result<(), crate::apply::ApplyError> {
            self.waited.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }

        fn describe(&self) -> String {
            "recording".into()
        }
    }

    #[tokio::test]
    async fn prune_and_wait_run_only_when_asked() {
        let old = ObjectId::new("v1", "ConfigMap", "web", "old");
        let kept = ObjectId::new("v1", "ConfigMap", "web", "kept");
        let previous = Inventory::from_objects([&old, &kept]);
        let rendered = Rendered::from_yaml(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kept, namespace: web}\n".into(),
        )
        .unwrap();
        let mut ctx = ApplyContext::new(
            Duration::from_secs(30),
            tokio_util::sync::CancellationToken::new(),
        );

        let target = Recording::default();
        let report = apply(&target, &rendered, &previous, &ctx).await.unwrap();
        assert!(target.pruned.lock().unwrap().is_empty());
        assert!(!target.waited.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(report.applied(), 1);

        ctx.prune = true;
        ctx.wait = true;
        let report = apply(&target, &rendered, &previous, &ctx).await.unwrap();
        assert_eq!(*target.pruned.lock().unwrap(), vec![old.clone()]);
        assert!(target.waited.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(report.pruned(), vec![old]);
        assert_eq!(report.inventory, Inventory::from_objects([&kept]));
    }

    #[test]
    fn records_success_then_failure_keeping_the_inventory() {
        let mut ks = KustomizationStatus::default();
        let inventory = Inventory::from_objects([&ObjectId::new("v1", "ConfigMap", "web", "a")]);
        let applied = Applied {
            revision: Revision("main@sha1:1".into()),
            inventory: inventory.clone(),
        };
        record(
            &mut ks,
            &Ok(applied),
            "/out/app.yaml",
            "2026-01-01T00:00:00Z",
        );
        assert_eq!(ks.objects, 1);
        assert_eq!(ks.target.as_deref(), Some("/out/app.yaml"));
        assert_eq!(ks.conditions[0].message, "applied revision 'main@sha1:1'");
        let failed = ReconcileError::NoArtifact {
            source_name: "web".into(),
        };
        record(
            &mut ks,
            &Err(failed),
            "/out/app.yaml",
            "2026-01-01T00:10:00Z",
        );
        assert_eq!(ks.inventory, inventory);
        assert_eq!(ks.conditions[0].status, "False");
        assert_eq!(
            ks.last_error.as_deref(),
            Some("source web has no artifact yet")
        );
    }
}
