//! Overload protection's metrics: the concurrency limit, the signal's last sample, and the
//! requests shed.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// `braid_overload_limit`, `braid_overload_signal` and `braid_overload_shed_total`.
#[derive(Clone, Debug)]
pub struct OverloadMetrics {
    limit: Gauge<f64, AtomicU64>,
    signal: Gauge<f64, AtomicU64>,
    shed: Counter,
}

impl OverloadMetrics {
    /// Registers overload protection's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let limit = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "overload_limit",
            "Inbound requests overload protection admits to the app at once (+Inf: no limit)",
            limit.clone(),
        );
        let signal = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "overload_signal",
            "The last sample of overload protection's signal (CPU share, p99 seconds or requests in flight)",
            signal.clone(),
        );
        let shed = Counter::default();
        registry.register(
            "overload_shed",
            "Inbound requests answered 503 by overload protection",
            shed.clone(),
        );
        Self {
            limit,
            signal,
            shed,
        }
    }

    /// Records the limit and the signal after a sample.
    pub fn sampled(&self, limit: f64, signal: f64) {
        self.limit.set(limit);
        self.signal.set(signal);
    }

    /// Counts a request shed.
    pub fn shed(&self) {
        self.shed.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_limit_signal_and_shed() {
        let mut registry = Registry::with_prefix("braid");
        let m = OverloadMetrics::register(&mut registry);
        m.sampled(250.0, 0.75);
        m.shed();
        m.shed();
        let text = crate::metrics::encode(&registry);
        assert!(text.contains("braid_overload_limit 250.0\n"), "{text}");
        assert!(text.contains("braid_overload_signal 0.75\n"), "{text}");
        assert!(text.contains("braid_overload_shed_total 2\n"), "{text}");
    }
}
