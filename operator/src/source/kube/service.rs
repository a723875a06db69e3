//! A Service and its EndpointSlices as one [`ServiceEntry`].

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort as KubeServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::protocol::port_protocol;
use crate::registry::{ObjectKey, ServiceEndpoint, ServiceEntry, ServicePort};

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Service an EndpointSlice belongs to, from its label.
pub fn slice_service(slice: &EndpointSlice) -> Option<ObjectKey> {
    let namespace = slice.metadata.namespace.as_deref()?;
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(namespace, name.as_str()))
}

/// `service` with its `slices` (those labelled with its name, in any order), or `None`
/// for an object without a namespace or name.
///
/// - VIPs: `spec.clusterIPs` (else `spec.clusterIP`), without `None` (headless).
/// - Ports: TCP ports only (the proxy carries nothing else). A named `targetPort` is
///   resolved through the EndpointSlice port of the same name as the Service port (where
///   the EndpointSlice controller puts the number it resolved on the pods); while no slice
///   has it, the port is left out, since nothing could serve it yet.
/// - Endpoints: ready addresses (a missing `ready` counts as ready, as the API says) of
///   the Service's primary IP family, so a dual-stack pod is one endpoint, not two;
///   duplicates, which slices may briefly hold while being rebalanced, count once.
pub fn service_entry(service: &Service, slices: &[&EndpointSlice]) -> Option<ServiceEntry> {
    let key = ObjectKey::new(
        service.metadata.namespace.as_deref()?,
        service.metadata.name.as_deref()?,
    );
    let spec = service.spec.as_ref();
    let mut slices: Vec<&EndpointSlice> = slices.to_vec();
    // Stable choices (which slice resolves a named port) whatever order the store had.
    slices.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));

    let vips: Vec<IpAddr> = match spec.and_then(|s| s.cluster_ips.as_ref()) {
        Some(ips) if !ips.is_empty() => ips.iter().filter_map(|ip| parse_ip(ip)).collect(),
        _ => spec
            .and_then(|s| s.cluster_ip.as_deref())
            .and_then(parse_ip)
            .into_iter()
            .collect(),
    };

    let ports = spec
        .and_then(|s| s.ports.as_ref())
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| service_port(p, &slices))
                .collect()
        })
        .unwrap_or_default();

    let family = primary_family(service, &vips);
    let mut endpoints: Vec<ServiceEndpoint> = slices
        .iter()
        .filter(|s| family.accepts(&s.address_type))
        .flat_map(|slice| {
            let namespace = slice.metadata.namespace.as_deref().unwrap_or_default();
            slice
                .endpoints
                .iter()
                .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
                .flat_map(move |e| {
                    let workload = e
                        .target_ref
                        .as_ref()
                        .filter(|r| r.kind.as_deref() == Some("Pod"))
                        .and_then(|r| {
                            Some(ObjectKey::new(
                                r.namespace.as_deref().unwrap_or(namespace),
                                r.name.as_deref()?,
                            ))
                        });
                    e.addresses.iter().filter_map(move |a| {
                        Some(ServiceEndpoint {
                            ip: a.parse().ok()?,
                            workload: workload.clone(),
                        })
                    })
                })
        })
        .collect();
    endpoints.sort_by(|a, b| (a.ip, &a.workload).cmp(&(b.ip, &b.workload)));
    endpoints.dedup_by(|a, b| a.ip == b.ip);

    Some(ServiceEntry {
        key,
        vips,
        ports,
        endpoints,
    })
}

fn service_port(p: &KubeServicePort, slices: &[&EndpointSlice]) -> Option<ServicePort> {
    if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
        return None;
    }
    let port = u16::try_from(p.port).ok().filter(|p| *p != 0)?;
    let target_port = match &p.target_port {
        None => port,
        Some(IntOrString::Int(n)) => u16::try_from(*n).ok().filter(|p| *p != 0)?,
        Some(IntOrString::String(_)) => resolved_port(p.name.as_deref(), slices)?,
    };
    Some(ServicePort {
        name: p.name.clone().filter(|n| !n.is_empty()),
        port,
        target_port,
        protocol: port_protocol(p.app_protocol.as_deref(), p.name.as_deref()),
    })
}

