//! Prometheus metrics, served as text on the admin port's `/metrics`.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Which side of the pod traffic is on.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Direction {
    /// From the app to other services.
    outbound,
    /// From other pods to the app.
    inbound,
}

/// What a connection was treated as.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ConnProtocol {
    /// HTTP/1.x.
    http1,
    /// HTTP/2.
    http2,
    /// Opaque bytes.
    tcp,
    /// Passed through to an unknown destination.
    passthrough,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: Direction,
    target: SharedLabel,
    /// The TrafficRoute rule that matched (empty without rules).
    rule: SharedLabel,
    /// The group the rule chose (empty when none).
    group: SharedLabel,
    code: u16,
    /// Whether the request travelled over braid's mTLS (inbound: arrived; outbound: sent).
    tls: TlsLabel,
    /// The caller's SPIFFE identity (inbound mTLS only; empty otherwise).
    peer_identity: SharedLabel,
}

/// `true` or `false`, as a label value.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct TlsLabel(bool);

impl EncodeLabelValue for TlsLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        encoder.write_str(if self.0 { "true" } else { "false" })
    }
}

/// What routing decided for a request, for its metrics.
#[derive(Clone, Debug, Default)]
pub struct Routed {
    /// The rule that matched.
    pub rule: Option<Arc<str>>,
    /// The group chosen.
    pub group: Option<Arc<str>>,
    /// Whether it travelled over mTLS.
    pub tls: bool,
    /// The caller's identity, when it came over mTLS.
    pub peer: Option<Arc<str>>,
}

/// What became of a retry a rule wanted.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RetryResult {
    /// It was sent.
    sent,
    /// The retry budget was spent, so the failure went to the caller.
    budget_exhausted,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RetryLabels {
    target: SharedLabel,
    rule: SharedLabel,
    result: RetryResult,
}

