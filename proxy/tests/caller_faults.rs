//! A caller's own fault — an upload with broken chunking, or one that stops before the
//! length it announced — is the caller's: it gets 400 (or nothing, when it is gone), and
//! no endpoint is blamed for it: outlier detection ejects nobody.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads the whole request body before it answers `<name> <bytes>`.
async fn reading_backend(bind: SocketAddr, name: &'static str) {
    let listener = TcpListener::bind(bind).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let n = match req.into_body().collect().await {
                        Ok(body) => body.to_bytes().len(),
                        Err(_) => 0,
                    };
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                        format!("{name} {n}"),
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
}

/// `payments` on 127.0.0.2 and 127.0.0.3 (both healthy), ejecting after 3 failures in a
/// row, behind the listener `front`.
fn config(front: SocketAddr, port: u16) -> String {
    format!(
        r#"version: v1
services:
- name: payments
  namespace: shop
  ports: [{{port: 80, targetPort: {port}, protocol: http}}]
  groups:
  - {{name: default, endpoints: [{{address: 127.0.0.2}}, {{address: 127.0.0.3}}]}}
  outlierDetection: {{consecutiveErrors: 3, baseEjectionTimeMs: 30000, maxEjectionTimeMs: 300000, maxEjectionPercent: 100}}
listeners:
- {{name: gw, bind: "{front}", target: {{service: {{name: payments, port: 80}}}}, protocol: http1}}
"#
    )
}

/// Sends `raw` on a new connection, then (with `close`) shuts the write side; what came
/// back before the connection ended (or 3 s passed).
async fn raw(front: SocketAddr, raw: &[u8], close: bool) -> String {
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(raw).await.unwrap();
    if close {
        c.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), c.read_to_end(&mut got)).await;
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn a_callers_broken_upload_is_its_own_and_ejects_no_endpoint() {
    let port = free_addr().port();
    reading_backend(format!("127.0.0.2:{port}").parse().unwrap(), "a").await;
    reading_backend(format!("127.0.0.3:{port}").parse().unwrap(), "b").await;
    let front = free_addr();
    let proxy = Proxy::start(&config(front, port)).await;
    for _ in 0..4 {
        // A bare LF ends the chunk-size line.
        let got = raw(
            front,
            b"POST /upload HTTP/1.1\r\nHost: payments\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            false,
        )
        .await;
        assert!(
            got.starts_with("HTTP/1.1 400 Bad Request\r\n"),
            "a malformed upload is the caller's fault: {got}"
        );
        // 200000 bytes announced, 100000 sent, then the caller is gone.
        let mut upload =
            b"POST /upload HTTP/1.1\r\nHost: payments\r\nContent-Length: 200000\r\n\r\n".to_vec();
        upload.extend(std::iter::repeat_n(b'x', 100_000));
        let got = raw(front, &upload, true).await;
        assert!(!got.contains(" 502 "), "the backend is not to blame: {got}");
    }
    let metrics = proxy.admin_get("/metrics").await.1;
    let ejected: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("braid_outlier_ejections_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(ejected.is_empty(), "healthy endpoints ejected: {ejected:?}");
    // Nothing was held against them: every request is served. (Which endpoint serves
    // each is the balancer's choice over their latencies, not asserted here.)
    for _ in 0..20 {
        let resp = http1_request(
            front,
            Request::post("/")
                .header("host", "payments")
                .body(Full::new(Bytes::from_static(b"ok")))
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        let body = body_string(resp).await;
        assert!(body == "a 2" || body == "b 2", "{body}");
    }
}
