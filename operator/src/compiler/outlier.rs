//! Which Services' endpoints a SelfHealing watches, and its outlier detection in the
//! form proxies take: callers eject the endpoints of a Service when the oldest
//! SelfHealing in its namespace that selects any of its pods says so.

use std::collections::HashMap;

use braid_crds::SelfHealing;
use braid_crds::self_healing::OutlierDetection as CrdOutlier;
use braid_proxy::config::outlier::{ErrorRate, OutlierDetection};

use super::routes::millis;
use crate::registry::{ObjectKey, Snapshot};

/// The outlier detection of every Service some SelfHealing selects.
pub fn outlier_by_service(snapshot: &Snapshot) -> HashMap<ObjectKey, OutlierDetection> {
    let mut healings: Vec<(Option<&str>, &ObjectKey, &SelfHealing)> = snapshot
        .self_healings
        .values()
        .filter_map(|o| {
            o.accepted
                .as_deref()
                .map(|h| (o.created.as_deref(), &o.key, h))
        })
        .collect();
    // Oldest first, ties by namespace/name: no outcome depends on map order.
    healings.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let mut out = HashMap::new();
    for (key, entry) in &snapshot.services {
        let found = healings.iter().find_map(|(_, hk, h)| {
            let detection = h.spec.outlier_detection.as_ref()?;
            let selects = hk.namespace == key.namespace
                && entry.endpoints.iter().any(|ep| {
                    ep.workload
                        .as_ref()
                        .and_then(|w| snapshot.workloads.get(w))
                        .is_some_and(|w| h.spec.selector.matches(&w.labels))
                });
            selects.then(|| proxy_form(detection)).flatten()
        });
        if let Some(detection) = found {
            out.insert(key.clone(), detection);
        }
    }
    out
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
