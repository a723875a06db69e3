//! On-demand discovery: a proxy streaming from the operator holds only the services its
//! app calls. The first connection to an address its config does not know waits while
//! the operator is asked which service that is (once per address, shared by the
//! connections that arrive meanwhile); the operator's stream then sends the service,
//! and the connection is routed as to any known service. An address no mesh service
//! has is remembered for [`UNKNOWN_FOR`] and passes through unchanged, as without the
//! mesh. When the operator cannot be asked (no stream, no answer within
//! [`WAIT`]), the connection passes through too: what the proxy holds keeps working
//! and what it does not know goes where the app sent it.
//!
//! A service the app has had no connection open to for a while (`--services-idle`, an
//! hour by default) is let go of ([`Discovery::forget_idle`]), so the proxy's memory
//! follows what its app calls now rather than everything it ever called.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use braid_api::control::delta::ServiceRef;
use tokio::time::Instant;

use crate::metrics::discovery::{DiscoveryMetrics, Outcome};
use crate::tables::{TableStore, Tables};

/// The longest a first connection waits for its service.
pub const WAIT: Duration = Duration::from_secs(2);
/// How long an address no mesh service has is not asked about again.
pub const UNKNOWN_FOR: Duration = Duration::from_secs(30);
/// How long after a failed ask the address is not asked about again (each failure is
/// logged, so at most this often per address).
pub const FAILED_FOR: Duration = Duration::from_secs(5);

/// Why asking failed.
pub type AskError = Box<dyn std::error::Error + Send + Sync>;

/// An answer being worked out.
pub type Asking<'a> =
    Pin<Box<dyn Future<Output = Result<Option<ServiceRef>, AskError>> + Send + 'a>>;

/// Letting go of services being told.
pub type Forgetting<'a> = Pin<Box<dyn Future<Output = Result<(), AskError>> + Send + 'a>>;

/// Who knows which service has an address: the operator.
pub trait Ask: Send + Sync {
    /// The service behind `address` (now on its way to the proxy's config), or `None`.
    fn ask(&self, address: IpAddr) -> Asking<'_>;

    /// Stop sending `services` (their removal is then on its way to the config).
    fn forget(&self, services: Vec<ServiceRef>) -> Forgetting<'_>;
}

/// Finds the services of addresses the config does not know.
pub struct Discovery {
    ask: Arc<dyn Ask>,
    store: Arc<TableStore>,
    metrics: DiscoveryMetrics,
    /// Addresses not to ask about again before the instant.
    not_before: Mutex<HashMap<IpAddr, Instant>>,
    /// One ask per address at a time: later connections wait for its outcome.
    asking: Mutex<HashMap<IpAddr, Arc<tokio::sync::Mutex<()>>>>,
    /// How the app uses each address of a service held: connections open to it now,
    /// and when the last one opened or closed.
    last_used: Mutex<HashMap<IpAddr, Use>>,
    /// When each service held was first seen held (or last forgotten in vain: one its
    /// workload's scope names stays): idle that long when never called.
    held_since: Mutex<HashMap<ServiceRef, Instant>>,
}

impl Discovery {
    /// Asks `ask`, waiting for answers to reach `store`.
    pub fn new(ask: Arc<dyn Ask>, store: Arc<TableStore>, metrics: DiscoveryMetrics) -> Self {
        Self {
            ask,
            store,
            metrics,
            not_before: Mutex::new(HashMap::new()),
            asking: Mutex::new(HashMap::new()),
            last_used: Mutex::new(HashMap::new()),
            held_since: Mutex::new(HashMap::new()),
        }
    }

    /// Notes that the app connected to `ip`, an address of a service held; the service is
    /// in use until the returned guard (held for the connection's life) is dropped, so a
    /// long-lived connection (gRPC, a kept-alive pool) never has its service let go of.
    pub fn used(self: &Arc<Self>, ip: IpAddr) -> InUse {
        let now = Instant::now();
        let mut all = lock(&self.last_used);
        let entry = all.entry(ip).or_insert(Use { open: 0, last: now });
        entry.open += 1;
        entry.last = now;
        InUse {
            discovery: self.clone(),
            ip,
        }
    }

