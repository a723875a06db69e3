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

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
use crate::routing::{RequestHead, is_idempotent};

/// The caller's read buffer grows by this much when it runs low.
const READ_BUF: usize = 8 * 1024;

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
/// the client closes or `drain` fires (a request in progress finishes first).
pub async fn serve_h1<I>(
    mut io: I,
    mut buf: BytesMut,
    forwarder: Forwarder,
    route: Route,
    drain: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut held = Held::new(forwarder.pool());
    let mut scratch = Vec::new();
    let max_body = usize::try_from(MAX_BUFFERED_BODY).unwrap_or(usize::MAX);
    loop {
        let info = loop {
            match head::parse_request(&buf, max_body) {
                Ok(Request::Partial) => {}
                Ok(Request::Relay(info)) => break info,
                Ok(Request::Handover(why)) => {
                    tracing::trace!(?why, "handing the connection to the full HTTP/1.1 server");
                    // Its upstream connections go back to the pool for others.
                    drop(held);
                    return handover(io, buf, forwarder, route, drain).await;
                }
                Err(e) => return refuse(&mut io, &e, &mut scratch).await,
            }
            // Reads of a decent size, not the few bytes left at the buffer's end.
            if buf.capacity() - buf.len() < 1024 {
                buf.reserve(READ_BUF);
            }
            // Between requests a draining proxy closes the connection; a request that
            // has started arriving is read and served.
            let read = if buf.is_empty() {
                tokio::select! {
                    read = io.read_buf(&mut buf) => read,
                    () = drain.cancelled() => return,
                }
            } else {
                io.read_buf(&mut buf).await
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let end = info.len + info.body;
        while buf.len() < end {
            buf.reserve(end - buf.len());
            match io.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        // The caller is told when this is the connection's last answer.
        let closing = info.close || drain.is_cancelled();
        let arrived = Arrived {
            bytes: &buf[..end],
            info: &info,
            closing,
        };
        let next = relay_one(
            &forwarder,
            &mut io,
            arrived,
            &route,
            &mut held,
            &mut scratch,
        )
        .await;
        match next {
            Next::KeepAlive if !closing => buf.advance(end),
            Next::KeepAlive | Next::Close => {
                let _ = io.shutdown().await;
                return;
            }
            Next::Handover => {
                drop(held);
                return handover(io, buf, forwarder, route, drain).await;
            }
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
        Ok(answer) => match relay_response(down, answer, closing, held, scratch).await {
            Ok(true) => Next::KeepAlive,
            Ok(false) => Next::Close,
            Err(e) => {
                tracing::debug!(error = %e, "response relay ended early");
                Next::Close
            }
        },
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

/// Answers a head that is not HTTP/1.1 with 400 and closes, as the full server would.
/// (A head too large for the relay is handed over, not refused.)
async fn refuse<D>(down: &mut D, e: &HeadError, scratch: &mut Vec<u8>)
where
    D: AsyncRead + AsyncWrite + Unpin,
{
    tracing::debug!(error = %e, "bad request head");
    scratch.clear();
    scratch.extend_from_slice(
        b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
    );
    let _ = down.write_all(scratch).await;
    let _ = down.shutdown().await;
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
