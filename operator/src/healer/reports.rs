//! Proxies' ejection reports folded per endpoint: which proxies report it now, and
//! since when it has been reported without a break.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use braid_api::control::Ejection;
use k8s_openapi::jiff::Timestamp;

use crate::registry::ObjectKey;

/// An ejection counts as still reported this long after it ends: the time callers need
/// to send a returned endpoint the requests that eject it again. Shorter gaps do not
/// break an endpoint's run of reports.
pub const REPORT_GRACE: Duration = Duration::from_secs(15);

/// At most this many endpoints are tracked; reports of more are dropped (and logged), so
/// a storm of reports cannot grow the operator without bound.
pub const MAX_TRACKED: usize = 10_000;

/// A reported ejection counts for at most this long (a proxy's ejections are capped
/// well below it), so one report cannot keep an endpoint reported for ever.
pub const MAX_EJECTION: Duration = Duration::from_secs(3600);

/// An endpoint as proxies name it: the service port it serves and its address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointRef {
    /// The service port, `name.namespace:port`.
    pub target: String,
    /// The endpoint's address.
    pub addr: SocketAddr,
}

impl EndpointRef {
    /// The Service behind [`Self::target`], when the target is well formed.
    pub fn service(&self) -> Option<ObjectKey> {
        let (host, _port) = self.target.rsplit_once(':')?;
        let (name, namespace) = host.split_once('.')?;
        (!name.is_empty() && !namespace.is_empty()).then(|| ObjectKey::new(namespace, name))
    }
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.addr, self.target)
    }
}

/// One proxy's reports of an endpoint without a break.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reporter {
    /// Its first report in this run.
    pub first: Timestamp,
    /// When its reports lapse.
    pub until: Timestamp,
}

/// One endpoint's current run of reports.
#[derive(Clone, Debug, PartialEq)]
pub struct Reported {
    /// When the run began.
    pub since: Timestamp,
    /// Each reporting proxy.
    pub reporters: BTreeMap<ObjectKey, Reporter>,
    /// The reason of the latest report.
    pub reason: String,
    /// Set once the operator has acted with `None` (noted it) in this run.
    pub noted: bool,
}

impl Reported {
    /// Since when at least `quorum` of the current reporters have reported without a
    /// break: the `quorum`-th earliest first report. `None` with fewer reporters.
    pub fn quorum_since(&self, quorum: u32) -> Option<Timestamp> {
        let mut firsts: Vec<Timestamp> = self.reporters.values().map(|r| r.first).collect();
        firsts.sort();
        firsts.get((quorum.max(1) - 1) as usize).copied()
    }
}

/// Every endpoint proxies currently report as ejected.
#[derive(Clone, Debug, Default)]
pub struct Reports {
    endpoints: BTreeMap<EndpointRef, Reported>,
}

impl Reports {
    /// Records that `reporter` ejected an endpoint at `now`. False when the report was
    /// dropped because [`MAX_TRACKED`] endpoints are tracked already.
    pub fn record(&mut self, reporter: &ObjectKey, ejection: &Ejection, now: Timestamp) -> bool {
        let key = EndpointRef {
            target: ejection.target.clone(),
            addr: ejection.endpoint,
        };
        if !self.endpoints.contains_key(&key) && self.endpoints.len() >= MAX_TRACKED {
            return false;
        }
        let lasts = Duration::from_millis(ejection.duration_ms).min(MAX_EJECTION);
        let lapses = now.checked_add(lasts + REPORT_GRACE).unwrap_or(now);
        let entry = self.endpoints.entry(key).or_insert_with(|| Reported {
            since: now,
            reporters: BTreeMap::new(),
            reason: String::new(),
            noted: false,
        });
        let r = entry.reporters.entry(reporter.clone()).or_insert(Reporter {
            first: now,
            until: lapses,
        });
        r.until = r.until.max(lapses);
        entry.reason.clone_from(&ejection.reason);
        true
    }

    /// Drops reports that lapsed by `now`, and endpoints no proxy reports any more (so a
    /// later report starts a new run).
    pub fn prune(&mut self, now: Timestamp) {
        self.endpoints.retain(|_, r| {
            r.reporters.retain(|_, p| p.until >= now);
            !r.reporters.is_empty()
        });
    }

