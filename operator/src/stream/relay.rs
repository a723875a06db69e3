//! Relaying proxies' reports to the leader. Every replica serves the config stream, so a
//! proxy reports to whichever replica it reached; only the leader heals, steps rollouts
//! and writes status, and `minReporters` and `applied` must count every proxy. A follower
//! therefore passes each report on to the leader as it came (the proxy's own token and pod header, so
//! the leader checks them as if the proxy had called it). The leader is found from the
//! election Lease: in a cluster from its holder's pod IP ([`KubeLocator`]), in directory
//! mode from the address its holder wrote into it ([`LeaseLocator`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, header};
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use braid_api::control::{POD_HEADER, PROXY_VERSION_HEADER, REPORT_PATH};

use futures::future::BoxFuture;

use crate::leader::{LEASE_NAME, LeaseStore, holder_address};

/// Marks a relayed report, so a replica that lost leadership meanwhile does not pass it
/// on again.
pub const RELAYED_HEADER: &str = "x-braid-relayed-by";

/// At most this many reports are relayed at once; more are dropped (a proxy reports
/// again when it ejects again).
pub const MAX_RELAYING: usize = 64;

/// How long the leader's address is reused before the Lease is read again.
const LEADER_TTL: Duration = Duration::from_secs(10);
/// Connecting, the handshake and the answer, together.
const RELAY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a report was not relayed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The Lease or the leader's pod could not be read, or names no one.
    #[error("finding the leader: {0}")]
    Leader(String),
    /// The leader could not be reached or refused the report.
    #[error("relaying to the leader at {addr}: {message}")]
    Send {
        /// The leader's address.
        addr: SocketAddr,
        /// What went wrong.
        message: String,
    },
}

/// Finds the leader's config server.
pub trait LeaderLocator: Send + Sync + 'static {
    /// Its address; `None` when this replica holds the Lease.
    fn locate(&self) -> BoxFuture<'_, Result<Option<SocketAddr>, RelayError>>;
}

/// The leader in a cluster: the Lease's holder, reached at its pod's IP on `port`.
pub struct KubeLocator {
    client: Client,
    namespace: String,
    me: String,
    port: u16,
}

impl LeaderLocator for KubeLocator {
    fn locate(&self) -> BoxFuture<'_, Result<Option<SocketAddr>, RelayError>> {
        Box::pin(async move {
            let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
            let lease = leases
                .get_opt(LEASE_NAME)
                .await
                .map_err(|e| RelayError::Leader(format!("Lease {LEASE_NAME}: {e}")))?;
            let holder = lease
                .and_then(|l| l.spec?.holder_identity)
                .ok_or_else(|| RelayError::Leader(format!("Lease {LEASE_NAME} has no holder")))?;
            if holder == self.me {
                return Ok(None);
            }
            let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
            let ip: IpAddr = pods
                .get(&holder)
                .await
                .map_err(|e| RelayError::Leader(format!("pod {holder}: {e}")))?
                .status
                .and_then(|s| s.pod_ip)
                .and_then(|ip| ip.parse().ok())
                .ok_or_else(|| RelayError::Leader(format!("pod {holder} has no IP")))?;
            Ok(Some(SocketAddr::new(ip, self.port)))
        })
    }
}

/// The leader as the Lease names it: its holder, at the address the holder wrote there
/// (directory mode, where there are no pods to look up).
pub struct LeaseLocator {
    /// The election's Lease.
    pub store: Arc<dyn LeaseStore>,
    /// This replica's identity.
    pub me: String,
}

