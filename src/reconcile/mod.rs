//! The engine: one task per configuration, each a loop that asks its [`scheduler::Schedule`]
//! what is due, runs the reconcile function of each due object and hands the returned
//! [`scheduler::Action`] back to the schedule.
//!
//! - [`scheduler`]: when things run (pure, unit-tested with made-up instants);
//! - [`source`] and [`kustomization`]: one reconcile function per kind, inputs in, an action
//!   and a status out;
//! - [`metrics`]: counters and histograms in memory, encoded by `/metrics`;
//! - the durable statuses are in [`crate::state::StateStore`], which writes only what changed.
//!
//! Fetches of different configurations run concurrently under a semaphore; blocking work runs
//! on `spawn_blocking` threads. One configuration's failure never touches another's task.

mod digest;
pub mod error;
mod failure_log;
mod hooks;
mod kustomization;
mod memory;
pub mod metrics;
pub mod reload;
pub mod scheduler;
pub mod snapshot;
mod source;
pub mod supervise;
mod suspend;

pub use error::ReconcileError;
pub use kustomization::preview;
pub use suspend::{SuspendError, SuspendRequest, Suspended};

use crate::apply::Target as _;
use crate::artifact::store::ArtifactStore;
use crate::artifact::Artifact;
use crate::config::{Configuration, Kustomization, Settings};
use crate::render::{RenderError, Renderer, SandboxSupport};
use crate::state::{StateDir, StateDirError, StateStore, Suspensions};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify, Semaphore};
use tokio_util::sync::CancellationToken;

/// How many artifacts to keep per source (the current one included).
pub const KEEP_ARTIFACTS: usize = 2;

/// How long `run --once` waits at its end for queued alerts to be delivered.
const ALERT_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

pub struct Engine {
    settings: Settings,
    /// Locked for as long as the engine lives; scratch space comes from it.
    //
    // Everything behind an `Arc` (and the cancellation tokens, whose clones are one token) is
    // shared with the engines that reloads make from this one (see [`reload`]): one lock,
    // one state, one set of counters and fetch slots for the whole process.
    state_dir: Arc<StateDir>,
    state: Arc<StateStore>,
    store: Arc<ArtifactStore>,
    metrics: Arc<metrics::Metrics>,
    fetch_permits: Arc<Semaphore>,
    /// Found once, on first use; a missing kustomize fails every render with the same error.
    renderer: Arc<OnceLock<Result<Arc<Renderer>, Arc<RenderError>>>>,
    /// What the kernel offers to confine builds, probed once at start.
    sandbox: Arc<SandboxSupport>,
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
    /// Cancelled when the daemon gives up on in-flight applies (its stop grace is over);
    /// until then a stop lets them finish.
    abandon: CancellationToken,
    /// What cluster targets keep between applies: one client per cluster and identity,
    /// discovery, and what each object was last applied as.
    clusters: Arc<crate::apply::ClusterState>,
    /// Where the engine's events go (`events::alert`): queued, never waited for. Shared by
    /// the engines a reload makes (providers and alerts change with a restart).
    alerts: Arc<crate::events::alert::Alerts>,
    /// The webhook receivers being served, for the status API; set once the daemon has read
    /// their secrets.
    receiver_hooks: Arc<OnceLock<Vec<crate::events::receiver::HookStatus>>>,
    /// Each configuration's current artifact, extracted once for all its kustomizations (see
    /// `kustomization::render`), by `<namespace>/<name>`.
    trees: Arc<std::sync::Mutex<HashMap<String, Arc<SharedTree>>>>,
    /// Where each configuration loop is, for the watchdog (see [`supervise`]).
    liveness: Arc<supervise::Liveness>,
    /// Suspensions an operator set at run time, as saved in the state dir (see [`suspend`]).
    suspensions: Arc<std::sync::Mutex<Suspensions>>,
    /// Bumped at every change of `suspensions`: wakes the configuration loops.
    suspension_changes: Arc<watch::Sender<u64>>,
    /// Publish hooks in flight (see [`hooks`]).
    hooks: Arc<hooks::Hooks>,
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
    /// Where its objects went, as the target describes itself (a directory target: the file).
    pub target: Option<String>,
    pub objects: usize,
    /// What this pass did to each object (empty when it failed).
    pub applied: Vec<crate::apply::ObjectResult>,
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

/// An artifact extracted into scratch space for the builds of one configuration; removed
/// when the last build using it is done and a newer artifact replaced it.
struct SharedTree {
    digest: String,
    dir: crate::state::ScratchDir,
    /// Set once the extraction (and the sweep of escaping symlinks) finished; held while it
    /// runs, so the builds that come meanwhile wait for it instead of extracting again.
    ready: std::sync::Mutex<bool>,
}

impl SharedTree {
    fn root(&self) -> PathBuf {
        self.dir.path().join("src")
    }
}

/// Kustomizations of one configuration reconciled at the same time (see `reconcile_wave`).
const RECONCILE_CONCURRENCY: usize = 8;

/// How long the start-up cleanup of removed kustomizations may take.
const GARBAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

fn kustomization_key(c: &Configuration, k: &Kustomization) -> String {
    format!("{}/{}/{}", c.namespace, c.name, k.name)
}

/// The owner labels and inventory name of kustomization `k` of `c`.
pub fn owner(c: &Configuration, k: &Kustomization) -> crate::apply::kubernetes::Owner {
    crate::apply::kubernetes::Owner {
        namespace: c.namespace.clone(),
        configuration: c.name.clone(),
        kustomization: k.name.clone(),
    }
}

impl Engine {
    /// The target kustomization `k` of `c` applies to.
    pub(crate) fn target(&self, c: &Configuration, k: &Kustomization) -> crate::apply::AnyTarget {
        crate::apply::build(
            &k.target,
            &self.settings.state_dir,
            &owner(c, k),
            &self.clusters,
        )
    }

