//! What happens to one accepted connection: find where it was going and what the tables
//! say of it, once ([`ConnPolicy`]), decide its protocol (configured, or detected), then
//! serve it as HTTP or splice it as TCP.

mod policy;

pub use policy::{ConnPolicy, served_as};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::authz::Asked;
use crate::config::Protocol;
use crate::config::tls::TlsMode;
use crate::detect::{Detected, detect};
use crate::discovery::Discovery;
use crate::handover::{Handed, Role, Spoken};
use crate::http::{
    Forwarder, InboundPeer, InboundShared, InboundSide, Mirrors, OutboundSide, Pool, Route, Side,
    serve_h1, serve_h2,
};
use crate::io::{Counted, Detach, PrefixedIo};
use crate::listen::original_dst;
use crate::metrics::connection::ConnProtocol;
use crate::metrics::limits::Limit;
use crate::metrics::tls::RefusedReason;
use crate::metrics::{Direction, Metrics};
use crate::tables::{OutboundTarget, TableStore};
use crate::tcp::{Carried, Copied, splice_until};
use crate::tls::{Alpn, Hello, TlsContext, read_client_hello};

/// Shared by every connection of one direction.
#[derive(Clone)]
pub struct Context {
    /// The config in force.
    pub config: Arc<TableStore>,
    /// Upstream connections.
    pub pool: Arc<Pool>,
    /// Mirror copies, bounded for the whole direction (not per connection).
    pub mirrors: Mirrors,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Which side this is, with what only it has.
    pub side: SideParts,
    /// Fires when the proxy drains.
    pub drain: CancellationToken,
    /// This proxy's mesh TLS (the inbound side terminates it; the outbound side's pool
    /// originates it).
    pub tls: Arc<TlsContext>,
    /// Time and space limits on connections.
    pub limits: crate::limits::Limits,
    /// Finds the service of an address the config does not know (outbound, when the
    /// proxy holds only the services its app calls).
    pub discovery: Option<Arc<Discovery>>,
    /// The access log and tracing (both may be off).
    pub telemetry: Arc<crate::telemetry::Telemetry>,
    /// Where connections go when they come free once a successor proxy took over.
    pub hand_off: crate::handover::HandOff,
}

/// What only one side shares between its connections.
#[derive(Clone)]
pub enum SideParts {
    /// From the mesh to the app: overload protection and request counts.
    Inbound(InboundShared),
    /// From the app to the mesh: the ejection log.
    Outbound(OutboundSide),
}

impl Context {
    /// The metrics' name of its side.
    pub fn direction(&self) -> Direction {
        match self.side {
            SideParts::Inbound(_) => Direction::inbound,
            SideParts::Outbound(_) => Direction::outbound,
        }
    }

    /// A forwarder for one connection; `peer` is its caller, on the inbound side.
    fn forwarder(&self, peer: Option<InboundPeer>) -> Forwarder {
        let side = match &self.side {
            SideParts::Outbound(outbound) => Side::Outbound(outbound.clone()),
            SideParts::Inbound(shared) => Side::Inbound(InboundSide {
                // Every inbound connection knows its caller (`secured_inbound`); were
                // one not to, it would count as plaintext, which Strict refuses.
                peer: peer.unwrap_or_default(),
                shared: shared.clone(),
            }),
        };
        Forwarder::new(
            self.config.clone(),
            self.pool.clone(),
            self.mirrors.clone(),
            self.metrics.clone(),
            side,
        )
        .with_limits(self.limits)
        .with_telemetry(self.telemetry.clone())
    }

    /// The inbound side's request counts, on the inbound side.
    fn traffic(&self) -> Option<&crate::reports::TrafficLog> {
        match &self.side {
            SideParts::Inbound(shared) => Some(&shared.traffic),
            SideParts::Outbound(_) => None,
        }
    }
}

