//! The per-workload part of a config: who the proxy is and what its app serves.

use std::collections::BTreeMap;
use std::sync::Arc;

use braid_api::config::overload::OverloadProtection;
use braid_api::config::tls::InboundTls;
use braid_api::config::{Inbound, Node, PortProtocol, Protocol};

use super::Options;
use crate::registry::{ObjectKey, Snapshot, Workload};

/// Everything a workload's own part of the config depends on.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadInputs {
    /// The workload.
    pub workload: Arc<Workload>,
    /// The ports its app serves, from the services it backs.
    pub inbound: Vec<PortProtocol>,
    /// Its inbound overload protection, from the SelfHealing that selects it.
    pub overload: Option<OverloadProtection>,
    /// The digest of its routes (which depend on its labels).
    pub routes: super::Digest256,
    /// What its inbound side accepts, from the EncryptionPolicy governing it.
    pub tls: InboundTls,
    /// The mesh's trust bundle.
    pub trust_bundle: Arc<str>,
}

/// The node section of a workload's config.
pub fn node(w: &Workload, opts: &Options) -> Node {
    Node {
        workload: w.key.name.clone(),
        namespace: w.key.namespace.clone(),
        service_account: w.service_account.clone(),
        identity: Some(opts.identity(w)),
    }
}

/// The inbound section; plaintext-only TLS is left out, as proxies default to it.
pub fn inbound(
    ports: &[PortProtocol],
    overload: Option<OverloadProtection>,
    tls: &InboundTls,
) -> Inbound {
    Inbound {
        ports: ports.to_vec(),
        overload_protection: overload,
        tls: tls.needs_certificate().then(|| tls.clone()),
    }
}

/// The ports each workload's app serves: the target ports of every service it backs.
/// Two services that disagree on a port's protocol leave it to detection.
pub fn inbound_ports(snapshot: &Snapshot) -> super::FastMap<ObjectKey, Vec<PortProtocol>> {
    let mut ports: super::FastMap<&ObjectKey, BTreeMap<u16, Protocol>> = Default::default();
    for svc in snapshot.services.values() {
        for ep in &svc.endpoints {
            let Some(w) = &ep.workload else { continue };
            let entry = ports.entry(w).or_default();
            for p in &svc.ports {
                entry
                    .entry(p.target_port)
                    .and_modify(|have| {
                        if *have != p.protocol {
                            *have = Protocol::Detect;
                        }
                    })
                    .or_insert(p.protocol);
            }
        }
    }
    ports
        .into_iter()
        .map(|(k, ps)| {
            let list = ps
                .into_iter()
                .map(|(port, protocol)| PortProtocol { port, protocol })
                .collect();
            (k.clone(), list)
        })
        .collect()
}
