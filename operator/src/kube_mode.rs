//! Kubernetes mode: the cluster's API as source, TokenReview for tokens, server-side
//! apply for status, a Lease for leadership.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::Cli;
use crate::leader::{LeaderElector, Leadership, LeaseConfig};
use crate::registry::Snapshot;
use crate::source::kube::KubeSource;
use crate::source::{Source, SourceError};
use crate::status::{KubeSink, StatusSink};
use crate::stream::auth::Authenticator;
use crate::stream::token_review::TokenReviewer;

/// What a mode hands the rest of the operator.
pub struct Started {
    /// Checks proxies' tokens.
    pub auth: Arc<dyn Authenticator>,
    /// Writes statuses and events.
    pub sink: Arc<dyn StatusSink>,
    /// Whether this replica leads (writes status, heals).
    pub leadership: Leadership,
    /// The source; it ends early only when it cannot start.
    pub source_task: JoinHandle<Result<(), SourceError>>,
    /// The leader election; awaited on shutdown so the Lease is released for a successor.
    pub leader_task: Option<JoinHandle<()>>,
}

/// Connects to the cluster (in-cluster config, or KUBECONFIG) and starts the source and
/// the leader election.
pub async fn start(
    cli: &Cli,
    snapshots: watch::Sender<Arc<Snapshot>>,
    stop: CancellationToken,
) -> anyhow::Result<Started> {
    let identity = cli
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .context("--pod-name (BRAID_POD_NAME): required with --source kube when HOSTNAME is unset; each replica needs its own name for leader election")?;
    let client = kube::Client::try_default()
        .await
        .context("--source kube: no cluster found (in-cluster service account or KUBECONFIG); use --source dir:PATH to run without one")?;
    let source =
        KubeSource::new(client.clone()).with_debounce(Duration::from_millis(cli.debounce_ms));
    source
        .check_access()
        .await
        .context("--source kube: the operator's service account lacks access (apply manifests/rbac/operator.yaml)")?;
    let source_task = tokio::spawn(source.run(snapshots, stop.clone()));
    let (leadership, leader_task) =
        LeaderElector::new(client.clone(), LeaseConfig::new(&cli.namespace, &identity)).spawn(stop);
    Ok(Started {
        auth: Arc::new(TokenReviewer::new(client.clone())),
        sink: Arc::new(KubeSink::new(client, Some(identity))),
        leadership,
        source_task,
        leader_task: Some(leader_task),
    })
}
