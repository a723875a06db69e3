//! Everything the reflectors hold, as one [`Snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;

use super::resource::Decoded;
use super::service::{service_entry, slice_service};
use super::workload::workload;
use crate::registry::Progress;
use crate::registry::enforced::recorded_enforcing;
use crate::registry::progress::recorded_progress;
use crate::registry::{Kind, ObjectKey, Observed, Snapshot};

/// The contents of the stores at one moment.
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// core/v1 Services.
    pub services: Vec<Arc<Service>>,
    /// discovery.k8s.io/v1 EndpointSlices.
    pub endpoint_slices: Vec<Arc<EndpointSlice>>,
    /// Pods.
    pub pods: Vec<Arc<Pod>>,
    /// Names of the namespaces labelled `braid.dev/inject=enabled`.
    pub meshed_namespaces: BTreeSet<String>,
    /// TrafficRoutes, untyped.
    pub traffic_routes: Vec<Arc<DynamicObject>>,
    /// EncryptionPolicies, untyped.
    pub encryption_policies: Vec<Arc<DynamicObject>>,
    /// SelfHealings, untyped.
    pub self_healings: Vec<Arc<DynamicObject>>,
    /// AccessPolicies, untyped.
    pub access_policies: Vec<Arc<DynamicObject>>,
}

/// Builds snapshots, remembering decoded braid resources between builds.
#[derive(Debug)]
pub struct Assembler {
    traffic_routes: Decoded<TrafficRoute>,
    encryption_policies: Decoded<EncryptionPolicy>,
    self_healings: Decoded<SelfHealing>,
    access_policies: Decoded<AccessPolicy>,
}

impl Default for Assembler {
    fn default() -> Self {
        Self {
            traffic_routes: Decoded::new(Kind::TrafficRoute),
            encryption_policies: Decoded::new(Kind::EncryptionPolicy),
            self_healings: Decoded::new(Kind::SelfHealing),
            access_policies: Decoded::new(Kind::AccessPolicy),
        }
    }
}

impl Assembler {
    /// The snapshot of `objects`.
    pub fn snapshot(&mut self, objects: &Objects) -> Snapshot {
        let mut slices: BTreeMap<ObjectKey, Vec<&EndpointSlice>> = BTreeMap::new();
        for slice in &objects.endpoint_slices {
            if let Some(service) = slice_service(slice) {
                slices.entry(service).or_default().push(slice);
            }
        }
        let services = objects
            .services
            .iter()
            .filter_map(|s| {
                let key = ObjectKey::new(
                    s.metadata.namespace.as_deref()?,
                    s.metadata.name.as_deref()?,
                );
                let entry = service_entry(s, slices.get(&key).map_or(&[], Vec::as_slice))?;
                Some((key, Arc::new(entry)))
            })
            .collect();
        let workloads = objects
            .pods
            .iter()
            .filter_map(|p| {
                let opted_in = p
                    .metadata
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| objects.meshed_namespaces.contains(ns));
                workload(p, opted_in).map(|w| (w.key.clone(), Arc::new(w)))
            })
            .collect();
        let encryption_policies = by_key(
            self.encryption_policies
                .observe_all(objects.encryption_policies.iter().map(|o| &**o)),
        );
        let rollout_status = objects
            .encryption_policies
            .iter()
            .filter_map(|o| rollout_status(o, &encryption_policies))
            .collect();
        let access_policies = by_key(
            self.access_policies
                .observe_all(objects.access_policies.iter().map(|o| &**o)),
        );
        let access_enforced = objects
            .access_policies
            .iter()
            .filter(|o| enforcing(o, &access_policies))
            .filter_map(|o| {
                Some(ObjectKey::new(
                    o.metadata.namespace.as_deref()?,
                    o.metadata.name.as_deref()?,
                ))
            })
            .collect();
        Snapshot {
            services,
            workloads,
            traffic_routes: by_key(
                self.traffic_routes
                    .observe_all(objects.traffic_routes.iter().map(|o| &**o)),
            ),
            encryption_policies,
            self_healings: by_key(
                self.self_healings
                    .observe_all(objects.self_healings.iter().map(|o| &**o)),
            ),
            access_policies,
            meshed_namespaces: objects.meshed_namespaces.clone(),
            rollout_status,
            access_enforced,
            noticed: Default::default(),
        }
    }
}

/// The rollout progress an EncryptionPolicy's status records (see [`recorded_progress`]),
/// for the spec in force of it among `policies`.
fn rollout_status(
    obj: &DynamicObject,
    policies: &BTreeMap<ObjectKey, Observed<EncryptionPolicy>>,
) -> Option<(ObjectKey, Progress)> {
    let key = ObjectKey::new(
        obj.metadata.namespace.as_deref()?,
        obj.metadata.name.as_deref()?,
    );
    let spec = policies
        .get(&key)
        .and_then(|o| o.accepted.as_deref())
        .map(|p| &p.spec);
    let progress = recorded_progress(obj.metadata.generation, spec, obj.data.get("status")?)?;
    Some((key, progress))
}

/// Whether an AccessPolicy's status records its rollout as enforcing it (see
/// [`recorded_enforcing`]), for the spec in force of it among `policies`.
fn enforcing(obj: &DynamicObject, policies: &BTreeMap<ObjectKey, Observed<AccessPolicy>>) -> bool {
    let (Some(ns), Some(name)) = (
        obj.metadata.namespace.as_deref(),
        obj.metadata.name.as_deref(),
    ) else {
        return false;
    };
    let spec = policies
        .get(&ObjectKey::new(ns, name))
        .and_then(|o| o.accepted.as_deref())
        .map(|p| &p.spec);
    obj.data
        .get("status")
        .and_then(|s| recorded_enforcing(obj.metadata.generation, spec, s))
        .unwrap_or(false)
}

