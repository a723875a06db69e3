//! The compiled services of one compile, each with its digest, found by name and by
//! VIP: what a proxy's view of the mesh (the services it calls) is cut from, and what
//! the discovery of an unknown destination looks up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use braid_api::config::{ProxyConfig, Service};
use braid_api::control::delta::ServiceRef;

use super::Digest256;
use crate::registry::ObjectKey;

/// Every compiled service, in namespace/name order, with its digest and its JSON made
/// once for every stream that sends it.
#[derive(Debug)]
pub struct ServiceSet {
    /// The services, as every config holding all of them carries them.
    pub services: Arc<[Service]>,
    /// Each service's digest (same order).
    pub digests: Vec<Digest256>,
    /// The digest of them all: with a workload's own digest, its whole config's version.
    pub digest: Digest256,
    by_name: HashMap<ServiceRef, usize>,
    by_vip: HashMap<IpAddr, usize>,
    json: Vec<OnceLock<Bytes>>,
}

impl Default for ServiceSet {
    fn default() -> Self {
        Self::new(Arc::new([]), Vec::new())
    }
}

impl ServiceSet {
    /// Indexes `services` with their `digests` (same order).
    pub fn new(services: Arc<[Service]>, digests: Vec<Digest256>) -> Self {
        let by_name = services
            .iter()
            .enumerate()
            .map(|(i, s)| (ServiceRef::of(s), i))
            .collect();
        let mut by_vip = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            for vip in &s.vips {
                by_vip.entry(*vip).or_insert(i);
            }
        }
        let json = services.iter().map(|_| OnceLock::new()).collect();
        Self {
            digest: Digest256::combine(&digests),
            services,
            digests,
            by_name,
            by_vip,
            json,
        }
    }

    /// The position of service `name`.
    pub fn index(&self, name: &ServiceRef) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The position of the service with virtual IP `vip`.
    pub fn by_vip(&self, vip: IpAddr) -> Option<usize> {
        self.by_vip.get(&vip).copied()
    }

    /// Service `i` as JSON, serialised the first time a stream needs it.
    pub fn json(&self, i: usize) -> Bytes {
        let (Some(cell), Some(service)) = (self.json.get(i), self.services.get(i)) else {
            return Bytes::new();
        };
        // Our types always serialise.
        cell.get_or_init(|| Bytes::from(serde_json::to_vec(service).unwrap_or_default()))
            .clone()
    }

    /// The name of service `i`.
    pub fn name(&self, i: usize) -> Option<ServiceRef> {
        self.services.get(i).map(ServiceRef::of)
    }
}

/// Each meshed workload's digest of its own sections: a persistent map, so a compile
/// that changes a few shares the rest with the one before.
pub type OwnDigests = imbl::HashMap<ObjectKey, Digest256>;

/// One compile's services and each workload's digest of everything else: a proxy's
/// view of its config is its own sections plus the services it calls, versioned by
/// these digests the way the whole config is.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The services (shared by compiles that left them unchanged).
    pub set: Arc<ServiceSet>,
    /// Each meshed workload's digest of its own sections (shared by compiles where
    /// none changed).
    pub own: OwnDigests,
}

impl Catalog {
    /// The version of the whole config of a workload whose own sections' digest is
    /// `own`: what a proxy holding every service reports.
    pub fn whole_version(&self, own: &Digest256) -> String {
        Digest256::combine([own, &self.set.digest]).version()
    }

    /// The version of `pod`'s whole config, if it is meshed.
    pub fn version_of(&self, pod: &ObjectKey) -> Option<String> {
        self.own.get(pod).map(|own| self.whole_version(own))
    }

    /// `pod`'s whole config: its own sections in `config` with every service, as a proxy
    /// holding every service has it (for tests; streams write it from the view).
    pub fn whole(&self, pod: &ObjectKey, config: &ProxyConfig) -> ProxyConfig {
        ProxyConfig {
            version: self.version_of(pod).unwrap_or_default(),
            services: self.set.services.clone(),
            ..config.clone()
        }
    }

    /// The version of a view holding `own`'s sections and services `included` (their
    /// positions, in order): with every service, the whole config's version.
    pub fn view_version(&self, own: &Digest256, included: &[usize]) -> String {
        let digests: Vec<Digest256> = included
            .iter()
            .filter_map(|i| self.set.digests.get(*i).copied())
            .collect();
        Digest256::combine([own, &Digest256::combine(&digests)]).version()
    }
}