/// The number the EndpointSlice controller resolved for the Service port `name` (an
/// unnamed port is `""` or absent in a slice).
fn resolved_port(name: Option<&str>, slices: &[&EndpointSlice]) -> Option<u16> {
    let name = name.unwrap_or_default();
    slices
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.name.as_deref().unwrap_or_default() == name)
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

fn parse_ip(text: &str) -> Option<IpAddr> {
    // `None` marks a headless Service; anything else unparsable is skipped the same way.
    text.parse().ok()
}

/// Which EndpointSlices count: those of the Service's primary family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
    Any,
}

impl Family {
    fn accepts(self, address_type: &str) -> bool {
        match (self, address_type) {
            (Self::V4, "IPv4") | (Self::V6, "IPv6") => true,
            // FQDN slices name hosts outside the cluster, not addresses the proxy can dial.
            (Self::Any, t) => t == "IPv4" || t == "IPv6",
            _ => false,
        }
    }
}

fn primary_family(service: &Service, vips: &[IpAddr]) -> Family {
    let declared = service
        .spec
        .as_ref()
        .and_then(|s| s.ip_families.as_ref())
        .and_then(|f| f.first())
        .map(String::as_str);
    match (declared, vips.first()) {
        (Some("IPv4"), _) => Family::V4,
        (Some("IPv6"), _) => Family::V6,
        (_, Some(IpAddr::V4(_))) => Family::V4,
        (_, Some(IpAddr::V6(_))) => Family::V6,
        _ => Family::Any,
    }
}

