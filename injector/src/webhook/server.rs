//! The webhook's HTTPS server: `POST /inject`, and `/healthz` for probes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::review::review_json;
use crate::settings::Settings;

/// The webhook's routes.
pub fn router(settings: Arc<Settings>) -> Router {
    Router::new()
        .route(
            "/inject",
            post(|State(s): State<Arc<Settings>>, body: Bytes| async move {
                axum::Json(review_json(&body, &s))
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(settings)
}

/// Serves `router` over TLS until `stop` fires, then lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
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
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                tracing::debug!(%peer, "TLS handshake failed");
                return;
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder.http2().timer(TokioTimer::new());
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}
