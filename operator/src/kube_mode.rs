//! Kubernetes mode: the cluster's API as source, TokenReview for tokens, server-side
//! apply for status, a Lease for leadership, and braid's CA for the operator's and the
//! webhook's certificates.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use braid_api::control::tls::client_config_from_pem;
use rustls_pki_types::ServerName;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ca::Ca;
use crate::ca::maintain::{RESYNC, refresh_ca};
use crate::ca::secret::{CaSecret, Origin};
use crate::ca::serving::ServingRotation;
use crate::ca::upkeep::Leading;
use crate::ca::upkeep::trust::TrustUpkeep;
use crate::ca::upkeep::webhook::WebhookUpkeep;
use crate::ca::webhook::WebhookNames;
use crate::ca::{Serving, ServingCert};
use crate::cli::Cli;
use crate::healer::{Actuator, KubeActuator};
use crate::leader::{LeaderElector, Leadership, LeaseConfig};
use crate::metrics::Metrics;
use crate::registry::Snapshot;
use crate::sink::{KubeSink, StatusSink};
use crate::source::kube::KubeSource;
use crate::source::{Source, SourceError};
use crate::stream::auth::Authenticator;
use crate::stream::relay::Relay;
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
    /// The config server's certificate.
    pub serving: Serving,
    /// Carries out the healer's actions.
    pub actuator: Arc<dyn Actuator>,
    /// Passes proxies' reports on to the leader while this replica follows.
    pub relay: Option<Arc<Relay>>,
    /// The CA in force, which signs proxies' certificates.
    pub ca: watch::Receiver<Arc<Ca>>,
    /// This replica's name in leader election.
    pub replica: String,
}

/// Connects to the cluster (in-cluster config, or KUBECONFIG), loads (or creates) the CA,
/// and starts the source, the leader election, the serving certificate's renewal and
/// the controllers of the webhook's TLS and of the proxies' trust ConfigMaps (which
/// write while this replica leads). `metrics` learns when the CA expires.
pub async fn start(
    cli: &Cli,
    snapshots: watch::Sender<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<Started> {
    if cli.healing_command.is_some() {
        anyhow::bail!(
            "--healing-command is for --source dir:PATH; with --source kube the operator evicts and labels pods itself"
        );
    }
    let identity = cli
        .pod_name
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .context("--pod-name (BRAID_POD_NAME): required with --source kube when HOSTNAME is unset; each replica needs its own name for leader election")?;
    let client = cluster_client().await?;
    let source =
        KubeSource::new(client.clone()).with_debounce(Duration::from_millis(cli.debounce_ms));
    source
        .check_access()
        .await
        .context("--source kube: the operator's service account lacks access (apply manifests/rbac/operator.yaml)")?;

    let ca_secret = CaSecret::new(client.clone(), &cli.namespace, &cli.ca_secret);
    let (ca, origin) = ca_secret
        .load_or_create(SystemTime::now())
        .await
        .context("--ca-secret")?;
    match origin {
        Origin::Created => {
            tracing::info!(namespace = %cli.namespace, secret = %cli.ca_secret, "created a new CA")
        }
        Origin::Existing => {
            tracing::info!(namespace = %cli.namespace, secret = %cli.ca_secret, "using the CA in its Secret")
        }
    }
    let (ca_tx, ca_rx) = watch::channel(Arc::new(ca));
    let own_cert = cli.tls_cert.is_some();
    let serving = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => {
            tracing::info!(
                "--tls-cert given: serving it, and leaving the braid-operator-ca ConfigMaps to you"
            );
            ServingCert::load(cert, key)?.into_serving()?
        }
        _ => ServingRotation::spawn(&ca_rx, &cli.tls_names(), stop.clone())
            .context("--tls-san: the serving certificate")?,
    };

    let source_task = tokio::spawn(source.run(snapshots, stop.clone()));
    let (leadership, leader_task) =
        LeaderElector::new(client.clone(), LeaseConfig::new(&cli.namespace, &identity))
            .spawn(stop.clone());
    tokio::spawn(refresh_ca(ca_secret, ca_tx, metrics, RESYNC, stop.clone()));
    let leading = Leading::new(leadership.subscribe(), ca_rx.clone());
    let webhook = WebhookNames {
        namespace: cli.namespace.clone(),
        service: cli.webhook_service.clone(),
        secret: cli.webhook_secret.clone(),
        config: cli.webhook_config.clone(),
        cluster_domain: cli.cluster_domain.clone(),
    };
    tokio::spawn(WebhookUpkeep::new(client.clone(), webhook, leading.clone()).run(stop.clone()));
    if !own_cert {
        tokio::spawn(TrustUpkeep::new(client.clone(), leading).run(stop.clone()));
    }
    let relay = relay(cli, &client, &identity, &serving)?;
    Ok(Started {
        relay: Some(Arc::new(relay)),
        ca: ca_rx,
        auth: Arc::new(TokenReviewer::new(client.clone())),
        actuator: Arc::new(KubeActuator::new(client.clone())),
        sink: Arc::new(KubeSink::new(client, Some(identity.clone()))),
        replica: identity,
        leadership,
        source_task,
        leader_task: Some(leader_task),
        serving,
    })
}

