//! What the tables in force decide about one connection, read once when it is accepted:
//! a connection sees one config. (HTTP requests on it are routed by the tables of their
//! own moment, so a route change lands on open connections' next request.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Protocol;
use crate::config::tls::TlsMode;
use crate::http::Route;
use crate::tables::{OutboundTarget, Tables};

/// The connection-level decisions for one accepted connection.
#[derive(Clone, Debug)]
pub struct ConnPolicy {
    /// Where it goes.
    pub target: Arc<OutboundTarget>,
    /// What its port accepts: inbound, the port's mode; outbound, `Disabled` (callers
    /// originate mTLS per endpoint, in the pool).
    pub tls: TlsMode,
    /// Whether its port is opaque: never detected, spliced as TCP.
    pub opaque: bool,
    /// How long detection waits for the client's first bytes.
    pub detect_timeout: Duration,
}

impl ConnPolicy {
    /// An inbound connection to `port`: the app on loopback, under the port's TLS mode.
    pub fn inbound(tables: &Tables, port: u16) -> Self {
        Self::new(
            tables,
            tables.inbound_target(port),
            tables.inbound_tls_mode(port),
            port,
        )
    }

    /// An outbound connection to `dst`; `None` when no service has that address (the
    /// connection passes through unchanged).
    pub fn outbound(tables: &Tables, dst: SocketAddr) -> Option<Self> {
        let target = tables.outbound(dst)?.clone();
        Some(Self::new(tables, target, TlsMode::Disabled, dst.port()))
    }

    /// A connection to `port` of an explicit listener along `route`; `None` when the
    /// listener is no longer configured.
    pub fn listener(tables: &Tables, route: &Route, port: u16, inbound: bool) -> Option<Self> {
        let target = route.resolve(tables)?;
        let tls = if inbound {
            tables.inbound_tls_mode(port)
        } else {
            TlsMode::Disabled
        };
        Some(Self::new(tables, target, tls, port))
    }

    fn new(tables: &Tables, target: Arc<OutboundTarget>, tls: TlsMode, port: u16) -> Self {
        let detection = &tables.config.detection;
        Self {
            target,
            tls,
            opaque: detection.is_opaque(port),
            detect_timeout: Duration::from_millis(detection.timeout_ms),
        }
    }

    /// How a connection declared `declared` (the target's protocol, or what ALPN said
    /// inside braid's mTLS) is served: as declared, except that detection on an opaque
    /// port is TCP.
    pub fn protocol(&self, declared: Protocol) -> Protocol {
        served_as(self.opaque, declared)
    }

    /// Whether the server speaks first (nothing to read before forwarding): TCP, or an
    /// opaque port.
    pub fn server_first(&self) -> bool {
        self.protocol(self.target.protocol) == Protocol::Tcp
    }
}

/// How a connection declared `declared` is served on a port that is (or is not)
/// `opaque`: as declared, except that detection on an opaque port is TCP.
pub fn served_as(opaque: bool, declared: Protocol) -> Protocol {
    match declared {
        Protocol::Detect if opaque => Protocol::Tcp,
        p => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyConfig;

    fn tables(config: serde_json::Value) -> Tables {
        Tables::build(serde_json::from_value::<ProxyConfig>(config).unwrap()).unwrap()
    }

    #[test]
    fn an_inbound_connection_takes_its_ports_mode_and_detection() {
        let t = tables(serde_json::json!({
            "version": "1",
            "inbound": {"tls": {"mode": "Permissive", "portOverrides": [{"port": 9090, "mode": "Strict"}]}},
            "detection": {"timeoutMs": 250, "opaquePorts": [7000]},
        }));
        let http = ConnPolicy::inbound(&t, 8080);
        assert_eq!(http.tls, TlsMode::Permissive);
        assert!(!http.opaque);
        assert_eq!(http.detect_timeout, Duration::from_millis(250));
        assert_eq!(http.target.protocol, Protocol::Detect);
        assert!(!http.server_first());
        assert_eq!(ConnPolicy::inbound(&t, 9090).tls, TlsMode::Strict);
        let opaque = ConnPolicy::inbound(&t, 7000);
        assert!(opaque.opaque);
        assert_eq!(opaque.protocol(opaque.target.protocol), Protocol::Tcp);
        assert!(opaque.server_first());
        // Well-known server-first ports are opaque without being named.
        assert!(ConnPolicy::inbound(&t, 5432).server_first());
    }

    #[test]
    fn an_outbound_connection_to_an_unknown_address_has_no_policy() {
        let t = tables(serde_json::json!({
            "version": "1",
            "inbound": {"tls": {"mode": "Strict"}},
            "services": [{
                "name": "payments", "namespace": "shop", "vips": ["10.96.0.10"],
                "ports": [{"port": 80, "targetPort": 8080, "protocol": "http"}],
                "groups": [{"name": "default", "endpoints": [{"address": "10.0.0.1"}]}],
            }],
        }));
        let known = ConnPolicy::outbound(&t, "10.96.0.10:80".parse().unwrap()).unwrap();
        assert_eq!(known.target.protocol, Protocol::Http);
        assert_eq!(known.tls, TlsMode::Disabled, "not the inbound side's mode");
        assert!(ConnPolicy::outbound(&t, "10.96.0.11:80".parse().unwrap()).is_none());
    }
}
