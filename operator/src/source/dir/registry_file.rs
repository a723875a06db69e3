//! `registry.yaml`: the services and workloads of a mesh without Kubernetes.
//!
//! ```yaml
//! services:
//! - name: payments
//!   namespace: shop
//!   vips: [10.96.0.10]
//!   selector: {app: payments}          # its endpoints: the workloads with these labels
//!   ports: [{port: 8080, targetPort: 8080, protocol: http}]
//! workloads:
//! - name: payments-0
//!   namespace: shop
//!   ips: [10.77.0.5]
//!   labels: {app: payments}
//!   serviceAccount: payments           # default: default
//!   meshed: true                       # runs a braid proxy; default: true
//!   outboundScope: [shop/orders]       # held before first called; default: none
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use braid_api::config::Protocol;
use braid_api::control::delta::ServiceRef;
use braid_api::invalid::{InvalidField, InvalidInput};
use serde::Deserialize;

use crate::registry::{
    LabelIndex, ObjectKey, ServiceEndpoint, ServiceEntry, ServicePort, Services, Workload,
    Workloads,
};

/// The file's name inside the source directory.
pub const FILE_NAME: &str = "registry.yaml";

/// The whole file.
#[derive(Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegistryFile {
    /// Services.
    #[serde(default)]
    pub services: Vec<ServiceDecl>,
    /// Workloads.
    #[serde(default)]
    pub workloads: Vec<WorkloadDecl>,
}

/// A service as written in the file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceDecl {
    /// Its name.
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Its virtual IPs.
    #[serde(default)]
    pub vips: Vec<IpAddr>,
    /// Workloads with all of these labels (in the same namespace) are its endpoints.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<PortDecl>,
}

/// A service port as written in the file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortDecl {
    /// Optional name.
    #[serde(default)]
    pub name: Option<String>,
    /// The port on the VIP.
    pub port: u16,
    /// The port on the workloads (default: `port`).
    #[serde(default)]
    pub target_port: Option<u16>,
    /// `detect` (default), `http`, `http1`, `http2` or `tcp`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// A workload as written in the file.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadDecl {
    /// Its name (a pod name).
    pub name: String,
    /// Its namespace (default `default`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Its IPs, the primary first.
    pub ips: Vec<IpAddr>,
    /// Its labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Its service account (default `default`).
    #[serde(default = "default_namespace")]
    pub service_account: String,
    /// Whether it runs a braid proxy (default true).
    #[serde(default = "yes")]
    pub meshed: bool,
    /// Services its proxy holds before its app calls them: `namespace/name`, or
    /// `namespace/*` (default: none; the others are found on demand).
    #[serde(default)]
    pub outbound_scope: Vec<String>,
}

fn default_namespace() -> String {
    "default".into()
}

fn yes() -> bool {
    true
}

/// Services and workloads, resolved.
pub type Resolved = (Services, Workloads);

/// Parses the file's text; errors name the field (`workloads[2].ips[0]: invalid IP ...`).
pub fn parse(text: &str) -> Result<RegistryFile, InvalidInput> {
    if text.trim().is_empty() {
        return Ok(RegistryFile::default());
    }
    let value: serde_json::Value =
        serde_norway::from_str(text).map_err(|e| InvalidInput::Syntax(e.to_string()))?;
    serde_path_to_error::deserialize(value)
        .map_err(|e| InvalidField::new(e.path().to_string(), e.inner().to_string()).into())
}

