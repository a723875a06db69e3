//! What happens to one accepted connection: find where it was going, decide its protocol
//! (configured, or detected), then serve it as HTTP or splice it as TCP.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::{ConfigSource, OutboundTarget, Protocol};
use crate::detect::{Detected, detect};
use crate::http::{Forwarder, Pool, ServeAs, Upstream, serve};
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
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Which side this is.
    pub direction: Direction,
    /// Fires when the proxy drains.
    pub drain: CancellationToken,
}

impl Context {
    fn forwarder(&self) -> Forwarder {
        Forwarder::new(self.pool.clone(), self.metrics.clone(), self.direction)
    }
}

/// An outbound connection (the app calling out), redirected to 15001.
pub async fn outbound(stream: TcpStream, ctx: Context) {
    let dst = match redirected_to(&stream) {
        Some(dst) => dst,
        None => return,
    };
    let tables = ctx.config.tables();
    match tables.outbound(dst) {
        Some(target) => {
            let protocol = target.protocol;
            dispatch(stream, protocol, dst.port(), target.clone(), &ctx).await;
        }
        None => {
            // Not a known service: pass through unchanged.
            let _open = ctx
                .metrics
                .connection(ctx.direction, ConnProtocol::passthrough);
            forward_tcp(
                PrefixedIo::new(bytes::Bytes::new(), stream),
                &Arc::new(OutboundTarget::address(dst, Protocol::Tcp)),
                &ctx,
            )
            .await;
        }
    }
}

/// An inbound connection (another pod calling the app), redirected to 15006; it goes to
/// the app on the port it was addressed to.
pub async fn inbound(stream: TcpStream, ctx: Context) {
    let dst = match redirected_to(&stream) {
        Some(dst) => dst,
        None => return,
    };
    let protocol = ctx.config.tables().inbound(dst.port()).protocol;
    let app = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), dst.port());
    let upstream = Arc::new(OutboundTarget::address(app, protocol));
    dispatch(stream, protocol, dst.port(), upstream, &ctx).await;
}

/// A connection on an explicit listener, going to `upstream`.
pub async fn explicit(stream: TcpStream, protocol: Protocol, upstream: Upstream, ctx: Context) {
    let port = stream.local_addr().map(|a| a.port()).unwrap_or_default();
    dispatch(stream, protocol, port, upstream, &ctx).await;
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

async fn dispatch(
    mut stream: TcpStream,
    protocol: Protocol,
    port: u16,
    upstream: Upstream,
    ctx: &Context,
) {
    let _ = stream.set_nodelay(true);
    let detection = ctx.config.tables().config.detection.clone();
    let protocol = match protocol {
        Protocol::Detect if detection.is_opaque(port) => Protocol::Tcp,
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
        Protocol::Http => (
            Some(ServeAs::Auto),
            PrefixedIo::new(bytes::Bytes::new(), stream),
        ),
        Protocol::Detect => {
            let timeout = Duration::from_millis(detection.timeout_ms);
            let (found, prefix) = match detect(&mut stream, timeout).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::debug!(error = %e, "connection failed during detection");
                    return;
                }
            };
            let serve_as = match found {
                Detected::Http1 => Some(ServeAs::Http1),
                Detected::Http2 => Some(ServeAs::Http2),
                Detected::Tls | Detected::Opaque => None,
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
            serve(io, ctx.forwarder(), upstream, serve_as, ctx.drain.clone()).await;
        }
        None => {
            let _open = ctx.metrics.connection(ctx.direction, ConnProtocol::tcp);
            forward_tcp(io, &upstream, ctx).await;
        }
    }
}

async fn forward_tcp(io: PrefixedIo<TcpStream>, upstream: &Upstream, ctx: &Context) {
    let Some(addr) = upstream.pick() else {
        tracing::warn!(target = %upstream.label, "no endpoints; closing TCP connection");
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
