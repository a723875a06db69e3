//! Hitless upgrade between two real proxy processes: a proxy started with the running
//! one's `--handover-socket` takes its listeners, config and kept-alive connections over,
//! and the running one finishes what is in flight and exits.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::path::Path;
use std::time::Duration;

use braid_proxy::handover::frame;
use braid_proxy::handover::wire::Message;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};

fn config(front: std::net::SocketAddr, backend: std::net::SocketAddr) -> String {
    format!(
        "version: h1\nlisteners:\n{}",
        listener("web", front, backend, "http1")
    )
}

async fn start(front: std::net::SocketAddr, socket: &Path) -> Proxy {
    let backend = http_backend("a").await;
    let socket = socket.display().to_string();
    Proxy::start_with(&config(front, backend), &["--handover-socket", &socket]).await
}

#[tokio::test]
async fn a_successor_takes_the_listeners_and_the_kept_alive_connections_over() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let front = free_addr();
    let mut old = start(front, &socket).await;
    let mut idle = TcpStream::connect(front).await.unwrap();
    let (status, body, close) = exchange(&mut idle, "/").await;
    assert_eq!(
        (status.as_str(), body.as_str(), close),
        ("HTTP/1.1 200 OK", "a POST /", false)
    );
    // A request in flight at the takeover.
    let mut busy = TcpStream::connect(front).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let answer = exchange(&mut busy, "/slow").await;
        (answer, busy)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let socket_arg = socket.display().to_string();
    let new = old.successor(&["--handover-socket", &socket_arg]);
    assert!(old.exited().await, "the replaced proxy failed");
    let ((status, body, close), mut busy) = in_flight.await.unwrap();
    assert_eq!(
        (status.as_str(), body.as_str(), close),
        ("HTTP/1.1 200 OK", "a POST /slow", false)
    );

    // Both connections go on, now through the successor, which never accepted them.
    for conn in [&mut idle, &mut busy] {
        let (status, body, close) = exchange(conn, "/").await;
        assert_eq!(
            (status.as_str(), body.as_str(), close),
            ("HTTP/1.1 200 OK", "a POST /", false)
        );
    }
    new.wait_ready().await;
    let (_, metrics) = new.admin_get("/metrics").await;
    // A new process: what it counts, it served.
    assert!(
        metrics.contains(r#"code="200""#),
        "the successor served nothing:\n{metrics}"
    );
    // And new connections reach it on the same port.
    let mut fresh = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut fresh, "/").await.0, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn takeovers_go_on_in_a_row_on_the_socket_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let socket_arg = socket.display().to_string();
    let front = free_addr();
    let mut running = start(front, &socket).await;
    let mut conn = TcpStream::connect(front).await.unwrap();
    for _ in 0..3 {
        let next = running.successor(&["--handover-socket", &socket_arg]);
        assert!(running.exited().await);
        next.wait_ready().await;
        assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
        running = next;
    }
}

#[tokio::test]
async fn a_successor_of_another_protocol_version_is_refused_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let front = free_addr();
    let mut running = start(front, &socket).await;
    let mut conn = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");

    // A future proxy speaking protocol 99.
    let mut stranger = UnixStream::connect(&socket).await.unwrap();
    let hello = Message::Hello {
        version: 99,
        pid: 1,
    };
    frame::send(&mut stranger, &hello, &[], &[]).await.unwrap();
    match frame::recv(&mut stranger).await.unwrap().message {
        Message::Refused { reason } => assert!(reason.contains("99"), "{reason}"),
        other => panic!("not refused: {other:?}"),
    }
    // Garbage, then silence, from another.
    let mut garbage = UnixStream::connect(&socket).await.unwrap();
    garbage.write_all(&[0xff; 12]).await.unwrap();
    drop(garbage);

    assert!(
        running.child.try_wait().unwrap().is_none(),
        "the proxy stopped"
    );
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    // A proper successor still takes over afterwards.
    let socket_arg = socket.display().to_string();
    let next = running.successor(&["--handover-socket", &socket_arg]);
    assert!(running.exited().await);
    next.wait_ready().await;
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn a_stale_socket_left_by_a_killed_proxy_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let front = free_addr();
    let mut first = start(front, &socket).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    assert!(socket.exists());
    let second = start(front, &socket).await;
    let mut conn = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
    drop(second);
}

