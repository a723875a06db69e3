//! Config changes under load, bad configs, WebSocket upgrades and draining on SIGTERM,
//! against the real proxy binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn config(version: &str, front: std::net::SocketAddr, target: std::net::SocketAddr) -> String {
    format!(
        "version: {version}\nlisteners:\n- name: web\n  bind: {front}\n  target: {{address: \"{target}\"}}\n  protocol: http1\n"
    )
}

#[tokio::test]
async fn config_changes_apply_without_a_failed_request_and_bad_ones_are_refused() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let front = free_addr();
    let proxy = Proxy::start(&config("v1", front, a)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served_by_b = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (stop, failures, served_by_b, total) = (
            stop.clone(),
            failures.clone(),
            served_by_b.clone(),
            total.clone(),
        );
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get("/")
                    .header("host", "web")
                    .body(empty())
                    .unwrap();
                match http1_request(front, req).await {
                    Ok(resp) if resp.status() == 200 => {
                        if body_string(resp).await.starts_with("b ") {
                            served_by_b.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.write_config(&config("v2", front, b));
    proxy.wait_for_version("v2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A broken file is refused; v2 stays.
    proxy.write_config("listeners: [this is not a listener");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let (status, dump) = proxy.admin_get("/config_dump").await;
    assert_eq!(status, 200);
    assert!(dump.contains(r#""version": "v2""#), "{dump}");
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "requests failed across the config change"
    );
    assert!(
        served_by_b.load(Ordering::Relaxed) > 0,
        "the new target never served"
    );
    assert!(total.load(Ordering::Relaxed) > 20);
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled() {
    websocket_through(&|front, backend| config("ws", front, backend)).await;
}

/// An enforced AccessPolicy with rules on HTTP requests refuses tunnels that would carry
/// requests past them (h2c, CONNECT), but not WebSocket: the relay reads the protocol an
/// upgrade asks for from the head (its `Upgrade` header is hop-by-hop, so a header map
/// built from the head lacks it, and every WebSocket was refused).
#[tokio::test]
async fn websocket_upgrades_pass_an_enforced_policy_with_http_rules() {
    websocket_through(&|front, backend| {
        format!(
            "{}  side: inbound\ninbound:\n  accessPolicies:\n  - name: shop/no-admin\n    action: Deny\n    mode: Enforce\n    rules: [{{name: admin, http: [{{path: {{prefix: /admin}}}}]}}]\n",
            config("ws", front, backend)
        )
    })
    .await;
}

/// Opens a WebSocket through a proxy running `config(front, backend)` and echoes bytes
/// over it.
async fn websocket_through(config: &dyn Fn(std::net::SocketAddr, std::net::SocketAddr) -> String) {
    // A backend that accepts an upgrade and echoes bytes on the raw connection.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let svc = service_fn(|mut req: Request<hyper::body::Incoming>| async move {
            tokio::spawn(async move {
                let mut io = TokioIo::new(hyper::upgrade::on(&mut req).await.unwrap());
                let mut buf = [0u8; 5];
                io.read_exact(&mut buf).await.unwrap();
                io.write_all(&buf).await.unwrap();
            });
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut()
                .insert("connection", "upgrade".parse().unwrap());
            resp.headers_mut()
                .insert("upgrade", "websocket".parse().unwrap());
            Ok::<_, std::convert::Infallible>(resp)
        });
        hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades()
            .await
            .unwrap();
    });
    let front = free_addr();
    let _proxy = Proxy::start(&config(front, backend)).await;
    let stream = tokio::net::TcpStream::connect(front).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::get("/ws")
        .header("host", "web")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    let mut resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let mut io = TokioIo::new(hyper::upgrade::on(&mut resp).await.unwrap());
    io.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    io.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"hello");
}

#[tokio::test]
async fn sigterm_finishes_in_flight_requests_and_refuses_new_connections() {
    let backend = http_backend("slow").await;
    let front = free_addr();
    let mut proxy = Proxy::start(&config("d", front, backend)).await;
    let in_flight = tokio::spawn(async move {
        http1_request(
            front,
            Request::get("/slow")
                .header("host", "web")
                .body(empty())
                .unwrap(),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.terminate();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(front).await.is_err(),
        "a draining proxy still accepts connections"
    );
    let resp = in_flight
        .await
        .unwrap()
        .expect("the in-flight request failed");
    assert_eq!(resp.status(), 200);
    assert_eq!(body_string(resp).await, "slow GET /slow");
    let status = tokio::task::spawn_blocking(move || proxy.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the proxy exited with {status}");
}

#[tokio::test]
async fn post_shutdown_drains_and_exits_like_sigterm() {
    // How a Job's app ends its pod on clusters without native sidecars.
    let backend = http_backend("b").await;
    let front = free_addr();
    let mut proxy = Proxy::start(&config("s", front, backend)).await;
    let req = Request::post("/shutdown")
        .header("host", "admin")
        .body(empty())
        .unwrap();
    let resp = http1_request(proxy.admin, req).await.unwrap();
    assert_eq!(resp.status(), 202);
    let status = tokio::task::spawn_blocking(move || proxy.child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the proxy exited with {status}");
}

#[tokio::test]
async fn a_config_change_reaches_connections_that_are_already_open() {
    let a = http_backend("a").await;
    let b = http_backend("b").await;
    let front = free_addr();
    let proxy = Proxy::start(&config("k1", front, a)).await;
    // One keep-alive HTTP/1.1 connection and one HTTP/2 connection, opened before the change.
    let stream = tokio::net::TcpStream::connect(front).await.unwrap();
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get = || {
        Request::get("/")
            .header("host", "web")
            .body(empty())
            .unwrap()
    };
    for _ in 0..3 {
        let resp = h1.send_request(get()).await.unwrap();
        assert_eq!(body_string(resp).await, "a GET /");
    }
    proxy.write_config(&config("k2", front, b));
    proxy.wait_for_version("k2").await;
    let resp = h1.send_request(get()).await.unwrap();
    assert_eq!(
        body_string(resp).await,
        "b GET /",
        "the open connection still goes to the old target"
    );
}

/// `braid-proxy wait-app-exit` against the proxy at `admin`, watching `app_port`.
fn spawn_wait_app_exit(admin: std::net::SocketAddr, app_port: u16) -> std::process::Child {
    std::process::Command::new(proxy_bin())
        .args(["wait-app-exit", "--admin-addr", &admin.to_string()])
        .args(["--app-ports", &app_port.to_string()])
        .args(["--quiet-ms", "300", "--poll-ms", "50"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Whether `child` is still running after `wait`.
async fn still_running(child: &mut std::process::Child, wait: Duration) -> bool {
    tokio::time::sleep(wait).await;
    child.try_wait().unwrap().is_none()
}

#[tokio::test]
async fn the_pre_stop_hook_holds_until_the_app_stopped_listening_and_calling_out() {
    let backend = http_backend("b").await;
    let front = free_addr();
    let mut proxy = Proxy::start(&config("x", front, backend)).await;
    // The app: a listener on its declared port, and an outbound call open through the
    // proxy (explicit listeners count as outbound, as captured calls do).
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let app_port = app.local_addr().unwrap().port();
    let mut call = tokio::net::TcpStream::connect(front).await.unwrap();
    call.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    call.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");

    let mut hook = spawn_wait_app_exit(proxy.admin, app_port);
    assert!(
        still_running(&mut hook, Duration::from_millis(800)).await,
        "returned while the app still listens"
    );
    drop(app);
    assert!(
        still_running(&mut hook, Duration::from_millis(800)).await,
        "returned while the app's outbound call was still open"
    );
    drop(call);
    let output = tokio::task::spawn_blocking(move || hook.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("still accepts connections"), "{stderr}");
    assert!(stderr.contains("outbound connections open"), "{stderr}");
    assert!(stderr.contains("the app has exited"), "{stderr}");
    // The proxy itself kept running: it is the kubelet's SIGTERM that drains it.
    assert!(proxy.is_ready().await);
    proxy.child.kill().unwrap();
}

#[tokio::test]
async fn the_pre_stop_hook_returns_when_there_is_no_proxy_to_keep() {
    let admin = free_addr();
    let app = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = spawn_wait_app_exit(admin, app.local_addr().unwrap().port());
    let output = tokio::task::spawn_blocking(move || hook.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("does not answer"), "{stderr}");
}
