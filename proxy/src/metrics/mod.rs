//! Prometheus metrics, served as text on the admin port's `/metrics`.
//!
//! Each subsystem's metrics are a struct of their own, registered by its `register`:
//! overload protection's beside it (`crate::overload::metrics`), the identity's beside it
//! (`crate::identity::metrics`), and those that share this module's labels here, a file
//! each: `connection.rs` (accepted and open connections), `http.rs` (requests, latency,
//! in flight, retries, mirror copies), `outlier.rs` (ejections), `tls.rs` (handshakes
//! and Strict refusals), `limits.rs` (connections and requests cut off by a limit),
//! `config.rs` (the version in force), `discovery.rs` (what on-demand discovery found),
//! `telemetry.rs` (access-log lines and spans, written or dropped) and `authz.rs`
//! (AccessPolicy decisions). This module keeps what they share — the registry,
//! [`encode`], [`Direction`], the shared label and [`OpenGuard`] — and [`Metrics`] puts
//! them together.

pub mod authz;
pub mod config;
pub mod connection;
pub mod discovery;
pub mod http;
pub mod limits;
pub mod outlier;
pub mod reference;
pub mod telemetry;
pub mod tls;

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelValue;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::identity::metrics::IdentityMetrics;
use crate::overload::metrics::OverloadMetrics;

/// Which side of the pod traffic is on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// From the app to other services.
    outbound,
    /// From other pods to the app.
    inbound,
}

impl Direction {
    /// Its name, as labels, log lines and span attributes write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::outbound => "outbound",
            Self::inbound => "inbound",
        }
    }
}

/// A label value shared with the routing tables, so counting a request allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SharedLabel(Arc<str>);

impl EncodeLabelValue for SharedLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(&self.0)
    }
}

/// An optional label value; absent is the empty string (no allocation: the empty `Arc`
/// is made once).
fn label(value: Option<Arc<str>>) -> SharedLabel {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    SharedLabel(value.unwrap_or_else(|| EMPTY.get_or_init(|| Arc::from("")).clone()))
}

/// Keeps a connection counted as open, or a request as in flight.
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Every metric the proxy exports: each subsystem's, in one registry.
pub struct Metrics {
    registry: Registry,
    /// Accepted and open connections.
    pub connections: connection::ConnectionMetrics,
    /// HTTP requests, their latency, retries and mirror copies.
    pub http: http::HttpMetrics,
    /// Outlier detection's ejections.
    pub outlier: outlier::OutlierMetrics,
    /// Mesh TLS handshakes and Strict refusals.
    pub tls: tls::TlsMetrics,
    /// Connections and requests cut off by a limit.
    pub limits: limits::LimitMetrics,
    /// The config version in force.
    pub config: config::ConfigMetrics,
    /// Overload protection's limit, signal and shed requests.
    pub overload: OverloadMetrics,
    /// When the certificate in force expires.
    pub identity: IdentityMetrics,
    /// What addresses the config did not know turned out to be.
    pub discovery: discovery::DiscoveryMetrics,
    /// Access-log lines and exported spans, written or dropped.
    pub telemetry: Arc<telemetry::TelemetryMetrics>,
    /// What each AccessPolicy decided.
    pub authz: authz::AuthzMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every subsystem's metrics under the `braid_` prefix.
    pub fn new() -> Self {
        Self::for_workload(None, None)
    }

    /// [`Metrics::new`], every series labelled `workload` (and `workload_namespace`, when
    /// known) with the proxy's own workload when it has one: the labels cost nothing per
    /// request, as the registry adds them when it is scraped. Its own name for the
    /// namespace, as Prometheus's target label `namespace` would otherwise rename it.
    pub fn for_workload(workload: Option<&str>, namespace: Option<&str>) -> Self {
        let labels = workload
            .map(|w| {
                let ns = namespace.map(|n| {
                    (
                        Cow::Borrowed("workload_namespace"),
                        Cow::Owned(n.to_owned()),
                    )
                });
                std::iter::once((Cow::Borrowed("workload"), Cow::Owned(w.to_owned()))).chain(ns)
            })
            .into_iter()
            .flatten();
        let mut registry = Registry::with_prefix_and_labels("braid", labels);
        let http = http::HttpMetrics::register(&mut registry);
        let outlier = outlier::OutlierMetrics::register(&mut registry);
        let overload = OverloadMetrics::register(&mut registry);
        let identity = IdentityMetrics::register(&mut registry);
        let connections = connection::ConnectionMetrics::register(&mut registry);
        let config = config::ConfigMetrics::register(&mut registry);
        let tls = tls::TlsMetrics::register(&mut registry);
        let limits = limits::LimitMetrics::register(&mut registry);
        let discovery = discovery::DiscoveryMetrics::register(&mut registry);
        let telemetry = Arc::new(telemetry::TelemetryMetrics::register(&mut registry));
        let authz = authz::AuthzMetrics::register(&mut registry);
        Self {
            authz,
            registry,
            connections,
            http,
            outlier,
            tls,
            limits,
            config,
            overload,
            identity,
            discovery,
            telemetry,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// The Prometheus text exposition of `registry` (empty if it cannot be encoded).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::connection::ConnProtocol;
    use super::http::{RetryResult, Routed};
    use super::*;

    #[test]
    fn exports_requests_connections_and_config_version() {
        let m = Metrics::new();
        m.http.request(
            Direction::outbound,
            &Arc::from("payments.shop:80"),
            Routed::default(),
            200,
            0.001,
        );
        m.http.request(
            Direction::outbound,
            &Arc::from("payments.shop:80"),
            Routed {
                rule: Some("transfers".into()),
                group: Some("Group_2".into()),
                ..Routed::default()
            },
            503,
            0.001,
        );
        m.http.retry(
            &Arc::from("payments.shop:80"),
            &Arc::from("transfers"),
            RetryResult::budget_exhausted,
        );
        m.http
            .mirrored(&Arc::from("payments.shop:80"), &Arc::from("shadow"), true);
        let guard = m.connections.open(Direction::inbound, ConnProtocol::http2);
        m.config.applied("v1");
        m.config.applied("v2");
        let text = m.encode();
        assert!(text.contains(r#"braid_requests_total{direction="outbound",target="payments.shop:80",rule="",group="",code="200",tls="false",peer_identity=""} 1"#), "{text}");
        assert!(text.contains(r#"braid_requests_total{direction="outbound",target="payments.shop:80",rule="transfers",group="Group_2",code="503",tls="false",peer_identity=""} 1"#), "{text}");
        assert!(text.contains(r#"braid_retries_total{target="payments.shop:80",rule="transfers",result="budget_exhausted"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"braid_mirrored_requests_total{target="payments.shop:80",group="shadow",result="sent"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_tcp_connections_open{direction="inbound",protocol="http2"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_config_info{version="v2"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"version="v1""#), "{text}");
        drop(guard);
        assert!(
            m.encode()
                .contains(r#"braid_tcp_connections_open{direction="inbound",protocol="http2"} 0"#)
        );
    }
}
