//! Outlier detection's metrics: endpoints ejected, ejections spared by
//! `maxEjectionPercent`, endpoints returned, and requests sent in panic mode. Recorded by
//! an attempt (`crate::http::forward`) from what `crate::balance` judged.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::SharedLabel;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    target: SharedLabel,
    endpoint: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabels {
    target: SharedLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SparedLabels {
    target: SharedLabel,
    reason: &'static str,
}

/// `braid_outlier_ejections_total`, `braid_outlier_ejections_spared_total`,
/// `braid_outlier_returns_total` and `braid_outlier_panic_requests_total`.
pub struct OutlierMetrics {
    ejections: Family<EjectionLabels, Counter>,
    spared: Family<SparedLabels, Counter>,
    returns: Family<TargetLabels, Counter>,
    panic: Family<TargetLabels, Counter>,
}

impl OutlierMetrics {
    /// Registers outlier detection's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            ejections: Family::default(),
            spared: Family::default(),
            returns: Family::default(),
            panic: Family::default(),
        };
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection, by target, endpoint and reason",
            m.ejections.clone(),
        );
        registry.register(
            "outlier_ejections_spared",
            "Ejections not made because the group already had maxEjectionPercent ejected",
            m.spared.clone(),
        );
        registry.register(
            "outlier_returns",
            "Ejected endpoints whose ejection ran out",
            m.returns.clone(),
        );
        registry.register(
            "outlier_panic_requests",
            "Requests sent while every endpoint of their group was ejected (all were used)",
            m.panic.clone(),
        );
        m
    }

    /// Counts an ejection of `endpoint` of `target`.
    pub fn ejected(&self, target: &Arc<str>, endpoint: SocketAddr, reason: &'static str) {
        self.ejections
            .get_or_create(&EjectionLabels {
                target: SharedLabel(target.clone()),
                endpoint: endpoint.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts an ejection `maxEjectionPercent` prevented.
    pub fn spared(&self, target: &Arc<str>, reason: &'static str) {
        self.spared
            .get_or_create(&SparedLabels {
                target: SharedLabel(target.clone()),
                reason,
            })
            .inc();
    }

    /// Counts `n` endpoints of `target` back from ejection.
    pub fn returned(&self, target: &Arc<str>, n: usize) {
        self.returns
            .get_or_create(&TargetLabels {
                target: SharedLabel(target.clone()),
            })
            .inc_by(n as u64);
    }

    /// Counts a request sent in panic mode (every endpoint of its group ejected).
    pub fn panic_request(&self, target: &Arc<str>) {
        self.panic
            .get_or_create(&TargetLabels {
                target: SharedLabel(target.clone()),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn exports_ejections_spared_returns_and_panic() {
        let mut registry = Registry::with_prefix("braid");
        let m = OutlierMetrics::register(&mut registry);
        let target: Arc<str> = Arc::from("payments.shop:80");
        m.ejected(
            &target,
            "10.0.0.7:8080".parse().unwrap(),
            "consecutive_errors",
        );
        m.spared(&target, "consecutive_errors");
        m.returned(&target, 3);
        m.panic_request(&target);
        let text = encode(&registry);
        assert!(text.contains(r#"braid_outlier_ejections_total{target="payments.shop:80",endpoint="10.0.0.7:8080",reason="consecutive_errors"} 1"#), "{text}");
        assert!(text.contains(r#"braid_outlier_ejections_spared_total{target="payments.shop:80",reason="consecutive_errors"} 1"#), "{text}");
        assert!(
            text.contains(r#"braid_outlier_returns_total{target="payments.shop:80"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_outlier_panic_requests_total{target="payments.shop:80"} 1"#),
            "{text}"
        );
    }
}
