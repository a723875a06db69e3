//! Whether what a TrafficRoute names is there: its host a known Service, its port one of
//! that Service's ports, each group some of its pods. A route naming what is not there is
//! valid, but routes nothing (or nothing to that group); the `ResolvedRefs` condition
//! names the field and why, instead of a silent `Accepted=True`.

use braid_crds::traffic_route::TrafficRouteSpec;

use crate::compiler::service_for_host;
use crate::registry::Snapshot;

/// The condition type (as Gateway API names it).
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// Something a route names that is not there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    /// The condition's reason.
    pub reason: &'static str,
    /// What is missing, naming the field, and the fix.
    pub message: String,
}

/// What the route `spec` in `namespace` names that `snapshot` does not have; `None` when
/// everything resolves.
pub fn unresolved(
    spec: &TrafficRouteSpec,
    namespace: &str,
    snapshot: &Snapshot,
    cluster_domain: &str,
) -> Option<Unresolved> {
    let Some(key) = service_for_host(&spec.host, namespace, cluster_domain) else {
        return Some(Unresolved {
            reason: "HostNotFound",
            message: format!(
                "spec.host: {:?} is not a Service name (give `name`, `name.namespace` or `name.namespace.svc.{cluster_domain}`)",
                spec.host
            ),
        });
    };
    let Some(service) = snapshot.services.get(&key) else {
        return Some(Unresolved {
            reason: "HostNotFound",
            message: format!(
                "spec.host: there is no Service {key}; the route applies once it exists"
            ),
        });
    };
    if let Some(port) = spec.port
        && !service.ports.iter().any(|p| p.port == port)
    {
        let ports: Vec<String> = service.ports.iter().map(|p| p.port.to_string()).collect();
        let target = service
            .ports
            .iter()
            .find(|p| p.target_port == port)
            .map(|p| format!(" ({port} is the target port of port {}: give that)", p.port))
            .unwrap_or_default();
        return Some(Unresolved {
            reason: "PortNotFound",
            message: format!(
                "spec.port: Service {key} has no port {port}{target}; its ports: {}",
                ports.join(", ")
            ),
        });
    }
    let pods: Vec<_> = service
        .endpoints
        .iter()
        .filter_map(|ep| snapshot.workloads.get(ep.workload.as_ref()?))
        .collect();
    let empty: Vec<String> = spec
        .groups
        .iter()
        .enumerate()
        .filter(|(_, g)| !pods.iter().any(|w| w.carries(&g.labels)))
        .map(|(i, g)| {
            let labels: Vec<String> = g.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("spec.groups[{i}] ({}): {}", g.name, labels.join(","))
        })
        .collect();
    if empty.is_empty() {
        return None;
    }
    Some(Unresolved {
        reason: "GroupEmpty",
        message: format!(
            "no pod of Service {key} has the labels of {}; requests routed to an empty group fail with 503",
            empty.join("; ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ObjectKey;
    use crate::source::dir::snapshot_of;

    const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments, version: v1}, serviceAccount: payments}
"#;

    fn check(route: &str) -> Option<Unresolved> {
        let text = format!(
            "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: r, namespace: shop}}\nspec: {route}\n"
        );
        let snapshot = snapshot_of(REGISTRY, &text);
        let obs = &snapshot.traffic_routes[&ObjectKey::new("shop", "r")];
        let spec = &obs.accepted.as_ref().expect("a valid route").spec;
        unresolved(spec, "shop", &snapshot, "cluster.local")
    }

    #[test]
    fn a_route_whose_names_resolve_is_fine() {
        assert_eq!(
            check(
                "{host: payments, port: 80, groups: [{name: v1, labels: {version: v1}}], rules: [{name: all, route: [{group: v1, weight: 100}]}]}"
            ),
            None
        );
    }

    #[test]
    fn the_target_port_instead_of_the_service_port_is_named() {
        let u = check("{host: payments, port: 8080, rules: [{name: all}]}").unwrap();
        assert_eq!(u.reason, "PortNotFound");
        assert!(
            u.message
                .starts_with("spec.port: Service shop/payments has no port 8080"),
            "{}",
            u.message
        );
        assert!(
            u.message.contains("target port of port 80"),
            "{}",
            u.message
        );
    }

    #[test]
    fn an_unknown_host_and_a_group_no_pod_matches_are_named() {
        let u = check("{host: ledger, rules: [{name: all}]}").unwrap();
        assert_eq!(u.reason, "HostNotFound");
        assert!(
            u.message.contains("no Service shop/ledger"),
            "{}",
            u.message
        );
        let u = check("{host: payments, groups: [{name: v1, labels: {version: v1}}, {name: canary, labels: {version: v2}}], rules: [{name: all, route: [{group: v1, weight: 90}, {group: canary, weight: 10}]}]}").unwrap();
        assert_eq!(u.reason, "GroupEmpty");
        assert!(
            u.message.contains("spec.groups[1] (canary): version=v2"),
            "{}",
            u.message
        );
        assert!(!u.message.contains("groups[0]"), "{}", u.message);
    }
}