    pub fn new(settings: Settings) -> Result<Arc<Engine>, StateDirError> {
        // Checks, locks and makes the state dir 0700 (the daemon's alone).
        let state_dir = StateDir::open(&settings.state_dir)?;
        let suspensions = Suspensions::load(&settings.state_dir)?;
        let state = StateStore::open(&settings.state_dir);
        let store = ArtifactStore::new(settings.state_dir.join("artifacts"));
        let sandbox = SandboxSupport::detect();
        let permits = settings.max_concurrent_fetches.max(1);
        let metrics = Arc::new(metrics::Metrics::new());
        let alerts = Arc::new(crate::events::alert::Alerts::new(
            &settings.events.providers,
            &settings.events.alerts,
            metrics.events().clone(),
        ));
        let engine = Engine {
            state_dir: Arc::new(state_dir),
            state,
            store: Arc::new(store),
            metrics,
            clusters: Arc::default(),
            alerts,
            receiver_hooks: Arc::default(),
            trees: Arc::default(),
            fetch_permits: Arc::new(Semaphore::new(permits)),
            renderer: Arc::new(OnceLock::new()),
            sandbox: Arc::new(sandbox),
            triggers: HashMap::new(),
            fetch_locks: Vec::new(),
            stopping: CancellationToken::new(),
            abandon: CancellationToken::new(),
            liveness: Arc::new(supervise::Liveness::default()),
            suspensions: Arc::new(std::sync::Mutex::new(suspensions)),
            suspension_changes: Arc::new(watch::Sender::new(0)),
            hooks: Arc::new(hooks::Hooks::default()),
            settings,
        };
        Ok(Arc::new(engine.adopt(None)))
    }

    /// An engine for `settings` that shares this one's state dir, state, counters, fetch slots
    /// and cancellation; configurations present in both keep their trigger and fetch lock (a
    /// fetch still running for the old engine keeps the cache to itself).
    fn successor(&self, settings: Settings) -> Engine {
        Engine {
            settings,
            state_dir: self.state_dir.clone(),
            state: self.state.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            clusters: self.clusters.clone(),
            alerts: self.alerts.clone(),
            receiver_hooks: self.receiver_hooks.clone(),
            trees: self.trees.clone(),
            fetch_permits: self.fetch_permits.clone(),
            renderer: self.renderer.clone(),
            sandbox: self.sandbox.clone(),
            triggers: HashMap::new(),
            fetch_locks: Vec::new(),
            stopping: self.stopping.clone(),
            abandon: self.abandon.clone(),
            liveness: self.liveness.clone(),
            suspensions: self.suspensions.clone(),
            suspension_changes: self.suspension_changes.clone(),
            hooks: self.hooks.clone(),
        }
        .adopt(Some(self))
    }

