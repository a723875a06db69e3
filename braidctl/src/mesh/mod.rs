//! Where braidctl reads the mesh from: the operator's directory and its replicas' admin
//! ports (directory mode), or the Kubernetes API. Each command asks through
//! [`Mesh`], so every command works the same over both.

pub mod admin;
pub mod dir;
pub mod kube;

use std::net::SocketAddr;

use serde::Serialize;

use crate::cli::Global;
pub use admin::Admin;

/// Every kind braid serves, with its plural as the CRDs name it.
pub const KINDS: [(&str, &str); 4] = [
    ("AccessPolicy", "accesspolicies"),
    ("EncryptionPolicy", "encryptionpolicies"),
    ("SelfHealing", "selfhealings"),
    ("TrafficRoute", "trafficroutes"),
];

/// Where braidctl finds a proxy's admin port in directory mode: it runs where the proxy
/// runs.
const LOCAL_PROXY_ADMIN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15000);

/// A braid resource and its status, whatever its kind.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// `TrafficRoute`, `EncryptionPolicy`, `SelfHealing` or `AccessPolicy`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its status as the operator wrote it; absent: not written yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// Where a proxy's metrics are.
#[derive(Clone)]
pub struct MetricsSource {
    /// Its pod, `namespace/name`.
    pub pod: String,
    /// What runs the pod: a Deployment's name, else the pod's `app` label, else its name.
    pub owner: String,
    /// Its health port, which serves `/stats/prometheus`.
    pub admin: Admin,
}

/// The mesh braidctl looks at.
pub enum Mesh {
    /// A mesh run from a directory.
    Dir(dir::DirMesh),
    /// A mesh in a Kubernetes cluster.
    Kube(kube::KubeMesh),
}

impl Mesh {
    /// The mesh the global options name: `--dir`'s, else the kubeconfig's cluster.
    pub async fn from(global: &Global) -> anyhow::Result<Self> {
        match &global.dir {
            Some(dir) => Ok(Self::Dir(dir::DirMesh::new(
                dir.clone(),
                global.status_dir.clone(),
                global.operators.clone(),
                global.proxy_admin.unwrap_or(LOCAL_PROXY_ADMIN),
            )?)),
            None => Ok(Self::Kube(
                kube::KubeMesh::connect(
                    global.kubeconfig.as_deref(),
                    global.context.as_deref(),
                    &global.braid_namespace,
                    global.timeout,
                )
                .await?,
            )),
        }
    }

    /// Every braid resource, in `namespace` (all when `None`), sorted by namespace, kind
    /// and name.
    pub async fn resources(&self, namespace: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        match self {
            Self::Dir(d) => d.resources(namespace),
            Self::Kube(k) => k.resources(namespace).await,
        }
    }

    /// The admin ports of the operator's replicas.
    pub async fn operators(&self) -> anyhow::Result<Vec<Admin>> {
        match self {
            Self::Dir(d) => Ok(d.operators()?.into_iter().map(Admin::Addr).collect()),
            Self::Kube(k) => k.operators().await,
        }
    }

    /// Every meshed pod's proxy metrics, in `namespace` only when given.
    pub async fn metrics_sources(
        &self,
        namespace: Option<&str>,
    ) -> anyhow::Result<Vec<MetricsSource>> {
        match self {
            Self::Dir(d) => Ok(d
                .metrics_sources()?
                .into_iter()
                .filter(|s| namespace.is_none_or(|ns| s.pod.split('/').next() == Some(ns)))
                .collect()),
            Self::Kube(k) => k.metrics_sources(namespace).await,
        }
    }

    /// The admin port of `pod`'s proxy (`namespace/name`).
    pub async fn proxy_admin(&self, global: &Global, pod: &str) -> anyhow::Result<Admin> {
        match self {
            Self::Dir(d) => Ok(Admin::Addr(d.proxy_admin())),
            Self::Kube(k) => match global.proxy_admin {
                Some(addr) => Ok(Admin::Addr(addr)),
                None => {
                    let (namespace, name) = match pod.split_once('/') {
                        Some((ns, name)) => (ns.to_owned(), name.to_owned()),
                        None => (
                            global
                                .namespace
                                .clone()
                                .unwrap_or_else(|| k.client().default_namespace().to_owned()),
                            pod.to_owned(),
                        ),
                    };
                    Ok(Admin::PortForward {
                        client: k.client().clone(),
                        namespace,
                        pod: name,
                        port: braid_api::ports::ADMIN_PORT,
                    })
                }
            },
        }
    }

    /// The admin port of the proxy of the pod at `ip`, when braidctl can find it
    /// (Kubernetes mode; a directory names no pods by address).
    pub async fn proxy_admin_at(&self, ip: std::net::IpAddr) -> anyhow::Result<Option<Admin>> {
        match self {
            Self::Dir(_) => Ok(None),
            Self::Kube(k) => k.proxy_admin_at(ip).await,
        }
    }
}
