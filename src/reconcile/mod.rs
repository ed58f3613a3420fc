//! The scheduler: one task per configuration, each a loop of
//! fetch → pack → publish → (for each kustomization in dependency order) render → apply,
//! with statuses written to the [`StateStore`] after every step.
//!
//! Fetches of different configurations run concurrently under a semaphore; blocking work runs
//! on `spawn_blocking` threads. One configuration's failure never touches another's task.

pub mod schedule;

use crate::apply::{DirectoryTarget, Inventory, Target as _};
use crate::artifact::store::ArtifactStore;
use crate::artifact::Artifact;
use crate::config::{Configuration, Kustomization, Settings, SourceKind, Target};
use crate::render::{BuildOptions, Renderer, SandboxSupport};
use crate::source::{FetchOutcome, Revision};
use crate::state::{now_rfc3339, set_condition, unix_now, StateDir, StateDirError, StateStore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// How many artifacts to keep per source (the current one included).
pub const KEEP_ARTIFACTS: usize = 2;

pub struct Engine {
    settings: Settings,
    /// Locked for as long as the engine lives; scratch space comes from it.
    state_dir: StateDir,
    state: Arc<StateStore>,
    store: ArtifactStore,
    fetch_permits: Semaphore,
    renderer: OnceLock<Result<Arc<Renderer>, String>>,
    /// What the kernel offers to confine builds, probed once at start.
    sandbox: SandboxSupport,
    /// One per configuration, by `<namespace>/<name>`: a name alone may be in several
    /// namespaces, and a request for one must not wake the other.
    triggers: HashMap<String, Arc<Notify>>,
    /// One per configuration, held by a fetch's blocking job for as long as it runs, also
    /// after its timeout: a fetch abandoned on a stuck connection winds down on its own (see
    /// `source::git::cancel`), and the next fetch of the source must not share its cache
    /// meanwhile, nor pile up another stuck thread.
    fetch_locks: Vec<Arc<tokio::sync::Mutex<()>>>,
    /// Cancelled when the daemon stops: in-flight fetches are interrupted, not waited for.
    stopping: CancellationToken,
    /// Size in bytes of each git source's cache repository (by `<namespace>/<name>`), for
    /// `/metrics`; measured after every fetch.
    cache_bytes: std::sync::Mutex<HashMap<String, u64>>,
}

/// What [`Engine::trigger`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The configuration will sync now; this is its namespace.
    Requested(String),
    NotFound,
    /// The bare name is in each of these namespaces; nothing was triggered.
    Ambiguous(Vec<String>),
}

/// The result of one pass (`run --once -o json`).
#[derive(Debug, Default, Serialize)]
pub struct PassReport {
    pub sources: Vec<SourceReport>,
    pub kustomizations: Vec<KustomizationReport>,
}

