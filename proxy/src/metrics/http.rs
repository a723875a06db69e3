//! HTTP's metrics: requests by target, rule, group, code and mTLS; their latency and how
//! many wait for a response; retries; mirror copies. Recorded by the request path
//! (`crate::http::forward`).

use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::{Direction, OpenGuard, SharedLabel, label};

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

/// 100 µs to 13 s, doubling: a sidecar hop's sub-millisecond answers and a slow
/// upstream's seconds both fall between buckets.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
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
    /// The endpoint of the last attempt (recorded only for the access log and traces).
    pub upstream: Option<std::net::SocketAddr>,
    /// Attempts after the first.
    pub retries: u32,
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
struct MirrorLabels {
    target: SharedLabel,
    group: SharedLabel,
    result: MirrorResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: Direction,
}

/// A response's class, `2xx` … `5xx`, as a label: a latency histogram per code would
/// multiply its buckets by every code a service answers. It holds the class (the code's
/// hundreds), so 200 and 204 are one series.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct ClassLabel(u16);

impl ClassLabel {
    fn of(code: u16) -> Self {
        Self(code / 100)
    }
}

impl EncodeLabelValue for ClassLabel {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> std::fmt::Result {
        use std::fmt::Write;
        write!(encoder, "{}xx", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    direction: Direction,
    target: SharedLabel,
    rule: SharedLabel,
    group: SharedLabel,
    class: ClassLabel,
}

/// `braid_requests_total`, `braid_request_duration_seconds`, `braid_requests_in_flight`,
/// `braid_retries_total` and `braid_mirrored_requests_total`.
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    retries: Family<RetryLabels, Counter>,
    mirrors: Family<MirrorLabels, Counter>,
    /// Time to response headers by target, rule, group and response class.
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    /// Requests waiting for their response, per direction (same indexing as `latency`).
    in_flight: [Gauge; 2],
}

impl HttpMetrics {
    /// Registers HTTP's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
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
        let mirrors = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "mirrored_requests",
            "Copies of requests for a mirror group, sent or dropped (too many in flight)",
            mirrors.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "request_duration_seconds",
            "Time to response headers, by direction, target, TrafficRoute rule, group and response class",
            latency.clone(),
        );
        let in_flight = Family::<DirectionLabels, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "HTTP requests waiting for their response",
            in_flight.clone(),
        );
        let per_direction = [Direction::outbound, Direction::inbound];
        Self {
            requests,
            retries,
            mirrors,
            latency,
            in_flight: per_direction.map(|direction| {
                in_flight
                    .get_or_create(&DirectionLabels { direction })
                    .clone()
            }),
        }
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
        let labels = RequestLabels {
            direction,
            target: SharedLabel(target.clone()),
            rule: label(routed.rule),
            group: label(routed.group),
            code,
            tls: TlsLabel(routed.tls),
            peer_identity: label(routed.peer),
        };
        self.latency
            .get_or_create(&LatencyLabels {
                direction,
                target: labels.target.clone(),
                rule: labels.rule.clone(),
                group: labels.group.clone(),
                class: ClassLabel::of(code),
            })
            .observe(seconds);
        self.requests.get_or_create(&labels).inc();
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
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    fn metrics() -> (Registry, HttpMetrics) {
        let mut registry = Registry::with_prefix("braid");
        let m = HttpMetrics::register(&mut registry);
        (registry, m)
    }

    #[test]
    fn exports_requests_with_mtls_peer_and_latency_buckets() {
        let (registry, m) = metrics();
        m.request(
            Direction::inbound,
            &Arc::from("app:8080"),
            Routed {
                tls: true,
                peer: Some("spiffe://cluster.local/ns/shop/sa/web".into()),
                ..Routed::default()
            },
            200,
            0.0003,
        );
        m.mirrored(&Arc::from("app:8080"), &Arc::from("shadow"), false);
        let text = encode(&registry);
        assert!(text.contains(r#"braid_requests_total{direction="inbound",target="app:8080",rule="",group="",code="200",tls="true",peer_identity="spiffe://cluster.local/ns/shop/sa/web"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"braid_request_duration_seconds_bucket{le="0.0004",direction="inbound",target="app:8080",rule="",group="",class="2xx"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"braid_request_duration_seconds_bucket{le="0.0002",direction="inbound",target="app:8080",rule="",group="",class="2xx"} 0"#
            ),
            "{text}"
        );
        assert!(
            !text.contains(r#"braid_request_duration_seconds_count{direction="outbound""#),
            "no outbound request, no outbound series: {text}"
        );
        assert!(
            text.contains(
                r#"braid_mirrored_requests_total{target="app:8080",group="shadow",result="dropped"} 1"#
            ),
            "{text}"
        );
    }

    #[test]
    fn the_latency_of_one_class_is_one_series() {
        let (registry, m) = metrics();
        for code in [200, 204, 201] {
            m.request(
                Direction::outbound,
                &Arc::from("app:80"),
                Routed::default(),
                code,
                0.001,
            );
        }
        let text = encode(&registry);
        let counts: Vec<_> = text
            .lines()
            .filter(|l| l.starts_with("braid_request_duration_seconds_count"))
            .collect();
        assert_eq!(
            counts,
            [
                r#"braid_request_duration_seconds_count{direction="outbound",target="app:80",rule="",group="",class="2xx"} 3"#
            ],
            "{text}"
        );
    }

    #[test]
    fn requests_in_flight_per_direction() {
        let (registry, m) = metrics();
        let a = m.request_started(Direction::inbound);
        let b = m.request_started(Direction::inbound);
        let c = m.request_started(Direction::outbound);
        assert_eq!(m.requests_in_flight(Direction::inbound), 2);
        assert_eq!(m.requests_in_flight(Direction::outbound), 1);
        assert!(encode(&registry).contains(r#"braid_requests_in_flight{direction="inbound"} 2"#));
        drop((a, c));
        assert_eq!(m.requests_in_flight(Direction::inbound), 1);
        drop(b);
        assert_eq!(m.requests_in_flight(Direction::inbound), 0);
    }
}
