//! The HTTP/1.1 engine: serves a downstream HTTP/1.1 connection by reading each request
//! head itself (httparse), routing it like any request, and passing the head and body
//! bytes to an upstream connection and the response back, without building
//! `http::Request`s or crossing tasks. hyper's server and client cost a task hop and a
//! channel per request on each side; the relay makes the same four syscalls per request
//! with a fraction of the user-space work (see docs/benchmarks.md).
//!
//! It is the only HTTP/1.1 engine, on both sides of the proxy, so one parser decides
//! where every message ends. A body of known length up to 64 KiB is read whole (it can
//! be retried and mirrored); a chunked or larger one is streamed as it arrives.
//! `Expect: 100-continue` is answered here when the body is wanted, HTTP/1.0 goes on as
//! HTTP/1.0, and an upgrade (WebSocket) or CONNECT that the upstream accepts turns the
//! connection into a tunnel. HTTP/2 is served by hyper.

mod chunked;
mod head;
mod held;
mod relay;

use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use head::{Asked, HeadError, header_map};
pub use relay::{RelayError, send_and_drop};

use self::head::{Body, Caller, Request, RequestInfo};
use self::held::Held;
use self::relay::{After, Downstream, RelayExchange, relay_response, write_error};
use super::forward::{Admission, Finished, HeadersOf, Started};
use super::replay::MAX_BUFFERED_BODY;
use super::{BodyError, ForwardError, Forwarder, Route};
use crate::handover::HandOff;
use crate::metrics::http::Routed;
use crate::metrics::limits::Limit;
use crate::routing::{RequestHead, is_idempotent};

/// The caller's read buffer grows by this much when it runs low.
const READ_BUF: usize = 8 * 1024;
/// What a connection idle for [`SHRINK_AFTER`] keeps to read its next request into:
/// 10,000 idle connections then hold 5 MB of buffers, not 80 MB.
const IDLE_BUF: usize = 512;
/// How long a connection waits with its full read buffer before giving it back.
const SHRINK_AFTER: Duration = Duration::from_secs(1);
/// After an answer that leaves a caller's body unread, how long the proxy keeps reading
/// (and dropping) it before closing, so the close does not reset the answer away.
const LINGER: Duration = Duration::from_secs(1);

/// What became of one relayed request.
enum Next {
    /// The connection takes the next request.
    KeepAlive,
    /// The connection closes.
    Close,
    /// The connection closes, and the caller may still be sending a body nobody read.
    Linger,
    /// The connection is a tunnel to this upstream connection now.
    Tunnel(crate::http::RawConn),
}

