//! What the healer should do now: a pure function of the snapshot, the reports, what it
//! already did and the time. The loop in `run` carries the plan out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use braid_crds::SelfHealing;
use braid_crds::self_healing::{Healing, HealingAction, UnhealthyEndpoint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::ledger::Ledger;
use super::quarantine::{QUARANTINED_BY, tag};
use super::reports::{EndpointRef, Reports};
use crate::registry::{ObjectKey, Snapshot, Workload};

/// An action due now.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    /// The SelfHealing asking for it.
    pub healing: ObjectKey,
    /// What to do.
    pub action: HealingAction,
    /// The pod behind the endpoint.
    pub pod: Arc<Workload>,
    /// The endpoint as proxies report it.
    pub endpoint: EndpointRef,
    /// How many proxies report it.
    pub reporters: u32,
    /// Why (the latest report's reason).
    pub reason: String,
    /// The SelfHealing's cooldown: after acting, the endpoint is left alone this long.
    pub cooldown: Duration,
}

/// What to do now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Reported endpoints of each SelfHealing's workloads (its status `unhealthy`).
    pub unhealthy: BTreeMap<ObjectKey, Vec<UnhealthyEndpoint>>,
    /// Actions to take now, within each SelfHealing's hourly budget.
    pub due: Vec<Due>,
    /// Actions due but over the hourly budget: told about, not taken.
    pub over_budget: Vec<Due>,
    /// Quarantines due that would take more of the Service out than its outlier
    /// detection's `maxEjectionPercent`: told about, not taken.
    pub capped: Vec<Due>,
    /// Pods a SelfHealing quarantined that its spec no longer asks to keep out (it was
    /// deleted, its action changed, or it no longer selects them): to readmit, with the
    /// SelfHealing's key.
    pub readmit: Vec<(ObjectKey, Arc<Workload>)>,
}

/// The SelfHealing whose outlier detection covers `pod`: the oldest accepted one in its
/// namespace that selects it and detects outliers.
fn governing<'a>(
    healings: &'a [(&'a ObjectKey, &'a SelfHealing)],
    pod: &Workload,
) -> Option<(&'a ObjectKey, &'a SelfHealing)> {
    healings.iter().copied().find(|(key, h)| {
        key.namespace == pod.key.namespace
            && h.spec.outlier_detection.is_some()
            && h.spec.selector.matches(&pod.labels)
    })
}

/// The pod behind a reported endpoint, when the registry knows it.
fn pod_of<'s>(snapshot: &'s Snapshot, endpoint: &EndpointRef) -> Option<&'s Arc<Workload>> {
    let service = snapshot.services.get(&endpoint.service()?)?;
    let ip = endpoint.addr.ip();
    let key = service
        .endpoints
        .iter()
        .find(|ep| ep.ip == ip)?
        .workload
        .as_ref()?;
    snapshot.workloads.get(key)
}

/// Whether quarantining the pod behind `endpoint` keeps the quarantined share of its
/// Service's endpoints (with `also`, quarantines planned this round) within the
/// SelfHealing's `maxEjectionPercent`.
fn may_quarantine(
    snapshot: &Snapshot,
    endpoint: &EndpointRef,
    healing: &SelfHealing,
    also: &BTreeSet<ObjectKey>,
) -> bool {
    let Some(service) = endpoint.service().and_then(|k| snapshot.services.get(&k)) else {
        return false;
    };
    let max = healing
        .spec
        .outlier_detection
        .as_ref()
        .map_or(0, |o| o.max_ejection_percent);
    let total = service.endpoints.len();
    let out = service
        .endpoints
        .iter()
        .filter_map(|ep| ep.workload.as_ref())
        .filter(|w| {
            also.contains(*w)
                || snapshot
                    .workloads
                    .get(*w)
                    .is_some_and(|w| w.is_quarantined())
        })
        .count();
    total > 0 && (out + 1) * 100 <= total * max as usize
}

fn cooldown(healing: &Healing) -> Duration {
    // Validation refuses a cooldown that does not parse; the default is the fallback.
    healing.cooldown.parse().unwrap_or(Duration::from_secs(120))
}

/// Plans the healer's next step.
pub fn plan(snapshot: &Snapshot, reports: &Reports, ledger: &Ledger, now: Timestamp) -> Plan {
    plan_with(snapshot, &quarantined(snapshot), reports, ledger, now)
}

