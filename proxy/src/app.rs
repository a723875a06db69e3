//! `braid-proxy run`: wires config, listeners, admin and draining together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, SetLogLevel};
use crate::cli::RunArgs;
use crate::config::{ConfigSource, FileSource, ListenerPlan, Tables};
use crate::connection::{self, Context};
use crate::http::Pool;
use crate::listen::bind;
use crate::metrics::{Direction, Metrics};

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(args: RunArgs, set_log_level: SetLogLevel) -> anyhow::Result<()> {
    if args.operator.is_some() {
        anyhow::bail!(
            "--operator: the config stream from the operator is not implemented yet; use --config FILE"
        );
    }
    let Some(config_path) = args.config.clone() else {
        anyhow::bail!("--config FILE is required (the operator stream is not implemented yet)");
    };
    let metrics = Arc::new(Metrics::new());
    let (changed_tx, changed_rx) = tokio::sync::watch::channel(());
    let m = metrics.clone();
    let config = Arc::new(ConfigSource::new(move |t: &Tables| {
        m.config_applied(&t.config.version);
        let _ = changed_tx.send(());
    })?);
    let file = FileSource::new(config_path, Duration::from_millis(args.config_poll_ms));
    let initial = file
        .load_initial(&config)
        .context("loading the initial config")?;

    let stop_accepting = CancellationToken::new();
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    let draining = Arc::new(AtomicBool::new(false));
    let stop_admin = CancellationToken::new();

    tokio::spawn(file.watch(config.clone(), initial, stop_admin.clone()));

    let state = AdminState {
        config: config.clone(),
        metrics: metrics.clone(),
        draining: draining.clone(),
        set_log_level,
    };
    let admin_listener =
        bind(args.admin_addr).with_context(|| format!("--admin-addr {}", args.admin_addr))?;
    tokio::spawn(admin::serve(
        admin_listener,
        admin::admin_router(state.clone()),
        stop_admin.clone(),
    ));
    let health_listener =
        bind(args.health_addr).with_context(|| format!("--health-addr {}", args.health_addr))?;
    tokio::spawn(admin::serve(
        health_listener,
        admin::health_router(state),
        stop_admin.clone(),
    ));

    let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    let outbound_ctx = Context {
        config: config.clone(),
        pool: Pool::new(connect_timeout, None),
        metrics: metrics.clone(),
        direction: Direction::outbound,
        drain: drain.clone(),
    };
    let inbound_ctx = Context {
        pool: Pool::new(connect_timeout, usable_source(args.inbound_source)),
        direction: Direction::inbound,
        ..outbound_ctx.clone()
    };

    if !args.no_capture {
        for addr in dual_stack(args.outbound_addr) {
            match bind(addr) {
                Ok(l) => spawn_accept(
                    l,
                    outbound_ctx.clone(),
                    &tracker,
                    &stop_accepting,
                    |s, c| Box::pin(connection::outbound(s, c)),
                ),
                Err(e) if addr != args.outbound_addr => {
                    tracing::warn!(%addr, error = %e, "no IPv6 outbound capture")
                }
                Err(e) => return Err(e).with_context(|| format!("--outbound-addr {addr}")),
            }
        }
        for addr in dual_stack(args.inbound_addr) {
            match bind(addr) {
                Ok(l) => spawn_accept(l, inbound_ctx.clone(), &tracker, &stop_accepting, |s, c| {
                    Box::pin(connection::inbound(s, c))
                }),
                Err(e) if addr != args.inbound_addr => {
                    tracing::warn!(%addr, error = %e, "no IPv6 inbound capture")
                }
                Err(e) => return Err(e).with_context(|| format!("--inbound-addr {addr}")),
            }
        }
    }
    tokio::spawn(explicit_listeners(
        config.clone(),
        changed_rx,
        outbound_ctx.clone(),
        tracker.clone(),
        stop_accepting.clone(),
    ));
    tracing::info!(
        outbound = %args.outbound_addr, inbound = %args.inbound_addr, admin = %args.admin_addr,
        capture = !args.no_capture, "braid-proxy running"
    );

    shutdown_signal().await;
    tracing::info!(
        timeout_secs = args.drain_timeout_secs,
        "draining: no new connections, finishing in-flight work"
    );
    draining.store(true, Ordering::Release);
    stop_accepting.cancel();
    drain.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(args.drain_timeout_secs), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with connections still open; closing them");
    }
    stop_admin.cancel();
    Ok(())
}

/// `addr`, plus the IPv6 wildcard on the same port when `addr` is the IPv4 wildcard and
/// the host has IPv6: capture works for both families.
fn dual_stack(addr: SocketAddr) -> Vec<SocketAddr> {
    let mut addrs = vec![addr];
    if addr.ip() == std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
        && std::path::Path::new("/proc/net/if_inet6").exists()
    {
        addrs.push(SocketAddr::new(
            std::net::Ipv6Addr::UNSPECIFIED.into(),
            addr.port(),
        ));
    }
    addrs
}

/// The inbound source address if this host can bind it (127.0.0.6 is local on Linux).
fn usable_source(ip: std::net::IpAddr) -> Option<std::net::IpAddr> {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .ok()
        .map(|_| ip)
}

type Handler = fn(
    tokio::net::TcpStream,
    Context,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

fn spawn_accept(
    listener: TcpListener,
    ctx: Context,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    handle: Handler,
) {
    let tracker = tracker.clone();
    let stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(handle(stream, ctx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
}

/// Keeps the config's explicit listeners running: started when they appear, stopped
/// when they go; a listener's target follows the config in force.
async fn explicit_listeners(
    config: Arc<ConfigSource>,
    mut changed: tokio::sync::watch::Receiver<()>,
    ctx: Context,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    let mut running: Vec<(String, SocketAddr, CancellationToken)> = Vec::new();
    loop {
        let plans: Vec<ListenerPlan> = config.tables().listeners.clone();
        running.retain(|(name, bind, token)| {
            let keep = plans.iter().any(|p| &p.name == name && p.bind == *bind);
            if !keep {
                token.cancel();
            }
            keep
        });
        for plan in plans {
            if running
                .iter()
                .any(|(n, b, _)| *n == plan.name && *b == plan.bind)
            {
                continue;
            }
            match bind(plan.bind) {
                Ok(listener) => {
                    let token = stop.child_token();
                    running.push((plan.name.clone(), plan.bind, token.clone()));
                    tokio::spawn(accept_explicit(
                        listener,
                        plan.name,
                        config.clone(),
                        ctx.clone(),
                        tracker.clone(),
                        token,
                    ));
                }
                Err(e) => {
                    tracing::error!(listener = %plan.name, bind = %plan.bind, error = %e, "cannot bind listener")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
        }
    }
}

async fn accept_explicit(
    listener: TcpListener,
    name: String,
    config: Arc<ConfigSource>,
    ctx: Context,
    tracker: TaskTracker,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        // Route with the plan in force now, so target changes apply without a rebind.
        let Some(plan) = config
            .tables()
            .listeners
            .iter()
            .find(|p| p.name == name)
            .cloned()
        else {
            continue;
        };
        let ctx = ctx.clone();
        tracker.spawn(connection::explicit(
            stream,
            plan.protocol,
            plan.target,
            ctx,
        ));
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
