//! The compiler: a pure function from a [`Snapshot`] to one [`ProxyConfig`] per meshed
//! workload. [`Compiler`] remembers its last output so that a change recompiles only the
//! services and workloads it touches; the result is the same as compiling from scratch.

mod access;
mod catalog;
mod encryption;
mod healing;
mod host;
mod inbound_ports;
mod routes;
mod service;
mod version;
mod workload;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use braid_api::config::routes::ServiceRoutes;
use braid_api::config::tls::TlsMode;
use braid_api::config::{Identity, ProxyConfig};
use braid_api::identity::WorkloadId;
use braid_crds::TrafficRoute;
use braid_crds::traffic_route::Group;
use imbl::ordmap::DiffItem;

pub use catalog::{Catalog, OwnDigests, ServiceSet};
pub use host::{hostnames, service_for_host};
pub use inbound_ports::InboundPorts;
pub use routes::{Conflict, RouteSet, conflicts};
pub use service::{CompiledService, ServiceInputs, compile_service};
pub use version::Digest256;
pub use workload::WorkloadInputs;

use crate::registry::{ObjectKey, ServiceEntry, Snapshot, Workload};

/// Cluster-wide settings the compiler needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The SPIFFE trust domain of identities.
    pub trust_domain: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
    /// The TLS mode of workloads no EncryptionPolicy governs.
    pub default_tls_mode: TlsMode,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            trust_domain: "cluster.local".into(),
            cluster_domain: "cluster.local".into(),
            default_tls_mode: TlsMode::Disabled,
        }
    }
}

/// What a compile takes besides the snapshot: state the operator keeps itself.
#[derive(Clone, Debug, Default)]
pub struct Extra {
    /// The mesh's trust bundle (PEM), for proxies to verify peers.
    pub trust_bundle: Arc<str>,
}

impl Options {
    /// A workload's SPIFFE identity: `spiffe://<trust-domain>/ns/<ns>/sa/<sa>`.
    pub fn identity(&self, w: &Workload) -> Identity {
        let id = WorkloadId::new(&self.trust_domain, &w.key.namespace, &w.service_account);
        Identity::from(&id)
    }
}

/// What one compile did: how much it rebuilt and how much it reused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Services compiled anew.
    pub services_compiled: usize,
    /// Services whose inputs had not changed.
    pub services_reused: usize,
    /// Workload configs built anew.
    pub workloads_compiled: usize,
    /// Workload configs unchanged.
    pub workloads_reused: usize,
}

/// Every meshed workload's config, in namespace/name order: a persistent map, so a
/// compile shares what it did not change with the one before (a copy costs nothing).
pub type Configs = imbl::OrdMap<ObjectKey, Arc<ProxyConfig>>;

/// The result: one config per meshed workload.
#[derive(Clone, Debug, Default)]
pub struct Output {
    /// Configs by workload; each carries its content-hash version.
    pub configs: Configs,
    /// The services with their digests and each workload's own digest, from which a
    /// proxy's view (the services it calls) is cut.
    pub catalog: Arc<Catalog>,
    /// What the compile rebuilt.
    pub stats: Stats,
}

/// Compiles snapshots, reusing what did not change since the last one.
#[derive(Debug, Default)]
pub struct Compiler {
    opts: Options,
    services: FastMap<ObjectKey, (ServiceInputs, Arc<CompiledService>)>,
    set: Option<Arc<ServiceSet>>,
    workloads: FastMap<ObjectKey, CachedWorkload>,
    /// The route set and groups of the last compile, with what they were built from.
    routes: Option<CachedRoutes>,
    /// Every workload of the last snapshot, meshed or not, to tell which ones a new
    /// snapshot changed.
    seen: crate::registry::Workloads,
    /// What every service and workload depends on besides itself, as last compiled.
    globals: Option<Globals>,
    /// The ports each workload's app serves, with the services they were read from.
    inbound: Option<InboundCache>,
    /// Each meshed workload's own digest, shared by compiles where none changed.
    own: OwnDigests,
    /// The configs of the last compile.
    configs: Configs,
}

/// The service entries the inbound ports were read from, and those ports by workload.
type InboundCache = (Vec<Arc<ServiceEntry>>, InboundPorts);