/// What was known of a connection before this proxy served it: nothing for one just
/// accepted; for one a predecessor proxy handed over (`handover`), the bytes it read and
/// did not use, and what the connection speaks.
#[derive(Debug, Default)]
pub struct Begun {
    /// Read, not yet used.
    pub read: Bytes,
    /// What it speaks, when known.
    pub detected: Option<Detected>,
}

/// An outbound connection (the app calling out), redirected to 15001.
pub async fn outbound(stream: TcpStream, begun: Begun, ctx: Context) {
    let Some(dst) = redirected_to(&stream) else {
        return;
    };
    let mut policy = ctx.config.with_tables(|t| ConnPolicy::outbound(t, dst));
    if policy.is_none()
        && let Some(discovery) = &ctx.discovery
        && discovery.resolve(dst).await
    {
        policy = ctx.config.with_tables(|t| ConnPolicy::outbound(t, dst));
    }
    match policy {
        Some(policy) => {
            // Held for the connection's life: its service is in use meanwhile.
            let _in_use = ctx.discovery.as_ref().map(|d| d.used(dst.ip()));
            let conn = Conn::resumed(stream, begun, policy.target.protocol);
            dispatch(conn, Route::Outbound(dst), policy, &ctx).await;
        }
        None => {
            // Not a known service: pass through unchanged.
            let _open = ctx
                .metrics
                .connections
                .open(ctx.direction(), ConnProtocol::passthrough);
            let target = OutboundTarget::address(dst, Protocol::Tcp);
            // Counted under one target: destinations outside the mesh are unbounded.
            let counters = ctx.metrics.connections.bytes(
                ctx.direction(),
                ConnProtocol::passthrough,
                &Arc::from(PASSTHROUGH),
            );
            let stream = Counted::new(stream, counters);
            Box::pin(forward_tcp(
                PrefixedIo::new(begun.read, stream),
                &target,
                Role::Outbound,
                &ctx,
            ))
            .await;
        }
    }
}

/// The `target` of bytes passed through to destinations no service has.
pub const PASSTHROUGH: &str = "passthrough";

/// An inbound connection (another pod calling the app), redirected to 15006; it goes to
/// the app on loopback, on the port it was addressed to.
pub async fn inbound(stream: TcpStream, begun: Begun, ctx: Context) {
    let Some(dst) = redirected_to(&stream) else {
        return;
    };
    let policy = ctx
        .config
        .with_tables(|t| ConnPolicy::inbound(t, dst.port()));
    let route = Route::Fixed(policy.target.clone());
    secured_inbound(stream, begun, dst.port(), route, policy, &ctx).await;
}

/// A connection on the explicit listener `name`.
pub async fn explicit(stream: TcpStream, begun: Begun, name: Arc<str>, ctx: Context) {
    let port = stream.local_addr().map(|a| a.port()).unwrap_or_default();
    let route = Route::Listener(name);
    let inbound = ctx.direction() == Direction::inbound;
    let Some(policy) = ctx
        .config
        .with_tables(|t| ConnPolicy::listener(t, &route, port, inbound))
    else {
        return;
    };
    if inbound {
        secured_inbound(stream, begun, port, route, policy, &ctx).await;
    } else {
        let conn = Conn::resumed(stream, begun, policy.target.protocol);
        dispatch(conn, route, policy, &ctx).await;
    }
}

/// The original destination, or `None` (connection closed) when the connection was
/// addressed to the proxy itself: forwarding it would loop.
fn redirected_to(stream: &TcpStream) -> Option<SocketAddr> {
    let dst = match original_dst(stream) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::warn!(error = %e, "no original destination; closing");
            return None;
        }
    };
    if stream.local_addr().ok() == Some(dst) {
        tracing::warn!(%dst, "connection addressed to the proxy itself, not redirected; closing");
        return None;
    }
    Some(dst)
}

/// A connection about to be served: its stream, the bytes already read from it (to be
/// replayed), what they were found to be, and the caller when it came over mTLS.
struct Conn<I> {
    io: I,
    read: BytesMut,
    detected: Option<Detected>,
    protocol: Protocol,
    peer: Option<InboundPeer>,
}

