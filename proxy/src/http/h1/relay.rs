//! One relayed exchange: the request's bytes to an upstream connection (a body held in
//! memory, or streamed from the caller as it arrives), the response head back, then its
//! body to the caller as it arrives, framed as the upstream framed it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::chunked::Chunked;
use super::head::{self, Asked, Body, Caller, Framing, HeadError, RequestInfo, ResponseInfo};
use super::held::Held;
use crate::balance::Upstream;
use crate::http::exchange::{Answer, Exchange};
use crate::http::forward::Outgoing;
use crate::http::{BodyError, ForwardError, Forwarder, Pool, RawConn};
use crate::limits::Limits;
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

    fn body_length(&self) -> Option<u64> {
        match self.info.framing {
            Framing::Empty => Some(0),
            Framing::Length(n) => Some(n),
            Framing::Chunked | Framing::UntilClose | Framing::Tunnel => None,
        }
    }
}

/// The caller's side of one request: its connection, what was read from it (the head
/// at the start), and the head as it goes upstream when rebuilt. The body is read only
/// once the request's rule lets it through (routing, rate limit and faults first), with
/// `100 Continue` first when the caller waits for one, so a refused request never
/// invites its body.
pub struct Downstream<'a, D> {
    /// The caller's connection.
    pub io: &'a mut D,
    /// What was read from it: the request's head, then what came after.
    pub buf: &'a mut BytesMut,
    /// What the head says.
    pub info: &'a RequestInfo,
    /// The head rebuilt for the upstream (when `info.rewrite`); a whole body is appended
    /// to it once read.
    pub rewritten: &'a mut Vec<u8>,
    /// The body is read in whole (a held one) or sent in whole (a streamed one).
    pub done: bool,
    /// A streamed body began to go upstream: it cannot be sent again.
    pub begun: bool,
}

impl<D: AsyncRead + AsyncWrite + Unpin> Downstream<'_, D> {
    /// Where a held request ends in `buf` (a held body is framed by length).
    fn end(&self) -> usize {
        self.info.end().unwrap_or(self.info.len)
    }

    /// Makes sure the held body is all read (and appended to a rebuilt head), each read
    /// within `stall`. Most bodies came with their head: then there is no read, and no
    /// future to build.
    async fn read_whole(&mut self, stall: Duration) -> Result<(), ForwardError> {
        if self.done {
            return Ok(());
        }
        let end = self.end();
        if self.buf.len() < end {
            // Boxed: the wait's state is larger than every request should carry.
            Box::pin(self.read_rest(end, stall)).await?;
        }
        if self.info.rewrite {
            self.rewritten
                .extend_from_slice(&self.buf[self.info.len..end]);
        }
        self.done = true;
        Ok(())
    }

    /// Reads the held body until `buf` holds `end` bytes, saying `100 Continue` first when
    /// the caller waits for it.
    async fn read_rest(&mut self, end: usize, stall: Duration) -> Result<(), ForwardError> {
        self.say_continue().await?;
        while self.buf.len() < end {
            self.buf.reserve(end - self.buf.len());
            match tokio::time::timeout(stall, self.io.read_buf(self.buf)).await {
                Ok(Ok(0) | Err(_)) => return Err(ForwardError::RequestBody(BodyError::Cut)),
                Ok(Ok(_)) => {}
                Err(_) => return Err(ForwardError::RequestBody(BodyError::Stalled(stall))),
            }
        }
        Ok(())
    }

    /// Tells a caller that waits for leave to send its body that it may.
    async fn say_continue(&mut self) -> Result<(), ForwardError> {
        const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        if !self.info.expect_continue {
            return Ok(());
        }
        let said = async {
            self.io.write_all(CONTINUE).await?;
            self.io.flush().await
        };
        said.await
            .map_err(|_| ForwardError::RequestBody(BodyError::Cut))
    }

    /// The request as it goes upstream, head and held body.
    fn whole(&self) -> &[u8] {
        match self.info.rewrite {
            true => self.rewritten,
            false => &self.buf[..self.end()],
        }
    }
}

/// Attempts of one relayed request. A body of known length up to the buffering limit is
/// held (`whole`): sent as often as the rule retries, and copied to mirrors. A chunked or
/// larger one is streamed from the caller as it arrives, once.
pub struct RelayExchange<'a, D> {
    /// Its mirrors, pool and limits.
    pub forwarder: &'a Forwarder,
    /// The downstream connection's held upstream connections.
    pub held: &'a mut Held,
    /// The caller's side.
    pub down: Downstream<'a, D>,
    /// The body is held, not streamed.
    pub whole: bool,
    /// What the request asks (a HEAD's response has no body; an idempotent one may be
    /// sent again after an upstream may have seen it).
    pub asked: Asked<'a>,
}