/// The cluster could not be reached with what the operator was given.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Neither an in-cluster service account nor a kubeconfig was found.
    #[error(
        "--source kube: no cluster found (in-cluster service account or KUBECONFIG): {0}; use --source dir:PATH to run without one"
    )]
    NotFound(String),
    /// A configuration was found, but its credentials cannot be used.
    #[error(
        "--source kube: the cluster's credentials (KUBECONFIG or the in-cluster service account) cannot be used: {message}{hint}"
    )]
    Credentials {
        /// The client's error.
        message: String,
        /// What to do about it, when known.
        hint: &'static str,
    },
}

/// A client of the cluster the environment names (in-cluster, else KUBECONFIG).
pub async fn cluster_client() -> Result<kube::Client, ClusterError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| ClusterError::NotFound(e.to_string()))?;
    client_from(config)
}

/// A client over `config`, saying what is wrong with its credentials when there is no
/// such client.
pub fn client_from(config: kube::Config) -> Result<kube::Client, ClusterError> {
    kube::Client::try_from(config).map_err(|e| {
        let message = e.to_string();
        ClusterError::Credentials {
            hint: credentials_hint(&message),
            message,
        }
    })
}

/// What to do about a client error, for the causes seen on real clusters.
fn credentials_hint(message: &str) -> &'static str {
    if message.contains("UnsupportedCertVersion") {
        "; a certificate of the kubeconfig (the client's, or its CA's) is X.509 v1, which rustls refuses: re-issue it as v3 (openssl x509 -req with -extfile naming basicConstraints and keyUsage), or authenticate with a token"
    } else if message.contains("private key") {
        "; check client-key-data (a PEM private key matching client-certificate-data)"
    } else {
        ""
    }
}

/// The relay of reports to the leader: its certificate is verified with the trust the
/// proxies use, for the first DNS name of `--tls-san` (every replica's certificate holds
/// those names; the leader is reached by its pod IP).
fn relay(cli: &Cli, client: &kube::Client, me: &str, serving: &Serving) -> anyhow::Result<Relay> {
    let name = cli
        .tls_names()
        .into_iter()
        .find_map(|n| match ServerName::try_from(n) {
            Ok(ServerName::DnsName(d)) => Some(ServerName::DnsName(d)),
            _ => None,
        })
        .context("--tls-san: needs a DNS name, which replicas verify each other by when relaying reports")?;
    let tls = client_config_from_pem(
        serving.trust_pem.as_bytes(),
        std::path::Path::new("the config server's trust bundle"),
    )
    .context("relaying reports to the leader")?;
    Ok(Relay::new(
        client.clone(),
        &cli.namespace,
        me,
        cli.listen.port(),
        tls,
        name,
    ))
}
