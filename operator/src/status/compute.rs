//! Statuses from a snapshot, the compiled configs and what proxies report.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use braid_crds::ValidationErrors;
use braid_crds::common::WorkloadSelector;
use braid_crds::encryption_policy::EncryptionPolicyStatus;
use braid_crds::self_healing::SelfHealingStatus;
use braid_crds::traffic_route::{ProxyCounts, TrafficRouteStatus};
use braid_proxy::config::ProxyConfig;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;

use super::{Event, StatusUpdate};
use crate::compiler::service_for_host;
use crate::registry::{Kind, ObjectKey, Observed, Snapshot};

/// The condition type every braid resource carries.
pub const ACCEPTED: &str = "Accepted";

/// What the proxies hold: the config each should have, and the version each reported.
#[derive(Clone, Copy)]
pub struct ProxyState<'a> {
    /// The compiled config of every meshed workload.
    pub configs: &'a BTreeMap<ObjectKey, Arc<ProxyConfig>>,
    /// The config version each connected proxy last reported applying.
    pub applied: &'a HashMap<ObjectKey, String>,
    /// The cluster's DNS domain, to resolve TrafficRoute hosts.
    pub cluster_domain: &'a str,
}

impl ProxyState<'_> {
    fn counts<'k>(&self, targets: impl Iterator<Item = &'k ObjectKey>) -> ProxyCounts {
        let mut counts = ProxyCounts::default();
        for pod in targets {
            counts.targeted += 1;
            let current = self.configs.get(pod).map(|c| c.version.as_str());
            if current.is_some() && self.applied.get(pod).map(String::as_str) == current {
                counts.applied += 1;
            }
        }
        counts
    }

    /// Meshed workloads of `namespace` that `selector` picks.
    fn selected<'s>(
        &'s self,
        snapshot: &'s Snapshot,
        namespace: &'s str,
        selector: &'s WorkloadSelector,
    ) -> impl Iterator<Item = &'s ObjectKey> + 's {
        self.configs.keys().filter(move |k| {
            k.namespace == namespace
                && snapshot
                    .workloads
                    .get(*k)
                    .is_some_and(|w| selector.matches(&w.labels))
        })
    }
}

/// Every resource's status, and the events worth recording.
#[derive(Debug, Default)]
pub struct Computed {
    /// Statuses by kind and key.
    pub statuses: BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    /// Events: a resource that became invalid (or changed while invalid).
    pub events: Vec<Event>,
}

/// Computes the status of every resource in `snapshot`. `previous` holds what was last
/// written, so a condition's `lastTransitionTime` only moves when its status does, and
/// an event is raised only for a new invalid generation.
pub fn compute(
    snapshot: &Snapshot,
    proxies: ProxyState<'_>,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Computed {
    let mut out = Computed::default();
    for obs in snapshot.traffic_routes.values() {
        let host_service = obs.accepted.as_ref().and_then(|r| {
            service_for_host(&r.spec.host, &obs.key.namespace, proxies.cluster_domain)
                .filter(|svc| snapshot.services.contains_key(svc))
        });
        // Every meshed workload receives every service, so all of them carry the
        // route's groups once its host is a known service.
        let targets = proxies.configs.keys().filter(|_| host_service.is_some());
        let status = TrafficRouteStatus {
            observed_generation: obs.generation,
            conditions: vec![accepted(obs, Kind::TrafficRoute, previous, now)],
            rule_count: obs.accepted.as_ref().map(|r| r.spec.rules.len() as u32),
            proxies: Some(proxies.counts(targets)),
        };
        push(&mut out, Kind::TrafficRoute, obs, &status, previous);
    }
    for obs in snapshot.encryption_policies.values() {
        let counts = obs.accepted.as_ref().map(|p| {
            proxies.counts(proxies.selected(snapshot, &obs.key.namespace, &p.spec.selector))
        });
        let status = EncryptionPolicyStatus {
            observed_generation: obs.generation,
            conditions: vec![accepted(obs, Kind::EncryptionPolicy, previous, now)],
            proxies: Some(counts.unwrap_or_default()),
            ..Default::default()
        };
        push(&mut out, Kind::EncryptionPolicy, obs, &status, previous);
    }
    for obs in snapshot.self_healings.values() {
        let counts = obs.accepted.as_ref().map(|p| {
            proxies.counts(proxies.selected(snapshot, &obs.key.namespace, &p.spec.selector))
        });
        let status = SelfHealingStatus {
            observed_generation: obs.generation,
            conditions: vec![accepted(obs, Kind::SelfHealing, previous, now)],
            proxies: Some(counts.unwrap_or_default()),
            ..Default::default()
        };
        push(&mut out, Kind::SelfHealing, obs, &status, previous);
    }
    out
}

fn push<T, S: Serialize>(
    out: &mut Computed,
    kind: Kind,
    obs: &Observed<T>,
    status: &S,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
) {
    let id = (kind, obs.key.clone());
    if let Err(errors) = &obs.current {
        let before = previous.get(&id).map(|u| &u.status);
        let reported = before.is_some_and(|s| {
            s.get("observedGeneration").and_then(|g| g.as_i64()) == obs.generation
                && condition_status(s) == Some("False")
        });
        if !reported {
            out.events.push(Event {
                kind,
                key: obs.key.clone(),
                reason: "Invalid".into(),
                note: invalid_message(errors, obs.accepted.is_some()),
                warning: true,
            });
        }
    }
    let status = serde_json::to_value(status).unwrap_or_default();
    out.statuses.insert(
        id,
        StatusUpdate {
            kind,
            key: obs.key.clone(),
            status,
        },
    );
}

fn condition_status(status: &serde_json::Value) -> Option<&str> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(ACCEPTED))?
        .get("status")?
        .as_str()
}

fn invalid_message(errors: &ValidationErrors, previous_in_force: bool) -> String {
    let tail = if previous_in_force {
        "; the last valid generation stays in force"
    } else {
        "; nothing of it is in force"
    };
    format!("{}{tail}", errors.summary())
}

/// The `Accepted` condition, keeping the previous transition time when its status holds.
fn accepted<T>(
    obs: &Observed<T>,
    kind: Kind,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = match &obs.current {
        Ok(_) => (
            "True",
            "Accepted",
            "the spec is valid and in force".to_string(),
        ),
        Err(errors) => (
            "False",
            "Invalid",
            invalid_message(errors, obs.accepted.is_some()),
        ),
    };
    let last_transition_time = previous
        .get(&(kind, obs.key.clone()))
        .and_then(|u| {
            u.status
                .get("conditions")?
                .as_array()?
                .iter()
                .find(|c| {
                    c.get("type").and_then(|t| t.as_str()) == Some(ACCEPTED)
                        && c.get("status").and_then(|s| s.as_str()) == Some(status)
                })?
                .get("lastTransitionTime")
                .cloned()
        })
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: ACCEPTED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: obs.generation,
        last_transition_time,
    }
}
