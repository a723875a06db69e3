//! Kubernetes mode: the cluster's API as source, TokenReview for tokens, server-side
//! apply for status, a Lease for leadership.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::registry::Snapshot;
use crate::source::SourceError;
use crate::status::StatusSink;
use crate::stream::auth::Authenticator;

/// What kube mode hands the rest of the operator.
pub type Started = (
    Arc<dyn Authenticator>,
    Arc<dyn StatusSink>,
    watch::Receiver<bool>,
    JoinHandle<Result<(), SourceError>>,
);

/// Connects to the cluster and starts the source and the leader election.
pub async fn start(
    _cli: &Cli,
    _snapshots: watch::Sender<Arc<Snapshot>>,
    _stop: CancellationToken,
) -> anyhow::Result<Started> {
    anyhow::bail!("--source kube: not wired yet")
}
