//! The webhook's HTTPS server: `POST /inject`, and `/healthz` for probes.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::review::reply;
use crate::metrics::InjectorMetrics;
use crate::settings::Settings;

/// The webhook's routes.
pub fn router(settings: Arc<Settings>) -> Router {
    counted_router(settings, Arc::default())
}

/// [`router`], counting each review in `metrics`.
pub fn counted_router(settings: Arc<Settings>, metrics: Arc<InjectorMetrics>) -> Router {
    Router::new()
        .route(
            "/inject",
            post(|State((s, m)): State<Webhook>, body: Bytes| async move {
                let started = std::time::Instant::now();
                let reply = reply(&body, &s);
                m.reviewed(&reply, started.elapsed());
                let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::BAD_REQUEST);
                (status, axum::Json(reply.body))
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state((settings, metrics))
}

/// What the webhook's handler shares.
type Webhook = (Arc<Settings>, Arc<InjectorMetrics>);

/// The metrics listener's routes: `/metrics`, plain HTTP, for Prometheus.
pub fn metrics_router(metrics: Arc<InjectorMetrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<InjectorMetrics>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}

/// How long the server waits on a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// For the TLS handshake.
    pub handshake: Duration,
    /// For a connection on which no byte moves either way, and for a request's headers
    /// to arrive in full; then the connection is closed. The default (120 s) is longer
    /// than the API server's own idle timeout for webhook connections (90 s), so in
    /// normal operation the API server closes first and never has a POST cut short.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(120),
        }
    }
}

/// Serves `router` over TLS until `stop` fires, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    timeouts: Timeouts,
    stop: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, router, stop) = (acceptor.clone(), router.clone(), stop.clone());
        tracker.spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(timeouts.handshake, acceptor.accept(tcp)).await
            else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            let (io, activity) = Watched::new(tls);
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.idle);
            builder.http2().timer(TokioTimer::new());
            let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(router));
            tokio::pin!(conn);
            let why = tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.cancelled() => "stopping",
                _ = activity.idle_for(timeouts.idle) => "idle",
            };
            // HTTP/2 gets a GOAWAY, HTTP/1.1 is closed between requests; a request
            // still in flight gets a few seconds to finish.
            tracing::debug!(%peer, why, "closing connection");
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// When a byte last moved on a connection, as milliseconds since `start`.
#[derive(Debug, Clone)]
struct Activity {
    start: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Returns once nothing has moved for `idle`. hyper has no idle timeout of its own
    /// for HTTP/2, nor while it waits for the first bytes to tell HTTP/1.1 from HTTP/2.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// A stream that records in its [`Activity`] every read and write that moves bytes.
struct Watched<T> {
    inner: T,
    activity: Activity,
}

impl<T> Watched<T> {
    fn new(inner: T) -> (Self, Activity) {
        let activity = Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        };
        (
            Self {
                inner,
                activity: activity.clone(),
            },
            activity,
        )
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
