//! Load balancing within a group: power of two choices over a peak-EWMA of each
//! endpoint's latency, weighted by its requests in flight (as linkerd2-proxy and
//! Finagle do), skipping endpoints that outlier detection ejected, and easing endpoints
//! that return or join into their share (slow start). The load and the outlier record
//! of an endpoint outlive config versions, so a config change does not forget which
//! endpoints are slow or bad.

mod ejection;
mod load;
pub mod outlier;
mod p2c;
pub mod slow_start;

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
pub struct Loads {
    by_addr: HashMap<SocketAddr, (Arc<EndpointLoad>, Arc<Health>)>,
    /// Endpoints new to this version warm up (slow start): the proxy was already sending
    /// to others. The first version's endpoints start level, all at once.
    warm_new: bool,
}

impl Loads {
    /// Starts from the loads of the previous version's endpoints.
    pub fn carried_from(previous: &Loads) -> Self {
        Self {
            by_addr: previous.by_addr.clone(),
            warm_new: !previous.by_addr.is_empty(),
        }
    }

    /// The endpoint at `addr`, with its existing load and record or fresh ones.
    pub fn endpoint(&mut self, addr: SocketAddr) -> Endpoint {
        let warm_new = self.warm_new;
        let (load, health) = self
            .by_addr
            .entry(addr)
            .or_insert_with(|| {
                let health = Arc::<Health>::default();
                if warm_new {
                    health.warmup.start(std::time::Instant::now());
                }
                (Arc::default(), health)
            })
            .clone();
        Endpoint {
            addr,
            load,
            health,
            tls: None,
        }
    }

    /// Forgets endpoints that are not in `keep` (called once a version is built).
    pub fn retain(&mut self, keep: impl Fn(&SocketAddr) -> bool) {
        self.by_addr.retain(|addr, _| keep(addr));
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
        assert_eq!(second.by_addr.len(), 1);
    }

    #[test]
    fn an_endpoint_that_joins_a_running_group_warms_up_and_the_first_ones_do_not() {
        let now = std::time::Instant::now();
        let mut first = Loads::default();
        let a = first.endpoint("10.0.0.1:80".parse().unwrap());
        assert_eq!(a.health.warmup.weight(now), 1.0);
        let mut second = Loads::carried_from(&first);
        let a = second.endpoint(a.addr);
        let b = second.endpoint("10.0.0.2:80".parse().unwrap());
        assert_eq!(a.health.warmup.weight(now), 1.0, "kept: warm");
        assert!(b.health.warmup.weight(now) < 0.2, "joined: warming");
    }
}
