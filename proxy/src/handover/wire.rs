//! The messages two proxies exchange over the handover socket, and how each is framed.
//!
//! A frame is a 12-byte header (the lengths of its JSON message and of its raw payload,
//! and how many file descriptors ride with the header), then the JSON, then the payload.
//! File descriptors travel as `SCM_RIGHTS` attached to the header alone, so a reader at a
//! frame boundary receives them with the header that counts them. JSON, and unknown
//! fields ignored, so an older and a newer proxy can hand over to each other (upgrade and
//! downgrade alike).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use braid_api::config::ProxyConfig;

use crate::config::Side;

/// The protocol's version; a proxy refuses a peer of another major version by name.
pub const VERSION: u32 = 1;
/// The header's length in bytes.
pub const HEADER_LEN: usize = 12;
/// The largest JSON message: a config for thousands of services is ~9 MB, and the file
/// source refuses more than 64 MiB.
pub const MAX_MESSAGE: u32 = 80 * 1024 * 1024;
/// The largest payload: the bytes a connection had read and not yet used (a head at most).
pub const MAX_PAYLOAD: u32 = 1024 * 1024;
/// The most descriptors one frame carries (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: u32 = 250;

/// One message.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Message {
    /// The successor's first word.
    Hello {
        /// Its protocol version.
        version: u32,
        /// Its process id, for the logs.
        pid: u32,
    },
    /// What the running proxy hands over; its frame carries one descriptor per listener,
    /// in order.
    Offer(Box<Offer>),
    /// The successor accepts on every listener: the running proxy stops accepting.
    Ready,
    /// One connection handed over between requests; its frame carries the socket, and the
    /// payload the bytes already read from it.
    Connection {
        /// Which listener accepted it (how the successor serves it).
        role: Role,
        /// What it speaks.
        spoken: Spoken,
    },
    /// An opaque TCP tunnel handed over; its frame carries the client's socket, then the
    /// upstream's, and the payload the bytes read from one and not yet written to the
    /// other: the first `to_upstream` for the upstream, the rest for the client.
    Tunnel {
        /// Which listener accepted the client's connection.
        role: Role,
        /// How many payload bytes go to the upstream.
        to_upstream: u32,
    },
    /// The running proxy has handed over or finished every connection, and exits.
    Done,
    /// The running proxy will not hand over, and why.
    Refused {
        /// Why, for the successor's log.
        reason: String,
    },
}

/// What a running proxy hands its successor besides connections.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    /// Its protocol version.
    pub version: u32,
    /// Its listeners, in the order of the frame's descriptors.
    pub listeners: Vec<ListenerEntry>,
    /// The config in force, so the successor serves at once with the same one.
    pub config: Option<ProxyConfig>,
    /// The mesh identity in force, so the successor terminates and originates mTLS from
    /// its first connection without asking the operator for a certificate.
    pub identity: Option<PassedIdentity>,
    /// What it knows of its endpoints (latencies, ejections), so the successor balances
    /// as it did and does not send to an endpoint it had ejected.
    #[serde(default)]
    pub endpoints: Vec<crate::balance::carry::Carried>,
    /// Whether the frame's last descriptor is the handover socket's own listener, on
    /// which the successor offers to the proxy after it.
    #[serde(default)]
    pub handover_socket: bool,
}

/// A listening socket and what it is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerEntry {
    /// What it serves.
    pub role: Role,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "camelCase")]
pub enum Role {
    /// The outbound capture port.
    Outbound,
    /// The inbound capture port.
    Inbound,
    /// The admin server.
    Admin,
    /// The health server (the kubelet's probes).
    Health,
    /// An explicit listener of the config.
    Explicit {
        /// Its name in the config (shared: every connection of the listener knows it).
        name: std::sync::Arc<str>,
        /// Its side.
        side: Side,
    },
}

/// What a connection handed over speaks: the successor goes on with it, rather than
/// wait for bytes to detect (an idle connection sends none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Spoken {
    /// HTTP/1.1, between requests.
    Http1,
}