#[derive(Debug, Serialize)]
pub struct SourceReport {
    pub name: String,
    pub revision: Option<String>,
    pub artifact: Option<ArtifactReport>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ArtifactReport {
    pub path: PathBuf,
    pub digest: String,
    pub size: u64,
}

#[derive(Debug, Serialize)]
pub struct KustomizationReport {
    pub name: String,
    pub revision: Option<String>,
    pub target: Option<PathBuf>,
    pub objects: usize,
    pub error: Option<String>,
}

impl PassReport {
    pub fn succeeded(&self) -> bool {
        self.sources.iter().all(|s| s.error.is_none())
            && self.kustomizations.iter().all(|k| k.error.is_none())
    }
}

fn source_key(c: &Configuration) -> String {
    format!("{}/{}", c.namespace, c.name)
}

fn kustomization_key(c: &Configuration, k: &Kustomization) -> String {
    format!("{}/{}/{}", c.namespace, c.name, k.name)
}

/// Everything that shapes a source's artifact besides the commit. A change means the
/// current artifact no longer answers the settings, so the next poll packs again.
fn settings_digest(c: &Configuration) -> String {
    let s = &c.source;
    // Bucket and container settings go in whole (bucket, prefix, ...); their secrets print
    // redacted, so a rotated key does not repack.
    let text = format!(
        "{}\n{:?}\n{:?}\n{:?}\n{:?}",
        s.url, s.reference, s.ignore, s.bucket, s.azure_blob
    );
    hex::encode(Sha256::digest(text.as_bytes()))
}

impl Engine {
    pub fn new(settings: Settings) -> Result<Arc<Engine>, StateDirError> {
        // Checks, locks and makes the state dir 0700 (the daemon's alone).
        let state_dir = StateDir::open(&settings.state_dir)?;
        let state = StateStore::open(&settings.state_dir);
        let store = ArtifactStore::new(settings.state_dir.join("artifacts"));
        state.update(|st| {
            let wanted: Vec<String> = settings.configurations.iter().map(source_key).collect();
            st.sources.retain(|k, _| wanted.contains(k));
            let wanted: Vec<String> = settings
                .configurations
                .iter()
                .flat_map(|c| {
                    c.kustomizations
                        .iter()
                        .map(move |k| kustomization_key(c, k))
                })
                .collect();
            st.kustomizations.retain(|k, _| wanted.contains(k));
            for c in &settings.configurations {
                let s = st.sources.entry(source_key(c)).or_default();
                s.name = c.name.clone();
                s.namespace = c.namespace.clone();
                s.kind = c.source.kind.as_str().into();
                s.url = crate::source::git::refs::redact_url(&c.source.url);
                s.suspended = c.suspend || c.source.suspend;
                // An artifact whose file vanished is not served.
                if s.artifact.as_ref().is_some_and(|a| !a.path.is_file()) {
                    s.artifact = None;
                }
                for k in &c.kustomizations {
                    let ks = st
                        .kustomizations
                        .entry(kustomization_key(c, k))
                        .or_default();
                    ks.name = k.name.clone();
                    ks.configuration = c.name.clone();
                    ks.namespace = c.namespace.clone();
                    ks.path = k.path.clone();
                    ks.suspended = c.suspend || k.suspend;
                }
            }
        });
        let triggers = settings
            .configurations
            .iter()
            .map(|c| (source_key(c), Arc::new(Notify::new())))
            .collect();
        let permits = settings.max_concurrent_fetches.max(1);
        let sandbox = SandboxSupport::detect();
        log_sandbox(&settings, &sandbox);
        let fetch_locks = settings
            .configurations
            .iter()
            .map(|_| Arc::new(tokio::sync::Mutex::new(())))
            .collect();
        // Caches kept from a previous run count from the start.
        let cache_bytes = settings
            .configurations
            .iter()
            .filter(|c| c.source.kind == SourceKind::Git)
            .map(|c| (source_key(c), git_cache_bytes(&settings, c)))
            .collect();
        Ok(Arc::new(Engine {
            settings,
            state_dir,
            state,
            store,
            fetch_permits: Semaphore::new(permits),
            renderer: OnceLock::new(),
            sandbox,
            triggers,
            fetch_locks,
            stopping: CancellationToken::new(),
            cache_bytes: std::sync::Mutex::new(cache_bytes),
        }))
    }

    pub fn state(&self) -> &Arc<StateStore> {
        &self.state
    }

