//! ALPN between proxies: it names the application protocol inside the tunnel, so the
//! server's proxy needs no detection, and its `braid/` prefix marks the connection as the
//! mesh's own (an app's TLS on a Permissive port passes through to the app untouched).

use crate::config::Protocol;

/// What a mesh connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    /// HTTP/2 requests.
    Http2,
    /// HTTP/1.1 requests.
    Http1,
    /// Opaque bytes.
    Tcp,
}

impl Alpn {
    /// Every protocol, as offered and accepted on the wire.
    pub const ALL: [Alpn; 3] = [Alpn::Http2, Alpn::Http1, Alpn::Tcp];

    /// The ALPN protocol name.
    pub fn wire(self) -> &'static [u8] {
        match self {
            Alpn::Http2 => b"braid/h2",
            Alpn::Http1 => b"braid/http1.1",
            Alpn::Tcp => b"braid/tcp",
        }
    }

    /// The protocol named `wire`, if it is one of braid's.
    pub fn from_wire(wire: &[u8]) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.wire() == wire)
    }

    /// How the server's proxy serves what is inside; TCP keeps the port's own protocol
    /// (it may still be detected there, as for plaintext).
    pub fn protocol(self, port_protocol: Protocol) -> Protocol {
        match self {
            Alpn::Http2 => Protocol::Http2,
            Alpn::Http1 => Protocol::Http1,
            Alpn::Tcp => port_protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_only_braids_are_known() {
        for a in Alpn::ALL {
            assert_eq!(Alpn::from_wire(a.wire()), Some(a));
        }
        assert_eq!(Alpn::from_wire(b"h2"), None);
        assert_eq!(Alpn::Tcp.protocol(Protocol::Detect), Protocol::Detect);
        assert_eq!(Alpn::Http2.protocol(Protocol::Detect), Protocol::Http2);
    }
}
