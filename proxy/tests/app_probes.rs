//! The health port performs the app's probes for kubelet (the injector points them
//! there, so they keep working under strict mTLS and a tcpSocket probe is not answered
//! by the proxy's own inbound listener): plain HTTP, HTTPS without verification, TCP
//! connects and gRPC health checks, each against a real server on loopback. Kubelet
//! judges 200..=399 a pass, so every answer must fall on the same side as kubelet's
//! verdict on the app itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{Frames, Proxy, free_addr, http1_request};
use tokio::net::TcpListener;

/// What kubelet's GET of `path` on the health port gets back.
async fn status(addr: SocketAddr, path: &str) -> u16 {
    let req = Request::get(path)
        .header("host", format!("10.240.0.7:{}", addr.port()))
        .header("user-agent", "kube-probe/1.28")
        .body(Full::new(Bytes::new()))
        .unwrap();
    http1_request(addr, req).await.unwrap().status().as_u16()
}

/// kubelet's verdict on an httpGet answer.
fn passes(status: u16) -> bool {
    (200..400).contains(&status)
}

#[tokio::test]
async fn http_probes_in_the_earlier_injectors_shape_are_answered_with_the_apps_status() {
    let app = support::http_backend("app").await;
    let down = free_addr(); // nothing listens here
    // No kind: what injectors before tcpSocket/HTTPS/gRPC were taken over wrote.
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

#[tokio::test]
async fn tcp_probes_pass_only_while_the_app_listens() {
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = free_addr();
    let probes = serde_json::json!({
        "app/liveness": {"tcp": {"port": open.local_addr().unwrap().port()}},
        "app/readiness": {"tcp": {"port": closed.port()}},
    })
    .to_string();
    let proxy = Proxy::start_with("version: v1\n", &["--app-probes", &probes]).await;
    assert_eq!(status(proxy.health, "/app-health/app/liveness").await, 200);
    assert_eq!(
        status(proxy.health, "/app-health/app/readiness").await,
        503,
        "nothing listens: kubelet's connect would be refused"
    );
    drop(open);
    assert_eq!(
        status(proxy.health, "/app-health/app/liveness").await,
        503,
        "the app closed its port"
    );
}

/// What the HTTPS app saw of the probe's requests: (SNI, path, Host, User-Agent).
type Seen = Arc<Mutex<Vec<(Option<String>, String, String, String)>>>;

/// An HTTPS (HTTP/1.1) app with a self-signed certificate for `app.example`:
/// `/healthz` 200, `/fail` 500, `/moved` 302 to `/healthz`, `/moved-to-fail` 302 to
/// `fail` (relative), `/elsewhere` 302 to another host, `/loop` 302 to itself.
async fn https_app(seen: Seen) -> SocketAddr {
    let cert = rcgen::generate_simple_self_signed(vec!["app.example".to_owned()]).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().map(str::to_owned);
                let svc = service_fn(move |req: Request<Incoming>| {
                    let header = |name: &str| {
                        req.headers()
                            .get(name)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default()
                    };
                    seen.lock().unwrap().push((
                        sni.clone(),
                        req.uri().to_string(),
                        header("host"),
                        header("user-agent"),
                    ));
                    let (status, location) = match req.uri().path() {
                        "/healthz" => (200, None),
                        "/fail" => (500, None),
                        "/moved" => (302, Some("/healthz".to_owned())),
                        "/moved-to-fail" => (302, Some("fail".to_owned())),
                        "/elsewhere" => (302, Some("https://login.example/fail".to_owned())),
                        "/loop" => (307, Some("/loop".to_owned())),
                        _ => (404, None),
                    };
                    let mut resp = Response::builder().status(status);
                    if let Some(l) = location {
                        resp = resp.header("location", l);
                    }
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            resp.body(Full::new(Bytes::from("body"))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_probes_skip_verification_and_judge_like_kubelet() {
    let seen = Seen::default();
    let app = https_app(seen.clone()).await;
    let plain = support::http_backend("plain").await;
    let https = |path: &str| {
        serde_json::json!({"https": {"port": app.port(), "path": path,
            "headers": if path == "/healthz?x=1" { serde_json::json!([["Host", "app.example"]]) } else { serde_json::json!([]) }}})
    };
    let probes = serde_json::json!({
        "ok/readiness": https("/healthz?x=1"),
        "ok/liveness": https("/healthz"),
        "fail/readiness": https("/fail"),
        "moved/readiness": https("/moved"),
        "moved/liveness": https("/moved-to-fail"),
        "elsewhere/readiness": https("/elsewhere"),
        "loop/readiness": https("/loop"),
        "plain/readiness": {"https": {"port": plain.port(), "path": "/"}},
    })
    .to_string();
    let proxy = Proxy::start_with("version: v1\n", &["--app-probes", &probes]).await;
    let verdict = |probe: &'static str| async move {
        passes(status(proxy.health, &format!("/app-health/{probe}")).await)
    };
    // A self-signed certificate kubelet would not verify either.
    assert!(verdict("ok/readiness").await);
    assert!(verdict("ok/liveness").await);
    assert!(!verdict("fail/readiness").await, "the app answered 500");
    // Same-host redirects are followed, as kubelet does; another host's 302 is a pass
    // (kubelet stops there with a warning); ten in a row fail.
    assert!(verdict("moved/readiness").await);
    assert!(!verdict("moved/liveness").await, "redirected to a 500");
    assert!(verdict("elsewhere/readiness").await);
    assert!(!verdict("loop/readiness").await, "a redirect loop");
    assert!(
        !verdict("plain/readiness").await,
        "no TLS at the app's port"
    );

    let seen = seen.lock().unwrap().clone();
    let (sni, path, host, agent) = &seen[0];
    assert_eq!(
        sni, &None,
        "no SNI for an IP address, as kubelet's Go client"
    );
    assert_eq!(path, "/healthz?x=1");
    assert_eq!(host, "app.example", "the probe's own Host header");
    assert_eq!(
        agent, "kube-probe/1.28",
        "kubelet's user agent passes through"
    );
    let (_, _, host, _) = &seen[1];
    assert_eq!(host, &format!("127.0.0.1:{}", app.port()));
    assert!(
        seen.iter().any(|(_, p, _, _)| p == "/fail"),
        "the relative redirect was resolved against the path"
    );
}

// ---- gRPC ----

/// A framed grpc.health.v1.HealthCheckResponse{status}: written here apart from the
/// proxy's encoder, so each checks the other.
fn health_response(status: u8) -> Bytes {
    let mut out = BytesMut::new();
    out.put_u8(0);
    out.put_u32(2);
    out.put_slice(&[0x08, status]);
    out.freeze()
}

/// The service named in a framed HealthCheckRequest (one string field, tag 1).
fn requested_service(body: &[u8]) -> String {
    let msg = &body[5..];
    if msg.is_empty() {
        return String::new();
    }
    assert_eq!(msg[0], 0x0a, "field 1, length-delimited");
    let len = msg[1] as usize;
    String::from_utf8(msg[2..2 + len].to_vec()).unwrap()
}

/// A gRPC health server (h2c): "" and `shop.Payments` SERVING, `shop.Down`
/// NOT_SERVING, `shop.Lying` SERVING with a failing `grpc-status`, anything else
/// NOT_FOUND.
async fn grpc_health_app() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    assert_eq!(req.uri().path(), "/grpc.health.v1.Health/Check");
                    assert_eq!(req.headers()["content-type"], "application/grpc");
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let (message, code) = match requested_service(&body).as_str() {
                        "" | "shop.Payments" => (Some(1), "0"),
                        "shop.Down" => (Some(2), "0"),
                        "shop.Lying" => (Some(1), "14"),
                        _ => (None, "5"),
                    };
                    let mut frames = VecDeque::new();
                    if let Some(status) = message {
                        frames.push_back(Frame::data(health_response(status)));
                    }
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", code.parse().unwrap());
                    frames.push_back(Frame::trailers(trailers));
                    let resp = Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "application/grpc")
                        .body(Frames(frames))
                        .unwrap();
                    Ok::<_, hyper::Error>(resp)
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn grpc_probes_pass_only_when_the_service_is_serving() {
    let app = grpc_health_app().await;
    let down = free_addr();
    let grpc =
        |port: u16, service: &str| serde_json::json!({"grpc": {"port": port, "service": service}});
    let probes = serde_json::json!({
        "app/readiness": grpc(app.port(), ""),
        "app/liveness": grpc(app.port(), "shop.Payments"),
        "app/startup": grpc(app.port(), "shop.Down"),
        "lying/readiness": grpc(app.port(), "shop.Lying"),
        "unknown/readiness": grpc(app.port(), "shop.Unknown"),
        "gone/readiness": grpc(down.port(), ""),
        "http1/readiness": grpc(support::http_backend("h1").await.port(), ""),
    })
    .to_string();
    let proxy = Proxy::start_with("version: v1\n", &["--app-probes", &probes]).await;
    let answer = |probe: &'static str| async move {
        status(proxy.health, &format!("/app-health/{probe}")).await
    };
    assert_eq!(answer("app/readiness").await, 200, "SERVING");
    assert_eq!(answer("app/liveness").await, 200, "SERVING, by name");
    assert_eq!(answer("app/startup").await, 503, "NOT_SERVING");
    assert_eq!(answer("lying/readiness").await, 503, "grpc-status 14");
    assert_eq!(answer("unknown/readiness").await, 503, "NOT_FOUND");
    assert_eq!(answer("gone/readiness").await, 503, "no server");
    assert_eq!(answer("http1/readiness").await, 503, "not a gRPC server");
}