/// Serves `io` (with `read`, bytes already read from it) as HTTP/1.1 along `route`, until
/// the client closes, a limit cuts it off, or `drain` fires (a request in progress
/// finishes first).
///
/// When the proxy drains because a successor took over (`hand_off` is on), no connection
/// is cut between requests. A `detachable` one (plaintext) is given back at its next
/// request boundary, with the bytes read and not yet used, for the successor to go on
/// with. Any other (TLS: its keys stay here) stays open for its caller to close: each
/// answer from then on says `Connection: close`, so the caller's next request goes on a
/// new connection, to the successor; one closed by the proxy while idle could meet a
/// request already on its way. Only the idle timeout or the drain deadline cuts it.
pub async fn serve_h1<I>(
    mut io: I,
    mut buf: BytesMut,
    forwarder: Forwarder,
    route: Route,
    drain: CancellationToken,
    hand_off: HandOff,
    detachable: bool,
) -> Option<(I, BytesMut)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = *forwarder.limits();
    let mut held = Held::new(forwarder.pool());
    let mut scratch = Vec::new();
    // When the head being read is due; `None` while the connection waits idle for its
    // next request. A new connection's first head is due from its accept.
    let mut due = Some(Instant::now() + limits.header_read);
    loop {
        let info = loop {
            match head::parse_request(&buf, limits.max_header_bytes) {
                Ok(Request::Partial) => {}
                Ok(Request::Complete(info)) => break info,
                Err(HeadError::TooLarge) => {
                    too_large(&forwarder, &mut io, &mut scratch).await;
                    return None;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "bad request head");
                    let e = ForwardError::BadRequest(e);
                    let _ = write_error(&mut io, &e, false, true, &mut scratch).await;
                    let _ = io.shutdown().await;
                    return None;
                }
            }
            let (deadline, limit) = match due {
                Some(due) => (due, Limit::header_read_timeout),
                None => (Instant::now() + limits.idle, Limit::idle_timeout),
            };
            // Under a handover, a connection that cannot be handed waits for its caller.
            let draining = match hand_off.is_on() && !detachable {
                true => None,
                false => Some(&drain),
            };
            match read_more(
                &mut io,
                &mut buf,
                deadline,
                &mut held,
                &mut scratch,
                draining,
            )
            .await
            {
                Read::Bytes => {
                    due.get_or_insert_with(|| Instant::now() + limits.header_read);
                }
                Read::Closed => return None,
                // A connection that cannot be handed over (TLS) waits for its caller
                // from here on: closed now, it could meet a request already on its way.
                Read::Drained if hand_off.is_on() && !detachable => continue,
                Read::Drained => return hand_off.is_on().then_some((io, buf)),
                Read::TimedOut => {
                    forwarder.limit_hit(limit);
                    tracing::debug!(?limit, "closing the connection");
                    // A caller part-way through a head is told why.
                    if !buf.is_empty() {
                        refuse(&mut io, REQUEST_TIMEOUT, &mut scratch).await;
                    }
                    return None;
                }
            }
        };
        // The caller is told when this is the connection's last answer; a connection
        // handed over goes on.
        let handed = detachable && hand_off.is_on();
        let closing = info.close || (drain.is_cancelled() && !handed);
        let request = Relayed {
            info: &info,
            closing,
        };
        // Boxed: a connection waiting for its next request holds only this loop's small
        // state, not the request path's.
        let next = Box::pin(relay_one(
            &forwarder,
            &mut io,
            &mut buf,
            request,
            &route,
            &mut held,
            &mut scratch,
        ))
        .await;
        match next {
            Next::KeepAlive if !closing => {
                if drain.is_cancelled() && detachable && hand_off.is_on() {
                    return Some((io, buf));
                }
                // A pipelined request already arriving is due from now.
                due = (!buf.is_empty()).then(|| Instant::now() + limits.header_read);
            }
            Next::KeepAlive | Next::Close => {
                let _ = io.shutdown().await;
                return None;
            }
            Next::Linger => {
                linger(&mut io, &mut buf).await;
                return None;
            }
            Next::Tunnel(conn) => {
                drop(held);
                Box::pin(tunnel(io, buf, conn, limits.tcp_idle)).await;
                return None;
            }
        }
    }
}

/// Closes the caller's connection after an answer that left its body unread: its write
/// side first, then what it still sends is read and dropped for [`LINGER`], so the close
/// does not reset the answer before the caller read it.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(io: &mut I, buf: &mut BytesMut) {
    let _ = io.shutdown().await;
    let drop_rest = async {
        loop {
            buf.clear();
            buf.reserve(READ_BUF);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drop_rest).await;
}

/// Splices the caller's connection (with `buf`, what it sent after its request) and the
/// upstream one (with what the upstream sent after its switching head) until both are
/// done, or nothing moves for `idle`.
async fn tunnel<I>(io: I, buf: BytesMut, mut conn: crate::http::RawConn, idle: Duration)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut io = crate::io::PrefixedIo::new(buf.freeze(), io);
    if !conn.buf.is_empty() {
        // Bounded like the splice after it: a caller that reads nothing holds nothing.
        match tokio::time::timeout(idle, io.write_all(&conn.buf)).await {
            Ok(Ok(())) => conn.buf.clear(),
            _ => return,
        }
    }
    match crate::tcp::splice(io, &mut conn.io, idle).await {
        Ok((up, down)) => tracing::debug!(up, down, "tunnel closed"),
        Err(e) => tracing::debug!(error = %e, "tunnel ended"),
    }
}

/// What waiting for more of a request brought.
enum Read {
    /// Bytes, appended to the buffer.
    Bytes,
    /// The caller closed (or failed).
    Closed,
    /// The proxy drains, and nothing was pending.
    Drained,
    /// The deadline passed.
    TimedOut,
}