    /// Fills in the per-configuration parts (from `previous` where it has the configuration),
    /// brings the statuses in line with the settings, and says how builds are confined.
    fn adopt(mut self, previous: Option<&Engine>) -> Engine {
        let settings = &self.settings;
        let suspensions = self
            .suspensions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.state.update(|st| {
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
            // Their configurations are remembered until their inventories in the cluster are
            // cleaned up (`collect_garbage`), which may take more than one start.
            let departed: Vec<String> = st
                .kustomizations
                .iter()
                .filter(|(k, _)| !wanted.contains(k))
                .map(|(_, s)| format!("{}/{}", s.namespace, s.configuration))
                .collect();
            st.departed.extend(departed);
            st.kustomizations.retain(|k, _| wanted.contains(k));
            for c in &settings.configurations {
                let s = st.sources.entry(source_key(c)).or_default();
                s.name = c.name.clone();
                s.namespace = c.namespace.clone();
                s.kind = c.source.kind().as_str().into();
                s.url = crate::source::git::refs::redact_url(&c.source.url);
                s.suspended = c.suspend
                    || c.source.suspend
                    || suspensions.configuration(&c.namespace, &c.name);
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
                    ks.suspended = c.suspend
                        || k.suspend
                        || suspensions.configuration(&c.namespace, &c.name)
                        || suspensions.kustomization(&c.namespace, &c.name, &k.name);
                }
            }
        });
        self.state.read(|st| self.metrics.register_objects(st));
        // Caches kept from a previous run count from the start.
        for c in &settings.configurations {
            if let Some(bytes) = source::git_cache_bytes(settings, c) {
                self.metrics.set_git_cache_bytes(
                    &metrics::source_labels(&c.namespace, &c.name, c.source.kind().as_str()),
                    bytes,
                );
            }
        }
        let previous_index = |c: &Configuration| {
            let key = source_key(c);
            previous.and_then(|p| {
                p.settings
                    .configurations
                    .iter()
                    .position(|o| source_key(o) == key)
                    .map(|i| (p, i))
            })
        };
        self.triggers = settings
            .configurations
            .iter()
            .map(|c| {
                let trigger = previous_index(c)
                    .and_then(|(p, _)| p.triggers.get(&source_key(c)).cloned())
                    .unwrap_or_default();
                (source_key(c), trigger)
            })
            .collect();
        self.fetch_locks = settings
            .configurations
            .iter()
            .map(|c| {
                previous_index(c)
                    .and_then(|(p, i)| p.fetch_locks.get(i).cloned())
                    .unwrap_or_default()
            })
            .collect();
        log_sandbox(settings, &self.sandbox);
        self
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

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Hands `event` to the alerts (queued; never waits).
    pub fn emit(&self, event: crate::events::alert::Event) {
        self.alerts.emit(event);
    }

    /// The recent events numbered `since` or later, and the next number (`/api/v1/events`).
    pub fn recent_events(&self, since: u64) -> (u64, Vec<crate::events::alert::Event>) {
        self.alerts.recent(since)
    }

    /// Records the receivers being served (once; later calls are ignored).
    pub fn set_hooks(&self, hooks: Vec<crate::events::receiver::HookStatus>) {
        let _ = self.receiver_hooks.set(hooks);
    }

