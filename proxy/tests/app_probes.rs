//! The health port performs the app's HTTP probes for kubelet (the injector points them
//! there, so they keep working under strict mTLS).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use support::{Proxy, free_addr, http1_request};

async fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
    let req = Request::get(path)
        .header("host", "probe")
        .body(Full::new(Bytes::new()))
        .unwrap();
    http1_request(addr, req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn app_probes_are_answered_with_the_apps_status() {
    let app = support::http_backend("app").await;
    let down = free_addr(); // nothing listens here
    let probes = serde_json::json!({
        "app/readiness": {"port": app.port(), "path": "/healthz"},
        "app/liveness": {"port": down.port(), "path": "/live"},
    })
    .to_string();
    let proxy = Proxy::start_with("version: v1\n", &["--app-probes", &probes]).await;

    assert_eq!(status(proxy.health, "/app-health/app/readiness").await, 200);
    assert_eq!(
        status(proxy.health, "/app-health/app/liveness").await,
        503,
        "the app is down"
    );
    assert_eq!(
        status(proxy.health, "/app-health/app/startup").await,
        404,
        "never handed over"
    );
    assert_eq!(status(proxy.health, "/ready").await, 200);
}
