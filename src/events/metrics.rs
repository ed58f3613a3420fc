//! The counters of receivers and alert deliveries. They are registered in the engine's
//! registry (`reconcile::metrics`), so that `/metrics` shows them with the rest; they live
//! here because the listener and the alert workers update them, not the reconcilers.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// A hook and what became of a request to it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HookLabels {
    pub namespace: String,
    pub name: String,
    /// `accepted` (triggered), `ignored` (an event it does not subscribe to), `ping`,
    /// `unauthorized` (wrong or missing signature or token).
    pub result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Cheap to clone: every family is shared.
#[derive(Debug, Clone, Default)]
pub struct EventMetrics {
    pub receiver_requests: Family<HookLabels, Counter>,
    /// Requests to a path that is no hook's.
    pub receiver_unknown_path: Counter,
    pub alerts_sent: Family<ProviderLabels, Counter>,
    /// Deliveries given up after every retry failed.
    pub alerts_failed: Family<ProviderLabels, Counter>,
    /// Events not queued because the provider's queue was full (a slow or dead provider).
    pub alerts_dropped: Family<ProviderLabels, Counter>,
    /// Events not sent again because an identical one went out within the rate limit.
    pub alerts_deduplicated: Family<ProviderLabels, Counter>,
}

impl EventMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "gitopsd_receiver_requests",
            "Webhook requests per hook and result (accepted, ignored, ping, unauthorized)",
            self.receiver_requests.clone(),
        );
        registry.register(
            "gitopsd_receiver_unknown_path",
            "Webhook requests to a path that is no hook's",
            self.receiver_unknown_path.clone(),
        );
        registry.register(
            "gitopsd_alerts_sent",
            "Events delivered, per provider",
            self.alerts_sent.clone(),
        );
        registry.register(
            "gitopsd_alerts_failed",
            "Events given up after every delivery attempt failed, per provider",
            self.alerts_failed.clone(),
        );
        registry.register(
            "gitopsd_alerts_dropped",
            "Events dropped because the provider's queue was full, per provider",
            self.alerts_dropped.clone(),
        );
        registry.register(
            "gitopsd_alerts_deduplicated",
            "Events not sent again within the 5-minute rate limit, per provider",
            self.alerts_deduplicated.clone(),
        );
    }

    pub fn hook(&self, namespace: &str, name: &str, result: &str) {
        self.receiver_requests
            .get_or_create(&HookLabels {
                namespace: namespace.to_string(),
                name: name.to_string(),
                result: result.to_string(),
            })
            .inc();
    }
}