impl LeaderLocator for LeaseLocator {
    fn locate(&self) -> BoxFuture<'_, Result<Option<SocketAddr>, RelayError>> {
        Box::pin(async move {
            let lease = self
                .store
                .get()
                .await
                .map_err(|e| RelayError::Leader(format!("{}: {e}", self.store.describe())))?
                .ok_or_else(|| RelayError::Leader("no replica leads yet".into()))?;
            let holder = lease
                .spec
                .as_ref()
                .and_then(|s| s.holder_identity.as_deref())
                .ok_or_else(|| RelayError::Leader("no replica leads yet".into()))?;
            if holder == self.me {
                return Ok(None);
            }
            let address = holder_address(&lease).ok_or_else(|| {
                RelayError::Leader(format!(
                    "the leader {holder} named no config server address"
                ))
            })?;
            address.parse().map(Some).map_err(|e| {
                RelayError::Leader(format!("the leader {holder}'s address {address:?}: {e}"))
            })
        })
    }
}

/// Passes reports on to the leader.
pub struct Relay {
    locator: Arc<dyn LeaderLocator>,
    me: String,
    tls: TlsConnector,
    server_name: ServerName<'static>,
    leader: Mutex<Option<(Instant, SocketAddr)>>,
    relaying: Arc<Semaphore>,
    /// The HTTP/2 connection to the leader, kept: every proxy reports every few seconds,
    /// and a handshake per report would cost the leader more than the report.
    connection: Mutex<Option<(SocketAddr, http2::SendRequest<Full<Bytes>>)>>,
}

/// A relay slot: [`Relay::forward`] through it, then it is free again.
pub struct Relaying {
    relay: Arc<Relay>,
    _permit: OwnedSemaphorePermit,
}

impl Relaying {
    /// [`Relay::forward`].
    pub async fn forward(&self, headers: &HeaderMap, body: Bytes) -> Result<bool, RelayError> {
        self.relay.forward(headers, body).await
    }
}