/// A map the compiler looks tens of thousands of keys up in per compile: hashed fast,
/// with a seed per process (SipHash was a fifth of an incremental compile).
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The inputs every service and workload shares: when they and an object's own
/// `Arc` are what the last compile saw, the object's inputs are too, and are not built
/// again to be compared.
#[derive(Clone, Debug, PartialEq)]
struct Globals {
    healings: BTreeMap<ObjectKey, crate::registry::Observed<braid_crds::SelfHealing>>,
    policies: BTreeMap<ObjectKey, crate::registry::Observed<braid_crds::EncryptionPolicy>>,
    rollouts: crate::registry::Rollouts,
    trust_bundle: Arc<str>,
    /// Compiled, with their sources resolved: a pod that a policy's `workloadLabels`
    /// names changes the config of servers whose own `Arc` did not change.
    access: Arc<access::AccessSet>,
}

impl Globals {
    fn of(snapshot: &Snapshot, extra: &Extra, opts: &Options) -> Self {
        Self {
            healings: snapshot.self_healings.clone(),
            policies: snapshot.encryption_policies.clone(),
            rollouts: snapshot.rollout_status.clone(),
            trust_bundle: extra.trust_bundle.clone(),
            access: Arc::new(access::AccessSet::of(snapshot, opts, |key, p| {
                access::mode(p, snapshot.access_enforced.contains(key))
            })),
        }
    }
}

/// What one compile's services and workloads share.
struct Shared<'s> {
    snapshot: &'s Snapshot,
    /// Routes, healings, policies, rollouts and trust bundle as last compiled: an
    /// object whose own `Arc` is the same has the same inputs.
    globals_same: bool,
    healings: Vec<(&'s ObjectKey, &'s braid_crds::SelfHealing)>,
    policies: Vec<(&'s ObjectKey, &'s braid_crds::EncryptionPolicy)>,
    default_tls_mode: TlsMode,
    access: Arc<access::AccessSet>,
}

impl Shared<'_> {
    /// `w`'s TLS. Rollouts stand where their status records, as read back, on every
    /// replica alike: the leader's steps reach proxies only once written, so a leader
    /// lost right after a step leaves nothing in force that its successor would not
    /// resume from, and a restart never serves a rollout from its start again.
    fn tls_of(&self, w: &Workload) -> encryption::WorkloadTls {
        encryption::tls_for(
            &self.policies,
            &self.snapshot.rollout_status,
            self.default_tls_mode,
            w,
        )
    }
}

/// One TrafficRoute as the route set sees it: which generation is in force (by `Arc`
/// identity, held so the pointer cannot be reused), its age, and whether the Service its
/// host names exists.
type RouteInput = (Option<Arc<TrafficRoute>>, Option<String>, bool);

#[derive(Debug)]
struct CachedRoutes {
    inputs: Vec<(ObjectKey, RouteInput)>,
    set: RouteSet,
    groups: HashMap<ObjectKey, Vec<Group>>,
}

/// Whether two route inputs are the same generation, age and host resolution.
fn same_routes(a: &[(ObjectKey, RouteInput)], b: &[(ObjectKey, RouteInput)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, (ra, ca, sa)), (kb, (rb, cb, sb)))| {
                same_generation(ra, rb) && ka == kb && ca == cb && sa == sb
            })
}

/// Whether two routes in force are the same generation (by `Arc` identity).
fn same_generation(a: &Option<Arc<TrafficRoute>>, b: &Option<Arc<TrafficRoute>>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        (None, None) => true,
        _ => false,
    }
}

/// Whether `snapshot`'s TrafficRoutes are those `inputs` were built from (the same
/// generations in force, by pointer, and ages), not allocating to tell; whether their
/// hosts' Services exist is the caller's to know.
fn routes_unchanged(inputs: &[(ObjectKey, RouteInput)], snapshot: &Snapshot) -> bool {
    inputs.len() == snapshot.traffic_routes.len()
        && inputs
            .iter()
            .zip(&snapshot.traffic_routes)
            .all(|((ka, (ra, ca, _)), (kb, o))| {
                same_generation(ra, &o.accepted) && ka == kb && *ca == o.created
            })
}

/// A workload's last config (its own sections: the services are the catalog's), with
/// their digest.
#[derive(Debug)]
struct CachedWorkload {
    inputs: WorkloadInputs,
    own: Digest256,
    config: Arc<ProxyConfig>,
}

/// Compiles `snapshot` from scratch.
pub fn compile(snapshot: &Snapshot, opts: &Options) -> Output {
    Compiler::new(opts.clone()).compile(snapshot)
}

