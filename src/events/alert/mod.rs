//! Alerts: the engine reports what happened as [`Event`]s (Flux's event fields), and
//! [`Alerts::emit`] routes each to the providers whose alerts select it, without ever
//! waiting:
//!
//! - **selection** ([`selects`]): an alert takes an event when it is not suspended, its
//!   `eventSeverity` admits the event's (`info` takes both), one of its `eventSources` matches
//!   the involved object (`*` wildcards in kind, name and namespace), at least one
//!   `inclusionList` regex matches the message (when there are any) and no `exclusionList`
//!   regex does. Several alerts selecting one event for one provider send it once.
//! - **rate limit** ([`Deduper`]): an identical event (object, severity, reason, message,
//!   metadata) goes to a provider at most once per [`RATE_LIMIT`], as Flux's.
//! - **off the reconcile path**: each provider has a bounded queue and one worker
//!   (`deliver`); `emit` only `try_send`s, so a slow or dead provider fills its own queue
//!   (further events are dropped and counted) and never delays a sync nor another provider.

mod deliver;
pub mod payload;

pub use deliver::DeliveryError;

use super::metrics::{EventMetrics, ProviderLabels};
use crate::config::{AlertSettings, EventSourceSelector, ProviderSettings, Severity};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Identical events within this window are sent once (Flux's rate limit).
pub const RATE_LIMIT: Duration = Duration::from_secs(300);
/// Events waiting for one provider; more are dropped (and counted) until it catches up.
pub const QUEUE_CAPACITY: usize = 256;
/// Recent events kept for `/api/v1/events` (all of them, selected by an alert or not).
pub const RECENT_EVENTS: usize = 200;

/// The object an event is about, as Flux's `involvedObject`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub api_version: String,
}

impl ObjectRef {
    pub fn git_repository(namespace: &str, name: &str) -> Self {
        Self::new(
            "GitRepository",
            "source.toolkit.fluxcd.io/v1",
            namespace,
            name,
        )
    }

    pub fn bucket(namespace: &str, name: &str) -> Self {
        Self::new("Bucket", "source.toolkit.fluxcd.io/v1", namespace, name)
    }

    /// A kustomization named as Azure's extension names the Flux objects it creates:
    /// `<configuration>-<kustomization>`.
    pub fn kustomization(namespace: &str, configuration: &str, name: &str) -> Self {
        Self::new(
            "Kustomization",
            "kustomize.toolkit.fluxcd.io/v1",
            namespace,
            &format!("{configuration}-{name}"),
        )
    }

    fn new(kind: &str, api_version: &str, namespace: &str, name: &str) -> Self {
        ObjectRef {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            api_version: api_version.into(),
        }
    }
}

/// One event, serialized as Flux's `eventv1.Event` (the generic providers' body).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub involved_object: ObjectRef,
    pub severity: Severity,
    /// RFC 3339.
    pub timestamp: String,
    pub message: String,
    /// Flux's reasons: `NewArtifact`, `GitOperationFailed`, `ReconciliationSucceeded`, ...
    pub reason: String,
    /// `revision` and the like.
    pub metadata: BTreeMap<String, String>,
    pub reporting_controller: String,
    pub reporting_instance: String,
}

impl Event {
    /// An event stamped now by this host's gitopsd.
    pub fn new(
        involved_object: ObjectRef,
        severity: Severity,
        reason: &str,
        message: String,
        metadata: BTreeMap<String, String>,
    ) -> Event {
        Event {
            involved_object,
            severity,
            timestamp: crate::state::now_rfc3339(),
            message,
            reason: reason.into(),
            metadata,
            reporting_controller: "gitopsd".into(),
            reporting_instance: instance_name(),
        }
    }

    /// What makes two events "identical" for the rate limit: all but the timestamp.
    fn identity(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.involved_object.hash(&mut hasher);
        self.severity.hash(&mut hasher);
        self.reason.hash(&mut hasher);
        self.message.hash(&mut hasher);
        self.metadata.hash(&mut hasher);
        hasher.finish()
    }
}

/// The host name, read once (the kernel's, as a pod's would be its name).
fn instance_name() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
    .clone()
}

/// Whether `alert` takes `event`.
pub fn selects(alert: &AlertSettings, event: &Event) -> bool {
    if alert.suspend {
        return false;
    }
    if alert.severity == Severity::Error && event.severity != Severity::Error {
        return false;
    }
    let object = &event.involved_object;
    if !alert.sources.iter().any(|s| source_matches(s, object)) {
        return false;
    }
    if !alert.inclusion.is_empty() && !alert.inclusion.iter().any(|r| r.is_match(&event.message)) {
        return false;
    }
    !alert.exclusion.iter().any(|r| r.is_match(&event.message))
}

fn source_matches(selector: &EventSourceSelector, object: &ObjectRef) -> bool {
    glob(&selector.kind, &object.kind)
        && glob(&selector.name, &object.name)
        && glob(&selector.namespace, &object.namespace)
}

