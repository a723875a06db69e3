//! One relayed exchange: the request's bytes to an upstream connection (a body held in
//! memory, or streamed from the caller as it arrives), the response head back, then its
//! body to the caller as it arrives, framed as the upstream framed it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::Chunked;
use super::head::{self, Asked, Body, Caller, Framing, HeadError, ResponseInfo};
use super::held::Held;
use crate::balance::Upstream;
use crate::http::exchange::{Answer, Exchange};
use crate::http::forward::Outgoing;
use crate::http::{BodyError, ForwardError, Forwarder, Pool, RawConn};
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
    Stalled(Duration),
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
    /// It came before the caller's body was all sent: the upstream connection is not
    /// reused, and the caller's closes after it.
    pub early: bool,
}

impl Answer for RelayAnswer {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.info.status).unwrap_or(StatusCode::BAD_GATEWAY)
    }

    fn overloaded(&self) -> bool {
        self.info.overloaded
    }
}

/// A request body the relay streams from the caller to the upstream as it arrives:
/// chunked, or too large to hold for retries and mirror copies. It can be sent once.
pub struct Upload<'a, D> {
    /// The request's head as it goes upstream.
    pub head: &'a [u8],
    /// The caller's connection, and what was read from it past the head.
    pub down: &'a mut D,
    /// Bytes read from the caller past the head: the body's first ones (and perhaps a
    /// pipelined request after it, which stays here).
    pub buf: &'a mut BytesMut,
    /// How the body ends.
    pub body: Body,
    /// How long the caller may send nothing.
    pub stall: Duration,
    /// How long the upstream may take to answer once the body is sent, or to take the
    /// next body bytes.
    pub response: Duration,
    /// Whether the body was sent in whole (the caller's connection can take another
    /// request).
    pub done: bool,
    /// Whether an attempt began (the body cannot be sent again).
    pub begun: bool,
}

/// What a relayed request sends.
pub enum Outbound<'a, D> {
    /// Head and whole body, in memory: sent as often as the rule retries, and copied to
    /// mirrors.
    Whole(&'a [u8]),
    /// The head, then a body streamed from the caller.
    Stream(Upload<'a, D>),
}

/// Attempts of one relayed request.
pub struct RelayExchange<'a, D> {
    /// Its mirrors, pool and limits.
    pub forwarder: &'a Forwarder,
    /// The downstream connection's held upstream connections.
    pub held: &'a mut Held,
    /// What goes upstream.
    pub out: Outbound<'a, D>,
    /// What the request asks (a HEAD's response has no body; an idempotent one may be
    /// sent again after an upstream may have seen it).
    pub asked: Asked<'a>,
}

impl<D: AsyncRead + Unpin> Exchange for RelayExchange<'_, D> {
    type Answer = RelayAnswer;

    async fn prepare(&mut self, send: &Outgoing<'_>, _: bool) -> Result<bool, ForwardError> {
        let Outbound::Whole(request) = &self.out else {
            return Ok(false);
        };
        if let Some((group, endpoint)) = send.selected.mirror() {
            let fw = self.forwarder;
            let sent = fw.mirrors().send_h1(endpoint, request, &self.asked);
            fw.mirrored(send.label, group, sent);
        }
        Ok(true)
    }

    fn bounds_response(&self) -> bool {
        matches!(self.out, Outbound::Stream(_))
    }

    async fn send(&mut self, up: &Upstream) -> Result<RelayAnswer, ForwardError> {
        let pool = self.forwarder.pool();
        let (mut conn, mut reused) = match self.held.take(up) {
            Some(conn) => (conn, true),
            None => (pool.connect_raw(up).await?, false),
        };
        let request = match &mut self.out {
            Outbound::Stream(upload) => {
                if upload.begun {
                    return Err(ForwardError::Consumed);
                }
                upload.begun = true;
                let early = stream(&mut conn, upload, &self.asked).await?;
                return Ok(RelayAnswer {
                    up: up.clone(),
                    conn,
                    info: early.0,
                    early: early.1,
                });
            }
            Outbound::Whole(request) => *request,
        };
        loop {
            match round_trip(&mut conn, request, &self.asked).await {
                Ok(info) => {
                    return Ok(RelayAnswer {
                        up: up.clone(),
                        conn,
                        info,
                        early: false,
                    });
                }
                // A kept-alive connection the server closed while it was idle: the request
                // goes again on a new one when that is safe (as browsers and Go's client
                // do); the endpoint is not to blame.
                Err((e, false)) if reused && is_idempotent(self.asked.method) => {
                    tracing::debug!(addr = %up.addr, error = %e, "idle upstream connection was closed; reconnecting");
                    conn = pool.connect_raw(up).await?;
                    reused = false;
                }
                Err((e, _)) => return Err(ForwardError::Relay(e)),
            }
        }
    }
}

