//! Where the election's Lease is kept, and the API server as that place.

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::PostParams;
use kube::{Api, Client};

/// A write to the Lease was not made.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// It changed since it was read (or, on create, already exists): another replica
    /// wrote first.
    #[error("changed by another replica since it was read")]
    Conflict,
    /// It could not be read or written.
    #[error("{0}")]
    Failed(String),
}

/// Holds one Lease, with the API server's concurrency rules: a create fails when it
/// exists, a replace when its `resourceVersion` is no longer the one read.
pub trait LeaseStore: Send + Sync + 'static {
    /// The Lease, if there is one.
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, StoreError>>;
    /// Creates it.
    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Replaces it, if it is still at `lease`'s `resourceVersion`.
    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Which Lease, for messages.
    fn describe(&self) -> String;
}

/// A Lease on the API server.
pub struct KubeLeases {
    api: Api<Lease>,
    namespace: String,
    name: String,
}

impl KubeLeases {
    /// The Lease `namespace/name`, through `client`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

fn kube_error(e: kube::Error) -> StoreError {
    match e {
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict,
        e => StoreError::Failed(e.to_string()),
    }
}

impl LeaseStore for KubeLeases {
    fn get(&self) -> BoxFuture<'_, Result<Option<Lease>, StoreError>> {
        Box::pin(async move { self.api.get_opt(&self.name).await.map_err(kube_error) })
    }

    fn create<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.api
                .create(&PostParams::default(), lease)
                .await
                .map(|_| ())
                .map_err(kube_error)
        })
    }

    fn replace<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.api
                .replace(&self.name, &PostParams::default(), lease)
                .await
                .map(|_| ())
                .map_err(kube_error)
        })
    }

    fn describe(&self) -> String {
        format!("lease {}/{}", self.namespace, self.name)
    }
}
