//! Mutual TLS between two real proxies over loopback: a caller's proxy originating mTLS
//! to a server's proxy, which verifies it and counts requests by TLS and caller identity;
//! Strict refusing plaintext, Permissive serving both; a server presenting the wrong
//! identity refused; and the hot switch, where the policy flips under load while not
//! one request fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use support::pki::{IdentityFiles, TestCa};
use support::*;

const WEB: &str = "spiffe://test.local/ns/shop/sa/web";
const PAYMENTS: &str = "spiffe://test.local/ns/shop/sa/payments";

/// The server side: an inbound listener in front of an HTTP app, under `mode`.
fn server_config(
    version: &str,
    ca: &TestCa,
    listen: SocketAddr,
    app: SocketAddr,
    mode: &str,
) -> String {
    format!(
        r#"version: {version}
node: {{workload: payments-0, namespace: shop, serviceAccount: payments}}
trustBundle: |
{bundle}inbound:
  tls: {{mode: {mode}}}
listeners:
- {{name: app, bind: "{listen}", target: {{address: "{app}"}}, side: inbound}}
"#,
        bundle = ca.bundle_yaml()
    )
}

/// The caller side: an outbound listener to service `payments`, whose one endpoint is
/// the server's listener, meshed with identity `expected` and the given TLS settings.
fn caller_config(
    version: &str,
    ca: &TestCa,
    listen: SocketAddr,
    server: SocketAddr,
    expected: &str,
    tls: &str,
) -> String {
    format!(
        r#"version: {version}
node: {{workload: web-0, namespace: shop, serviceAccount: web}}
trustBundle: |
{bundle}services:
- name: payments
  namespace: shop
  vips: [10.96.0.10]
  ports: [{{port: 80, targetPort: {port}, protocol: http}}]
  groups:
  - name: "(default)"
    endpoints:
    - {{address: "{ip}", identity: "{expected}", meshed: true, tls: {tls}}}
listeners:
- {{name: pay, bind: "{listen}", target: {{service: {{name: payments, namespace: shop, port: 80}}}}, protocol: http}}
"#,
        bundle = ca.bundle_yaml(),
        port = server.port(),
        ip = server.ip(),
    )
}

struct Mesh {
    ca: TestCa,
    app: SocketAddr,
    server_addr: SocketAddr,
    caller_addr: SocketAddr,
    server: Proxy,
    caller: Proxy,
    _ids: (IdentityFiles, IdentityFiles),
}

