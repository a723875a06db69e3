//! One Service compiled into what callers' proxies need: VIPs, ports and endpoints in
//! the groups of its TrafficRoutes.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;

use braid_api::config::outlier::OutlierDetection;
use braid_api::config::tls::{EndpointTls, TlsMode};
use braid_api::config::{self, DEFAULT_GROUP, Endpoint, EndpointGroup};
use braid_crds::traffic_route::Group;

use super::Options;
use super::host::hostnames;
use super::version::Digest256;
use crate::registry::{ServiceEntry, Workload};

/// Everything one compiled Service depends on. When these are equal, so is the output,
/// which is how an incremental compile skips unchanged services.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInputs {
    /// The Service.
    pub entry: Arc<ServiceEntry>,
    /// The workload behind each endpoint (same order), when known.
    pub workloads: Vec<Option<Arc<Workload>>>,
    /// What each endpoint's proxy accepts and which callers originate mTLS to it (same
    /// order; `None` for endpoints without a proxy).
    pub tls: Vec<Option<EndpointTls>>,
    /// The groups its TrafficRoutes define, oldest route first, first definition of a
    /// name winning.
    pub groups: Vec<Group>,
    /// Its outlier detection, from the oldest SelfHealing that selects its endpoints.
    pub outlier: Option<OutlierDetection>,
}

/// A compiled Service and the digest of its compiled form.
#[derive(Clone, Debug)]
pub struct CompiledService {
    /// What proxies receive.
    pub service: config::Service,
    /// Its content digest.
    pub digest: Digest256,
    /// Its JSON, made the first time a stream sends it (and kept by every compile that
    /// leaves the service as it is).
    json: OnceLock<Bytes>,
}

impl CompiledService {
    /// `service`, whose digest is `digest`.
    pub fn new(service: config::Service, digest: Digest256) -> Self {
        Self {
            service,
            digest,
            json: OnceLock::new(),
        }
    }

    /// Its JSON.
    pub fn json(&self) -> Bytes {
        // Our types always serialise.
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&self.service).unwrap_or_default()))
            .clone()
    }
}

/// Compiles one Service.
pub fn compile_service(inputs: &ServiceInputs, opts: &Options) -> CompiledService {
    let entry = &inputs.entry;
    let endpoints: Vec<(Endpoint, Option<&Workload>)> = entry
        .endpoints
        .iter()
        .zip(&inputs.workloads)
        .zip(&inputs.tls)
        // A quarantined pod (SelfHealing's RemoveFromService) is in no proxy's config.
        .filter(|((_, w), _)| !w.as_deref().is_some_and(Workload::is_quarantined))
        .map(|((ep, w), tls)| {
            let w = w.as_deref();
            let endpoint = Endpoint {
                address: ep.ip,
                // Groups are resolved here, so proxies do not need every pod's labels:
                // config size follows the mesh's traffic, not its label sprawl.
                labels: Default::default(),
                identity: w.filter(|w| w.meshed).map(|w| opts.identity(w)),
                meshed: w.is_some_and(|w| w.meshed),
                // Plaintext-only is what proxies assume without it.
                tls: tls.clone().filter(|t| {
                    t.mode != TlsMode::Disabled
                        || t.port_overrides.iter().any(|p| p.mode != TlsMode::Disabled)
                }),
            };
            (endpoint, w)
        })
        .collect();
    let in_group = |g: &Group, w: Option<&Workload>| w.is_some_and(|w| w.carries(&g.labels));
    let mut groups: Vec<EndpointGroup> = inputs
        .groups
        .iter()
        .map(|g| EndpointGroup {
            name: g.name.clone(),
            endpoints: endpoints
                .iter()
                .filter(|(_, w)| in_group(g, *w))
                .map(|(e, _)| e.clone())
                .collect(),
        })
        .collect();
    let unclaimed: Vec<Endpoint> = endpoints
        .iter()
        .filter(|(_, w)| !inputs.groups.iter().any(|g| in_group(g, *w)))
        .map(|(e, _)| e.clone())
        .collect();
    if inputs.groups.is_empty() || !unclaimed.is_empty() {
        groups.push(EndpointGroup {
            name: DEFAULT_GROUP.into(),
            endpoints: unclaimed,
        });
    }
    let service = config::Service {
        name: entry.key.name.clone(),
        namespace: entry.key.namespace.clone(),
        hostnames: hostnames(&entry.key, &opts.cluster_domain),
        vips: entry.vips.clone(),
        ports: entry
            .ports
            .iter()
            .map(|p| config::ServicePort {
                port: p.port,
                target_port: (p.target_port != p.port).then_some(p.target_port),
                protocol: p.protocol,
            })
            .collect(),
        groups,
        outlier_detection: inputs.outlier.clone(),
    };
    let digest = Digest256::of(&service);
    CompiledService::new(service, digest)
}
