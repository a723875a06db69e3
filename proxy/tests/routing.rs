//! TrafficRoute rules in the real proxy: header steering to a group, a weighted split,
//! an empty group and an unmatched request, over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::Request;
use support::*;

/// A service `payments` with `Group_1` on 127.0.0.2 and `Group_2` on 127.0.0.3 (both on
/// `port`), an empty `Group_3`, reached through an explicit listener on `front`, and
/// `rules` (YAML list) for it.
fn config(version: &str, front: std::net::SocketAddr, port: u16, rules: &str) -> String {
    format!(
        r#"version: {version}
services:
- name: payments
  namespace: shop
  ports: [{{port: 80, targetPort: {port}, protocol: http}}]
  groups:
  - {{name: Group_1, endpoints: [{{address: 127.0.0.2}}]}}
  - {{name: Group_2, endpoints: [{{address: 127.0.0.3}}]}}
  - {{name: Group_3, endpoints: []}}
routes:
- from: shop/payments
  service: payments
  namespace: shop
  rules:
{rules}
listeners:
- {{name: gw, bind: "{front}", target: {{service: {{name: payments, port: 80}}}}, protocol: http1}}
"#
    )
}

async fn get(front: std::net::SocketAddr, header: Option<(&str, &str)>) -> (u16, String, String) {
    get_at(front, "/", header).await
}

