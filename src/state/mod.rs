//! Durable state: what every source and kustomization last did, kept in
//! `<stateDir>/state.json` so that a restart serves the last good artifacts at once.
//!
//! The file is rewritten atomically after every change; a `kill -9` leaves either the old or
//! the new state, and either is a valid point to continue from.

pub mod dir;

pub use dir::{ScratchDir, StateDir, StateDirError};

use crate::apply::Inventory;
use crate::artifact::Artifact;
use crate::vocab::Revision;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    pub metrics: SourceMetrics,
    /// The public half of the SSH key gitopsd generated for this source (an ssh URL without a
    /// configured key), for the user to add as a deploy key. Filled in by the status API from
    /// `<stateDir>/keys/`, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository_public_key: Option<String>,
}

/// Counters exported on `/metrics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KustomizationStatus {
    pub name: String,
    /// The configuration (and source) it belongs to.
    pub configuration: String,
    pub namespace: String,
    pub path: String,
    pub target: Option<PathBuf>,
    pub last_applied_revision: Option<Revision>,
    pub last_attempted_revision: Option<Revision>,
    pub objects: usize,
    pub inventory: Inventory,
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
}

/// The state behind a lock, with its file.
pub struct StateStore {
    path: PathBuf,
    state: RwLock<State>,
    /// Serialises writers of the file so that an older snapshot never overwrites a newer one.
    write_lock: std::sync::Mutex<()>,
}

impl StateStore {
    /// Load `<state_dir>/state.json`, or start empty. An unreadable file is kept aside
    /// (renamed `.corrupt`) rather than deleted, and the daemon starts fresh.
    pub fn open(state_dir: &Path) -> Arc<StateStore> {
        let path = state_dir.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "state file unreadable, starting fresh");
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                State::default()
            }),
            Err(_) => State::default(),
        };
        Arc::new(StateStore {
            path,
            state: RwLock::new(state),
            write_lock: std::sync::Mutex::new(()),
        })
    }

    pub fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Change the state and persist it.
    pub fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let _w = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (result, bytes) = {
            let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
            let result = f(&mut state);
            (result, serde_json::to_vec_pretty(&*state))
        };
        match bytes
            .map_err(std::io::Error::other)
            // 0600: errors and URLs are redacted, but the file is the daemon's alone anyway.
            .and_then(|b| crate::atomic::write_private(&self.path, &b))
        {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot persist state")
            }
        }
        result
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