impl Conn<TcpStream> {
    /// A plaintext connection, with what was known of it.
    fn resumed(io: TcpStream, begun: Begun, protocol: Protocol) -> Self {
        Self {
            io,
            read: BytesMut::from(begun.read),
            detected: begun.detected,
            protocol,
            peer: None,
        }
    }
}

/// Logs why a connection ended before its protocol was known; a request begun and not
/// finished in time counts as a header-read timeout.
fn detection_failed(ctx: &Context, e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        ctx.metrics
            .limits
            .reached(ctx.direction(), Limit::header_read_timeout);
    }
    tracing::debug!(error = %e, "connection ended before its protocol was known");
}

/// How long an incoming mesh connection may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An inbound connection under the port's TLS mode: braid's mTLS is terminated and its
/// caller verified; anything else goes on as plaintext (`Permissive`, `Disabled`) or is
/// closed and counted (`Strict`). A `Disabled` port still terminates braid's mTLS when it
/// can (a certificate held, a client-first port): while a policy change reaches callers
/// and servers at slightly different moments, a caller that still encrypts is served.
async fn secured_inbound(
    mut stream: TcpStream,
    begun: Begun,
    port: u16,
    route: Route,
    policy: ConnPolicy,
    ctx: &Context,
) {
    let mode = policy.tls;
    let protocol = policy.target.protocol;
    let timeout = policy.detect_timeout;
    let source = stream.peer_addr().ok().map(|a| a.ip());
    let peer = |tls: bool, identity: Option<Arc<str>>| InboundPeer {
        tls,
        identity,
        address: source,
        source: if tls {
            None
        } else {
            source.and_then(|ip| ctx.traffic().map(|t| t.plaintext_source(ip)))
        },
        port,
    };
    if begun.detected.is_some() {
        // Handed over by a predecessor, plaintext: served as it was, unless the port
        // became Strict meanwhile.
        if mode == TlsMode::Strict {
            ctx.metrics.tls.refused(port, RefusedReason::plaintext);
            return;
        }
        let conn = Conn {
            peer: Some(peer(false, None)),
            ..Conn::resumed(stream, begun, protocol)
        };
        return dispatch(conn, route, policy, ctx).await;
    }
    let peek = match mode {
        TlsMode::Disabled => !policy.server_first() && ctx.tls.has_certificate(),
        TlsMode::Permissive | TlsMode::Strict => true,
    };
    if !peek {
        let conn = Conn {
            peer: Some(peer(false, None)),
            ..Conn::resumed(stream, begun, protocol)
        };
        return dispatch(conn, route, policy, ctx).await;
    }
    let peeked = async {
        let (found, mut read) = detect(
            &mut stream,
            BytesMut::from(begun.read),
            timeout,
            ctx.limits.header_read,
        )
        .await?;
        let hello = match found {
            Detected::Tls => read_client_hello(&mut stream, &mut read, timeout).await?,
            _ => Hello::Other,
        };
        Ok::<_, std::io::Error>((found, read, hello))
    };
    let (found, read, hello) = match peeked.await {
        Ok(peeked) => peeked,
        Err(e) => {
            detection_failed(ctx, &e);
            return;
        }
    };
    match (hello, mode) {
        (Hello::Mesh, _) => {
            let io = PrefixedIo::new(read.freeze(), stream);
            let handshake = Box::pin(ctx.tls.accept(io));
            let accepted = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
                Ok(Ok(accepted)) => accepted,
                Ok(Err(e)) => {
                    tracing::info!(port, error = %e, "mTLS connection refused");
                    return;
                }
                Err(_) => {
                    tracing::info!(port, "mTLS connection refused: no handshake within 10 s");
                    return;
                }
            };
            tracing::debug!(port, peer = ?accepted.peer, alpn = ?accepted.alpn, "mTLS connection");
            let conn = Conn {
                io: accepted.stream,
                read: BytesMut::new(),
                // Inside the tunnel, ALPN says what is spoken; opaque TCP keeps the port's
                // own protocol (and may still be detected).
                detected: None,
                protocol: accepted.alpn.protocol(protocol),
                peer: Some(peer(true, accepted.peer)),
            };
            // Boxed: the TLS stream is large, and a plaintext connection's task then
            // does not reserve room for it.
            Box::pin(dispatch(conn, route, policy, ctx)).await;
        }
        (Hello::Other, TlsMode::Strict) => {
            ctx.metrics.tls.refused(port, RefusedReason::plaintext);
            tracing::debug!(
                port,
                "plaintext connection refused: the port is Strict mTLS"
            );
        }
        (Hello::Other, _) => {
            let conn = Conn {
                io: stream,
                read,
                detected: Some(found),
                protocol,
                peer: Some(peer(false, None)),
            };
            dispatch(conn, route, policy, ctx).await;
        }
    }
}