    pub fn store(&self) -> &ArtifactStore {
        &self.store
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The size of each git source's cache repository, by `<namespace>/<name>`.
    pub fn git_cache_bytes(&self) -> HashMap<String, u64> {
        self.cache_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ask a configuration to sync now: the one named `name` in `namespace`, or, without a
    /// namespace, the only one named `name` in any namespace.
    pub fn trigger(&self, namespace: Option<&str>, name: &str) -> Trigger {
        let namespaces: Vec<&str> = self
            .settings
            .configurations
            .iter()
            .filter(|c| c.name == name && namespace.is_none_or(|ns| c.namespace == ns))
            .map(|c| c.namespace.as_str())
            .collect();
        match namespaces.as_slice() {
            [] => Trigger::NotFound,
            [ns] => match self.triggers.get(&format!("{ns}/{name}")) {
                Some(n) => {
                    n.notify_one();
                    Trigger::Requested(ns.to_string())
                }
                None => Trigger::NotFound,
            },
            several => Trigger::Ambiguous(several.iter().map(|ns| ns.to_string()).collect()),
        }
    }

    /// One pass over every configuration, concurrently; kustomizations always render.
    pub async fn run_once(self: &Arc<Self>) -> PassReport {
        let mut tasks = tokio::task::JoinSet::new();
        for idx in 0..self.settings.configurations.len() {
            let engine = self.clone();
            tasks.spawn(async move { (idx, engine.once_configuration(idx).await) });
        }
        let mut parts: Vec<(usize, PassReport)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(part) => parts.push(part),
                Err(e) => tracing::error!(error = %e, "configuration task failed"),
            }
        }
        parts.sort_by_key(|(i, _)| *i);
        let mut report = PassReport::default();
        for (_, part) in parts {
            report.sources.extend(part.sources);
            report.kustomizations.extend(part.kustomizations);
        }
        report
    }

    async fn once_configuration(self: &Arc<Self>, idx: usize) -> PassReport {
        let c = &self.settings.configurations[idx];
        let mut report = PassReport::default();
        let result = if c.suspend || c.source.suspend {
            Ok(())
        } else {
            self.sync_source(idx).await
        };
        let artifact = self.current_artifact(c);
        report.sources.push(SourceReport {
            name: c.name.clone(),
            revision: artifact.as_ref().map(|a| a.revision.to_string()),
            artifact: artifact.as_ref().map(|a| ArtifactReport {
                path: a.path.clone(),
                digest: a.digest.clone(),
                size: a.size,
            }),
            error: result.err(),
        });
        for ki in schedule::dependency_order(&c.kustomizations) {
            let k = &c.kustomizations[ki];
            if c.suspend || k.suspend {
                continue;
            }
            let result = self.sync_kustomization(idx, ki).await;
            let ks = self
                .state
                .read(|st| st.kustomizations.get(&kustomization_key(c, k)).cloned());
            report.kustomizations.push(KustomizationReport {
                name: k.name.clone(),
                revision: ks
                    .as_ref()
                    .and_then(|s| s.last_applied_revision.as_ref().map(|r| r.to_string())),
                target: Some(self.target_file(c, k)),
                objects: ks.as_ref().map(|s| s.objects).unwrap_or(0),
                error: result.err(),
            });
        }
        report
    }

