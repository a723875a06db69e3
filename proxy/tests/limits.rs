//! The connection limits on the real binary, with short flags: a slow or idle caller is
//! cut off on its timeout and counted, a silent or stalled upstream fails the request
//! instead of holding it, a head over the limit gets 431, and a listener at its
//! connection cap makes new callers wait while established ones keep working.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A listener `front` speaking `protocol` to `upstream`.
fn listener_config(front: SocketAddr, upstream: SocketAddr, protocol: &str) -> String {
    format!(
        "listeners:\n- name: front\n  bind: {front}\n  target: {{address: \"{upstream}\"}}\n  protocol: {protocol}\n"
    )
}

/// The proxy in front of `upstream` on an `http1` and a `detect` listener.
async fn start(upstream: SocketAddr, flags: &[&str]) -> (Proxy, SocketAddr, SocketAddr) {
    let (h1, detect) = (free_addr(), free_addr());
    let config = format!(
        "{}{}",
        listener_config(h1, upstream, "http1"),
        listener_config(detect, upstream, "detect")
            .trim_start_matches("listeners:\n")
            .replace("name: front", "name: detect")
    );
    (Proxy::start_with(&config, flags).await, h1, detect)
}

/// What the connection sent until it closed; panics if it stays open for `within`.
async fn until_closed(c: &mut TcpStream, within: Duration) -> String {
    let mut got = Vec::new();
    tokio::time::timeout(within, c.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "still open after {within:?}; got {:?}",
                String::from_utf8_lossy(&got)
            )
        })
        .unwrap();
    String::from_utf8_lossy(&got).into_owned()
}

/// Sends `raw` and reads one response (its body framed by Content-Length).
async fn request(c: &mut TcpStream, raw: &str) -> String {
    c.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = content_length(&text[..end]);
                if got.len() >= end + 4 + len {
                    return text;
                }
            }
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-response: {text}");
            got.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("a response")
}

