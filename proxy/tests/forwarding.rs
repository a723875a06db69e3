//! The real proxy binary on loopback, through explicit listeners: HTTP/1.1 and HTTP/2
//! both ways, streaming with trailers, opaque server-first TCP, hop-by-hop headers, and
//! failures mapped to statuses with `x-braid-error`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use http::Request;
use http_body_util::BodyExt;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn http1_and_http2_are_forwarded_with_detection() {
    let backend = http_backend("b1").await;
    let front = free_addr();
    let proxy = Proxy::fronting("web", front, backend, "detect").await;

    let resp = http1_request(
        front,
        Request::get("/hello")
            .header("host", "web")
            .header("x-echo", "abc")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-echo"], "abc");
    assert_eq!(body_string(resp).await, "b1 GET /hello");

    let mut h2 = http2_client(front).await;
    let resp = h2
        .send_request(Request::get("http://web/h2").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(body_string(resp).await, "b1 GET /h2");

    let (_, metrics) = proxy.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("braid_requests_total") && l.contains(&backend.to_string()))
        .unwrap();
    assert!(line.ends_with(" 2"), "{line}");
    assert!(
        metrics.contains(r#"braid_tcp_connections_total{direction="outbound",protocol="http2"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn http2_streaming_keeps_trailers() {
    let backend = http_backend("grpc").await;
    let front = free_addr();
    let _proxy = Proxy::fronting("grpc", front, backend, "http2").await;
    let mut h2 = http2_client(front).await;
    let resp = h2
        .send_request(
            Request::post("http://grpc/stream")
                .header("te", "trailers")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(collected.to_bytes(), "one,two,three");
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let backend = http_backend("b").await;
    let front = free_addr();
    let _proxy = Proxy::fronting("web", front, backend, "http1").await;
    let resp = http1_request(
        front,
        Request::get("/")
            .header("host", "web")
            .header("connection", "x-hop")
            .header("x-hop", "1")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(
        !resp.headers().contains_key("x-hop-seen"),
        "a header named in Connection reached the backend"
    );
}

#[tokio::test]
async fn server_speaks_first_tcp_is_not_stalled_by_detection() {
    let backend = banner_backend("220 smtp ready").await;
    let front = free_addr();
    // Detection is on; the client sends nothing until it sees the banner, so the proxy
    // must give up detecting (300 ms default) and splice.
    let _proxy = Proxy::fronting("smtp", front, backend, "detect").await;
    let mut stream = tokio::net::TcpStream::connect(front).await.unwrap();
    let mut banner = vec![0u8; 15];
    stream.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"220 smtp ready\n");
    stream.write_all(b"helo there\n").await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "HELO THERE\n");
}

#[tokio::test]
async fn failures_map_to_statuses_with_a_reason() {
    let dead = free_addr(); // nothing listens here
    let front = free_addr();
    let _proxy = Proxy::fronting("dead", front, dead, "http1").await;
    let resp = http1_request(
        front,
        Request::get("/").header("host", "x").body(empty()).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 502);
    assert!(
        resp.headers()["x-braid-error"]
            .to_str()
            .unwrap()
            .starts_with("connect failure"),
        "{:?}",
        resp.headers()
    );
}

#[tokio::test]
async fn tcp_half_close_is_passed_on() {
    // A backend that reads until the client's EOF, then answers and closes.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = server.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = server.accept().await.unwrap();
        let mut request = Vec::new();
        stream.read_to_end(&mut request).await.unwrap();
        stream
            .write_all(&request.to_ascii_uppercase())
            .await
            .unwrap();
    });
    let front = free_addr();
    let _proxy = Proxy::fronting("tcp", front, backend, "tcp").await;
    let mut stream = tokio::net::TcpStream::connect(front).await.unwrap();
    stream.write_all(b"half closed").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "HALF CLOSED");
}
