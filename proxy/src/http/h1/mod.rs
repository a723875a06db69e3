//! The HTTP/1.1 relay: serves a downstream HTTP/1.1 connection by reading each request
//! head itself (httparse), routing it like any request, and passing the head and body
//! bytes to a held upstream connection and the response back, without building
//! `http::Request`s or crossing tasks. hyper's server and client cost a task hop and
//! a channel per request on each side; the relay makes the same four syscalls per
//! request with a fraction of the user-space work (see the README's benchmark).
//!
//! What it does not handle, it hands over with the bytes already read to the full
//! hyper server, which then serves the rest of the connection: HTTP/1.0, chunked or
//! larger-than-64 KiB uploads, `Expect: 100-continue`, upgrades (WebSocket),
//! `Connection` naming other headers, and services whose rules mirror traffic.

mod chunked;
mod head;
mod held;
mod relay;

use std::borrow::Cow;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use head::HeadError;
pub use relay::RelayError;

use self::head::{Request, RequestInfo};
use self::held::Held;
use self::relay::{RelayExchange, relay_response, write_error};
use super::forward::response_status;
use super::replay::MAX_BUFFERED_BODY;
use super::{ForwardError, Forwarder, Route, ServeAs, serve};
use crate::io::PrefixedIo;
use crate::metrics::Limit;
use crate::routing::{RequestHead, is_idempotent};

/// The caller's read buffer grows by this much when it runs low.
const READ_BUF: usize = 8 * 1024;
/// What a connection idle for [`SHRINK_AFTER`] keeps to read its next request into:
/// 10,000 idle connections then hold 5 MB of buffers, not 80 MB.
const IDLE_BUF: usize = 512;
/// How long a connection waits with its full read buffer before giving it back.
const SHRINK_AFTER: Duration = Duration::from_secs(1);

/// What became of one relayed request.
enum Next {
    /// The connection takes the next request.
    KeepAlive,
    /// The connection closes.
    Close,
    /// The full server takes the connection from this request on.
    Handover,
}

/// Serves `io` (with `read`, bytes already read from it) as HTTP/1.1 along `route`, until
/// the client closes, a limit cuts it off, or `drain` fires (a request in progress
/// finishes first).
pub async fn serve_h1<I>(
    mut io: I,
    mut buf: BytesMut,
    forwarder: Forwarder,
    route: Route,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = *forwarder.limits();
    let mut held = Held::new(forwarder.pool());
    let mut scratch = Vec::new();
    let max_body = usize::try_from(MAX_BUFFERED_BODY).unwrap_or(usize::MAX);
    // When the head being read is due; `None` while the connection waits idle for its
    // next request. A new connection's first head is due from its accept.
    let mut due = Some(Instant::now() + limits.header_read);
    loop {
        let info = loop {
            match head::parse_request(&buf, max_body) {
                Ok(Request::Partial) if buf.len() > limits.max_header_bytes => {
                    return too_large(&forwarder, &mut io, &mut scratch).await;
                }
                Ok(Request::Partial) => {}
                Ok(Request::Relay(info)) if info.len > limits.max_header_bytes => {
                    return too_large(&forwarder, &mut io, &mut scratch).await;
                }
                Ok(Request::Relay(info)) => break info,
                // The full server is handed only heads within the limit: its own bound
                // is coarser (at least 8 KiB, counting the body's first bytes).
                Ok(Request::Handover(_)) if head_over(&buf, limits.max_header_bytes) => {
                    return too_large(&forwarder, &mut io, &mut scratch).await;
                }
                Ok(Request::Handover(why)) => {
                    tracing::trace!(?why, "handing the connection to the full HTTP/1.1 server");
                    // Its upstream connections go back to the pool for others.
                    drop(held);
                    return Box::pin(handover(io, buf, forwarder, route, drain)).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad request head");
                    return refuse(&mut io, BAD_REQUEST, &mut scratch).await;
                }
            }
            let (deadline, limit) = match due {
                Some(due) => (due, Limit::header_read_timeout),
                None => (Instant::now() + limits.idle, Limit::idle_timeout),
            };
            match read_more(&mut io, &mut buf, deadline, &mut held, &mut scratch, &drain).await {
                Read::Bytes => {
                    due.get_or_insert_with(|| Instant::now() + limits.header_read);
                }
                Read::Closed => return,
                Read::TimedOut => {
                    forwarder.limit_hit(limit);
                    tracing::debug!(?limit, "closing the connection");
                    // A caller part-way through a head is told why.
                    if !buf.is_empty() {
                        refuse(&mut io, REQUEST_TIMEOUT, &mut scratch).await;
                    }
                    return;
                }
            }
        };
        let end = info.len + info.body;
        while buf.len() < end {
            buf.reserve(end - buf.len());
            match tokio::time::timeout(limits.request_body, io.read_buf(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    forwarder.limit_hit(Limit::request_body_timeout);
                    tracing::debug!("request body stalled; closing the connection");
                    return refuse(&mut io, REQUEST_TIMEOUT, &mut scratch).await;
                }
            }
        }
        // The caller is told when this is the connection's last answer.
        let closing = info.close || drain.is_cancelled();
        let arrived = Arrived {
            bytes: &buf[..end],
            info: &info,
            closing,
        };
        // Boxed: a connection waiting for its next request holds only this loop's small
        // state, not the request path's.
        let next = Box::pin(relay_one(
            &forwarder,
            &mut io,
            arrived,
            &route,
            &mut held,
            &mut scratch,
        ))
        .await;
        match next {
            Next::KeepAlive if !closing => {
                buf.advance(end);
                // A pipelined request already arriving is due from now.
                due = (!buf.is_empty()).then(|| Instant::now() + limits.header_read);
            }
            Next::KeepAlive | Next::Close => {
                let _ = io.shutdown().await;
                return;
            }
            Next::Handover => {
                drop(held);
                return Box::pin(handover(io, buf, forwarder, route, drain)).await;
            }
        }
    }
}