/// GET `path` through `front`: status, body and `x-braid-error`.
async fn get_at(
    front: std::net::SocketAddr,
    path: &str,
    header: Option<(&str, &str)>,
) -> (u16, String, String) {
    let mut req = Request::get(path).header("host", "payments");
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let resp = http1_request(front, req.body(empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let error = braid_error(&resp);
    (status, body_string(resp).await, error)
}

async fn backends() -> u16 {
    let port = free_addr().port();
    http_backend_at(format!("127.0.0.2:{port}").parse().unwrap(), "g1").await;
    http_backend_at(format!("127.0.0.3:{port}").parse().unwrap(), "g2").await;
    port
}

#[tokio::test]
async fn a_header_steers_every_request_to_its_group() {
    let port = backends().await;
    let front = free_addr();
    let rules = r#"  - name: transfers
    match: [{headers: [{name: type, exact: transfer}]}]
    route: [{group: Group_2, weight: 100}]
  - name: default
    route: [{group: Group_1, weight: 100}]"#;
    let _proxy = Proxy::start(&config("r1", front, port, rules)).await;
    for _ in 0..200 {
        let (status, body, _) = get(front, Some(("type", "transfer"))).await;
        assert_eq!((status, body.as_str()), (200, "g2 GET /"));
    }
    for _ in 0..20 {
        let (status, body, _) = get(front, None).await;
        assert_eq!((status, body.as_str()), (200, "g1 GET /"));
    }
}

#[tokio::test]
async fn a_90_10_split_holds_within_three_points() {
    let port = backends().await;
    let front = free_addr();
    let rules = r#"  - name: gray
    route: [{group: Group_1, weight: 90}, {group: Group_2, weight: 10}]"#;
    let _proxy = Proxy::start(&config("r2", front, port, rules)).await;
    let mut canary = 0;
    for _ in 0..2_000 {
        let (status, body, _) = get(front, None).await;
        assert_eq!(status, 200);
        if body.starts_with("g2") {
            canary += 1;
        }
    }
    // 10% of 2,000 = 200; ±3 points = ±60.
    assert!((140..=260).contains(&canary), "{canary} of 2000 to Group_2");
}

#[tokio::test]
async fn an_empty_group_answers_503_and_no_matching_rule_404() {
    let port = backends().await;
    let front = free_addr();
    let rules = r#"  - name: drained
    match: [{headers: [{name: x-group, exact: "3"}]}]
    route: [{group: Group_3, weight: 100}]
  - name: api-only
    match: [{path: {prefix: /api}}]
    route: [{group: Group_1, weight: 100}]"#;
    let _proxy = Proxy::start(&config("r3", front, port, rules)).await;
    let (status, _, error) = get(front, Some(("x-group", "3"))).await;
    assert_eq!(
        (status, error.as_str()),
        (503, "no healthy endpoints in group Group_3")
    );
    let (status, _, error) = get(front, None).await;
    assert_eq!(
        (status, error.as_str()),
        (
            404,
            "no rule of TrafficRoute shop/payments matches the request"
        )
    );
}

#[tokio::test]
async fn a_bad_rule_is_refused_and_the_last_good_routes_stay() {
    let port = backends().await;
    let front = free_addr();
    let good = r#"  - name: all
    route: [{group: Group_2, weight: 100}]"#;
    let proxy = Proxy::start(&config("good", front, port, good)).await;
    let bad = r#"  - name: broken
    match: [{headers: [{name: user, regex: "(unclosed"}]}]
    route: [{group: Group_1, weight: 100}]"#;
    proxy.write_config(&config("bad", front, port, bad));
    // Give the watcher several polls; the version must not change.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(proxy.version_in_force().await, "good");
    assert_eq!(get(front, None).await.1, "g2 GET /");
}

#[tokio::test]
async fn a_rule_timeout_answers_504_before_a_slow_upstream() {
    let port = backends().await;
    let front = free_addr();
    let rules = r#"  - name: slow-guard
    route: [{group: Group_1, weight: 100}]
    timeoutMs: 300"#;
    let _proxy = Proxy::start(&config("t1", front, port, rules)).await;
    // The backend answers /slow after 1.5 s: only the deadline can make this a 504.
    let (status, _, error) = get_at(front, "/slow", None).await;
    assert_eq!(
        (status, error.as_str()),
        (504, "route timeout: no response within 300 ms")
    );
    assert_eq!(get(front, None).await.0, 200);
}

#[tokio::test]
async fn faults_abort_their_share_and_delay_requests() {
    let port = backends().await;
    let front = free_addr();
    let rules = r#"  - name: chaos
    match: [{headers: [{name: x-chaos, present: true}]}]
    route: [{group: Group_1, weight: 100}]
    fault: {abort: {percent: 50, status: 503}}
  - name: slow
    route: [{group: Group_1, weight: 100}]
    fault: {delay: {percent: 100, fixedMs: 200}}"#;
    let _proxy = Proxy::start(&config("f1", front, port, rules)).await;
    let mut aborted = 0;
    for _ in 0..400 {
        let (status, body, error) = get(front, Some(("x-chaos", "1"))).await;
        match status {
            503 => {
                assert_eq!(error, "fault injected");
                aborted += 1;
            }
            200 => assert_eq!(body, "g1 GET /"),
            other => panic!("unexpected {other}"),
        }
    }
    // 50% of 400 = 200; the standard deviation is 10.
    assert!((150..=250).contains(&aborted), "{aborted} of 400 aborted");
    // Every request of the delay rule is held at least 200 ms.
    let started = std::time::Instant::now();
    let (status, body, _) = get(front, None).await;
    assert_eq!((status, body.as_str()), (200, "g1 GET /"));
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
}

/// A mirrored HTTP/1.1 request: the caller gets the real group's answer, and the shadow
/// group gets a copy of the same head and body with `-shadow` on its Host, from the
/// relay's own bytes (before, the relay handed every mirrored route to hyper).
#[tokio::test]
async fn mirrored_http1_requests_copy_head_and_body_to_the_shadow() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let port = free_addr().port();
    http_backend_at(format!("127.0.0.2:{port}").parse().unwrap(), "g1").await;
    let shadow = tokio::net::TcpListener::bind(format!("127.0.0.3:{port}"))
        .await
        .unwrap();
    let (copies, mut copied) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = shadow.accept().await.unwrap();
            let copies = copies.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).ends_with("body!") {
                    let mut chunk = [0u8; 4096];
                    match s.read(&mut chunk).await.unwrap() {
                        0 => return,
                        n => got.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = copies.send(String::from_utf8_lossy(&got).into_owned());
                let _ = s
                    .write_all(b"HTTP/1.1 500 Shadow Failed\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    let front = free_addr();
    let rules = r#"  - name: mirrored
    route: [{group: Group_1, weight: 100}]
    mirror: {group: Group_2, percent: 100}"#;
    let proxy = Proxy::start(&config("m1", front, port, rules)).await;
    let mut c = tokio::net::TcpStream::connect(front).await.unwrap();
    c.write_all(
        b"POST /orders HTTP/1.1\r\nHost: payments:80\r\nX-Id: 7\r\nContent-Length: 5\r\n\r\nbody!",
    )
    .await
    .unwrap();
    let mut got = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), c.read(&mut got))
        .await
        .unwrap()
        .unwrap();
    let got = String::from_utf8_lossy(&got[..n]);
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("g1 POST /orders"),
        "{got}"
    );
    let copy = tokio::time::timeout(std::time::Duration::from_secs(5), copied.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        copy,
        "POST /orders HTTP/1.1\r\nhost: payments-shadow:80\r\nX-Id: 7\r\nContent-Length: 5\r\n\r\nbody!"
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"braid_mirrored_requests_total{target="payments.shop:80",group="Group_2",result="sent"} 1"#),
        "{metrics}"
    );
}
