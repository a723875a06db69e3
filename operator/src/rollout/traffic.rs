//! What proxies reported of their requests, kept for the longest window any rollout or
//! status looks back over, and summed per EncryptionPolicy on demand.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use braid_api::control::Traffic;

use crate::registry::ObjectKey;

/// Reports kept at most; beyond this the oldest go first.
const MAX_SAMPLES: usize = 200_000;

/// One proxy's report.
#[derive(Debug)]
struct Sample {
    at: Instant,
    reporter: ObjectKey,
    traffic: Traffic,
}

/// Inbound requests to a set of workloads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Inbound {
    /// Over mTLS.
    pub mtls: u64,
    /// In plaintext.
    pub plaintext: u64,
    /// Plaintext requests by source address.
    pub sources: HashMap<IpAddr, u64>,
}

/// Recent reports.
#[derive(Debug, Default)]
pub struct TrafficBook {
    samples: VecDeque<Sample>,
    first: Option<Instant>,
}

impl TrafficBook {
    /// Adds `reporter`'s report, received at `now`.
    pub fn add(&mut self, reporter: ObjectKey, traffic: Traffic, now: Instant) {
        self.first.get_or_insert(now);
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: now,
            reporter,
            traffic,
        });
    }

    /// Forgets reports older than `keep`.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        while self
            .samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > keep)
        {
            self.samples.pop_front();
        }
    }

    /// Whether reports have been coming in for at least `window` (a fresh operator knows
    /// nothing of what happened before it started).
    pub fn covers(&self, window: Duration, now: Instant) -> bool {
        self.first
            .is_some_and(|first| now.duration_since(first) >= window)
    }

    fn since(&self, since: Instant) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.at >= since)
    }

    /// Requests reaching the pods `pods` picks, since `since`.
    pub fn inbound(&self, since: Instant, pods: impl Fn(&ObjectKey) -> bool) -> Inbound {
        let mut out = Inbound::default();
        for s in self.since(since).filter(|s| pods(&s.reporter)) {
            out.mtls += s.traffic.inbound_mtls;
            out.plaintext += s.traffic.inbound_plaintext;
            for src in &s.traffic.plaintext_sources {
                *out.sources.entry(src.address).or_default() += src.requests;
            }
        }
        out
    }

    /// Callers' (requests, failures) to the service ports `targets` picks (by
    /// `name.namespace:port`), since `since`.
    pub fn outbound(&self, since: Instant, targets: impl Fn(&str) -> bool) -> (u64, u64) {
        let mut requests = 0;
        let mut failures = 0;
        for t in self
            .since(since)
            .flat_map(|s| &s.traffic.outbound)
            .filter(|t| targets(&t.target))
        {
            requests += t.requests;
            failures += t.failures;
        }
        (requests, failures)
    }
}

/// The Service a target label (`name.namespace:port`) names.
pub fn service_of(target: &str) -> Option<ObjectKey> {
    let (host, _port) = target.rsplit_once(':')?;
    let (name, namespace) = host.split_once('.')?;
    Some(ObjectKey {
        namespace: namespace.into(),
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use braid_api::control::{SourceCount, TargetCount};

    fn key(name: &str) -> ObjectKey {
        ObjectKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn sums_per_window_and_per_set() {
        let t0 = Instant::now();
        let mut book = TrafficBook::default();
        let plain = |n, from: [u8; 4]| Traffic {
            inbound_plaintext: n,
            plaintext_sources: vec![SourceCount {
                address: from.into(),
                requests: n,
            }],
            ..Traffic::default()
        };
        book.add(key("payments-0"), plain(5, [10, 0, 0, 9]), t0);
        book.add(
            key("payments-0"),
            Traffic {
                inbound_mtls: 7,
                ..plain(2, [10, 0, 0, 9])
            },
            t0 + Duration::from_secs(5),
        );
        book.add(
            key("ledger-0"),
            plain(100, [10, 0, 0, 8]),
            t0 + Duration::from_secs(5),
        );
        book.add(
            key("web-0"),
            Traffic {
                outbound: vec![
                    TargetCount {
                        target: "payments.shop:80".into(),
                        requests: 50,
                        failures: 5,
                    },
                    TargetCount {
                        target: "ledger.shop:80".into(),
                        requests: 10,
                        failures: 10,
                    },
                ],
                ..Traffic::default()
            },
            t0 + Duration::from_secs(6),
        );
        let payments = |k: &ObjectKey| k.name.starts_with("payments");
        let all = book.inbound(t0, payments);
        assert_eq!((all.mtls, all.plaintext), (7, 7));
        assert_eq!(all.sources[&IpAddr::from([10, 0, 0, 9])], 7);
        let recent = book.inbound(t0 + Duration::from_secs(1), payments);
        assert_eq!((recent.mtls, recent.plaintext), (7, 2));
        let to_payments = |t: &str| service_of(t).is_some_and(|s| s.name == "payments");
        assert_eq!(book.outbound(t0, to_payments), (50, 5));
        assert!(book.covers(Duration::from_secs(6), t0 + Duration::from_secs(6)));
        assert!(!book.covers(Duration::from_secs(7), t0 + Duration::from_secs(6)));
        book.prune(t0 + Duration::from_secs(10), Duration::from_secs(6));
        assert_eq!(book.inbound(t0, payments).plaintext, 2);
    }

    #[test]
    fn target_labels_name_their_service() {
        assert_eq!(service_of("payments.shop:80"), Some(key("payments")));
        assert_eq!(service_of("nonsense"), None);
    }
}