/// The value of `braid_connection_limits_total` for `limit` (0 when not yet counted).
async fn limit_count(proxy: &Proxy, limit: &str) -> u64 {
    let metrics = proxy.admin_get("/metrics").await.1;
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("braid_connection_limits_total{")
                && l.contains(&format!("limit=\"{limit}\""))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

const GET: &str = "GET / HTTP/1.1\r\nHost: web\r\n\r\n";

#[tokio::test]
async fn a_slow_head_gets_408_and_a_silent_connection_is_closed() {
    let upstream = http_backend("be").await;
    let (proxy, h1, detect) = start(upstream, &["--header-read-timeout", "400ms"]).await;
    for front in [h1, detect] {
        // Slowloris: a header line every 100 ms, never the blank line.
        let mut c = TcpStream::connect(front).await.unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n")
            .await
            .unwrap();
        let trickle = async {
            for i in 0..50 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if c.write_all(format!("x-{i}: y\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        let started = Instant::now();
        trickle.await;
        let got = until_closed(&mut c, Duration::from_secs(3)).await;
        assert!(
            got.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
            "{front}: {got:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{front}");
    }
    // A connection that never sends a byte is closed without an answer (on a detecting
    // port, once detection gives up, it is plain TCP: the app's own timeouts apply).
    let mut c = TcpStream::connect(h1).await.unwrap();
    assert_eq!(until_closed(&mut c, Duration::from_secs(3)).await, "");
    assert!(limit_count(&proxy, "header_read_timeout").await >= 3);
}

#[tokio::test]
async fn a_request_begun_slowly_on_a_detecting_port_is_still_http() {
    let upstream = http_backend("be").await;
    let (proxy, _, detect) = start(upstream, &["--header-read-timeout", "2s"]).await;
    // `G`, a pause past the 300 ms detection timeout, then a request only the proxy
    // refuses (the backend would take it): it was spliced to the app unparsed.
    let mut c = TcpStream::connect(detect).await.unwrap();
    c.write_all(b"G").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let got = request(
        &mut c,
        "ET / HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 501"), "{got}");
    drop(c);
    // A method that never ends is closed at the header-read timeout, not spliced.
    let mut c = TcpStream::connect(detect).await.unwrap();
    c.write_all(b"POS").await.unwrap();
    let started = Instant::now();
    assert_eq!(until_closed(&mut c, Duration::from_secs(4)).await, "");
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert_eq!(limit_count(&proxy, "header_read_timeout").await, 1);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let upstream = http_backend("be").await;
    let h2 = free_addr();
    let (proxy, h1, detect) = start(upstream, &["--idle-timeout", "600ms"]).await;
    proxy.write_config(&format!(
        "{}{}{}",
        listener_config(h1, upstream, "http1"),
        listener_config(detect, upstream, "detect")
            .trim_start_matches("listeners:\n")
            .replace("name: front", "name: detect"),
        listener_config(h2, upstream, "http2")
            .trim_start_matches("listeners:\n")
            .replace("name: front", "name: h2")
    ));
    eventually("the h2 listener", || async {
        TcpStream::connect(h2).await.is_ok()
    })
    .await;
    for front in [h1, detect] {
        let mut c = TcpStream::connect(front).await.unwrap();
        let got = request(&mut c, GET).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        // Well within the idle timeout, the connection is reused.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(request(&mut c, GET).await.starts_with("HTTP/1.1 200"));
        let idle = Instant::now();
        assert_eq!(until_closed(&mut c, Duration::from_secs(3)).await, "");
        assert!(idle.elapsed() >= Duration::from_millis(500), "{front}");
    }
    // HTTP/2: the connection with no open stream is shut down (GOAWAY).
    let mut sender = http2_client(h2).await;
    let resp = sender
        .send_request(
            http::Request::get(format!("http://{upstream}/"))
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = body_string(resp).await;
    eventually("the idle HTTP/2 connection to close", || {
        let closed = sender.is_closed();
        async move { closed }
    })
    .await;
    assert!(limit_count(&proxy, "idle_timeout").await >= 3);
}

/// A backend that counts its requests and answers each after reading its body, per
/// `answer`: "ok" answers at once, "silent" never answers, "stall" sends a head and
/// part of the body, then nothing.
async fn scripted_backend(answer: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
                match answer {
                    "ok" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                            .await;
                    }
                    "stall" => {
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
                            .await;
                    }
                    _ => {}
                }
                // Hold the connection open, reading whatever comes.
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn a_stalled_upload_gets_408_and_is_not_the_backends_fault() {
    let (upstream, seen) = scripted_backend("ok").await;
    let (proxy, h1, _) = start(upstream, &["--request-body-timeout", "400ms"]).await;
    let mut c = TcpStream::connect(h1).await.unwrap();
    c.write_all(b"POST /upload HTTP/1.1\r\nHost: web\r\nContent-Length: 100\r\n\r\nonly ten b")
        .await
        .unwrap();
    let got = until_closed(&mut c, Duration::from_secs(3)).await;
    assert!(got.starts_with("HTTP/1.1 408 Request Timeout\r\n"), "{got}");
    assert_eq!(limit_count(&proxy, "request_body_timeout").await, 1);
    // Nothing was forwarded, nothing counted against the endpoint.
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    let metrics = proxy.admin_get("/metrics").await.1;
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("braid_outlier_ejections_total{") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_silent_upstream_gets_504_and_a_stalled_response_is_cut() {
    let (silent, seen) = scripted_backend("silent").await;
    let (proxy, h1, detect) = start(silent, &["--response-timeout", "500ms"]).await;
    for front in [h1, detect] {
        let mut c = TcpStream::connect(front).await.unwrap();
        let started = Instant::now();
        let got = request(&mut c, GET).await;
        assert!(got.starts_with("HTTP/1.1 504"), "{front}: {got}");
        assert!(started.elapsed() >= Duration::from_millis(450), "{front}");
    }
    assert!(seen.load(Ordering::SeqCst) >= 2);
    assert!(limit_count(&proxy, "response_timeout").await >= 2);
    drop(proxy);

    // A response whose body stops arriving is cut: the caller sees the connection end
    // before the announced length, not a request that hangs for ever.
    let (stall, _) = scripted_backend("stall").await;
    let (proxy, h1, _) = start(stall, &["--response-timeout", "500ms"]).await;
    let mut c = TcpStream::connect(h1).await.unwrap();
    c.write_all(GET.as_bytes()).await.unwrap();
    let got = until_closed(&mut c, Duration::from_secs(3)).await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.ends_with("partial"), "{got}");
    assert_eq!(limit_count(&proxy, "response_timeout").await, 1);
}

#[tokio::test]
async fn a_head_over_the_limit_gets_431() {
    let upstream = http_backend("be").await;
    let (proxy, h1, detect) = start(upstream, &["--max-header-bytes", "4096"]).await;
    let big = format!(
        "GET / HTTP/1.1\r\nHost: web\r\nx-big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    // A head the relay hands to the full server (an upgrade) is bounded the same.
    let upgrade = big.replace(
        "\r\n\r\n",
        "\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    for (front, head) in [(h1, &big), (detect, &big), (h1, &upgrade)] {
        let mut c = TcpStream::connect(front).await.unwrap();
        c.write_all(head.as_bytes()).await.unwrap();
        let got = until_closed(&mut c, Duration::from_secs(3)).await;
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{front}: {got}"
        );
        // Under the limit is fine.
        let mut c = TcpStream::connect(front).await.unwrap();
        let ok = format!(
            "GET / HTTP/1.1\r\nHost: web\r\nx-big: {}\r\n\r\n",
            "a".repeat(3000)
        );
        assert!(request(&mut c, &ok).await.starts_with("HTTP/1.1 200"));
    }
    assert_eq!(limit_count(&proxy, "header_too_large").await, 3);
}

#[tokio::test]
async fn at_the_connection_cap_new_callers_wait_and_established_ones_keep_working() {
    let upstream = http_backend("be").await;
    let (proxy, h1, _) = start(upstream, &["--max-connections", "2"]).await;
    let mut first = TcpStream::connect(h1).await.unwrap();
    let mut second = TcpStream::connect(h1).await.unwrap();
    assert!(request(&mut first, GET).await.starts_with("HTTP/1.1 200"));
    assert!(request(&mut second, GET).await.starts_with("HTTP/1.1 200"));
    // The third waits in the backlog: connected, but nobody reads its request.
    let mut third = TcpStream::connect(h1).await.unwrap();
    third.write_all(GET.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte))
            .await
            .is_err(),
        "the third connection was served past the cap"
    );
    // Established connections keep working at the cap.
    assert!(request(&mut first, GET).await.starts_with("HTTP/1.1 200"));
    assert_eq!(limit_count(&proxy, "max_connections").await, 1);
    // One closes: the waiting caller is served.
    drop(second);
    let got = request(&mut third, "").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn pooled_upstream_connections_idle_too_long_are_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicUsize::new(0));
    let count = closed.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let _ = s
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await;
                        }
                    }
                }
                count.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    let (_proxy, h1, _) = start(upstream, &["--upstream-idle-timeout", "300ms"]).await;
    let mut c = TcpStream::connect(h1).await.unwrap();
    assert!(request(&mut c, GET).await.starts_with("HTTP/1.1 200"));
    drop(c);
    // The proxy, not the backend, closes the pooled connection.
    eventually("the pooled upstream connection to close", || {
        let n = closed.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;
}

#[tokio::test]
async fn a_silent_tcp_connection_is_closed_after_the_tcp_idle_timeout() {
    // An echo server: opaque TCP in both directions.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let front = free_addr();
    let proxy = Proxy::start_with(
        &listener_config(front, upstream, "tcp"),
        &["--tcp-idle-timeout", "600ms"],
    )
    .await;
    let mut c = TcpStream::connect(front).await.unwrap();
    // Bytes every 300 ms keep it open well past the timeout.
    for _ in 0..5 {
        c.write_all(b"ping").await.unwrap();
        let mut got = [0; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let silent = Instant::now();
    assert_eq!(until_closed(&mut c, Duration::from_secs(3)).await, "");
    assert!(silent.elapsed() >= Duration::from_millis(250));
    assert_eq!(limit_count(&proxy, "tcp_idle_timeout").await, 1);
}

#[test]
fn a_bad_limit_flag_is_named_with_its_fix() {
    for (flag, value, says) in [
        ("--idle-timeout", "60", "the unit is missing"),
        ("--header-read-timeout", "soon", "e.g. 500ms, 10s"),
        ("--max-connections", "0", "--max-connections"),
    ] {
        let out = Command::new(proxy_bin())
            .args(["run", "--config", "/nonexistent.yaml", flag, value])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag) && err.contains(says), "{flag}: {err}");
    }
}