/// A mesh identity as it crosses the socket: DER, base64 in the JSON.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PassedIdentity {
    /// The certificate, then the CA's chain.
    pub chain: Vec<String>,
    /// The PKCS#8 private key.
    pub key: String,
    /// The roots that verify peers.
    pub trust: Vec<String>,
}

impl std::fmt::Debug for PassedIdentity {
    // Never the key, whoever logs a message.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassedIdentity")
            .field("chain", &self.chain.len())
            .field("key", &"(redacted)")
            .field("trust", &self.trust.len())
            .finish()
    }
}

/// A frame's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The JSON message's length.
    pub message: u32,
    /// The payload's length.
    pub payload: u32,
    /// How many descriptors came with the header.
    pub fds: u32,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A length beyond its limit: the peer is not a braid proxy, or is broken.
    #[error("the handover peer sent a frame of {what} {got} bytes, over the limit of {limit}")]
    TooLarge {
        /// Which length.
        what: &'static str,
        /// What it said.
        got: u32,
        /// The limit.
        limit: u32,
    },
    /// The message is not JSON of a known kind.
    #[error("the handover peer sent a message that does not parse: {0}")]
    Json(#[from] serde_json::Error),
}

impl Header {
    /// The header's bytes.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let mut out = [0; HEADER_LEN];
        out[..4].copy_from_slice(&self.message.to_be_bytes());
        out[4..8].copy_from_slice(&self.payload.to_be_bytes());
        out[8..].copy_from_slice(&self.fds.to_be_bytes());
        out
    }

    /// The header in `bytes`, checked against the limits.
    pub fn decode(bytes: [u8; HEADER_LEN]) -> Result<Self, WireError> {
        let word =
            |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let header = Self {
            message: word(0),
            payload: word(4),
            fds: word(8),
        };
        for (what, got, limit) in [
            ("message", header.message, MAX_MESSAGE),
            ("payload", header.payload, MAX_PAYLOAD),
            ("descriptors", header.fds, MAX_FDS),
        ] {
            if got > limit {
                return Err(WireError::TooLarge { what, got, limit });
            }
        }
        Ok(header)
    }
}

impl Message {
    /// The message's JSON.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        Ok(serde_json::to_vec(self)?)
    }

    /// The message in `json`.
    pub fn decode(json: &[u8]) -> Result<Self, WireError> {
        Ok(serde_json::from_slice(json)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_oversized_ones_are_refused() {
        let h = Header {
            message: 10,
            payload: 3,
            fds: 2,
        };
        assert_eq!(Header::decode(h.encode()).unwrap(), h);
        let big = Header {
            fds: MAX_FDS + 1,
            ..h
        };
        let err = Header::decode(big.encode()).unwrap_err().to_string();
        assert!(err.contains("descriptors 251"), "{err}");
    }

    #[test]
    fn an_offer_round_trips_and_unknown_fields_are_ignored() {
        let offer = Message::Offer(Box::new(Offer {
            version: VERSION,
            listeners: vec![
                ListenerEntry {
                    role: Role::Explicit {
                        name: "ingress".into(),
                        side: Side::Inbound,
                    },
                    addr: "0.0.0.0:8443".parse().unwrap(),
                },
                ListenerEntry {
                    role: Role::Health,
                    addr: "[::]:15021".parse().unwrap(),
                },
            ],
            config: Some(ProxyConfig::default()),
            identity: None,
            endpoints: Vec::new(),
            handover_socket: true,
        }));
        let json = offer.encode().unwrap();
        let Message::Offer(back) = Message::decode(&json).unwrap() else {
            panic!("not an offer");
        };
        assert_eq!(back.listeners.len(), 2);
        assert_eq!(
            back.listeners[0].role,
            Role::Explicit {
                name: "ingress".into(),
                side: Side::Inbound
            }
        );
        // A newer peer's extra fields do not stop an older one.
        let newer =
            br#"{"kind":"connection","role":{"role":"inbound"},"spoken":"http1","tls":"x"}"#;
        assert!(matches!(
            Message::decode(newer).unwrap(),
            Message::Connection {
                role: Role::Inbound,
                spoken: Spoken::Http1
            }
        ));
        assert!(Message::decode(br#"{"kind":"launch"}"#).is_err());
    }
}
