//! What the engine tells its supervisor (systemd): that its loops are alive, and a one-line
//! summary a person reads in `systemctl status`.
//!
//! **Liveness.** systemd's watchdog restarts a service that stops sending `WATCHDOG=1`. A timer
//! that pings on its own would keep pinging while every configuration loop hangs, which is the
//! very failure the watchdog exists for. So each configuration loop reports where it is: idle
//! (waiting for its next due time, a trigger or shutdown), or busy with one step since an
//! instant, with a limit that step can never legitimately exceed (its timeout and the slack
//! the reconcilers allow beyond it). The supervising loop pings only while no loop has been
//! busy beyond its limit; a loop stuck on an await that never completes, or a runtime whose
//! threads are all blocked, stops the pings, and systemd restarts the service.
//!
//! **Status line.** `12 sources ready, 1 failing: fleet (authentication failed)`, computed from
//! the statuses every tick and sent only when it changed, so the journal of notifications
//! stays quiet on an idle node.

use crate::state::State;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who hears about the engine's health: systemd through `NOTIFY_SOCKET`, or nobody.
pub trait Supervisor: Send + Sync {
    /// How often it wants to hear that the loops are alive; `None`: never.
    fn watchdog_interval(&self) -> Option<Duration>;
    /// The loops are alive.
    fn alive(&self);
    /// A new summary line.
    fn status(&self, line: &str);
}

/// Nobody listens: `run` without a supervisor.
pub struct Unsupervised;

impl Supervisor for Unsupervised {
    fn watchdog_interval(&self) -> Option<Duration> {
        None
    }
    fn alive(&self) {}
    fn status(&self, _line: &str) {}
}

/// Where one configuration loop is.
#[derive(Debug, Clone, Copy)]
enum Beat {
    Idle,
    Busy { since: Instant, limit: Duration },
}

/// The beats of every configuration loop, by `<namespace>/<name>`: a reload replaces
/// engines, not the loops of unchanged configurations, so an index would not do.
#[derive(Debug, Default)]
pub struct Liveness {
    beats: Mutex<HashMap<String, Beat>>,
}

/// A loop busy longer than its limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stuck {
    /// The configuration, `<namespace>/<name>`.
    pub key: String,
    pub busy_for: Duration,
}

impl Liveness {
    /// The loop of configuration `key` starts a step that ends within `limit`.
    pub fn busy(&self, key: &str, limit: Duration) {
        self.set(
            key,
            Some(Beat::Busy {
                since: Instant::now(),
                limit,
            }),
        );
    }

    /// The loop of `key` waits for its next turn.
    pub fn idle(&self, key: &str) {
        self.set(key, Some(Beat::Idle));
    }

    /// The loop of `key` ended.
    pub fn forget(&self, key: &str) {
        self.set(key, None);
    }

    fn set(&self, key: &str, beat: Option<Beat>) {
        // A poisoned lock only means a panic elsewhere; the beats are plain values.
        let mut beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        match beat {
            Some(beat) => {
                beats.insert(key.to_string(), beat);
            }
            None => {
                beats.remove(key);
            }
        }
    }

    /// A loop that has been busy beyond its limit at `now`.
    pub fn stuck(&self, now: Instant) -> Option<Stuck> {
        let beats = self.beats.lock().unwrap_or_else(|e| e.into_inner());
        beats.iter().find_map(|(key, beat)| match *beat {
            Beat::Busy { since, limit } if now.saturating_duration_since(since) > limit => {
                Some(Stuck {
                    key: key.clone(),
                    busy_for: now.saturating_duration_since(since),
                })
            }
            _ => None,
        })
    }
}

/// How many names a status line lists before it says "and N more".
const NAMES_SHOWN: usize = 3;

