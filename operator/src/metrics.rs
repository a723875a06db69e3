//! Prometheus metrics of the operator, served on the admin port's `/metrics`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Why a stream or report request was refused.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Refusal {
    /// Missing or bad token (401).
    unauthenticated,
    /// A token for another workload (403).
    forbidden,
    /// A pod the operator does not know, or not meshed (404).
    unknown_pod,
    /// A malformed request (400).
    bad_request,
    /// The token could not be checked (503).
    unavailable,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Refusal,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    /// Proxies holding a config stream open.
    pub connected_proxies: Gauge,
    /// Config versions written to proxies.
    pub pushes: Counter,
    /// From a change being seen to its config being written to a proxy's stream.
    pub push_latency: Histogram,
    /// Time of one compile.
    pub compile_seconds: Histogram,
    /// Configs proxies reported refusing.
    pub proxy_rejections: Counter,
    refusals: Family<RefusalLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid_operator");
        let connected_proxies = Gauge::default();
        registry.register(
            "connected_proxies",
            "Proxies holding a config stream open",
            connected_proxies.clone(),
        );
        let pushes = Counter::default();
        registry.register(
            "config_pushes",
            "Config versions written to proxies",
            pushes.clone(),
        );
        // 1 ms .. ~16 s
        let push_latency = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "push_latency_seconds",
            "From a change being seen to the new config being written to a proxy",
            push_latency.clone(),
        );
        let compile_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "compile_seconds",
            "Time of one compile",
            compile_seconds.clone(),
        );
        let proxy_rejections = Counter::default();
        registry.register(
            "proxy_config_rejections",
            "Configs proxies reported refusing",
            proxy_rejections.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "stream_refusals",
            "Config stream and report requests refused, by reason",
            refusals.clone(),
        );
        Self {
            registry,
            connected_proxies,
            pushes,
            push_latency,
            compile_seconds,
            proxy_rejections,
            refusals,
        }
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: Refusal) {
        self.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }

    /// The metrics in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
