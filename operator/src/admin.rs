//! `/healthz`, `/readyz` and `/metrics` on the admin port (plain HTTP, for kubelet and
//! Prometheus).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::hub::Hub;
use crate::metrics::Metrics;

/// What the admin handlers read.
#[derive(Clone)]
pub struct AdminState {
    /// Compiled configs (ready once there is a first compile).
    pub hub: Arc<Hub>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Whether the config server is accepting connections.
    pub serving: Arc<AtomicBool>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    if !state.serving.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the config server is not accepting connections\n",
        );
    }
    if state.hub.current().is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: the source has not delivered a first snapshot yet\n",
        );
    }
    (StatusCode::OK, "ready\n")
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