/// How a connection's HTTP is spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ServeAs {
    /// HTTP/1.1, by the relay.
    Http1,
    /// HTTP/2, by hyper.
    Http2,
}

/// Serves the connection as HTTP along `route`, or splices it to the policy's target as
/// TCP.
async fn dispatch<I>(conn: Conn<I>, route: Route, policy: ConnPolicy, ctx: &Context)
where
    I: AsyncRead + AsyncWrite + Detach + Unpin + Send + 'static,
{
    let Conn {
        mut io,
        read,
        detected,
        protocol,
        peer,
    } = conn;
    let protocol = policy.protocol(protocol);
    let (serve_as, read) = match protocol {
        Protocol::Tcp => (None, read),
        Protocol::Http1 => (Some(ServeAs::Http1), read),
        Protocol::Http2 => (Some(ServeAs::Http2), read),
        Protocol::Http | Protocol::Detect => {
            let (found, read) = match detected {
                Some(found) => (found, read),
                None => match detect(&mut io, read, policy.detect_timeout, ctx.limits.header_read)
                    .await
                {
                    Ok(found) => found,
                    Err(e) => {
                        detection_failed(ctx, &e);
                        return;
                    }
                },
            };
            let serve_as = match (found, protocol) {
                (Detected::Http2, _) => Some(ServeAs::Http2),
                (Detected::Http1, _) => Some(ServeAs::Http1),
                // Declared HTTP: anything but the HTTP/2 preface is HTTP/1 (and gets a 400
                // if it is not HTTP at all).
                (_, Protocol::Http) => Some(ServeAs::Http1),
                (Detected::Tls | Detected::Opaque, _) => None,
            };
            (serve_as, read)
        }
    };
    let counted = |as_: ConnProtocol| {
        let counters = ctx
            .metrics
            .connections
            .bytes(ctx.direction(), as_, &policy.target.label);
        // What detection already read came from the caller too.
        counters.read.inc_by(read.len() as u64);
        counters
    };
    match serve_as {
        Some(ServeAs::Http1) => {
            // Plaintext connections go to a successor proxy between requests; TLS ones
            // stay until their callers close them (`serve_h1`).
            let detachable = io.detachable();
            let role = handover_role(&route, ctx);
            let io = Counted::new(io, counted(ConnProtocol::http1));
            let _open = ctx
                .metrics
                .connections
                .open(ctx.direction(), ConnProtocol::http1);
            let forwarder = ctx.forwarder(peer);
            // Each way of serving is boxed: a connection's task then holds only the way
            // it takes (an idle HTTP/1.1 connection costs a few hundred bytes, not the
            // ~16 KB of every path's state together).
            let drain = ctx.drain.clone();
            let hand_off = ctx.hand_off.clone();
            let served = serve_h1(io, read, forwarder, route, drain, hand_off, detachable);
            if let Some((io, unused)) = Box::pin(served).await {
                hand_over(io, unused, role, ctx).await;
            }
        }
        Some(ServeAs::Http2) => {
            let io = Counted::new(io, counted(ConnProtocol::http2));
            let _open = ctx
                .metrics
                .connections
                .open(ctx.direction(), ConnProtocol::http2);
            let forwarder = ctx.forwarder(peer);
            let io = PrefixedIo::new(read.freeze(), io);
            Box::pin(serve_h2(io, forwarder, route, ctx.drain.clone())).await;
        }
        None => {
            if let Some(p) = &peer
                && let Some(policy) = refused_connection(ctx, p)
            {
                // Closed before a byte reaches the app: the caller sees the connection
                // end, as a TCP client of a refusing server does.
                tracing::debug!(port = p.port, %policy, "TCP connection denied by AccessPolicy");
                return;
            }
            let io = Counted::new(io, counted(ConnProtocol::tcp));
            let io = PrefixedIo::new(read.freeze(), io);
            let _open = ctx
                .metrics
                .connections
                .open(ctx.direction(), ConnProtocol::tcp);
            // An opaque connection counts as one request of its kind.
            if let (Some(peer), Some(log)) = (&peer, ctx.traffic()) {
                log.inbound(peer.tls, policy.tls, peer.source.as_deref());
            }
            let role = handover_role(&route, ctx);
            Box::pin(forward_tcp(io, &policy.target, role, ctx)).await;
        }
    }
}

