#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! manifests/rbac/operator.yaml grants what the operator's code uses, and nothing broad.

use std::path::Path;

use braid_operator::ca::secret::DEFAULT_CA_SECRET;
use braid_operator::ca::trust::TRUST_CONFIGMAP;
use braid_operator::ca::webhook::{DEFAULT_WEBHOOK_CONFIG, DEFAULT_WEBHOOK_SECRET};
use braid_operator::leader::LEASE_NAME;
use braid_operator::source::kube::publish::Watched;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;

const NS: &str = "braid-system";
const SA: &str = "braid-operator";
const LEADER_ROLE: &str = "braid-operator-leader-election";
const CA_ROLE: &str = "braid-operator-ca";

fn docs() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/operator.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn all<T: DeserializeOwned>(kind: &str) -> Vec<T> {
    docs()
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d).unwrap())
        .collect()
}

fn one<T: DeserializeOwned>(kind: &str) -> T {
    let mut found: Vec<T> = all(kind);
    assert_eq!(found.len(), 1, "one {kind}");
    found.remove(0)
}

fn role(name: &str) -> Role {
    let mut found: Vec<Role> = all::<Role>("Role")
        .into_iter()
        .filter(|r| r.metadata.name.as_deref() == Some(name))
        .collect();
    assert_eq!(found.len(), 1, "one Role {name}");
    found.remove(0)
}

fn allows(
    rules: &[PolicyRule],
    group: &str,
    resource: &str,
    verb: &str,
    name: Option<&str>,
) -> bool {
    let has = |list: &Option<Vec<String>>, v: &str| list.iter().flatten().any(|x| x == v);
    rules.iter().any(|r| {
        has(&r.api_groups, group)
            && has(&r.resources, resource)
            && r.verbs.iter().any(|v| v == verb)
            && match (&r.resource_names, name) {
                (None, _) => true,
                (Some(names), Some(n)) => names.iter().any(|x| x == n),
                (Some(_), None) => false,
            }
    })
}

/// `services` → ("", "services"); `endpointslices.discovery.k8s.io` → (group, resource).
fn group_resource(plural: &str) -> (&str, &str) {
    match plural.split_once('.') {
        Some((resource, group)) => (group, resource),
        None => ("", plural),
    }
}

#[test]
fn the_cluster_role_covers_what_the_operator_does() {
    let role: ClusterRole = one("ClusterRole");
    let rules = role.rules.unwrap();
    for w in Watched::ALL {
        let (group, resource) = group_resource(w.plural());
        for verb in ["list", "watch"] {
            assert!(allows(&rules, group, resource, verb, None), "{verb} {w}");
        }
        if w.is_braid() {
            assert!(
                allows(&rules, group, resource, "get", None),
                "get {w} (events' uid)"
            );
            let status = format!("{resource}/status");
            // Written by server-side apply; read afresh by a new leader resuming a
            // rollout (`StatusSink::read`: GET on the subresource).
            for verb in ["patch", "get"] {
                assert!(
                    allows(&rules, group, &status, verb, None),
                    "{verb} {status}"
                );
            }
        }
    }
    assert!(allows(
        &rules,
        "authentication.k8s.io",
        "tokenreviews",
        "create",
        None
    ));
    for verb in ["create", "patch"] {
        assert!(
            allows(&rules, "events.k8s.io", "events", verb, None),
            "{verb} events"
        );
    }
    // The SelfHealing controller's.
    assert!(allows(&rules, "", "pods/eviction", "create", None));
    assert!(allows(&rules, "", "pods", "patch", None));
    // The trust bundle's ConfigMap, by server-side apply in any namespace.
    assert!(allows(&rules, "", "configmaps", "create", None));
    assert!(allows(
        &rules,
        "",
        "configmaps",
        "patch",
        Some(TRUST_CONFIGMAP)
    ));
    assert!(!allows(&rules, "", "configmaps", "patch", Some("another")));
    // Watched by name, so one deleted or edited is put back at once.
    for verb in ["get", "list", "watch"] {
        assert!(
            allows(&rules, "", "configmaps", verb, Some(TRUST_CONFIGMAP)),
            "{verb} configmaps"
        );
        assert!(
            !allows(&rules, "", "configmaps", verb, Some("another")),
            "{verb} another configmap"
        );
    }
    for verb in ["update", "delete"] {
        assert!(
            !allows(&rules, "", "configmaps", verb, Some(TRUST_CONFIGMAP)),
            "{verb} configmaps"
        );
    }
    // caBundle of the injector's webhooks, and no other webhook configuration.
    let g = "admissionregistration.k8s.io";
    for verb in ["get", "list", "watch", "patch"] {
        assert!(
            allows(
                &rules,
                g,
                "mutatingwebhookconfigurations",
                verb,
                Some(DEFAULT_WEBHOOK_CONFIG)
            ),
            "{verb} mutatingwebhookconfigurations"
        );
        assert!(!allows(
            &rules,
            g,
            "mutatingwebhookconfigurations",
            verb,
            Some("another")
        ));
    }
}

