#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! manifests/rbac/operator.yaml grants what the operator's code uses, and nothing broad.

use std::path::Path;

use braid_operator::leader::LEASE_NAME;
use braid_operator::source::kube::publish::Watched;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use serde::de::DeserializeOwned;

const NS: &str = "braid-system";
const SA: &str = "braid-operator";

fn docs() -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/rbac/operator.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

fn one<T: DeserializeOwned>(kind: &str) -> T {
    let mut found: Vec<T> = docs()
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .map(|d| serde_json::from_value(d).unwrap())
        .collect();
    assert_eq!(found.len(), 1, "one {kind}");
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
            assert!(
                allows(&rules, group, &status, "patch", None),
                "patch {status}"
            );
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
}

#[test]
fn nothing_broad_is_granted() {
    let role: ClusterRole = one("ClusterRole");
    let leader: Role = one("Role");
    let rules = role.rules.unwrap().into_iter().chain(leader.rules.unwrap());
    for r in rules {
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
        for resource in r.resources.iter().flatten() {
            assert_ne!(resource, "secrets", "{r:?}");
        }
    }
}

#[test]
fn leader_election_is_confined_to_its_lease() {
    let role: Role = one("Role");
    assert_eq!(role.metadata.namespace.as_deref(), Some(NS));
    let rules = role.rules.unwrap();
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
fn both_roles_are_bound_to_the_operators_service_account() {
    let sa: ServiceAccount = one("ServiceAccount");
    assert_eq!(sa.metadata.name.as_deref(), Some(SA));
    assert_eq!(sa.metadata.namespace.as_deref(), Some(NS));
    let cluster: ClusterRoleBinding = one("ClusterRoleBinding");
    let role: ClusterRole = one("ClusterRole");
    assert_eq!(cluster.role_ref.kind, "ClusterRole");
    assert_eq!(
        Some(cluster.role_ref.name.as_str()),
        role.metadata.name.as_deref()
    );
    let local: RoleBinding = one("RoleBinding");
    let leader: Role = one("Role");
    assert_eq!(local.metadata.namespace.as_deref(), Some(NS));
    assert_eq!(local.role_ref.kind, "Role");
    assert_eq!(
        Some(local.role_ref.name.as_str()),
        leader.metadata.name.as_deref()
    );
    for subjects in [cluster.subjects.unwrap(), local.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        let s = &subjects[0];
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("ServiceAccount", SA));
        assert_eq!(s.namespace.as_deref(), Some(NS));
    }
}