/// Writes `request` on `conn` and reads until the final response head; 1xx interim
/// responses are dropped, as hyper's client does (a caller expecting 100-continue got it
/// from the proxy). The error says whether any response byte had arrived.
async fn round_trip(
    conn: &mut RawConn,
    request: &[u8],
    asked: &Asked<'_>,
) -> Result<ResponseInfo, (RelayError, bool)> {
    conn.buf.clear();
    let sent = async {
        conn.io.write_all(request).await?;
        conn.io.flush().await
    };
    sent.await.map_err(|e| (RelayError::Io(e), false))?;
    let mut received = false;
    loop {
        if let Some(info) = final_head(conn, asked).map_err(|e| (e, true))? {
            return Ok(info);
        }
        conn.buf.reserve(8 * 1024);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) => return Err((RelayError::Closed, received)),
            Ok(_) => received = true,
            Err(e) => return Err((e.into(), received)),
        }
    }
}

/// The final response head at the start of `conn.buf`, once complete, with the interim
/// heads before it dropped. The final head may be buffered already with an interim one:
/// it is parsed before reading more.
fn final_head(conn: &mut RawConn, asked: &Asked<'_>) -> Result<Option<ResponseInfo>, RelayError> {
    loop {
        match head::parse_response(&conn.buf, asked)? {
            Some(info) if info.interim => conn.buf.advance(info.len),
            found => return Ok(found),
        }
    }
}

/// Sends `upload`'s head and streams its body to `conn`, watching for a response that
/// comes before the body ends; then waits (up to `upload.response`) for the response
/// head. `true` with the head: it came early.
async fn stream<D: AsyncRead + Unpin>(
    conn: &mut RawConn,
    upload: &mut Upload<'_, D>,
    asked: &Asked<'_>,
) -> Result<(ResponseInfo, bool), ForwardError> {
    let to_upstream = |e| ForwardError::Relay(RelayError::Io(e));
    let limit = upload.response;
    conn.buf.clear();
    within(limit, conn.io.write_all(upload.head))
        .await?
        .map_err(to_upstream)?;
    let mut left = match upload.body {
        Body::Length(n) => n,
        Body::Chunked => 0,
    };
    let mut chunked = Chunked::default();
    let mut ended = upload.body == Body::Length(0);
    while !ended {
        if !upload.buf.is_empty() {
            let (take, end) = match upload.body {
                Body::Length(_) => {
                    let take = left.min(upload.buf.len() as u64);
                    left -= take;
                    (take as usize, left == 0)
                }
                Body::Chunked => match chunked.feed(upload.buf) {
                    Ok(Some(n)) => (n, true),
                    Ok(None) => (upload.buf.len(), false),
                    Err(_) => return Err(ForwardError::RequestBody(BodyError::Chunked)),
                },
            };
            within(limit, conn.io.write_all(&upload.buf[..take]))
                .await?
                .map_err(to_upstream)?;
            upload.buf.advance(take);
            ended = end;
            continue;
        }
        upload.buf.reserve(16 * 1024);
        conn.buf.reserve(8 * 1024);
        tokio::select! {
            read = tokio::time::timeout(upload.stall, upload.down.read_buf(upload.buf)) => {
                match read {
                    Err(_) => return Err(ForwardError::RequestBody(BodyError::Stalled(upload.stall))),
                    Ok(Ok(0) | Err(_)) => return Err(ForwardError::RequestBody(BodyError::Cut)),
                    Ok(Ok(_)) => {}
                }
            }
            // The upstream answers before the body ends (413, 401, …): that is the answer.
            read = conn.io.read_buf(&mut conn.buf) => {
                match read {
                    Ok(0) => return Err(ForwardError::Relay(RelayError::Closed)),
                    Err(e) => return Err(to_upstream(e)),
                    Ok(_) => {
                        if let Some(info) = final_head(conn, asked).map_err(ForwardError::Relay)? {
                            return Ok((info, true));
                        }
                    }
                }
            }
        }
    }
    upload.done = true;
    within(limit, conn.io.flush()).await?.map_err(to_upstream)?;
    let head = async {
        loop {
            if let Some(info) = final_head(conn, asked)? {
                return Ok(info);
            }
            conn.buf.reserve(8 * 1024);
            if conn.io.read_buf(&mut conn.buf).await? == 0 {
                return Err(RelayError::Closed);
            }
        }
    };
    let info = within(limit, head).await?.map_err(ForwardError::Relay)?;
    Ok((info, false))
}

