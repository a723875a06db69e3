//! Which resources are in force, in what order, and which of them governs a workload:
//! the rules the compiler, the rollout loop and the healer must read alike.

use std::collections::BTreeMap;

use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};

use super::{ObjectKey, Observed, Snapshot, Workload};

impl Snapshot {
    /// The TrafficRoutes in force (the last valid generation of each), oldest first.
    pub fn traffic_routes_oldest_first(&self) -> Vec<(&ObjectKey, &TrafficRoute)> {
        accepted_oldest_first(&self.traffic_routes)
    }

    /// The accepted EncryptionPolicies, oldest first.
    pub fn encryption_policies_oldest_first(&self) -> Vec<(&ObjectKey, &EncryptionPolicy)> {
        accepted_oldest_first(&self.encryption_policies)
    }

    /// The accepted AccessPolicies, oldest first.
    pub fn access_policies_oldest_first(&self) -> Vec<(&ObjectKey, &AccessPolicy)> {
        accepted_oldest_first(&self.access_policies)
    }

    /// The accepted SelfHealings, oldest first.
    pub fn self_healings_oldest_first(&self) -> Vec<(&ObjectKey, &SelfHealing)> {
        accepted_oldest_first(&self.self_healings)
    }
}

/// The policy governing `workload` among `policies` (oldest first): the oldest selecting
/// it by labels, else the oldest namespace-wide one.
pub fn governing_policy<'a>(
    policies: &[(&'a ObjectKey, &'a EncryptionPolicy)],
    workload: &Workload,
) -> Option<(&'a ObjectKey, &'a EncryptionPolicy)> {
    let in_namespace = || {
        policies
            .iter()
            .filter(|(key, _)| key.namespace == workload.key.namespace)
    };
    in_namespace()
        .find(|(_, p)| !p.spec.selector.is_empty() && p.spec.selector.matches(&workload.labels))
        .or_else(|| in_namespace().find(|(_, p)| p.spec.selector.is_empty()))
        .copied()
}

/// The last valid generation of each resource in `resources`, oldest first, ties by
/// namespace/name, so no outcome depends on map order.
fn accepted_oldest_first<T>(resources: &BTreeMap<ObjectKey, Observed<T>>) -> Vec<(&ObjectKey, &T)> {
    let mut found: Vec<(Option<&str>, &ObjectKey, &T)> = resources
        .values()
        .filter_map(|o| {
            o.accepted
                .as_deref()
                .map(|r| (o.created.as_deref(), &o.key, r))
        })
        .collect();
    found.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    found.into_iter().map(|(_, key, r)| (key, r)).collect()
}
