//! Upstream HTTP connections, pooled per endpoint and kind (plaintext, or mTLS to an
//! expected identity): HTTP/1.1 keeps idle keep-alive connections, HTTP/2 multiplexes
//! requests over one connection per endpoint. When a config changes an endpoint's kind,
//! requests use connections of the new kind; those of the old take no new requests,
//! finish what they carry and close (the hot switch of mTLS, which drops nothing).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::h2_body::H2Body;
use bytes::{Bytes, BytesMut};
use http::{Request, Response};
use http_body_util::{Either, Full};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::either::Either as EitherIo;

use super::ForwardError;
use super::h2_upstream::{H2Sender, KeepAlive};
use crate::balance::Upstream;
use crate::tls::{Alpn, TlsContext};

/// An upstream connection: plaintext, or mTLS to another proxy.
pub type UpstreamIo = EitherIo<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

/// Idle HTTP/1.1 connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 64;
/// Upstream HTTP/1.1 connections one downstream connection keeps for itself.
pub(super) const MAX_HELD: usize = 8;
/// HTTP/2 keep-alive: a ping this often on an idle connection...
const H2_PING_INTERVAL: Duration = Duration::from_secs(20);
/// ...and the connection is dropped when the ack takes longer than this.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body sent upstream: the caller's, streamed, or a buffered copy (retries
/// and mirrors). An enum rather than a box, so the common case allocates nothing.
pub type UpBody = Either<H2Body, Full<Bytes>>;

/// An upstream HTTP/1.1 connection the relay drives itself: the stream, and what was
/// read from it and not yet passed on.
pub struct RawConn {
    /// The connection (boxed: an mTLS one is large, and connections move between the
    /// pool, a downstream connection and the request in flight).
    pub io: Box<UpstreamIo>,
    /// Bytes read from it.
    pub buf: BytesMut,
    /// When it last finished an exchange (a connection idle too long is not reused).
    idle_since: Instant,
}

impl RawConn {
    fn new(io: UpstreamIo) -> Self {
        Self {
            io: Box::new(io),
            buf: BytesMut::with_capacity(RAW_BUF),
            idle_since: Instant::now(),
        }
    }

    /// Whether the idle connection can take the next request: the server has neither
    /// closed it nor sent anything since the last response ended (stray bytes would be
    /// read as the next request's answer). Peeks at the socket without waiting; with mTLS
    /// too, as anything arriving between responses (a close_notify) means the same.
    pub fn reusable(&self) -> bool {
        self.open()
    }

    /// Marks the connection idle from now.
    pub fn idle(&mut self) {
        self.idle_since = Instant::now();
    }

    /// Whether it has been idle longer than `max`.
    pub fn stale(&self, max: Duration) -> bool {
        self.idle_since.elapsed() > max
    }

    fn open(&self) -> bool {
        let tcp = match &*self.io {
            EitherIo::Left(tcp) => tcp,
            EitherIo::Right(tls) => tls.get_ref().0,
        };
        let mut probe = [0u8; 1];
        let mut buf = tokio::io::ReadBuf::new(&mut probe);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        tcp.poll_peek(&mut cx, &mut buf).is_pending()
    }
}

/// The read buffer of a relayed upstream connection.
const RAW_BUF: usize = 16 * 1024;

#[derive(Default)]
struct Slots {
    idle_raw: HashMap<Upstream, Vec<RawConn>>,
    h2: HashMap<Upstream, H2Sender>,
    /// The endpoints (and kinds) of the config in force, once known: connections to
    /// others are not kept (a pod IP may be reused by another pod later; a kind the
    /// config no longer uses must not take new requests).
    live: Option<HashSet<Upstream>>,
}

/// Opens and reuses upstream connections.
pub struct Pool {
    slots: Mutex<Slots>,
    connect_timeout: Duration,
    /// Idle connections older than this are closed, not reused.
    upstream_idle: Duration,
    local_ip: Option<IpAddr>,
    tls: Option<Arc<TlsContext>>,
}