/// Reads more of the next request into `buf`, by `deadline`. A connection with nothing
/// buffered that has waited [`SHRINK_AFTER`] gives back its read buffer, its scratch
/// buffer (a response head and first body bytes: kilobytes) and its held upstream
/// connections, so idle connections cost little; with nothing buffered it ends when
/// `drain` (if any) fires.
async fn read_more<I>(
    io: &mut I,
    buf: &mut BytesMut,
    deadline: Instant,
    held: &mut Held,
    scratch: &mut Vec<u8>,
    drain: Option<&CancellationToken>,
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
        let read = match (empty, drain) {
            (true, Some(drain)) => tokio::select! {
                read = read => read,
                () = drain.cancelled() => return Read::Drained,
            },
            _ => read.await,
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

/// A request whose head was read.
struct Relayed<'a> {
    /// What its head says.
    info: &'a RequestInfo,
    /// The caller's connection closes after the answer.
    closing: bool,
}

/// Routes and forwards one request (its head at the start of `buf`), and passes the
/// answer back. A request the connection can go on after is consumed from `buf`.
async fn relay_one<D>(
    forwarder: &Forwarder,
    down: &mut D,
    buf: &mut BytesMut,
    request: Relayed<'_>,
    route: &Route,
    held: &mut Held,
    scratch: &mut Vec<u8>,
) -> Next
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Relayed { info, closing } = request;
    let head_only = info.method == http::Method::HEAD;
    // With telemetry on, the head is read whole and goes on with its headers edited.
    let (in_flight, edits, mut headers) = match forwarder.telemetry().is_some() {
        true => {
            let headers = head::header_map(&buf[..info.len]);
            let observed = forwarder.observe(&telemetry_head(info, &buf[..info.len], &headers));
            let (in_flight, edits) = observed.unzip();
            (in_flight, edits.unwrap_or_default(), Some(headers))
        }
        false => (None, Vec::new(), None),
    };
    let edited;
    let info = match edits.is_empty() {
        true => info,
        false => {
            edited = RequestInfo {
                rewrite: true,
                ..info.clone()
            };
            &edited
        }
    };
    let head = &buf[..info.len];
    let path = info.path(head);
    let tunnel = match info.tunnel {
        None => None,
        Some(head::Tunnel::Connect) => Some("CONNECT"),
        Some(head::Tunnel::Upgrade) => Some(info.upgrade_protocol(head).unwrap_or("unknown")),
    };
    let admission = Admission {
        tunnel,
        probe: info.probe,
        method: &info.method,
        path: &path,
        headers: match &headers {
            Some(parsed) => HeadersOf::Parsed(parsed),
            None => HeadersOf::Raw(head),
        },
    };
    let mut started = match forwarder.begin(&admission, route) {
        Ok(started) => started,
        Err(e) => {
            tracing::debug!(error = %e, "request refused");
            forwarder.refused(in_flight, &e);
            return answer_unsent(down, buf, info, &e, closing, scratch).await;
        }
    };
    started.telemetry = in_flight.map(|mut t| {
        t.to_target(&started.target.label);
        t
    });
    // Rules match on the head; a service without rules never looks at it.
    let routed = started.target.routes().is_some();
    let headers = match (routed, headers.take()) {
        (true, Some(headers)) => headers,
        (true, None) => head::header_map(head),
        (false, _) => http::HeaderMap::new(),
    };
    let selected = started.target.select(&RequestHead {
        method: &info.method,
        path: &path,
        headers: &headers,
    });
    let mut rewritten = Vec::new();
    if info.rewrite {
        head::write_request_with(head, info, None, &edits, &mut rewritten);
    }
    drop(path);
    let whole = matches!(info.body, Body::Length(n) if n <= MAX_BUFFERED_BODY);
    let mut x = RelayExchange {
        forwarder,
        held,
        down: Downstream {
            io: down,
            buf,
            info,
            rewritten: &mut rewritten,
            done: false,
            begun: false,
        },
        whole,
        asked: head::Asked::of(info),
    };
    let (result, routed) = forwarder
        .send(
            &started.target,
            selected,
            &mut x,
            is_idempotent(&info.method),
        )
        .await;
    let RelayExchange {
        held, down: sent, ..
    } = x;
    let Downstream {
        io: down,
        buf,
        done,
        ..
    } = sent;
    // The caller's connection goes on only past a request it sent in whole: a held body
    // read (or all there already, when the request was refused before reading it), a
    // streamed one sent.
    let consumed = done || (whole && info.within(buf.len()));
    if let (true, Some(end)) = (whole && consumed, info.end()) {
        buf.advance(end);
    }
    let caller = Caller {
        close: closing,
        http10: info.http10,
    };
    let request = Answered {
        result,
        caller,
        sent: consumed,
        head_only,
    };
    answer(forwarder, down, started, routed, request, held, scratch).await
}