    /// The receivers being served: none until the daemon has started its listener.
    pub fn hooks(&self) -> &[crate::events::receiver::HookStatus] {
        self.receiver_hooks
            .get()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The extracted tree of `artifact` for the builds of configuration `c`, extracted now
    /// unless a build extracted it already. (Blocking: called from a render's thread.)
    fn shared_tree(
        &self,
        c: &Configuration,
        artifact: &Artifact,
    ) -> Result<Arc<SharedTree>, ReconcileError> {
        let tree = {
            let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
            match trees.get(&source_key(c)) {
                Some(tree) if tree.digest == artifact.digest => tree.clone(),
                _ => {
                    let tree = Arc::new(SharedTree {
                        digest: artifact.digest.clone(),
                        dir: self
                            .state_dir
                            .scratch(&format!("tree-{}", c.name))
                            .map_err(ReconcileError::Scratch)?,
                        ready: std::sync::Mutex::new(false),
                    });
                    // The previous tree goes once the builds still using it are done.
                    trees.insert(source_key(c), tree.clone());
                    tree
                }
            }
        };
        let mut ready = tree.ready.lock().unwrap_or_else(|e| e.into_inner());
        if !*ready {
            let root = tree.root();
            if let Err(e) = kustomization::extract(artifact, &root) {
                // The next build starts again from an empty directory.
                let _ = std::fs::remove_dir_all(&root);
                return Err(e);
            }
            for link in
                crate::render::sweep_escaping_symlinks(&root).map_err(ReconcileError::Scratch)?
            {
                tracing::warn!(
                    configuration = %c.name,
                    symlink = %link.display(),
                    "removed a symlink that leads outside the artifact before the build"
                );
            }
            *ready = true;
        }
        drop(ready);
        Ok(tree)
    }

    /// What a daemon starts beside the configuration loops: the alert workers, and the
    /// cleanup of kustomizations that left the config (again after every reload).
    pub fn start_background(self: &Arc<Self>) {
        self.alerts.start();
        let engine = self.clone();
        tokio::spawn(async move { engine.collect_garbage().await });
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

    /// Stop waiting for in-flight applies: they end at their next safe point.
    pub fn abandon(&self) {
        self.stopping.cancel();
        self.abandon.cancel();
    }

    /// Wait until the state file holds every status change made so far.
    pub async fn flush(&self) {
        self.state.flush().await;
    }

    /// One pass over every configuration, concurrently; kustomizations always render.
    pub async fn run_once(self: &Arc<Self>) -> PassReport {
        self.collect_garbage().await;
        self.alerts.start();
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
        // A one-shot run (an init container) is done when its consumers have been told.
        self.hooks.wait().await;
        self.flush().await;
        // The pass's alerts go out before the process exits, unless a provider is too slow.
        self.alerts.drain(ALERT_DRAIN).await;
        report
    }

    async fn once_configuration(self: &Arc<Self>, idx: usize) -> PassReport {
        let c = &self.settings.configurations[idx];
        let mut report = PassReport::default();
        let result = if self.source_suspended(idx) {
            Ok(())
        } else {
            source::reconcile(self, idx).await.1
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
            error: result.err().map(|e| e.to_string()),
        });
        let due: Vec<usize> = scheduler::dependency_order(&c.kustomizations)
            .into_iter()
            .filter(|&ki| !self.kustomization_suspended(idx, ki))
            .collect();
        let mut results = Vec::with_capacity(due.len());
        for wave in scheduler::waves(&c.kustomizations, &due) {
            results.extend(self.reconcile_wave(idx, &wave).await);
        }
        for (ki, (_, result)) in results {
            let k = &c.kustomizations[ki];
            let ks = self
                .state
                .read(|st| st.kustomizations.get(&kustomization_key(c, k)).cloned());
            report.kustomizations.push(KustomizationReport {
                name: k.name.clone(),
                revision: ks
                    .as_ref()
                    .and_then(|s| s.last_applied_revision.as_ref().map(|r| r.to_string())),
                target: Some(self.target(c, k).describe()),
                objects: ks.as_ref().map(|s| s.objects).unwrap_or(0),
                applied: result.as_ref().map(Clone::clone).unwrap_or_default(),
                error: result.err().map(|e| e.to_string()),
            });
        }
        report
    }

    /// Once at start, with a cluster: prune the objects of kustomizations that left the
    /// config (when they had `prune: true`) and drop their inventories. A failure
    /// is logged and retried at the next start; it never holds up the configured ones.
    async fn collect_garbage(&self) {
        let Some(cluster) = &self.settings.kubernetes else {
            return;
        };
        let configured: Vec<_> = self
            .settings
            .configurations
            .iter()
            .flat_map(|c| c.kustomizations.iter().map(move |k| owner(c, k)))
            .collect();
        // Only this daemon's configurations, now or before: another gitopsd may share the
        // cluster, and its inventories are not ours to clean up.
        let departed = self.state.read(|st| st.departed.clone());
        let mut ours: Vec<(String, String)> = self
            .settings
            .configurations
            .iter()
            .map(|c| (c.namespace.clone(), c.name.clone()))
            .collect();
        ours.extend(departed.iter().filter_map(|key| {
            key.split_once('/')
                .map(|(ns, name)| (ns.to_string(), name.to_string()))
        }));
        let ctx = crate::apply::ApplyContext {
            prune: true,
            ..crate::apply::ApplyContext::new(GARBAGE_TIMEOUT, self.abandon.child_token())
        };
        match crate::apply::kubernetes::collect_garbage(
            &self.clusters,
            cluster,
            &ours,
            &configured,
            &ctx,
        )
        .await
        {
            Ok(removed) => {
                self.state.update(|st| st.departed.clear());
                // Their status entries were dropped when the state was loaded.
                for (owner, pruned) in removed {
                    tracing::info!(kustomization = %owner, pruned = pruned.len(), "pruned a kustomization removed from the config");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot clean up kustomizations removed from the config")
            }
        }
    }

    /// How long one step of configuration `idx` may take before its loop counts as stuck: the
    /// step's own timeout, its wait for a fetch slot (every other configuration ahead of it
    /// using a whole timeout), and the slack the reconcilers allow beyond a timeout.
    fn step_limit(&self, idx: usize, step: Step) -> Duration {
        let c = &self.settings.configurations[idx];
        let timeout = match step {
            Step::Source => {
                let queue = self
                    .settings
                    .configurations
                    .len()
                    .div_ceil(self.settings.max_concurrent_fetches.max(1));
                c.source
                    .timeout
                    .saturating_mul(u32::try_from(queue).unwrap_or(u32::MAX))
            }
            Step::Kustomization(ki) => c
                .kustomizations
                .get(ki)
                .map_or(Duration::ZERO, |k| k.timeout.saturating_mul(2)),
        };
        timeout.saturating_add(STEP_SLACK)
    }

    async fn configuration_loop(self: Arc<Self>, idx: usize, mut shutdown: watch::Receiver<bool>) {
        let c = &self.settings.configurations[idx];
        let key = source_key(c);
        // Every configuration has one (see `new`); a missing one would only lose the trigger.
        let trigger = self
            .triggers
            .get(&source_key(c))
            .cloned()
            .unwrap_or_default();
        let mut schedule = scheduler::Schedule::new(c, Instant::now(), StdRng::from_os_rng());
        let mut suspension_changes = self.suspension_changes.subscribe();
        let mut failures = failure_log::FailureLog::default();
        self.apply_suspensions(idx, &mut schedule);
        loop {
            let wake = schedule.next_wake();
            let sleep = async {
                match wake {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = sleep => {}
                _ = trigger.notified() => schedule.trigger(),
                _ = suspension_changes.changed() => {}
                _ = shutdown.changed() => {}
            }
            self.apply_suspensions(idx, &mut schedule);
            if *shutdown.borrow() {
                return;
            }
            if schedule.source_due(Instant::now()) {
                self.liveness.busy(&key, self.step_limit(idx, Step::Source));
                let (action, result) = source::reconcile(&self, idx).await;
                log_outcome(&mut failures, "source", &key, action, &result);
                schedule.source_finished(action, Instant::now());
            }
            let current = self.current_artifact(c).map(|a| a.revision);
            let due = schedule.due_kustomizations(Instant::now(), current.as_ref());
            for wave in scheduler::waves(&c.kustomizations, &due) {
                if *shutdown.borrow() {
                    return;
                }
                // Suspended since the pass began: it does not start.
                let wave: Vec<usize> = wave
                    .into_iter()
                    .filter(|&ki| !self.kustomization_suspended(idx, ki))
                    .collect();
                // A wave runs RECONCILE_CONCURRENCY at a time: its limit is that many rounds
                // of its slowest member's.
                let rounds =
                    u32::try_from(wave.len().div_ceil(RECONCILE_CONCURRENCY)).unwrap_or(u32::MAX);
                let limit = wave
                    .iter()
                    .map(|&ki| self.step_limit(idx, Step::Kustomization(ki)))
                    .max()
                    .unwrap_or_default()
                    .saturating_mul(rounds.max(1));
                self.liveness.busy(&key, limit);
                for (ki, (action, result)) in self.reconcile_wave(idx, &wave).await {
                    let object = kustomization_key(c, &c.kustomizations[ki]);
                    log_outcome(&mut failures, "kustomization", &object, action, &result);
                    schedule.kustomization_finished(ki, action, Instant::now());
                }
            }
            schedule.pass_finished();
            debug_stall(&self.liveness, &key).await;
            self.liveness.idle(&key);
        }
    }

    /// Reconciles the kustomizations of one wave (none depends on another) at the same time,
    /// at most [`RECONCILE_CONCURRENCY`] at once: renders run on blocking threads and applies
    /// wait on the network, so one slow kustomization no longer holds up a thousand others.
    async fn reconcile_wave(
        self: &Arc<Self>,
        idx: usize,
        wave: &[usize],
    ) -> Vec<(
        usize,
        (
            scheduler::Action,
            Result<Vec<crate::apply::ObjectResult>, ReconcileError>,
        ),
    )> {
        use futures_util::stream::{self, StreamExt as _};
        // Futures made in a loop, not in a stream closure, for the `Send` check.
        let mut runs = Vec::with_capacity(wave.len());
        for &ki in wave {
            runs.push(async move { (ki, kustomization::reconcile(self, idx, ki).await) });
        }
        stream::iter(runs)
            .buffered(RECONCILE_CONCURRENCY)
            .collect()
            .await
    }

    fn current_artifact(&self, c: &Configuration) -> Option<Artifact> {
        self.state.read(|st| {
            st.sources
                .get(&source_key(c))
                .and_then(|s| s.artifact.clone())
        })
    }

    fn measure_git_cache(&self, idx: usize) {
        let c = &self.settings.configurations[idx];
        if let Some(bytes) = source::git_cache_bytes(&self.settings, c) {
            self.metrics.set_git_cache_bytes(
                &metrics::source_labels(&c.namespace, &c.name, c.source.kind().as_str()),
                bytes,
            );
        }
    }

    fn renderer(&self) -> Result<Arc<Renderer>, ReconcileError> {
        self.renderer
            .get_or_init(|| Renderer::detect().map(Arc::new).map_err(Arc::new))
            .clone()
            .map_err(ReconcileError::NoRenderer)
    }
}

/// What a step may take beyond its timeouts before its loop counts as stuck: reconcilers
/// allow a few seconds past a timeout (extracting, recording), and a watchdog that fires on a
/// merely slow step would restart a healthy daemon.
const STEP_SLACK: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy)]
enum Step {
    Source,
    Kustomization(usize),
}

/// Log a step's outcome the way [`failure_log`] decides: changes at once, repeats ever less
/// often. An interrupted step (gitopsd stopping) says nothing.
fn log_outcome(
    failures: &mut failure_log::FailureLog,
    kind: &str,
    key: &str,
    action: scheduler::Action,
    result: &Result<impl Sized, ReconcileError>,
) {
    use failure_log::Say;
    if action == scheduler::Action::Abandoned {
        return;
    }
    match result {
        Ok(_) => {
            if let Say::Recovered { after } = failures.succeeded(key) {
                tracing::info!(object = %key, "{kind} recovered after {after} failed attempts");
            }
        }
        Err(e) => match failures.failed(key, &e.to_string()) {
            Say::Failed => tracing::warn!(object = %key, error = %e, "{kind} failed"),
            Say::StillFailing { streak } => tracing::warn!(
                object = %key,
                error = %e,
                "{kind} still failing ({streak} attempts in a row; logged less and less often)"
            ),
            Say::Nothing | Say::Recovered { .. } => {}
        },
    }
}

/// Fault injection for the watchdog's test, compiled into debug builds only: with
/// `GITOPSD_DEBUG_STALL_LOOPS=1` every configuration loop, after its first pass, hangs in a
/// step that never ends (as a loop stuck on a lost wakeup would), so the test can see the
/// pings stop. Every real step is bounded, so a real stall cannot be produced on demand.
async fn debug_stall(liveness: &supervise::Liveness, key: &str) {
    #[cfg(debug_assertions)]
    if std::env::var_os("GITOPSD_DEBUG_STALL_LOOPS").is_some_and(|v| v == "1") {
        liveness.busy(key, Duration::from_secs(1));
        std::future::pending::<()>().await;
    }
    let _ = (liveness, key);
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
