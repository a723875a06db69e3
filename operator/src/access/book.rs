//! What proxies reported of their AccessPolicies' decisions: per policy, one bucket per
//! second, kept for the longest window any status or rollout looks back over and summed
//! on demand. Memory is policies × seconds, whatever the number of proxies.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use braid_api::control::AccessCount;

/// Refused callers kept per bucket; the busiest are what status shows.
const MAX_REFUSED_PER_BUCKET: usize = 64;
/// How long one bucket gathers reports.
const BUCKET: Duration = Duration::from_secs(1);

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
    /// Of `denied`, refusals of traffic let through while the policy audited.
    pub denied_allowed_before: u64,
    /// Refused and would-be refused callers: (would deny, denied, let through while
    /// auditing).
    pub refused: HashMap<Refused, (u64, u64, bool)>,
}

impl Evidence {
    /// Every request decided.
    pub fn requests(&self) -> u64 {
        self.allowed
            .saturating_add(self.would_deny)
            .saturating_add(self.denied)
    }

    /// A caller refused though the same traffic was let through while the policy
    /// audited, when there was one: named if the reports named it.
    pub fn refused_after_allowed(&self) -> Option<Refused> {
        if self.denied_allowed_before == 0 {
            return None;
        }
        let mut named: Vec<&Refused> = self
            .refused
            .iter()
            .filter(|(_, (_, denied, before))| *before && *denied > 0)
            .map(|(k, _)| k)
            .collect();
        named.sort();
        Some(named.first().map(|r| (*r).clone()).unwrap_or_default())
    }

    fn add(&mut self, c: &AccessCount) {
        self.allowed = self.allowed.saturating_add(c.allowed);
        self.would_deny = self.would_deny.saturating_add(c.would_deny);
        self.denied = self.denied.saturating_add(c.denied);
        self.denied_allowed_before = self
            .denied_allowed_before
            .saturating_add(c.denied_allowed_before.min(c.denied));
        for r in &c.refused_sources {
            let key = Refused {
                identity: r.identity.clone(),
                address: r.address,
                request: r.request.clone(),
            };
            if self.refused.len() < MAX_REFUSED_PER_BUCKET || self.refused.contains_key(&key) {
                let e = self.refused.entry(key).or_default();
                e.0 = e.0.saturating_add(r.would_deny);
                e.1 = e.1.saturating_add(r.denied);
                e.2 |= r.allowed_before;
            }
        }
    }

    fn merge(&mut self, other: &Evidence) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.would_deny = self.would_deny.saturating_add(other.would_deny);
        self.denied = self.denied.saturating_add(other.denied);
        self.denied_allowed_before = self
            .denied_allowed_before
            .saturating_add(other.denied_allowed_before);
        for (k, (w, d, b)) in &other.refused {
            let e = self.refused.entry(k.clone()).or_default();
            e.0 = e.0.saturating_add(*w);
            e.1 = e.1.saturating_add(*d);
            e.2 |= *b;
        }
    }
}

/// Recent reports, by policy.
#[derive(Debug, Default)]
pub struct AccessBook {
    policies: HashMap<String, VecDeque<(Instant, Evidence)>>,
    first: Option<Instant>,
}

impl AccessBook {
    /// Adds one policy's counts from one proxy's report, received at `at`.
    pub fn add(&mut self, count: &AccessCount, at: Instant) {
        let buckets = self.policies.entry(count.policy.clone()).or_default();
        match buckets.back_mut() {
            Some((start, e)) if at.saturating_duration_since(*start) < BUCKET => e.add(count),
            _ => {
                let mut e = Evidence::default();
                e.add(count);
                buckets.push_back((at, e));
            }
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
        self.policies.clear();
        self.first = None;
    }

    /// Forgets reports older than `keep`, and policies with none left.
    pub fn prune(&mut self, now: Instant, keep: Duration) {
        self.policies.retain(|_, buckets| {
            while buckets
                .front()
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) > keep)
            {
                buckets.pop_front();
            }
            !buckets.is_empty()
        });
    }

    /// Whether reports have been heard for at least `window`.
    pub fn covers(&self, window: Duration, now: Instant) -> bool {
        self.first
            .is_some_and(|first| now.saturating_duration_since(first) >= window)
    }

    /// What the reports of `policy` (`namespace/name`) since `since` add up to.
    pub fn sum(&self, policy: &str, since: Instant) -> Evidence {
        let mut out = Evidence::default();
        for (_, e) in self
            .policies
            .get(policy)
            .into_iter()
            .flatten()
            .filter(|(at, _)| *at >= since)
        {
            out.merge(e);
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
            denied_allowed_before: if before { denied } else { 0 },
            refused_sources: vec![RefusedSource {
                identity: Some("spiffe://cluster.local/ns/shop/sa/b".into()),
                address: Some("10.0.0.2".parse().unwrap()),
                request: Some("GET /".into()),
                would_deny: 1,
                denied,
                allowed_before: before,
            }],
        };
        book.add(&count("shop/p", 0, false), t0);
        book.add(&count("shop/q", 0, false), t0);
        let t1 = t0 + Duration::from_secs(10);
        book.add(&count("shop/p", 2, true), t1);
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
        assert_eq!(book.sum("shop/q", t0).allowed, 0, "and the policy with it");
        book.forget();
        assert!(!book.covers(Duration::ZERO, t1));
    }

    #[test]
    fn a_lying_report_cannot_overflow_the_sums() {
        let mut book = AccessBook::default();
        let t0 = Instant::now();
        let huge = AccessCount {
            policy: "shop/p".into(),
            allowed: u64::MAX,
            would_deny: u64::MAX,
            ..AccessCount::default()
        };
        book.add(&huge, t0);
        book.add(&huge, t0 + Duration::from_secs(2));
        let sum = book.sum("shop/p", t0);
        assert_eq!(
            (sum.allowed, sum.would_deny, sum.requests()),
            (u64::MAX, u64::MAX, u64::MAX)
        );
    }
}