/// The listener a connection on `route` came from, as a successor proxy knows it.
fn handover_role(route: &Route, ctx: &Context) -> Role {
    match route {
        Route::Outbound(_) => Role::Outbound,
        Route::Fixed(_) => Role::Inbound,
        Route::Listener(name) => Role::Explicit {
            name: name.clone(),
            side: match ctx.direction() {
                Direction::inbound => crate::config::Side::Inbound,
                Direction::outbound => crate::config::Side::Outbound,
            },
        },
    }
}

/// Hands an HTTP/1.1 connection that came free to the successor proxy, with the bytes
/// read from it and not yet used; when there is none it closes.
async fn hand_over<I: Detach>(io: I, unused: BytesMut, role: Role, ctx: &Context) {
    let Some((socket, read)) = io.detach() else {
        return;
    };
    // What was read through the stream came before what it still held unreplayed.
    let read = match read.is_empty() {
        true => unused.freeze(),
        false => {
            let mut all = unused;
            all.extend_from_slice(&read);
            all.freeze()
        }
    };
    let fd = match socket.into_std() {
        Ok(socket) => std::os::fd::OwnedFd::from(socket),
        Err(e) => {
            tracing::debug!(error = %e, "could not hand a connection over; closing it");
            return;
        }
    };
    let handed = Handed::Connection {
        role,
        spoken: Spoken::Http1,
        fd,
        read,
    };
    if ctx.hand_off.hand(handed).await.is_err() {
        tracing::debug!("no successor to hand a connection to; closed");
    }
}

/// The AccessPolicy that refuses an opaque connection from `peer` now, if one does.
fn refused_connection(ctx: &Context, peer: &InboundPeer) -> Option<Arc<str>> {
    ctx.config.with_tables(|t| {
        let access = &t.access;
        if !access.covers(peer.port) {
            return None;
        }
        access
            .check(
                peer.port,
                &peer.caller(),
                Asked::Connection,
                &ctx.metrics.authz,
            )
            .err()
    })
}

async fn forward_tcp<C>(io: PrefixedIo<C>, target: &OutboundTarget, role: Role, ctx: &Context)
where
    C: AsyncRead + AsyncWrite + Detach + Unpin,
{
    let Some(up) = target.pick() else {
        tracing::warn!(target = %target.label, "no endpoints; closing TCP connection");
        return;
    };
    match ctx.pool.connect(&up, Alpn::Tcp).await {
        Ok(upstream) => tunnel(io, upstream, Carried::default(), role, ctx).await,
        Err(e) => tracing::debug!(addr = %up.addr, error = %e, "TCP connect failed"),
    }
}

