//! The admin listener (`127.0.0.1:15000`): `/config_dump`, `/metrics`, `/ready`,
//! `/healthz`, `/connections`, `/explain?to=…|inbound=…` (how the proxy would handle
//! one request, see [`crate::explain`]), `POST /logging?level=`, `POST /shutdown`; and
//! the health listener (`15021`): `/ready` and the app's own probes, for kubelet.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod app_probes;

use crate::metrics::Metrics;
use crate::tables::TableStore;

/// Changes the log filter at run time.
pub type SetLogLevel = Arc<dyn Fn(&str) -> Result<(), SetLogLevelError> + Send + Sync>;

/// Why `POST /logging` could not change the log filter.
#[derive(Debug, thiserror::Error)]
pub enum SetLogLevelError {
    /// tracing does not take the filter (the request is at fault).
    #[error("{0}")]
    Filter(#[from] tracing_subscriber::filter::ParseError),
    /// The filter in force could not be replaced (the proxy is at fault).
    #[error("the log filter in force could not be replaced: {0}")]
    Reload(#[from] tracing_subscriber::reload::Error),
}

/// What the admin endpoints read.
#[derive(Clone)]
pub struct AdminState {
    /// The config in force.
    pub config: Arc<TableStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set once the proxy starts draining: it is no longer ready.
    pub draining: Arc<AtomicBool>,
    /// Set while every explicit listener of the config in force is bound.
    pub listeners_bound: Arc<AtomicBool>,
    /// Changes the log filter.
    pub set_log_level: SetLogLevel,
    /// Fired by `POST /shutdown`: drain and exit, as on SIGTERM.
    pub shutdown: CancellationToken,
    /// Mesh TLS: whether the proxy holds its certificate.
    pub tls: Arc<crate::tls::TlsContext>,
}

impl AdminState {
    /// Ready: a config is in force, its explicit listeners are bound, the certificate is
    /// held when the config needs mTLS, and the proxy is not draining.
    pub fn is_ready(&self) -> bool {
        self.config.is_loaded()
            && self.listeners_bound.load(Ordering::Acquire)
            && !self.waiting_for_certificate()
            && !self.draining.load(Ordering::Acquire)
    }

    /// The config needs mTLS (to accept or originate) and no certificate is held yet.
    fn waiting_for_certificate(&self) -> bool {
        self.config.is_loaded()
            && self.config.tables().needs_certificate
            && !self.tls.has_certificate()
    }
}

/// The admin router.
pub fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/config_dump", get(config_dump))
        .route("/metrics", get(metrics))
        .route("/ready", get(ready))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/connections", get(connections))
        .route(braid_api::explain::EXPLAIN_PATH, get(explain))
        .route("/logging", post(logging))
        .route("/shutdown", post(shutdown))
        .with_state(state)
}

/// `POST /shutdown`: drain and exit. For Jobs on clusters without native sidecars, the
/// app's last step calls it so the pod can complete (only reachable from the pod: the
/// admin listener is on loopback).
async fn shutdown(State(s): State<AdminState>) -> impl IntoResponse {
    tracing::info!("shutdown requested on the admin port");
    s.shutdown.cancel();
    (StatusCode::ACCEPTED, "draining, then exiting\n")
}

/// `GET /connections`: connections open now by direction, and inbound HTTP requests the
/// app has not answered yet, as JSON `{"inbound":N,"outbound":M,"inboundRequests":R}`. `wait-app-exit` polls it during pod termination.
async fn connections(State(s): State<AdminState>) -> impl IntoResponse {
    use crate::metrics::Direction;
    axum::Json(OpenConnections {
        inbound: s.metrics.connections.open_connections(Direction::inbound),
        outbound: s.metrics.connections.open_connections(Direction::outbound),
        inbound_requests: s.metrics.http.requests_in_flight(Direction::inbound),
    })
}

/// `GET /explain`: how the proxy would handle the request the query string describes,
/// worked out on the config in force; nothing is recorded.
async fn explain(
    State(s): State<AdminState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> impl IntoResponse {
    match query {
        Ok(Query(pairs)) => explain_answer(&s.config, &pairs),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("the query string cannot be read: {e}\n"),
        ),
    }
}

/// The answer of `GET /explain?<query>` on the config in `store`: 200 and the
/// explanation as JSON, 400 and why the question cannot be answered (naming the
/// parameter), or 503 before any config arrived.
fn explain_answer(
    store: &TableStore,
    query: &[(String, String)],
) -> (StatusCode, [(header::HeaderName, &'static str); 1], String) {
    let text = |status, body: String| (status, [(header::CONTENT_TYPE, "text/plain")], body);
    if !store.is_loaded() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no config yet: nothing to explain until the proxy receives one\n".to_owned(),
        );
    }
    let explanation = match crate::explain::explain(&store.tables(), query) {
        Ok(e) => e,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    match serde_json::to_string_pretty(&explanation) {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        ),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// The body of `GET /connections`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenConnections {
    /// Connections from other pods to the app.
    pub inbound: i64,
    /// Connections from the app to other services (or passed through).
    pub outbound: i64,
    /// Inbound HTTP requests waiting for the app's response.
    #[serde(default)]
    pub inbound_requests: i64,
}

/// The health router, on the pod's address: the proxy's `/ready`, the app's own probes
/// (HTTP, HTTPS, tcpSocket, gRPC) performed against the app on kubelet's behalf
/// (`/app-health/<container>/<kind>`), and the metrics for Prometheus
/// (`braid_api::ports::SCRAPE_PATH`, the path Istio's sidecars use too, and `/metrics`);
/// the health port is never captured. Nothing else of the admin port is served here: the
/// config, the log level and shutdown stay on loopback.
pub fn health_router(state: AdminState, probes: app_probes::AppProbes) -> Router {
    let app = Router::new()
        .route("/app-health/{container}/{kind}", get(app_probes::handle))
        .with_state(Arc::new(app_probes::AppProber::new(probes)));
    Router::new()
        .route("/ready", get(ready))
        .route(braid_api::ports::SCRAPE_PATH, get(metrics))
        .route("/metrics", get(metrics))
        .with_state(state)
        .merge(app)
}

/// Serves `router` on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, router: Router, stop: CancellationToken) {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp: &mut tokio::net::TcpStream| crate::listen::nodelay(tcp));
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin server failed");
    }
}