/// The pods of `snapshot` a SelfHealing quarantined: worked out once per snapshot, not
/// on every tick over every pod of the mesh.
pub fn quarantined(snapshot: &Snapshot) -> Vec<Arc<Workload>> {
    snapshot
        .workloads
        .values()
        .filter(|pod| pod.labels.contains_key(QUARANTINED_BY) && pod.is_quarantined())
        .cloned()
        .collect()
}

/// [`plan`], with `snapshot`'s [`quarantined`] pods.
pub fn plan_with(
    snapshot: &Snapshot,
    quarantined: &[Arc<Workload>],
    reports: &Reports,
    ledger: &Ledger,
    now: Timestamp,
) -> Plan {
    let healings = snapshot.self_healings_oldest_first();
    let mut out = Plan::default();
    let mut spent: BTreeMap<ObjectKey, u32> = BTreeMap::new();
    let mut acted_on: BTreeSet<ObjectKey> = BTreeSet::new();
    let mut quarantining: BTreeSet<ObjectKey> = BTreeSet::new();
    for (endpoint, reported) in reports.iter() {
        let Some(pod) = pod_of(snapshot, endpoint) else {
            continue;
        };
        let Some((key, healing)) = governing(&healings, pod) else {
            continue;
        };
        let reporters = reported.reporters.len() as u32;
        let list = out.unhealthy.entry(key.clone()).or_default();
        list.push(UnhealthyEndpoint {
            pod: pod.key.name.clone(),
            address: endpoint.addr.to_string(),
            since: Time(reported.since),
            reporters,
        });
        let Some(spec) = &healing.spec.healing else {
            continue;
        };
        // The cooldown runs from when `minReporters` proxies were all reporting it.
        let cooled = reported
            .quorum_since(spec.min_reporters)
            .is_some_and(|since| {
                now.duration_since(since)
                    .try_into()
                    .is_ok_and(|elapsed: Duration| elapsed >= cooldown(spec))
            });
        // One action per pod, however many of its endpoints (ports, Services) are reported.
        if !cooled || ledger.is_held(endpoint, now) || !acted_on.insert(pod.key.clone()) {
            continue;
        }
        let due = Due {
            healing: key.clone(),
            action: spec.action,
            pod: pod.clone(),
            endpoint: endpoint.clone(),
            reporters,
            reason: reported.reason.clone(),
            cooldown: cooldown(spec),
        };
        match spec.action {
            HealingAction::None if reported.noted => {}
            HealingAction::None => out.due.push(due),
            // Already out of every config: nothing more to do until it is readmitted.
            _ if pod.is_quarantined() => {}
            // Quarantine is ejection for every caller at once: it keeps to the share
            // outlier detection may eject, so a bad rollout cannot empty a Service.
            HealingAction::RemoveFromService
                if !may_quarantine(snapshot, endpoint, healing, &quarantining) =>
            {
                out.capped.push(due);
            }
            _ => {
                let used = spent
                    .entry(key.clone())
                    .or_insert_with(|| ledger.spent(key, now));
                if *used < spec.max_actions_per_hour {
                    *used += 1;
                    if spec.action == HealingAction::RemoveFromService {
                        quarantining.insert(pod.key.clone());
                    }
                    out.due.push(due);
                } else {
                    out.over_budget.push(due);
                }
            }
        }
    }
    for pod in quarantined {
        let Some(by) = pod.labels.get(QUARANTINED_BY) else {
            continue;
        };
        let owner = healings
            .iter()
            .find(|(k, _)| k.namespace == pod.key.namespace && tag(&k.name) == *by);
        let keep = owner.is_some_and(|(_, h)| {
            h.spec.selector.matches(&pod.labels)
                && h.spec
                    .healing
                    .as_ref()
                    .is_some_and(|s| s.action == HealingAction::RemoveFromService)
        });
        if !keep {
            let key = owner
                .map(|(k, _)| (*k).clone())
                .unwrap_or_else(|| ObjectKey::new(&pod.key.namespace, by));
            out.readmit.push((key, pod.clone()));
        }
    }
    for list in out.unhealthy.values_mut() {
        list.truncate(braid_crds::limits::MAX_STATUS_ENTRIES as usize);
    }
    out
}
