//! What this replica heard of each proxy beyond the version it holds: when it reported
//! last, since when it holds that version, its own version and certificate expiry, and
//! since when its stream is open here. Read by `GET /debug/proxies`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use crate::registry::ObjectKey;

/// One proxy, as its reports and its stream on this replica show it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Heard {
    /// The version it reported holding last.
    pub version: Option<String>,
    /// When it first reported holding `version`.
    pub version_since: Option<SystemTime>,
    /// When its latest report came.
    pub last_report: Option<SystemTime>,
    /// The proxy's version, as it said.
    pub proxy_version: Option<String>,
    /// When its certificate expires, as it reported.
    pub certificate_expires: Option<SystemTime>,
    /// Since when its stream is open on this replica.
    pub connected_since: Option<SystemTime>,
    /// Streams open on this replica (a reconnect may open the new one before the old
    /// one is seen to end).
    streams: u32,
}

/// 9999-12-31T23:59:59Z: the last time RFC 3339 writes.
pub const LATEST_UNIX: u64 = 253_402_300_799;

/// What this replica heard of every proxy.
#[derive(Debug, Default)]
pub struct ProxyLedger {
    heard: Mutex<HashMap<ObjectKey, Heard>>,
}

/// What one report (or stream) says of its proxy.
#[derive(Debug, Default)]
pub struct Said<'a> {
    /// The version it holds, if it said.
    pub version: Option<&'a str>,
    /// Its own version, if it said.
    pub proxy_version: Option<&'a str>,
    /// Its certificate's expiry (Unix seconds), if it said.
    pub certificate_expires_unix: Option<u64>,
}

impl ProxyLedger {
    /// Records a report of `pod`'s, received `at`.
    pub fn reported(&self, pod: &ObjectKey, said: Said<'_>, at: SystemTime) {
        let mut all = lock(&self.heard);
        // The key is cloned only for a proxy heard of for the first time.
        if !all.contains_key(pod) {
            all.insert(pod.clone(), Heard::default());
        }
        let Some(heard) = all.get_mut(pod) else {
            return;
        };
        heard.last_report = Some(at);
        if let Some(version) = said.version
            && heard.version.as_deref() != Some(version)
        {
            heard.version = Some(version.to_owned());
            heard.version_since = Some(at);
        }
        if let Some(v) = said.proxy_version {
            heard.proxy_version = Some(v.to_owned());
        }
        // A time RFC 3339 cannot write (past year 9999) is a proxy's mistake: dropped.
        if let Some(unix) = said.certificate_expires_unix.filter(|s| *s <= LATEST_UNIX) {
            heard.certificate_expires =
                SystemTime::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(unix));
        }
    }

    /// `pod`'s stream opened on this replica `at`.
    pub fn connected(&self, pod: &ObjectKey, proxy_version: Option<&str>, at: SystemTime) {
        let mut all = lock(&self.heard);
        let heard = all.entry(pod.clone()).or_default();
        heard.streams += 1;
        heard.connected_since = Some(at);
        if let Some(v) = proxy_version {
            heard.proxy_version = Some(v.to_owned());
        }
    }

    /// One of `pod`'s streams on this replica ended.
    pub fn disconnected(&self, pod: &ObjectKey) {
        let mut all = lock(&self.heard);
        if let Some(heard) = all.get_mut(pod) {
            heard.streams = heard.streams.saturating_sub(1);
            if heard.streams == 0 {
                heard.connected_since = None;
            }
        }
    }

    /// What was heard of `pod`.
    pub fn get(&self, pod: &ObjectKey) -> Option<Heard> {
        lock(&self.heard).get(pod).cloned()
    }

    /// Runs `f` over what was heard of every proxy, under one lock.
    pub fn with_all<T>(&self, f: impl FnOnce(&HashMap<ObjectKey, Heard>) -> T) -> T {
        f(&lock(&self.heard))
    }

    /// Forgets proxies for which `keep` is false (their workloads are gone).
    pub fn retain(&self, keep: impl Fn(&ObjectKey) -> bool) {
        lock(&self.heard).retain(|k, h| keep(k) || h.streams > 0);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn the_version_keeps_the_time_it_was_first_reported() {
        let ledger = ProxyLedger::default();
        let pod = ObjectKey::new("shop", "a");
        let said = |v| Said {
            version: Some(v),
            ..Default::default()
        };
        ledger.reported(&pod, said("v1"), at(10));
        ledger.reported(&pod, said("v1"), at(20));
        let heard = ledger.get(&pod).unwrap();
        assert_eq!(heard.version_since, Some(at(10)));
        assert_eq!(heard.last_report, Some(at(20)));
        ledger.reported(&pod, said("v2"), at(30));
        assert_eq!(ledger.get(&pod).unwrap().version_since, Some(at(30)));
    }

    #[test]
    fn a_certificate_expiry_rfc3339_cannot_write_is_dropped() {
        let ledger = ProxyLedger::default();
        let pod = ObjectKey::new("shop", "a");
        for unix in [u64::MAX, LATEST_UNIX + 1] {
            ledger.reported(
                &pod,
                Said {
                    certificate_expires_unix: Some(unix),
                    ..Default::default()
                },
                at(1),
            );
            assert_eq!(ledger.get(&pod).unwrap().certificate_expires, None);
        }
    }

    #[test]
    fn a_stream_counts_as_connected_until_the_last_one_ends() {
        let ledger = ProxyLedger::default();
        let pod = ObjectKey::new("shop", "a");
        ledger.connected(&pod, Some("0.1.0"), at(5));
        ledger.connected(&pod, None, at(6));
        ledger.disconnected(&pod);
        assert_eq!(ledger.get(&pod).unwrap().connected_since, Some(at(6)));
        ledger.disconnected(&pod);
        let heard = ledger.get(&pod).unwrap();
        assert_eq!(heard.connected_since, None);
        assert_eq!(heard.proxy_version.as_deref(), Some("0.1.0"));
        ledger.retain(|_| false);
        assert!(ledger.get(&pod).is_none());
    }
}