impl RegistryFile {
    /// Checks the declarations against each other and resolves each service's endpoints
    /// from its selector. Every problem is reported, each naming its entry.
    pub fn resolve(self) -> Result<Resolved, Vec<InvalidField>> {
        let mut errors = Vec::new();
        let mut workloads = Workloads::new();
        let mut ips = BTreeMap::new();
        for (i, w) in self.workloads.into_iter().enumerate() {
            let key = ObjectKey::new(&w.namespace, &w.name);
            for ip in &w.ips {
                if let Some(other) = ips.insert(*ip, key.clone()) {
                    errors.push(InvalidField::new(
                        format!("workloads[{i}].ips"),
                        format!("{ip} of {key} is already the IP of {other}"),
                    ));
                }
            }
            let workload = match workload_of(w, i) {
                Ok(w) => w,
                Err(mut e) => {
                    errors.append(&mut e);
                    continue;
                }
            };
            if workloads.insert(key.clone(), Arc::new(workload)).is_some() {
                errors.push(InvalidField::new(
                    format!("workloads[{i}]"),
                    format!("{key} is declared twice"),
                ));
            }
        }
        let mut services = Services::new();
        let mut vips = BTreeSet::new();
        let index = LabelIndex::new(workloads.values());
        for (i, s) in self.services.into_iter().enumerate() {
            let key = ObjectKey::new(&s.namespace, &s.name);
            for vip in &s.vips {
                if !vips.insert(*vip) {
                    errors.push(InvalidField::new(
                        format!("services[{i}].vips"),
                        format!("{vip} of {key} is taken by another service"),
                    ));
                }
            }
            let mut ports: Vec<ServicePort> = Vec::new();
            for (j, p) in s.ports.into_iter().enumerate() {
                if ports.iter().any(|q| q.port == p.port) {
                    errors.push(InvalidField::new(
                        format!("services[{i}].ports[{j}]"),
                        format!("port {} of {key} is listed twice", p.port),
                    ));
                }
                ports.push(ServicePort {
                    name: p.name,
                    port: p.port,
                    target_port: p.target_port.unwrap_or(p.port),
                    protocol: p.protocol,
                });
            }
            // An empty selector selects nothing, as in Kubernetes (a Service without a
            // selector has no automatic endpoints).
            let endpoints = if s.selector.is_empty() {
                Vec::new()
            } else {
                index
                    .select(&s.namespace, &s.selector)
                    .into_iter()
                    .filter_map(|w| endpoint_of(&s.vips, w))
                    .collect()
            };
            let entry = ServiceEntry {
                key: key.clone(),
                vips: s.vips,
                ports,
                endpoints,
            };
            if services.insert(key.clone(), Arc::new(entry)).is_some() {
                errors.push(InvalidField::new(
                    format!("services[{i}]"),
                    format!("{key} is declared twice"),
                ));
            }
        }
        if errors.is_empty() {
            Ok((services, workloads))
        } else {
            Err(errors)
        }
    }
}

