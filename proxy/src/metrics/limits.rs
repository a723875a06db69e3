//! The limits' metrics: connections and requests cut off by a timeout or a size, and
//! pauses at the connection cap (see [`crate::limits::Limits`]).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::Direction;

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

/// `braid_connection_limits_total`.
pub struct LimitMetrics {
    reached: Family<LimitLabels, Counter>,
}

impl LimitMetrics {
    /// Registers the limits' metrics in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let reached = Family::<LimitLabels, Counter>::default();
        registry.register(
            "connection_limits",
            "Connections and requests cut off by a limit: timeouts, oversized heads, and pauses at the connection cap",
            reached.clone(),
        );
        Self { reached }
    }

    /// Counts a connection or request cut off by `limit`.
    pub fn reached(&self, direction: Direction, limit: Limit) {
        self.reached
            .get_or_create(&LimitLabels { direction, limit })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;

    #[test]
    fn exports_limits_by_direction() {
        let mut registry = Registry::with_prefix("braid");
        let m = LimitMetrics::register(&mut registry);
        m.reached(Direction::inbound, Limit::header_too_large);
        m.reached(Direction::outbound, Limit::max_connections);
        m.reached(Direction::outbound, Limit::max_connections);
        let text = encode(&registry);
        assert!(
            text.contains(
                r#"braid_connection_limits_total{direction="inbound",limit="header_too_large"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"braid_connection_limits_total{direction="outbound",limit="max_connections"} 2"#
            ),
            "{text}"
        );
    }
}
