//! Durable state: what every source and kustomization last did, kept in
//! `<stateDir>/state.json` so that a restart serves the last good artifacts at once.
//!
//! Writes are coalesced. Statuses change in memory under a lock; an update that changed
//! something the file holds bumps a generation, and one writer task serialises the whole state
//! and replaces the file atomically (temp file, fsync, rename) on a blocking thread, once for
//! any number of changes that arrived while it was busy. A poll that changes nothing durable
//! writes nothing: the time of the last attempt and of the last success are kept in memory
//! (the status API shows them) and reach the file with the next real change; counters are not
//! state at all (see `reconcile::metrics`). A `kill -9` leaves either the old file or the new
//! one, and either is a valid point to continue from; a stop flushes it first.
//!
//! The file format is unchanged from earlier versions, which also wrote per-source `metrics`:
//! such a file loads (the block is dropped) and the next write leaves it out.

pub mod dir;
pub mod suspensions;

pub use dir::{ScratchDir, StateDir, StateDirError};
pub use suspensions::{Suspendable, Suspensions, SuspensionsError};

use crate::apply::Inventory;
use crate::artifact::Artifact;
use crate::vocab::Revision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::{watch, Notify};

/// RFC 3339 in UTC, second precision.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Kubernetes-style condition, so that Flux users read it the way they are used to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub name: String,
    pub namespace: String,
    pub kind: String,
    /// Credentials removed.
    pub url: String,
    pub revision: Option<Revision>,
    pub artifact: Option<Artifact>,
    /// Digest of the settings that shape the artifact (URL, ref, ignore rules): when it
    /// changes, the next fetch packs again even if the commit did not move.
    pub settings_digest: String,
    pub suspended: bool,
    pub conditions: Vec<Condition>,
    pub last_error: Option<String>,
    pub last_attempt_time: Option<String>,
    pub last_success_time: Option<String>,
    /// Counters of this run, filled in by the status API from the engine's metrics; never
    /// stored (a file from an older version may hold them: they are dropped at load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SourceMetrics>,
    /// The public half of the SSH key gitopsd generated for this source (an ssh URL without a
    /// configured key), for the user to add as a deploy key. Filled in by the status API from
    /// `<stateDir>/keys/`, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_public_key: Option<String>,
}

/// Counters the status API shows for a source (`/metrics` exports the same values).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceMetrics {
    pub fetches_total: u64,
    pub fetch_errors_total: u64,
    /// Polls that found the remote unchanged and downloaded nothing.
    pub unchanged_total: u64,
    pub fetch_seconds_sum: f64,
    pub last_fetch_seconds: f64,
    /// Unix time of the last successful fetch, 0 if none.
    pub last_success_timestamp: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    pub name: String,
    /// The configuration (and source) it belongs to.
    pub configuration: String,
    pub namespace: String,
    pub path: String,
    /// Where its objects go, as its target describes itself (a directory target: the file it
    /// writes). Earlier versions stored a path here; it reads the same.
    pub target: Option<String>,
    pub last_applied_revision: Option<Revision>,
    pub last_attempted_revision: Option<Revision>,
    pub objects: usize,
    pub inventory: Inventory,
    /// What the last successful apply did to each object (created, configured, unchanged,
    /// pruned, skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_apply: Vec<crate::apply::ObjectResult>,
    pub suspended: bool,
    pub conditions: Vec<Condition>,
    pub last_error: Option<String>,
    pub last_success_time: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// Keyed by `<namespace>/<name>`.
    pub sources: BTreeMap<String, SourceStatus>,
    /// Keyed by `<namespace>/<configuration>/<name>`.
    pub kustomizations: BTreeMap<String, KustomizationStatus>,
    /// Configurations (`<namespace>/<name>`) that lost kustomizations (or left the config)
    /// and whose inventories in the cluster still wait to be cleaned up.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub departed: std::collections::BTreeSet<String>,
}

/// A status whose file form ignores some fields (times that change at every poll).
trait Durable: Clone + Default {
    /// Equal in what the file must hold.
    fn durably_equal(&self, other: &Self) -> bool;
}

impl Durable for SourceStatus {
    /// Everything but the times of the last attempt and success, which change at every poll.
    fn durably_equal(&self, other: &SourceStatus) -> bool {
        let volatile = |s: &SourceStatus| SourceStatus {
            last_attempt_time: None,
            last_success_time: None,
            metrics: None,
            repository_public_key: None,
            ..s.clone()
        };
        volatile(self) == volatile(other)
    }
}

impl Durable for KustomizationStatus {
    fn durably_equal(&self, other: &KustomizationStatus) -> bool {
        let volatile = |k: &KustomizationStatus| KustomizationStatus {
            last_success_time: None,
            ..k.clone()
        };
        volatile(self) == volatile(other)
    }
}

/// The state behind a lock, with its file and its writer.
pub struct StateStore {
    path: PathBuf,
    state: RwLock<State>,
    /// Bumped by every update that changed what the file holds.
    changed: AtomicU64,
    /// The generation the file holds (sent by the writer after each write).
    written: watch::Sender<u64>,
    /// Wakes the writer.
    wake: Arc<Notify>,
    /// Files written so far, for tests and logs.
    writes: AtomicU64,
    /// A writer task runs (the store was opened within a tokio runtime).
    has_writer: AtomicBool,
}