/// Whether the head at the start of `buf` is longer than `max` bytes, or has not ended
/// within them. A head ends at its first empty line (CRLF, or a bare LF, which the full
/// server takes too).
fn head_over(buf: &[u8], max: usize) -> bool {
    let end = (0..buf.len()).find_map(|at| match &buf[at..] {
        [b'\n', b'\n', ..] => Some(at + 2),
        [b'\n', b'\r', b'\n', ..] => Some(at + 3),
        _ => None,
    });
    end.unwrap_or(buf.len()) > max
}

/// What waiting for more of a request brought.
enum Read {
    /// Bytes, appended to the buffer.
    Bytes,
    /// The caller closed (or failed), or the proxy drains and nothing was pending.
    Closed,
    /// The deadline passed.
    TimedOut,
}

/// Reads more of the next request into `buf`, by `deadline`. A connection with nothing
/// buffered that has waited [`SHRINK_AFTER`] gives back its read buffer, its scratch
/// buffer (a response head and first body bytes: kilobytes) and its held upstream
/// connections, so idle connections cost little; with nothing buffered a draining
/// proxy closes it.
async fn read_more<I>(
    io: &mut I,
    buf: &mut BytesMut,
    deadline: Instant,
    held: &mut Held,
    scratch: &mut Vec<u8>,
    drain: &CancellationToken,
) -> Read
where
    I: AsyncRead + Unpin,
{
    let mut shrink_at =
        Some(Instant::now() + SHRINK_AFTER).filter(|at| buf.is_empty() && *at < deadline);
    loop {
        let shrunk = buf.is_empty() && buf.capacity() <= IDLE_BUF;
        if shrunk {
            buf.reserve(IDLE_BUF);
        } else if buf.capacity() - buf.len() < 1024 {
            // Reads of a decent size, not the few bytes left at the buffer's end.
            buf.reserve(READ_BUF);
        }
        let until = shrink_at.unwrap_or(deadline);
        let empty = buf.is_empty();
        let read = tokio::time::timeout_at(until, io.read_buf(buf));
        let read = if empty {
            tokio::select! {
                read = read => read,
                () = drain.cancelled() => return Read::Closed,
            }
        } else {
            read.await
        };
        match read {
            Ok(Ok(0) | Err(_)) => return Read::Closed,
            Ok(Ok(_)) => return Read::Bytes,
            Err(_) if shrink_at.is_some() => {
                shrink_at = None;
                *buf = BytesMut::new();
                *scratch = Vec::new();
                held.release();
            }
            Err(_) => return Read::TimedOut,
        }
    }
}

