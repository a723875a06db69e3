//! One relayed exchange: the request's bytes to an upstream connection, the response head
//! back, then its body to the caller as it arrives, framed as the upstream framed it.

use std::sync::Arc;

use bytes::Buf;
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::Chunked;
use super::head::{self, Framing, HeadError, ResponseInfo};
use super::held::Held;
use crate::balance::Upstream;
use crate::http::exchange::{Answer, Exchange};
use crate::http::forward::Outgoing;
use crate::http::{ForwardError, Pool, RawConn};
use crate::routing::is_idempotent;

/// Why a relayed upstream exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or writing the connection failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The upstream closed the connection before its response head was complete.
    #[error("connection closed before the response")]
    Closed,
    /// The response head is not one the relay can pass on.
    #[error(transparent)]
    Head(#[from] HeadError),
    /// The upstream's response body made no progress within the response timeout.
    #[error("response body stalled for {}", humantime::format_duration(*.0))]
    Stalled(std::time::Duration),
}

/// A response head received on `conn`, its body not yet read past what the head's read
/// brought.
pub struct RelayAnswer {
    /// Where it came from.
    pub up: Upstream,
    /// The connection, its head (and perhaps some body) in its buffer.
    pub conn: RawConn,
    /// What the head says.
    pub info: ResponseInfo,
}

impl Answer for RelayAnswer {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.info.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn overloaded(&self) -> bool {
        self.info.overloaded
    }
}

/// Attempts of one relayed request: its bytes (head and whole body) are in memory, so it
/// can be sent as many times as the rule retries.
pub struct RelayExchange<'a> {
    /// Where new connections come from.
    pub pool: &'a Arc<Pool>,
    /// The downstream connection's held upstream connections.
    pub held: &'a mut Held,
    /// The request as it goes upstream.
    pub request: &'a [u8],
    /// Its method (a HEAD's response has no body; an idempotent one may be sent again
    /// after an upstream may have seen it).
    pub method: &'a http::Method,
}

impl Exchange for RelayExchange<'_> {
    type Answer = RelayAnswer;

    async fn prepare(&mut self, _: &Outgoing<'_>, _: bool) -> Result<bool, ForwardError> {
        Ok(true)
    }

    async fn send(&mut self, up: &Upstream) -> Result<RelayAnswer, ForwardError> {
        let (mut conn, mut reused) = match self.held.take(up) {
            Some(conn) => (conn, true),
            None => (self.pool.connect_raw(up).await?, false),
        };
        loop {
            match round_trip(&mut conn, self.request, self.method).await {
                Ok(info) => {
                    return Ok(RelayAnswer {
                        up: up.clone(),
                        conn,
                        info,
                    });
                }
                // A kept-alive connection the server closed while it was idle: the request
                // goes again on a new one when that is safe (as browsers and Go's client
                // do); the endpoint is not to blame.
                Err((e, false)) if reused && is_idempotent(self.method) => {
                    tracing::debug!(addr = %up.addr, error = %e, "idle upstream connection was closed; reconnecting");
                    conn = self.pool.connect_raw(up).await?;
                    reused = false;
                }
                Err((e, _)) => return Err(ForwardError::Relay(e)),
            }
        }
    }
}

/// Writes `request` on `conn` and reads until the final response head; 1xx interim
/// responses are dropped, as hyper's client does. The error says whether any response
/// byte had arrived.
async fn round_trip(
    conn: &mut RawConn,
    request: &[u8],
    method: &http::Method,
) -> Result<ResponseInfo, (RelayError, bool)> {
    conn.buf.clear();
    let sent = async {
        conn.io.write_all(request).await?;
        conn.io.flush().await
    };
    sent.await.map_err(|e| (RelayError::Io(e), false))?;
    let mut received = false;
    loop {
        match head::parse_response(&conn.buf, method) {
            // The final head may be buffered already: parse again before reading.
            Ok(Some(info)) if info.interim => {
                conn.buf.advance(info.len);
                continue;
            }
            Ok(Some(info)) => return Ok(info),
            Ok(None) => {}
            Err(e) => return Err((e.into(), true)),
        }
        conn.buf.reserve(8 * 1024);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err((RelayError::Closed, received)),
            Ok(_) => received = true,
            Err(e) => return Err((e.into(), received)),
        }
    }
}