/// `f` within `limit`, else the response timeout.
async fn within<F: std::future::Future>(limit: Duration, f: F) -> Result<F::Output, ForwardError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| ForwardError::ResponseTimeout(limit))
}

/// What became of the caller's connection after a relayed response.
pub enum After {
    /// It can take the next request.
    KeepAlive,
    /// It must close (the body ended with the upstream's connection).
    Close,
    /// It is a tunnel to `conn` now: the switching head went to the caller; what the
    /// upstream sent after it is in `conn.buf`.
    Tunnel(RawConn),
}

/// Passes `answer` (head and body) to the caller on `down`; the upstream connection goes
/// back to `held` when it can take another request. An error means the response was cut
/// short: the caller's connection must close too. A body that makes no progress for
/// `stall` is cut short.
pub async fn relay_response<D>(
    down: &mut D,
    answer: RelayAnswer,
    caller: Caller,
    held: &mut Held,
    scratch: &mut Vec<u8>,
    stall: Duration,
) -> Result<After, RelayError>
where
    D: AsyncWrite + Unpin,
{
    let RelayAnswer {
        up,
        mut conn,
        info,
        early,
    } = answer;
    let caller = Caller {
        close: caller.close || early,
        ..caller
    };
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
    if info.rewrite || caller.close || caller.http10 {
        scratch.clear();
        head::rewrite_response(&conn.buf[..info.len], &info, caller, scratch);
        scratch.extend_from_slice(&conn.buf[info.len..info.len + take]);
        down.write_all(scratch).await?;
    } else {
        down.write_all(&conn.buf[..info.len + take]).await?;
    }
    // Flushed piece by piece: a TLS stream may hold written bytes back, and a streamed
    // body's pieces must not wait for the next one.
    down.flush().await?;
    if info.framing == Framing::Tunnel {
        conn.buf.advance(info.len);
        return Ok(After::Tunnel(conn));
    }
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
    // Bytes after the response, a server that said it closes, or a body it did not get
    // all of: not reused.
    if !info.close && !extra && !early && info.framing != Framing::UntilClose {
        held.put(up, conn);
    }
    Ok(match info.framing != Framing::UntilClose && !caller.close {
        true => After::KeepAlive,
        false => After::Close,
    })
}

/// How many of `bytes` belong to the body, and whether the body ends with them.
fn body_part(
    framing: &Framing,
    bytes: &[u8],
    left: &mut u64,
    chunked: &mut Chunked,
) -> Result<(usize, bool), RelayError> {
    Ok(match framing {
        Framing::Empty | Framing::Tunnel => (0, true),
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

/// Sends `request` (head and whole body) to `up` and reads its answer to the end,
/// dropping it: a mirror copy. The connection goes back to `pool` when it can be reused.
pub async fn send_and_drop(
    pool: &Arc<Pool>,
    up: &Upstream,
    request: &[u8],
    asked: &Asked<'_>,
    stall: Duration,
) -> Result<(), ForwardError> {
    let mut held = Held::new(pool);
    let mut conn = match held.take(up) {
        Some(conn) => conn,
        None => pool.connect_raw(up).await?,
    };
    let info = round_trip(&mut conn, request, asked)
        .await
        .map_err(|(e, _)| ForwardError::Relay(e))?;
    let answer = RelayAnswer {
        up: up.clone(),
        conn,
        info,
        early: false,
    };
    let mut scratch = Vec::new();
    let mut sink = tokio::io::sink();
    relay_response(
        &mut sink,
        answer,
        Caller::default(),
        &mut held,
        &mut scratch,
        stall,
    )
    .await
    .map_err(ForwardError::Relay)?;
    Ok(())
}

/// Answers the caller with the proxy's own error response for `e` (as the full server
/// would), its body left out for a HEAD request, saying `Connection: close` when the
/// connection closes after it.
pub async fn write_error<D>(
    down: &mut D,
    e: &ForwardError,
    head_only: bool,
    close: bool,
    scratch: &mut Vec<u8>,
) -> std::io::Result<()>
where
    D: AsyncWrite + Unpin,
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
    if close {
        scratch.extend_from_slice(b"connection: close\r\n");
    }
    scratch.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    if !head_only {
        scratch.extend_from_slice(&body);
    }
    down.write_all(scratch).await?;
    down.flush().await
}