impl<D: AsyncRead + AsyncWrite + Unpin> Exchange for RelayExchange<'_, D> {
    type Answer = RelayAnswer;

    async fn prepare(&mut self, send: &Outgoing<'_>, _: bool) -> Result<bool, ForwardError> {
        if !self.whole {
            return Ok(false);
        }
        self.down
            .read_whole(self.forwarder.limits().request_body)
            .await?;
        if let Some((group, endpoint)) = send.selected.mirror()
            && self.asked.tunnel.is_none()
            && let Some(copy) = super::shadow_copy(self.down.whole(), crate::http::mirror::shadowed)
        {
            let fw = self.forwarder;
            let sent = fw.mirrors().send_h1(endpoint, copy, &self.asked);
            fw.mirrored(send.label, group, sent);
        }
        Ok(true)
    }

    fn bounds_response(&self) -> bool {
        !self.whole
    }

    async fn send(&mut self, up: &Upstream) -> Result<RelayAnswer, ForwardError> {
        let pool = self.forwarder.pool();
        if !self.whole {
            if self.down.begun {
                return Err(ForwardError::Consumed);
            }
            let mut conn = match self.held.take(up) {
                Some(conn) => conn,
                None => pool.connect_raw(up).await?,
            };
            self.down.begun = true;
            // Boxed: an upload's state is large, and most requests have none.
            let limits = self.forwarder.limits();
            let upload = stream(&mut conn, &mut self.down, &self.asked, limits);
            let (info, early) = Box::pin(upload).await?;
            return Ok(RelayAnswer {
                up: up.clone(),
                conn,
                info,
                early,
            });
        }
        // `prepare` read it; checked again (a flag) so `send` never goes out with less.
        self.down
            .read_whole(self.forwarder.limits().request_body)
            .await?;
        let (mut conn, mut reused) = match self.held.take(up) {
            Some(conn) => (conn, true),
            None => (pool.connect_raw(up).await?, false),
        };
        let request = self.down.whole();
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
    read_final_head(&mut conn.io, &mut conn.buf, asked).await
}

/// Reads from `rd` into `buf` until the final response head is complete (see
/// [`final_head_in`]). The error says whether any response byte had arrived.
async fn read_final_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    asked: &Asked<'_>,
) -> Result<ResponseInfo, (RelayError, bool)> {
    let mut received = !buf.is_empty();
    loop {
        if let Some(info) = final_head_in(buf, asked).map_err(|e| (e, true))? {
            return Ok(info);
        }
        buf.reserve(8 * 1024);
        match rd.read_buf(buf).await {
            Ok(0) => return Err((RelayError::Closed, received)),
            Ok(_) => received = true,
            Err(e) => return Err((e.into(), received)),
        }
    }
}

/// The final response head at the start of `buf`, once complete, with the interim heads
/// before it dropped. The final head may be buffered already with an interim one: it is
/// parsed before reading more.
fn final_head_in(
    buf: &mut BytesMut,
    asked: &Asked<'_>,
) -> Result<Option<ResponseInfo>, RelayError> {
    loop {
        match head::parse_response(buf, asked)? {
            Some(info) if info.interim => buf.advance(info.len),
            found => return Ok(found),
        }
    }
}

