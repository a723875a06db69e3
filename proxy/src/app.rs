//! `braid-proxy run`: wires config, listeners, admin and draining together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState, SetLogLevel};
use crate::cli::RunArgs;
use crate::config::Side;
use crate::connection::{self, Begun, Context, SideParts};
use crate::control::protocol::PodRef;
use crate::control::{ClientSettings, OperatorClient};
use crate::discovery::Discovery;
use crate::handover::{self, HandOff, Listeners, Offered, Registration, Role};
use crate::http::{InboundShared, Mirrors, OutboundSide, Pool};
use crate::identity::{self, IdentityStore};
use crate::limits::ConnectionCap;
use crate::metrics::Metrics;
use crate::metrics::limits::Limit;
use crate::overload::Protector;
use crate::reports::{EjectionLog, TrafficLog};
use crate::tables::{FileSource, ListenerPlan, TableStore, Tables};
use crate::telemetry::Telemetry;
use crate::tls::TlsContext;

/// Runs the proxy until SIGTERM/SIGINT, then drains.
pub async fn run(args: RunArgs, set_log_level: SetLogLevel) -> anyhow::Result<()> {
    let source = Source::from_args(&args)?;
    // Before anything binds: a proxy running at the handover socket hands its listeners
    // over rather than have this one fail to bind them.
    let start = match &args.handover_socket {
        Some(path) => handover::start(path).await?,
        None => handover::Start::alone(),
    };
    let listeners = start.listeners.clone();
    // The capture listeners' registrations, and the admin and health ones: the first close
    // as the proxy drains, the second at its end (metrics and `/ready` saying "draining"
    // stay up meanwhile), unless a successor serves them.
    let mut registered: Vec<Registration> = Vec::new();
    let mut admin_registered: Vec<Registration> = Vec::new();
    let metrics = Arc::new(Metrics::for_workload(
        args.workload.as_deref(),
        args.pod_namespace.as_deref(),
    ));
    let (changed_tx, changed_rx) = tokio::sync::watch::channel(());
    let m = metrics.clone();
    let overload = Arc::new(Protector::new(args.cgroup_dir.clone()));
    let ejection_log = Arc::new(EjectionLog::default());
    let traffic_log = Arc::new(TrafficLog::default());
    let o = overload.clone();
    let identity_store = Arc::new(IdentityStore::default());
    let tls = TlsContext::new(identity_store.clone(), metrics.tls.clone());
    let t = tls.clone();
    let config = Arc::new(TableStore::new(move |tables: &Tables| {
        m.config.applied(&tables.config.version);
        o.configure(tables.config.inbound.overload_protection.as_ref());
        t.set_trust_bundle(&tables.config.trust_bundle);
        let _ = changed_tx.send(());
    })?);
    let stop_accepting = CancellationToken::new();
    let drain = CancellationToken::new();
    let tracker = TaskTracker::new();
    let draining = Arc::new(AtomicBool::new(false));
    let listeners_bound = Arc::new(AtomicBool::new(false));
    let stop_admin = CancellationToken::new();
    if let (Some(cert), Some(key)) = (&args.identity_cert, &args.identity_key) {
        let certified = identity::Certified::from_files(cert, key)
            .map_err(|e| anyhow::anyhow!("--identity-cert/--identity-key: {e}"))?;
        tracing::info!(identity = %certified.identity, "mesh identity from files");
        metrics.identity.expiry(certified.not_after);
        identity_store.install(certified);
    } else if let Some(certified) = start.identity {
        tracing::info!(identity = %certified.identity, "mesh identity handed over");
        metrics.identity.expiry(certified.not_after);
        identity_store.install(certified);
    }
    if let Some(handed) = start.config {
        // Served with at once; the config source's own comes after it.
        config
            .apply(handed)
            .context("applying the config handed over")?;
        // Its endpoints as the predecessor knew them: none ejected there is sent to here.
        config.with_tables(|t| t.resume_balancing(&start.endpoints, Instant::now()));
    }

    let mut discovery = None;
    match source {
        Source::File(path) => {
            let file = FileSource::new(path, Duration::from_millis(args.config_poll_ms));
            let initial = file
                .load_initial(&config)
                .context("loading the initial config")?;
            tokio::spawn(file.watch(config.clone(), initial, stop_admin.clone()));
        }
        Source::Operator(settings) => {
            let ca = settings.ca_file.display().to_string();
            let on_demand = settings.on_demand;
            // One client streams the config and has the certificate signed.
            let client = Arc::new(
                OperatorClient::new(settings, config.clone())
                    .with_context(|| format!("--operator-ca {ca}"))?
                    .with_ejections(ejection_log.clone())
                    .with_traffic(traffic_log.clone())
                    .with_identity(identity_store.clone()),
            );
            if on_demand {
                let found = Arc::new(Discovery::new(
                    client.clone(),
                    config.clone(),
                    metrics.discovery.clone(),
                ));
                tokio::spawn(
                    found
                        .clone()
                        .forget_idle_every(args.services_idle, stop_admin.clone()),
                );
                discovery = Some(found);
            }
            // Not awaited: the proxy serves (and reports not ready) until the first
            // config arrives, however long the operator takes.
            tokio::spawn(client.clone().run(stop_admin.clone()));
            // Its certificate, for mutual TLS, renewed at half-life.
            let runs_as = args
                .pod_namespace
                .clone()
                .map(|namespace| identity::RunsAs {
                    namespace,
                    service_account: args.service_account.clone(),
                });
            tokio::spawn(identity::renew(
                client,
                runs_as,
                identity_store.clone(),
                metrics.identity.clone(),
                stop_admin.clone(),
            ));
        }
    }

    let shutdown_requested = CancellationToken::new();
    let state = AdminState {
        config: config.clone(),
        metrics: metrics.clone(),
        draining: draining.clone(),
        listeners_bound: listeners_bound.clone(),
        set_log_level,
        shutdown: shutdown_requested.clone(),
        tls: tls.clone(),
    };
    // Stops with the proxy, or as soon as a successor serves the same sockets.
    let stop_admin_listeners = stop_admin.child_token();
    let (admin_listener, r) = listeners
        .bind(Role::Admin, args.admin_addr)
        .with_context(|| format!("--admin-addr {}", args.admin_addr))?;
    admin_registered.push(r);
    tokio::spawn(admin::serve(
        admin_listener,
        admin::admin_router(state.clone()),
        stop_admin_listeners.clone(),
    ));
    let (health_listener, r) = listeners
        .bind(Role::Health, args.health_addr)
        .with_context(|| format!("--health-addr {}", args.health_addr))?;
    admin_registered.push(r);
    tokio::spawn(admin::serve(
        health_listener,
        admin::health_router(
            state,
            admin::app_probes::parse(&args.app_probes).map_err(|e| anyhow::anyhow!(e))?,
        ),
        stop_admin_listeners.clone(),
    ));

    let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    let limits = args.limits();
    let outbound_pool = Pool::new(
        connect_timeout,
        None,
        Some(tls.clone()),
        limits.upstream_idle,
    );
    // The inbound side talks plaintext to the app on loopback.
    let inbound_pool = Pool::new(
        connect_timeout,
        usable_source(args.inbound_source),
        None,
        limits.upstream_idle,
    );
    for pool in [&outbound_pool, &inbound_pool] {
        tokio::spawn(sweep_pool(pool.clone(), stop_admin.clone()));
    }
    let telemetry = Arc::new(
        Telemetry::start(args.telemetry(), metrics.telemetry.clone())
            .context("starting the access log")?,
    );
    let telemetry_at_exit = telemetry.clone();
    let hand_off = HandOff::default();
    let outbound_ctx = Context {
        config: config.clone(),
        mirrors: Mirrors::new(outbound_pool.clone()),
        pool: outbound_pool,
        metrics: metrics.clone(),
        side: SideParts::Outbound(OutboundSide {
            ejections: ejection_log.clone(),
        }),
        drain: drain.clone(),
        tls: tls.clone(),
        limits,
        discovery,
        telemetry,
        hand_off: hand_off.clone(),
    };
    tokio::spawn(
        overload
            .clone()
            .run(metrics.overload.clone(), stop_admin.clone()),
    );
    let inbound_ctx = Context {
        mirrors: Mirrors::new(inbound_pool.clone()),
        pool: inbound_pool,
        side: SideParts::Inbound(InboundShared {
            overload,
            traffic: traffic_log.clone(),
        }),
        discovery: None,
        ..outbound_ctx.clone()
    };

    if !args.no_capture {
        for (l, r) in capture_listeners(&listeners, Role::Outbound, args.outbound_addr)? {
            registered.push(r);
            spawn_accept(
                l,
                outbound_ctx.clone(),
                &tracker,
                &stop_accepting,
                |s, c| connection::outbound(s, Begun::default(), c),
            );
        }
        for (l, r) in capture_listeners(&listeners, Role::Inbound, args.inbound_addr)? {
            registered.push(r);
            spawn_accept(l, inbound_ctx.clone(), &tracker, &stop_accepting, |s, c| {
                connection::inbound(s, Begun::default(), c)
            });
        }
    }
    tokio::spawn(prune_pool(
        config.clone(),
        changed_rx.clone(),
        outbound_ctx.pool.clone(),
    ));
    tokio::spawn(explicit_listeners(
        config.clone(),
        changed_rx,
        [outbound_ctx.clone(), inbound_ctx.clone()],
        tracker.clone(),
        stop_accepting.clone(),
        listeners_bound.clone(),
        listeners.clone(),
    ));
    // With --no-capture neither capture port is open: say so, not where they would be.
    let capture = match args.no_capture {
        true => "off (--no-capture)".to_owned(),
        false => format!(
            "outbound {} inbound {}",
            args.outbound_addr, args.inbound_addr
        ),
    };
    tracing::info!(admin = %args.admin_addr, %capture, "braid-proxy running");
    // Start-up's code (flags, config, TLS set-up) is done with: let its pages go, so
    // idle RSS is the code and constants the proxy uses (see `memory`). After a moment, so the first
    // config and the listeners it binds are in place.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Off the workers: it reads /proc/self/smaps, a few hundred lines of file I/O.
        match tokio::task::spawn_blocking(crate::memory::release_startup_pages).await {
            Ok(Ok(bytes)) => tracing::debug!(bytes, "released start-up pages"),
            Ok(Err(e)) => tracing::debug!(error = %e, "could not release start-up pages"),
            Err(e) => tracing::debug!(error = %e, "could not release start-up pages"),
        }
    });

    if let Some(predecessor) = start.predecessor {
        let ready = Ready {
            config: config.clone(),
            tls: tls.clone(),
            listeners_bound: listeners_bound.clone(),
        };
        ready.wait(TAKEOVER_READY).await?;
        for entry in listeners.close_unclaimed() {
            tracing::info!(role = ?entry.role, addr = %entry.addr, "closed a listener handed over that this proxy does not have");
        }
        // Told before anything else: a predecessor that cannot hear it keeps serving, and
        // then this proxy must not (two proxies would serve and offer on one socket).
        let mut predecessor = predecessor;
        predecessor
            .say_ready()
            .await
            .context("taking over: telling the running proxy this one is ready")?;
        let contexts = [outbound_ctx.clone(), inbound_ctx.clone()];
        let handed = tracker.clone();
        // On the tracker: a drain here waits for what the predecessor still hands over.
        tracker.spawn(async move {
            let served = predecessor.receive(|received| serve_handed(received, &contexts, &handed));
            if let Err(e) = served.await {
                tracing::warn!(error = %e, "the predecessor's handover ended early");
            }
        });
    }
    let mut successor = match start.offer_on {
        Some(unix) => {
            let offered = Offered {
                listeners: listeners.clone(),
                config: config.clone(),
                identity: identity_store.clone(),
            };
            tokio::spawn(handover::offer(unix, offered, stop_accepting.clone()))
        }
        None => tokio::spawn(std::future::pending()),
    };

    let handed_to = tokio::select! {
        _ = shutdown_signal() => None,
        _ = shutdown_requested.cancelled() => None,
        // Anything else (the offer loop ended without a successor) changes nothing.
        Ok(Some(successor)) = &mut successor => Some(successor),
    };
    let forwarding = match handed_to {
        Some(successor) => {
            tracing::info!(
                successor = successor.pid,
                timeout_secs = args.drain_timeout_secs,
                "handing over: no new connections, finishing in-flight work"
            );
            // The successor answers the probes and the admin port from now on.
            stop_admin_listeners.cancel();
            admin_registered.clear();
            // Every connection from now on hands itself over when it comes free.
            Some(successor.forward(&hand_off))
        }
        None => {
            tracing::info!(
                timeout_secs = args.drain_timeout_secs,
                "draining: no new connections, finishing in-flight work"
            );
            None
        }
    };
    draining.store(true, Ordering::Release);
    stop_accepting.cancel();
    // This process's copies of the listening sockets go now: with no successor they close
    // (new callers are refused at once, not left in the backlog for the drain); a
    // successor holds its own.
    drop(registered);
    drain.cancel();
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(args.drain_timeout_secs), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain deadline passed with connections still open; closing them");
    }
    hand_off.close();
    if let Some(task) = forwarding
        && tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
    {
        tracing::warn!("the successor took no more connections; closing the rest");
    }
    // The drained requests' log lines and spans, before the process ends.
    telemetry_at_exit.flush(Duration::from_secs(2)).await;
    stop_admin.cancel();
    drop(admin_registered);
    Ok(())
}

