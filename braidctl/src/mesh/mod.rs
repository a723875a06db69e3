//! Where braidctl reads the mesh from: the operator's directory and its replicas' admin
//! ports (directory mode), or the Kubernetes API. Each command asks through
//! [`Mesh`], so every command works the same over both.

pub mod dir;

use std::net::SocketAddr;

use serde::Serialize;

use crate::cli::Global;

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

/// The mesh braidctl looks at.
pub enum Mesh {
    /// A mesh run from a directory.
    Dir(dir::DirMesh),
}

impl Mesh {
    /// The mesh the global options name.
    pub fn from(global: &Global) -> anyhow::Result<Self> {
        match &global.dir {
            Some(dir) => Ok(Self::Dir(dir::DirMesh::new(
                dir.clone(),
                global.status_dir.clone(),
                global.operators.clone(),
                global.proxy_admin,
            )?)),
            None => anyhow::bail!(
                "no mesh named: pass --dir PATH (and --operator ADDR) for a mesh run from a directory. \
                 Kubernetes mode (kubeconfig, --context) is not in this build of braidctl yet"
            ),
        }
    }

    /// Every braid resource, in `namespace` (all when `None`), sorted by namespace, kind
    /// and name.
    pub fn resources(&self, namespace: Option<&str>) -> anyhow::Result<Vec<Resource>> {
        match self {
            Self::Dir(d) => d.resources(namespace),
        }
    }

    /// The admin addresses of the operator's replicas.
    pub fn operators(&self) -> anyhow::Result<Vec<SocketAddr>> {
        match self {
            Self::Dir(d) => d.operators(),
        }
    }

    /// The admin address of `pod`'s proxy (`namespace/name`).
    pub fn proxy_admin(&self, _pod: &str) -> anyhow::Result<SocketAddr> {
        match self {
            Self::Dir(d) => Ok(d.proxy_admin()),
        }
    }
}
