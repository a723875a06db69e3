//! Upstream HTTP connections, pooled per endpoint and HTTP version: HTTP/1.1 keeps idle
//! keep-alive connections, HTTP/2 multiplexes requests over one connection.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::{TcpSocket, TcpStream};

use super::ForwardError;

/// The HTTP version spoken to an upstream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 with prior knowledge.
    Http2,
}

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 64;

enum Slot {
    Http1(Vec<http1::SendRequest<Incoming>>),
    Http2(http2::SendRequest<Incoming>),
}

/// Opens and reuses upstream connections.
pub struct Pool {
    slots: Mutex<HashMap<(SocketAddr, Version), Slot>>,
    connect_timeout: Duration,
    local_ip: Option<IpAddr>,
}

impl Pool {
    /// A pool whose connections come from `local_ip` when set (the inbound side uses a
    /// dedicated loopback source such as 127.0.0.6, which the capture rules let through).
    pub fn new(connect_timeout: Duration, local_ip: Option<IpAddr>) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(HashMap::new()),
            connect_timeout,
            local_ip,
        })
    }

    /// Opens a TCP connection to `addr` within the connect timeout.
    pub async fn connect_tcp(&self, addr: SocketAddr) -> Result<TcpStream, ForwardError> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(ForwardError::Connect)?;
        if let Some(ip) = self.local_ip.filter(|ip| ip.is_ipv4() == addr.is_ipv4()) {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ForwardError::Connect)?;
        }
        let stream = tokio::time::timeout(self.connect_timeout, socket.connect(addr))
            .await
            .map_err(|_| ForwardError::ConnectTimeout)?
            .map_err(ForwardError::Connect)?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// A per-downstream-connection slot for one upstream HTTP/1.1 connection.
    pub fn sticky(self: &Arc<Self>) -> Sticky {
        Sticky {
            pool: Arc::downgrade(self),
            slot: Mutex::new(None),
        }
    }

    /// Sends `req` over HTTP/2 to `addr`, multiplexed on one connection per endpoint.
    pub async fn send_h2(
        &self,
        addr: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut sender = self.h2_sender(addr).await?;
        sender
            .send_request(req)
            .await
            .map_err(ForwardError::Upstream)
    }

    /// Sends `req` over HTTP/1.1 to `addr`: on the downstream connection's own upstream
    /// connection when it goes to `addr`, else a pooled idle one, else a new one. A reused
    /// connection that turns out closed before the request left is replaced
    /// transparently, since the upstream never saw the request.
    pub async fn send_h1(
        self: &Arc<Self>,
        addr: SocketAddr,
        req: Request<Incoming>,
        sticky: &Sticky,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut req = req;
        let mut reused = sticky.take(addr);
        loop {
            let mut sender = match reused.take() {
                Some(s) => s,
                None => match self.take_h1(addr) {
                    Some(s) => s,
                    None => break,
                },
            };
            // The previous response on this connection may still be finishing.
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    sticky.put(addr, sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(back) => req = back,
                    None => return Err(ForwardError::Upstream(e.into_error())),
                },
            }
        }
        let mut sender = self.h1_connect(addr).await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(ForwardError::Upstream)?;
        sticky.put(addr, sender);
        Ok(resp)
    }

    /// Sends an upgrade request (WebSocket) on a connection of its own, which becomes the
    /// tunnel and never returns to the pool.
    pub async fn send_upgrade(
        &self,
        addr: SocketAddr,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let mut sender = self.h1_connect(addr).await?;
        sender
            .send_request(req)
            .await
            .map_err(ForwardError::Upstream)
    }

    fn take_h1(&self, addr: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
        let mut slots = self.slots.lock().ok()?;
        let Some(Slot::Http1(idle)) = slots.get_mut(&(addr, Version::Http1)) else {
            return None;
        };
        while let Some(sender) = idle.pop() {
            if !sender.is_closed() && sender.is_ready() {
                return Some(sender);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response has been read in full.
    fn recycle_h1(self: &Arc<Self>, addr: SocketAddr, mut sender: http1::SendRequest<Incoming>) {
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            if sender.ready().await.is_err() {
                return;
            }
            let Some(pool) = pool.upgrade() else { return };
            let Ok(mut slots) = pool.slots.lock() else {
                return;
            };
            let slot = slots
                .entry((addr, Version::Http1))
                .or_insert_with(|| Slot::Http1(Vec::new()));
            if let Slot::Http1(idle) = slot
                && idle.len() < MAX_IDLE_PER_ENDPOINT
            {
                idle.push(sender);
            }
        });
    }

    async fn h1_connect(
        &self,
        addr: SocketAddr,
    ) -> Result<http1::SendRequest<Incoming>, ForwardError> {
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ForwardError::Upstream)?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(sender)
    }

    async fn h2_sender(
        &self,
        addr: SocketAddr,
    ) -> Result<http2::SendRequest<Incoming>, ForwardError> {
        if let Ok(slots) = self.slots.lock()
            && let Some(Slot::Http2(sender)) = slots.get(&(addr, Version::Http2))
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        let stream = self.connect_tcp(addr).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(ForwardError::Upstream)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        if let Ok(mut slots) = self.slots.lock() {
            slots.insert((addr, Version::Http2), Slot::Http2(sender.clone()));
        }
        Ok(sender)
    }
}

/// One downstream connection's upstream HTTP/1.1 connection. Requests on a downstream
/// HTTP/1.1 connection come one after another, so the same upstream connection serves
/// them all without touching the shared pool; when the downstream connection ends, the
/// upstream one goes back to the pool.
pub struct Sticky {
    pool: std::sync::Weak<Pool>,
    slot: Mutex<Option<(SocketAddr, http1::SendRequest<Incoming>)>>,
}

impl Sticky {
    /// The held connection if it goes to `addr`; one to another endpoint goes back to the pool.
    fn take(&self, addr: SocketAddr) -> Option<http1::SendRequest<Incoming>> {
        let held = self.slot.lock().ok()?.take()?;
        if held.0 == addr {
            return Some(held.1);
        }
        if let Some(pool) = self.pool.upgrade() {
            pool.recycle_h1(held.0, held.1);
        }
        None
    }

    fn put(&self, addr: SocketAddr, sender: http1::SendRequest<Incoming>) {
        let previous = match self.slot.lock() {
            Ok(mut slot) => slot.replace((addr, sender)),
            Err(_) => return,
        };
        if let (Some((a, s)), Some(pool)) = (previous, self.pool.upgrade()) {
            pool.recycle_h1(a, s);
        }
    }
}

impl Drop for Sticky {
    fn drop(&mut self) {
        let held = self.slot.get_mut().ok().and_then(Option::take);
        if let (Some((addr, sender)), Some(pool)) = (held, self.pool.upgrade()) {
            pool.recycle_h1(addr, sender);
        }
    }
}