    /// Run until `shutdown` turns true; in-flight steps finish (they write atomically, so
    /// even an abandoned one leaves no half-written file).
    pub async fn run(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let mut tasks = tokio::task::JoinSet::new();
        {
            // Fetches do not watch `shutdown` themselves: they end on `stopping`.
            let engine = self.clone();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
                engine.stopping.cancel();
            });
        }
        for idx in 0..self.settings.configurations.len() {
            let engine = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move { engine.configuration_loop(idx, shutdown).await });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn configuration_loop(self: Arc<Self>, idx: usize, mut shutdown: watch::Receiver<bool>) {
        let c = &self.settings.configurations[idx];
        // Every configuration has one (see `new`); a missing one would only lose the trigger.
        let trigger = self
            .triggers
            .get(&source_key(c))
            .cloned()
            .unwrap_or_default();
        let now = Instant::now();
        let mut source_due = now;
        let mut source_failures = 0u32;
        let mut k_due = vec![now; c.kustomizations.len()];
        let mut k_failures = vec![0u32; c.kustomizations.len()];
        // The revision each kustomization last tried: a new one runs at once, a failed one
        // waits for its backoff.
        let mut k_attempted: Vec<Option<Revision>> = vec![None; c.kustomizations.len()];
        let order = schedule::dependency_order(&c.kustomizations);
        loop {
            let next = k_due.iter().copied().fold(source_due, Instant::min);
            let mut forced = false;
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = trigger.notified() => forced = true,
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            let now = Instant::now();
            if forced || now >= source_due {
                if c.suspend || c.source.suspend {
                    source_due = now + schedule::jittered(c.source.interval);
                } else {
                    match self.sync_source(idx).await {
                        Ok(()) => {
                            source_failures = 0;
                            source_due = Instant::now() + schedule::jittered(c.source.interval);
                        }
                        Err(_) => {
                            source_failures += 1;
                            source_due = Instant::now()
                                + schedule::backoff(source_failures, c.source.retry_interval);
                        }
                    }
                }
            }
            let current = self.current_artifact(c).map(|a| a.revision);
            for &ki in &order {
                if *shutdown.borrow() {
                    return;
                }
                let k = &c.kustomizations[ki];
                let new_revision = current.is_some() && k_attempted[ki] != current;
                let now = Instant::now();
                if c.suspend || k.suspend || !(forced || new_revision || now >= k_due[ki]) {
                    continue;
                }
                k_attempted[ki].clone_from(&current);
                match self.sync_kustomization(idx, ki).await {
                    Ok(()) => {
                        k_failures[ki] = 0;
                        k_due[ki] = Instant::now() + schedule::jittered(k.interval);
                    }
                    Err(_) => {
                        k_failures[ki] += 1;
                        k_due[ki] =
                            Instant::now() + schedule::backoff(k_failures[ki], k.retry_interval);
                    }
                }
            }
        }
    }

    fn current_artifact(&self, c: &Configuration) -> Option<Artifact> {
        self.state.read(|st| {
            st.sources
                .get(&source_key(c))
                .and_then(|s| s.artifact.clone())
        })
    }

