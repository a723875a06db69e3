//! An HTTP/2 caller as gRPC clients behave: one connection carrying several streams at
//! once (some held seconds by the server), a new connection when the server says it is
//! going away, and a request sent again only when the server says it never processed it
//! (GOAWAY above its last stream, or REFUSED_STREAM), which gRPC clients retry
//! transparently. Everything else that fails counts.

use std::error::Error as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::Mutex;

/// What the caller did.
#[derive(Debug, Default)]
pub struct Summary {
    /// Requests answered 200.
    pub ok: AtomicU64,
    /// Requests that failed in a way a gRPC client shows its caller.
    pub failed: AtomicU64,
    /// Requests sent again because the server had not processed them.
    pub retried: AtomicU64,
    /// Connections opened.
    pub opened: AtomicU64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write!(
            f,
            "ok={} failed={} retried={} opened={}",
            n(&self.ok),
            n(&self.failed),
            n(&self.retried),
            n(&self.opened)
        )
    }
}

/// The shared connection, replaced when it closes.
struct Conn {
    addr: SocketAddr,
    sender: Mutex<Option<SendRequest<Full<Bytes>>>>,
    summary: Arc<Summary>,
}

impl Conn {
    async fn sender(&self) -> anyhow::Result<SendRequest<Full<Bytes>>> {
        let mut held = self.sender.lock().await;
        if let Some(s) = held.as_ref()
            && !s.is_closed()
        {
            return Ok(s.clone());
        }
        let io = TokioIo::new(TcpStream::connect(self.addr).await?);
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        self.summary.opened.fetch_add(1, Ordering::Relaxed);
        *held = Some(sender.clone());
        Ok(sender)
    }
}

/// Whether the server said it never processed the request.
fn unprocessed(e: &hyper::Error) -> bool {
    if e.is_canceled() {
        return true;
    }
    e.source()
        .and_then(|s| s.downcast_ref::<h2::Error>())
        .is_some_and(|h2| h2.is_go_away() || h2.reason() == Some(h2::Reason::REFUSED_STREAM))
}

/// Runs `streams` request loops over one shared connection to `addr` until `stop`
/// exists; every `slow_every`-th request of a loop asks for `/slow`.
pub async fn run(
    addr: SocketAddr,
    host: &str,
    streams: usize,
    slow_every: u64,
    stop: &Path,
) -> Arc<Summary> {
    let summary = Arc::new(Summary::default());
    let conn = Arc::new(Conn {
        addr,
        sender: Mutex::new(None),
        summary: summary.clone(),
    });
    let loops: Vec<_> = (0..streams)
        .map(|_| {
            let (conn, summary, stop) = (conn.clone(), summary.clone(), stop.to_path_buf());
            let host = host.to_owned();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.exists() {
                    n += 1;
                    let path = match slow_every > 0 && n.is_multiple_of(slow_every) {
                        true => "/slow",
                        false => "/",
                    };
                    one(&conn, &summary, &host, path).await;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    for l in loops {
        let _ = l.await;
    }
    summary
}

/// One request, sent again (a few times at most) while the server had not processed it.
async fn one(conn: &Conn, summary: &Summary, host: &str, path: &str) {
    for _ in 0..5 {
        let mut sender = match conn.sender().await {
            Ok(s) => s,
            Err(_) => break,
        };
        if sender.ready().await.is_err() {
            // Closing: the next attempt opens a new connection.
            continue;
        }
        let Ok(req) =
            http::Request::get(format!("http://{host}{path}")).body(Full::new(Bytes::new()))
        else {
            break;
        };
        match sender.send_request(req).await {
            Ok(resp) if resp.status() == 200 => {
                if resp.into_body().collect().await.is_ok() {
                    summary.ok.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                break;
            }
            Ok(_) => break,
            Err(e) if unprocessed(&e) => {
                summary.retried.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => break,
        }
    }
    summary.failed.fetch_add(1, Ordering::Relaxed);
}