    /// Has the operator stop sending the services the app has had no connection open
    /// to for `idle`; how many were let go of.
    pub async fn forget_idle(&self, idle: Duration) -> usize {
        let now = Instant::now();
        let held: Vec<(ServiceRef, Vec<IpAddr>)> = self.store.with_tables(|t| {
            t.config
                .services
                .iter()
                .map(|s| (ServiceRef::of(s), s.vips.clone()))
                .collect()
        });
        let idle_ones: Vec<ServiceRef> = {
            let mut last_used = lock(&self.last_used);
            let mut since = lock(&self.held_since);
            // Bounded by what is held.
            since.retain(|name, _| held.iter().any(|(n, _)| n == name));
            last_used.retain(|ip, u| u.open > 0 || held.iter().any(|(_, vips)| vips.contains(ip)));
            held.iter()
                .filter(|(name, vips)| {
                    let first = *since.entry(name.clone()).or_insert(now);
                    let uses = || vips.iter().filter_map(|ip| last_used.get(ip));
                    let last = uses().map(|u| u.last).fold(first, Instant::max);
                    uses().all(|u| u.open == 0) && now.saturating_duration_since(last) >= idle
                })
                .map(|(name, _)| name.clone())
                .collect()
        };
        if idle_ones.is_empty() {
            return 0;
        }
        let count = idle_ones.len();
        match self.ask.forget(idle_ones.clone()).await {
            Ok(()) => {
                tracing::info!(
                    services = count,
                    "let go of services the app has not called for {idle:?}"
                );
                // One the operator keeps sending (its workload's scope names it) is not
                // asked about again for as long.
                let mut since = lock(&self.held_since);
                for name in idle_ones {
                    since.insert(name, now);
                }
                count
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot let go of services not called; trying again later");
                0
            }
        }
    }

    /// Lets go of services idle for `idle`, checking a few times per `idle`, until `stop`.
    pub async fn forget_idle_every(
        self: Arc<Self>,
        idle: Duration,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let every = (idle / 4).clamp(Duration::from_millis(250), Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.forget_idle(idle).await;
        }
    }

    /// Whether the config now knows `dst`'s address, after asking the operator when it
    /// did not (at most [`WAIT`]); `false`: pass the connection through.
    pub async fn resolve(&self, dst: SocketAddr) -> bool {
        let ip = dst.ip();
        if self.known(ip) {
            return true;
        }
        if self.resting(ip) {
            return false;
        }
        let gate = self
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ip)
            .or_default()
            .clone();
        let outcome = {
            let _turn = gate.lock().await;
            // Another connection's ask may have settled it meanwhile.
            if self.known(ip) {
                return true;
            }
            if self.resting(ip) {
                return false;
            }
            self.ask_and_wait(ip).await
        };
        {
            let mut asking = self.asking.lock().unwrap_or_else(|e| e.into_inner());
            if asking.get(&ip).is_some_and(|g| Arc::ptr_eq(g, &gate)) {
                asking.remove(&ip);
            }
        }
        outcome
    }

    async fn ask_and_wait(&self, ip: IpAddr) -> bool {
        let mut swaps = self.store.swaps();
        let asked = tokio::time::timeout(WAIT, async {
            let service = self.ask.ask(ip).await?;
            if service.is_some() {
                // The stream brings it: wait until the config holds the address.
                while !self.known(ip) {
                    if swaps.changed().await.is_err() {
                        break;
                    }
                }
            }
            Ok::<_, AskError>(service)
        })
        .await;
        match asked {
            Ok(Ok(Some(service))) => {
                self.metrics.discovered(Outcome::service);
                tracing::debug!(address = %ip, %service, "service discovered");
                self.known(ip)
            }
            Ok(Ok(None)) => {
                self.metrics.discovered(Outcome::unknown);
                tracing::debug!(address = %ip, "no mesh service has this address; passing through");
                self.rest(ip, UNKNOWN_FOR);
                false
            }
            Ok(Err(e)) => {
                self.failed(ip, &e.to_string());
                false
            }
            Err(_) => {
                self.failed(ip, "no answer in time");
                false
            }
        }
    }

    fn failed(&self, ip: IpAddr, why: &str) {
        self.metrics.discovered(Outcome::failed);
        tracing::warn!(address = %ip, error = why, "cannot find out which service this is; passing through unchanged");
        self.rest(ip, FAILED_FOR);
    }

    fn rest(&self, ip: IpAddr, for_: Duration) {
        let mut not_before = self.not_before.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Bounded by what is still resting.
        not_before.retain(|_, until| *until > now);
        not_before.insert(ip, now + for_);
    }

    fn resting(&self, ip: IpAddr) -> bool {
        self.not_before
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&ip)
            .is_some_and(|until| *until > Instant::now())
    }

    fn known(&self, ip: IpAddr) -> bool {
        self.store.with_tables(|t| knows(t, ip))
    }
}

/// The app's use of one address.
#[derive(Debug)]
struct Use {
    /// Connections open to it.
    open: usize,
    /// When one last opened or closed.
    last: Instant,
}

/// One connection the app has open to a service held (see [`Discovery::used`]).
pub struct InUse {
    discovery: Arc<Discovery>,
    ip: IpAddr,
}

impl Drop for InUse {
    fn drop(&mut self) {
        if let Some(u) = lock(&self.discovery.last_used).get_mut(&self.ip) {
            u.open = u.open.saturating_sub(1);
            u.last = Instant::now();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether a service in `tables` has virtual IP `ip` (a proxy on demand holds few).
fn knows(tables: &Tables, ip: IpAddr) -> bool {
    tables.config.services.iter().any(|s| s.vips.contains(&ip))
}

#[cfg(test)]
mod tests;
