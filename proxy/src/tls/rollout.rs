//! Which callers originate mTLS to an endpoint: pure decisions, no I/O.
//!
//! During a rollout a caller is in or out by a stable hash of its pod, so raising the
//! percentage only ever adds callers (10 % → 25 % keeps the first 10 %), and a caller does
//! not flip between plaintext and mTLS from one config version to the next.

use std::hash::Hasher;
use std::sync::Arc;

use crate::config::tls::TlsMode;
use crate::config::{Endpoint, Identity, Node};

/// A caller's place in every rollout: 0–99, the same for the pod's whole life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RolloutBucket(u8);

impl RolloutBucket {
    /// The bucket of the pod `namespace/name` (FNV-1a, fixed by its definition, so every
    /// proxy version puts the pod in the same bucket).
    pub fn of(node: &Node) -> Self {
        let mut h = fnv::FnvHasher::default();
        h.write(node.namespace.as_bytes());
        h.write(b"/");
        h.write(node.workload.as_bytes());
        Self((h.finish() % 100) as u8)
    }

    /// Whether a caller in this bucket falls inside `percent`.
    pub fn inside(self, percent: u8) -> bool {
        self.0 < percent
    }
}

/// The identity to expect when this caller originates mTLS to `endpoint` on `port`, or
/// `None` for plaintext: the endpoint runs a braid proxy with a known identity, its mode on
/// that port is not `Disabled`, and under `Permissive` the caller falls in the rollout.
pub fn originate(endpoint: &Endpoint, port: u16, caller: RolloutBucket) -> Option<Arc<Identity>> {
    let tls = endpoint.tls.as_ref()?;
    let identity = endpoint.identity.as_ref().filter(|_| endpoint.meshed)?;
    let yes = match tls.mode_for(port) {
        TlsMode::Disabled => false,
        TlsMode::Strict => true,
        TlsMode::Permissive => caller.inside(tls.rollout_percent),
    };
    yes.then(|| Arc::new(identity.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::{EndpointTls, PortMode};

    fn node(name: &str) -> Node {
        Node {
            workload: name.into(),
            namespace: "shop".into(),
            ..Node::default()
        }
    }

    fn endpoint(mode: TlsMode, percent: u8) -> Endpoint {
        Endpoint {
            address: "10.0.0.1".parse().unwrap(),
            labels: Default::default(),
            identity: Some(Identity(
                "spiffe://cluster.local/ns/shop/sa/payments".into(),
            )),
            meshed: true,
            tls: Some(EndpointTls {
                mode,
                rollout_percent: percent,
                port_overrides: vec![PortMode {
                    port: 9090,
                    mode: TlsMode::Disabled,
                }],
            }),
        }
    }

    #[test]
    fn buckets_are_stable_and_spread() {
        assert_eq!(
            RolloutBucket::of(&node("web-0")),
            RolloutBucket::of(&node("web-0"))
        );
        let inside_25 = (0..1000)
            .filter(|i| RolloutBucket::of(&node(&format!("web-{i}"))).inside(25))
            .count();
        assert!(
            (200..=300).contains(&inside_25),
            "{inside_25} of 1000 inside 25%"
        );
        // Raising the percentage keeps everyone already inside.
        for i in 0..200 {
            let b = RolloutBucket::of(&node(&format!("web-{i}")));
            assert!(!b.inside(10) || b.inside(25));
            assert!(!b.inside(0) && b.inside(100));
        }
    }

    #[test]
    fn originates_only_to_meshed_endpoints_whose_mode_and_rollout_say_so() {
        let caller = RolloutBucket(42);
        let id = |e: &Endpoint, port| originate(e, port, caller).map(|i| i.0.clone());
        let expected = Some("spiffe://cluster.local/ns/shop/sa/payments".to_string());
        assert_eq!(id(&endpoint(TlsMode::Strict, 0), 8080), expected);
        assert_eq!(
            id(&endpoint(TlsMode::Strict, 0), 9090),
            None,
            "port override"
        );
        assert_eq!(id(&endpoint(TlsMode::Permissive, 43), 8080), expected);
        assert_eq!(id(&endpoint(TlsMode::Permissive, 42), 8080), None);
        assert_eq!(id(&endpoint(TlsMode::Disabled, 100), 8080), None);
        let mut unmeshed = endpoint(TlsMode::Strict, 100);
        unmeshed.meshed = false;
        assert_eq!(id(&unmeshed, 8080), None);
        let mut anonymous = endpoint(TlsMode::Strict, 100);
        anonymous.identity = None;
        assert_eq!(id(&anonymous, 8080), None);
    }
}
