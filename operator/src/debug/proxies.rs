//! The answer of `GET /debug/proxies`: every meshed workload's proxy, with the version it
//! should hold, the version it reported, and what else this replica heard of it. Pure:
//! built from the latest compile, the hub's applied versions and the ledger.

use std::collections::HashMap;
use std::time::SystemTime;

use braid_api::debug::ProxyStatus;

use super::ledger::{Heard, ProxyLedger};
use crate::compiler::{Catalog, Configs};
use crate::registry::ObjectKey;

/// RFC 3339, to the second; `None` past what RFC 3339 writes (year 9999).
pub fn rfc3339(t: SystemTime) -> Option<String> {
    use std::fmt::Write;
    let mut out = String::new();
    write!(out, "{}", humantime::format_rfc3339_seconds(t)).ok()?;
    Some(out)
}

/// One entry per workload of the compile (`configs`, `catalog`), sorted by pod.
/// `applied` is the hub's view of reported versions (a proxy holding its view of the
/// current compile counts as holding the whole config).
pub fn proxy_statuses(
    configs: &Configs,
    catalog: &Catalog,
    applied: &HashMap<ObjectKey, String>,
    ledger: &ProxyLedger,
) -> Vec<ProxyStatus> {
    let nothing = Heard::default();
    // Configs are kept in pod order.
    ledger.with_all(|heard| {
        configs
            .keys()
            .map(|pod| {
                let expected = catalog.version_of(pod);
                let applied_version = applied.get(pod).cloned();
                status(
                    pod,
                    expected,
                    applied_version,
                    heard.get(pod).unwrap_or(&nothing),
                )
            })
            .collect()
    })
}

fn status(
    pod: &ObjectKey,
    expected: Option<String>,
    applied: Option<String>,
    heard: &Heard,
) -> ProxyStatus {
    ProxyStatus {
        pod: pod.to_string(),
        current: expected.is_some() && expected == applied,
        expected_version: expected,
        applied_version: applied,
        applied_at: heard.version_since.and_then(rfc3339),
        last_report: heard.last_report.and_then(rfc3339),
        connected_since: heard.connected_since.and_then(rfc3339),
        proxy_version: heard.proxy_version.clone(),
        certificate_expires: heard.certificate_expires.and_then(rfc3339),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debug::ledger::Said;

    #[test]
    fn a_proxy_is_current_only_when_it_reported_the_expected_version() {
        let pod = ObjectKey::new("shop", "a");
        let heard = Heard::default();
        let s = status(&pod, Some("v2".into()), Some("v1".into()), &heard);
        assert!(!s.current);
        assert_eq!(s.pod, "shop/a");
        let s = status(&pod, Some("v2".into()), Some("v2".into()), &heard);
        assert!(s.current);
        // Never reported, and no config expected: neither is current.
        assert!(!status(&pod, Some("v2".into()), None, &heard).current);
        assert!(!status(&pod, None, None, &heard).current);
    }

    #[test]
    fn times_are_rfc3339_to_the_second() {
        let ledger = ProxyLedger::default();
        let pod = ObjectKey::new("shop", "a");
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_800_000_000_500);
        ledger.reported(
            &pod,
            Said {
                version: Some("v1"),
                proxy_version: Some("0.1.0"),
                certificate_expires_unix: Some(1_800_086_400),
            },
            at,
        );
        let s = status(&pod, None, None, &ledger.get(&pod).unwrap());
        assert_eq!(s.applied_at.as_deref(), Some("2027-01-15T08:00:00Z"));
        assert_eq!(
            s.certificate_expires.as_deref(),
            Some("2027-01-16T08:00:00Z")
        );
        assert_eq!(s.proxy_version.as_deref(), Some("0.1.0"));
    }
}
