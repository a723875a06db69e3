//! `braid-operator`: wires a source, the compiler, the config server, the status writer
//! and the admin port together, and shuts them down in order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::{ACCESS_QUEUE, AccessLoop, AccessView};
use crate::admin::{self, AdminState};
use crate::ca::Ca;
use crate::cli::{Cli, SourceArg};
use crate::compiler::{Compiler, Extra, Options};
use crate::healer::{Healer, HealingView, REPORT_QUEUE};
use crate::hub::{Hub, Published};
use crate::kube_mode::Started;
use crate::metrics::Metrics;
use crate::off_runtime::off_runtime;
use crate::registry::{Kind, ObjectKey, Snapshot, carry_accepted};
use crate::rollout::{EncryptionView, RolloutLoop, TRAFFIC_QUEUE};
use crate::sink::{Counted, StatusSink, StatusUpdate};
use crate::status::{ProxyState, Views, compute};
use crate::stream::server::{Signer, StreamState, router};
use crate::stream::tls::{serve, server_config};
use braid_crds::encryption_policy::EncryptionPhase;

/// Reports arriving within this window update statuses together.
const STATUS_DEBOUNCE: Duration = Duration::from_millis(200);
/// How soon a failed status write is tried again.
const STATUS_RETRY: Duration = Duration::from_secs(5);

/// Runs the operator until SIGTERM/SIGINT.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let hub = Arc::new(Hub::default());
    let stop = CancellationToken::new();
    let opts = Options {
        trust_domain: cli.trust_domain.clone(),
        cluster_domain: cli.cluster_domain.clone(),
        default_tls_mode: cli.default_tls_mode,
    };

    let listener = TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("--listen {}: cannot bind", cli.listen))?;
    let admin_listener = TcpListener::bind(cli.admin_addr)
        .await
        .with_context(|| format!("--admin-addr {}: cannot bind", cli.admin_addr))?;

    let (snapshots, snapshot_rx) = watch::channel(Arc::new(Snapshot::default()));
    let Started {
        auth,
        sink,
        leadership,
        source_task,
        leader_task,
        serving,
        actuator,
        relay,
        ca,
        replica,
    } = match &cli.source {
        SourceArg::Dir(path) => {
            let bound = listener
                .local_addr()
                .context("--listen: the bound address")?;
            crate::dir_mode::start(&cli, path, bound, snapshots, stop.clone())?
        }
        SourceArg::Kube => {
            crate::kube_mode::start(&cli, snapshots, metrics.clone(), stop.clone()).await?
        }
    };
    if let Some(out) = &cli.tls_trust_out {
        write_atomically(out, &serving.trust_pem)
            .with_context(|| format!("--tls-trust-out {}", out.display()))?;
    }
    let tls = server_config(serving.cert)?;
    // Every event the leader records is counted (healing actions, rollout steps).
    let sink: Arc<dyn StatusSink> = Arc::new(Counted::new(sink, metrics.clone()));

    tokio::spawn(compile_loop(
        snapshot_rx,
        ca.clone(),
        hub.clone(),
        metrics.clone(),
        opts.clone(),
        stop.clone(),
    ));
    let (reports, reports_rx) = mpsc::channel(REPORT_QUEUE);
    let (view, view_rx) = watch::channel(Arc::new(HealingView::new()));
    let (traffic_tx, traffic_rx) = mpsc::channel(TRAFFIC_QUEUE);
    let (encryption, encryption_rx) = watch::channel(Arc::new(EncryptionView::new()));
    let (access_tx, access_rx) = mpsc::channel(ACCESS_QUEUE);
    let (access, access_view_rx) = watch::channel(Arc::new(AccessView::new()));
    tokio::spawn(
        AccessLoop {
            reports: access_rx,
            hub: hub.clone(),
            sink: sink.clone(),
            leader: leadership.subscribe(),
            view: access,
        }
        .run(stop.clone()),
    );
    tokio::spawn(
        RolloutLoop {
            reports: traffic_rx,
            hub: hub.clone(),
            sink: sink.clone(),
            leader: leadership.subscribe(),
            view: encryption,
            trust_domain: cli.trust_domain.clone(),
        }
        .run(stop.clone()),
    );
    tokio::spawn(
        Healer {
            reports: reports_rx,
            published: hub.subscribe(),
            actuator,
            sink: sink.clone(),
            leader: leadership.subscribe(),
            view,
        }
        .run(stop.clone()),
    );
    tokio::spawn(status_loop(
        hub.clone(),
        (sink, metrics.clone()),
        ViewChanges {
            healing: view_rx,
            encryption: encryption_rx,
            access: access_view_rx,
        },
        leadership.subscribe(),
        opts.cluster_domain.clone(),
        stop.clone(),
    ));

    let tracker = TaskTracker::new();
    let serving = Arc::new(AtomicBool::new(false));
    let state = StreamState {
        hub: hub.clone(),
        auth,
        metrics: metrics.clone(),
        stop: stop.clone(),
        heartbeat: Duration::from_secs(cli.heartbeat_secs.max(1)),
        pod_wait: Duration::from_millis(cli.pod_wait_ms),
        healer: reports,
        traffic: traffic_tx,
        access: access_tx,
        leader: leadership.subscribe(),
        relay,
        signer: Signer {
            ca,
            trust_domain: cli.trust_domain.clone(),
            lifetime: Duration::from_secs(cli.proxy_cert_lifetime_secs),
        },
    };
    let server = tokio::spawn(serve(
        listener,
        tls,
        router(state),
        stop.clone(),
        tracker.clone(),
    ));
    serving.store(true, Ordering::Release);
    let admin_state = AdminState {
        hub: hub.clone(),
        metrics: metrics.clone(),
        serving: serving.clone(),
        replica,
        leader: leadership.subscribe(),
    };
    let admin_stop = CancellationToken::new();
    let admin_task = {
        let admin_stop = admin_stop.clone();
        tokio::spawn(async move {
            let app = admin::router(admin_state);
            if let Err(e) = axum::serve(admin_listener, app)
                .with_graceful_shutdown(admin_stop.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "admin server failed");
            }
        })
    };
    tracing::info!(listen = %cli.listen, admin = %cli.admin_addr, source = ?cli.source, "braid-operator running");

    let result = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        ended = source_task => match ended {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::Error::from(e)),
            Err(e) => Err(anyhow::anyhow!("the source task failed: {e}")),
        },
    };
    tracing::info!("shutting down: ending streams");
    serving.store(false, Ordering::Release);
    stop.cancel();
    let _ = server.await;
    tracker.close();
    if tokio::time::timeout(
        Duration::from_secs(cli.shutdown_timeout_secs),
        tracker.wait(),
    )
    .await
    .is_err()
    {
        tracing::warn!("connections still open at the shutdown deadline; closing them");
    }
    if let Some(task) = leader_task {
        // Releases the Lease, so another replica leads at once.
        let _ = task.await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    result
}

