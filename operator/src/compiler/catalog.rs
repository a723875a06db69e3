//! The compiled services of one compile, each with its digest, found by name and by
//! VIP: what a proxy's view of the mesh (the services it calls) is cut from, and what
//! the discovery of an unknown destination looks up.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Bytes;
use braid_api::config::{ProxyConfig, Service};
use braid_api::control::delta::ServiceRef;

use super::{CompiledService, Digest256};
use crate::registry::ObjectKey;

/// Every compiled service, in namespace/name order, with its digest and its JSON made
/// once for every stream that sends it. The services are the compiler's own `Arc`s: a
/// compile that changes one service shares the other 4,999 (and their JSON) with the
/// set before, where it used to copy them all.
#[derive(Debug)]
pub struct ServiceSet {
    services: Vec<Arc<CompiledService>>,
    /// Each service's digest (same order).
    pub digests: Vec<Digest256>,
    /// The digest of them all: with a workload's own digest, its whole config's version.
    pub digest: Digest256,
    by_vip: HashMap<IpAddr, usize>,
}

impl Default for ServiceSet {
    fn default() -> Self {
        Self::of(Vec::new())
    }
}

impl ServiceSet {
    /// Indexes `services` with their `digests` (same order), putting them in
    /// namespace/name order if they are not.
    pub fn new(services: Arc<[Service]>, digests: Vec<Digest256>) -> Self {
        let mut compiled: Vec<Arc<CompiledService>> = services
            .iter()
            .zip(digests)
            .map(|(s, digest)| Arc::new(CompiledService::new(s.clone(), digest)))
            .collect();
        compiled.sort_by(|a, b| {
            let (a, b) = (&a.service, &b.service);
            (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name))
        });
        Self::of(compiled)
    }

    /// Indexes the compiler's services, which are in namespace/name order.
    pub fn of(services: Vec<Arc<CompiledService>>) -> Self {
        debug_assert!(
            services.is_sorted_by_key(|c| (&c.service.namespace, &c.service.name)),
            "a service set out of namespace/name order"
        );
        let mut by_vip = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            for vip in &s.service.vips {
                by_vip.entry(*vip).or_insert(i);
            }
        }
        let digests: Vec<Digest256> = services.iter().map(|c| c.digest).collect();
        Self {
            digest: Digest256::combine(&digests),
            services,
            digests,
            by_vip,
        }
    }

    /// How many services there are.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// Service `i`.
    pub fn service(&self, i: usize) -> Option<&Service> {
        self.services.get(i).map(|c| &c.service)
    }

    /// Every service, in order.
    pub fn services(&self) -> impl ExactSizeIterator<Item = &Service> {
        self.services.iter().map(|c| &c.service)
    }

    /// The positions of namespace `ns`'s services (the set is in namespace order, so
    /// they are one run of it).
    pub fn namespace(&self, ns: &str) -> std::ops::Range<usize> {
        let start = self
            .services
            .partition_point(|c| c.service.namespace.as_str() < ns);
        let end = self
            .services
            .partition_point(|c| c.service.namespace.as_str() <= ns);
        start..end
    }

    /// The position of service `name`.
    pub fn index(&self, name: &ServiceRef) -> Option<usize> {
        self.position(&name.namespace, &name.name)
    }

    /// The position of service `namespace/name`: a binary search of the set, which is in
    /// that order, so that looking up a borrowed name allocates nothing (a view is cut
    /// for every proxy on each change, checking every route's service).
    pub fn position(&self, namespace: &str, name: &str) -> Option<usize> {
        self.services
            .binary_search_by(|c| {
                let s = &c.service;
                (s.namespace.as_str(), s.name.as_str()).cmp(&(namespace, name))
            })
            .ok()
    }

    /// The position of the service with virtual IP `vip`.
    pub fn by_vip(&self, vip: IpAddr) -> Option<usize> {
        self.by_vip.get(&vip).copied()
    }

    /// Service `i` as JSON, serialised the first time a stream needs it.
    pub fn json(&self, i: usize) -> Bytes {
        self.services.get(i).map(|c| c.json()).unwrap_or_default()
    }

    /// The name of service `i`.
    pub fn name(&self, i: usize) -> Option<ServiceRef> {
        self.service(i).map(ServiceRef::of)
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
            services: self.set.services().cloned().collect(),
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