/// `pattern` with `*` matching any run of characters (also none), the rest literally.
pub fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*` at all: the whole text must have been the prefix.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Remembers which events went out when, for the rate limit. Pure over the instants it is
/// given, so that tests step a clock of their own instead of sleeping five minutes.
#[derive(Debug)]
pub struct Deduper {
    window: Duration,
    seen: HashMap<(usize, u64), Instant>,
}

impl Deduper {
    pub fn new(window: Duration) -> Self {
        Deduper {
            window,
            seen: HashMap::new(),
        }
    }

    /// Whether `event` may go to provider `provider` at `now`; if so, remembers it.
    pub fn admit(&mut self, provider: usize, event: &Event, now: Instant) -> bool {
        let window = self.window;
        // Forget what has expired, so the map stays as small as the recent distinct events.
        self.seen
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        let key = (provider, event.identity());
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, now);
        true
    }
}

/// A provider and the receiving end of its queue, until its task starts.
type Worker = (ProviderSettings, mpsc::Receiver<Event>);

/// The alert router and its providers' queues.
pub struct Alerts {
    alerts: Vec<AlertSettings>,
    queues: Vec<(String, mpsc::Sender<Event>)>,
    /// The workers' halves, until [`Alerts::start`] hands them to their tasks.
    workers: Mutex<Option<Vec<Worker>>>,
    dedup: Mutex<Deduper>,
    metrics: EventMetrics,
    /// Events queued and not yet delivered or given up.
    pending: Arc<AtomicUsize>,
    /// The last [`RECENT_EVENTS`] events, each with its sequence number.
    recent: Mutex<Recent>,
}

/// A ring of recent events, numbered from 0 in emission order so a watcher can ask for the
/// ones after those it has seen.
#[derive(Debug, Default)]
struct Recent {
    next: u64,
    events: std::collections::VecDeque<(u64, Event)>,
}

impl Alerts {
    pub fn new(
        providers: &[ProviderSettings],
        alerts: &[AlertSettings],
        metrics: EventMetrics,
    ) -> Alerts {
        let mut queues = Vec::new();
        let mut workers = Vec::new();
        for p in providers {
            let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
            queues.push((p.name.clone(), tx));
            workers.push((p.clone(), rx));
        }
        Alerts {
            alerts: alerts.to_vec(),
            queues,
            workers: Mutex::new(Some(workers)),
            dedup: Mutex::new(Deduper::new(RATE_LIMIT)),
            metrics,
            pending: Arc::new(AtomicUsize::new(0)),
            recent: Mutex::new(Recent::default()),
        }
    }

    /// The recent events numbered `since` or later, and the number the next event will get.
    pub fn recent(&self, since: u64) -> (u64, Vec<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let events = recent
            .events
            .iter()
            .filter(|(n, _)| *n >= since)
            .map(|(_, e)| e.clone())
            .collect();
        (recent.next, events)
    }

    /// Starts one delivery task per provider; the caller must be in a tokio runtime. Only
    /// the first call does anything.
    pub fn start(&self) {
        let workers = self
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        for (provider, queue) in workers.into_iter().flatten() {
            tokio::spawn(deliver::worker(
                provider,
                queue,
                self.metrics.clone(),
                self.pending.clone(),
            ));
        }
    }

    /// Queues `event` for every provider an alert selects it for. Never waits.
    pub fn emit(&self, event: Event) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            let n = recent.next;
            recent.next += 1;
            if recent.events.len() == RECENT_EVENTS {
                recent.events.pop_front();
            }
            recent.events.push_back((n, event.clone()));
        }
        if self.alerts.is_empty() {
            return;
        }
        let now = Instant::now();
        for (index, (name, queue)) in self.queues.iter().enumerate() {
            let wanted = self
                .alerts
                .iter()
                .any(|a| a.provider == index && selects(a, &event));
            if !wanted {
                continue;
            }
            let labels = ProviderLabels {
                provider: name.clone(),
            };
            let admitted = self
                .dedup
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .admit(index, &event, now);
            if !admitted {
                self.metrics
                    .alerts_deduplicated
                    .get_or_create(&labels)
                    .inc();
                continue;
            }
            self.pending.fetch_add(1, Ordering::SeqCst);
            if queue.try_send(event.clone()).is_err() {
                self.pending.fetch_sub(1, Ordering::SeqCst);
                self.metrics.alerts_dropped.get_or_create(&labels).inc();
                tracing::warn!(provider = %name, reason = %event.reason, "alert dropped: the provider's queue is full");
            }
        }
    }

    /// Waits until every queued event was delivered or given up, or `within` passed (a
    /// one-shot run lets its alerts out before the process exits).
    pub async fn drain(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        while self.pending.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, name: &str, severity: Severity, message: &str) -> Event {
        Event {
            involved_object: ObjectRef {
                kind: kind.into(),
                namespace: "default".into(),
                name: name.into(),
                api_version: "v1".into(),
            },
            severity,
            timestamp: "t".into(),
            message: message.into(),
            reason: "R".into(),
            metadata: BTreeMap::new(),
            reporting_controller: "gitopsd".into(),
            reporting_instance: "h".into(),
        }
    }

    fn alert(severity: Severity, kind: &str, name: &str) -> AlertSettings {
        AlertSettings {
            name: "a".into(),
            provider: 0,
            severity,
            sources: vec![EventSourceSelector {
                kind: kind.into(),
                name: name.into(),
                namespace: "*".into(),
            }],
            inclusion: vec![],
            exclusion: vec![],
            suspend: false,
        }
    }

    #[test]
    fn globs() {
        assert!(glob("*", ""));
        assert!(glob("*", "web"));
        assert!(glob("web", "web"));
        assert!(!glob("web", "web2"));
        assert!(glob("web-*", "web-app"));
        assert!(glob("*-app", "web-app"));
        assert!(glob("w*b*p", "web-app"));
        assert!(!glob("w*x", "web"));
        assert!(!glob("ab*ba", "aba"));
    }

    #[test]
    fn severity_sources_and_regex_lists_select_as_fluxs_alert() {
        let info = event("GitRepository", "web", Severity::Info, "stored artifact");
        let error = event(
            "GitRepository",
            "web",
            Severity::Error,
            "fetch failed: timeout",
        );
        assert!(selects(&alert(Severity::Info, "*", "*"), &info));
        assert!(selects(&alert(Severity::Info, "*", "*"), &error));
        assert!(!selects(&alert(Severity::Error, "*", "*"), &info));
        assert!(selects(
            &alert(Severity::Error, "GitRepository", "w*"),
            &error
        ));
        assert!(!selects(
            &alert(Severity::Info, "Kustomization", "*"),
            &info
        ));
        assert!(!selects(&alert(Severity::Info, "*", "api"), &info));
        let mut a = alert(Severity::Info, "*", "*");
        a.inclusion = vec![regex::Regex::new("fail").unwrap()];
        assert!(!selects(&a, &info));
        assert!(selects(&a, &error));
        a.exclusion = vec![regex::Regex::new("timeout$").unwrap()];
        assert!(!selects(&a, &error));
        let mut suspended = alert(Severity::Info, "*", "*");
        suspended.suspend = true;
        assert!(!selects(&suspended, &info));
    }

    fn provider(name: &str) -> ProviderSettings {
        ProviderSettings {
            name: name.into(),
            kind: crate::config::ProviderType::Generic,
            address: crate::config::SecretValue::Inline(crate::config::Secret(
                "http://127.0.0.1:9/".into(),
            )),
            secret: None,
            channel: None,
            username: None,
            proxy: None,
            cert_file: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = EventMetrics::default();
        // No worker started: nothing drains the queue, as with a provider that never answers.
        let alerts = Alerts::new(
            &[provider("stuck")],
            &[alert(Severity::Info, "*", "*")],
            metrics.clone(),
        );
        for n in 0..QUEUE_CAPACITY + 10 {
            // Distinct messages, so the rate limit lets each through.
            alerts.emit(event(
                "GitRepository",
                "web",
                Severity::Info,
                &format!("event {n}"),
            ));
        }
        let labels = ProviderLabels {
            provider: "stuck".into(),
        };
        assert_eq!(metrics.alerts_dropped.get_or_create(&labels).get(), 10);
        assert_eq!(alerts.pending.load(Ordering::SeqCst), QUEUE_CAPACITY);
        // An identical event is held back by the rate limit, not queued.
        alerts.emit(event("GitRepository", "web", Severity::Info, "event 0"));
        assert_eq!(metrics.alerts_deduplicated.get_or_create(&labels).get(), 1);
        // Every event is in the recent ring, the oldest gone beyond its size.
        let emitted = (QUEUE_CAPACITY + 11) as u64;
        let (next, all) = alerts.recent(0);
        assert_eq!((next, all.len()), (emitted, RECENT_EVENTS));
        let (_, last) = alerts.recent(emitted - 1);
        assert_eq!(last[0].message, "event 0");
    }

    #[test]
    fn identical_events_go_out_once_per_rate_limit_window() {
        let mut dedup = Deduper::new(RATE_LIMIT);
        let t0 = Instant::now();
        let first = event("GitRepository", "web", Severity::Error, "failed");
        let mut later = first.clone();
        later.timestamp = "another time".into();
        assert!(dedup.admit(0, &first, t0));
        // The same event a minute later (only the timestamp differs): held back.
        assert!(!dedup.admit(0, &later, t0 + Duration::from_secs(60)));
        // Another provider, or another message: sent.
        assert!(dedup.admit(1, &first, t0 + Duration::from_secs(60)));
        let other = event("GitRepository", "web", Severity::Error, "failed again");
        assert!(dedup.admit(0, &other, t0 + Duration::from_secs(60)));
        // Once the window has passed: sent again.
        assert!(dedup.admit(0, &later, t0 + RATE_LIMIT));
    }
}
