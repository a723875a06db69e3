//! A Pod as a [`Workload`], and the slimming that keeps only what that needs.

use std::net::IpAddr;

use braid_api::control::delta::ServiceRef;
use k8s_openapi::api::core::v1::{Container, Pod, PodIP, PodSpec, PodStatus};

use crate::registry::{ObjectKey, Workload};

/// The namespace label (value [`INJECT_ENABLED`]) that opts a namespace into the mesh, and
/// the pod annotation (value `"false"`) that opts a pod out.
pub const INJECT_KEY: &str = "braid.dev/inject";
/// The pod annotation naming services its proxy holds before its app calls them.
pub use braid_api::control::OUTBOUND_SCOPE_ANNOTATION as OUTBOUND_SCOPE_KEY;
/// The value of [`INJECT_KEY`] on a namespace in the mesh.
pub const INJECT_ENABLED: &str = "enabled";
/// The name of the injected proxy container.
pub const PROXY_CONTAINER: &str = "braid-proxy";

/// The service account of a pod that names none.
const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// `pod` as a workload, or `None` when it cannot take traffic: no namespace or name, no IP
/// yet, or finished (`Succeeded`/`Failed`; their IPs may already belong to another pod).
/// It is meshed when its namespace is opted in, the pod is not opted out, and it runs the
/// proxy (a pod created before its namespace was opted in has none until restarted).
pub fn workload(pod: &Pod, namespace_opted_in: bool) -> Option<Workload> {
    let key = ObjectKey::new(
        pod.metadata
            .namespace
            .as_deref()
            .filter(|n| !n.is_empty())?,
        pod.metadata.name.as_deref().filter(|n| !n.is_empty())?,
    );
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let ips = pod_ips(status);
    if ips.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref();
    let service_account = spec
        .and_then(|s| {
            s.service_account_name
                .as_deref()
                .or(s.service_account.as_deref())
        })
        .filter(|sa| !sa.is_empty())
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_string();
    let opted_out = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT_KEY))
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let has_proxy = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    });
    let mut outbound_scope: Vec<ServiceRef> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(OUTBOUND_SCOPE_KEY))
        .map(|v| ServiceRef::parse_header(v).collect())
        .unwrap_or_default();
    outbound_scope.sort();
    outbound_scope.dedup();
    Some(Workload {
        key,
        ips,
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        service_account,
        meshed: namespace_opted_in && !opted_out && has_proxy,
        outbound_scope,
    })
}

/// `status.podIPs` in order (the primary first), else `status.podIP`.
fn pod_ips(status: &PodStatus) -> Vec<IpAddr> {
    let listed: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if !listed.is_empty() {
        return listed;
    }
    status
        .pod_ip
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .into_iter()
        .collect()
}

