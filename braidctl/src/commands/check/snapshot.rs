//! What `check` read from the cluster, as plain data: the checks are pure functions of
//! it, tested without a cluster. Anything that could not be read says why (forbidden,
//! unreachable), so a check can tell "broken" from "cannot see".

use std::time::SystemTime;

use braid_api::debug::ProxiesAnswer;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;

/// A read: the object(s), or why they could not be read.
pub type Read<T> = Result<T, String>;

/// How the reason of a read the API server refused (403) starts: the user may not look,
/// which says nothing about the install.
pub const FORBIDDEN: &str = "forbidden: ";

/// Whether a read failed because the user may not make it.
pub fn is_forbidden(why: &str) -> bool {
    why.starts_with(FORBIDDEN)
}

/// Something the install needs to create, and whether the user may.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permission {
    /// `create`.
    pub verb: String,
    /// The API group (`""` for the core group).
    pub group: String,
    /// The resource, plural.
    pub resource: String,
    /// Its namespace, for namespaced objects.
    pub namespace: Option<String>,
    /// Whether the API server allows it.
    pub allowed: Read<bool>,
}

/// What `check` read.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// When.
    pub now: SystemTime,
    /// The namespace braid is (to be) installed in.
    pub mesh_namespace: String,
    /// The API server's version.
    pub version: Read<Info>,
    /// Every namespace.
    pub namespaces: Read<Vec<Namespace>>,
    /// The namespaces named with `-n`, to be meshed.
    pub named_namespaces: Vec<String>,
    /// Every node.
    pub nodes: Read<Vec<Node>>,
    /// What creating each object of the install needs (`--pre` only).
    pub permissions: Vec<Permission>,
    /// braid's CRDs, by name; `None`: not installed.
    pub crds: Vec<(String, Read<Option<CustomResourceDefinition>>)>,
    /// The operator's Deployment.
    pub operator: Read<Option<Deployment>>,
    /// The injector's Deployment.
    pub injector: Read<Option<Deployment>>,
    /// The webhook's configuration.
    pub webhook: Read<Option<MutatingWebhookConfiguration>>,
    /// The injector's `/healthz`, asked by the API server through the webhook's Service:
    /// the path the API server takes to call the webhook.
    pub webhook_health: Read<()>,
    /// The CA's Secret.
    pub ca: Read<Option<Secret>>,
    /// The injector's serving certificate's Secret.
    pub webhook_tls: Read<Option<Secret>>,
    /// The pods of the namespaces labelled for injection.
    pub pods: Read<Vec<Pod>>,
    /// Each operator replica's `/debug/info` and `/debug/proxies`, by pod.
    pub replicas: Read<Vec<(String, Read<ProxiesAnswer>)>>,
}

/// A read not made, and why.
pub fn not_read<T>(why: &str) -> Read<T> {
    Err(why.to_owned())
}

impl Snapshot {
    /// A cluster where nothing could be read, to fill in (tests).
    #[cfg(test)]
    pub fn unread(now: SystemTime) -> Self {
        Self {
            now,
            mesh_namespace: "braid-system".into(),
            version: not_read("not read"),
            namespaces: not_read("not read"),
            named_namespaces: vec![],
            nodes: not_read("not read"),
            permissions: vec![],
            crds: vec![],
            operator: not_read("not read"),
            injector: not_read("not read"),
            webhook: not_read("not read"),
            webhook_health: not_read("not read"),
            ca: not_read("not read"),
            webhook_tls: not_read("not read"),
            pods: not_read("not read"),
            replicas: not_read("not read"),
        }
    }
}