impl Compiler {
    /// A compiler with nothing cached.
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            ..Default::default()
        }
    }

    /// Compiles `snapshot` with no rollout progress and no trust bundle.
    pub fn compile(&mut self, snapshot: &Snapshot) -> Output {
        self.compile_with(snapshot, &Extra::default())
    }

    /// Compiles `snapshot` with the operator's own state `extra`.
    pub fn compile_with(&mut self, snapshot: &Snapshot, extra: &Extra) -> Output {
        let mut stats = Stats::default();
        // The same service entries (by pointer): the same names, ports and endpoints.
        let entries_same = self.inbound.as_ref().is_some_and(|(entries, _)| {
            entries.len() == snapshot.services.len()
                && entries
                    .iter()
                    .zip(snapshot.services.values())
                    .all(|(a, b)| Arc::ptr_eq(a, b))
        });
        let (mut routes, routes_same) = self.routes_of(snapshot, entries_same);
        let globals = Globals::of(snapshot, extra, &self.opts);
        let shared = Shared {
            access: globals.access.clone(),
            snapshot,
            globals_same: routes_same && self.globals.as_ref() == Some(&globals),
            healings: snapshot.self_healings_oldest_first(),
            policies: snapshot.encryption_policies_oldest_first(),
            default_tls_mode: self.opts.default_tls_mode,
        };
        self.globals = Some(globals);
        let changed = self.changed_workloads(snapshot);
        let set = self.compile_services(&shared, &routes.groups, &changed, &mut stats);
        let (inbound, ports_changed) = self.inbound_of(snapshot, entries_same);
        let ports_changed = (!entries_same).then_some(&ports_changed);
        self.compile_workloads(
            &shared,
            &mut routes.set,
            &inbound.1,
            ports_changed,
            extra,
            &mut stats,
        );
        self.inbound = Some(inbound);
        self.routes = Some(routes);
        Output {
            configs: self.configs.clone(),
            catalog: Arc::new(Catalog {
                set,
                own: self.own.clone(),
            }),
            stats,
        }
    }

    /// The route set and groups for `snapshot`: the last ones when their inputs are the
    /// same (routes change rarely; rebuilding their rules on every endpoint change was a
    /// third of an incremental compile), and whether they are.
    fn routes_of(&mut self, snapshot: &Snapshot, entries_same: bool) -> (CachedRoutes, bool) {
        let cached = self.routes.take();
        // Same routes and the same services: the routes' inputs are the same, told
        // without building them.
        let unchanged = entries_same
            && cached
                .as_ref()
                .is_some_and(|c| routes_unchanged(&c.inputs, snapshot));
        let cached = match cached {
            Some(c) if unchanged => return (c, true),
            other => other,
        };
        let inputs = self.route_inputs(snapshot);
        match cached {
            Some(c) if same_routes(&c.inputs, &inputs) => (c, true),
            _ => {
                let built = CachedRoutes {
                    set: RouteSet::new(snapshot, &self.opts.cluster_domain),
                    groups: self.groups_by_service(snapshot),
                    inputs,
                };
                (built, false)
            }
        }
    }

    /// Every service of the snapshot compiled (again only where its inputs changed), as
    /// the compile's service set.
    fn compile_services(
        &mut self,
        shared: &Shared<'_>,
        groups: &HashMap<ObjectKey, Vec<Group>>,
        changed: &HashSet<ObjectKey, foldhash::fast::RandomState>,
        stats: &mut Stats,
    ) -> Arc<ServiceSet> {
        let snapshot = shared.snapshot;
        let mut compiled = Vec::with_capacity(snapshot.services.len());
        for (key, entry) in &snapshot.services {
            // The same entry, none of its endpoints' workloads changed, nothing shared
            // changed: the same inputs, without building them.
            if shared.globals_same
                && let Some((before, out)) = self.services.get(key)
                && Arc::ptr_eq(&before.entry, entry)
                && entry
                    .endpoints
                    .iter()
                    .all(|ep| ep.workload.as_ref().is_none_or(|w| !changed.contains(w)))
            {
                stats.services_reused += 1;
                compiled.push(out.clone());
                continue;
            }
            let workloads: Vec<Option<Arc<Workload>>> = entry
                .endpoints
                .iter()
                .map(|ep| {
                    ep.workload
                        .as_ref()
                        .and_then(|w| snapshot.workloads.get(w).cloned())
                })
                .collect();
            let inputs = ServiceInputs {
                entry: entry.clone(),
                tls: workloads
                    .iter()
                    .map(|w| {
                        w.as_deref()
                            .filter(|w| w.meshed)
                            .map(|w| shared.tls_of(w).endpoint)
                    })
                    .collect(),
                workloads,
                groups: groups.get(key).cloned().unwrap_or_default(),
                outlier: healing::outlier_for(snapshot, &shared.healings, key, entry),
            };
            match self.services.get_mut(key) {
                Some((before, out)) if *before == inputs => {
                    stats.services_reused += 1;
                    // Equal, in new `Arc`s: kept, so the next compile tells by pointer.
                    *before = inputs;
                    compiled.push(out.clone());
                }
                _ => {
                    stats.services_compiled += 1;
                    let out = Arc::new(compile_service(&inputs, &self.opts));
                    compiled.push(out.clone());
                    self.services.insert(key.clone(), (inputs, out));
                }
            }
        }
        // Deleted services fall out here: only what this snapshot has is kept.
        if self.services.len() != snapshot.services.len() {
            self.services
                .retain(|k, _| snapshot.services.contains_key(k));
        }
        // The services are held once, in the catalog, not in each workload's config: a
        // changed endpoint changes the set, not 50,000 configs.
        let set = match self.set.take() {
            Some(set)
                if set.digests.len() == compiled.len()
                    && set
                        .digests
                        .iter()
                        .zip(&compiled)
                        .all(|(d, c)| *d == c.digest) =>
            {
                set
            }
            _ => Arc::new(ServiceSet::of(compiled)),
        };
        self.set = Some(set.clone());
        set
    }

    /// The ports each workload's app serves, with the workloads whose ports may have
    /// changed: they come from the services alone, so only the endpoints of services
    /// that changed may serve other ports now.
    fn inbound_of(
        &mut self,
        snapshot: &Snapshot,
        entries_same: bool,
    ) -> (
        InboundCache,
        HashSet<ObjectKey, foldhash::fast::RandomState>,
    ) {
        let entries = || snapshot.services.values().cloned().collect();
        let (before, mut ports) = match self.inbound.take() {
            Some(cached) if entries_same => return (cached, HashSet::default()),
            Some(cached) => cached,
            None => {
                let ports = InboundPorts::of(snapshot);
                let changed = snapshot
                    .services
                    .values()
                    .flat_map(|e| e.endpoints.iter().filter_map(|ep| ep.workload.as_ref()))
                    .filter(|key| snapshot.workloads.contains_key(*key))
                    .cloned()
                    .collect();
                return ((entries(), ports), changed);
            }
        };
        let mut old: FastMap<&ObjectKey, &Arc<ServiceEntry>> =
            before.iter().map(|e| (&e.key, e)).collect();
        // Every workload a changed service had or has as an endpoint.
        let mut touched: HashSet<ObjectKey, foldhash::fast::RandomState> = HashSet::default();
        let mut swap = |was: Option<&ServiceEntry>, now: Option<&ServiceEntry>| {
            for e in was.into_iter().chain(now) {
                for key in e.endpoints.iter().filter_map(|ep| ep.workload.as_ref()) {
                    if !touched.contains(key) {
                        touched.insert(key.clone());
                    }
                }
            }
            ports.replace(was, now);
        };
        for (key, entry) in &snapshot.services {
            match old.remove(key) {
                Some(was) if Arc::ptr_eq(was, entry) => {}
                was => swap(was.map(|w| &**w), Some(entry)),
            }
        }
        for was in old.into_values() {
            swap(Some(was), None);
        }
        ports.settle(touched.iter());
        touched.retain(|key| snapshot.workloads.contains_key(key));
        ((entries(), ports), touched)
    }

    /// Every meshed workload's config built again where its inputs changed; those gone
    /// (or no longer meshed) dropped. `ports_changed`: the workloads whose ports may have
    /// changed, `None` when no service did.
    fn compile_workloads(
        &mut self,
        shared: &Shared<'_>,
        routes: &mut RouteSet,
        inbound: &InboundPorts,
        ports_changed: Option<&HashSet<ObjectKey, foldhash::fast::RandomState>>,
        extra: &Extra,
        stats: &mut Stats,
    ) {
        let snapshot = shared.snapshot;
        let mut meshed = 0usize;
        for (key, w) in snapshot.workloads.iter().filter(|(_, w)| w.meshed) {
            meshed += 1;
            // Nothing it depends on changed (its ports compared when the services
            // changed): its inputs are the same, not built again.
            if shared.globals_same
                && let Some(c) = self.workloads.get(key)
                && Arc::ptr_eq(&c.inputs.workload, w)
                && ports_changed.is_none_or(|p| !p.contains(key))
            {
                stats.workloads_reused += 1;
                continue;
            }
            let (caller_routes, routes_digest) = routes.for_caller(&w.labels);
            let inputs = WorkloadInputs {
                workload: w.clone(),
                inbound: inbound.get(key).to_vec(),
                overload: healing::overload_for(&shared.healings, w),
                routes: routes_digest,
                tls: shared.tls_of(w).inbound,
                access: shared.access.for_workload(w),
                trust_bundle: extra.trust_bundle.clone(),
            };
            match self.workloads.get_mut(key) {
                // Equal inputs in a new `Arc`: keep it, so the next compile can tell by
                // pointer.
                Some(c) if c.inputs == inputs => {
                    c.inputs.workload = w.clone();
                    stats.workloads_reused += 1;
                }
                _ => {
                    stats.workloads_compiled += 1;
                    let built = self.workload_config(inputs, caller_routes);
                    if self.own.get(key) != Some(&built.own) {
                        self.own.insert(key.clone(), built.own);
                    }
                    self.configs.insert(key.clone(), built.config.clone());
                    self.workloads.insert(key.clone(), built);
                }
            }
        }
        // A workload gone (or no longer meshed) takes its config and digest with it.
        if self.workloads.len() != meshed {
            self.workloads
                .retain(|k, _| snapshot.workloads.get(k).is_some_and(|w| w.meshed));
        }
        if self.configs.len() != self.workloads.len() {
            let gone: Vec<ObjectKey> = self
                .configs
                .keys()
                .filter(|k| !self.workloads.contains_key(*k))
                .cloned()
                .collect();
            for k in gone {
                self.configs.remove(&k);
                self.own.remove(&k);
            }
        }
    }

    /// The workloads `snapshot` adds, changes or removes since the last compile (told
    /// from the shared structure of the two maps, so a change costs what it changes);
    /// remembers its workloads for the next.
    fn changed_workloads(
        &mut self,
        snapshot: &Snapshot,
    ) -> HashSet<ObjectKey, foldhash::fast::RandomState> {
        let changed = self
            .seen
            .diff(&snapshot.workloads)
            .map(|d| match d {
                DiffItem::Add(k, _)
                | DiffItem::Update { new: (k, _), .. }
                | DiffItem::Remove(k, _) => k.clone(),
            })
            .collect();
        self.seen = snapshot.workloads.clone();
        changed
    }

    /// What the route set and groups depend on, in the snapshot's (stable) order.
    fn route_inputs(&self, snapshot: &Snapshot) -> Vec<(ObjectKey, RouteInput)> {
        snapshot
            .traffic_routes
            .iter()
            .map(|(key, o)| {
                let exists = o.accepted.as_ref().is_some_and(|r| {
                    service_for_host(&r.spec.host, &key.namespace, &self.opts.cluster_domain)
                        .is_some_and(|svc| snapshot.services.contains_key(&svc))
                });
                (key.clone(), (o.accepted.clone(), o.created.clone(), exists))
            })
            .collect()
    }

    fn workload_config(
        &self,
        inputs: WorkloadInputs,
        routes: Arc<[ServiceRoutes]>,
    ) -> CachedWorkload {
        let mut config = ProxyConfig {
            version: String::new(),
            node: workload::node(&inputs.workload, &self.opts),
            inbound: workload::inbound(&inputs),
            services: Arc::new([]),
            routes,
            trust_bundle: inputs.trust_bundle.clone(),
            ..Default::default()
        };
        // The version of its own sections; the whole config's is this combined with
        // the service set's (`Catalog::whole_version`).
        let own = Digest256::combine([
            &Digest256::of(&config.node),
            &Digest256::of(&config.inbound),
            &Digest256::of(&config.listeners),
            &Digest256::of(&config.detection),
            &Digest256::of(&config.trust_bundle),
            &inputs.routes,
        ]);
        config.version = own.version();
        CachedWorkload {
            inputs,
            own,
            config: Arc::new(config),
        }
    }

    /// The groups of every service that has TrafficRoutes, from the routes in force,
    /// oldest first (ties by namespace/name), so the outcome never depends on map order.
    fn groups_by_service(&self, snapshot: &Snapshot) -> HashMap<ObjectKey, Vec<Group>> {
        let mut out: HashMap<ObjectKey, Vec<Group>> = HashMap::new();
        for (key, route) in snapshot.traffic_routes_oldest_first() {
            let Some(svc) =
                service_for_host(&route.spec.host, &key.namespace, &self.opts.cluster_domain)
            else {
                continue;
            };
            let groups = out.entry(svc).or_default();
            for g in &route.spec.groups {
                if !groups.iter().any(|have| have.name == g.name) {
                    groups.push(g.clone());
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
