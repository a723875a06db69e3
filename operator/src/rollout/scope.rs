//! What each EncryptionPolicy covers in one compile: the pods it governs and the services
//! they back, and which pod holds each IP. It changes only with a new compile, so the
//! rollout loop works it out once per compile, in one pass over the workloads and one
//! over the endpoints, rather than every tick for every policy (at 50,000 workloads that
//! held a third of a core with nothing changing).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use braid_crds::EncryptionPolicy;

use crate::hub::Published;
use crate::registry::{ObjectKey, Snapshot, Workload, governing_policy};

/// What one policy covers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Covered {
    /// The pods it governs.
    pub pods: BTreeSet<ObjectKey>,
    /// The services with an endpoint on one of them.
    pub services: BTreeSet<ObjectKey>,
}

/// Every policy's coverage in one compile, and the pods by IP.
#[derive(Debug)]
pub struct Scopes {
    /// The compile it was worked out from.
    compile: Arc<Published>,
    by_policy: HashMap<ObjectKey, Covered>,
    /// Which pod holds each IP (to name plaintext callers).
    pub by_ip: HashMap<IpAddr, Arc<Workload>>,
}

impl Scopes {
    /// Works out `policies` (oldest first) over `compile`.
    pub fn of(compile: Arc<Published>, policies: &[(&ObjectKey, &EncryptionPolicy)]) -> Self {
        let snapshot = &compile.snapshot;
        let by_policy = covered(snapshot, policies);
        let by_ip = snapshot
            .workloads
            .values()
            .flat_map(|w| w.ips.iter().map(move |ip| (*ip, w.clone())))
            .collect();
        Self {
            by_policy,
            by_ip,
            compile,
        }
    }

    /// Whether these were worked out from `compile`.
    pub fn is_of(&self, compile: &Arc<Published>) -> bool {
        Arc::ptr_eq(&self.compile, compile)
    }

    /// What `policy` covers (nothing when it governs no pod).
    pub fn covered(&self, policy: &ObjectKey) -> &Covered {
        static NONE: std::sync::LazyLock<Covered> = std::sync::LazyLock::new(Covered::default);
        self.by_policy.get(policy).unwrap_or(&NONE)
    }
}

/// Each policy's pods (the workloads it governs) and services (with an endpoint on one).
fn covered(
    snapshot: &Snapshot,
    policies: &[(&ObjectKey, &EncryptionPolicy)],
) -> HashMap<ObjectKey, Covered> {
    let mut out: HashMap<ObjectKey, Covered> = HashMap::new();
    let mut governing: HashMap<&ObjectKey, &ObjectKey> = HashMap::new();
    for (key, workload) in &snapshot.workloads {
        if let Some((policy, _)) = governing_policy(policies, workload) {
            out.entry(policy.clone())
                .or_default()
                .pods
                .insert(key.clone());
            governing.insert(key, policy);
        }
    }
    for (key, service) in &snapshot.services {
        for ep in &service.endpoints {
            if let Some(policy) = ep.workload.as_ref().and_then(|w| governing.get(w)) {
                out.entry((*policy).clone())
                    .or_default()
                    .services
                    .insert(key.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
- {name: checkout, namespace: shop, vips: [10.96.0.11], selector: {app: checkout}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
- {name: web, namespace: front, vips: [10.96.0.12], selector: {app: web}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
- {name: empty, namespace: front, vips: [10.96.0.13], selector: {app: nothing}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
- {name: payments-b, namespace: shop, ips: [10.0.0.2], labels: {app: payments}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
- {name: web, namespace: front, ips: [10.0.1.1], labels: {app: web}, serviceAccount: web}
- {name: other, namespace: elsewhere, ips: [10.0.2.1], labels: {app: web}, serviceAccount: web}
"#;

    /// A label selector and a namespace-wide policy in one namespace (the selector wins
    /// where both apply), a second selector that loses to the older one, and a
    /// namespace-wide one elsewhere.
    const POLICIES: &str = "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop, creationTimestamp: '2026-01-01T00:00:00Z'}\nspec: {selector: {matchLabels: {app: payments}}, mode: Permissive}\n---\napiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: all, namespace: shop, creationTimestamp: '2026-01-02T00:00:00Z'}\nspec: {mode: Permissive}\n---\napiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay-later, namespace: shop, creationTimestamp: '2026-01-03T00:00:00Z'}\nspec: {selector: {matchLabels: {app: payments}}, mode: Strict}\n---\napiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: front, namespace: front}\nspec: {mode: Strict}\n";

    /// What the loop worked out per policy and per tick before: the reference.
    fn one_by_one(
        snapshot: &Snapshot,
        policies: &[(&ObjectKey, &EncryptionPolicy)],
        policy: &ObjectKey,
    ) -> Covered {
        let pods: BTreeSet<ObjectKey> = snapshot
            .workloads
            .iter()
            .filter(|(_, w)| governing_policy(policies, w).is_some_and(|(k, _)| k == policy))
            .map(|(k, _)| k.clone())
            .collect();
        let services = snapshot
            .services
            .iter()
            .filter(|(_, s)| {
                s.endpoints
                    .iter()
                    .any(|ep| ep.workload.as_ref().is_some_and(|w| pods.contains(w)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        Covered { pods, services }
    }

    #[test]
    fn one_pass_covers_what_each_policy_covered_on_its_own() {
        let snapshot = crate::source::dir::snapshot_of(REGISTRY, POLICIES);
        let policies = snapshot.encryption_policies_oldest_first();
        assert_eq!(policies.len(), 4);
        let compile = Arc::new(Published {
            snapshot: Arc::new(snapshot.clone()),
            configs: Default::default(),
            catalog: Default::default(),
            seen_at: Instant::now(),
        });
        let scopes = Scopes::of(compile.clone(), &policies);
        assert!(scopes.is_of(&compile));
        let mut any = false;
        for (key, _) in &policies {
            let want = one_by_one(&snapshot, &policies, key);
            any |= !want.pods.is_empty() && !want.services.is_empty();
            assert_eq!(scopes.covered(key), &want, "{key}");
        }
        assert!(any, "some policy covers pods and services");
        let pay = scopes.covered(&ObjectKey::new("shop", "pay"));
        assert_eq!(pay.pods.len(), 2);
        assert_eq!(pay.services, [ObjectKey::new("shop", "payments")].into());
        assert!(
            scopes
                .covered(&ObjectKey::new("shop", "pay-later"))
                .pods
                .is_empty()
        );
        assert_eq!(scopes.by_ip.len(), 5);
        assert_eq!(
            scopes.covered(&ObjectKey::new("none", "none")),
            &Covered::default()
        );
    }
}
