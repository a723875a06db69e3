//! Where the operator's view of the world comes from: the Kubernetes API or a directory
//! of YAML files. Both publish complete [`Snapshot`]s; the rest of the operator cannot
//! tell them apart.

pub mod dir;
pub mod kube;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::registry::Snapshot;

/// A source of snapshots.
pub trait Source: Send + 'static {
    /// Publishes a snapshot whenever what it watches changes, until `stop` fires. Only a
    /// failure to start is an error; later trouble is logged and retried, and the last
    /// good snapshot stays published.
    fn run(
        self,
        out: watch::Sender<Arc<Snapshot>>,
        stop: CancellationToken,
    ) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Why a source could not start.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The directory source's directory is unusable.
    #[error("--source dir:{path}: {message}")]
    Dir {
        /// The directory.
        path: String,
        /// What is wrong, and what to do.
        message: String,
    },
    /// The Kubernetes API could not be reached or refused the operator.
    #[error("kubernetes: {0}")]
    Kube(String),
}
