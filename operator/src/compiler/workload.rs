//! The per-workload part of a config: who the proxy is and what its app serves.

use std::sync::Arc;

use braid_api::config::access::AccessPolicy;
use braid_api::config::overload::OverloadProtection;
use braid_api::config::tls::InboundTls;
use braid_api::config::{Inbound, Node, PortProtocol};

use super::Options;
use crate::registry::Workload;

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
    /// Who may call it, from the AccessPolicies that select it, oldest first.
    pub access: Vec<AccessPolicy>,
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
pub fn inbound(inputs: &WorkloadInputs) -> Inbound {
    let tls = &inputs.tls;
    Inbound {
        ports: inputs.inbound.clone(),
        overload_protection: inputs.overload.clone(),
        tls: tls.needs_certificate().then(|| tls.clone()),
        access_policies: inputs.access.clone(),
    }
}
