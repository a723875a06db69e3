//! A keep-alive HTTP/1.1 caller that notices every connection closed under it: several
//! connections, each sending one request after another on the same socket, the way an
//! app's connection pool does. What a proxy upgrade must not do to it shows as a count:
//! a request that got no answer, or a connection closed between requests without the
//! server having said `Connection: close`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the caller did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests with no answer, or a non-2xx one.
    pub failed: u64,
    /// Connections opened, the first ones included.
    pub opened: u64,
    /// Connections closed after the server said `Connection: close` (a clean close).
    pub told_close: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ok={} failed={} opened={} told_close={}",
            self.ok, self.failed, self.opened, self.told_close
        )
    }
}

/// How the caller calls.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where.
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// How many connections at once.
    pub conns: usize,
    /// Every this many requests of a connection asks for `/slow` (0: never).
    pub slow_every: u64,
    /// POST with a body (not retried by anyone along the way) rather than GET.
    pub post: bool,
}

/// Runs `plan` until `stop` exists.
pub async fn run(plan: Plan, stop: &Path) -> Summary {
    let tasks: Vec<_> = (0..plan.conns)
        .map(|_| {
            let plan = plan.clone();
            let stop = stop.to_path_buf();
            tokio::spawn(async move { one_connection(&plan, &stop).await })
        })
        .collect();
    let mut total = Summary::default();
    for t in tasks {
        let s = t.await.unwrap_or_default();
        total.ok += s.ok;
        total.failed += s.failed;
        total.opened += s.opened;
        total.told_close += s.told_close;
    }
    total
}

async fn one_connection(plan: &Plan, stop: &Path) -> Summary {
    let mut summary = Summary::default();
    let mut conn: Option<TcpStream> = None;
    let mut n = 0u64;
    while !stop.exists() {
        n += 1;
        let stream = match conn.take() {
            Some(s) => s,
            None => match TcpStream::connect(plan.addr).await {
                Ok(s) => {
                    summary.opened += 1;
                    s
                }
                Err(_) => {
                    summary.failed += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slow = plan.slow_every > 0 && n.is_multiple_of(plan.slow_every);
        match exchange(stream, plan, slow).await {
            Ok((status, keep)) => {
                if (200..300).contains(&status) {
                    summary.ok += 1;
                } else {
                    summary.failed += 1;
                }
                match keep {
                    Some(s) => conn = Some(s),
                    None => summary.told_close += 1,
                }
            }
            Err(_) => summary.failed += 1,
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    summary
}

/// One request on `stream`: the status, and the stream back unless the server said it
/// closes.
async fn exchange(
    mut stream: TcpStream,
    plan: &Plan,
    slow: bool,
) -> std::io::Result<(u16, Option<TcpStream>)> {
    let path = if slow { "/slow" } else { "/" };
    let request = match plan.post {
        true => format!(
            "POST {path} HTTP/1.1\r\nhost: {}\r\ncontent-length: 5\r\n\r\nhello",
            plan.host
        ),
        false => format!("GET {path} HTTP/1.1\r\nhost: {}\r\n\r\n", plan.host),
    };
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':'))
            .map(str::trim)
            .map(str::to_owned)
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut have = buf.len() - head_end;
    while have < length {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
    }
    let close = header("connection").is_some_and(|v| v == "close");
    Ok((status, (!close).then_some(stream)))
}