/// Where the config comes from.
enum Source {
    /// A file, watched.
    File(PathBuf),
    /// The operator's stream.
    Operator(ClientSettings),
}

impl Source {
    /// Exactly one of `--config` and `--operator` (clap enforces it too; this guards
    /// callers that build `RunArgs` themselves).
    fn from_args(args: &RunArgs) -> anyhow::Result<Self> {
        match (&args.config, &args.operator) {
            (Some(path), None) => Ok(Self::File(path.clone())),
            (None, Some(url)) => {
                let missing = |flag: &str| anyhow::anyhow!("--operator needs {flag}");
                let ca_file = args
                    .operator_ca
                    .clone()
                    .ok_or_else(|| missing("--operator-ca"))?;
                let name = args
                    .pod_name
                    .as_deref()
                    .ok_or_else(|| missing("--pod-name"))?;
                let namespace = args
                    .pod_namespace
                    .as_deref()
                    .ok_or_else(|| missing("--pod-namespace"))?;
                let pod: PodRef = format!("{namespace}/{name}")
                    .parse()
                    .context("--pod-namespace/--pod-name")?;
                Ok(Self::Operator(ClientSettings {
                    url: url.clone(),
                    ca_file,
                    token_file: args.token_file.clone(),
                    pod,
                    on_demand: args.services == crate::cli::Services::OnDemand,
                }))
            }
            (Some(_), Some(_)) => anyhow::bail!("--config and --operator exclude each other"),
            (None, None) => anyhow::bail!("one of --config FILE and --operator URL is required"),
        }
    }
}