/// A request read in whole from the caller.
struct Arrived<'a> {
    /// Its head and body.
    bytes: &'a [u8],
    /// What its head says.
    info: &'a RequestInfo,
    /// The caller's connection closes after the answer.
    closing: bool,
}

/// Routes and forwards one request, and passes the answer back.
async fn relay_one<D>(
    forwarder: &Forwarder,
    down: &mut D,
    arrived: Arrived<'_>,
    route: &Route,
    held: &mut Held,
    scratch: &mut Vec<u8>,
) -> Next
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Arrived {
        bytes,
        info,
        closing,
    } = arrived;
    let head_only = info.method == http::Method::HEAD;
    // Mirror copies are built by the full server's request path.
    let started = match forwarder.begin(info.probe, route, |t| !t.mirrors()) {
        Ok(Some(started)) => started,
        Ok(None) => return Next::Handover,
        Err(e) => {
            tracing::debug!(error = %e, "request refused");
            return answer_error(down, &e, head_only, scratch).await;
        }
    };
    // Rules match on the head; a service without rules never looks at it.
    let routed = started.target.routes().is_some();
    let headers = match routed {
        true => head::header_map(&bytes[..info.len]),
        false => http::HeaderMap::new(),
    };
    let path = match routed {
        true => info.path(bytes),
        false => Cow::Borrowed("/"),
    };
    let selected = started.target.select(&RequestHead {
        method: &info.method,
        path: &path,
        headers: &headers,
    });
    let mut rewritten = Vec::new();
    let request = if info.rewrite {
        head::rewrite_request(&bytes[..info.len], &mut rewritten);
        rewritten.extend_from_slice(&bytes[info.len..]);
        &rewritten[..]
    } else {
        bytes
    };
    let mut x = RelayExchange {
        pool: forwarder.pool(),
        held,
        request,
        method: &info.method,
    };
    let (result, routed) = forwarder
        .send(
            &started.target,
            selected,
            &mut x,
            is_idempotent(&info.method),
        )
        .await;
    forwarder.finish(started, routed, response_status(&result));
    match result {
        Ok(answer) => {
            let stall = forwarder.limits().response;
            match relay_response(down, answer, closing, held, scratch, stall).await {
                Ok(true) => Next::KeepAlive,
                Ok(false) => Next::Close,
                Err(e) => {
                    if matches!(e, RelayError::Stalled(_)) {
                        forwarder.limit_hit(Limit::response_timeout);
                    }
                    tracing::debug!(error = %e, "response relay ended early");
                    Next::Close
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "request failed");
            answer_error(down, &e, head_only, scratch).await
        }
    }
}

async fn answer_error<D>(
    down: &mut D,
    e: &ForwardError,
    head_only: bool,
    scratch: &mut Vec<u8>,
) -> Next
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    match write_error(down, e, head_only, scratch).await {
        Ok(()) => Next::KeepAlive,
        Err(_) => Next::Close,
    }
}

/// The caller's head is not HTTP/1.1.
const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";
/// The caller took too long with its head or body.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n";
/// The caller's head is over the limit.
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";

/// Answers with `status_line` and closes, as the full server would.
async fn refuse<D>(down: &mut D, status_line: &[u8], scratch: &mut Vec<u8>)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    scratch.clear();
    scratch.extend_from_slice(status_line);
    scratch.extend_from_slice(b"connection: close\r\ncontent-length: 0\r\n\r\n");
    let _ = down.write_all(scratch).await;
    let _ = down.shutdown().await;
}

/// Answers a head over the limit with 431 and closes.
async fn too_large<D>(forwarder: &Forwarder, down: &mut D, scratch: &mut Vec<u8>)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    forwarder.limit_hit(Limit::header_too_large);
    tracing::debug!(
        limit = forwarder.limits().max_header_bytes,
        "request head too large"
    );
    refuse(down, HEAD_TOO_LARGE, scratch).await;
}

/// The full server takes the connection, replaying the bytes already read.
async fn handover<I>(
    io: I,
    buf: BytesMut,
    forwarder: Forwarder,
    route: Route,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = PrefixedIo::new(buf.freeze(), io);
    serve(io, forwarder, route, ServeAs::Http1, drain).await;
}