fn by_key<T>(observed: Vec<Observed<T>>) -> BTreeMap<ObjectKey, Observed<T>> {
    observed.into_iter().map(|o| (o.key.clone(), o)).collect()
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, ServicePort, ServiceSpec};
    use k8s_openapi::api::discovery::v1::Endpoint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use kube::api::ApiResource;

    use super::super::service::SERVICE_NAME_LABEL;
    use super::super::workload::PROXY_CONTAINER;
    use super::*;

    fn meta(ns: &str, name: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            ..Default::default()
        }
    }

    fn objects() -> Objects {
        let service = Service {
            metadata: meta("shop", "payments"),
            spec: Some(ServiceSpec {
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let mut slice_meta = meta("shop", "payments-abc");
        slice_meta.labels = Some([(SERVICE_NAME_LABEL.into(), "payments".into())].into());
        let slice = EndpointSlice {
            metadata: slice_meta,
            address_type: "IPv4".into(),
            endpoints: vec![Endpoint {
                addresses: vec!["10.0.0.1".into()],
                ..Default::default()
            }],
            ports: None,
        };
        let pod = |ns: &str| Pod {
            metadata: meta(ns, "payments-0"),
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: PROXY_CONTAINER.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                pod_ip: Some("10.0.0.1".into()),
                ..Default::default()
            }),
        };
        let ar = ApiResource::erase::<TrafficRoute>(&());
        let mut route = DynamicObject::new("payments", &ar).within("shop");
        route.data = serde_json::json!({"spec": {"host": "payments", "rules": []}});
        Objects {
            services: vec![Arc::new(service)],
            endpoint_slices: vec![Arc::new(slice)],
            pods: vec![Arc::new(pod("shop")), Arc::new(pod("other"))],
            meshed_namespaces: ["shop".to_string()].into(),
            traffic_routes: vec![Arc::new(route)],
            ..Default::default()
        }
    }

    #[test]
    fn rollout_progress_is_read_from_a_status_of_the_current_generation_only() {
        let ar = ApiResource::erase::<EncryptionPolicy>(&());
        let mut policy = DynamicObject::new("pay", &ar).within("shop");
        policy.metadata.generation = Some(3);
        policy.data = serde_json::json!({
            "spec": {"mode": "Permissive"},
            "status": {"observedGeneration": 3, "currentPercent": 25, "phase": "RollingOut"}
        });
        let none = BTreeMap::new();
        assert_eq!(
            rollout_status(&policy, &none),
            Some((
                ObjectKey::new("shop", "pay"),
                Progress {
                    percent: 25,
                    strict: false
                }
            ))
        );
        policy.data["status"]["observedGeneration"] = 2.into();
        assert_eq!(
            rollout_status(&policy, &none),
            None,
            "written for another spec"
        );
    }

    #[test]
    fn an_access_policy_enforced_by_its_rollout_is_read_back_and_compiled_as_enforcing() {
        let ar = ApiResource::erase::<AccessPolicy>(&());
        let mut policy = DynamicObject::new("callers", &ar).within("shop");
        policy.metadata.generation = Some(2);
        policy.data = serde_json::json!({
            "spec": {"mode": "Audit", "rollout": {"interval": "1m"}, "rules": [{"from": [{"serviceAccount": "checkout"}]}]},
            "status": {"observedGeneration": 2, "phase": "Enforcing", "phaseStartedAt": "2026-12-01T00:00:00Z"}
        });
        let mut objects = objects();
        objects.access_policies = vec![Arc::new(policy.clone())];
        let snap = Assembler::default().snapshot(&objects);
        let key = ObjectKey::new("shop", "callers");
        assert!(snap.access_policies[&key].current.is_ok());
        assert!(snap.access_enforced.contains(&key));
        // The proxies of the pods it selects compile it as enforcing: a replica that
        // starts (or takes over) serves what the status records, never Audit again.
        let out = crate::compiler::compile(&snap, &crate::compiler::Options::default());
        let pod = ObjectKey::new("shop", "payments-0");
        let modes: Vec<_> = out.configs[&pod]
            .inbound
            .access_policies
            .iter()
            .map(|p| p.mode)
            .collect();
        assert_eq!(modes, [braid_api::config::access::AccessMode::Enforce]);
        // A status for another spec: Audit until the leader writes one for this one.
        policy.data["status"]["observedGeneration"] = 1.into();
        objects.access_policies = vec![Arc::new(policy)];
        let snap = Assembler::default().snapshot(&objects);
        assert!(!snap.access_enforced.contains(&key));
    }

    #[test]
    fn the_stores_become_a_snapshot() {
        let snap = Assembler::default().snapshot(&objects());
        let svc = &snap.services[&ObjectKey::new("shop", "payments")];
        assert_eq!(svc.endpoints.len(), 1);
        assert!(snap.workloads[&ObjectKey::new("shop", "payments-0")].meshed);
        // Same pod in a namespace that is not opted in: a workload, not meshed.
        assert!(!snap.workloads[&ObjectKey::new("other", "payments-0")].meshed);
        // `rules: []` is refused by validation; it is in the snapshot with its errors.
        let route = &snap.traffic_routes[&ObjectKey::new("shop", "payments")];
        assert!(route.current.is_err());
        assert!(snap.encryption_policies.is_empty() && snap.self_healings.is_empty());
        // Kept for the trust ConfigMaps the leader writes there.
        assert_eq!(snap.meshed_namespaces, ["shop".to_string()].into());
    }

    #[test]
    fn the_same_objects_give_the_same_snapshot() {
        let mut a = Assembler::default();
        let objects = objects();
        assert_eq!(a.snapshot(&objects), a.snapshot(&objects));
    }
}