/// The workload `w` (entry `i` of the file) declares, or what is wrong with it.
fn workload_of(w: WorkloadDecl, i: usize) -> Result<Workload, Vec<InvalidField>> {
    let key = ObjectKey::new(&w.namespace, &w.name);
    let mut errors = Vec::new();
    if w.ips.is_empty() {
        errors.push(InvalidField::new(
            format!("workloads[{i}].ips"),
            format!("{key} needs at least one IP"),
        ));
    }
    let mut outbound_scope = Vec::new();
    for (j, entry) in w.outbound_scope.iter().enumerate() {
        match entry.parse::<ServiceRef>() {
            Ok(name) => outbound_scope.push(name),
            Err(e) => errors.push(InvalidField::new(
                format!("workloads[{i}].outboundScope[{j}]"),
                format!(
                    "{e}: name a service as namespace/name, or namespace/* for all of a namespace's"
                ),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    outbound_scope.sort();
    outbound_scope.dedup();
    Ok(Workload {
        key,
        ips: w.ips,
        labels: w.labels,
        service_account: w.service_account,
        meshed: w.meshed,
        outbound_scope,
    })
}

/// `w` as an endpoint of a service with `vips`: a service's endpoints speak its VIPs'
/// family (an IPv6-only service reaches dual-stack pods on their IPv6 address).
fn endpoint_of(vips: &[IpAddr], w: &Workload) -> Option<ServiceEndpoint> {
    let family = vips.first().map(IpAddr::is_ipv6);
    let ip = match family {
        Some(v6) => w.ips.iter().find(|ip| ip.is_ipv6() == v6),
        None => w.ips.first(),
    };
    ip.map(|ip| ServiceEndpoint {
        ip: *ip,
        workload: Some(w.key.clone()),
    })
}

/// What [`RegistryFile::resolve`] gives for the file `before` was resolved from, with
/// the workloads `removed` taken out and `added` put in, its services (`services`, as
/// declared) unchanged: only the services selecting a workload that changed are
/// resolved again. `None` when the whole file's reading must tell (a workload it does
/// not declare removed, a name or IP taken twice, an entry with a problem to report).
pub fn with_workloads_changed<'a>(
    before: &Resolved,
    services: impl Iterator<Item = &'a ServiceDecl>,
    removed: Vec<WorkloadDecl>,
    added: Vec<WorkloadDecl>,
) -> Option<Resolved> {
    let (mut entries, mut workloads) = before.clone();
    let mut changed: Vec<Arc<Workload>> = Vec::new();
    for w in removed {
        let key = ObjectKey::new(&w.namespace, &w.name);
        changed.push(workloads.remove(&key)?);
    }
    let mut new = Vec::new();
    for w in added {
        // The entry's number is for the message, which the whole reading words.
        let w = Arc::new(workload_of(w, 0).ok()?);
        if workloads.insert(w.key.clone(), w.clone()).is_some() {
            return None;
        }
        new.push(w);
    }
    // An IP given twice: every other workload's IPs are checked only when one changed.
    if !new.is_empty() {
        let mut taken: std::collections::HashSet<IpAddr> = std::collections::HashSet::new();
        for w in workloads.values() {
            for ip in &w.ips {
                if !taken.insert(*ip) {
                    return None;
                }
            }
        }
    }
    changed.extend(new.iter().cloned());
    let keys: BTreeSet<&ObjectKey> = changed.iter().map(|w| &w.key).collect();
    for s in services {
        let selects = |w: &Workload| w.key.namespace == s.namespace && w.carries(&s.selector);
        if s.selector.is_empty() || !changed.iter().any(|w| selects(w)) {
            continue;
        }
        let key = ObjectKey::new(&s.namespace, &s.name);
        let old = entries.get(&key)?;
        let mut entry = ServiceEntry::clone(old);
        entry
            .endpoints
            .retain(|ep| ep.workload.as_ref().is_none_or(|k| !keys.contains(k)));
        entry.endpoints.extend(
            new.iter()
                .filter(|w| selects(w))
                .filter_map(|w| endpoint_of(&s.vips, w)),
        );
        // In workload order, as the whole reading selects them.
        entry.endpoints.sort_by(|a, b| a.workload.cmp(&b.workload));
        // The same endpoints (a label the selector does not look at): the same object.
        if **old != entry {
            entries.insert(key, Arc::new(entry));
        }
    }
    Some((entries, workloads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_pick_endpoints_in_their_namespace() {
        let file = parse(
            r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: p-0, namespace: shop, ips: [10.0.0.1], labels: {app: payments}}
- {name: p-1, namespace: other, ips: [10.0.0.2], labels: {app: payments}}
- {name: c-0, namespace: shop, ips: [10.0.0.3], labels: {app: checkout}, meshed: false}
"#,
        )
        .unwrap();
        let (services, workloads) = file.resolve().unwrap();
        let svc = &services[&ObjectKey::new("shop", "payments")];
        assert_eq!(svc.ports[0].target_port, 8080);
        let eps: Vec<_> = svc.endpoints.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(eps, ["10.0.0.1"]);
        assert!(!workloads[&ObjectKey::new("shop", "c-0")].meshed);
        assert_eq!(
            workloads[&ObjectKey::new("shop", "p-0")].service_account,
            "default"
        );
    }

    #[test]
    fn endpoints_follow_the_family_of_the_vips() {
        let (services, _) = parse(
            r#"
services:
- {name: v4, vips: [10.96.0.10], selector: {app: a}}
- {name: v6, vips: ["fd96::10"], selector: {app: a}}
workloads:
- {name: a-0, ips: [10.0.0.1, "fd00::1"], labels: {app: a}}
- {name: a-1, ips: [10.0.0.2], labels: {app: a}}
"#,
        )
        .unwrap()
        .resolve()
        .unwrap();
        let ips = |name: &str| -> Vec<String> {
            services[&ObjectKey::new("default", name)]
                .endpoints
                .iter()
                .map(|e| e.ip.to_string())
                .collect()
        };
        assert_eq!(ips("v4"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(
            ips("v6"),
            ["fd00::1"],
            "a pod without IPv6 is not an endpoint of it"
        );
    }

    #[test]
    fn a_workloads_outbound_scope_names_services_or_namespaces() {
        let (_, workloads) = parse(
            "workloads:\n- {name: a, namespace: shop, ips: [10.0.0.1], outboundScope: [shop/payments, ops/*, shop/payments]}\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        let scope: Vec<String> = workloads[&ObjectKey::new("shop", "a")]
            .outbound_scope
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(scope, ["ops/*", "shop/payments"]);
        let errs = parse("workloads:\n- {name: a, ips: [10.0.0.1], outboundScope: [payments]}\n")
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(errs[0].field, "workloads[0].outboundScope[0]");
        assert!(
            errs[0].to_string().contains("namespace/name"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse("workloads:\n- {name: a, ips: [not-an-ip]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("workloads[0].ips[0]"), "{err}");
        let err = parse("services:\n- {name: a, vip: [10.0.0.1]}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `vip`"), "{err}");
    }

    #[test]
    fn contradictions_are_all_reported() {
        let errs = parse(
            r#"
services:
- {name: a, vips: [10.96.0.1]}
- {name: b, vips: [10.96.0.1]}
workloads:
- {name: x, ips: [10.0.0.1]}
- {name: y, ips: [10.0.0.1]}
- {name: z, ips: []}
"#,
        )
        .unwrap()
        .resolve()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>();
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("services[1].vips")));
        assert!(errs.iter().any(|e| e.starts_with("workloads[1].ips")));
        assert!(errs.iter().any(|e| e.starts_with("workloads[2].ips")));
    }
}
