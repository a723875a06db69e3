//! The per-request path: pick the upstream, forward, map failures to statuses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Route;
use super::{ForwardError, Pool, Sticky, is_upgrade, strip_hop_by_hop};
use crate::config::ConfigSource;
use crate::metrics::{Direction, Metrics};
use crate::routing::RequestHead;
use tokio_util::task::TaskTracker;

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Forwards requests for one direction.
#[derive(Clone)]
pub struct Forwarder {
    config: Arc<ConfigSource>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    direction: Direction,
    tracker: TaskTracker,
}

impl Forwarder {
    /// A forwarder sending through `pool`; upgraded tunnels run on `tracker`, so draining
    /// waits for them too.
    pub fn new(
        config: Arc<ConfigSource>,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        direction: Direction,
        tracker: TaskTracker,
    ) -> Self {
        Self {
            config,
            pool,
            metrics,
            direction,
            tracker,
        }
    }

    /// Forwards one request and answers with the upstream's response or an error status.
    /// The target is looked up in the config in force now; `sticky` holds the downstream
    /// connection's own upstream HTTP/1.1 connections.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        route: &Route,
        sticky: &Sticky,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let _in_flight = self.metrics.request_started(self.direction);
        let Some(upstream) = self.config.with_tables(|t| route.resolve(t)) else {
            let e = ForwardError::NoRoute(route.describe());
            tracing::debug!(error = %e, "request failed");
            return error_response(&e);
        };
        let http2 = req.version() == http::Version::HTTP_2;
        let upgrade = !http2 && is_upgrade(req.headers());
        strip_hop_by_hop(req.headers_mut(), upgrade);
        let result = match upstream.pick_for(&RequestHead::of(&req)) {
            Err(e) => Err(ForwardError::from(e)),
            Ok(picked) => match picked.policy.roll_abort() {
                Some(status) => Err(ForwardError::FaultAbort(status)),
                None => {
                    if let Some(delay) = picked.policy.roll_delay() {
                        tokio::time::sleep(delay).await;
                    }
                    let addr = picked.addr;
                    let send = async {
                        if upgrade {
                            self.forward_upgrade(addr, req).await
                        } else if http2 {
                            self.pool.send_h2(addr, req).await
                        } else {
                            self.pool.send_h1(addr, req, sticky).await
                        }
                    };
                    match picked.policy.timeout {
                        // The deadline runs until the response starts.
                        Some(limit) => tokio::time::timeout(limit, send)
                            .await
                            .unwrap_or(Err(ForwardError::RouteTimeout(limit))),
                        None => send.await,
                    }
                }
            },
        };
        let response = match result {
            Ok(mut resp) => {
                let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
                strip_hop_by_hop(resp.headers_mut(), switching);
                resp.map(BodyExt::boxed)
            }
            Err(e) => {
                tracing::debug!(target = %upstream.label, error = %e, "request failed");
                error_response(&e)
            }
        };
        self.metrics.request(
            self.direction,
            &upstream.label,
            response.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
        response
    }

    /// Sends a WebSocket-style upgrade and, on 101, splices the two upgraded connections.
    async fn forward_upgrade(
        &self,
        addr: SocketAddr,
        mut req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ForwardError> {
        let downstream = hyper::upgrade::on(&mut req);
        let mut resp = self.pool.send_upgrade(addr, req).await?;
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream = hyper::upgrade::on(&mut resp);
            self.tracker.spawn(async move {
                match tokio::try_join!(downstream, upstream) {
                    Ok((down, up)) => {
                        let mut down = TokioIo::new(down);
                        let mut up = TokioIo::new(up);
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
        }
        Ok(resp)
    }
}

/// A response for a request the proxy could not forward, with the reason in `x-braid-error`.
pub fn error_response(e: &ForwardError) -> Response<ProxyBody> {
    let reason = e.to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{reason}\n")))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = e.status();
    if let Ok(v) = HeaderValue::from_str(&reason.replace(['\r', '\n'], " ")) {
        resp.headers_mut().insert("x-braid-error", v);
    }
    resp
}

/// How a connection's HTTP is spoken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServeAs {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only.
    Http2,
}

/// Serves HTTP on `io`, forwarding every request along `route`, until the client closes
/// or `drain` fires (then in-flight requests finish and the connection closes gracefully:
/// HTTP/2 clients get GOAWAY).
pub async fn serve<I>(
    io: I,
    forwarder: Forwarder,
    route: Route,
    serve_as: ServeAs,
    drain: tokio_util::sync::CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // HTTP/1.1 serves one request at a time per connection, so the downstream connection
    // can keep "its" upstream connection and skip the pool on every request.
    let sticky = Arc::new(forwarder.pool.sticky());
    let service = service_fn(move |req| {
        let forwarder = forwarder.clone();
        let route = route.clone();
        let sticky = sticky.clone();
        async move { Ok::<_, std::convert::Infallible>(forwarder.forward(req, &route, &sticky).await) }
    });
    let io = TokioIo::new(io);
    // Each version's own server (the protocol is already known, so no version sniffing).
    // Both drain the same way: on `drain`, finish what is in flight, then close.
    macro_rules! drive {
        ($conn:expr) => {{
            let conn = $conn;
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(error = %e, "downstream connection ended");
                    }
                }
                _ = drain.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        }};
    }
    match serve_as {
        ServeAs::Http1 => drive!(
            http1::Builder::new()
                .writev(false)
                // A client may shut down its write side and still wait for the response.
                .half_close(true)
                .serve_connection(io, service)
                .with_upgrades()
        ),
        ServeAs::Http2 => drive!(
            http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(io, service)
        ),
    }
}