    /// Fetch, and on a new revision pack, store, GC and publish. Errors are the status text.
    pub async fn sync_source(self: &Arc<Self>, idx: usize) -> Result<(), String> {
        let c = &self.settings.configurations[idx];
        let key = source_key(c);
        let digest = settings_digest(c);
        let previous = self.state.read(|st| {
            st.sources.get(&key).and_then(|s| {
                let usable = s.settings_digest == digest && s.artifact.is_some();
                usable.then(|| s.revision.clone()).flatten()
            })
        });
        let started = Instant::now();
        let interrupt = Arc::new(AtomicBool::new(false));
        let outcome = tokio::select! {
            outcome = self.fetch_in_time(idx, previous, interrupt.clone()) => outcome,
            _ = self.stopping.cancelled() => {
                // Not a failure of the source: its status stays as it was.
                interrupt.store(true, Ordering::Relaxed);
                tracing::info!(source = %key, "fetch cancelled: gitopsd is stopping");
                return Err(format!(
                    "fetch of {} cancelled: gitopsd is stopping",
                    crate::source::git::refs::redact_url(&c.source.url)
                ));
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        release_memory();
        self.state.update(|st| {
            let s = st.sources.entry(key.clone()).or_default();
            s.last_attempt_time = Some(now_rfc3339());
            s.metrics.fetches_total += 1;
            s.metrics.fetch_seconds_sum += elapsed;
            s.metrics.last_fetch_seconds = elapsed;
            match &outcome {
                Ok(fetched) => {
                    s.last_error = None;
                    s.last_success_time = Some(now_rfc3339());
                    s.metrics.last_success_timestamp = unix_now();
                    match fetched {
                        Some(artifact) => {
                            s.revision = Some(artifact.revision.clone());
                            s.artifact = Some(artifact.clone());
                            s.settings_digest = digest.clone();
                        }
                        None => s.metrics.unchanged_total += 1,
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
                Err(msg) => {
                    s.metrics.fetch_errors_total += 1;
                    s.last_error = Some(msg.clone());
                    set_condition(&mut s.conditions, "Ready", false, "FetchFailed", msg);
                }
            }
        });
        match outcome {
            Ok(Some(a)) => {
                tracing::info!(source = %key, revision = %a.revision, digest = %a.digest, "stored artifact");
                Ok(())
            }
            Ok(None) => {
                tracing::debug!(source = %key, "unchanged");
                Ok(())
            }
            Err(msg) => {
                tracing::warn!(source = %key, error = %msg, "fetch failed");
                Err(msg)
            }
        }
    }

    /// Fetch and pack within the source's timeout. On timeout the interrupt flag is set and
    /// the blocking job is left to wind down (it keeps the source's fetch lock until it has).
    async fn fetch_in_time(
        self: &Arc<Self>,
        idx: usize,
        previous: Option<Revision>,
        interrupt: Arc<AtomicBool>,
    ) -> Result<Option<Artifact>, String> {
        let c = &self.settings.configurations[idx];
        let timed_out = |detail: &str| {
            format!(
                "fetch of {} timed out after {}{detail}",
                crate::source::git::refs::redact_url(&c.source.url),
                humantime::format_duration(c.source.timeout)
            )
        };
        let _permit = self
            .fetch_permits
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let deadline = tokio::time::Instant::now() + c.source.timeout;
        let lock = self.fetch_locks[idx].clone();
        let Ok(guard) = tokio::time::timeout_at(deadline, lock.lock_owned()).await else {
            return Err(timed_out(
                " (the previous fetch of this source is still ending)",
            ));
        };
        let span = tracing::info_span!("fetch", source = %source_key(c));
        let engine = self.clone();
        let flag = interrupt.clone();
        let job = tokio::task::spawn_blocking(move || {
            let _enter = span.enter();
            let _guard = guard;
            let result = engine.fetch_and_pack(idx, previous.as_ref(), &flag);
            engine.measure_git_cache(idx);
            result
        });
        match tokio::time::timeout_at(deadline, job).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!(
                "fetch of {} crashed: {join}",
                crate::source::git::refs::redact_url(&c.source.url)
            )),
            Err(_) => {
                interrupt.store(true, Ordering::Relaxed);
                Err(timed_out(""))
            }
        }
    }

    fn measure_git_cache(&self, idx: usize) {
        let c = &self.settings.configurations[idx];
        if c.source.kind != SourceKind::Git {
            return;
        }
        let bytes = git_cache_bytes(&self.settings, c);
        self.cache_bytes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(source_key(c), bytes);
    }

    /// The blocking part of a source sync. `Ok(None)`: unchanged.
    fn fetch_and_pack(
        &self,
        idx: usize,
        previous: Option<&Revision>,
        interrupt: &AtomicBool,
    ) -> Result<Option<Artifact>, String> {
        let c = &self.settings.configurations[idx];
        let source = crate::source::from_settings(
            &c.namespace,
            &c.name,
            &c.source,
            &self.settings.state_dir.join("git"),
        );
        let scratch = self.state_dir.scratch(&c.name).map_err(|e| e.to_string())?;
        let (revision, snapshot) = match source
            .fetch(previous, scratch.path().to_path_buf(), interrupt)
            .map_err(|e| {
                // The kind, not the sentence, says whether waiting can help; the backoff is
                // the same either way for now, so it is only recorded.
                tracing::debug!(source = %c.name, retryable = e.retryable(), "fetch failed");
                e.to_string()
            })? {
            FetchOutcome::Unchanged => return Ok(None),
            FetchOutcome::Fetched { revision, snapshot } => (revision, snapshot),
        };
        let kind = c.source.kind.as_str();
        let artifact = snapshot.store(
            &self.store,
            kind,
            &c.namespace,
            &c.name,
            &revision,
            c.source.ignore.as_deref(),
        )?;
        if let Err(e) = self
            .store
            .gc(kind, &c.namespace, &c.name, &artifact.path, KEEP_ARTIFACTS)
        {
            tracing::warn!(source = %c.name, error = %e, "artifact GC failed");
        }
        if let Some(publish) = &c.source.publish {
            crate::artifact::publish::publish(publish, &artifact, revision.digest_hex()).map_err(
                |e| {
                    format!(
                        "cannot publish {} into {}: {e}",
                        c.name,
                        publish.directory.display()
                    )
                },
            )?;
        }
        Ok(Some(artifact))
    }

    fn renderer(&self) -> Result<Arc<Renderer>, String> {
        self.renderer
            .get_or_init(|| Renderer::detect().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
    }

    /// Where a kustomization's rendered YAML goes.
    pub fn target_file(&self, c: &Configuration, k: &Kustomization) -> PathBuf {
        self.target_dir(c, k).join(format!("{}.yaml", k.name))
    }

    fn target_dir(&self, c: &Configuration, k: &Kustomization) -> PathBuf {
        match &k.target {
            Target::Directory(d) => d.clone(),
            Target::None => self
                .settings
                .state_dir
                .join("rendered")
                .join(&c.namespace)
                .join(&c.name),
        }
    }

    /// Render the current artifact at the kustomization's path and apply it to its target.
    pub async fn sync_kustomization(self: &Arc<Self>, idx: usize, ki: usize) -> Result<(), String> {
        let c = &self.settings.configurations[idx];
        let k = &c.kustomizations[ki];
        let key = kustomization_key(c, k);
        let result = self.kustomization_inputs(c, k);
        let outcome = match result {
            Err(e) => Err(e),
            Ok((artifact, previous)) => {
                let engine = self.clone();
                let revision = artifact.revision.clone();
                let job = tokio::task::spawn_blocking(move || {
                    let c = &engine.settings.configurations[idx];
                    let k = &c.kustomizations[ki];
                    engine.render_and_apply(c, k, &artifact, &previous)
                });
                match tokio::time::timeout(k.timeout + Duration::from_secs(5), job).await {
                    Ok(Ok(r)) => r.map(|inv| (revision, inv)),
                    Ok(Err(e)) => Err(format!("kustomization {} crashed: {e}", k.name)),
                    Err(_) => Err(format!(
                        "kustomization {} timed out after {}",
                        k.name,
                        humantime::format_duration(k.timeout)
                    )),
                }
            }
        };
        release_memory();
        let target = self.target_file(c, k);
        self.state.update(|st| {
            let ks = st.kustomizations.entry(key.clone()).or_default();
            ks.target = Some(target.clone());
            match &outcome {
                Ok((revision, inventory)) => {
                    ks.last_attempted_revision = Some(revision.clone());
                    ks.last_applied_revision = Some(revision.clone());
                    ks.objects = inventory.entries.len();
                    ks.inventory = inventory.clone();
                    ks.last_error = None;
                    ks.last_success_time = Some(now_rfc3339());
                    set_condition(
                        &mut ks.conditions,
                        "Ready",
                        true,
                        "ReconciliationSucceeded",
                        &format!("applied revision '{revision}'"),
                    );
                }
                Err(msg) => {
                    ks.last_error = Some(msg.clone());
                    set_condition(
                        &mut ks.conditions,
                        "Ready",
                        false,
                        "ReconciliationFailed",
                        msg,
                    );
                }
            }
        });
        match outcome {
            Ok((revision, inventory)) => {
                tracing::info!(kustomization = %key, revision = %revision, objects = inventory.entries.len(), "applied");
                Ok(())
            }
            Err(msg) => {
                tracing::warn!(kustomization = %key, error = %msg, "kustomization failed");
                Err(msg)
            }
        }
    }

    /// The artifact to render and the previous inventory, once dependencies are ready.
    fn kustomization_inputs(
        &self,
        c: &Configuration,
        k: &Kustomization,
    ) -> Result<(Artifact, Inventory), String> {
        let artifact = self
            .current_artifact(c)
            .ok_or_else(|| format!("source {} has no artifact yet", c.name))?;
        self.state.read(|st| {
            for dep in &k.depends_on {
                let ready = c
                    .kustomizations
                    .iter()
                    .find(|d| &d.name == dep)
                    .and_then(|d| st.kustomizations.get(&kustomization_key(c, d)))
                    .is_some_and(|d| {
                        d.last_error.is_none()
                            && d.last_applied_revision.as_ref() == Some(&artifact.revision)
                    });
                if !ready {
                    return Err(format!(
                        "dependency '{dep}' is not ready at revision '{}'",
                        artifact.revision
                    ));
                }
            }
            let previous = st
                .kustomizations
                .get(&kustomization_key(c, k))
                .map(|s| s.inventory.clone())
                .unwrap_or_default();
            Ok((artifact, previous))
        })
    }

    fn render_and_apply(
        &self,
        c: &Configuration,
        k: &Kustomization,
        artifact: &Artifact,
        previous: &Inventory,
    ) -> Result<Inventory, String> {
        let renderer = self.renderer()?;
        let confinement = self
            .sandbox
            .resolve(c.render.sandbox)
            .map_err(|e| e.to_string())?;
        let options = BuildOptions {
            timeout: k.timeout,
            confinement,
            remote_bases: c.render.remote_bases,
        };
        let scratch = self.state_dir.scratch(&k.name).map_err(|e| e.to_string())?;
        let root = scratch.path().join("src");
        crate::artifact::pack::extract(&artifact.path, &artifact.digest, &root)
            .map_err(|e| format!("cannot extract artifact {}: {e}", artifact.path.display()))?;
        let rendered = renderer
            .build(&root, &k.path, &options)
            .map_err(|e| format!("kustomize build of '{}' failed: {e}", display_path(&k.path)))?;
        let target = DirectoryTarget {
            directory: self.target_dir(c, k),
            file_name: format!("{}.yaml", k.name),
        };
        let report = target
            .apply(&rendered, previous)
            .map_err(|e| e.to_string())?;
        Ok(report.inventory)
    }
}

/// Say once, at start, how builds will be confined: which mechanism, which configurations
/// opted out, and which cannot render at all on this machine.
fn log_sandbox(settings: &Settings, support: &SandboxSupport) {
    let with_kustomizations = settings
        .configurations
        .iter()
        .filter(|c| !c.kustomizations.is_empty());
    let mut confined = Vec::new();
    for c in with_kustomizations {
        match support.resolve(c.render.sandbox) {
            Ok(crate::render::Confinement::Unconfined) => tracing::warn!(
                configuration = %c.name,
                "render sandbox disabled (render.sandbox: none): kustomize can read any file \
                 gitopsd can read, such as keys and other configurations' files"
            ),
            Ok(confinement) => confined.push(format!("{}: {}", c.name, confinement.as_str())),
            Err(e) => tracing::error!(configuration = %c.name, "{e}"),
        }
    }
    if !confined.is_empty() {
        tracing::info!(
            support = %support.describe(),
            "render sandbox: {}",
            confined.join(", ")
        );
    }
}

/// The size of a git source's cache repository, for `/metrics`.
fn git_cache_bytes(settings: &Settings, c: &Configuration) -> u64 {
    let root = settings.state_dir.join("git");
    crate::source::git::cache::size(&crate::source::git::cache::dir(
        &root,
        &c.namespace,
        &c.name,
    ))
}

fn display_path(p: &str) -> String {
    if p.is_empty() {
        "./".into()
    } else {
        format!("./{p}")
    }
}

/// Give memory freed by a fetch back to the OS. glibc keeps freed heap in per-thread arenas,
/// and a fetch touches tens of MB (packs, trees): without this an idle daemon would keep the
/// high-water mark of its largest sync resident forever.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