/// Splices a client and its upstream until both are done, or until a successor proxy
/// takes over: then a tunnel on two plaintext sockets is handed to it, with the bytes
/// read each way and not yet written, and goes on there. One with TLS on either side
/// (its keys stay in this process) runs to its end here.
async fn tunnel<C, U>(
    mut io: PrefixedIo<C>,
    mut upstream: U,
    carried: Carried,
    role: Role,
    ctx: &Context,
) where
    C: AsyncRead + AsyncWrite + Detach + Unpin,
    U: AsyncRead + AsyncWrite + Detach + Unpin,
{
    let detachable = io.detachable() && upstream.detachable();
    let pause = handing_over(ctx, detachable);
    let idle = ctx.limits.tcp_idle;
    match splice_until(&mut io, &mut upstream, idle, pause, carried).await {
        Ok(Copied::Paused { to_b, to_a }) => hand_tunnel(io, upstream, to_b, to_a, role, ctx).await,
        Ok(Copied::Done(..)) => {}
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            ctx.metrics
                .limits
                .reached(ctx.direction(), Limit::tcp_idle_timeout);
            tracing::debug!(error = %e, "TCP connection closed");
        }
        Err(e) => tracing::debug!(error = %e, "TCP stream ended with an error"),
    }
}

/// Completes once connections are being handed to a successor proxy, for a `detachable`
/// one; never otherwise.
async fn handing_over(ctx: &Context, detachable: bool) {
    if detachable {
        ctx.drain.cancelled().await;
        if ctx.hand_off.is_on() {
            return;
        }
    }
    std::future::pending().await
}

/// Hands a paused tunnel to the successor; when there is none, it closes.
async fn hand_tunnel<C: Detach, U: Detach>(
    io: C,
    upstream: U,
    to_upstream: Vec<u8>,
    to_client: Vec<u8>,
    role: Role,
    ctx: &Context,
) {
    let (Some((client, client_read)), Some((upstream, upstream_read))) =
        (io.detach(), upstream.detach())
    else {
        return;
    };
    // Bytes read through a stream came before those it still held unreplayed.
    let joined = |unreplayed: Bytes, read: Vec<u8>| match unreplayed.is_empty() {
        true => read,
        false => [&read[..], &unreplayed[..]].concat(),
    };
    let (Ok(client), Ok(upstream)) = (client.into_std(), upstream.into_std()) else {
        return;
    };
    let handed = Handed::Tunnel {
        role,
        client: client.into(),
        upstream: upstream.into(),
        to_upstream: joined(client_read, to_upstream),
        to_client: joined(upstream_read, to_client),
    };
    if ctx.hand_off.hand(handed).await.is_err() {
        tracing::debug!("no successor to hand a tunnel to; closed");
    }
}

/// A tunnel a predecessor proxy handed over: what it had read and not yet written goes
/// on first, each way as the splice goes on (and it can be handed on again).
pub async fn resume_tunnel(
    client: TcpStream,
    upstream: TcpStream,
    to_upstream: Bytes,
    to_client: Bytes,
    role: Role,
    ctx: Context,
) {
    let _open = ctx
        .metrics
        .connections
        .open(ctx.direction(), ConnProtocol::tcp);
    let carried = Carried {
        to_b: to_upstream.to_vec(),
        to_a: to_client.to_vec(),
    };
    let client = PrefixedIo::new(Bytes::new(), client);
    tunnel(client, upstream, carried, role, &ctx).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(TcpStream, Begun, Context) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    // A connection's task holds its handler's future for the connection's whole life, so
    // its size is what every idle connection costs: each way of serving is boxed and only
    // the one taken is allocated. (A TLS stream inline made it 5 KB.)
    #[test]
    fn a_connections_future_holds_only_what_every_connection_needs() {
        for (what, size) in [
            ("outbound", future_size(outbound)),
            ("inbound", future_size(inbound)),
            (
                "explicit",
                future_size(|s, r, c| explicit(s, r, Arc::from("l"), c)),
            ),
        ] {
            assert!(size <= 3 * 1024, "{what}: {size} bytes");
        }
    }
}
