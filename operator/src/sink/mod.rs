//! Where statuses and events go, and where a status is read back from: the API server
//! (server-side apply on the status subresource, Events), or files in directory mode.
//! Only the leader writes.

mod counted;
mod files;
pub mod kube;
#[cfg(test)]
pub mod recorded;

use futures::future::BoxFuture;

pub use self::kube::KubeSink;
pub use counted::Counted;
pub use files::FileSink;

use crate::registry::{Kind, ObjectKey};

/// The status of one resource, to be written.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate {
    /// The resource's kind.
    pub kind: Kind,
    /// Its namespace and name.
    pub key: ObjectKey,
    /// The whole `status` object.
    pub status: serde_json::Value,
}

/// Something worth telling an administrator about a resource (`kubectl describe`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The resource's kind.
    pub kind: Kind,
    /// Its namespace and name.
    pub key: ObjectKey,
    /// A CamelCase reason (`Invalid`).
    pub reason: String,
    /// What happened, for people.
    pub note: String,
    /// A warning rather than a normal event.
    pub warning: bool,
}

/// A status or event could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing {what}: {message}")]
pub struct StatusError {
    /// What was being written.
    pub what: String,
    /// Why it failed.
    pub message: String,
}

/// Writes statuses and events. Only the leader writes.
pub trait StatusSink: Send + Sync + 'static {
    /// Replaces the status of one resource.
    fn apply<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>>;
    /// Records an event about a resource.
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>>;
    /// The `status` last written for a resource (`None`: none yet), read from where it is
    /// kept rather than from a cache: what a new leader resumes from must include every
    /// write the last leader made before it let the lease go.
    fn read<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>>;
    /// The resource is gone: drop what was written for it, where that outlives it (the
    /// API server deletes a status with its object, so by default there is nothing to do).
    fn forget<'a>(&'a self, _kind: Kind, _key: &'a ObjectKey) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}
