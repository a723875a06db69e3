//! What proxies reported of their AccessPolicies' decisions, kept for the longest window
//! any status or rollout looks back over, and summed per policy on demand.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use braid_api::control::AccessCount;

/// Reports kept at most; beyond this the oldest go first.
const MAX_SAMPLES: usize = 200_000;

/// One policy's counts from one report.
#[derive(Debug)]
struct Sample {
    at: Instant,
    count: AccessCount,
}

/// A caller the policy refused or would refuse, and what it asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Refused {
    /// Its verified identity; `None` in plaintext.
    pub identity: Option<String>,
    /// Its address.
    pub address: Option<IpAddr>,
    /// `METHOD /path`, for HTTP.
    pub request: Option<String>,
}

/// What the covering proxies' reports of one policy add up to over a window.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Let through.
    pub allowed: u64,
    /// Would have been refused (Audit).
    pub would_deny: u64,
    /// Refused (Enforce).
    pub denied: u64,
    /// Refused and would-be refused callers: (would deny, denied, let through while
    /// auditing).
    pub refused: HashMap<Refused, (u64, u64, bool)>,
}

impl Evidence {
    /// Every request decided.
    pub fn requests(&self) -> u64 {
        self.allowed + self.would_deny + self.denied
    }

    /// The first caller refused though it was let through while the policy audited.
    pub fn refused_after_allowed(&self) -> Option<&Refused> {
        let mut found: Vec<&Refused> = self
            .refused
            .iter()
            .filter(|(_, (_, denied, before))| *before && *denied > 0)
            .map(|(k, _)| k)
            .collect();
        found.sort();
        found.first().copied()
    }
}

/// Recent reports.
#[derive(Debug, Default)]
pub struct AccessBook {
    samples: VecDeque<Sample>,
    first: Option<Instant>,
}

impl AccessBook {
    /// Adds one proxy's report, received at `now`.
    pub fn add(&mut self, counts: Vec<AccessCount>, now: Instant) {
        for count in counts {
            if self.samples.len() >= MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(Sample { at: now, count });
        }
    }

    /// Notes that this replica began listening at `now`, reports or not: a window is
    /// covered once it has listened that long.
    pub fn listening(&mut self, now: Instant) {
        self.first.get_or_insert(now);
    }

    /// Forgets what this replica heard: it no longer leads, and a leader again must not
    /// count on reports it did not all receive.
    pub fn forget(&mut self) {
        self.samples.clear();
        self.first = None;
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

    /// Whether reports have been heard for at least `window`.
    pub fn covers(&self, window: Duration, now: Instant) -> bool {
        self.first
            .is_some_and(|first| now.duration_since(first) >= window)
    }

    /// What the reports of `policy` (`namespace/name`) since `since` add up to.
    pub fn sum(&self, policy: &str, since: Instant) -> Evidence {
        let mut out = Evidence::default();
        for s in self
            .samples
            .iter()
            .filter(|s| s.at >= since && s.count.policy == policy)
        {
            out.allowed += s.count.allowed;
            out.would_deny += s.count.would_deny;
            out.denied += s.count.denied;
            for r in &s.count.refused_sources {
                let key = Refused {
                    identity: r.identity.clone(),
                    address: r.address,
                    request: r.request.clone(),
                };
                let e = out.refused.entry(key).or_default();
                e.0 += r.would_deny;
                e.1 += r.denied;
                e.2 |= r.allowed_before;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use braid_api::control::RefusedSource;

    use super::*;

    #[test]
    fn reports_add_up_per_policy_over_the_window() {
        let mut book = AccessBook::default();
        let t0 = Instant::now();
        book.listening(t0);
        let count = |policy: &str, denied, before| AccessCount {
            policy: policy.into(),
            allowed: 5,
            would_deny: 1,
            denied,
            refused_sources: vec![RefusedSource {
                identity: Some("spiffe://cluster.local/ns/shop/sa/b".into()),
                address: Some("10.0.0.2".parse().unwrap()),
                request: Some("GET /".into()),
                would_deny: 1,
                denied,
                allowed_before: before,
            }],
        };
        book.add(
            vec![count("shop/p", 0, false), count("shop/q", 0, false)],
            t0,
        );
        let t1 = t0 + Duration::from_secs(10);
        book.add(vec![count("shop/p", 2, true)], t1);
        let all = book.sum("shop/p", t0);
        assert_eq!((all.allowed, all.would_deny, all.denied), (10, 2, 2));
        assert_eq!(all.requests(), 14);
        assert_eq!(all.refused.len(), 1);
        assert!(all.refused_after_allowed().is_some());
        let recent = book.sum("shop/p", t1);
        assert_eq!(recent.allowed, 5);
        assert!(book.covers(Duration::from_secs(10), t1));
        assert!(!book.covers(Duration::from_secs(11), t1));
        book.prune(t1 + Duration::from_secs(5), Duration::from_secs(10));
        assert_eq!(
            book.sum("shop/p", t0).allowed,
            5,
            "the first report is gone"
        );
        book.forget();
        assert!(!book.covers(Duration::ZERO, t1));
    }
}