/// Binds a capture listener on `addr` and, when `addr` is the IPv4 wildcard and the host
/// has IPv6, on the IPv6 wildcard too; only the IPv6 bind may fail (with a warning).
fn capture_listeners(
    listeners: &Arc<Listeners>,
    role: Role,
    addr: SocketAddr,
) -> anyhow::Result<Vec<(TcpListener, Registration)>> {
    let flag = match role {
        Role::Inbound => "--inbound-addr",
        _ => "--outbound-addr",
    };
    let mut bound = Vec::new();
    for a in dual_stack(addr) {
        match listeners.bind(role.clone(), a) {
            Ok(l) => bound.push(l),
            Err(e) if a != addr => {
                tracing::warn!(addr = %a, error = %e, "no IPv6 capture on {flag}")
            }
            Err(e) => return Err(e).with_context(|| format!("{flag} {a}")),
        }
    }
    Ok(bound)
}

/// How long a proxy taking over may take to be ready (config applied, certificate held
/// where the config needs one, explicit listeners bound) before it gives up; the proxy it
/// takes over from keeps serving meanwhile, and after.
const TAKEOVER_READY: Duration = Duration::from_secs(60);

/// What a proxy taking over waits for before its predecessor stops accepting.
struct Ready {
    config: Arc<TableStore>,
    tls: Arc<TlsContext>,
    listeners_bound: Arc<AtomicBool>,
}

