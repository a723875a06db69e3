//! Load balancing within a group: power of two choices over a peak-EWMA of each
//! endpoint's latency, weighted by its requests in flight (as linkerd2-proxy and
//! Finagle do), skipping endpoints that outlier detection ejected. The load and the
//! outlier record of an endpoint outlive config versions, so a config change does not
//! forget which endpoints are slow or bad.

mod ejection;
mod load;
pub mod outlier;
mod p2c;

pub use ejection::{Health, Verdict, record};
pub use load::{EndpointLoad, InFlight};
pub use p2c::{Picked, pick};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// An endpoint of a group and its load.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Where it is reached.
    pub addr: SocketAddr,
    /// Its latency estimate and requests in flight, shared by every group that has it.
    pub load: Arc<EndpointLoad>,
    /// Its outlier record, shared likewise.
    pub health: Arc<Health>,
    /// The identity its proxy must present when this caller originates mTLS to it;
    /// `None`: plaintext. Requests to it use pooled connections of this kind only.
    pub tls: Option<Arc<crate::config::Identity>>,
}

impl Endpoint {
    /// How connections to it are pooled.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            addr: self.addr,
            tls: self.tls.clone(),
        }
    }
}

/// A kind of upstream connection: to an address, plaintext or mTLS to an expected
/// identity. When a config changes an endpoint's kind, its requests move to connections
/// of the new kind while those of the old finish.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Upstream {
    /// Where.
    pub addr: SocketAddr,
    /// The server identity mTLS expects; `None`: plaintext.
    pub tls: Option<Arc<crate::config::Identity>>,
}

/// The loads of every endpoint of a config, by address: a new config version takes the
/// loads of endpoints it keeps from the previous one.
#[derive(Debug, Default)]
pub struct Loads(HashMap<SocketAddr, (Arc<EndpointLoad>, Arc<Health>)>);

impl Loads {
    /// Starts from the loads of the previous version's endpoints.
    pub fn carried_from(previous: &Loads) -> Self {
        Self(previous.0.clone())
    }

    /// The endpoint at `addr`, with its existing load and record or fresh ones.
    pub fn endpoint(&mut self, addr: SocketAddr) -> Endpoint {
        let (load, health) = self.0.entry(addr).or_default().clone();
        Endpoint {
            addr,
            load,
            health,
            tls: None,
        }
    }

    /// Forgets endpoints that are not in `keep` (called once a version is built).
    pub fn retain(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        self.0.retain(|addr, _| keep(addr));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_carry_over_for_endpoints_that_stay() {
        let mut first = Loads::default();
        let a = first.endpoint("10.0.0.1:80".parse().unwrap());
        let _b = first.endpoint("10.0.0.2:80".parse().unwrap());
        let mut second = Loads::carried_from(&first);
        second.retain(|addr| addr.ip().to_string() == "10.0.0.1");
        let again = second.endpoint(a.addr);
        assert!(Arc::ptr_eq(&a.load, &again.load));
        assert_eq!(second.0.len(), 1);
    }
}
