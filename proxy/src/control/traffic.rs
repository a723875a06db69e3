//! Requests counted for the operator: how many reached the app over mTLS and in
//! plaintext (and from where), and how the app's own calls fared per service port. The
//! operator drives EncryptionPolicy rollouts by them: it steps back when callers' failures
//! rise, and enforces Strict only once no plaintext arrives.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::protocol::{SourceCount, TargetCount, Traffic};
use crate::config::Tables;

/// Plaintext sources tracked between reports; more are counted but not named.
const MAX_SOURCES: usize = 256;
/// Sources named in one report: the busiest.
const REPORTED_SOURCES: usize = 16;

/// Inbound requests since the last report.
#[derive(Debug, Default)]
pub struct TrafficLog {
    mtls: AtomicU64,
    plaintext: AtomicU64,
    sources: Mutex<HashMap<IpAddr, u64>>,
}

impl TrafficLog {
    /// Counts one inbound request; a plaintext one under its source address.
    pub fn inbound(&self, tls: bool, source: Option<IpAddr>) {
        if tls {
            self.mtls.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.plaintext.fetch_add(1, Ordering::Relaxed);
        if let (Some(ip), Ok(mut sources)) = (source, self.sources.lock())
            && (sources.len() < MAX_SOURCES || sources.contains_key(&ip))
        {
            *sources.entry(ip).or_default() += 1;
        }
    }

    /// Everything counted since the last call, with the outbound counts of `tables`'
    /// targets; `None` when there was no request at all.
    pub fn take(&self, tables: &Tables) -> Option<Traffic> {
        let mut sources: Vec<SourceCount> = self
            .sources
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
            .into_iter()
            .map(|(address, requests)| SourceCount { address, requests })
            .collect();
        sources.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.address.cmp(&b.address)));
        sources.truncate(REPORTED_SOURCES);
        let outbound: Vec<TargetCount> = tables
            .targets()
            .filter_map(|t| {
                let (requests, failures) = t.traffic.take();
                (requests > 0).then(|| TargetCount {
                    target: t.label.to_string(),
                    requests,
                    failures,
                })
            })
            .collect();
        let traffic = Traffic {
            inbound_mtls: self.mtls.swap(0, Ordering::Relaxed),
            inbound_plaintext: self.plaintext.swap(0, Ordering::Relaxed),
            plaintext_sources: sources,
            outbound,
        };
        (traffic != Traffic::default()).then_some(traffic)
    }
}

/// Requests to one service port and how many failed.
#[derive(Debug, Default)]
pub struct TargetTraffic {
    requests: AtomicU64,
    failures: AtomicU64,
}

impl TargetTraffic {
    /// Counts a request answered with `status`; 5xx is a failure.
    pub fn record(&self, status: u16) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (requests, failures) since the last call.
    fn take(&self) -> (u64, u64) {
        (
            self.requests.swap(0, Ordering::Relaxed),
            self.failures.swap(0, Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_inbound_by_tls_and_names_the_busiest_plaintext_sources() {
        let log = TrafficLog::default();
        let tables = Tables::build(Default::default()).unwrap();
        assert_eq!(log.take(&tables), None);
        for i in 0..20u8 {
            for _ in 0..=i {
                log.inbound(false, Some(IpAddr::from([10, 0, 0, i])));
            }
        }
        log.inbound(true, None);
        let t = log.take(&tables).unwrap();
        assert_eq!((t.inbound_mtls, t.inbound_plaintext), (1, 210));
        assert_eq!(t.plaintext_sources.len(), REPORTED_SOURCES);
        assert_eq!(t.plaintext_sources[0].address, IpAddr::from([10, 0, 0, 19]));
        assert_eq!(t.plaintext_sources[0].requests, 20);
        assert_eq!(log.take(&tables), None, "taken once");
    }
}