#[cfg(test)]
mod tests {
    use braid_api::config::Protocol;
    use k8s_openapi::api::core::v1::{ObjectReference, ServiceSpec};
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn svc(ips: &[&str], ports: Vec<KubeServicePort>) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some("payments".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: ips.first().map(|s| s.to_string()),
                cluster_ips: Some(ips.iter().map(|s| s.to_string()).collect()),
                ports: Some(ports),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn port(name: &str, port: i32, target: Option<IntOrString>) -> KubeServicePort {
        KubeServicePort {
            name: (!name.is_empty()).then(|| name.to_string()),
            port,
            target_port: target,
            protocol: Some("TCP".into()),
            ..Default::default()
        }
    }

    fn endpoint(ip: &str, pod: Option<&str>, ready: Option<bool>) -> Endpoint {
        Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready,
                ..Default::default()
            }),
            target_ref: pod.map(|p| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(p.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(
        name: &str,
        family: &str,
        ports: &[(&str, i32)],
        endpoints: Vec<Endpoint>,
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: ObjectMeta {
                namespace: Some("shop".into()),
                name: Some(name.into()),
                labels: Some([(SERVICE_NAME_LABEL.to_string(), "payments".to_string())].into()),
                ..Default::default()
            },
            address_type: family.into(),
            endpoints,
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p)| EndpointPort {
                        name: Some(n.to_string()),
                        port: Some(*p),
                        protocol: Some("TCP".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn a_service_with_its_slices() {
        let service = svc(
            &["10.96.0.10", "fd00::10"],
            vec![
                port("http-web", 80, Some(IntOrString::String("web".into()))),
                port("grpc", 9000, Some(IntOrString::Int(9001))),
                port("metrics", 9090, None),
            ],
        );
        let a = slice(
            "payments-b",
            "IPv4",
            &[("http-web", 8080), ("grpc", 9001), ("metrics", 9090)],
            vec![
                endpoint("10.0.0.2", Some("payments-1"), Some(true)),
                endpoint("10.0.0.3", Some("payments-2"), Some(false)),
                endpoint("10.0.0.4", None, None),
            ],
        );
        let b = slice(
            "payments-a",
            "IPv4",
            &[("http-web", 8080)],
            vec![endpoint("10.0.0.1", Some("payments-0"), Some(true))],
        );
        // The other family's slice of the same pods: not a second set of endpoints.
        let v6 = slice(
            "payments-c",
            "IPv6",
            &[("http-web", 8080)],
            vec![endpoint("fd00::1", Some("payments-0"), Some(true))],
        );
        let entry = service_entry(&service, &[&a, &v6, &b]).unwrap();
        assert_eq!(entry.key, ObjectKey::new("shop", "payments"));
        assert_eq!(
            entry.vips,
            vec![
                "10.96.0.10".parse::<IpAddr>().unwrap(),
                "fd00::10".parse().unwrap()
            ]
        );
        assert_eq!(
            entry.ports,
            vec![
                ServicePort {
                    name: Some("http-web".into()),
                    port: 80,
                    target_port: 8080,
                    protocol: Protocol::Http,
                },
                ServicePort {
                    name: Some("grpc".into()),
                    port: 9000,
                    target_port: 9001,
                    protocol: Protocol::Http2,
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: 9090,
                    target_port: 9090,
                    protocol: Protocol::Detect,
                },
            ]
        );
        let eps: Vec<(String, Option<String>)> = entry
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.workload.as_ref().map(|w| w.to_string())))
            .collect();
        assert_eq!(
            eps,
            vec![
                ("10.0.0.1".into(), Some("shop/payments-0".into())),
                ("10.0.0.2".into(), Some("shop/payments-1".into())),
                ("10.0.0.4".into(), None),
            ]
        );
    }

    #[test]
    fn headless_services_have_no_vips_and_keep_every_family() {
        let service = svc(&["None"], vec![port("", 5432, None)]);
        let v4 = slice(
            "db-a",
            "IPv4",
            &[("", 5432)],
            vec![endpoint("10.0.0.1", Some("db-0"), Some(true))],
        );
        let fqdn = slice(
            "db-b",
            "FQDN",
            &[("", 5432)],
            vec![endpoint("db.example.com", None, None)],
        );
        let entry = service_entry(&service, &[&v4, &fqdn]).unwrap();
        assert!(entry.vips.is_empty());
        assert_eq!(entry.ports[0].name, None);
        assert_eq!(entry.ports[0].target_port, 5432);
        assert_eq!(entry.endpoints.len(), 1);
    }

    #[test]
    fn an_unresolved_named_port_and_non_tcp_ports_are_left_out() {
        let mut udp = port("dns", 53, None);
        udp.protocol = Some("UDP".into());
        let service = svc(
            &["10.96.0.10"],
            vec![
                port("http", 80, Some(IntOrString::String("web".into()))),
                udp,
                port("tcp-dns", 53, None),
            ],
        );
        let entry = service_entry(&service, &[]).unwrap();
        assert_eq!(entry.ports.len(), 1);
        assert_eq!(entry.ports[0].name.as_deref(), Some("tcp-dns"));
        assert_eq!(entry.ports[0].protocol, Protocol::Tcp);
        assert!(entry.endpoints.is_empty());
    }

    #[test]
    fn duplicate_endpoints_count_once() {
        let service = svc(&["10.96.0.10"], vec![port("http", 80, None)]);
        let a = slice(
            "p-a",
            "IPv4",
            &[("http", 80)],
            vec![endpoint("10.0.0.1", Some("p-0"), None)],
        );
        let b = slice(
            "p-b",
            "IPv4",
            &[("http", 80)],
            vec![endpoint("10.0.0.1", Some("p-0"), None)],
        );
        let entry = service_entry(&service, &[&a, &b]).unwrap();
        assert_eq!(entry.endpoints.len(), 1);
    }

    #[test]
    fn slices_name_their_service() {
        let s = slice("payments-x", "IPv4", &[], vec![]);
        assert_eq!(slice_service(&s), Some(ObjectKey::new("shop", "payments")));
        let mut orphan = s.clone();
        orphan.metadata.labels = None;
        assert_eq!(slice_service(&orphan), None);
    }
}
