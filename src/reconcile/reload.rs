//! Hot reload: the running daemon takes a new config without a restart, and only what changed
//! restarts.
//!
//! An [`Engine`] holds one immutable [`Settings`] and its reconcile functions index into it, so
//! a reload does not mutate an engine: it makes a successor that shares everything
//! process-wide (state dir lock, statuses, counters, fetch slots, cancellation) and takes over
//! the per-configuration parts of the configurations it keeps. The [`Daemon`] owns the current
//! engine (what the API reads) and one task per configuration loop, and on a reload compares
//! each configuration's fingerprint with the one its loop runs:
//!
//! - unchanged: the loop is left alone, on the engine it started with (whose settings still
//!   hold that configuration), with its schedule, backoff and any sync in flight;
//! - changed: the old loop is told to stop; its in-flight step finishes (a fetch within its
//!   timeout) and the new loop, on the new engine, starts right after it, so two loops never
//!   work on one configuration;
//! - removed: its loop stops the same way and its statuses leave the state;
//! - new: a loop starts at once.
//!
//! A fingerprint is the parsed configuration (its `Debug` form) plus its raw YAML and the
//! top-level sections every configuration inherits (`render`, `kubernetes`): `Debug` never
//! shows a secret, and the raw text is what tells an inline secret's change apart. A config
//! that fails validation, or that moves the state dir, is rejected as a whole and the running
//! one stays; the status API and `gitopsd_config_last_reload_successful` say so.

use super::supervise::{self, Supervisor};
use super::{source_key, Engine};
use crate::config::Settings;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How often the supervising loop looks at the loops and the status line.
const SUPERVISE_TICK: Duration = Duration::from_secs(1);

/// Why a reload was rejected; the running config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Every problem, one `file:line:col: message` line each.
    #[error("{0}")]
    Invalid(crate::config::Diagnostics),
    #[error(
        "stateDir cannot change while gitopsd runs (from {} to {}); restart gitopsd to move it",
        from.display(),
        to.display()
    )]
    StateDirChanged { from: PathBuf, to: PathBuf },
}

/// The outcome of the last reload, shown by the status API.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReloadStatus {
    /// RFC 3339.
    pub time: String,
    pub succeeded: bool,
    /// Why it was rejected (the problems, with file:line:col).
    pub error: Option<String>,
}

/// What a successful reload changes, by `<namespace>/<name>`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    pub unchanged: usize,
    /// The API's listen address or protection changed: the server must be restarted.
    pub server_changed: bool,
}

struct Current {
    engine: Arc<Engine>,
    fingerprints: HashMap<String, String>,
    /// The `server` section's fingerprint: its parsed form and its raw text (an inline token
    /// shows in the latter only).
    server: String,
}

/// The running daemon: its current engine, the configuration loops, the last reload.
pub struct Daemon {
    current: RwLock<Current>,
    /// Bumped at every successful reload: wakes [`Daemon::run`].
    generation: watch::Sender<u64>,
    last_reload: Mutex<Option<ReloadStatus>>,
}

impl Daemon {
    /// `text` is the config file `engine` was made from (for the fingerprints).
    pub fn new(engine: Arc<Engine>, text: &str) -> Arc<Daemon> {
        let fingerprints = fingerprints(engine.settings(), text);
        let server = server_fingerprint(engine.settings(), text);
        Arc::new(Daemon {
            current: RwLock::new(Current {
                engine,
                fingerprints,
                server,
            }),
            generation: watch::Sender::new(0),
            last_reload: Mutex::new(None),
        })
    }

    /// The engine of the config in force.
    pub fn engine(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .engine
            .clone()
    }