/// Drops from `pod` everything [`workload`] does not read, before it is stored: pods are
/// the largest and most numerous objects watched, and the operator keeps all of them.
pub fn slim_pod(pod: &mut Pod) {
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.owner_references = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.retain(|k, _| k == INJECT_KEY || k == OUTBOUND_SCOPE_KEY);
    }
    let names = |containers: &[Container]| -> Vec<Container> {
        containers
            .iter()
            .map(|c| Container {
                name: c.name.clone(),
                ..Default::default()
            })
            .collect()
    };
    pod.spec = pod.spec.as_ref().map(|s| PodSpec {
        containers: names(&s.containers),
        init_containers: s.init_containers.as_deref().map(names),
        service_account_name: s.service_account_name.clone(),
        service_account: s.service_account.clone(),
        ..Default::default()
    });
    pod.status = pod.status.as_ref().map(|s| PodStatus {
        phase: s.phase.clone(),
        pod_ip: s.pod_ip.clone(),
        pod_ips: s
            .pod_ips
            .as_ref()
            .map(|ips| ips.iter().map(|p| PodIP { ip: p.ip.clone() }).collect()),
        ..Default::default()
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn pod(containers: &[&str], init: &[&str]) -> Pod {
        let c = |names: &[&str]| -> Vec<Container> {
            names
                .iter()
                .map(|n| Container {
                    name: n.to_string(),
                    image: Some("example.com/app:1".into()),
                    ..Default::default()
                })
                .collect()
        };
        Pod {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("payments-0".into()),
                labels: Some([("app".to_string(), "payments".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: c(containers),
                init_containers: (!init.is_empty()).then(|| c(init)),
                service_account_name: Some("payments".into()),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some("10.0.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.0.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_running_injected_pod_is_a_meshed_workload() {
        let w = workload(&pod(&["app", PROXY_CONTAINER], &[]), true).unwrap();
        assert_eq!(w.key, ObjectKey::new("shop", "payments-0"));
        assert_eq!(
            w.ips,
            vec![
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(w.labels["app"], "payments");
        assert_eq!(w.service_account, "payments");
        assert!(w.meshed);
    }

    #[test]
    fn the_outbound_scope_annotation_survives_slimming_and_is_read() {
        let mut p = pod(&["app", PROXY_CONTAINER], &[]);
        p.metadata.annotations = Some(
            [
                (
                    OUTBOUND_SCOPE_KEY.to_string(),
                    "shop/orders, ops/*,bad".to_string(),
                ),
                ("other".to_string(), "dropped".to_string()),
            ]
            .into(),
        );
        slim_pod(&mut p);
        let w = workload(&p, true).unwrap();
        let scope: Vec<String> = w.outbound_scope.iter().map(ToString::to_string).collect();
        assert_eq!(scope, ["ops/*", "shop/orders"]);
    }

    #[test]
    fn the_proxy_may_be_a_native_sidecar() {
        let w = workload(&pod(&["app"], &[PROXY_CONTAINER]), true).unwrap();
        assert!(w.meshed);
    }

    #[test]
    fn meshed_needs_namespace_proxy_and_no_opt_out() {
        assert!(
            !workload(&pod(&["app", PROXY_CONTAINER], &[]), false)
                .unwrap()
                .meshed
        );
        assert!(!workload(&pod(&["app"], &[]), true).unwrap().meshed);
        let mut out = pod(&["app", PROXY_CONTAINER], &[]);
        out.metadata.annotations = Some([(INJECT_KEY.to_string(), "false".to_string())].into());
        assert!(!workload(&out, true).unwrap().meshed);
    }

    #[test]
    fn pods_without_an_ip_or_finished_are_skipped() {
        let mut p = pod(&["app"], &[]);
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(workload(&p, true).is_none());
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        assert!(workload(&p, true).is_none());
        let mut pending = pod(&["app"], &[]);
        let s = pending.status.as_mut().unwrap();
        s.phase = Some("Pending".into());
        s.pod_ip = None;
        s.pod_ips = None;
        assert!(workload(&pending, true).is_none());
    }

    #[test]
    fn pod_ip_alone_and_the_default_service_account() {
        let mut p = pod(&["app"], &[]);
        p.status.as_mut().unwrap().pod_ips = None;
        p.spec.as_mut().unwrap().service_account_name = None;
        let w = workload(&p, true).unwrap();
        assert_eq!(w.ips, vec!["10.0.0.7".parse::<IpAddr>().unwrap()]);
        assert_eq!(w.service_account, "default");
        assert_eq!(
            w.labels,
            BTreeMap::from([("app".into(), "payments".into())])
        );
    }

    #[test]
    fn slimming_keeps_the_workload() {
        let mut p = pod(&["app", PROXY_CONTAINER], &["migrate"]);
        p.metadata.annotations = Some(
            [
                (INJECT_KEY.to_string(), "false".to_string()),
                ("other".to_string(), "x".repeat(1000)),
            ]
            .into(),
        );
        for opted_in in [true, false] {
            let before = workload(&p, opted_in);
            let mut slim = p.clone();
            slim_pod(&mut slim);
            assert_eq!(workload(&slim, opted_in), before);
            assert!(slim.spec.as_ref().unwrap().containers[0].image.is_none());
            assert_eq!(slim.metadata.annotations.as_ref().unwrap().len(), 1);
        }
    }
}