    /// Forgets every endpoint at `ip` after the operator acted on its pod: only reports
    /// made after the action count towards the next one.
    pub fn forget(&mut self, ip: std::net::IpAddr) {
        self.endpoints.retain(|k, _| k.addr.ip() != ip);
    }

    /// Marks `endpoint`'s run as noted (action `None`), so it is noted once per run.
    pub fn note(&mut self, endpoint: &EndpointRef) {
        if let Some(r) = self.endpoints.get_mut(endpoint) {
            r.noted = true;
        }
    }

    /// The reported endpoints, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&EndpointRef, &Reported)> {
        self.endpoints.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn ejection(endpoint: &str, ms: u64) -> Ejection {
        Ejection {
            target: "payments.shop:8080".into(),
            endpoint: endpoint.parse().unwrap(),
            reason: "consecutive_errors".into(),
            duration_ms: ms,
        }
    }

    #[test]
    fn a_run_lasts_while_reports_overlap_within_the_grace() {
        let mut reports = Reports::default();
        let a = ObjectKey::new("shop", "client-a");
        let b = ObjectKey::new("shop", "client-b");
        assert!(reports.record(&a, &ejection("10.0.0.5:8080", 10_000), at(0)));
        // Lapses at 10 + 15 s; a re-ejection at 20 s continues the run.
        reports.prune(at(20));
        reports.record(&a, &ejection("10.0.0.5:8080", 20_000), at(20));
        reports.record(&b, &ejection("10.0.0.5:8080", 10_000), at(21));
        reports.prune(at(40));
        let (key, run) = reports.iter().next().unwrap();
        assert_eq!(key.service(), Some(ObjectKey::new("shop", "payments")));
        assert_eq!(run.since, at(0));
        assert_eq!(run.reporters.len(), 2);
        // Two proxies have reported it since b's first report.
        assert_eq!(run.quorum_since(1), Some(at(0)));
        assert_eq!(run.quorum_since(2), Some(at(21)));
        assert_eq!(run.quorum_since(3), None);
        // b lapses at 46 s, a at 55 s.
        reports.prune(at(50));
        assert_eq!(reports.iter().next().unwrap().1.reporters.len(), 1);
        reports.prune(at(56));
        assert_eq!(reports.iter().count(), 0);
        // A later report starts a new run.
        reports.record(&a, &ejection("10.0.0.5:8080", 10_000), at(100));
        assert_eq!(reports.iter().next().unwrap().1.since, at(100));
    }

    #[test]
    fn forgetting_starts_over_and_the_table_is_bounded() {
        let mut reports = Reports::default();
        let a = ObjectKey::new("shop", "client-a");
        reports.record(&a, &ejection("10.0.0.5:8080", 1_000), at(0));
        reports.record(&a, &ejection("10.0.0.6:8080", 1_000), at(0));
        reports.forget("10.0.0.5".parse().unwrap());
        assert_eq!(reports.iter().count(), 1);
        // A report cannot hold an endpoint for longer than MAX_EJECTION.
        reports.record(&a, &ejection("10.0.0.7:8080", u64::MAX), at(0));
        reports.prune(at(3600 + 16));
        assert_eq!(reports.iter().count(), 0);
        for i in 0..MAX_TRACKED {
            let addr = format!("10.{}.{}.{}:80", i / 65536, (i / 256) % 256, i % 256);
            assert!(reports.record(&a, &ejection(&addr, 1_000), at(0)));
        }
        assert!(!reports.record(&a, &ejection("11.0.0.1:80", 1_000), at(0)));
        // A tracked endpoint is still updated.
        assert!(reports.record(&a, &ejection("10.0.0.1:80", 1_000), at(1)));
    }

    #[test]
    fn malformed_targets_name_no_service() {
        let key = |t: &str| EndpointRef {
            target: t.into(),
            addr: "10.0.0.1:80".parse().unwrap(),
        };
        assert_eq!(key("payments:80").service(), None);
        assert_eq!(key(".shop:80").service(), None);
        assert_eq!(key("payments.shop").service(), None);
    }
}