/// The status line: ready and failing sources, failing kustomizations, suspended objects.
pub fn summary(state: &State) -> String {
    let active = state.sources.values().filter(|s| !s.suspended);
    let (mut ready, mut pending) = (0usize, 0usize);
    let mut failing = Vec::new();
    for s in active {
        match (&s.last_error, &s.artifact) {
            (Some(error), _) => failing.push(format!("{} ({})", s.name, reason(error))),
            (None, Some(_)) => ready += 1,
            (None, None) => pending += 1,
        }
    }
    let mut line = format!("{ready} {} ready", plural(ready, "source", "sources"));
    if pending > 0 {
        line.push_str(&format!(", {pending} waiting for a first sync"));
    }
    if !failing.is_empty() {
        line.push_str(&format!(", {} failing: {}", failing.len(), names(&failing)));
    }
    let failing_kustomizations: Vec<String> = state
        .kustomizations
        .values()
        .filter(|k| !k.suspended)
        .filter_map(|k| {
            let error = k.last_error.as_ref()?;
            Some(format!(
                "{}/{} ({})",
                k.configuration,
                k.name,
                reason(error)
            ))
        })
        .collect();
    if !failing_kustomizations.is_empty() {
        line.push_str(&format!(
            "; {} {} failing: {}",
            failing_kustomizations.len(),
            plural(
                failing_kustomizations.len(),
                "kustomization",
                "kustomizations"
            ),
            names(&failing_kustomizations)
        ));
    }
    let suspended = state.sources.values().filter(|s| s.suspended).count()
        + state
            .kustomizations
            .values()
            .filter(|k| k.suspended)
            .count();
    if suspended > 0 {
        line.push_str(&format!("; {suspended} suspended"));
    }
    line
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

fn names(items: &[String]) -> String {
    let mut shown = items
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > NAMES_SHOWN {
        shown.push_str(&format!(" and {} more", items.len() - NAMES_SHOWN));
    }
    shown
}

/// The cause at the end of an error sentence, short enough for a status line. Errors reach the
/// state as display text (the typed error lives only during the reconcile), and their sentences
/// end in the cause (`cannot fetch from URL: authentication failed (HTTP 401)`): the part after
/// the last `": "` that is not inside the URL is the one a person needs in a one-line summary.
fn reason(error: &str) -> String {
    const MAX: usize = 80;
    let first_line = error.lines().next().unwrap_or_default();
    let cause = first_line
        .rsplit(": ")
        .find(|part| !part.trim().is_empty())
        .unwrap_or(first_line)
        .trim();
    let cause = crate::escape::control(cause);
    if cause.chars().count() > MAX {
        let cut: String = cause.chars().take(MAX - 1).collect();
        format!("{cut}…")
    } else {
        cause.into_owned()
    }
}

/// Records what was last sent, so that a status is sent once per change.
#[derive(Debug, Default)]
pub struct StatusLine {
    last: Option<String>,
}

impl StatusLine {
    /// `Some(line)` when it differs from the one sent before.
    pub fn changed(&mut self, line: String) -> Option<String> {
        if self.last.as_deref() == Some(line.as_str()) {
            return None;
        }
        self.last = Some(line.clone());
        Some(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{KustomizationStatus, SourceStatus};

    fn source(name: &str, artifact: bool, error: Option<&str>) -> SourceStatus {
        SourceStatus {
            name: name.into(),
            artifact: artifact.then(|| crate::artifact::Artifact {
                path: "/x".into(),
                url_path: String::new(),
                revision: crate::vocab::Revision("main@sha1:1".into()),
                digest: "sha256:1".into(),
                size: 1,
                last_update: String::new(),
            }),
            last_error: error.map(str::to_string),
            ..SourceStatus::default()
        }
    }

    #[test]
    fn the_summary_names_failing_sources_with_their_cause() {
        let mut state = State::default();
        for i in 0..12 {
            state.sources.insert(
                format!("default/s{i}"),
                source(&format!("s{i}"), true, None),
            );
        }
        state.sources.insert(
            "default/fleet".into(),
            source(
                "fleet",
                true,
                Some("cannot fetch from https://git.example.com/fleet: authentication failed"),
            ),
        );
        assert_eq!(
            summary(&state),
            "12 sources ready, 1 failing: fleet (authentication failed)"
        );
        state.kustomizations.insert(
            "default/fleet/apps".into(),
            KustomizationStatus {
                name: "apps".into(),
                configuration: "fleet".into(),
                last_error: Some("kustomize build failed: no such file".into()),
                ..KustomizationStatus::default()
            },
        );
        let mut suspended = source("old", false, None);
        suspended.suspended = true;
        state.sources.insert("default/old".into(), suspended);
        state
            .sources
            .insert("default/new".into(), source("new", false, None));
        assert_eq!(
            summary(&state),
            "12 sources ready, 1 waiting for a first sync, 1 failing: fleet (authentication \
             failed); 1 kustomization failing: fleet/apps (no such file); 1 suspended"
        );
    }

    #[test]
    fn a_status_line_is_sent_once_per_change() {
        let mut line = StatusLine::default();
        assert_eq!(line.changed("a".into()), Some("a".into()));
        assert_eq!(line.changed("a".into()), None);
        assert_eq!(line.changed("b".into()), Some("b".into()));
    }

    #[test]
    fn a_loop_busy_beyond_its_limit_is_stuck_and_an_idle_one_never() {
        let liveness = Liveness::default();
        let now = Instant::now();
        liveness.idle("default/a");
        assert_eq!(liveness.stuck(now + Duration::from_secs(3600)), None);
        liveness.busy("default/b", Duration::from_secs(10));
        assert_eq!(liveness.stuck(Instant::now()), None);
        let stuck = liveness.stuck(Instant::now() + Duration::from_secs(11));
        assert_eq!(stuck.map(|s| s.key), Some("default/b".to_string()));
        liveness.idle("default/b");
        assert_eq!(
            liveness.stuck(Instant::now() + Duration::from_secs(11)),
            None
        );
        liveness.busy("default/b", Duration::from_secs(10));
        liveness.forget("default/b");
        assert_eq!(
            liveness.stuck(Instant::now() + Duration::from_secs(11)),
            None
        );
    }
}
