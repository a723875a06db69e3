//! Nagle's algorithm is off on every connection the proxy accepts or makes: with it on,
//! a response written in pieces (an HTTP/2 HEADERS frame, then DATA) waits after the
//! first piece for the peer's delayed ACK, 40 ms on Linux, on every such response.
//!
//! The first test reads the option off the running proxy's own sockets (`pidfd_getfd`,
//! then `getsockopt(TCP_NODELAY)`), not from timings; the second shows the stall gone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::{Duration, Instant};

use http::Request;
use rustix::net::sockopt;
use rustix::process::{Pid, PidfdFlags, PidfdGetfdFlags};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every connected TCP socket of process `pid` (listening ones aside), each with whether
/// it has TCP_NODELAY and its two ends, for the message.
fn connected_tcp_sockets(pid: u32) -> Vec<(bool, String)> {
    let pidfd =
        rustix::process::pidfd_open(Pid::from_raw(pid as i32).unwrap(), PidfdFlags::empty())
            .unwrap();
    let mut found = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let entry = entry.unwrap();
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"));
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if !is_socket {
            continue;
        }
        // Closed meanwhile: not ours to judge.
        let Ok(sock) = rustix::process::pidfd_getfd(&pidfd, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let tcp = sockopt::socket_type(&sock) == Ok(rustix::net::SocketType::STREAM)
            && matches!(
                sockopt::socket_domain(&sock),
                Ok(rustix::net::AddressFamily::INET | rustix::net::AddressFamily::INET6)
            );
        if !tcp || sockopt::socket_acceptconn(&sock).unwrap_or(true) {
            continue;
        }
        let Ok(Some(peer)) = rustix::net::getpeername(&sock) else {
            continue;
        };
        let local = rustix::net::getsockname(&sock).unwrap();
        found.push((
            sockopt::tcp_nodelay(&sock).unwrap(),
            format!("fd {fd}: {local:?} -> {peer:?}"),
        ));
    }
    found
}

/// The body of `GET /` (host `web`) on the kept-alive connection `sender`.
async fn get(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
) -> String {
    let req = Request::get("/")
        .header("host", "web")
        .body(empty())
        .unwrap();
    body_string(sender.send_request(req).await.unwrap()).await
}

#[tokio::test]
async fn every_connection_accepted_or_made_has_nagle_off() {
    let backend = http_backend("b1").await;
    let tcp_backend = banner_backend("hello\n").await;
    let (web, opaque) = (free_addr(), free_addr());
    let proxy = Proxy::start(&format!(
        "version: t1\nlisteners:\n{}{}",
        listener("web", web, backend, "detect"),
        listener("opaque", opaque, tcp_backend, "tcp"),
    ))
    .await;

    // Connections held open on each kind of listener: HTTP/1.1 (kept alive), HTTP/2,
    // opaque TCP, and the admin port (kept alive).
    let mut h1 = http1_client(web).await;
    assert_eq!(get(&mut h1).await, "b1 GET /");
    let mut h2 = http2_client(web).await;
    let resp = h2
        .send_request(Request::get("http://web/h2").body(empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(body_string(resp).await, "b1 GET /h2");
    let mut tcp = tokio::net::TcpStream::connect(opaque).await.unwrap();
    let mut banner = [0u8; 6];
    tcp.read_exact(&mut banner).await.unwrap();
    assert_eq!(&banner, b"hello\n");
    let mut admin = tokio::net::TcpStream::connect(proxy.admin).await.unwrap();
    admin
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: admin\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    admin.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");

    let sockets = connected_tcp_sockets(proxy.child.id());
    let without: Vec<&String> = sockets
        .iter()
        .filter(|(on, _)| !on)
        .map(|(_, s)| s)
        .collect();
    assert!(without.is_empty(), "Nagle still on: {without:#?}");
    // Accepted: h1, h2, tcp, admin; made: at least one to each backend.
    assert!(sockets.len() >= 6, "too few connections seen: {sockets:#?}");
    drop((tcp, admin));
    assert_eq!(get(&mut h1).await, "b1 GET /");
}

/// An HTTP/1.1 backend that writes each response in three pieces a few milliseconds
/// apart (the head, a chunk, the last chunk), as an app streaming its answer does.
async fn piecewise_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.clear();
                    let pieces: [&[u8]; 3] = [
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                        b"5\r\nhello\r\n",
                        b"0\r\n\r\n",
                    ];
                    for piece in pieces {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(3)).await;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_response_in_several_pieces_is_not_held_for_a_delayed_ack() {
    let backend = piecewise_backend().await;
    let web = free_addr();
    let _proxy = Proxy::fronting("web", web, backend, "http1").await;
    // One kept-alive connection, one request at a time: the proxy relays each piece as
    // it comes. With Nagle on, a piece written while the one before is not yet
    // acknowledged waits for the client's delayed ACK (~40 ms) each time.
    let mut sender = http1_client(web).await;
    let mut took = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(get(&mut sender).await, "hello");
        took.push(start.elapsed());
    }
    took.sort();
    // 6 ms of it is the backend's own pauses.
    let median = took[took.len() / 2];
    assert!(
        median < Duration::from_millis(30),
        "responses waited for a delayed ACK: median {median:?} of {took:?}"
    );
}