#[tokio::test]
async fn the_offer_carries_listeners_config_and_what_the_proxy_knows_of_its_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let front = free_addr();
    let backend = http_backend("a").await;
    // A service, so its endpoint is balanced (and measured).
    let config = format!(
        "version: h1\nservices:\n- name: web\n  namespace: t\n  ports: [{{port: 80, targetPort: {port}, protocol: http}}]\n  groups:\n  - {{name: (default), endpoints: [{{address: 127.0.0.1}}]}}\nlisteners:\n- {{name: web, bind: \"{front}\", target: {{service: {{name: web, port: 80}}}}, protocol: http1}}\n",
        port = backend.port()
    );
    let socket_arg = socket.display().to_string();
    let mut running = Proxy::start_with(&config, &["--handover-socket", &socket_arg]).await;
    let mut conn = TcpStream::connect(front).await.unwrap();
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");

    // A successor that looks and leaves without saying ready.
    let mut peek = UnixStream::connect(&socket).await.unwrap();
    let hello = Message::Hello {
        version: braid_proxy::handover::wire::VERSION,
        pid: 1,
    };
    frame::send(&mut peek, &hello, &[], &[]).await.unwrap();
    let offer = frame::recv(&mut peek).await.unwrap();
    let Message::Offer(offered) = offer.message else {
        panic!("no offer: {:?}", offer.message);
    };
    // Every listener, each with its socket, and the handover socket last.
    let roles: Vec<String> = offered
        .listeners
        .iter()
        .map(|l| format!("{:?} {}", l.role, l.addr))
        .collect();
    assert_eq!(offered.listeners.len(), 3, "{roles:?}");
    assert!(
        roles
            .iter()
            .any(|r| r.contains("web") && r.ends_with(&front.to_string())),
        "{roles:?}"
    );
    assert_eq!(offer.fds.len(), 4);
    assert!(offered.handover_socket);
    assert_eq!(offered.config.unwrap().version, "h1");
    // The backend it has sent to, with its latency estimate.
    assert_eq!(offered.endpoints.len(), 1, "{:?}", offered.endpoints);
    assert_eq!(offered.endpoints[0].addr, backend);
    assert!(offered.endpoints[0].rtt_ns > 0.0);
    drop(peek);

    // Nothing changed for the running proxy.
    assert!(running.child.try_wait().unwrap().is_none());
    assert_eq!(exchange(&mut conn, "/").await.0, "HTTP/1.1 200 OK");
}

/// Echoes every chunk back until the caller closes.
async fn echo_backend() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    match tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn echo(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(line.as_bytes()).await.unwrap();
    let mut got = vec![0u8; line.len()];
    tokio::io::AsyncReadExt::read_exact(conn, &mut got)
        .await
        .unwrap_or_else(|e| panic!("the tunnel broke: {e}"));
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn an_open_tcp_tunnel_goes_on_through_each_successor() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("handover.sock");
    let socket_arg = socket.display().to_string();
    let front = free_addr();
    let backend = echo_backend().await;
    let config = format!(
        "version: t1\nlisteners:\n{}",
        listener("db", front, backend, "tcp")
    );
    let mut running = Proxy::start_with(&config, &["--handover-socket", &socket_arg]).await;
    let mut tunnel = TcpStream::connect(front).await.unwrap();
    assert_eq!(echo(&mut tunnel, "one").await, "one");
    for i in 0..3 {
        let next = running.successor(&["--handover-socket", &socket_arg]);
        // It exits once it has handed the tunnel over, not at its drain deadline.
        assert!(running.exited().await);
        next.wait_ready().await;
        let line = format!("after takeover {i}");
        assert_eq!(echo(&mut tunnel, &line).await, line);
        running = next;
    }
    // The tunnel still ends as tunnels do: the client's close reaches the backend, whose
    // close comes back.
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tunnel, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty());
}