async fn config_dump(State(s): State<AdminState>) -> impl IntoResponse {
    let tables = s.config.tables();
    match serde_json::to_string_pretty(&*tables.config) {
        Ok(json) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            e.to_string(),
        ),
    }
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn ready(State(s): State<AdminState>) -> impl IntoResponse {
    if s.is_ready() {
        (StatusCode::OK, "ready\n")
    } else if s.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if s.waiting_for_certificate() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no certificate yet, and the config needs mTLS (see the log)\n",
        )
    } else if s.config.is_loaded() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "explicit listeners not bound yet (see the log)\n",
        )
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no config yet\n")
    }
}

async fn logging(
    State(s): State<AdminState>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    set_level(&s.set_log_level, q.get("level").map(String::as_str))
}

/// What `POST /logging?level=` answers, having set the level through `set` if it can.
fn set_level(set: &SetLogLevel, level: Option<&str>) -> (StatusCode, String) {
    let Some(level) = level else {
        return (
            StatusCode::BAD_REQUEST,
            "missing ?level=, e.g. ?level=debug or ?level=braid_proxy=trace\n".to_owned(),
        );
    };
    // EnvFilter takes almost any string (a typo becomes a target with no level), so the
    // filter is checked against what `--log-level` accepts first.
    if let Err(e) = crate::cli::parse_log_filter(level) {
        return (
            StatusCode::BAD_REQUEST,
            format!("level {level:?} refused: {e}\n"),
        );
    }
    match set(level) {
        Ok(()) => (StatusCode::OK, format!("log level set to {level}\n")),
        Err(e @ SetLogLevelError::Filter(_)) => (
            StatusCode::BAD_REQUEST,
            format!("level {level:?} refused: {e}\n"),
        ),
        Err(e @ SetLogLevelError::Reload(_)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("level {level:?} not set: {e}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `SetLogLevel` like `main.rs`'s, over a filter layer that is kept or dropped.
    fn setter(keep_layer: bool) -> (SetLogLevel, impl Sized) {
        let filter = tracing_subscriber::EnvFilter::new("info");
        let (layer, handle) =
            tracing_subscriber::reload::Layer::<_, tracing_subscriber::Registry>::new(filter);
        let layer = keep_layer.then_some(layer);
        let set: SetLogLevel = Arc::new(move |level: &str| {
            handle.reload(tracing_subscriber::EnvFilter::try_new(level)?)?;
            Ok(())
        });
        (set, layer)
    }

    /// The admin router over `store`.
    fn router(store: Arc<TableStore>) -> Router {
        let metrics = Arc::new(Metrics::new());
        let (set_log_level, _layer) = setter(false);
        admin_router(AdminState {
            config: store,
            tls: crate::tls::TlsContext::new(Arc::default(), metrics.tls.clone()),
            metrics,
            draining: Arc::default(),
            listeners_bound: Arc::default(),
            set_log_level,
            shutdown: CancellationToken::new(),
        })
    }

    /// `GET uri` on `router`: the status, the content type and the body.
    async fn get(router: &Router, uri: &str) -> (StatusCode, String, String) {
        use http_body_util::BodyExt;
        use tower::ServiceExt;
        let req = axum::http::Request::get(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, ctype, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn explain_answers_json_or_a_400_naming_the_parameter() {
        let store = Arc::new(TableStore::new(|_| {}).unwrap());
        let router = router(store.clone());
        let (status, _, body) = get(&router, "/explain?to=payments").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        let config: crate::config::ProxyConfig = serde_json::from_value(serde_json::json!({
            "version": "v1",
            "node": {"workload": "w", "namespace": "shop"},
            "services": [{
                "name": "payments", "namespace": "shop", "vips": ["10.96.0.10"],
                "ports": [{"port": 80, "protocol": "http"}],
                "groups": [{"name": "stable", "endpoints": [{"address": "10.0.0.1"}]}]
            }],
            "routes": [{
                "from": "shop/payments", "service": "payments", "namespace": "shop",
                "rules": [{"name": "ann", "match": [{"headers": [{"name": "x-user", "exact": "ann"}]}],
                           "route": [{"group": "stable", "weight": 1}]}]
            }]
        }))
        .unwrap();
        store.apply(config).unwrap();

        let (status, ctype, body) = get(
            &router,
            "/explain?to=payments.shop%3A80&header=x-user%3Aann&path=%2Fa",
        )
        .await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, "application/json"),
            "{body}"
        );
        let e: braid_api::explain::Explanation = serde_json::from_str(&body).unwrap();
        let o = e.outbound.unwrap();
        assert_eq!(
            (e.config_version.as_str(), o.rule.as_deref()),
            ("v1", Some("ann"))
        );
        assert_eq!(e.request.path, "/a");

        let (status, ctype, body) = get(&router, "/explain?to=payments").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            body.contains("no rule of TrafficRoute shop/payments matches the request"),
            "{body}"
        );
        assert_eq!(ctype, "application/json");

        for (uri, starts) in [
            ("/explain", "give to="),
            (
                "/explain?to=nope",
                r#"to: no service "nope" in namespace "shop""#,
            ),
            (
                "/explain?to=payments&header=abc",
                r#"header: "abc" is not name:value"#,
            ),
            ("/explain?inbound=x", "inbound: "),
        ] {
            let (status, ctype, body) = get(&router, uri).await;
            assert_eq!(
                (status, ctype.as_str()),
                (StatusCode::BAD_REQUEST, "text/plain"),
                "{uri}"
            );
            assert!(body.starts_with(starts), "{uri}: {body}");
        }
    }

    #[test]
    fn logging_sets_refuses_or_fails_by_whose_fault_it_is() {
        let (set, _layer) = setter(true);
        assert_eq!(
            set_level(&set, Some("warn,braid_proxy=debug")),
            (
                StatusCode::OK,
                "log level set to warn,braid_proxy=debug\n".to_owned()
            )
        );
        let (status, body) = set_level(&set, Some("loud"));
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.starts_with(r#"level "loud" refused: "#), "{body}");
        assert_eq!(set_level(&set, None).0, StatusCode::BAD_REQUEST);
        // The logger is gone: not the caller's fault.
        let (set, _none) = setter(false);
        let (status, body) = set_level(&set, Some("debug"));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            body.starts_with(
                r#"level "debug" not set: the log filter in force could not be replaced: "#
            ),
            "{body}"
        );
    }
}
