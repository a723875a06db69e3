//! The HTTP/1.1 relay on the real binary: a scripted upstream answers with raw bytes
//! (chunked with trailers in pieces, close-delimited, HEAD, 204, interim 1xx, garbage),
//! and a raw client checks what arrives byte for byte: framing, hop-by-hop headers,
//! pipelining, request bodies, a closed idle upstream connection; and what the relay
//! once handed to a second engine (hyper): chunked and large uploads streamed,
//! `Expect: 100-continue`, HTTP/1.0, answers that come before the upload ends, CONNECT
//! tunnels.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted upstream saw: each request head (and body) as received.
type Seen = Arc<Mutex<Vec<String>>>;

/// An upstream that answers each request with the script's answer for its path (the
/// first line's second word), written in pieces of `piece` bytes. `/close-after` closes
/// the connection after answering; `/garbage` answers something that is not HTTP.
async fn scripted(piece: usize) -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = find(&buf, b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end + 4]).to_string();
                    let len = content_length(&head);
                    while buf.len() < end + 4 + len {
                        let mut chunk = [0u8; 4096];
                        let n = s.read(&mut chunk).await.unwrap();
                        assert!(n > 0, "body cut short");
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    buf.drain(..end + 4 + len);
                    log.lock().unwrap().push(format!("{head}{body}"));
                    let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                    let answer = answer(&path, &body);
                    for part in answer.as_bytes().chunks(piece) {
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    if path.starts_with("/close") || path == "/garbage" || path == "/until-close" {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

fn answer(path: &str, body: &str) -> String {
    match path {
        "/chunked" => "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n".into(),
        "/until-close" => "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it".into(),
        "/head" | "/length" => "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nlength".into(),
        "/no-content" => "HTTP/1.1 204 No Content\r\n\r\n".into(),
        "/early-hints" => "HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal".into(),
        "/hop" => "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nKeep-Alive: timeout=5\r\nContent-Length: 3\r\n\r\nhop".into(),
        "/garbage" => "SSH-2.0-OpenSSH\r\n\r\n".into(),
        "/both" => "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n".into(),
        "/close-after" => "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst".into(),
        _ => format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}{body}", path.len() + body.len()),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn relay_to(upstream: SocketAddr) -> (Proxy, SocketAddr) {
    let front = free_addr();
    let proxy = Proxy::start(&format!(
        "listeners:\n- name: relay\n  bind: {front}\n  target: {{address: \"{upstream}\"}}\n  protocol: http1\n"
    ))
    .await;
    (proxy, front)
}

/// Sends `raw` on `conn` and reads until `until` has arrived (or the connection closes).
async fn exchange(conn: &mut TcpStream, raw: &str, until: &str) -> String {
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = async {
        while !String::from_utf8_lossy(&got).contains(until) {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await.unwrap() {
                0 => break,
                n => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .unwrap_or_else(|_| panic!("no {until:?} in {:?}", String::from_utf8_lossy(&got)));
    String::from_utf8_lossy(&got).to_string()
}

/// Reads until the proxy closes the connection (within 5 s, else `what` failed).
async fn until_closed(conn: &mut TcpStream, what: &str) -> String {
    let mut got = String::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_string(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what}: still open after 5 s"))
        .unwrap();
    got
}

/// Sends `raw` and reads one whole response that carries a Content-Length.
async fn sized(conn: &mut TcpStream, raw: &str) -> String {
    let mut got = exchange(conn, raw, "\r\n\r\n").await;
    let end = got.find("\r\n\r\n").unwrap() + 4;
    assert!(
        got[..end].to_ascii_lowercase().contains("content-length: "),
        "{got}"
    );
    let len = content_length(&got[..end]);
    while got.len() < end + len {
        let mut chunk = [0u8; 4096];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "cut short: {got}");
        got.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    got
}

#[tokio::test]
async fn bodies_arrive_framed_as_the_upstream_framed_them() {
    let (upstream, _) = scripted(3).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    // Chunked, in 3-byte pieces, with a trailer: passed on byte for byte.
    let got = exchange(
        &mut c,
        "GET /chunked HTTP/1.1\r\nHost: a\r\n\r\n",
        "x-sum: 12\r\n\r\n",
    )
    .await;
    assert!(
        got.ends_with("5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-sum: 12\r\n\r\n"),
        "{got}"
    );
    assert!(got.contains("Transfer-Encoding: chunked\r\n"), "{got}");
    // The same connection goes on: a HEAD's answer has no body even with a length.
    let got = exchange(&mut c, "HEAD /head HTTP/1.1\r\nHost: a\r\n\r\n", "\r\n\r\n").await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\n"),
        "{got}"
    );
    assert!(got.ends_with("\r\n\r\n"), "{got}");
    let got = exchange(
        &mut c,
        "GET /no-content HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert_eq!(got, "HTTP/1.1 204 No Content\r\n\r\n");
    // An interim 103 is dropped (as hyper's client does); the final answer follows.
    let got = exchange(
        &mut c,
        "GET /early-hints HTTP/1.1\r\nHost: a\r\n\r\n",
        "final",
    )
    .await;
    assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
    // A body that ends with the upstream's connection: the caller is told, and closed.
    let got = exchange(
        &mut c,
        "GET /until-close HTTP/1.1\r\nHost: a\r\n\r\n",
        "all of it",
    )
    .await;
    assert!(got.contains("connection: close\r\n"), "{got}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n, 0,
        "the caller's connection closes after a close-delimited body"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy_and_bodies_and_pipelines_pass() {
    let (upstream, seen) = scripted(1024).await;
    let (proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let got = exchange(
        &mut c,
        "GET /hop HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nKeep-Alive: 300\r\nTE: trailers\r\nX-Kept: 1\r\n\r\n",
        "hop",
    )
    .await;
    assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nhop");
    let first = seen.lock().unwrap()[0].clone();
    assert_eq!(
        first,
        "GET /hop HTTP/1.1\r\nHost: a\r\nte: trailers\r\nX-Kept: 1\r\n\r\n"
    );
    // Two requests in one write, the first with a body: both answered, in order.
    let got = exchange(
        &mut c,
        "POST /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /two HTTP/1.1\r\nHost: a\r\n\r\n",
        "/two",
    )
    .await;
    assert_eq!(
        got,
        "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n/onehelloHTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n/two"
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("braid_requests_total") && l.contains(r#"code="200""#))
        .unwrap();
    assert!(line.ends_with(" 3"), "{line}");
}

#[tokio::test]
async fn a_closed_idle_upstream_connection_is_replaced_and_garbage_is_a_502() {
    let (upstream, seen) = scripted(1024).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    // The upstream closes after answering: the held connection is seen to be closed
    // before the next request goes out, so even a POST gets through on a new one.
    let got = exchange(
        &mut c,
        "GET /close-after HTTP/1.1\r\nHost: a\r\n\r\n",
        "first",
    )
    .await;
    assert!(got.ends_with("first"), "{got}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let got = exchange(
        &mut c,
        "POST /again HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody",
        "/againbody",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert_eq!(seen.lock().unwrap().len(), 2);
    let got = sized(&mut c, "GET /garbage HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
    assert!(
        got.contains("x-braid-error: upstream failure: malformed HTTP/1 head"),
        "{got}"
    );
    // The caller's connection is still good.
    let got = exchange(&mut c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n", "/after").await;
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
}

/// An upstream that takes one connection and reads from it until `until` has arrived,
/// telling `first` once `first_seen` has; then it answers `answer` and hands back all it
/// read.
fn one_connection(
    listener: TcpListener,
    first_seen: &'static [u8],
    until: &'static [u8],
    answer: &'static [u8],
) -> (
    tokio::sync::oneshot::Receiver<()>,
    tokio::task::JoinHandle<String>,
) {
    let (first, first_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut first = Some(first);
        while find(&got, until).is_none() {
            let mut chunk = [0u8; 4096];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "cut short: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&chunk[..n]);
            if find(&got, first_seen).is_some()
                && let Some(tx) = first.take()
            {
                let _ = tx.send(());
            }
        }
        s.write_all(answer).await.unwrap();
        String::from_utf8_lossy(&got).into_owned()
    });
    (first_rx, server)
}

// Before: the relay handed a chunked upload to hyper's server, which forwarded it with
// its own header spelling; one parser now frames every message, and the body streams.
#[tokio::test]
async fn a_chunked_upload_streams_through_the_relay_byte_for_byte() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (first, server) = one_connection(
        listener,
        b"3\r\nabc\r\n",
        b"0\r\nx-sum: 6\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    );
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    c.write_all(format!("{head}3\r\nabc\r\n").as_bytes())
        .await
        .unwrap();
    // The first chunk reaches the backend before the caller sends the rest.
    tokio::time::timeout(Duration::from_secs(5), first)
        .await
        .expect("the first chunk streamed on, not held for the whole body")
        .unwrap();
    let got = exchange(&mut c, "3\r\ndef\r\n0\r\nx-sum: 6\r\n\r\n", "ok").await;
    assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        server.await.unwrap(),
        format!("{head}3\r\nabc\r\n3\r\ndef\r\n0\r\nx-sum: 6\r\n\r\n")
    );
}

#[tokio::test]
async fn a_broken_chunked_upload_is_the_callers_400_and_closes() {
    let (upstream, _) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(
        b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let got = until_closed(&mut c, "answered and closed").await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    assert!(got.contains("malformed chunked body"), "{got}");
    assert!(got.contains("connection: close\r\n"), "{got}");
}

#[tokio::test]
async fn http10_goes_on_as_http10_and_keeps_alive_only_when_asked() {
    let (upstream, seen) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let got = until_closed(&mut c, "an HTTP/1.0 connection closes after its answer").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(
        got.contains("connection: close\r\n") && got.ends_with("/old"),
        "{got}"
    );
    assert_eq!(seen.lock().unwrap()[0], "GET /old HTTP/1.0\r\n\r\n");
    // Kept alive when asked, and said so: two requests on one connection.
    let mut c = TcpStream::connect(front).await.unwrap();
    for path in ["/one", "/two"] {
        let got = sized(
            &mut c,
            &format!("GET {path} HTTP/1.0\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"),
        )
        .await;
        assert!(
            got.contains("connection: keep-alive\r\n") && got.ends_with(path),
            "{got}"
        );
    }
}

/// `Expect: 100-continue`: the proxy says `100 Continue` once it wants the body (small
/// and held, or large and streamed), and the expectation goes no further.
#[tokio::test]
async fn expect_100_continue_is_answered_and_the_body_follows() {
    let (upstream, seen) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    for size in [5, 200_000] {
        let body = "x".repeat(size);
        let got = exchange(
            &mut c,
            &format!("PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {size}\r\n\r\n"),
            "\r\n\r\n",
        )
        .await;
        assert_eq!(got, "HTTP/1.1 100 Continue\r\n\r\n");
        let got = sized(&mut c, &body).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &got[..100]);
        assert!(got.ends_with(&format!("/up{body}")));
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| !s.to_ascii_lowercase().contains("expect")),
        "{}",
        &seen[0]
    );
    // A body that all arrived with the head gets no 100.
    let got = sized(
        &mut c,
        "PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with("/uphi"),
        "{got}"
    );
}

/// An upstream that refuses an upload before reading it (413): that is the answer, and
/// the caller's connection closes after it, as its body was not read.
#[tokio::test]
async fn an_answer_before_the_upload_ends_is_passed_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (_, server) = one_connection(
        listener,
        b"\r\n\r\n",
        b"\r\n\r\n",
        b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\n\r\nbig!",
    );
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    c.write_all(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 10000000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let got = until_closed(&mut c, "the early answer, then the close").await;
    assert!(
        got.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{got}"
    );
    assert!(
        got.contains("connection: close\r\n") && got.ends_with("big!"),
        "{got}"
    );
    assert!(server.await.unwrap().starts_with("POST /big HTTP/1.1\r\n"));
}

// Found by review: `Connection: content-length` made the rebuilt head drop the length,
// so the upstream read the body as a request of its own, past every rule.
#[tokio::test]
async fn a_length_named_as_a_connection_option_still_frames_the_body() {
    let (upstream, seen) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let got = sized(
        &mut c,
        &format!(
            "POST /a HTTP/1.1\r\nHost: a\r\nConnection: content-length\r\nContent-Length: {}\r\n\r\n{hidden}",
            hidden.len()
        ),
    )
    .await;
    assert!(
        got.starts_with("HTTP/1.1 200 OK\r\n") && got.ends_with(hidden),
        "{got}"
    );
    let got = sized(&mut c, "GET /after HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(got.ends_with("/after"), "{got}");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen.iter().all(|r| !r.starts_with("GET /smuggled")),
        "{seen:?}"
    );
}

// Found by review: while the proxy was writing a fast upload, it did not watch for the
// upstream's answer, and gave the caller a 502 (or a 504 minutes later) for a 413.
#[tokio::test]
async fn an_answer_during_a_fast_upload_is_passed_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut head = [0u8; 1024];
            let _ = s.read(&mut head).await.unwrap();
            s.write_all(b"HTTP/1.1 413 Content Too Large\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbig!")
                .await
                .unwrap();
            // It reads no more, and closes.
        }
    });
    let (_proxy, front) = relay_to(upstream).await;
    let c = TcpStream::connect(front).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let size = 64 << 20;
    tokio::spawn(async move {
        let head = format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {size}\r\n\r\n");
        let _ = w.write_all(head.as_bytes()).await;
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            if w.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut got)).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 413 Content Too Large\r\n"),
        "{got}"
    );
    assert!(got.ends_with("big!"), "{got}");
}

/// CONNECT: a 2xx makes the connection a tunnel, and bytes sent with the request or
/// with the answer are not lost.
#[tokio::test]
async fn connect_opens_a_tunnel() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        while find(&got, b"\r\n\r\n").is_none() {
            let mut chunk = [0u8; 1024];
            let n = s.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert!(got.starts_with(b"CONNECT db:5432 HTTP/1.1\r\n"));
        s.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\nhello ")
            .await
            .unwrap();
        // An echo, from the bytes that came with the request on.
        let rest = got.split_off(find(&got, b"\r\n\r\n").unwrap() + 4);
        s.write_all(&rest).await.unwrap();
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let got = exchange(
        &mut c,
        "CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\nearly",
        "early",
    )
    .await;
    assert_eq!(
        got,
        "HTTP/1.1 200 Connection Established\r\n\r\nhello early"
    );
    let got = exchange(&mut c, " and later", "later").await;
    assert_eq!(got, " and later");
}

#[tokio::test]
async fn bad_request_heads_get_400_and_errors_keep_the_connection() {
    let (_proxy, front) = relay_to(free_addr()).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    // Nothing listens upstream: 502 with the reason, and the connection stays open.
    for _ in 0..2 {
        let got = sized(&mut c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
        assert!(got.contains("x-braid-error: connect failure"), "{got}");
    }
    let mut bad = TcpStream::connect(front).await.unwrap();
    let got = exchange(
        &mut bad,
        "GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        "\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
}

/// An interim 103 and the final answer in one write (so in one read): the final answer is
/// already buffered when the interim head is dropped, and must be answered at once.
#[tokio::test]
async fn an_interim_response_and_the_final_one_in_one_read_are_answered() {
    let (upstream, _) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    for _ in 0..2 {
        let got = tokio::time::timeout(
            Duration::from_secs(5),
            exchange(
                &mut c,
                "GET /early-hints HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
                "final",
            ),
        )
        .await
        .expect("the final answer, not a hang");
        assert_eq!(got, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal");
    }
}

/// A response framed both ways (a response-splitting shape, RFC 9112 §6.3) is refused,
/// after a chunked upload too (which went to hyper once, and hyper kept the stale
/// length, cutting the body).
#[tokio::test]
async fn a_response_with_both_framings_is_refused_after_any_request() {
    let (upstream, _) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut relayed = TcpStream::connect(front).await.unwrap();
    let got = sized(&mut relayed, "GET /both HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
    assert!(
        got.contains("both transfer-encoding and content-length"),
        "{got}"
    );
    let mut handed = TcpStream::connect(front).await.unwrap();
    let got = sized(
        &mut handed,
        "POST /both HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{got}");
    assert!(
        got.contains("both transfer-encoding and content-length"),
        "{got}"
    );
}

/// A request body with a coding other than chunked would reach the backend decoded of
/// its chunks but not of its gzip, and labelled plain: refused with 501 (RFC 9112 §6.1),
/// as nginx does, and never sent upstream.
#[tokio::test]
async fn a_request_coding_other_than_chunked_is_refused_with_501() {
    let (upstream, seen) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    let mut c = TcpStream::connect(front).await.unwrap();
    let got = sized(
        &mut c,
        "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 501 Not Implemented\r\n"), "{got}");
    assert!(
        got.contains("transfer-encoding gzip is not supported"),
        "{got}"
    );
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
}

// Forwarded unchanged before: RFC 9112 §3.2 says 400 to an HTTP/1.1 request without
// Host, with two or with an invalid one, whichever engine serves it; an absolute-form
// target replaces Host.
#[tokio::test]
async fn a_request_without_one_valid_host_gets_400() {
    let (upstream, seen) = scripted(1 << 20).await;
    let (_proxy, front) = relay_to(upstream).await;
    for raw in [
        "GET /a HTTP/1.1\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET /a HTTP/1.1\r\nHost: a/../admin\r\n\r\n",
        // A chunked upload (which went to hyper once).
        "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /a HTTP/1.1\r\nHost: u@a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let mut c = TcpStream::connect(front).await.unwrap();
        let got = exchange(&mut c, raw, "\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 400 "), "{raw:?}: {got}");
    }
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing reached the backend"
    );
    // Absolute-form: the target's authority is the Host the backend sees.
    let mut c = TcpStream::connect(front).await.unwrap();
    let got = sized(
        &mut c,
        "GET http://payments:8080/abs HTTP/1.1\r\nHost: evil\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    let seen = seen.lock().unwrap();
    assert!(
        seen[0]
            .to_ascii_lowercase()
            .contains("host: payments:8080\r\n"),
        "{seen:?}"
    );
    assert!(!seen[0].contains("evil"), "{seen:?}");
}

// RFC 9113 §8.3.1: an HTTP/2 `host` that differs from `:authority` is malformed.
#[tokio::test]
async fn an_http2_host_that_differs_from_authority_gets_400() {
    let upstream = http_backend("be").await;
    let front = free_addr();
    let _proxy = Proxy::start(&format!(
        "listeners:\n- name: h2\n  bind: {front}\n  target: {{address: \"{upstream}\"}}\n  protocol: http2\n"
    ))
    .await;
    let mut h2 = http2_client(front).await;
    let resp = h2
        .send_request(
            http::Request::get("http://payments/")
                .header("host", "admin")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(braid_error(&resp).contains("differs from :authority"));
    let resp = h2
        .send_request(
            http::Request::get("http://payments/")
                .header("host", "payments")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
