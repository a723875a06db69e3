//! Prometheus scrapes a proxy on its health port, the one that listens on the pod's
//! address: the same metrics as the loopback admin port's `/metrics`, and nothing else
//! of the admin port (no config dump, no log level, no shutdown).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::Request;
use support::*;

/// `GET path` on `addr`: status, content type and body.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let resp = http1_get(addr, "prometheus", path).await;
    let status = resp.status().as_u16();
    let kind = resp
        .headers()
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, kind, body_string(resp).await)
}

#[tokio::test]
async fn the_health_port_serves_the_metrics_and_nothing_of_the_admin_port() {
    let backend = http_backend("app").await;
    let web = free_addr();
    let proxy = Proxy::fronting("web", web, backend, "http1").await;
    let (status, _, _) = get(web, "/").await;
    assert_eq!(status, 200);

    let served = format!(
        r#"braid_requests_total{{direction="outbound",target="{backend}",rule="",group="",code="200",tls="false",peer_identity=""}} 1"#
    );
    for path in [braid_api::ports::SCRAPE_PATH, "/metrics"] {
        let (status, kind, body) = get(proxy.health, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(kind.starts_with("application/openmetrics-text"), "{kind}");
        assert!(body.contains(&served), "{path}:\n{body}");
        assert!(
            body.trim_end().ends_with("# EOF"),
            "{path}: a whole exposition"
        );
    }
    // What only the pod itself may use stays on the loopback admin port.
    for path in ["/config_dump", "/connections", "/healthz"] {
        assert_eq!(get(proxy.health, path).await.0, 404, "{path}");
    }
    for path in ["/logging?level=debug", "/shutdown"] {
        let resp = http1_request(
            proxy.health,
            Request::post(path)
                .header("host", "prometheus")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
        assert!(resp.status().is_client_error(), "{path}: {}", resp.status());
    }
    assert!(
        proxy.is_ready().await,
        "still serving: shutdown was not reachable"
    );
}

#[tokio::test]
async fn tcp_bytes_are_counted_by_target_as_they_move() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = banner_backend("220 db ready").await;
    let front = free_addr();
    let proxy = Proxy::fronting("db", front, backend, "tcp").await;
    let mut conn = tokio::net::TcpStream::connect(front).await.unwrap();
    let mut banner = [0u8; 13];
    conn.read_exact(&mut banner).await.unwrap();
    conn.write_all(b"ping\n").await.unwrap();
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert_eq!(rest, b"PING\n");
    // Counted on the caller's connection: what it sent, and what it got.
    let read = format!(
        r#"braid_tcp_read_bytes_total{{direction="outbound",protocol="tcp",target="{backend}"}} 5"#
    );
    let written = format!(
        r#"braid_tcp_written_bytes_total{{direction="outbound",protocol="tcp",target="{backend}"}} 18"#
    );
    let proxy = &proxy;
    let (read, written) = (&read, &written);
    eventually("the bytes counted", || async move {
        let metrics = proxy.admin_get("/metrics").await.1;
        metrics.contains(read) && metrics.contains(written)
    })
    .await;
}
