//! Mesh TLS's metrics: handshakes by direction and result (recorded by
//! `crate::tls::TlsContext`), and connections a Strict port refused (recorded by
//! `crate::connection` and, per request, `crate::http::forward`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Direction;

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

/// `braid_tls_handshakes_total` and `braid_tls_refused_connections_total`.
#[derive(Clone)]
pub struct TlsMetrics {
    handshakes: Family<HandshakeLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
}

impl TlsMetrics {
    /// Registers mesh TLS's metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
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
        Self {
            handshakes,
            refused,
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
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn exports_handshakes_and_refusals() {
        let mut registry = Registry::with_prefix("braid");
        let m = TlsMetrics::register(&mut registry);
        m.handshake(Direction::inbound, HandshakeResult::ok);
        m.handshake(Direction::outbound, HandshakeResult::failed);
        m.handshake(Direction::outbound, HandshakeResult::failed);
        m.refused(8080, RefusedReason::plaintext);
        let text = encode(&registry);
        assert!(
            text.contains(r#"braid_tls_handshakes_total{direction="inbound",result="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"braid_tls_handshakes_total{direction="outbound",result="failed"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"braid_tls_refused_connections_total{port="8080",reason="plaintext"} 1"#
            ),
            "{text}"
        );
    }
}