#[test]
fn secrets_are_the_cas_and_the_webhooks_in_braid_system_only() {
    let rules = role(CA_ROLE).rules.unwrap();
    assert_eq!(role(CA_ROLE).metadata.namespace.as_deref(), Some(NS));
    // Created when absent (RBAC cannot restrict create to a name).
    assert!(allows(&rules, "", "secrets", "create", None));
    for name in [DEFAULT_CA_SECRET, DEFAULT_WEBHOOK_SECRET] {
        assert!(
            allows(&rules, "", "secrets", "get", Some(name)),
            "get {name}"
        );
    }
    // The webhook's is renewed in place, and watched so one deleted is issued at once.
    for verb in ["update", "list", "watch"] {
        assert!(
            allows(&rules, "", "secrets", verb, Some(DEFAULT_WEBHOOK_SECRET)),
            "{verb} {DEFAULT_WEBHOOK_SECRET}"
        );
    }
    // The CA is never changed, no other Secret is read, and none is listed.
    assert!(!allows(
        &rules,
        "",
        "secrets",
        "update",
        Some(DEFAULT_CA_SECRET)
    ));
    assert!(!allows(&rules, "", "secrets", "get", Some("another")));
    for verb in ["list", "watch", "patch", "delete"] {
        assert!(
            !allows(&rules, "", "secrets", verb, Some(DEFAULT_CA_SECRET)),
            "{verb}"
        );
    }
    // Every rule but create names its Secrets.
    for r in &rules {
        if r.verbs != ["create"] {
            assert!(r.resource_names.is_some(), "{r:?}");
        }
    }
}

#[test]
fn nothing_broad_is_granted() {
    let cluster_rules = one::<ClusterRole>("ClusterRole").rules.unwrap();
    for r in &cluster_rules {
        for resource in r.resources.iter().flatten() {
            assert_ne!(resource, "secrets", "no Secret outside braid-system: {r:?}");
        }
    }
    let namespaced = all::<Role>("Role")
        .into_iter()
        .flat_map(|r| r.rules.unwrap());
    for r in cluster_rules.into_iter().chain(namespaced) {
        let all = r
            .api_groups
            .iter()
            .flatten()
            .chain(r.resources.iter().flatten())
            .chain(&r.verbs);
        for item in all {
            assert_ne!(item, "*", "no wildcards: {r:?}");
        }
        for verb in &r.verbs {
            assert!(
                ["get", "list", "watch", "create", "update", "patch"].contains(&verb.as_str()),
                "unexpected verb {verb}: {r:?}"
            );
        }
    }
}

#[test]
fn leader_election_is_confined_to_its_lease() {
    let role = role(LEADER_ROLE);
    assert_eq!(role.metadata.namespace.as_deref(), Some(NS));
    let rules = role.rules.unwrap();
    // Followers relay ejection reports to the leader, found through its pod.
    assert!(allows(
        &rules,
        "",
        "pods",
        "get",
        Some("braid-operator-7d9f")
    ));
    let g = "coordination.k8s.io";
    assert!(allows(&rules, g, "leases", "create", None));
    for verb in ["get", "update"] {
        assert!(
            allows(&rules, g, "leases", verb, Some(LEASE_NAME)),
            "{verb}"
        );
        assert!(
            !allows(&rules, g, "leases", verb, Some("another-lease")),
            "{verb} another"
        );
    }
}

#[test]
fn every_role_is_bound_to_the_operators_service_account() {
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(SA));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NS));
    let cluster: ClusterRoleBinding = one("ClusterRoleBinding");
    let cluster_role: ClusterRole = one("ClusterRole");
    assert_eq!(cluster.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(cluster.role_ref.name.as_str()),
        cluster_role.metadata.name.as_deref()
    );
    let local: Vec<RoleBinding> = all("RoleBinding");
    let roles: Vec<Role> = all("Role");
    assert_eq!(local.len(), roles.len(), "one binding per Role");
    let mut subjects = vec![cluster.subjects.unwrap()];
    for name in [LEADER_ROLE, CA_ROLE] {
        role(name);
        let binding = local
            .iter()
            .find(|b| b.role_ref.name == name)
            .unwrap_or_else(|| panic!("no RoleBinding of {name}"));
        assert_eq!(binding.metadata.namespace.as_deref(), Some(NS));
        assert_eq!(binding.role_ref.kind, "Role");
        subjects.push(binding.subjects.clone().unwrap());
    }
    for subjects in subjects {
        assert_eq!(subjects.len(), 1);
        let s = &subjects[0];
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("ServiceAccount", SA));
        assert_eq!(s.namespace.as_deref(), Some(NS));
    }
}
