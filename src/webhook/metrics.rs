//! Prometheus metrics: request counts and latency by endpoint and outcome (bounded label sets).

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `mutate` (later also `validate`).
    pub endpoint: &'static str,
    /// `patched`, `unchanged`, `denied` or `bad_request`.
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    // 50µs .. ~0.8s
    Histogram::new(exponential_buckets(0.00005, 2.0, 15))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    /// KeywirePolicy names are cluster-scoped and admin-owned: a bounded set.
    pub policy: String,
    pub rule: &'static str,
    pub enforcement: &'static str,
}

pub struct Metrics {
    registry: Registry,
    violations: Family<ViolationLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    pub cert_reloads: Counter,
    pub lookup_misses: Counter,
    pub ready: Gauge,
    /// Connections accepted and not yet closed (TLS handshakes included).
    pub connections_open: Gauge,
    /// Connections closed right after accept because `--max-connections` were open.
    pub connections_rejected: Counter,
    /// Connections closed after `--idle-timeout-seconds` with no request in flight.
    pub connections_closed_idle: Counter,
    /// TLS handshakes that failed or did not finish within `--tls-handshake-timeout-seconds`.
    pub tls_handshake_failures: Counter,
    /// Request-body bytes held across all requests in flight (the global body budget's use).
    pub body_bytes_buffered: Gauge,
    shed: Family<ShedLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShedLabels {
    /// `body_too_large` (413), `body_budget` (503) or `body_timeout` (408).
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("keywire");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RequestLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let cert_reloads = Counter::default();
        let lookup_misses = Counter::default();
        let ready = Gauge::default();
        let violations = Family::<ViolationLabels, Counter>::default();
        registry.register(
            "policy_violations",
            "KeywirePolicy violations seen at admission, by policy, rule and enforcement",
            violations.clone(),
        );
        registry.register(
            "admission_requests",
            "AdmissionReview requests handled, by endpoint and outcome",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview, by endpoint and outcome",
            latency.clone(),
        );
        registry.register(
            "certificate_reloads",
            "Serving certificate reloads from disk",
            cert_reloads.clone(),
        );
        registry.register(
            "lookup_cache_misses",
            "ServiceAccount lookups answered by a direct GET because the watch cache had no entry",
            lookup_misses.clone(),
        );
        registry.register(
            "ready",
            "1 when the webhook is ready to serve",
            ready.clone(),
        );
        let connections_open = Gauge::default();
        let connections_rejected = Counter::default();
        let connections_closed_idle = Counter::default();
        let tls_handshake_failures = Counter::default();
        let body_bytes_buffered = Gauge::default();
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Webhook connections open, TLS handshakes included",
            connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Webhook connections closed on accept because the connection cap was reached",
            connections_rejected.clone(),
        );
        registry.register(
            "connections_closed_idle",
            "Webhook connections closed after the idle timeout with no request in flight",
            connections_closed_idle.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out",
            tls_handshake_failures.clone(),
        );
        registry.register(
            "body_bytes_buffered",
            "Request-body bytes held by requests in flight",
            body_bytes_buffered.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests refused by the body limits (413, 503 or 408), by reason",
            shed.clone(),
        );
        Metrics {
            registry,
            connections_open,
            connections_rejected,
            connections_closed_idle,
            tls_handshake_failures,
            body_bytes_buffered,
            shed,
            violations,
            requests,
            latency,
            cert_reloads,
            lookup_misses,
            ready,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn record_violations(&self, violations: &[crate::core::rules::Violation]) {
        for v in violations {
            self.violations
                .get_or_create(&ViolationLabels {
                    policy: v.policy.clone(),
                    rule: v.rule,
                    enforcement: v.enforcement.as_str(),
                })
                .inc();
        }
    }

    pub fn record_shed(&self, reason: &'static str) {
        self.shed.get_or_create(&ShedLabels { reason }).inc();
    }

    /// Starts a timer that records one request when dropped.
    pub fn timer(self: &Arc<Self>, endpoint: &'static str) -> RequestTimer {
        RequestTimer {
            metrics: self.clone(),
            start: Instant::now(),
            labels: RequestLabels {
                endpoint,
                outcome: "bad_request",
            },
        }
    }
}

/// Records the request count and latency on drop, so every exit path is counted.
pub struct RequestTimer {
    metrics: Arc<Metrics>,
    start: Instant,
    labels: RequestLabels,
}

impl RequestTimer {
    pub fn set_outcome(&mut self, outcome: &'static str) {
        self.labels.outcome = outcome;
    }

    pub fn elapsed_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }
}

impl Drop for RequestTimer {
    fn drop(&mut self) {
        self.metrics.requests.get_or_create(&self.labels).inc();
        self.metrics
            .latency
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_records_count_and_latency_by_outcome() {
        let m = Arc::new(Metrics::default());
        {
            let mut t = m.timer("mutate");
            t.set_outcome("patched");
        }
        drop(m.timer("mutate"));
        let text = m.encode();
        assert!(
            text.contains(
                r#"keywire_admission_requests_total{endpoint="mutate",outcome="patched"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keywire_admission_requests_total{endpoint="mutate",outcome="bad_request"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"keywire_admission_duration_seconds_count{endpoint="mutate",outcome="patched"} 1"#
            ),
            "{text}"
        );
    }
}
