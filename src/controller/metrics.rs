//! Prometheus metrics of `keywire controller`. Labels are bounded sets (results, reasons, object
//! kinds); never a name, a value or a token.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `synced`, `unchanged`, `rotated` or `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `secret`, `certificate` or `key`.
    pub object_type: &'static str,
    /// `ok` or the error class (`throttled`, `not_found`, `forbidden`, ...).
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `SecretProviderClass` or `Secret`.
    pub kind: &'static str,
}

fn seconds_histogram() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    syncs: Family<ResultLabels, Counter>,
    errors: Family<ReasonLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    reconcile: Histogram,
    managed: Family<KindLabels, Gauge>,
    pub cache_hits: Counter,
    pub leader: Gauge,
    pub ready: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keywire_controller");
        let syncs = Family::<ResultLabels, Counter>::default();
        let errors = Family::<ReasonLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            seconds_histogram,
        );
        let reconcile = seconds_histogram();
        let managed = Family::<KindLabels, Gauge>::default();
        let cache_hits = Counter::default();
        let leader = Gauge::default();
        let ready = Gauge::default();
        registry.register(
            "secret_syncs",
            "Synced Secrets evaluated, by result",
            syncs.clone(),
        );
        registry.register("sync_errors", "Sync failures, by reason", errors.clone());
        registry.register(
            "keyvault_requests",
            "Key Vault reads, by object type and status",
            requests.clone(),
        );
        registry.register(
            "keyvault_request_duration_seconds",
            "Key Vault read latency, by object type and status",
            latency.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one namespace",
            reconcile.clone(),
        );
        registry.register(
            "managed_objects",
            "SecretProviderClasses and Secrets keywire owns",
            managed.clone(),
        );
        registry.register(
            "keyvault_cache_hits",
            "Object reads answered by the fan-in cache instead of Key Vault",
            cache_hits.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease",
            leader.clone(),
        );
        registry.register("ready", "1 when the controller is ready", ready.clone());
        Metrics {
            registry,
            syncs,
            errors,
            requests,
            latency,
            reconcile,
            managed,
            cache_hits,
            leader,
            ready,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn sync(&self, result: &'static str) {
        self.syncs.get_or_create(&ResultLabels { result }).inc();
    }

    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ReasonLabels { reason }).inc();
    }

    pub fn keyvault_request(
        &self,
        object_type: &'static str,
        status: &'static str,
        took: Duration,
    ) {
        let labels = RequestLabels {
            object_type,
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    pub fn set_managed(&self, kind: &'static str, count: usize) {
        self.managed
            .get_or_create(&KindLabels { kind })
            .set(count as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_exported_with_bounded_labels() {
        let m = Metrics::default();
        m.sync("rotated");
        m.error("throttled");
        m.keyvault_request("secret", "ok", Duration::from_millis(3));
        m.set_managed("Secret", 4);
        let text = m.encode();
        for line in [
            r#"keywire_controller_secret_syncs_total{result="rotated"} 1"#,
            r#"keywire_controller_sync_errors_total{reason="throttled"} 1"#,
            r#"keywire_controller_keyvault_requests_total{object_type="secret",status="ok"} 1"#,
            r#"keywire_controller_managed_objects{kind="Secret"} 4"#,
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
    }
}
