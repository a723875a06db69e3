//! Requests counted for the operator: how many reached the app over mTLS and in
//! plaintext (and from where), and how the app's own calls fared per service port. The
//! operator drives EncryptionPolicy rollouts by them: it steps back when callers' failures
//! rise, and enforces Strict only once no plaintext arrives.
//!
//! The per-request path takes no lock: each plaintext connection gets its own counter
//! (registered once, when it opens), and a report sums them by address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::tls::TlsMode;
use braid_api::control::{SourceCount, TargetCount, Traffic};

/// Plaintext connections whose source is tracked at once; more are counted, not named.
const MAX_SOURCES: usize = 4096;
/// Sources named in one report: the busiest.
const REPORTED_SOURCES: usize = 16;

/// The plaintext requests of one connection.
#[derive(Debug)]
pub struct SourceCounter {
    address: IpAddr,
    requests: AtomicU64,
}

/// Inbound requests since the last report.
#[derive(Debug, Default)]
pub struct TrafficLog {
    mtls: AtomicU64,
    plaintext: AtomicU64,
    sources: Mutex<Vec<Arc<SourceCounter>>>,
}

impl TrafficLog {
    /// A counter for a plaintext connection from `address` (once per connection).
    pub fn plaintext_source(&self, address: IpAddr) -> Arc<SourceCounter> {
        let counter = Arc::new(SourceCounter {
            address,
            requests: AtomicU64::new(0),
        });
        if let Ok(mut sources) = self.sources.lock()
            && sources.len() < MAX_SOURCES
        {
            sources.push(counter.clone());
        }
        counter
    }

    /// Counts one inbound request on a port now in `mode`. Plaintext on a `Disabled`
    /// port is not counted: Strict would not refuse it (a port exempted by
    /// `portOverrides`), so it must not hold a rollout back.
    pub fn inbound(&self, tls: bool, mode: TlsMode, source: Option<&SourceCounter>) {
        if tls {
            self.mtls.fetch_add(1, Ordering::Relaxed);
        } else if mode != TlsMode::Disabled {
            self.plaintext.fetch_add(1, Ordering::Relaxed);
            if let Some(s) = source {
                s.requests.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Everything counted since the last call, with the outbound counts of `targets`
    /// (each target's label and counter, as the tables in force hold them); `None` when
    /// there was no request at all.
    pub fn take<'a>(
        &self,
        targets: impl Iterator<Item = (&'a str, &'a TargetTraffic)>,
    ) -> Option<Traffic> {
        let mut by_address: HashMap<IpAddr, u64> = HashMap::new();
        if let Ok(mut sources) = self.sources.lock() {
            for s in sources.iter() {
                let n = s.requests.swap(0, Ordering::Relaxed);
                if n > 0 {
                    *by_address.entry(s.address).or_default() += n;
                }
            }
            // Connections that ended (only this list holds their counter) are read out.
            sources.retain(|s| Arc::strong_count(s) > 1);
        }
        let mut sources: Vec<SourceCount> = by_address
            .into_iter()
            .map(|(address, requests)| SourceCount { address, requests })
            .collect();
        sources.sort_by(|a, b| b.requests.cmp(&a.requests).then(a.address.cmp(&b.address)));
        sources.truncate(REPORTED_SOURCES);
        let outbound: Vec<TargetCount> = targets
            .filter_map(|(label, traffic)| {
                let (requests, failures) = traffic.take();
                (requests > 0).then(|| TargetCount {
                    target: label.to_owned(),
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

/// Requests to one service port and how many failed. Shared by the config versions that
/// have the port, so a new version does not lose what the last one counted.
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
        let tables = crate::tables::Tables::build(Default::default()).unwrap();
        assert_eq!(
            log.take(tables.targets().map(|t| (&*t.label, &*t.traffic))),
            None
        );
        let mut open = Vec::new();
        for i in 0..20u8 {
            let conn = log.plaintext_source(IpAddr::from([10, 0, 0, i]));
            for _ in 0..=i {
                log.inbound(false, TlsMode::Permissive, Some(&conn));
            }
            open.push(conn);
        }
        log.inbound(true, TlsMode::Permissive, None);
        // An exempt port's plaintext is not what Strict would refuse.
        log.inbound(false, TlsMode::Disabled, Some(&open[0]));
        let t = log
            .take(tables.targets().map(|t| (&*t.label, &*t.traffic)))
            .unwrap();
        assert_eq!((t.inbound_mtls, t.inbound_plaintext), (1, 210));
        assert_eq!(t.plaintext_sources.len(), REPORTED_SOURCES);
        assert_eq!(t.plaintext_sources[0].address, IpAddr::from([10, 0, 0, 19]));
        assert_eq!(t.plaintext_sources[0].requests, 20);
        assert_eq!(
            log.take(tables.targets().map(|t| (&*t.label, &*t.traffic))),
            None,
            "taken once"
        );
        // Closed connections leave the list once read out.
        drop(open);
        assert!(log.sources.lock().unwrap().len() == 20);
        assert_eq!(
            log.take(tables.targets().map(|t| (&*t.label, &*t.traffic))),
            None
        );
        assert!(log.sources.lock().unwrap().is_empty());
    }
}
