//! Directory mode: a directory of YAML as source, bootstrap tokens for proxies, status
//! as files, and — like Kubernetes mode, through the same code — a Lease (a file) for
//! leadership, the leader's status read back by every replica, reports relayed to the
//! leader, and one CA (files) that every replica signs with. Several replicas on one
//! directory are an HA operator, as two replicas in a cluster are.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use braid_api::control::tls::client_config_from_pem;
use rustls_pki_types::ServerName;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::ca::ServingCert;
use crate::ca::files::load_or_create;
use crate::ca::secret::Origin;
use crate::ca::serving::ServingRotation;
use crate::cli::Cli;
use crate::healer::CommandActuator;
use crate::kube_mode::Started;
use crate::leader::{FileLeases, LEASE_NAME, LeaderElector, LeaseConfig};
use crate::registry::Snapshot;
use crate::sink::FileSink;
use crate::source::Source;
use crate::source::dir::DirSource;
use crate::stream::auth::BootstrapTokens;
use crate::stream::relay::{LeaseLocator, Relay};

/// Where the CA's files are, in the state (status) directory.
pub const CA_DIR: &str = "ca";

/// Starts directory mode on `path`: its source, the election, the CA and the relay;
/// `bound` is where the config server listens.
pub fn start(
    cli: &Cli,
    path: &Path,
    bound: SocketAddr,
    snapshots: watch::Sender<Arc<Snapshot>>,
    stop: CancellationToken,
) -> anyhow::Result<Started> {
    let tokens = cli.bootstrap_tokens.as_ref().context(
        "--bootstrap-tokens FILE is required with --source dir:PATH: it lists the tokens proxies present",
    )?;
    let tokens =
        BootstrapTokens::load(tokens).map_err(|e| anyhow::anyhow!("--bootstrap-tokens {e}"))?;
    if !path.is_dir() {
        anyhow::bail!("--source dir:{}: not a directory", path.display());
    }
    let state_dir = cli
        .status_dir
        .clone()
        .unwrap_or_else(|| path.join(".status"));
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("--status-dir {}: cannot create it", state_dir.display()))?;
    // The host alone is not enough: replicas on one host (the e2e, a VM) would share it
    // and both lead. The address they serve at tells them apart and stays across
    // restarts, so a restarted replica renews its own Lease at once.
    let identity = cli.pod_name.clone().unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "braid-operator".into());
        format!("{host}-{bound}")
    });

    let (ca, origin) = load_or_create(&state_dir.join(CA_DIR), SystemTime::now())
        .context("--status-dir: the CA every replica signs with")?;
    if origin == Origin::Created {
        tracing::info!(dir = %state_dir.join(CA_DIR).display(), "created a new CA");
    }
    let ca = Arc::new(ca);
    let (_ca_tx, ca_rx) = watch::channel(ca.clone());
    let serving = match (&cli.tls_cert, &cli.tls_key) {
        (Some(cert), Some(key)) => ServingCert::load(cert, key)?.into_serving()?,
        _ => ServingRotation::spawn(&ca_rx, &cli.tls_names(), stop.clone())
            .context("--tls-san: the serving certificate")?,
    };

    let advertise = cli
        .advertise_address
        .or_else(|| (!bound.ip().is_unspecified()).then_some(bound));
    let store = Arc::new(FileLeases::new(&state_dir, LEASE_NAME));
    let config = LeaseConfig {
        address: advertise.map(|a| a.to_string()),
        ..LeaseConfig::new(&cli.namespace, &identity)
    };
    let (leadership, leader_task) =
        LeaderElector::with_store(store.clone(), config).spawn(stop.clone());
    let relay = match advertise {
        None => {
            tracing::warn!(
                listen = %bound,
                "--listen names no IP and --advertise-address is unset: other replicas cannot relay reports to this one when it leads"
            );
            None
        }
        Some(_) => Some(Arc::new(Relay::with_locator(
            Arc::new(LeaseLocator {
                store,
                me: identity.clone(),
            }),
            &identity,
            client_config_from_pem(
                serving.trust_pem.as_bytes(),
                Path::new("the config server's trust bundle"),
            )
            .context("relaying reports to the leader")?,
            relay_name(cli)?,
        ))),
    };
    // The ca_tx sender is dropped: directory mode's CA does not rotate while running.
    let source = DirSource::new(path.to_path_buf(), Duration::from_millis(cli.poll_ms))
        .with_state_dir(state_dir.clone());
    Ok(Started {
        auth: Arc::new(tokens),
        sink: Arc::new(FileSink::new(state_dir)),
        leadership,
        source_task: tokio::spawn(source.run(snapshots, stop)),
        leader_task: Some(leader_task),
        serving,
        actuator: Arc::new(CommandActuator::new(cli.healing_command.clone())),
        relay,
        ca: ca_rx,
        replica: identity,
    })
}

/// The name replicas verify each other's certificate by: the first of `--tls-san`
/// (every replica's certificate holds them all).
fn relay_name(cli: &Cli) -> anyhow::Result<ServerName<'static>> {
    let first = cli
        .tls_names()
        .into_iter()
        .next()
        .context("--tls-san: needs a name, which replicas verify each other by")?;
    ServerName::try_from(first.clone()).map_err(|e| anyhow::anyhow!("--tls-san {first}: {e}"))
}