impl Pool {
    /// A pool whose connections come from `local_ip` when set (the inbound side uses a
    /// dedicated loopback source such as 127.0.0.6, which the capture rules let through).
    /// With `tls`, endpoints whose kind is mTLS are reached over it. Connections idle
    /// longer than `upstream_idle` are closed, not reused.
    pub fn new(
        connect_timeout: Duration,
        local_ip: Option<IpAddr>,
        tls: Option<Arc<TlsContext>>,
        upstream_idle: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(Slots::default()),
            connect_timeout,
            upstream_idle,
            local_ip,
            tls,
        })
    }

    /// How long a connection may stay idle before it is closed.
    pub fn upstream_idle(&self) -> Duration {
        self.upstream_idle
    }

    /// Closes the idle connections that have been idle too long (they would otherwise
    /// sit half-closed once their server gave up on them).
    pub fn sweep(&self) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let max = self.upstream_idle;
        for idle in slots.idle_raw.values_mut() {
            idle.retain(|conn| !conn.stale(max));
        }
        slots.idle_raw.retain(|_, idle| !idle.is_empty());
    }

    /// Opens a connection of `up`'s kind carrying `alpn`: TCP, then mTLS when `up`
    /// expects a server identity.
    pub async fn connect(&self, up: &Upstream, alpn: Alpn) -> Result<UpstreamIo, ForwardError> {
        let stream = self.connect_tcp(up.addr).await?;
        let Some(expected) = &up.tls else {
            return Ok(EitherIo::Left(stream));
        };
        let tls = self
            .tls
            .as_ref()
            .ok_or(ForwardError::Tls(crate::tls::TlsError::NoCertificate))?;
        let secured = tokio::time::timeout(
            self.connect_timeout,
            tls.connect(stream, up.addr, expected, alpn),
        )
        .await
        .map_err(|_| ForwardError::ConnectTimeout)?
        .map_err(ForwardError::Tls)?;
        Ok(EitherIo::Right(secured))
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

    /// Closes idle connections to endpoints that are no longer in the config, and keeps
    /// connections returned later (by downstream connections that held them) from
    /// re-entering the pool for such endpoints.
    pub fn retain_endpoints(&self, live: HashSet<Upstream>) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.idle_raw.retain(|up, _| live.contains(up));
            // An HTTP/2 connection dropped here finishes its open streams, then closes.
            slots.h2.retain(|up, _| live.contains(up));
            slots.live = Some(live);
        }
    }

    /// Sends `req` over HTTP/2 to `addr`, multiplexed on one connection per endpoint. A
    /// request the connection refused before sending (it was closing, e.g. after GOAWAY
    /// from a draining peer) is sent once more on a new connection.
    pub async fn send_h2(
        &self,
        up: &Upstream,
        req: Request<UpBody>,
    ) -> Result<Response<H2Body>, ForwardError> {
        let sender = self.h2_sender(up).await?;
        match sender.send(req).await {
            Ok(resp) => Ok(resp),
            Err((Some(req), _)) => {
                self.evict_h2(up);
                let sender = self.h2_sender(up).await?;
                sender.send(req).await.map_err(|(_, e)| e)
            }
            Err((None, e)) => {
                self.evict_h2(up);
                Err(e)
            }
        }
    }

    /// Opens a relayed HTTP/1.1 connection of `up`'s kind.
    pub async fn connect_raw(&self, up: &Upstream) -> Result<RawConn, ForwardError> {
        Ok(RawConn::new(self.connect(up, Alpn::Http1).await?))
    }

    /// An idle relayed connection to `up`, if one is pooled and still open.
    pub fn take_raw(&self, up: &Upstream) -> Option<RawConn> {
        let mut slots = self.slots.lock().ok()?;
        let idle = slots.idle_raw.get_mut(up)?;
        while let Some(conn) = idle.pop() {
            if !conn.stale(self.upstream_idle) && conn.reusable() {
                return Some(conn);
            }
        }
        None
    }

    /// Keeps an idle relayed connection (marked idle by whoever held it last) for the next
    /// request to `up` (while the config uses `up`).
    pub fn put_raw(&self, up: Upstream, mut conn: RawConn) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        if slots.live.as_ref().is_some_and(|live| !live.contains(&up)) {
            return;
        }
        conn.buf.clear();
        let idle = slots.idle_raw.entry(up).or_default();
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(conn);
        }
    }

    fn evict_h2(&self, up: &Upstream) {
        if let Ok(mut slots) = self.slots.lock()
            && slots.h2.get(up).is_some_and(H2Sender::is_closed)
        {
            slots.h2.remove(up);
        }
    }

    async fn h2_sender(&self, up: &Upstream) -> Result<H2Sender, ForwardError> {
        if let Ok(slots) = self.slots.lock()
            && let Some(sender) = slots.h2.get(up)
            && !sender.is_closed()
        {
            return Ok(sender.clone());
        }
        // Boxed: connecting (a TLS handshake included) holds several KB of state, which
        // every request's future would otherwise carry, and copy, for a path taken once
        // per connection.
        Box::pin(self.open_h2(up)).await
    }

    /// Opens an HTTP/2 connection to `up` and pools it.
    async fn open_h2(&self, up: &Upstream) -> Result<H2Sender, ForwardError> {
        let addr = up.addr;
        let stream = self.connect(up, Alpn::Http2).await?;
        let keep_alive = KeepAlive {
            interval: H2_PING_INTERVAL,
            timeout: H2_PING_TIMEOUT,
        };
        let sender = H2Sender::handshake(crate::io::for_h2(stream), addr, keep_alive)
            .await
            .map_err(ForwardError::H2)?;
        if let Ok(mut slots) = self.slots.lock() {
            // Two requests may have connected at once; keep the live one already there.
            match slots.h2.get(up) {
                Some(existing) if !existing.is_closed() => return Ok(existing.clone()),
                // Kept only while the config uses this kind: a request that began under
                // the previous version still gets its answer, on a connection that then
                // closes.
                _ if slots.live.as_ref().is_some_and(|live| !live.contains(up)) => {}
                _ => {
                    slots.h2.insert(up.clone(), sender.clone());
                }
            }
        }
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    //! The pool against real loopback servers: which idle connections it hands out again
    //! and which it lets go.

    use std::net::Ipv4Addr;

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    /// A server that accepts and keeps every connection open (so only the test closes
    /// them), handing each to the test.
    async fn server() -> (Upstream, tokio::sync::mpsc::UnboundedReceiver<TcpStream>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let up = plain(listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                if tx.send(conn).is_err() {
                    return;
                }
            }
        });
        (up, rx)
    }

    fn plain(addr: SocketAddr) -> Upstream {
        Upstream { addr, tls: None }
    }

    fn pool(upstream_idle: Duration) -> Arc<Pool> {
        Pool::new(Duration::from_secs(2), None, None, upstream_idle)
    }

    /// Which local port the connection uses: the same port, the same connection.
    fn port(conn: &RawConn) -> u16 {
        match &*conn.io {
            EitherIo::Left(tcp) => tcp.local_addr().unwrap().port(),
            EitherIo::Right(_) => panic!("plaintext expected"),
        }
    }

    fn idle_count(pool: &Pool, up: &Upstream) -> usize {
        pool.slots
            .lock()
            .unwrap()
            .idle_raw
            .get(up)
            .map_or(0, Vec::len)
    }

    /// Lets a close or bytes sent by the server reach the client's socket.
    async fn settle() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn a_connection_returned_after_an_exchange_is_handed_out_again() {
        let (up, mut accepted) = server().await;
        let pool = pool(Duration::from_secs(60));
        let mut conn = pool.connect_raw(&up).await.unwrap();
        let mut server = accepted.recv().await.unwrap();
        // A complete exchange, with the response left in the buffer as the relay would.
        conn.io.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut req = [0u8; 18];
        server.read_exact(&mut req).await.unwrap();
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        conn.io.read_buf(&mut conn.buf).await.unwrap();
        let first = port(&conn);
        conn.idle();
        pool.put_raw(up.clone(), conn);

        let again = pool
            .take_raw(&up)
            .expect("the idle connection is handed out");
        assert_eq!(port(&again), first);
        assert!(
            again.buf.is_empty(),
            "the last response's bytes are not kept"
        );
        assert!(pool.take_raw(&up).is_none(), "handed out once, not twice");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_reused() {
        let (up, mut accepted) = server().await;
        let pool = pool(Duration::from_secs(60));
        let conn = pool.connect_raw(&up).await.unwrap();
        drop(accepted.recv().await.unwrap());
        settle().await;
        pool.put_raw(up.clone(), conn);
        assert!(pool.take_raw(&up).is_none());
        assert_eq!(idle_count(&pool, &up), 0, "the closed one is let go");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_sent_stray_bytes_on_is_not_reused() {
        let (up, mut accepted) = server().await;
        let pool = pool(Duration::from_secs(60));
        let conn = pool.connect_raw(&up).await.unwrap();
        let mut server = accepted.recv().await.unwrap();
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        settle().await;
        assert!(!conn.reusable());
        pool.put_raw(up.clone(), conn);
        assert!(pool.take_raw(&up).is_none());
    }

    #[tokio::test]
    async fn a_connection_idle_past_the_limit_is_not_handed_out_and_the_sweep_closes_it() {
        let (up, mut accepted) = server().await;
        let pool = pool(Duration::from_millis(100));
        let conn = pool.connect_raw(&up).await.unwrap();
        let mut server = accepted.recv().await.unwrap();
        pool.put_raw(up.clone(), conn);
        tokio::time::sleep(Duration::from_millis(150)).await;
        pool.sweep();
        assert_eq!(idle_count(&pool, &up), 0);
        // The sweep closed it: the server sees the end of the stream.
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), server.read_to_end(&mut rest));
        assert_eq!(read.await.unwrap().unwrap(), 0);

        let conn = pool.connect_raw(&up).await.unwrap();
        pool.put_raw(up.clone(), conn);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(pool.take_raw(&up).is_none(), "stale without a sweep too");
    }

    #[tokio::test]
    async fn at_most_64_idle_connections_are_kept_per_endpoint() {
        let (up, _accepted) = server().await;
        let (other, _accepted_other) = server().await;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..MAX_IDLE_PER_ENDPOINT + 3 {
            let conn = pool.connect_raw(&up).await.unwrap();
            pool.put_raw(up.clone(), conn);
        }
        let conn = pool.connect_raw(&other).await.unwrap();
        pool.put_raw(other.clone(), conn);
        assert_eq!(idle_count(&pool, &up), MAX_IDLE_PER_ENDPOINT);
        assert_eq!(idle_count(&pool, &other), 1, "the limit is per endpoint");
        let mut taken = Vec::new();
        while let Some(conn) = pool.take_raw(&up) {
            taken.push(conn);
        }
        assert_eq!(taken.len(), MAX_IDLE_PER_ENDPOINT);
    }

    #[tokio::test]
    async fn connections_are_pooled_per_kind_so_an_mtls_endpoint_never_gets_a_plaintext_one() {
        let (up, _accepted) = server().await;
        let secured = Upstream {
            addr: up.addr,
            tls: Some(Arc::new(crate::config::Identity(
                "spiffe://cluster.local/ns/shop/sa/payments".into(),
            ))),
        };
        let pool = pool(Duration::from_secs(60));
        let conn = pool.connect_raw(&up).await.unwrap();
        pool.put_raw(up.clone(), conn);
        assert!(pool.take_raw(&secured).is_none());
        // A pool without a certificate cannot originate mTLS: no plaintext fallback.
        assert!(matches!(
            pool.connect_raw(&secured).await,
            Err(ForwardError::Tls(crate::tls::TlsError::NoCertificate))
        ));
        assert!(pool.take_raw(&up).is_some());
    }

    #[tokio::test]
    async fn endpoints_the_config_dropped_lose_their_idle_connections_and_take_back_none() {
        let (kept, _a) = server().await;
        let (dropped, _b) = server().await;
        let pool = pool(Duration::from_secs(60));
        for up in [&kept, &dropped] {
            let conn = pool.connect_raw(up).await.unwrap();
            pool.put_raw(up.clone(), conn);
        }
        // One held by a downstream connection while the config changes.
        let held = pool.connect_raw(&dropped).await.unwrap();
        pool.retain_endpoints(HashSet::from([kept.clone()]));
        assert_eq!(idle_count(&pool, &dropped), 0);
        pool.put_raw(dropped.clone(), held);
        assert!(
            pool.take_raw(&dropped).is_none(),
            "returned later, not kept"
        );
        assert!(pool.take_raw(&kept).is_some());
    }

    #[tokio::test]
    async fn connections_come_from_the_local_ip_of_their_family() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6));
        let pool = Pool::new(Duration::from_secs(2), Some(source), None, Duration::ZERO);
        let _conn = pool.connect_tcp(addr).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), source);

        // An IPv6 source is not forced on an IPv4 connection.
        let v6 = Pool::new(
            Duration::from_secs(2),
            Some(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
            None,
            Duration::ZERO,
        );
        let _conn = v6.connect_tcp(addr).await.unwrap();
        let (_, peer) = listener.accept().await.unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    }

    /// An HTTP/2 server answering every request 200 with its connection's number; when
    /// `close_first`, the first connection goes away (GOAWAY, then close) once it answered
    /// its first request.
    async fn h2_server(close_first: bool) -> (Upstream, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let up = plain(listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                let answered = Arc::new(tokio::sync::Notify::new());
                let tell = answered.clone();
                let svc = hyper::service::service_fn(move |_req| {
                    tell.notify_one();
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    if close_first && n == 1 {
                        tokio::select! {
                            _ = conn.as_mut() => return,
                            _ = answered.notified() => conn.as_mut().graceful_shutdown(),
                        }
                    }
                    let _ = conn.await;
                });
            }
        });
        (up, accepted)
    }

    async fn get_h2(pool: &Pool, up: &Upstream) -> String {
        let req = Request::builder()
            .uri(format!("http://{}/", up.addr))
            .body(Either::Right(Full::new(Bytes::new())))
            .unwrap();
        let resp = pool.send_h2(up, req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn http2_requests_to_an_endpoint_share_one_connection() {
        let (up, accepted) = h2_server(false).await;
        let pool = pool(Duration::from_secs(60));
        for _ in 0..4 {
            assert_eq!(get_h2(&pool, &up).await, "1");
        }
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_http2_connection_the_server_closed_is_replaced() {
        let (up, accepted) = h2_server(true).await;
        let pool = pool(Duration::from_secs(60));
        assert_eq!(get_h2(&pool, &up).await, "1");
        // The server sent GOAWAY and closes; no request fails meanwhile, and once the pool
        // sees the connection closed the next request opens a new one.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while get_h2(&pool, &up).await != "2" {
            assert!(tokio::time::Instant::now() < deadline, "never replaced");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get_h2(&pool, &up).await, "2");
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    }
}
