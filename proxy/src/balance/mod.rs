//! Load balancing within a group: power of two choices over a peak-EWMA of each
//! endpoint's latency, weighted by its requests in flight (as linkerd2-proxy and
//! Finagle do), skipping endpoints that outlier detection ejected, and easing endpoints
//! that return or join into their share (slow start). The load and the outlier record
//! of an endpoint outlive config versions, so a config change does not forget which
//! endpoints are slow or bad.

pub mod carry;
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

    /// Every endpoint's latency estimate and outlier record, for a successor proxy.
    pub fn carried(&self, now: std::time::Instant) -> Vec<carry::Carried> {
        self.by_addr
            .iter()
            .map(|(addr, (load, health))| carry::Carried {
                addr: *addr,
                rtt_ns: load.rtt_ns(now),
                outlier: health.carried(now),
            })
            .collect()
    }

    /// Takes over what a predecessor proxy knew of the endpoints this version has.
    pub fn resume(&self, carried: &[carry::Carried], now: std::time::Instant) {
        for c in carried {
            if let Some((load, health)) = self.by_addr.get(&c.addr) {
                load.resume(c.rtt_ns, now);
                health.resume(&c.outlier, now);
            }
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
    fn a_successor_takes_over_latencies_and_ejections() {
        let now = std::time::Instant::now();
        let mut old = Loads::default();
        let slow = old.endpoint("10.0.0.1:80".parse().unwrap());
        let bad = old.endpoint("10.0.0.2:80".parse().unwrap());
        slow.load
            .observe(std::time::Duration::from_millis(250), now);
        let policy = outlier::OutlierPolicy::compile(
            &crate::config::outlier::OutlierDetection {
                consecutive_errors: 1,
                error_rate: None,
                base_ejection_time_ms: 30_000,
                max_ejection_time_ms: 300_000,
                max_ejection_percent: 100,
            },
            "t",
        )
        .unwrap();
        let group = [slow.clone(), bad.clone()];
        assert!(matches!(
            record(&bad, &group, true, now, &policy),
            Verdict::Ejected(..)
        ));
        let carried = old.carried(now);
        let json = serde_json::to_string(&carried).unwrap();
        let carried: Vec<carry::Carried> = serde_json::from_str(&json).unwrap();

        // The successor's own tables, built from the same config.
        let mut new = Loads::default();
        let slow2 = new.endpoint(slow.addr);
        let bad2 = new.endpoint(bad.addr);
        let later = now + std::time::Duration::from_secs(1);
        new.resume(&carried, later);
        assert_eq!(slow2.load.cost(later), slow.load.cost(now));
        assert!(bad2.health.check(later).0, "the ejection was forgotten");
        assert!(
            bad2.health
                .check(later + std::time::Duration::from_secs(29))
                .0
        );
        assert!(
            !bad2
                .health
                .check(later + std::time::Duration::from_secs(31))
                .0
        );
        // Its next ejection doubles, as it would have in the predecessor.
        let again = later + std::time::Duration::from_secs(40);
        match record(&bad2, &[slow2, bad2.clone()], true, again, &policy) {
            Verdict::Ejected(_, length) => {
                assert_eq!(length, std::time::Duration::from_secs(60))
            }
            other => panic!("{other:?}"),
        }
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