/// Passes `answer` (head and body) to the caller on `down`; the upstream connection goes
/// back to `held` when it can take another request. `Ok(false)`: the caller's connection
/// must close (the body ended with the upstream's connection). An error means the
/// response was cut short: the caller's connection must close too. A body that makes no
/// progress for `stall` is cut short.
pub async fn relay_response<D>(
    down: &mut D,
    answer: RelayAnswer,
    closing: bool,
    held: &mut Held,
    scratch: &mut Vec<u8>,
    stall: std::time::Duration,
) -> Result<bool, RelayError>
where
    D: AsyncWrite + Unpin,
{
    let RelayAnswer { up, mut conn, info } = answer;
    let mut chunked = Chunked::default();
    let mut left = match info.framing {
        Framing::Length(n) => n,
        _ => 0,
    };
    // The body bytes of this response already read with the head; and whether it ended.
    let (take, mut done) = body_part(
        &info.framing,
        &conn.buf[info.len..],
        &mut left,
        &mut chunked,
    )?;
    // A caller whose connection closes after this answer is told so.
    if info.rewrite || closing {
        scratch.clear();
        head::rewrite_response(&conn.buf[..info.len], &info, closing, scratch);
        scratch.extend_from_slice(&conn.buf[info.len..info.len + take]);
        down.write_all(scratch).await?;
    } else {
        down.write_all(&conn.buf[..info.len + take]).await?;
    }
    // Flushed piece by piece: a TLS stream may hold written bytes back, and a streamed
    // body's pieces must not wait for the next one.
    down.flush().await?;
    let mut extra = conn.buf.len() > info.len + take;
    while !done {
        conn.buf.clear();
        conn.buf.reserve(16 * 1024);
        let n = tokio::time::timeout(stall, conn.io.read_buf(&mut conn.buf))
            .await
            .map_err(|_| RelayError::Stalled(stall))??;
        if n == 0 {
            if info.framing == Framing::UntilClose {
                break;
            }
            return Err(RelayError::Closed);
        }
        let (take, end) = body_part(&info.framing, &conn.buf, &mut left, &mut chunked)?;
        down.write_all(&conn.buf[..take]).await?;
        down.flush().await?;
        extra = conn.buf.len() > take;
        done = end;
    }
    // Bytes after the response, or a server that said it closes: not reused.
    if !info.close && !extra && info.framing != Framing::UntilClose {
        held.put(up, conn);
    }
    Ok(info.framing != Framing::UntilClose)
}

/// How many of `bytes` belong to the body, and whether the body ends with them.
fn body_part(
    framing: &Framing,
    bytes: &[u8],
    left: &mut u64,
    chunked: &mut Chunked,
) -> Result<(usize, bool), RelayError> {
    Ok(match framing {
        Framing::Empty => (0, true),
        Framing::Length(_) => {
            let take = (*left).min(bytes.len() as u64);
            *left -= take;
            (take as usize, *left == 0)
        }
        Framing::Chunked => match chunked.feed(bytes) {
            Ok(Some(n)) => (n, true),
            Ok(None) => (bytes.len(), false),
            Err(e) => {
                return Err(RelayError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    e,
                )));
            }
        },
        Framing::UntilClose => (bytes.len(), false),
    })
}

/// Answers the caller with the proxy's own error response for `e` (as the full server
/// would), its body left out for a HEAD request.
pub async fn write_error<D>(
    down: &mut D,
    e: &ForwardError,
    head_only: bool,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()>
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let (status, headers, body) = crate::http::forward::error_parts(e);
    scratch.clear();
    scratch.extend_from_slice(b"HTTP/1.1 ");
    scratch.extend_from_slice(status.as_str().as_bytes());
    scratch.push(b' ');
    scratch.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    scratch.extend_from_slice(b"\r\n");
    for (name, value) in &headers {
        scratch.extend_from_slice(name.as_str().as_bytes());
        scratch.extend_from_slice(b": ");
        scratch.extend_from_slice(value.as_bytes());
        scratch.extend_from_slice(b"\r\n");
    }
    scratch.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    if !head_only {
        scratch.extend_from_slice(&body);
    }
    down.write_all(scratch).await?;
    down.flush().await
}