impl StateStore {
    /// Load `<state_dir>/state.json`, or start empty. An unreadable file is kept aside
    /// (renamed `.corrupt`) rather than deleted, and the daemon starts fresh.
    ///
    /// Within a tokio runtime, a writer task is started; without one, every change is written
    /// at once, synchronously.
    pub fn open(state_dir: &Path) -> Arc<StateStore> {
        let path = state_dir.join("state.json");
        let mut state: State = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "state file unreadable, starting fresh");
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                State::default()
            }),
            Err(_) => State::default(),
        };
        for s in state.sources.values_mut() {
            s.metrics = None;
        }
        let store = Arc::new(StateStore {
            path,
            state: RwLock::new(state),
            changed: AtomicU64::new(0),
            written: watch::Sender::new(0),
            wake: Arc::new(Notify::new()),
            writes: AtomicU64::new(0),
            has_writer: AtomicBool::new(false),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            store.has_writer.store(true, Ordering::SeqCst);
            runtime.spawn(writer(Arc::downgrade(&store), store.wake.clone()));
        }
        store
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Change the state as a whole (start-up: the set of objects). Written when the change
    /// touched anything durable.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let (result, changed) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let before = state.clone();
            let result = f(&mut state);
            let changed = before.sources.len() != state.sources.len()
                || before.kustomizations.len() != state.kustomizations.len()
                || before.departed != state.departed
                || state.sources.iter().any(|(key, s)| {
                    before
                        .sources
                        .get(key)
                        .is_none_or(|old| !old.durably_equal(s))
                })
                || state.kustomizations.iter().any(|(key, k)| {
                    before
                        .kustomizations
                        .get(key)
                        .is_none_or(|old| !old.durably_equal(k))
                });
            (result, changed)
        };
        if changed {
            self.mark_changed();
        }
        result
    }

    /// Change one source's status (created if absent); written only when it changed durably.
    pub fn update_source<R>(&self, key: &str, f: impl FnOnce(&mut SourceStatus) -> R) -> R {
        self.update_entry(|state| &mut state.sources, key, f)
    }

    /// Change one kustomization's status (created if absent); written only when it changed
    /// durably.
    pub fn update_kustomization<R>(
        &self,
        key: &str,
        f: impl FnOnce(&mut KustomizationStatus) -> R,
    ) -> R {
        self.update_entry(|state| &mut state.kustomizations, key, f)
    }

    fn update_entry<T: Durable, R>(
        &self,
        map: impl FnOnce(&mut State) -> &mut BTreeMap<String, T>,
        key: &str,
        f: impl FnOnce(&mut T) -> R,
    ) -> R {
        let (result, changed) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let entries = map(&mut state);
            let existed = entries.contains_key(key);
            let status = entries.entry(key.to_string()).or_default();
            let before = status.clone();
            let result = f(status);
            (result, !existed || !before.durably_equal(status))
        };
        if changed {
            self.mark_changed();
        }
        result
    }

    /// How many times the file was written since this store was opened.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Wait until the file holds every change made so far (before a stop or the end of a
    /// `--once` pass).
    pub async fn flush(&self) {
        let target = self.changed.load(Ordering::SeqCst);
        let mut written = self.written.subscribe();
        if *written.borrow_and_update() >= target {
            return;
        }
        self.wake.notify_one();
        // The writer lives as long as the store; `wait_for` only fails if it is gone, and
        // then there is nothing left to wait for.
        let _ = written.wait_for(|w| *w >= target).await;
    }

    fn mark_changed(&self) {
        self.changed.fetch_add(1, Ordering::SeqCst);
        if self.has_writer.load(Ordering::SeqCst) {
            self.wake.notify_one();
        } else {
            // No writer task (no runtime): write now, on this thread.
            self.write_now();
        }
    }

    /// Serialise and replace the file; returns the generation written. Blocking.
    fn write_now(&self) -> u64 {
        let (generation, bytes) = {
            let state = self.state.read().unwrap_or_else(|p| p.into_inner());
            // Read under the lock, so the bytes hold at least this generation.
            let generation = self.changed.load(Ordering::SeqCst);
            (generation, serde_json::to_vec_pretty(&*state))
        };
        let result = bytes
            .map_err(std::io::Error::other)
            // 0600: errors and URLs are redacted, but the file is the daemon's alone anyway.
            .and_then(|b| crate::atomic::write_private(&self.path, &b));
        match result {
            Ok(()) => {
                self.writes.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot persist state")
            }
        }
        // Counted as written even on failure: the next change tries again, and a flush must
        // not wait forever on a disk that refuses writes.
        self.written.send_replace(generation);
        generation
    }
}

/// The writer task: wakes on a change, writes on a blocking thread, and goes back to sleep;
/// changes that arrive during a write make one more write after it. Ends when the store is
/// dropped.
async fn writer(store: std::sync::Weak<StateStore>, wake: Arc<Notify>) {
    loop {
        wake.notified().await;
        let Some(current) = store.upgrade() else {
            return;
        };
        if *current.written.borrow() >= current.changed.load(Ordering::SeqCst) {
            continue;
        }
        let job = tokio::task::spawn_blocking(move || current.write_now());
        if let Err(e) = job.await {
            tracing::error!(error = %e, "state writer failed");
        }
    }
}

/// Set (or replace) the condition of `kind`, keeping its transition time when the status
/// did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
) {
    let status = if ok { "True" } else { "False" };
    let now = now_rfc3339();
    match conditions.iter_mut().find(|c| c.kind == kind) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.into();
            c.reason = reason.into();
            c.message = message.into();
        }
        None => conditions.push(Condition {
            kind: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
        }),
    }
}

#[cfg(test)]
mod tests;