impl Relay {
    /// A relay for replica `me` in `namespace`, reaching the leader (its pod) on `port`
    /// over TLS verified with `tls` for `server_name` (a name every replica's certificate
    /// holds).
    pub fn new(
        client: Client,
        namespace: &str,
        me: &str,
        port: u16,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Self {
        let locator = KubeLocator {
            client,
            namespace: namespace.to_owned(),
            me: me.to_owned(),
            port,
        };
        Self::with_locator(Arc::new(locator), me, tls, server_name)
    }

    /// A relay for replica `me` finding the leader with `locator`.
    pub fn with_locator(
        locator: Arc<dyn LeaderLocator>,
        me: &str,
        tls: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    ) -> Self {
        Self {
            locator,
            me: me.to_owned(),
            tls: TlsConnector::from(tls),
            server_name,
            leader: Mutex::new(None),
            relaying: Arc::new(Semaphore::new(MAX_RELAYING)),
            connection: Mutex::new(None),
        }
    }

    /// A slot to relay one report, unless [`MAX_RELAYING`] are in flight.
    pub fn try_acquire(self: Arc<Self>) -> Option<Relaying> {
        let permit = self.relaying.clone().try_acquire_owned().ok()?;
        Some(Relaying {
            relay: self,
            _permit: permit,
        })
    }

    /// The leader's config server (cached for [`LEADER_TTL`]); `None` when this replica
    /// holds the Lease.
    async fn leader(&self) -> Result<Option<SocketAddr>, RelayError> {
        if let Ok(cached) = self.leader.lock()
            && let Some((at, addr)) = *cached
            && at.elapsed() < LEADER_TTL
        {
            return Ok(Some(addr));
        }
        let found = self.locator.locate().await?;
        if let (Some(addr), Ok(mut cached)) = (found, self.leader.lock()) {
            *cached = Some((Instant::now(), addr));
        }
        Ok(found)
    }

    /// Relays a proxy's report (its headers and body as received). `Ok(false)`: this
    /// replica leads after all, so the report is for it.
    pub async fn forward(&self, headers: &HeaderMap, body: Bytes) -> Result<bool, RelayError> {
        // A leader not reached may have moved (a failover, or the one cached no longer
        // leads): the Lease is read again, and a replica it names anew is tried once.
        let mut failed: Option<RelayError> = None;
        loop {
            let found = match self.leader().await {
                Ok(found) => found,
                Err(e) => return Err(failed.unwrap_or(e)),
            };
            let Some(addr) = found else {
                return Ok(false);
            };
            if let Some(e) =
                failed.take_if(|e| matches!(e, RelayError::Send { addr: a, .. } if *a == addr))
            {
                return Err(e);
            }
            match self.send_timed(addr, headers, body.clone()).await {
                Ok(()) => return Ok(true),
                // The leader answered, and said no (a bad token, say): it still leads.
                Err(Failure::Answered(message)) => return Err(RelayError::Send { addr, message }),
                Err(Failure::NotReached(message)) => {
                    self.forget_leader();
                    let e = RelayError::Send { addr, message };
                    if failed.is_some() {
                        return Err(e);
                    }
                    failed = Some(e);
                }
            }
        }
    }

    fn drop_connection(&self) {
        if let Ok(mut c) = self.connection.lock() {
            *c = None;
        }
    }

    fn forget_leader(&self) {
        if let Ok(mut cached) = self.leader.lock() {
            *cached = None;
        }
    }

    async fn send_timed(
        &self,
        addr: SocketAddr,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(), Failure> {
        match tokio::time::timeout(RELAY_TIMEOUT, self.send(addr, headers, body)).await {
            Err(_) => {
                // A leader that stopped answering (its node gone): the next report opens a
                // new connection rather than waiting on this one again.
                self.drop_connection();
                Err(Failure::NotReached(format!(
                    "no answer within {}s",
                    RELAY_TIMEOUT.as_secs()
                )))
            }
            Ok(r) => r,
        }
    }

    /// A connection to `addr`: the one kept, while it is still open, else a new one.
    async fn connection(
        &self,
        addr: SocketAddr,
    ) -> Result<http2::SendRequest<Full<Bytes>>, Failure> {
        let kept = self.connection.lock().ok().and_then(|c| {
            c.as_ref()
                .filter(|(a, s)| *a == addr && !s.is_closed())
                .map(|(_, s)| s.clone())
        });
        if let Some(sender) = kept {
            return Ok(sender);
        }
        let unreached = |e: String| Failure::NotReached(e);
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| unreached(e.to_string()))?;
        let tls = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| unreached(format!("TLS: {e}")))?;
        // Pings find a leader that vanished without closing the connection.
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(RELAY_TIMEOUT)
            .keep_alive_timeout(RELAY_TIMEOUT)
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| unreached(e.to_string()))?;
        tokio::spawn(conn);
        if let Ok(mut c) = self.connection.lock() {
            *c = Some((addr, sender.clone()));
        }
        Ok(sender)
    }

    async fn send(
        &self,
        addr: SocketAddr,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<(), Failure> {
        let unreached = |e: String| Failure::NotReached(e);
        let mut sender = self.connection(addr).await?;
        let mut req = Request::post(format!(
            "https://{}{REPORT_PATH}",
            self.server_name.to_str()
        ))
        .header(header::CONTENT_TYPE, "application/json");
        for name in [
            header::AUTHORIZATION.as_str(),
            POD_HEADER,
            PROXY_VERSION_HEADER,
        ] {
            if let Some(v) = headers.get(name) {
                req = req.header(name, v);
            }
        }
        let me = HeaderValue::from_str(&self.me).map_err(|e| unreached(e.to_string()))?;
        let req = req
            .header(RELAYED_HEADER, me)
            .body(Full::new(body))
            .map_err(|e| unreached(e.to_string()))?;
        let resp = match sender.send_request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                // A kept connection the leader closed: the next report opens another.
                self.drop_connection();
                return Err(unreached(e.to_string()));
            }
        };
        match resp.status() {
            s if s.is_success() => Ok(()),
            // It no longer leads.
            s @ http::StatusCode::MISDIRECTED_REQUEST => Err(unreached(format!("answered {s}"))),
            s => Err(Failure::Answered(format!("answered {s}"))),
        }
    }
}

/// Why one attempt failed.
enum Failure {
    /// The replica was not reached, or does not lead: the leader is elsewhere.
    NotReached(String),
    /// The leader answered, and refused.
    Answered(String),
}