/// Sends the head and streams the body to `conn`, watching the upstream all the while:
/// a response that comes before the body ends (413, 401, …) is the answer, whether the
/// proxy was waiting on the caller or on the upstream to take more. Then waits (up to
/// the response limit) for the response head; the caller may send nothing for the
/// request-body limit. `true` with the head: it came early.
async fn stream<D: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut RawConn,
    down: &mut Downstream<'_, D>,
    asked: &Asked<'_>,
    limits: &Limits,
) -> Result<(ResponseInfo, bool), ForwardError> {
    let (limit, stall) = (limits.response, limits.request_body);
    conn.buf.clear();
    let (mut rd, mut wr) = tokio::io::split(&mut *conn.io);
    let up_buf = &mut conn.buf;
    let head: &[u8] = match down.info.rewrite {
        true => down.rewritten,
        false => &down.buf[..down.info.len],
    };
    let early = send_watching(&mut wr, &mut rd, up_buf, head, limit, asked).await?;
    down.buf.advance(down.info.len);
    if let Some(info) = early {
        return Ok((info, true));
    }
    down.say_continue().await?;
    let mut left = match down.info.body {
        Body::Length(n) => n,
        Body::Chunked => 0,
    };
    let mut chunked = Chunked::default();
    let mut ended = down.info.body == Body::Length(0);
    // The caller's deadline moves with the caller's bytes only.
    let mut caller_due = tokio::time::Instant::now() + stall;
    while !ended {
        if !down.buf.is_empty() {
            let (take, end) = match down.info.body {
                Body::Length(_) => {
                    let take = left.min(down.buf.len() as u64);
                    left -= take;
                    (take as usize, left == 0)
                }
                Body::Chunked => match chunked.feed(down.buf) {
                    Ok(Some(n)) => (n, true),
                    Ok(None) => (down.buf.len(), false),
                    Err(_) => return Err(ForwardError::RequestBody(BodyError::Chunked)),
                },
            };
            let piece = &down.buf[..take];
            if let Some(info) = send_watching(&mut wr, &mut rd, up_buf, piece, limit, asked).await?
            {
                return Ok((info, true));
            }
            down.buf.advance(take);
            ended = end;
            continue;
        }
        down.buf.reserve(16 * 1024);
        up_buf.reserve(8 * 1024);
        tokio::select! {
            read = tokio::time::timeout_at(caller_due, down.io.read_buf(down.buf)) => {
                match read {
                    Err(_) => return Err(ForwardError::RequestBody(BodyError::Stalled(stall))),
                    Ok(Ok(0) | Err(_)) => return Err(ForwardError::RequestBody(BodyError::Cut)),
                    Ok(Ok(_)) => caller_due = tokio::time::Instant::now() + stall,
                }
            }
            read = rd.read_buf(up_buf) => {
                if let Some(info) = upstream_read(read, up_buf, asked)? {
                    return Ok((info, true));
                }
            }
        }
    }
    down.done = true;
    within(limit, wr.flush())
        .await?
        .map_err(|e| ForwardError::Relay(RelayError::Io(e)))?;
    let info = within(limit, read_final_head(&mut rd, up_buf, asked))
        .await?
        .map_err(|(e, _)| ForwardError::Relay(e))?;
    Ok((info, false))
}

/// What a read from the upstream during an upload brought: `Some` once a final response
/// head is complete.
fn upstream_read(
    read: std::io::Result<usize>,
    buf: &mut BytesMut,
    asked: &Asked<'_>,
) -> Result<Option<ResponseInfo>, ForwardError> {
    match read {
        Ok(0) => match final_head_in(buf, asked).map_err(ForwardError::Relay)? {
            Some(info) => Ok(Some(info)),
            None => Err(ForwardError::Relay(RelayError::Closed)),
        },
        Ok(_) => final_head_in(buf, asked).map_err(ForwardError::Relay),
        Err(e) => Err(ForwardError::Relay(RelayError::Io(e))),
    }
}

/// Writes `bytes` upstream within `limit` while reading what the upstream sends: `Some`
/// when a final response head arrives first (the upstream answered without waiting for
/// the rest). A write the upstream refuses (it closed after answering) still finds an
/// answer it sent.
async fn send_watching<R, W>(
    wr: &mut W,
    rd: &mut R,
    buf: &mut BytesMut,
    bytes: &[u8],
    limit: Duration,
    asked: &Asked<'_>,
) -> Result<Option<ResponseInfo>, ForwardError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + limit;
    let mut write = std::pin::pin!(tokio::time::timeout_at(deadline, wr.write_all(bytes)));
    loop {
        buf.reserve(8 * 1024);
        tokio::select! {
            written = &mut write => {
                return match written {
                    Ok(Ok(())) => Ok(None),
                    Ok(Err(e)) => match salvage(rd, buf, asked).await {
                        Some(info) => Ok(Some(info)),
                        None => Err(ForwardError::Relay(RelayError::Io(e))),
                    },
                    Err(_) => Err(ForwardError::ResponseTimeout(limit)),
                };
            }
            read = rd.read_buf(buf) => {
                if let Some(info) = upstream_read(read, buf, asked)? {
                    return Ok(Some(info));
                }
            }
        }
    }
}

/// After a write the upstream refused: the answer it sent before closing, if it is there
/// to read within a moment.
async fn salvage<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    asked: &Asked<'_>,
) -> Option<ResponseInfo> {
    let read = read_final_head(rd, buf, asked);
    tokio::time::timeout(Duration::from_secs(1), read)
        .await
        .ok()?
        .ok()
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
