//! Connections' metrics: accepted by direction and protocol, open now, and the bytes
//! they carry by target. Recorded by `crate::connection` once it knows the protocol;
//! read by `/connections` and `wait-app-exit`.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use super::{Direction, OpenGuard, SharedLabel};
use crate::io::ByteCounters;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    direction: Direction,
    protocol: ConnProtocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: Direction,
    protocol: ConnProtocol,
    target: SharedLabel,
}

/// `braid_tcp_connections_total`, `braid_tcp_connections_open`,
/// `braid_tcp_read_bytes_total` and `braid_tcp_written_bytes_total`.
pub struct ConnectionMetrics {
    accepted: Family<ConnLabels, Counter>,
    open_now: Family<ConnLabels, Gauge>,
    read: Family<BytesLabels, Counter>,
    written: Family<BytesLabels, Counter>,
}

impl ConnectionMetrics {
    /// Registers connections' metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let accepted = Family::<ConnLabels, Counter>::default();
        registry.register(
            "tcp_connections",
            "Accepted connections by protocol",
            accepted.clone(),
        );
        let open_now = Family::<ConnLabels, Gauge>::default();
        registry.register(
            "tcp_connections_open",
            "Connections open now",
            open_now.clone(),
        );
        let read = Family::<BytesLabels, Counter>::default();
        registry.register(
            "tcp_read_bytes",
            "Bytes read from accepted connections (the caller's), by target; inside mTLS, what the tunnel carries",
            read.clone(),
        );
        let written = Family::<BytesLabels, Counter>::default();
        registry.register(
            "tcp_written_bytes",
            "Bytes written to accepted connections (to the caller), by target; inside mTLS, what the tunnel carries",
            written.clone(),
        );
        Self {
            accepted,
            open_now,
            read,
            written,
        }
    }

    /// Where a connection of `protocol` to `target` counts its bytes (looked up once per
    /// connection, then counted as they move).
    pub fn bytes(
        &self,
        direction: Direction,
        protocol: ConnProtocol,
        target: &Arc<str>,
    ) -> ByteCounters {
        let labels = BytesLabels {
            direction,
            protocol,
            target: SharedLabel(target.clone()),
        };
        ByteCounters {
            read: self.read.get_or_create(&labels).clone(),
            written: self.written.get_or_create(&labels).clone(),
        }
    }

    /// Counts a connection; the guard keeps it in the open gauge until dropped.
    pub fn open(&self, direction: Direction, protocol: ConnProtocol) -> OpenGuard {
        let labels = ConnLabels {
            direction,
            protocol,
        };
        self.accepted.get_or_create(&labels).inc();
        let gauge = self.open_now.get_or_create(&labels).clone();
        gauge.inc();
        OpenGuard(gauge)
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
            self.open_now
                .get(&ConnLabels {
                    direction,
                    protocol,
                })
                .map(|g| g.get())
        })
        .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    fn metrics() -> (Registry, ConnectionMetrics) {
        let mut registry = Registry::with_prefix("braid");
        let m = ConnectionMetrics::register(&mut registry);
        (registry, m)
    }

    #[test]
    fn exports_accepted_and_open_connections() {
        let (registry, m) = metrics();
        let guard = m.open(Direction::outbound, ConnProtocol::passthrough);
        drop(m.open(Direction::outbound, ConnProtocol::passthrough));
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"braid_tcp_connections_total{direction="outbound",protocol="passthrough"} 2"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"braid_tcp_connections_open{direction="outbound",protocol="passthrough"} 1"#
            ),
            "{text}"
        );
        drop(guard);
    }

    #[test]
    fn open_connections_sum_over_protocols_per_direction() {
        let (_registry, m) = metrics();
        assert_eq!(m.open_connections(Direction::outbound), 0);
        let a = m.open(Direction::outbound, ConnProtocol::http1);
        let b = m.open(Direction::outbound, ConnProtocol::passthrough);
        let c = m.open(Direction::inbound, ConnProtocol::tcp);
        assert_eq!(m.open_connections(Direction::outbound), 2);
        assert_eq!(m.open_connections(Direction::inbound), 1);
        drop((a, c));
        assert_eq!(m.open_connections(Direction::outbound), 1);
        drop(b);
        assert_eq!(m.open_connections(Direction::outbound), 0);
    }
}