/// Compiles each new snapshot and publishes it. Sources gather a burst of changes into
/// one snapshot (the Kubernetes source's `--debounce-ms` window, one `--poll-ms` check of
/// the directory), so nothing here waits. This is the one place a resource's last valid
/// version is kept in force while its latest edit is invalid: the snapshot compiled
/// before is what proxies were given.
async fn compile_loop(
    mut rx: watch::Receiver<Arc<Snapshot>>,
    mut ca: watch::Receiver<Arc<Ca>>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    opts: Options,
    stop: CancellationToken,
) {
    let mut compiler = Compiler::new(opts);
    let mut prev = Arc::new(Snapshot::default());
    // Nothing is compiled before the source's first snapshot: proxies must never get
    // the empty mesh of the initial value.
    let mut first_seen = false;
    // A closed channel never changes again (directory mode's CA is fixed at start).
    let mut ca_open = true;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = rx.changed() => match changed {
                Ok(()) => first_seen = true,
                Err(_) => return,
            },
            changed = ca.changed(), if ca_open => ca_open = changed.is_ok(),
        }
        if !first_seen {
            continue;
        }
        let source = rx.borrow_and_update().clone();
        let extra = Extra {
            trust_bundle: ca.borrow_and_update().trust_bundle().pem().into(),
        };
        let started = Instant::now();
        // Copying a snapshot of 50,000 workloads, and dropping the one before, take
        // milliseconds too: not on the workers that answer health checks either.
        let (snapshot, out) = off_runtime(|| {
            let mut snapshot = Snapshot::clone(&source);
            drop(source);
            carry_accepted(&prev, &mut snapshot);
            let out = compiler.compile_with(&snapshot, &extra);
            (snapshot, out)
        });
        // From when the source noticed the change (a new CA: now).
        let seen_at = snapshot.noticed.0.unwrap_or_else(Instant::now);
        let took = started.elapsed();
        metrics.compile_seconds.observe(took.as_secs_f64());
        tracing::info!(
            workloads = out.configs.len(),
            services = snapshot.services.len(),
            compiled_services = out.stats.services_compiled,
            compiled_workloads = out.stats.workloads_compiled,
            took_ms = took.as_secs_f64() * 1e3,
            "compiled"
        );
        let snapshot = Arc::new(snapshot);
        let before = std::mem::replace(&mut prev, snapshot.clone());
        hub.retain_applied(&out.configs);
        let replaced = hub.publish(Published {
            snapshot,
            configs: out.configs,
            catalog: out.catalog,
            seen_at,
        });
        off_runtime(move || drop((before, replaced)));
    }
}

