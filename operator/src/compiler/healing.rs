//! What SelfHealings put in proxies' configs, in the form proxies take: the oldest
//! SelfHealing in a namespace that selects any pod of a Service gives that Service's
//! callers its outlier detection; the oldest that selects a workload gives that
//! workload's inbound side its overload protection.

use braid_api::config::outlier::{ErrorRate, OutlierDetection};
use braid_api::config::overload::{OverloadProtection, OverloadSignal};
use braid_crds::SelfHealing;
use braid_crds::self_healing::{OutlierDetection as CrdOutlier, OverloadSignal as CrdSignal};

use super::routes::millis;
use crate::registry::{ObjectKey, ServiceEntry, Snapshot, Workload};

/// The overload protection of `workload`'s inbound side, from `healings` (oldest first).
pub fn overload_for(
    healings: &[(&ObjectKey, &SelfHealing)],
    workload: &Workload,
) -> Option<OverloadProtection> {
    healings.iter().find_map(|(key, h)| {
        let o = h.spec.overload_protection.as_ref()?;
        if key.namespace != workload.key.namespace || !h.spec.selector.matches(&workload.labels) {
            return None;
        }
        Some(OverloadProtection {
            signal: match o.signal {
                CrdSignal::Cpu => OverloadSignal::Cpu,
                CrdSignal::Latency => OverloadSignal::Latency,
                CrdSignal::Inflight => OverloadSignal::Inflight,
            },
            target: o.target,
            min_limit: o.min_limit,
            max_limit: o.max_limit,
            sample_period_ms: millis(&o.sample_period)?,
        })
    })
}

/// The outlier detection of Service `key` (with `entry`'s endpoints), from the oldest
/// SelfHealing of `healings` (oldest first) in its namespace that selects one of its pods.
pub fn outlier_for(
    snapshot: &Snapshot,
    healings: &[(&ObjectKey, &SelfHealing)],
    key: &ObjectKey,
    entry: &ServiceEntry,
) -> Option<OutlierDetection> {
    healings.iter().find_map(|(hk, h)| {
        let detection = h.spec.outlier_detection.as_ref()?;
        let selects = hk.namespace == key.namespace
            && entry.endpoints.iter().any(|ep| {
                ep.workload
                    .as_ref()
                    .and_then(|w| snapshot.workloads.get(w))
                    .is_some_and(|w| h.spec.selector.matches(&w.labels))
            });
        selects.then(|| proxy_form(detection)).flatten()
    })
}

/// `o` with durations in milliseconds; `None` if a duration does not parse (validation
/// refuses such a resource, so this does not happen for accepted ones).
fn proxy_form(o: &CrdOutlier) -> Option<OutlierDetection> {
    let error_rate = match &o.error_rate {
        Some(r) => Some(ErrorRate {
            threshold: r.threshold,
            min_requests: r.min_requests,
            window_ms: millis(&r.window)?,
        }),
        None => None,
    };
    Some(OutlierDetection {
        consecutive_errors: o.consecutive_errors,
        error_rate,
        base_ejection_time_ms: millis(&o.base_ejection_time)?,
        max_ejection_time_ms: millis(&o.max_ejection_time)?,
        max_ejection_percent: o.max_ejection_percent,
    })
}