    pub fn last_reload(&self) -> Option<ReloadStatus> {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Read and check `path` again and, when it is valid, put it in force. Blocking: it
    /// reads the file and updates the statuses.
    pub fn reload(&self, path: &Path) -> Result<ReloadPlan, ReloadError> {
        let outcome = read_config(path).and_then(|(text, settings)| {
            let current = self.engine();
            if settings.state_dir != current.settings().state_dir {
                return Err(ReloadError::StateDirChanged {
                    from: current.settings().state_dir.clone(),
                    to: settings.state_dir,
                });
            }
            Ok(self.put_in_force(&current, settings, &text))
        });
        let engine = self.engine();
        engine
            .metrics()
            .record_reload(outcome.is_ok(), crate::state::unix_now());
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(ReloadStatus {
            time: crate::state::now_rfc3339(),
            succeeded: outcome.is_ok(),
            error: outcome.as_ref().err().map(|e| e.to_string()),
        });
        outcome
    }

    fn put_in_force(&self, current: &Arc<Engine>, settings: Settings, text: &str) -> ReloadPlan {
        let old = current.settings();
        if settings.max_concurrent_fetches != old.max_concurrent_fetches {
            tracing::warn!(
                "maxConcurrentFetches changed; the new limit takes effect at the next restart"
            );
        }
        let fingerprints = fingerprints(&settings, text);
        let server = server_fingerprint(&settings, text);
        let (previous, previous_server) = {
            let current = self.current.read().unwrap_or_else(|e| e.into_inner());
            (current.fingerprints.clone(), current.server.clone())
        };
        let mut plan = ReloadPlan {
            server_changed: server != previous_server,
            ..ReloadPlan::default()
        };
        for (key, print) in &fingerprints {
            match previous.get(key) {
                None => plan.added.push(key.clone()),
                Some(p) if p != print => plan.changed.push(key.clone()),
                Some(_) => plan.unchanged += 1,
            }
        }
        plan.removed = previous
            .keys()
            .filter(|k| !fingerprints.contains_key(*k))
            .cloned()
            .collect();
        plan.added.sort();
        plan.changed.sort();
        plan.removed.sort();
        let engine = Arc::new(current.successor(settings));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Current {
            engine,
            fingerprints,
            server,
        };
        self.generation.send_modify(|g| *g += 1);
        plan
    }

    /// Run every configuration loop until `shutdown` turns true, following reloads, and tell
    /// `supervisor` that the loops are alive (only while none is stuck) and what the status
    /// line says whenever it changes. In-flight steps finish (they write atomically, so even
    /// an abandoned one leaves no half-written file); then the state is flushed.
    pub async fn run(
        self: &Arc<Self>,
        shutdown: watch::Receiver<bool>,
        supervisor: Arc<dyn Supervisor>,
    ) {
        {
            // Fetches do not watch `shutdown` themselves: they end on `stopping`, which every
            // engine of this daemon shares.
            let engine = self.engine();
            let mut shutdown = shutdown.clone();
            tokio::spawn(async move {
                let _ = shutdown.wait_for(|s| *s).await;
                engine.stopping.cancel();
            });
        }
        let mut loops = Loops::default();
        let mut reloads = self.generation.subscribe();
        loops.follow(self);
        self.engine().start_background();
        let mut status = supervise::StatusLine::default();
        let mut last_alive: Option<Instant> = None;
        let mut reported_stuck = false;
        let mut tick = tokio::time::interval(SUPERVISE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // With no configuration at all (the packaged default config), the daemon still
        // serves and must still ping: this loop runs until shutdown, not until the loops end.
        let mut stop = shutdown.clone();
        loop {
            tokio::select! {
                changed = reloads.changed() => if changed.is_ok() {
                    loops.follow(self);
                    // Kustomizations the reload removed are pruned when they asked for it.
                    self.engine().start_background();
                },
                changed = stop.changed() => if changed.is_err() || *stop.borrow() { break },
                _ = tick.tick() => {}
            }
            if *stop.borrow() {
                break;
            }
            let engine = self.engine();
            if let Some(line) = status.changed(engine.state.read(supervise::summary)) {
                supervisor.status(&line);
            }
            let Some(every) = supervisor.watchdog_interval() else {
                continue;
            };
            let now = Instant::now();
            match engine.liveness.stuck(now) {
                None => {
                    reported_stuck = false;
                    if last_alive.is_none_or(|at| now.saturating_duration_since(at) >= every) {
                        supervisor.alive();
                        last_alive = Some(now);
                    }
                }
                Some(stuck) if !reported_stuck => {
                    reported_stuck = true;
                    tracing::error!(
                        configuration = %stuck.key,
                        busy_for = %humantime::format_duration(Duration::from_secs(stuck.busy_for.as_secs())),
                        "a configuration's loop is stuck in one step, beyond every timeout it \
                         has: no longer telling the watchdog that gitopsd is alive"
                    );
                }
                Some(_) => {}
            }
        }
        loops.stop_all().await;
        self.engine().flush().await;
    }
}

/// One configuration loop.
struct Loop {
    fingerprint: String,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// The running loops by `<namespace>/<name>`, and those told to stop that may still be
/// finishing a step.
#[derive(Default)]
struct Loops {
    running: HashMap<String, Loop>,
    retiring: Vec<JoinHandle<()>>,
}

impl Loops {
    /// Make the loops match the daemon's current engine (see the module doc).
    fn follow(&mut self, daemon: &Arc<Daemon>) {
        let (engine, fingerprints) = {
            let current = daemon.current.read().unwrap_or_else(|e| e.into_inner());
            (current.engine.clone(), current.fingerprints.clone())
        };
        let wanted: Vec<String> = engine
            .settings()
            .configurations
            .iter()
            .map(source_key)
            .collect();
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|k| !wanted.contains(k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.running.remove(&key) {
                tracing::info!(configuration = %key, "configuration removed: stopping its loop");
                let _ = old.stop.send(true);
                let daemon = daemon.clone();
                self.retiring.push(tokio::spawn(async move {
                    let _ = old.handle.await;
                    // Its last step may have written its status again after the reload
                    // dropped it; unless a later reload brought it back, it goes now.
                    let engine = daemon.engine();
                    engine.liveness.forget(&key);
                    let back = engine
                        .settings()
                        .configurations
                        .iter()
                        .any(|c| source_key(c) == key);
                    if !back {
                        let prefix = format!("{key}/");
                        engine.state.update(|st| {
                            st.sources.remove(&key);
                            st.kustomizations.retain(|k, _| !k.starts_with(&prefix));
                        });
                    }
                }));
            }
        }
        for (idx, key) in wanted.into_iter().enumerate() {
            let fingerprint = fingerprints.get(&key).cloned().unwrap_or_default();
            let previous = match self.running.remove(&key) {
                Some(old) if old.fingerprint == fingerprint => {
                    self.running.insert(key, old);
                    continue;
                }
                Some(old) => {
                    tracing::info!(configuration = %key, "configuration changed: restarting its loop");
                    let _ = old.stop.send(true);
                    Some(old.handle)
                }
                None => None,
            };
            let (stop, stopped) = watch::channel(false);
            let engine = engine.clone();
            let handle = tokio::spawn(async move {
                // The old loop finishes its step first: one loop per configuration at a time.
                if let Some(previous) = previous {
                    let _ = previous.await;
                }
                engine.configuration_loop(idx, stopped).await;
            });
            self.running.insert(
                key,
                Loop {
                    fingerprint,
                    stop,
                    handle,
                },
            );
        }
    }

    async fn stop_all(self) {
        for l in self.running.values() {
            let _ = l.stop.send(true);
        }
        for l in self.running.into_values() {
            let _ = l.handle.await;
        }
        for handle in self.retiring {
            let _ = handle.await;
        }
    }
}

/// The config file's text and settings, or every problem in it.
pub fn read_config(path: &Path) -> Result<(String, Settings), ReloadError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| {
        f.take(crate::config::MAX_CONFIG_BYTES + 1)
            .read_to_end(&mut bytes)
    });
    match (read, String::from_utf8(bytes)) {
        (Ok(_), Ok(text)) if text.len() as u64 <= crate::config::MAX_CONFIG_BYTES => {
            let base_dir = match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            let settings =
                crate::config::load_str(&text, path, base_dir).map_err(ReloadError::Invalid)?;
            Ok((text, settings))
        }
        // Unreadable, too large or not text: the loader words each case.
        _ => match crate::config::load(path) {
            Err(diagnostics) => Err(ReloadError::Invalid(diagnostics)),
            Ok(settings) => {
                // It became readable in between: take it as it is now.
                let text = std::fs::read_to_string(path).unwrap_or_default();
                Ok((text, settings))
            }
        },
    }
}

/// The API server's settings as a comparable string (see [`Current::server`]).
fn server_fingerprint(settings: &Settings, text: &str) -> String {
    let raw: serde_json::Value = serde_saphyr::from_str(text).unwrap_or(serde_json::Value::Null);
    format!(
        "{} {:?}\n{}",
        settings.listen, settings.server, raw["server"]
    )
}

/// Each configuration's fingerprint by `<namespace>/<name>` (see the module doc).
pub fn fingerprints(settings: &Settings, text: &str) -> HashMap<String, String> {
    // The file passed validation already, within its size and alias limits.
    let raw: serde_json::Value = serde_saphyr::from_str(text).unwrap_or(serde_json::Value::Null);
    let inherited = format!("{}{}", raw["render"], raw["kubernetes"]);
    let items = raw["configurations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    settings
        .configurations
        .iter()
        .map(|c| {
            let item = items
                .iter()
                .find(|i| {
                    i["name"].as_str() == Some(c.name.as_str())
                        && i["namespace"].as_str().unwrap_or("default") == c.namespace
                })
                .map(|i| i.to_string())
                .unwrap_or_default();
            (
                source_key(c),
                format!("{c:?}\n{item}\n{inherited}\n{:?}", settings.kubernetes),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(text: &str) -> Settings {
        crate::config::load_str(text, Path::new("gitopsd.yaml"), Path::new("/etc/gitopsd")).unwrap()
    }

    const BASE: &str = "configurations:\n  - name: a\n    source: { kind: git, url: https://example.com/a }\n  - name: b\n    source: { kind: git, url: https://example.com/b, httpsUser: u, httpsKey: one }\n";

    #[test]
    fn fingerprints_change_with_the_configuration_and_its_inline_secrets_only() {
        let before = fingerprints(&settings(BASE), BASE);
        let edited = BASE.replace("httpsKey: one", "httpsKey: two");
        let after = fingerprints(&settings(&edited), &edited);
        assert_eq!(before["default/a"], after["default/a"]);
        assert_ne!(
            before["default/b"], after["default/b"],
            "an inline secret changed"
        );
        let render = format!("render: {{ remoteBases: false }}\n{BASE}");
        let inherited = fingerprints(&settings(&render), &render);
        assert_ne!(
            before["default/a"], inherited["default/a"],
            "top-level render"
        );
    }
}