async fn mesh(server_mode: &str, caller_tls: &str, expected: &str) -> Mesh {
    let ca = TestCa::new();
    let app = http_backend("payments").await;
    let server_addr = free_addr();
    let caller_addr = free_addr();
    let server_id = ca.issue(PAYMENTS);
    let caller_id = ca.issue(WEB);
    let server = Proxy::start_with(
        &server_config("s1", &ca, server_addr, app, server_mode),
        &server_id
            .args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    let caller = Proxy::start_with(
        &caller_config("c1", &ca, caller_addr, server_addr, expected, caller_tls),
        &caller_id
            .args()
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    Mesh {
        ca,
        app,
        server_addr,
        caller_addr,
        server,
        caller,
        _ids: (server_id, caller_id),
    }
}

async fn get(addr: SocketAddr) -> hyper::Result<(u16, String, String)> {
    let req = Request::get("/pay")
        .header("host", "payments")
        .body(empty())
        .unwrap();
    let resp = http1_request(addr, req).await?;
    let status = resp.status().as_u16();
    let error = braid_error(&resp);
    Ok((status, error, body_string(resp).await))
}

fn metric_sum(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_originate_mtls_and_servers_know_who_called() {
    let m = mesh("Strict", "{mode: Strict}", PAYMENTS).await;
    // HTTP/2: the five requests share one upstream connection.
    let mut client = http2_client(m.caller_addr).await;
    for _ in 0..5 {
        let req = Request::get("http://payments/pay").body(empty()).unwrap();
        let resp = client.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "{}", braid_error(&resp));
        assert_eq!(body_string(resp).await, "payments GET /pay");
    }
    let server = m.server.admin_get("/metrics").await.1;
    let peer = format!(r#"peer_identity="{WEB}""#);
    assert_eq!(
        metric_sum(
            &server,
            "braid_requests_total",
            &[r#"direction="inbound""#, r#"tls="true""#, &peer]
        ),
        5.0,
        "{server}"
    );
    // Pooled: one handshake carried all five requests.
    assert_eq!(
        metric_sum(
            &server,
            "braid_tls_handshakes_total",
            &[r#"direction="inbound""#, r#"result="ok""#]
        ),
        1.0,
        "{server}"
    );
    let caller = m.caller.admin_get("/metrics").await.1;
    assert_eq!(
        metric_sum(
            &caller,
            "braid_requests_total",
            &[r#"direction="outbound""#, r#"tls="true""#]
        ),
        5.0,
        "{caller}"
    );
    // A plaintext client on the Strict port is closed and counted.
    assert!(
        get(m.server_addr).await.is_err(),
        "Strict must refuse plaintext"
    );
    let server = m.server.admin_get("/metrics").await.1;
    assert_eq!(
        metric_sum(
            &server,
            "braid_tls_refused_connections_total",
            &[r#"reason="plaintext""#]
        ),
        1.0,
        "{server}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_serves_mtls_and_plaintext_on_one_port() {
    let m = mesh(
        "Permissive",
        "{mode: Permissive, rolloutPercent: 100}",
        PAYMENTS,
    )
    .await;
    let (status, _, body) = get(m.server_addr).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "payments GET /pay"));
    let (status, _, body) = get(m.caller_addr).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "payments GET /pay"));
    let server = m.server.admin_get("/metrics").await.1;
    let inbound = r#"direction="inbound""#;
    assert_eq!(
        metric_sum(
            &server,
            "braid_requests_total",
            &[inbound, r#"tls="false""#]
        ),
        1.0,
        "{server}"
    );
    assert_eq!(
        metric_sum(
            &server,
            "braid_requests_total",
            &[inbound, r#"tls="true""#, WEB]
        ),
        1.0,
        "{server}"
    );
    // The app itself is untouched by either.
    assert_eq!(get(m.app).await.unwrap().0, 200);

    // A plaintext keep-alive connection from before the port turned Strict gets no more
    // requests through.
    let stream = tokio::net::TcpStream::connect(m.server_addr).await.unwrap();
    let (mut kept, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = || {
        Request::get("/pay")
            .header("host", "payments")
            .body(empty())
            .unwrap()
    };
    assert_eq!(kept.send_request(req()).await.unwrap().status(), 200);
    m.server
        .write_config(&server_config("s2", &m.ca, m.server_addr, m.app, "Strict"));
    m.server.wait_for_version("s2").await;
    let refused = kept.send_request(req()).await.unwrap();
    assert_eq!(refused.status(), 403);
    let reason = braid_error(&refused);
    assert!(reason.contains("plaintext refused"), "{reason}");
    assert_eq!(
        get(m.caller_addr).await.unwrap().0,
        200,
        "mTLS still served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_server_still_serves_a_caller_that_encrypts() {
    // The caller's config already says Permissive while the server's still says
    // Disabled, as happens for a moment whenever a policy changes.
    let m = mesh(
        "Disabled",
        "{mode: Permissive, rolloutPercent: 100}",
        PAYMENTS,
    )
    .await;
    let (status, _, body) = get(m.caller_addr).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "payments GET /pay"));
    let server = m.server.admin_get("/metrics").await.1;
    assert_eq!(
        metric_sum(&server, "braid_requests_total", &[r#"tls="true""#, WEB]),
        1.0,
        "{server}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_the_wrong_identity_is_refused() {
    let m = mesh(
        "Permissive",
        "{mode: Strict}",
        "spiffe://test.local/ns/shop/sa/ledger",
    )
    .await;
    let (status, error, _) = get(m.caller_addr).await.unwrap();
    assert_eq!(status, 502);
    assert!(
        error.contains("spiffe://test.local/ns/shop/sa/ledger") && error.contains(PAYMENTS),
        "the error names both identities: {error}"
    );
    let caller = m.caller.admin_get("/metrics").await.1;
    assert!(
        metric_sum(
            &caller,
            "braid_tls_handshakes_total",
            &[r#"direction="outbound""#, r#"result="failed""#]
        ) >= 1.0,
        "{caller}"
    );
}

/// Requests in a loop over HTTP/1.1 and HTTP/2 until `stop`; returns (ok, failed).
fn load(
    addr: SocketAddr,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    let mut tasks = Vec::new();
    for h2 in [false, true] {
        for _ in 0..2 {
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0, Vec::new());
                // One long-lived downstream connection each, so pooled upstream
                // connections of the old kind are really in use when the switch comes.
                let mut h2_client = if h2 {
                    Some(http2_client(addr).await)
                } else {
                    None
                };
                while !stop.is_cancelled() {
                    let result = match h2_client.as_mut() {
                        Some(c) => {
                            let req = Request::get("http://payments/pay").body(empty()).unwrap();
                            c.send_request(req).await
                        }
                        None => {
                            let req = Request::get("/pay").header("host", "payments");
                            http1_request(addr, req.body(empty()).unwrap()).await
                        }
                    };
                    match result {
                        Ok(resp) if resp.status() == 200 => ok += 1,
                        Ok(resp) => failed.push(format!(
                            "{} {:?}",
                            resp.status(),
                            resp.headers().get("x-braid-error")
                        )),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            }));
        }
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_policy_flips_under_load_and_no_request_fails() {
    let m = mesh("Disabled", "{mode: Disabled}", PAYMENTS).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let tasks = load(m.caller_addr, stop.clone());
    // Requests taking 1.5 s are in flight on both protocols at every switch: the
    // connections of the old kind must finish them.
    let mut h2 = http2_client(m.caller_addr).await;
    let mut slow = Vec::new();
    let mut n = 1;
    // The order an operator follows: servers accept mTLS before callers originate it,
    // and callers all originate it before servers refuse plaintext; then back.
    let steps = [
        ("server", "Permissive"),
        ("caller", "{mode: Permissive, rolloutPercent: 0}"),
        ("caller", "{mode: Permissive, rolloutPercent: 100}"),
        ("server", "Strict"),
        ("caller", "{mode: Strict}"),
        ("server", "Permissive"),
        ("caller", "{mode: Disabled}"),
        ("server", "Disabled"),
    ];
    for (side, setting) in steps {
        n += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
        let req = Request::get("http://payments/slow").body(empty()).unwrap();
        let stream = h2.send_request(req);
        let addr = m.caller_addr;
        slow.push(tokio::spawn(async move {
            let h2 = stream.await.map(|r| r.status().as_u16());
            let req = Request::get("/slow").header("host", "payments");
            let h1 = http1_request(addr, req.body(empty()).unwrap())
                .await
                .map(|r| r.status().as_u16());
            (h2.ok(), h1.ok())
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let version = format!("v{n}");
        match side {
            "server" => {
                m.server.write_config(&server_config(
                    &version,
                    &m.ca,
                    m.server_addr,
                    m.app,
                    setting,
                ));
                m.server.wait_for_version(&version).await;
            }
            _ => {
                m.caller.write_config(&caller_config(
                    &version,
                    &m.ca,
                    m.caller_addr,
                    m.server_addr,
                    PAYMENTS,
                    setting,
                ));
                m.caller.wait_for_version(&version).await;
            }
        }
    }
    for s in slow {
        assert_eq!(
            s.await.unwrap(),
            (Some(200), Some(200)),
            "a slow request failed"
        );
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.cancel();
    let (mut ok, mut failed) = (0, Vec::new());
    for t in tasks {
        let (o, f) = t.await.unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok + failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests got through");
    // Both kinds really carried traffic along the way.
    let server = m.server.admin_get("/metrics").await.1;
    let inbound = r#"direction="inbound""#;
    let tls = metric_sum(&server, "braid_requests_total", &[inbound, r#"tls="true""#]);
    let plain = metric_sum(
        &server,
        "braid_requests_total",
        &[inbound, r#"tls="false""#],
    );
    assert!(tls > 10.0 && plain > 10.0, "mTLS {tls}, plaintext {plain}");
}

/// A mesh client of `server` as the caller `id` (the proxy's own client TLS), on
/// braid's HTTP/1.1 ALPN.
async fn mesh_connection(
    ca: &TestCa,
    id: &IdentityFiles,
    server: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let store = std::sync::Arc::new(braid_proxy::identity::IdentityStore::default());
    let certified = braid_proxy::identity::Certified::from_files(
        &id.dir.path().join("cert.pem"),
        &id.dir.path().join("key.pem"),
    )
    .unwrap();
    store.install(certified);
    let metrics = braid_proxy::metrics::Metrics::for_workload(None, None);
    let tls = braid_proxy::tls::TlsContext::new(store, metrics.tls.clone());
    tls.set_trust_bundle(&ca.pem);
    let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
    let expected = std::sync::Arc::new(braid_api::config::Identity(PAYMENTS.into()));
    tls.connect(tcp, server, &expected, braid_proxy::tls::Alpn::Http1)
        .await
        .unwrap()
}

/// POSTs on a kept-alive mesh connection; the answer, lower-cased.
async fn answer(conn: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = b"POST /pay HTTP/1.1\r\nhost: payments\r\ncontent-length: 2\r\n\r\nhi";
    conn.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("payments POST /pay") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the connection: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

#[tokio::test]
async fn an_idle_mtls_connection_is_kept_through_a_takeover_until_its_caller_moves() {
    let ca = TestCa::new();
    let app = http_backend("payments").await;
    let server_addr = free_addr();
    let server_id = ca.issue(PAYMENTS);
    let caller_id = ca.issue(WEB);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock").display().to_string();
    let mut args: Vec<String> = server_id.args();
    args.extend(["--handover-socket".to_owned(), socket]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut server =
        Proxy::start_with(&server_config("s1", &ca, server_addr, app, "Strict"), &args).await;
    // A caller's sidecar holding a kept-alive mTLS connection, idle at the takeover.
    let mut conn = mesh_connection(&ca, &caller_id, server_addr).await;
    let first = answer(&mut conn).await;
    assert!(!first.contains("connection: close"), "{first}");

    let successor = server.successor(&args);
    successor.wait_ready().await;
    // The takeover is done (the successor answers the probes); the old proxy still
    // holds the connection: its next request is answered, and told to move on.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = answer(&mut conn).await;
    assert!(second.starts_with("http/1.1 200"), "{second}");
    assert!(second.contains("connection: close"), "{second}");
    // The caller's next connection reaches the successor, which the old proxy handed
    // its identity and Strict to.
    drop(conn);
    assert!(server.exited().await);
    let mut again = mesh_connection(&ca, &caller_id, server_addr).await;
    assert!(answer(&mut again).await.starts_with("http/1.1 200"));
}
