//! The engine's metrics, in memory: a prometheus-client registry that `/metrics` encodes.
//!
//! Counters and histograms live here and nowhere else: they are not part of the durable state
//! (a poll that changes nothing must write nothing, and a counter changes at every poll), so
//! they start from zero at every start, as Prometheus counters are expected to. The status
//! API's per-source `metrics` block is read from the same values.
//!
//! Label sets are `namespace, name, kind` for sources and `namespace, configuration, name` for
//! kustomizations, in that order (scrapers and tests match on the prefix).

use crate::state::{SourceMetrics, State};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub namespace: String,
    pub name: String,
    pub kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KustomizationLabels {
    pub namespace: String,
    pub configuration: String,
    pub name: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;
type FloatCounter = Counter<f64, AtomicU64>;
type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Fetches take from milliseconds (an unchanged poll) to minutes (a first clone):
/// 10 ms doubling up to about 5.5 minutes.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    fetches: Family<SourceLabels, Counter>,
    fetch_errors: Family<SourceLabels, Counter>,
    unchanged: Family<SourceLabels, Counter>,
    fetch_duration: Histograms<SourceLabels>,
    /// The histogram's sum, readable for the status API (a histogram has no public getter).
    fetch_seconds: Family<SourceLabels, FloatCounter>,
    last_fetch_duration: Family<SourceLabels, FloatGauge>,
    last_success: Family<SourceLabels, FloatGauge>,
    source_ready: Family<SourceLabels, Gauge>,
    git_cache_bytes: Family<SourceLabels, Gauge>,
    reconciles: Family<KustomizationLabels, Counter>,
    reconcile_errors: Family<KustomizationLabels, Counter>,
    reconcile_duration: Histograms<KustomizationLabels>,
    kustomization_ready: Family<KustomizationLabels, Gauge>,
    kustomization_objects: Family<KustomizationLabels, Gauge>,
    /// Receivers' and alert deliveries' counters, registered here so `/metrics` has them.
    events: crate::events::metrics::EventMetrics,
    /// 1 when the last reload of the config succeeded (or none was tried), 0 when it failed.
    reload_successful: Gauge,
    reload_timestamp: FloatGauge,
}