/// What the operator's own loops publish for status.
struct ViewChanges {
    healing: watch::Receiver<Arc<HealingView>>,
    encryption: watch::Receiver<Arc<EncryptionView>>,
    access: watch::Receiver<Arc<AccessView>>,
}

/// Keeps every resource's status current while this replica leads.
async fn status_loop(
    hub: Arc<Hub>,
    (sink, metrics): (Arc<dyn StatusSink>, Arc<Metrics>),
    views: ViewChanges,
    mut leader: watch::Receiver<bool>,
    cluster_domain: String,
    stop: CancellationToken,
) {
    let ViewChanges {
        mut healing,
        mut encryption,
        mut access,
    } = views;
    let mut written: BTreeMap<(Kind, ObjectKey), StatusUpdate> = BTreeMap::new();
    let mut published = hub.subscribe();
    let mut applied = hub.applied_changes();
    let mut leader_fixed = false;
    let mut retry = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            // A write failed last time: try again even if nothing else happens.
            _ = tokio::time::sleep(STATUS_RETRY), if retry => {}
            r = published.changed() => if r.is_err() { return },
            r = applied.changed() => if r.is_err() { return },
            r = healing.changed() => if r.is_err() { return },
            r = encryption.changed() => if r.is_err() { return },
            r = access.changed() => if r.is_err() { return },
            // A closed channel means leadership never changes (directory mode).
            r = leader.changed(), if !leader_fixed => if r.is_err() { leader_fixed = true; },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(STATUS_DEBOUNCE) => {}
        }
        published.borrow_and_update();
        applied.borrow_and_update();
        let healing_now = healing.borrow_and_update().clone();
        let encryption_now = encryption.borrow_and_update().clone();
        let access_now = access.borrow_and_update().clone();
        if !*leader.borrow_and_update() {
            // A future leader writes everything afresh; so would we on regaining it.
            written.clear();
            // Only the leader's rollouts and healing move: a follower shows none.
            metrics.rollouts([]);
            metrics.unhealthy([]);
            continue;
        }
        metrics.rollouts(encryption_now.iter().map(|(key, state)| {
            let phase = match state.phase {
                EncryptionPhase::Plaintext => "Plaintext",
                EncryptionPhase::RollingOut => "RollingOut",
                EncryptionPhase::Encrypted => "Encrypted",
                EncryptionPhase::Strict => "Strict",
            };
            (
                key.namespace.as_str(),
                key.name.as_str(),
                phase,
                state.percent,
            )
        }));
        metrics.unhealthy(healing_now.iter().map(|(key, state)| {
            (
                key.namespace.as_str(),
                key.name.as_str(),
                state.unhealthy.len(),
            )
        }));
        let Some(current) = hub.current() else {
            continue;
        };
        let reported = hub.applied();
        let held = hub.held();
        let proxies = ProxyState {
            configs: &current.configs,
            catalog: &current.catalog,
            applied: &reported,
            held: &held,
            cluster_domain: &cluster_domain,
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        let views = Views {
            healing: &healing_now,
            encryption: &encryption_now,
            access: &access_now,
        };
        let computed = off_runtime(|| compute(&current.snapshot, proxies, views, &written, &now));
        retry = false;
        for event in &computed.events {
            if let Err(e) = sink.event(event).await {
                tracing::warn!(error = %e, "event not recorded");
            }
        }
        for (id, update) in &computed.statuses {
            if written.get(id) == Some(update) {
                continue;
            }
            match sink.apply(update).await {
                Ok(()) => {
                    written.insert(id.clone(), update.clone());
                }
                Err(e) => {
                    retry = true;
                    tracing::warn!(error = %e, "status not written; retrying");
                }
            }
        }
        let gone: Vec<_> = written
            .keys()
            .filter(|id| !computed.statuses.contains_key(*id) && !computed.kept.contains(*id))
            .cloned()
            .collect();
        for (kind, key) in gone {
            sink.forget(kind, &key).await;
            written.remove(&(kind, key));
        }
    }
}

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
