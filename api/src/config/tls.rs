//! Mutual TLS in `ProxyConfig`: the roots that verify peers, what this workload's inbound
//! side accepts, and, per endpoint, what its server accepts and what share of callers
//! originate mTLS to it (the operator compiles these from EncryptionPolicies).

use serde::{Deserialize, Serialize};

/// What a server accepts, as in an EncryptionPolicy's `mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TlsMode {
    /// Plaintext only; callers do not originate mTLS.
    #[default]
    Disabled,
    /// mTLS and plaintext on the same port, told apart by the first bytes.
    Permissive,
    /// mTLS only: plaintext connections are closed and counted.
    Strict,
}

/// A port whose mode differs from the default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMode {
    /// The port (on the server).
    pub port: u16,
    /// Its mode.
    pub mode: TlsMode,
}

/// What this workload's inbound side accepts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundTls {
    /// The mode of every port not overridden.
    #[serde(default)]
    pub mode: TlsMode,
    /// Ports with a mode of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_overrides: Vec<PortMode>,
}

impl InboundTls {
    /// The mode of `port`.
    pub fn mode_for(&self, port: u16) -> TlsMode {
        mode_for(self.mode, &self.port_overrides, port)
    }

    /// Whether any port accepts mTLS (so the proxy needs a certificate to serve).
    pub fn needs_certificate(&self) -> bool {
        self.mode != TlsMode::Disabled
            || self
                .port_overrides
                .iter()
                .any(|p| p.mode != TlsMode::Disabled)
    }
}

/// What an endpoint's server accepts and what share of callers originate mTLS to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointTls {
    /// The server's mode on ports not overridden.
    #[serde(default)]
    pub mode: TlsMode,
    /// The share of callers (0–100, by a stable hash of the caller's pod) that originate
    /// mTLS while `mode` is `Permissive`. `Strict` means every caller; `Disabled` none.
    #[serde(default)]
    pub rollout_percent: u8,
    /// Ports with a mode of their own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_overrides: Vec<PortMode>,
}

impl EndpointTls {
    /// The server's mode on `port`.
    pub fn mode_for(&self, port: u16) -> TlsMode {
        mode_for(self.mode, &self.port_overrides, port)
    }
}

fn mode_for(default: TlsMode, overrides: &[PortMode], port: u16) -> TlsMode {
    overrides
        .iter()
        .find(|p| p.port == port)
        .map_or(default, |p| p.mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_overrides_win_over_the_default() {
        let tls = InboundTls {
            mode: TlsMode::Strict,
            port_overrides: vec![PortMode {
                port: 9090,
                mode: TlsMode::Disabled,
            }],
        };
        assert_eq!(tls.mode_for(8080), TlsMode::Strict);
        assert_eq!(tls.mode_for(9090), TlsMode::Disabled);
        assert!(tls.needs_certificate());
        let plain = InboundTls {
            mode: TlsMode::Disabled,
            port_overrides: vec![],
        };
        assert!(!plain.needs_certificate());
    }
}
