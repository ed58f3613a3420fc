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
    /// Health was checked (`wait` or `healthChecks`) and passed.
    pub healthy: bool,
    /// What happened to each object.
    pub objects: Vec<crate::apply::ObjectResult>,
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
            ks.last_apply = applied.objects.clone();
            ks.last_error = None;
            ks.last_success_time = Some(now.to_string());
            if applied.healthy {
                set_condition(
                    &mut ks.conditions,
                    "Healthy",
                    true,
                    "Succeeded",
                    "all objects are Current",
                );
            }
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
            set_condition(&mut ks.conditions, "Ready", false, e.reason(), &message);
            if e.reason() == "HealthCheckFailed" {
                set_condition(&mut ks.conditions, "Healthy", false, e.reason(), &message);
            }
            ks.last_error = Some(message);
        }
    }
}

/// Render and apply kustomization `ki` of configuration `idx`, and record the outcome.
pub(super) async fn reconcile(
    engine: &Arc<Engine>,
    idx: usize,
    ki: usize,
) -> (
    Action,
    Result<Vec<crate::apply::ObjectResult>, ReconcileError>,
) {
    let c = &engine.settings.configurations[idx];
    let k = &c.kustomizations[ki];
    let key = kustomization_key(c, k);
    let target = engine.target(c, k);
    let started = Instant::now();
    // For the alert: what the apply changed, and which revision was applied before.
    let mut changes: Vec<String> = Vec::new();
    let before = engine.state.read(|st| {
        st.kustomizations.get(&key).map(|s| Before {
            revision: s.last_applied_revision.clone(),
            failed: s.last_error.is_some(),
        })
    });
    let outcome = match engine.state.read(|st| inputs(st, c, k)) {
        Err(e) => Err(e),
        Ok((artifact, previous)) => {
            let revision = artifact.revision.clone();
            let deadline = tokio::time::Instant::now() + k.timeout + RENDER_SLACK;
            let rendered = match render_in_time(engine, idx, ki, artifact, deadline).await {
                Ok(rendered) => {
                    let cluster = engine.settings.kubernetes.as_ref();
                    post_build(cluster, &engine.clusters, c, k, rendered).await
                }
                Err(e) => Err(e),
            };
            match rendered {
                Err(e) => Err(e),
                Ok(rendered) => {
                    let ctx = ApplyContext {
                        timeout: deadline.saturating_duration_since(tokio::time::Instant::now()),
                        configured_timeout: k.timeout,
                        cancel: engine.abandon.child_token(),
                        prune: k.prune,
                        force: k.force,
                        wait: k.wait,
                    };
                    apply(&target, &rendered, &previous, &ctx)
                        .await
                        .map(|report| {
                            log_changes(&key, &report);
                            changes = change_set(&report);
                            Applied {
                                revision,
                                objects: report.objects,
                                inventory: report.inventory,
                                healthy: k.wait
                                    || matches!(&k.target, crate::apply::TargetSettings::Kubernetes(t) if !t.health_checks.is_empty()),
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
    if let Some(event) = event(c, k, &outcome, &before.unwrap_or_default(), &changes) {
        engine.emit(event);
    }
    match outcome {
        Ok(applied) => {
            tracing::info!(kustomization = %key, revision = %applied.revision, objects = applied.inventory.len(), "applied");
            (Action::requeue_after(k.interval), Ok(applied.objects))
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
    // Always asked: a cluster target also waits for `healthChecks` without `wait`.
    target.wait(&report, ctx).await.map_err(Box::new)?;
    Ok(report)
}

/// `postBuild`: the variables from `substitute` and `substituteFrom` (read now, so a changed
/// ConfigMap takes effect at the next reconcile), substituted into the render. Without a
/// `postBuild` the render is left as it is, `${...}` included, as Flux does.
async fn post_build(
    cluster: Option<&crate::config::KubernetesSettings>,
    clusters: &crate::apply::ClusterState,
    c: &Configuration,
    k: &Kustomization,
    rendered: Rendered,
) -> Result<Rendered, ReconcileError> {
    let post_build = &k.post_build;
    if post_build.substitute.is_empty() && post_build.substitute_from.is_empty() {
        return Ok(rendered);
    }
    let mut vars = std::collections::BTreeMap::new();
    if !post_build.substitute_from.is_empty() {
        // Validation refuses substituteFrom without a cluster.
        let Some(cluster) = cluster else {
            return Ok(rendered);
        };
        let user = match &k.target {
            crate::apply::TargetSettings::Kubernetes(t) => t.user(&c.namespace),
            _ => None,
        };
        for from in &post_build.substitute_from {
            let values = crate::apply::kubernetes::read_values(
                clusters,
                cluster,
                user.as_deref(),
                &c.namespace,
                &from.name,
                from.secret,
            )
            .await
            .map_err(Box::new)?;
            match values {
                Some(values) => vars.extend(values),
                None if from.optional => {}
                None => {
                    return Err(ReconcileError::ValuesMissing {
                        kind: if from.secret { "Secret" } else { "ConfigMap" },
                        namespace: c.namespace.clone(),
                        name: from.name.clone(),
                    })
                }
            }
        }
    }
    vars.extend(post_build.substitute.clone());
    crate::render::substitute::post_build(&rendered, &vars)
        .map_err(|e| ReconcileError::PostBuild(Box::new(e)))
}

/// What the apply did to the objects, counted, at debug level (the `applied` line that
/// follows says the revision and the object count at info level).
fn log_changes(key: &str, report: &ApplyReport) {
    use crate::apply::ObjectAction;
    // One line per object that changed, as kubectl prints them (`configmap/x created`);
    // unchanged ones only in the counts, so a no-change pass logs one line.
    for o in &report.objects {
        if !matches!(o.action, ObjectAction::Unchanged) {
            tracing::info!(kustomization = %key, object = %o.id, action = ?o.action, "object");
        }
    }
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

/// Flux's change set: one `Kind/namespace/name action` line per object the apply created,
/// configured or pruned (unchanged ones are left out).
fn change_set(report: &ApplyReport) -> Vec<String> {
    use crate::apply::ObjectAction;
    report
        .objects
        .iter()
        .filter_map(|o| {
            let action = match o.action {
                ObjectAction::Created => "created",
                ObjectAction::Configured => "configured",
                ObjectAction::Pruned => "deleted",
                ObjectAction::Unchanged | ObjectAction::Skipped => return None,
            };
            Some(format!("{} {action}", o.id))
        })
        .collect()
}

/// What the status said before a reconcile, for its alert.
#[derive(Debug, Default)]
struct Before {
    revision: Option<Revision>,
    failed: bool,
}

/// The alert event for an outcome: applied (info, only when objects changed, the revision is
/// new or the last attempt had failed, so that a steady state is quiet), a dependency not
/// ready (info), or a failure (error).
fn event(
    c: &Configuration,
    k: &Kustomization,
    outcome: &Result<Applied, ReconcileError>,
    before: &Before,
    changes: &[String],
) -> Option<crate::events::alert::Event> {
    use crate::config::Severity;
    use crate::events::alert::{Event, ObjectRef};
    let object = ObjectRef::kustomization(&c.namespace, &c.name, &k.name);
    match outcome {
        Ok(applied) => {
            let same = before.revision.as_ref() == Some(&applied.revision);
            if changes.is_empty() && same && !before.failed {
                return None;
            }
            let message = if changes.is_empty() && same {
                format!(
                    "applied revision '{}' again after a failure: no object changed",
                    applied.revision
                )
            } else if changes.is_empty() {
                format!("applied revision '{}': no object changed", applied.revision)
            } else {
                changes.join("\n")
            };
            Some(Event::new(
                object,
                Severity::Info,
                "ReconciliationSucceeded",
                message,
                [("revision".to_string(), applied.revision.to_string())].into(),
            ))
        }
        Err(e @ ReconcileError::DependencyNotReady { revision, .. }) => Some(Event::new(
            object,
            Severity::Info,
            "DependencyNotReady",
            e.to_string(),
            [("revision".to_string(), revision.clone())].into(),
        )),
        Err(e) => Some(Event::new(
            object,
            Severity::Error,
            "ReconciliationFailed",
            e.to_string(),
            Default::default(),
        )),
    }
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
///
/// The kustomizations of one configuration share one extraction of its current artifact:
/// Flux's fleet shape (a thousand kustomizations of one source) would otherwise unpack the
/// whole artifact a thousand times. Builds only add files that are the same for every build
/// of a path (the generated kustomization.yaml) and the escaping symlinks are swept once, so
/// sharing changes no output. `targetNamespace` rewrites the kustomization file, so such a
/// build gets a private copy.
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
    if k.target_namespace.is_none() {
        let tree = engine.shared_tree(c, artifact)?;
        return build_in(&renderer, confinement, c, k, &tree.root());
    }
    // Removed when dropped, at the end of this function.
    let scratch = engine
        .state_dir
        .scratch(&k.name)
        .map_err(ReconcileError::Scratch)?;
    build(&renderer, confinement, c, k, artifact, scratch.path())
}

/// Extract `artifact` under `scratch` and build kustomization `k` of `c` from it.
fn build(
    renderer: &crate::render::Renderer,
    confinement: crate::render::Confinement,
    c: &Configuration,
    k: &Kustomization,
    artifact: &Artifact,
    scratch: &std::path::Path,
) -> Result<Rendered, ReconcileError> {
    let root = scratch.join("src");
    extract(artifact, &root)?;
    build_in(renderer, confinement, c, k, &root)
}

pub(super) fn extract(artifact: &Artifact, root: &std::path::Path) -> Result<(), ReconcileError> {
    crate::artifact::extract::extract(&artifact.path, &artifact.digest, root).map_err(|source| {
        ReconcileError::Extract {
            path: artifact.path.clone(),
            source: Box::new(source),
        }
    })
}

/// Build kustomization `k` of `c` from the extracted artifact at `root`.
fn build_in(
    renderer: &crate::render::Renderer,
    confinement: crate::render::Confinement,
    c: &Configuration,
    k: &Kustomization,
    root: &std::path::Path,
) -> Result<Rendered, ReconcileError> {
    let options = BuildOptions {
        timeout: k.timeout,
        confinement,
        remote_bases: c.render.remote_bases,
        target_namespace: k.target_namespace.clone(),
    };
    renderer
        .build(root, &k.path, &options)
        .map_err(|source| ReconcileError::Build {
            path: display_path(&k.path),
            source: Box::new(source),
        })
}

/// Render kustomization `k` of `c` from the artifact the state dir holds for it, as the next
/// reconcile would, without a running engine (for `gitopsd diff`): the build happens in a
/// temporary directory, so a daemon using the state dir is not disturbed.
pub async fn preview(
    settings: &crate::config::Settings,
    state: &State,
    clusters: &Arc<crate::apply::ClusterState>,
    c: &Configuration,
    k: &Kustomization,
) -> Result<Rendered, ReconcileError> {
    let (artifact, _) = inputs(state, c, k)?;
    let sandbox = crate::render::SandboxSupport::detect();
    let confinement = sandbox.resolve(c.render.sandbox).map_err(Box::new)?;
    let renderer =
        crate::render::Renderer::detect().map_err(|e| ReconcileError::NoRenderer(Arc::new(e)))?;
    let job = {
        let (c, k) = (c.clone(), k.clone());
        tokio::task::spawn_blocking(move || {
            let scratch = tempfile::tempdir().map_err(ReconcileError::Scratch)?;
            build(&renderer, confinement, &c, &k, &artifact, scratch.path())
        })
    };
    let rendered = job
        .await
        .map_err(|source| ReconcileError::KustomizationCrashed {
            name: k.name.clone(),
            source,
        })??;
    post_build(settings.kubernetes.as_ref(), clusters, c, k, rendered).await
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

    #[test]
    fn alerts_say_what_changed_and_stay_quiet_in_a_steady_state() {
        let c = configuration();
        let k = &c.kustomizations[0];
        let r1 = Revision("main@sha1:1".into());
        let applied = Ok(Applied {
            revision: r1.clone(),
            inventory: Inventory::default(),
            healthy: false,
            objects: vec![],
        });
        let steady = Before {
            revision: Some(r1.clone()),
            failed: false,
        };
        assert_eq!(event(&c, k, &applied, &steady, &[]), None);
        let changed = event(&c, k, &applied, &steady, &["ConfigMap/a configured".into()]).unwrap();
        assert_eq!(changed.involved_object.name, "web-infra");
        assert_eq!(changed.message, "ConfigMap/a configured");
        let new = event(&c, k, &applied, &Before::default(), &[]).unwrap();
        assert_eq!(
            new.message,
            "applied revision 'main@sha1:1': no object changed"
        );
        assert_eq!(new.metadata["revision"], "main@sha1:1");
        let recovered = Before {
            revision: Some(r1),
            failed: true,
        };
        let again = event(&c, k, &applied, &recovered, &[]).unwrap();
        assert_eq!(again.reason, "ReconciliationSucceeded");
        assert!(
            again.message.contains("again after a failure"),
            "{}",
            again.message
        );
        let waiting = Err(ReconcileError::DependencyNotReady {
            dependency: "infra".into(),
            revision: "main@sha1:1".into(),
        });
        let info = event(&c, k, &waiting, &steady, &[]).unwrap();
        assert_eq!(
            (info.severity, info.reason.as_str()),
            (crate::config::Severity::Info, "DependencyNotReady")
        );
        let failed = Err(ReconcileError::NoArtifact {
            source_name: "web".into(),
        });
        let error = event(&c, k, &failed, &steady, &[]).unwrap();
        assert_eq!(
            (error.severity, error.reason.as_str()),
            (crate::config::Severity::Error, "ReconciliationFailed")
        );
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
            ctx: &ApplyContext,
        ) -> Result<(), crate::apply::ApplyError> {
            // Always asked (a cluster target also has healthChecks); waits when ctx says so.
            self.waited
                .store(ctx.wait, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        }

        fn describe(&self) -> String {
            "recording".into()
        }
    }

    #[tokio::test]
    async fn prune_runs_only_when_asked_and_wait_is_told_whether_to_wait() {
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
            healthy: false,
            objects: vec![],
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