impl Ready {
    fn now(&self) -> bool {
        self.config.is_loaded()
            && self.listeners_bound.load(Ordering::Acquire)
            && (!self.config.tables().needs_certificate || self.tls.has_certificate())
    }

    async fn wait(&self, within: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while !self.now() {
            if started.elapsed() > within {
                anyhow::bail!(
                    "taking over: not ready within {} s (config applied: {}, listeners bound: {}); the running proxy keeps serving",
                    within.as_secs(),
                    self.config.is_loaded(),
                    self.listeners_bound.load(Ordering::Acquire)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

/// Serves a connection the predecessor handed over as its listener would have.
fn serve_handed(
    received: handover::Received,
    [outbound, inbound]: &[Context; 2],
    tracker: &TaskTracker,
) {
    let (role, spoken, stream, read) = match received {
        handover::Received::Connection {
            role,
            spoken,
            stream,
            read,
        } => (role, spoken, stream, read),
        handover::Received::Tunnel {
            role,
            client,
            upstream,
            to_upstream,
            to_client,
        } => {
            let ctx = match &role {
                Role::Inbound
                | Role::Explicit {
                    side: Side::Inbound,
                    ..
                } => inbound.clone(),
                _ => outbound.clone(),
            };
            let resumed =
                connection::resume_tunnel(client, upstream, to_upstream, to_client, role, ctx);
            tracker.spawn(resumed);
            return;
        }
    };
    crate::listen::nodelay(&stream);
    let begun = Begun {
        read,
        detected: Some(match spoken {
            handover::Spoken::Http1 => crate::detect::Detected::Http1,
        }),
    };
    match role {
        Role::Outbound => {
            tracker.spawn(connection::outbound(stream, begun, outbound.clone()));
        }
        Role::Inbound => {
            tracker.spawn(connection::inbound(stream, begun, inbound.clone()));
        }
        Role::Explicit { name, side } => {
            let ctx = match side {
                Side::Outbound => outbound.clone(),
                Side::Inbound => inbound.clone(),
            };
            tracker.spawn(connection::explicit(stream, begun, name, ctx));
        }
        // Admin and health connections are never handed over.
        Role::Admin | Role::Health => {}
    }
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

/// Closes pooled upstream connections idle too long, about twice per idle timeout.
async fn sweep_pool(pool: Arc<Pool>, stop: CancellationToken) {
    let every = (pool.upstream_idle() / 2).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => pool.sweep(),
        }
    }
}

/// Accepts on `listener` until `stop` fires, handing each connection to `handle` on the
/// tracker (so draining waits for it). At the listener's connection cap it stops
/// accepting until a connection closes (new ones wait in the backlog; it says so in the
/// log and the metrics). An accept error (e.g. out of file descriptors) is logged and
/// retried after a pause rather than spun on.
fn spawn_accept<F, Fut>(
    listener: TcpListener,
    ctx: Context,
    tracker: &TaskTracker,
    stop: &CancellationToken,
    handle: F,
) -> tokio::task::JoinHandle<()>
where
    F: Fn(tokio::net::TcpStream, Context) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tracker = tracker.clone();
    let stop = stop.clone();
    let cap = ConnectionCap::new(ctx.limits.max_connections);
    let local = listener.local_addr().ok();
    tokio::spawn(async move {
        loop {
            let permit = match cap.try_acquire() {
                Some(permit) => permit,
                None => {
                    ctx.metrics
                        .limits
                        .reached(ctx.direction(), Limit::max_connections);
                    tracing::warn!(
                        listener = ?local, max = cap.max(),
                        "at the connection cap (--max-connections): new connections wait until one closes"
                    );
                    let waited = Instant::now();
                    let permit = tokio::select! {
                        _ = stop.cancelled() => return,
                        p = cap.acquire() => p,
                    };
                    tracing::info!(listener = ?local, waited_ms = waited.elapsed().as_millis() as u64, "accepting again");
                    permit
                }
            };
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _peer)) => {
                    crate::listen::nodelay(&stream);
                    // Boxed: awaited from inside the async block, an unboxed future would
                    // take its room twice in the task (once captured, once awaited).
                    let conn = Box::pin(handle(stream, ctx.clone()));
                    tracker.spawn(async move {
                        conn.await;
                        drop(permit);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

/// After each config change, closes pooled connections to endpoints that are gone, and
/// retires those of a kind (plaintext or mTLS) the config no longer uses.
async fn prune_pool(
    config: Arc<TableStore>,
    mut changed: tokio::sync::watch::Receiver<()>,
    pool: Arc<Pool>,
) {
    while changed.changed().await.is_ok() {
        let live = config.tables().upstreams.clone();
        pool.retain_endpoints(live);
    }
}

/// A running explicit listener.
struct Running {
    name: Arc<str>,
    side: Side,
    bind: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    /// Keeps it offered to a successor while it runs.
    _registration: Registration,
}

/// Keeps the config's explicit listeners running: started when they appear, stopped when
/// they go (the old socket is closed before a new one binds, so a listener can move or be
/// renamed), and binds that failed are retried every second. Requests follow the config
/// in force, so a target change needs no rebind.
async fn explicit_listeners(
    config: Arc<TableStore>,
    mut changed: tokio::sync::watch::Receiver<()>,
    [outbound, inbound]: [Context; 2],
    tracker: TaskTracker,
    stop: CancellationToken,
    bound: Arc<AtomicBool>,
    listeners: Arc<Listeners>,
) {
    let mut running: Vec<Running> = Vec::new();
    loop {
        let plans: Vec<ListenerPlan> = config.tables().listeners.clone();
        let (keep, gone): (Vec<Running>, Vec<Running>) = running.into_iter().partition(|r| {
            plans
                .iter()
                .any(|p| *p.name == *r.name && p.bind == r.bind && p.side == r.side)
        });
        running = keep;
        for r in gone {
            r.stop.cancel();
            let _ = r.task.await;
        }
        let mut failed = false;
        for plan in plans {
            if running
                .iter()
                .any(|r| *r.name == *plan.name && r.bind == plan.bind && r.side == plan.side)
            {
                continue;
            }
            let role = Role::Explicit {
                name: plan.name.as_str().into(),
                side: plan.side,
            };
            match listeners.bind(role, plan.bind) {
                Ok((listener, registration)) => {
                    let name: Arc<str> = plan.name.as_str().into();
                    let token = stop.child_token();
                    let handler_name = name.clone();
                    let ctx = match plan.side {
                        Side::Outbound => outbound.clone(),
                        Side::Inbound => inbound.clone(),
                    };
                    let task = spawn_accept(listener, ctx, &tracker, &token, move |s, c| {
                        connection::explicit(s, Begun::default(), handler_name.clone(), c)
                    });
                    running.push(Running {
                        name,
                        side: plan.side,
                        bind: plan.bind,
                        stop: token,
                        task,
                        _registration: registration,
                    });
                }
                Err(e) => {
                    failed = true;
                    tracing::error!(listener = %plan.name, bind = %plan.bind, error = %e, "cannot bind listener; retrying");
                }
            }
        }
        bound.store(!failed, Ordering::Release);
        tokio::select! {
            _ = stop.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_secs(1)), if failed => {}
        }
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
