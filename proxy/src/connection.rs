//! What happens to one accepted connection: find where it was going, decide its protocol
//! (configured, or detected), then serve it as HTTP or splice it as TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ConfigSource, OutboundTarget, Protocol};
use crate::detect::{Detected, detect};
use crate::http::{Forwarder, Mirrors, Pool, Route, ServeAs, serve};
use crate::io::PrefixedIo;
use crate::listen::original_dst;
use crate::metrics::{ConnProtocol, Direction, Metrics};
use crate::tcp::splice;

/// Shared by every connection of one direction.
#[derive(Clone)]
pub struct Context {
    /// The config in force.
    pub config: Arc<ConfigSource>,
    /// Upstream connections.
    pub pool: Arc<Pool>,
    /// Mirror copies, bounded for the whole direction (not per connection).
    pub mirrors: Mirrors,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Which side this is.
    pub direction: Direction,
    /// Fires when the proxy drains.
    pub drain: CancellationToken,
    /// Work that draining waits for (upgraded tunnels, besides connections).
    pub tracker: TaskTracker,
    /// Overload protection (the inbound side only).
    pub overload: Option<Arc<crate::overload::Protector>>,
    /// Where ejections wait for the operator (the outbound side, with an operator).
    pub ejections: Option<Arc<crate::control::EjectionLog>>,
}

impl Context {
    fn forwarder(&self) -> Forwarder {
        Forwarder::new(
            self.config.clone(),
            self.pool.clone(),
            self.mirrors.clone(),
            self.metrics.clone(),
            self.direction,
            self.tracker.clone(),
        )
        .with_overload(self.overload.clone())
        .with_ejection_log(self.ejections.clone())
    }
}

/// An outbound connection (the app calling out), redirected to 15001.
pub async fn outbound(stream: TcpStream, ctx: Context) {
    let Some(dst) = redirected_to(&stream) else {
        return;
    };
    let target = ctx.config.tables().outbound(dst).cloned();
    match target {
        Some(target) => {
            let protocol = target.protocol;
            dispatch(
                stream,
                protocol,
                dst.port(),
                Route::Outbound(dst),
                target,
                &ctx,
            )
            .await;
        }
        None => {
            // Not a known service: pass through unchanged.
            let _open = ctx
                .metrics
                .connection(ctx.direction, ConnProtocol::passthrough);
            let target = OutboundTarget::address(dst, Protocol::Tcp);
            forward_tcp(PrefixedIo::new(bytes::Bytes::new(), stream), &target, &ctx).await;
        }
    }
}

/// An inbound connection (another pod calling the app), redirected to 15006; it goes to
/// the app on loopback, on the port it was addressed to.
pub async fn inbound(stream: TcpStream, ctx: Context) {
    let Some(dst) = redirected_to(&stream) else {
        return;
    };
    let target = ctx.config.tables().inbound_target(dst.port());
    let protocol = target.protocol;
    dispatch(
        stream,
        protocol,
        dst.port(),
        Route::Fixed(target.clone()),
        target,
        &ctx,
    )
    .await;
}

/// A connection on the explicit listener `name`.
pub async fn explicit(stream: TcpStream, name: Arc<str>, ctx: Context) {
    let port = stream.local_addr().map(|a| a.port()).unwrap_or_default();
    let route = Route::Listener(name);
    let Some(target) = route.resolve(&ctx.config.tables()) else {
        return;
    };
    let protocol = target.protocol;
    dispatch(stream, protocol, port, route, target, &ctx).await;
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

/// Serves the connection as HTTP along `route`, or splices it to `target` as TCP.
async fn dispatch(
    mut stream: TcpStream,
    protocol: Protocol,
    port: u16,
    route: Route,
    target: Arc<OutboundTarget>,
    ctx: &Context,
) {
    let _ = stream.set_nodelay(true);
    let (opaque, timeout) = {
        let tables = ctx.config.tables();
        let detection = &tables.config.detection;
        (
            detection.is_opaque(port),
            Duration::from_millis(detection.timeout_ms),
        )
    };
    let protocol = match protocol {
        Protocol::Detect if opaque => Protocol::Tcp,
        p => p,
    };
    let (serve_as, io) = match protocol {
        Protocol::Tcp => (None, PrefixedIo::new(bytes::Bytes::new(), stream)),
        Protocol::Http1 => (
            Some(ServeAs::Http1),
            PrefixedIo::new(bytes::Bytes::new(), stream),
        ),
        Protocol::Http2 => (
            Some(ServeAs::Http2),
            PrefixedIo::new(bytes::Bytes::new(), stream),
        ),
        Protocol::Http | Protocol::Detect => {
            let (found, prefix) = match detect(&mut stream, timeout).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed during detection");
                    return;
                }
            };
            let serve_as = match (found, protocol) {
                (Detected::Http2, _) => Some(ServeAs::Http2),
                (Detected::Http1, _) => Some(ServeAs::Http1),
                // Declared HTTP: anything but the HTTP/2 preface is HTTP/1 (and gets a 400
                // if it is not HTTP at all).
                (_, Protocol::Http) => Some(ServeAs::Http1),
                (Detected::Tls | Detected::Opaque, _) => None,
            };
            (serve_as, PrefixedIo::new(prefix.freeze(), stream))
        }
    };
    match serve_as {
        Some(serve_as) => {
            let protocol = if serve_as == ServeAs::Http2 {
                ConnProtocol::http2
            } else {
                ConnProtocol::http1
            };
            let _open = ctx.metrics.connection(ctx.direction, protocol);
            serve(io, ctx.forwarder(), route, serve_as, ctx.drain.clone()).await;
        }
        None => {
            let _open = ctx.metrics.connection(ctx.direction, ConnProtocol::tcp);
            forward_tcp(io, &target, ctx).await;
        }
    }
}

async fn forward_tcp(io: PrefixedIo<TcpStream>, target: &OutboundTarget, ctx: &Context) {
    let Some(addr) = target.pick() else {
        tracing::warn!(target = %target.label, "no endpoints; closing TCP connection");
        return;
    };
    match ctx.pool.connect_tcp(addr).await {
        Ok(up) => {
            if let Err(e) = splice(io, up).await {
                tracing::debug!(%addr, error = %e, "TCP stream ended with an error");
            }
        }
        Err(e) => tracing::debug!(%addr, error = %e, "TCP connect failed"),
    }
}