/// The outcome of a request's attempts, and what the caller's connection can do after.
struct Answered {
    result: Result<relay::RelayAnswer, ForwardError>,
    caller: Caller,
    /// The caller's request was consumed in whole.
    sent: bool,
    head_only: bool,
}

/// Passes the result of a request's attempts back to the caller and counts it.
async fn answer<D>(
    forwarder: &Forwarder,
    down: &mut D,
    started: Started,
    routed: Routed,
    answered: Answered,
    held: &mut Held,
    scratch: &mut Vec<u8>,
) -> Next
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let Answered {
        result,
        caller,
        sent,
        head_only,
    } = answered;
    forwarder.finish(started, routed, Finished::of(&result));
    match result {
        Ok(answer) => {
            let early = answer.early;
            let stall = forwarder.limits().response;
            match relay_response(down, answer, caller, held, scratch, stall).await {
                Ok(After::KeepAlive) if sent => Next::KeepAlive,
                Ok(After::Tunnel(conn)) => Next::Tunnel(conn),
                Ok(_) if early => Next::Linger,
                Ok(_) => Next::Close,
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
            if let ForwardError::RequestBody(BodyError::Stalled(_)) = e {
                forwarder.limit_hit(Limit::request_body_timeout);
            }
            tracing::debug!(error = %e, "request failed");
            // A body the caller was still sending when the attempt failed is not read on.
            let close = caller.close || !sent;
            let written = write_error(down, &e, head_only, close, scratch).await;
            match (written, close) {
                (Ok(()), false) => Next::KeepAlive,
                (Ok(()), true) if !sent && !matches!(e, ForwardError::RequestBody(_)) => {
                    Next::Linger
                }
                _ => Next::Close,
            }
        }
    }
}

/// Answers a request refused before anything was sent upstream. Its body is skipped when
/// it has all arrived already; otherwise the connection closes after the answer.
async fn answer_unsent<D>(
    down: &mut D,
    buf: &mut BytesMut,
    info: &RequestInfo,
    e: &ForwardError,
    closing: bool,
    scratch: &mut Vec<u8>,
) -> Next
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    let skip = info.within(buf.len()) && info.tunnel.is_none();
    let close = closing || !skip;
    let head_only = info.method == http::Method::HEAD;
    if write_error(down, e, head_only, close, scratch)
        .await
        .is_err()
    {
        return Next::Close;
    }
    match (skip, info.end()) {
        (true, Some(end)) => {
            buf.advance(end);
            Next::KeepAlive
        }
        _ => Next::Linger,
    }
}

/// What the access log and the trace take of a relayed request's head.
fn telemetry_head<'a>(
    info: &'a RequestInfo,
    head: &'a [u8],
    headers: &'a http::HeaderMap,
) -> crate::telemetry::Head<'a> {
    let authority = info
        .authority
        .clone()
        .and_then(|a| head.get(a))
        .and_then(|a| std::str::from_utf8(a).ok())
        .or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let path = head
        .get(info.target.clone())
        .and_then(|p| std::str::from_utf8(p).ok())
        .unwrap_or("");
    // An absolute-form target is logged by its path.
    let path = match path.find("://") {
        Some(at) => path[at + 3..]
            .find('/')
            .map_or("/", |p| &path[at + 3 + p..]),
        None => path,
    };
    crate::telemetry::Head {
        method: &info.method,
        authority,
        path,
        protocol: match info.http10 {
            true => "HTTP/1.0",
            false => "HTTP/1.1",
        },
        request_bytes: match info.body {
            Body::Length(n) => Some(n),
            Body::Chunked => None,
        },
        headers,
    }
}

/// The caller took too long with its head.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n";
/// The caller's head is over the limit.
const HEAD_TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";

/// Answers with `status_line` and closes.
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

/// A mirror copy of `request` (a head and its whole body, as the relay forwards it),
/// with its Host turned by `shadowed` (`payments:80` → `payments-shadow:80`).
pub fn shadow_copy(request: &[u8], shadowed: impl Fn(&str) -> String) -> Option<Vec<u8>> {
    let Ok(Request::Complete(info)) = head::parse_request(request, usize::MAX) else {
        return None;
    };
    let head = &request[..info.len];
    let host = head::header_map(head)
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(&shadowed)?;
    let mut copy = Vec::with_capacity(request.len() + 8);
    head::write_request(head, &info, Some(host.as_bytes()), &mut copy);
    copy.extend_from_slice(&request[info.len..]);
    Some(copy)
}
