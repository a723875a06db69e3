//! What the operator knows about the cluster: services, workloads and braid resources,
//! as one immutable [`Snapshot`] that every source produces and the compiler consumes.

mod accepted;
pub mod enforced;
mod in_force;
mod key;
mod label_index;
mod observed;
pub mod progress;
mod quarantine;
mod siblings;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use braid_api::config::Protocol;
use braid_api::control::delta::ServiceRef;
use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};

pub use accepted::carry_accepted;
pub use enforced::Enforced;
pub use in_force::governing_policy;
pub use key::ObjectKey;
pub use label_index::LabelIndex;
pub use observed::{Kind, Observed};
pub use progress::{Progress, Rollouts};
pub use quarantine::QUARANTINED;
pub use siblings::siblings;

/// Services by namespace/name: a persistent map, so a snapshot's copy costs nothing and
/// shares every entry with the one it was copied from (copying 5,000 entries, and
/// 50,000 workloads, several times per change was much of a change's memory churn).
pub type Services = imbl::OrdMap<ObjectKey, Arc<ServiceEntry>>;

/// Workloads (pods) by namespace/name, persistent as [`Services`].
pub type Workloads = imbl::OrdMap<ObjectKey, Arc<Workload>>;

/// Everything the compiler needs, as seen at one moment. Objects are behind `Arc` so a
/// source can hand out a new snapshot that shares what did not change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Services by namespace/name.
    pub services: Services,
    /// Workloads (pods) by namespace/name.
    pub workloads: Workloads,
    /// TrafficRoutes, valid or not.
    pub traffic_routes: BTreeMap<ObjectKey, Observed<TrafficRoute>>,
    /// EncryptionPolicies, valid or not.
    pub encryption_policies: BTreeMap<ObjectKey, Observed<EncryptionPolicy>>,
    /// SelfHealings, valid or not.
    pub self_healings: BTreeMap<ObjectKey, Observed<SelfHealing>>,
    /// AccessPolicies, valid or not.
    pub access_policies: BTreeMap<ObjectKey, Observed<AccessPolicy>>,
    /// Namespaces opted into the mesh (labelled `braid.dev/inject=enabled`). Empty in
    /// directory mode, where each workload says whether it is meshed.
    pub meshed_namespaces: BTreeSet<String>,
    /// Where each EncryptionPolicy's rollout stood when its status was last written (by
    /// the leader): replicas that do not lead compile with it, and a new leader resumes
    /// from it. Empty in directory mode (one process, nothing to share).
    pub rollout_status: Rollouts,
    /// The AccessPolicies whose automatic rollout the leader switched to Enforce, as
    /// their status records it: every replica compiles with it, so a failover or restart
    /// never turns an enforced policy back to Audit. Empty in directory mode without a
    /// state directory.
    pub access_enforced: Enforced,
    /// When the source noticed the change this snapshot carries.
    pub noticed: Noticed,
}

/// When a source first noticed a change (the first watch event of its debounce window,
/// the poll that found a file changed): where push and apply latency start, so they
/// include the source's own work. Not part of what a snapshot says, so two snapshots
/// that differ only here are equal.
#[derive(Clone, Copy, Debug, Default)]
pub struct Noticed(pub Option<std::time::Instant>);

impl Noticed {
    /// Noticed now.
    pub fn now() -> Self {
        Self(Some(std::time::Instant::now()))
    }
}

impl PartialEq for Noticed {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A Service: its virtual IPs, ports and endpoints.
// `Eq` lets `Arc<ServiceEntry>` comparisons short-cut on the pointer, which is what makes
// an incremental compile's "did this service change?" cheap.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Its namespace and name.
    pub key: ObjectKey,
    /// Its ClusterIPs (none for a headless service).
    pub vips: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Its endpoints, in a stable order.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// A service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name, when it has one.
    pub name: Option<String>,
    /// The port on the VIP.
    pub port: u16,
    /// The port on the endpoints.
    pub target_port: u16,
    /// How its traffic is treated (from `appProtocol`, the port name, or configured).
    pub protocol: Protocol,
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEndpoint {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// The workload behind it, when known (an EndpointSlice may point outside the cluster).
    pub workload: Option<ObjectKey>,
}

/// A workload instance (a pod, or a host in directory mode).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// Its namespace and name.
    pub key: ObjectKey,
    /// Its IPs, the primary first.
    pub ips: Vec<IpAddr>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its service account, which decides its identity.
    pub service_account: String,
    /// Whether it runs a braid proxy.
    pub meshed: bool,
    /// Services its proxy holds whether or not its app has called them yet
    /// (`namespace/name`, or `namespace/*` for all of a namespace's): Istio's Sidecar
    /// `egress.hosts`. Proxies find the others on demand.
    pub outbound_scope: Vec<ServiceRef>,
}

impl Workload {
    /// Whether it carries every label of `labels` with the same value (a Service's
    /// selector, a group's labels); an empty set is carried by every workload.
    pub fn carries(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}