/// What became of a mirror copy.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum MirrorResult {
    /// It was sent.
    sent,
    /// Too many copies were in flight; this one was not sent.
    dropped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EjectionLabels {
    target: SharedLabel,
    endpoint: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutlierLabels {
    target: SharedLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SparedLabels {
    target: SharedLabel,
    reason: &'static str,
}

/// Outlier detection's metrics.
struct OutlierMetrics {
    ejections: Family<EjectionLabels, Counter>,
    spared: Family<SparedLabels, Counter>,
    returns: Family<OutlierLabels, Counter>,
    panic: Family<OutlierLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    target: SharedLabel,
    group: SharedLabel,
    result: MirrorResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    direction: Direction,
    protocol: ConnProtocol,
}

/// How a mesh TLS handshake ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum HandshakeResult {
    /// The peer was verified.
    ok,
    /// It failed: refused identity or chain, no certificate, broken connection.
    failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandshakeLabels {
    direction: Direction,
    result: HandshakeResult,
}

/// Why a Strict port closed a connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RefusedReason {
    /// It was not braid's mTLS (plaintext, or an app's own TLS).
    plaintext,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    port: u16,
    reason: RefusedReason,
}

/// Which connection limit was reached (see [`crate::limits::Limits`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Limit {
    /// A request head did not arrive in time (408).
    header_read_timeout,
    /// A kept-alive connection sat idle too long and was closed.
    idle_timeout,
    /// A request body stalled (408).
    request_body_timeout,
    /// An upstream did not answer, or stalled its body, in time (504 or a cut response).
    response_timeout,
    /// An opaque TCP connection was silent too long and was closed.
    tcp_idle_timeout,
    /// A request head was too large (431).
    header_too_large,
    /// A listener was at its connection cap: accepting paused.
    max_connections,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    direction: Direction,
    limit: Limit,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

/// Every metric the proxy exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    mirrors: Family<MirrorLabels, Counter>,
    outlier: OutlierMetrics,
    overload_limit: Gauge<f64, std::sync::atomic::AtomicU64>,
    overload_signal: Gauge<f64, std::sync::atomic::AtomicU64>,
    overload_shed: Counter,
    identity_expiry: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Per direction, fetched once: the family lookup is not paid per request.
    latency: [Histogram; 2],
    /// Requests waiting for their response, per direction (same indexing as `latency`).
    in_flight: [Gauge; 2],
    connections: Family<ConnLabels, Counter>,
    open: Family<ConnLabels, Gauge>,
    config: Family<VersionLabels, Gauge>,
    config_version: Mutex<String>,
    handshakes: Family<HandshakeLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    limits: Family<LimitLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("braid");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "HTTP requests by direction, target, TrafficRoute rule, group and status code",
            requests.clone(),
        );
        let retries = Family::<RetryLabels, Counter>::default();
        registry.register(
            "retries",
            "Retries a TrafficRoute rule asked for, sent or refused by the retry budget",
            retries.clone(),
        );
        let outlier = OutlierMetrics {
            ejections: Family::default(),
            spared: Family::default(),
            returns: Family::default(),
            panic: Family::default(),
        };
        registry.register(
            "outlier_ejections",
            "Endpoints ejected by outlier detection, by target, endpoint and reason",
            outlier.ejections.clone(),
        );
        registry.register(
            "outlier_ejections_spared",
            "Ejections not made because the group already had maxEjectionPercent ejected",
            outlier.spared.clone(),
        );
        registry.register(
            "outlier_returns",
            "Ejected endpoints whose ejection ran out",
            outlier.returns.clone(),
        );
        registry.register(
            "outlier_panic_requests",
            "Requests sent while every endpoint of their group was ejected (all were used)",
            outlier.panic.clone(),
        );
        let overload_limit = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "overload_limit",
            "Inbound requests per second overload protection admits",
            overload_limit.clone(),
        );
        let overload_signal = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "overload_signal",
            "The last sample of overload protection's signal (CPU share, p99 seconds or requests in flight)",
            overload_signal.clone(),
        );
        let overload_shed = Counter::default();
        registry.register(
            "overload_shed",
            "Inbound requests answered 503 by overload protection",
            overload_shed.clone(),
        );
        let identity_expiry = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "identity_expiry_timestamp_seconds",
            "When the proxy's certificate in force expires (Unix seconds); 0 before it has one",
            identity_expiry.clone(),
        );
        let mirrors = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirrored_requests",
            "Copies of requests for a mirror group, sent or dropped (too many in flight)",
            mirrors.clone(),
        );
        let latency = Family::<DirectionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 18))
        });
        registry.register(
            "request_duration_seconds",
            "Time to response headers",
            latency.clone(),
        );
        let connections = Family::<ConnLabels, Counter>::default();
        registry.register(
            "tcp_connections",
            "Accepted connections by protocol",
            connections.clone(),
        );
        let open = Family::<ConnLabels, Gauge>::default();
        registry.register("tcp_connections_open", "Connections open now", open.clone());
        let config = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "config_info",
            "The config version in force (value 1)",
            config.clone(),
        );
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "Mesh mTLS handshakes by direction (outbound: originated, inbound: accepted) and result",
            handshakes.clone(),
        );
        let refused = Family::<RefusedLabels, Counter>::default();
        registry.register(
            "tls_refused_connections",
            "Connections a Strict port closed because they were not mTLS",
            refused.clone(),
        );
        let limits = Family::<LimitLabels, Counter>::default();
        registry.register(
            "connection_limits",
            "Connections and requests cut off by a limit: timeouts, oversized heads, and pauses at the connection cap",
            limits.clone(),
        );
        let in_flight_family = Family::<DirectionLabels, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "HTTP requests waiting for their response",
            in_flight_family.clone(),
        );
        let in_flight = [Direction::outbound, Direction::inbound].map(|direction| {
            in_flight_family
                .get_or_create(&DirectionLabels { direction })
                .clone()
        });
        let latency = [Direction::outbound, Direction::inbound].map(|direction| {
            latency
                .get_or_create(&DirectionLabels { direction })
                .clone()
        });
        Self {
            registry,
            requests,
            retries,
            mirrors,
            outlier,
            overload_limit,
            overload_signal,
            overload_shed,
            identity_expiry,
            latency,
            connections,
            open,
            config,
            config_version: Mutex::new(String::new()),
            handshakes,
            refused,
            limits,
            in_flight,
        }
    }

    /// Counts a mesh TLS handshake.
    pub fn handshake(&self, direction: Direction, result: HandshakeResult) {
        self.handshakes
            .get_or_create(&HandshakeLabels { direction, result })
            .inc();
    }

    /// Counts a connection a Strict port closed.
    pub fn refused(&self, port: u16, reason: RefusedReason) {
        self.refused
            .get_or_create(&RefusedLabels { port, reason })
            .inc();
    }

    /// Counts a connection or request cut off by `limit`.
    pub fn limit(&self, direction: Direction, limit: Limit) {
        self.limits
            .get_or_create(&LimitLabels { direction, limit })
            .inc();
    }

    /// Counts a finished request.
    pub fn request(
        &self,
        direction: Direction,
        target: &Arc<str>,
        routed: Routed,
        code: u16,
        seconds: f64,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                target: SharedLabel(target.clone()),
                rule: label(routed.rule),
                group: label(routed.group),
                code,
                tls: TlsLabel(routed.tls),
                peer_identity: label(routed.peer),
            })
            .inc();
        self.latency[direction as usize].observe(seconds);
    }

    /// Counts a retry of `rule`'s request to `target`.
    pub fn retry(&self, target: &Arc<str>, rule: &Arc<str>, result: RetryResult) {
        self.retries
            .get_or_create(&RetryLabels {
                target: SharedLabel(target.clone()),
                rule: SharedLabel(rule.clone()),
                result,
            })
            .inc();
    }

    /// Records overload protection's limit and signal after a sample.
    pub fn overload(&self, limit: f64, signal: f64) {
        self.overload_limit.set(limit);
        self.overload_signal.set(signal);
    }

    /// Records when the certificate in force expires.
    pub fn identity_expiry(&self, not_after: std::time::SystemTime) {
        let secs = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        self.identity_expiry.set(secs);
    }

    /// Counts a request shed by overload protection.
    pub fn shed(&self) {
        self.overload_shed.inc();
    }

    /// Counts an ejection of `endpoint` of `target`.
    pub fn ejected(&self, target: &Arc<str>, endpoint: std::net::SocketAddr, reason: &'static str) {
        self.outlier
            .ejections
            .get_or_create(&EjectionLabels {
                target: SharedLabel(target.clone()),
                endpoint: endpoint.to_string(),
                reason,
            })
            .inc();
    }

    /// Counts an ejection `maxEjectionPercent` prevented.
    pub fn ejection_spared(&self, target: &Arc<str>, reason: &'static str) {
        self.outlier
            .spared
            .get_or_create(&SparedLabels {
                target: SharedLabel(target.clone()),
                reason,
            })
            .inc();
    }

    /// Counts `n` endpoints of `target` back from ejection.
    pub fn returned(&self, target: &Arc<str>, n: usize) {
        self.outlier
            .returns
            .get_or_create(&OutlierLabels {
                target: SharedLabel(target.clone()),
            })
            .inc_by(n as u64);
    }

    /// Counts a request sent in panic mode (every endpoint of its group ejected).
    pub fn panic_request(&self, target: &Arc<str>) {
        self.outlier
            .panic
            .get_or_create(&OutlierLabels {
                target: SharedLabel(target.clone()),
            })
            .inc();
    }

    /// Counts a copy of a request for `group` of `target`: `sent`, or dropped because
    /// too many were in flight.
    pub fn mirrored(&self, target: &Arc<str>, group: &Arc<str>, sent: bool) {
        self.mirrors
            .get_or_create(&MirrorLabels {
                target: SharedLabel(target.clone()),
                group: SharedLabel(group.clone()),
                result: match sent {
                    true => MirrorResult::sent,
                    false => MirrorResult::dropped,
                },
            })
            .inc();
    }

    /// Counts a connection; the guard keeps it in the open gauge until dropped.
    pub fn connection(&self, direction: Direction, protocol: ConnProtocol) -> OpenGuard {
        let labels = ConnLabels {
            direction,
            protocol,
        };
        self.connections.get_or_create(&labels).inc();
        let gauge = self.open.get_or_create(&labels).clone();
        gauge.inc();
        OpenGuard(gauge)
    }

    /// Counts a request as in flight until the guard is dropped (when its response
    /// head is ready).
    pub fn request_started(&self, direction: Direction) -> OpenGuard {
        let gauge = self.in_flight[direction as usize].clone();
        gauge.inc();
        OpenGuard(gauge)
    }

    /// Requests waiting for their response in `direction`.
    pub fn requests_in_flight(&self, direction: Direction) -> i64 {
        self.in_flight[direction as usize].get()
    }

    /// Connections open now in `direction`, over every protocol: what
    /// `braid-proxy wait-app-exit` watches to tell that the app has stopped calling out.
    pub fn open_connections(&self, direction: Direction) -> i64 {
        [
            ConnProtocol::http1,
            ConnProtocol::http2,
            ConnProtocol::tcp,
            ConnProtocol::passthrough,
        ]
        .iter()
        .filter_map(|&protocol| {
            self.open
                .get(&ConnLabels {
                    direction,
                    protocol,
                })
                .map(|g| g.get())
        })
        .sum()
    }

    /// Records the config version now in force.
    pub fn config_applied(&self, version: &str) {
        let Ok(mut current) = self.config_version.lock() else {
            return;
        };
        let previous = std::mem::replace(&mut *current, version.to_owned());
        self.config.remove(&VersionLabels { version: previous });
        self.config
            .get_or_create(&VersionLabels {
                version: version.to_owned(),
            })
            .set(1);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_requests_connections_and_config_version() {
        let m = Metrics::new();
        m.request(
            Direction::outbound,
            &Arc::from("payments.shop:80"),
            Routed::default(),
            200,
            0.001,
        );
        m.request(
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
        m.retry(
            &Arc::from("payments.shop:80"),
            &Arc::from("transfers"),
            RetryResult::budget_exhausted,
        );
        m.mirrored(&Arc::from("payments.shop:80"), &Arc::from("shadow"), true);
        let guard = m.connection(Direction::inbound, ConnProtocol::http2);
        m.config_applied("v1");
        m.config_applied("v2");
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

    #[test]
    fn open_connections_sum_over_protocols_per_direction() {
        let m = Metrics::new();
        assert_eq!(m.open_connections(Direction::outbound), 0);
        let a = m.connection(Direction::outbound, ConnProtocol::http1);
        let b = m.connection(Direction::outbound, ConnProtocol::passthrough);
        let c = m.connection(Direction::inbound, ConnProtocol::tcp);
        assert_eq!(m.open_connections(Direction::outbound), 2);
        assert_eq!(m.open_connections(Direction::inbound), 1);
        drop((a, c));
        assert_eq!(m.open_connections(Direction::outbound), 1);
        drop(b);
        assert_eq!(m.open_connections(Direction::outbound), 0);
    }

    #[test]
    fn requests_in_flight_per_direction() {
        let m = Metrics::new();
        let a = m.request_started(Direction::inbound);
        let b = m.request_started(Direction::inbound);
        let c = m.request_started(Direction::outbound);
        assert_eq!(m.requests_in_flight(Direction::inbound), 2);
        assert_eq!(m.requests_in_flight(Direction::outbound), 1);
        assert!(
            m.encode()
                .contains(r#"braid_requests_in_flight{direction="inbound"} 2"#)
        );
        drop((a, c));
        assert_eq!(m.requests_in_flight(Direction::inbound), 1);
        drop(b);
        assert_eq!(m.requests_in_flight(Direction::inbound), 0);
    }
}