/// What one fetch did, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchResult {
    Stored,
    Unchanged,
    Failed,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// The receivers' and alerts' counters.
    pub fn events(&self) -> &crate::events::metrics::EventMetrics {
        &self.events
    }

    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            fetches: Family::default(),
            fetch_errors: Family::default(),
            unchanged: Family::default(),
            fetch_duration: Family::new_with_constructor(duration_buckets),
            fetch_seconds: Family::default(),
            last_fetch_duration: Family::default(),
            last_success: Family::default(),
            source_ready: Family::default(),
            git_cache_bytes: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_buckets),
            kustomization_ready: Family::default(),
            kustomization_objects: Family::default(),
            events: Default::default(),
            reload_successful: Gauge::default(),
            reload_timestamp: FloatGauge::default(),
            registry: Registry::default(),
        };
        metrics.events.register(&mut registry);
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "gitopsd_source_fetches",
            "Fetch attempts per source",
            metrics.fetches.clone(),
        );
        registry.register(
            "gitopsd_source_fetch_errors",
            "Failed fetch attempts per source",
            metrics.fetch_errors.clone(),
        );
        registry.register(
            "gitopsd_source_unchanged",
            "Polls that found the remote unchanged and downloaded nothing",
            metrics.unchanged.clone(),
        );
        registry.register(
            "gitopsd_source_fetch_duration_seconds",
            "Time spent fetching and packing, per source",
            metrics.fetch_duration.clone(),
        );
        registry.register(
            "gitopsd_source_last_fetch_duration_seconds",
            "Duration of the last fetch, per source",
            metrics.last_fetch_duration.clone(),
        );
        registry.register(
            "gitopsd_source_last_success_timestamp_seconds",
            "Unix time of the last successful fetch, 0 if none",
            metrics.last_success.clone(),
        );
        registry.register(
            "gitopsd_source_ready",
            "1 when the last fetch succeeded",
            metrics.source_ready.clone(),
        );
        registry.register(
            "gitopsd_source_git_cache_bytes",
            "Size on disk of a git source's cache repository",
            metrics.git_cache_bytes.clone(),
        );
        registry.register(
            "gitopsd_kustomization_reconciles",
            "Render and apply attempts per kustomization",
            metrics.reconciles.clone(),
        );
        registry.register(
            "gitopsd_kustomization_reconcile_errors",
            "Failed render and apply attempts per kustomization",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "gitopsd_kustomization_reconcile_duration_seconds",
            "Time spent rendering and applying, per kustomization",
            metrics.reconcile_duration.clone(),
        );
        registry.register(
            "gitopsd_kustomization_ready",
            "1 when the last render and apply succeeded",
            metrics.kustomization_ready.clone(),
        );
        registry.register(
            "gitopsd_kustomization_objects",
            "Objects in the kustomization's inventory after its last successful apply",
            metrics.kustomization_objects.clone(),
        );
        registry.register(
            "gitopsd_config_last_reload_successful",
            "1 when the last config reload succeeded or none was tried, 0 when it was rejected",
            metrics.reload_successful.clone(),
        );
        registry.register(
            "gitopsd_config_last_reload_timestamp_seconds",
            "Unix time of the last config reload attempt, 0 if none",
            metrics.reload_timestamp.clone(),
        );
        metrics.reload_successful.set(1);
        Metrics {
            registry,
            ..metrics
        }
    }

    /// A reload of the config was tried at `unix_time`; `succeeded` unless it was rejected.
    pub fn record_reload(&self, succeeded: bool, unix_time: f64) {
        self.reload_successful.set(i64::from(succeeded));
        self.reload_timestamp.set(unix_time);
    }

    /// Every known source and kustomization shows up from the start, at zero.
    pub fn register_objects(&self, state: &State) {
        for s in state.sources.values() {
            let labels = source_labels(&s.namespace, &s.name, &s.kind);
            // Creating the series is the point; the guards are dropped at once.
            drop(self.fetches.get_or_create(&labels));
            drop(self.fetch_errors.get_or_create(&labels));
            drop(self.unchanged.get_or_create(&labels));
            drop(self.last_fetch_duration.get_or_create(&labels));
            drop(self.last_success.get_or_create(&labels));
        }
    }

    pub fn record_fetch(&self, labels: &SourceLabels, seconds: f64, result: FetchResult) {
        self.fetches.get_or_create(labels).inc();
        self.fetch_duration.get_or_create(labels).observe(seconds);
        self.fetch_seconds.get_or_create(labels).inc_by(seconds);
        self.last_fetch_duration.get_or_create(labels).set(seconds);
        match result {
            FetchResult::Failed => {
                self.fetch_errors.get_or_create(labels).inc();
            }
            FetchResult::Unchanged | FetchResult::Stored => {
                if result == FetchResult::Unchanged {
                    self.unchanged.get_or_create(labels).inc();
                }
                self.last_success
                    .get_or_create(labels)
                    .set(crate::state::unix_now());
            }
        }
    }

    pub fn record_reconcile(&self, labels: &KustomizationLabels, seconds: f64, ok: bool) {
        self.reconciles.get_or_create(labels).inc();
        self.reconcile_duration
            .get_or_create(labels)
            .observe(seconds);
        if !ok {
            self.reconcile_errors.get_or_create(labels).inc();
        }
    }

    pub fn set_git_cache_bytes(&self, labels: &SourceLabels, bytes: u64) {
        self.git_cache_bytes
            .get_or_create(labels)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The counters the status API shows for a source.
    pub fn source(&self, labels: &SourceLabels) -> SourceMetrics {
        SourceMetrics {
            fetches_total: self.fetches.get_or_create(labels).get(),
            fetch_errors_total: self.fetch_errors.get_or_create(labels).get(),
            unchanged_total: self.unchanged.get_or_create(labels).get(),
            fetch_seconds_sum: self.fetch_seconds.get_or_create(labels).get(),
            last_fetch_seconds: self.last_fetch_duration.get_or_create(labels).get(),
            last_success_timestamp: self.last_success.get_or_create(labels).get(),
        }
    }

    /// The text exposition (OpenMetrics), with the ready gauges taken from `state` as it is
    /// now (readiness is a fact of the status, not an event to count).
    pub fn encode(&self, state: &State) -> String {
        for s in state.sources.values() {
            let ready = s.last_error.is_none() && s.artifact.is_some();
            self.source_ready
                .get_or_create(&source_labels(&s.namespace, &s.name, &s.kind))
                .set(i64::from(ready));
        }
        for k in state.kustomizations.values() {
            let ready = k.last_error.is_none() && k.last_applied_revision.is_some();
            let labels = KustomizationLabels {
                namespace: k.namespace.clone(),
                configuration: k.configuration.clone(),
                name: k.name.clone(),
            };
            self.kustomization_ready
                .get_or_create(&labels)
                .set(i64::from(ready));
            self.kustomization_objects
                .get_or_create(&labels)
                .set(i64::try_from(k.inventory.len()).unwrap_or(i64::MAX));
        }
        let mut text = String::new();
        // Writing into a String cannot fail; should the encoder report an error anyway, the
        // scrape gets what was written so far rather than nothing.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        text
    }
}

pub fn source_labels(namespace: &str, name: &str, kind: &str) -> SourceLabels {
    SourceLabels {
        namespace: namespace.to_string(),
        name: name.to_string(),
        kind: kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_end_in_total_and_keep_their_names() {
        let metrics = Metrics::new();
        let web = source_labels("default", "web", "git");
        metrics.record_fetch(&web, 0.5, FetchResult::Stored);
        metrics.record_fetch(&web, 0.25, FetchResult::Unchanged);
        metrics.record_fetch(&web, 1.0, FetchResult::Failed);
        metrics.set_git_cache_bytes(&web, 4096);
        let text = metrics.encode(&State::default());
        let labels = r#"{namespace="default",name="web",kind="git"}"#;
        for line in [
            format!("gitopsd_source_fetches_total{labels} 3"),
            format!("gitopsd_source_fetch_errors_total{labels} 1"),
            format!("gitopsd_source_unchanged_total{labels} 1"),
            format!("gitopsd_source_fetch_duration_seconds_sum{labels} 1.75"),
            format!("gitopsd_source_fetch_duration_seconds_count{labels} 3"),
            format!("gitopsd_source_last_fetch_duration_seconds{labels} 1.0"),
            format!("gitopsd_source_git_cache_bytes{labels} 4096"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        assert!(
            text.contains("# TYPE gitopsd_source_fetches counter"),
            "{text}"
        );
        assert!(text.contains("# TYPE gitopsd_source_fetch_duration_seconds histogram"));
        let shown = metrics.source(&web);
        assert_eq!(
            (
                shown.fetches_total,
                shown.fetch_errors_total,
                shown.unchanged_total
            ),
            (3, 1, 1)
        );
        assert!(shown.last_success_timestamp > 0.0);
    }
}
