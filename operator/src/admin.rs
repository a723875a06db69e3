//! `/healthz`, `/readyz` and `/metrics` on the admin port (plain HTTP, for kubelet and
//! Prometheus), and for `braidctl` `/debug/info` and `/debug/proxies` (see
//! [`crate::debug`]).

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
    /// This replica's name.
    pub replica: String,
    /// Whether this replica leads.
    pub leader: tokio::sync::watch::Receiver<bool>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(braid_api::debug::INFO_PATH, get(info))
        .route(braid_api::debug::PROXIES_PATH, get(proxies))
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

/// This replica: its name, version, whether it leads, when it last compiled.
fn replica_info(state: &AdminState) -> braid_api::debug::OperatorInfo {
    braid_api::debug::OperatorInfo {
        name: state.replica.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        leader: *state.leader.borrow(),
        compiled_at: state.hub.current().and_then(|p| {
            std::time::SystemTime::now()
                .checked_sub(p.seen_at.elapsed())
                .and_then(crate::debug::proxies::rfc3339)
        }),
    }
}

async fn info(State(state): State<AdminState>) -> impl IntoResponse {
    axum::Json(replica_info(&state))
}

async fn proxies(State(state): State<AdminState>) -> impl IntoResponse {
    let proxies = match state.hub.current() {
        Some(published) => crate::debug::proxies::proxy_statuses(
            &published.configs,
            &published.catalog,
            &state.hub.applied(),
            state.hub.ledger(),
        ),
        None => Vec::new(),
    };
    axum::Json(braid_api::debug::ProxiesAnswer {
        replica: replica_info(&state),
        proxies,
    })
}
