//! An upstream HTTP/2 connection, driven with the h2 crate directly.
//!
//! Why not hyper's client: it hands each request to the connection's task over a
//! channel, and spawns a task per request that waits for the response and passes it back
//! over a oneshot. Here the caller's own task opens the stream and awaits the response:
//! no channel, no task and no oneshot per request, for every request a proxy forwards.
//! What hyper's client did besides is kept: its window sizes, keep-alive pings, the
//! `content-length` of a body of known length, extended CONNECT's `:protocol` (passed on
//! in the request's extensions), the caller's body streamed under flow control with its
//! trailers, and a stream reset when the caller goes away.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::{HeaderValue, Method, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::h2_body::{Cut, H2Body, send_body};
use super::{BodyError, BoxError, ForwardError};

/// hyper's client defaults, which braid used before: the spec's 64 KiB windows hold a
/// fast upstream back.
const CONN_WINDOW: u32 = 5 * 1024 * 1024;
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const MAX_SEND_BUFFER: usize = 1024 * 1024;
const MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams opened before the server's SETTINGS say how many it takes (the spec's
/// recommended minimum).
const INITIAL_MAX_SEND_STREAMS: usize = 100;

/// Keep-alive of an idle or busy connection: a ping this often, and the connection is
/// dropped when its answer takes longer than `timeout`.
#[derive(Clone, Copy, Debug)]
pub struct KeepAlive {
    /// Between two pings.
    pub interval: Duration,
    /// The longest a ping's answer may take.
    pub timeout: Duration,
}

/// A handle on one upstream HTTP/2 connection; clones share it.
#[derive(Clone, Debug)]
pub struct H2Sender {
    /// One handle, taken in turn: h2 lets a handle have one stream waiting to open (the
    /// upstream at its stream limit), so the others wait here, unsent, and come back to
    /// be sent elsewhere if the connection closes meanwhile (as with hyper's client). A
    /// clone per request would queue all of them inside h2, and a GOAWAY would fail them.
    send: Arc<tokio::sync::Mutex<h2::client::SendRequest<Bytes>>>,
    /// Set when the connection takes no new stream: closing (GOAWAY) or ended.
    closed: Arc<AtomicBool>,
}

impl H2Sender {
    /// Starts HTTP/2 on `io` (to `addr`, for logs) and drives the connection in a task of
    /// its own.
    pub async fn handshake<T>(
        io: T,
        addr: SocketAddr,
        keep_alive: KeepAlive,
    ) -> Result<Self, h2::Error>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, mut conn) = h2::client::Builder::new()
            .initial_max_send_streams(INITIAL_MAX_SEND_STREAMS)
            .initial_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONN_WINDOW)
            .max_header_list_size(MAX_HEADER_LIST)
            .max_send_buffer_size(MAX_SEND_BUFFER)
            .enable_push(false)
            .handshake::<_, Bytes>(io)
            .await?;
        let closed = Arc::new(AtomicBool::new(false));
        let ping = conn.ping_pong();
        let done = closed.clone();
        tokio::spawn(async move {
            tokio::select! {
                res = conn => {
                    if let Err(e) = res {
                        tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
                    }
                }
                () = unanswered_ping(ping, keep_alive) => {
                    tracing::debug!(%addr, "upstream HTTP/2 connection dropped: a ping went unanswered");
                }
            }
            done.store(true, Ordering::Release);
        });
        Ok(Self {
            send: Arc::new(tokio::sync::Mutex::new(send)),
            closed,
        })
    }

    /// Whether the connection takes no new request (closing or ended): the pool opens
    /// another.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sends `req` and waits for the response's head. On failure, the request comes back
    /// when it never left (the connection was closing or gone), so it may go on another.
    #[allow(clippy::result_large_err)]
    pub async fn send<B>(
        &self,
        req: Request<B>,
    ) -> Result<Response<H2Body>, (Option<Request<B>>, ForwardError)>
    where
        B: Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<BoxError>,
    {
        let mut send = self.send.lock().await;
        if let Err(e) = poll_fn(|cx| send.poll_ready(cx)).await {
            self.closed.store(true, Ordering::Release);
            return Err((Some(req), ForwardError::H2(e)));
        }
        let (parts, body) = req.into_parts();
        let mut head = Request::from_parts(parts, ());
        if let Some(len) = body.size_hint().exact()
            && (len != 0 || has_payload_semantics(head.method()))
        {
            head.headers_mut()
                .entry(CONTENT_LENGTH)
                .or_insert_with(|| HeaderValue::from(len));
        }
        // A tunnel's stream stays open whatever its body says: the caller's bytes go
        // up as they come, and one with none yet (a replayed copy) holds the stream open.
        let tunnel = head.method() == Method::CONNECT;
        let end = body.is_end_stream() && !tunnel;
        let sent = send.send_request(head, end);
        drop(send);
        let (response, stream) = sent.map_err(|e| {
            self.closed.store(true, Ordering::Release);
            (None, ForwardError::H2(e))
        })?;
        // The caller's body failing under the upload is the caller's doing, not the
        // upstream's: the upload leaves its error here for the response's failure. The
        // guard is dropped with this future (the caller went away) or with the
        // response's body: an upload still running then ends with a reset. Nothing of
        // this for a request without a body (most): no allocation.
        let (failed, upload, held) = if end {
            (None, None, None)
        } else if body.is_end_stream() {
            (None, None, Some(stream))
        } else {
            let failed = Arc::new(Mutex::new(None));
            let cancel = CancellationToken::new();
            tokio::spawn(pipe(body, stream, failed.clone(), cancel.clone()));
            (Some(failed), Some(cancel.drop_guard()), None)
        };
        match response.await {
            Ok(resp) => {
                let (parts, recv) = resp.into_parts();
                let body = H2Body::response(recv, &parts.headers).holding(upload, held);
                Ok(Response::from_parts(parts, body))
            }
            Err(e) => {
                let body_error = failed.and_then(|f| f.lock().ok()?.take());
                let e = match body_error.map(|b| b.downcast::<h2::Error>()) {
                    Some(Ok(b)) => ForwardError::RequestBody(BodyError::H2(*b)),
                    Some(Err(b)) => ForwardError::RequestBody(BodyError::Read(b)),
                    None => ForwardError::H2(e),
                };
                Err((None, e))
            }
        }
    }
}

/// Ends when a ping goes unanswered for the keep-alive's timeout (never while they are
/// answered, or when the connection has no pings to give).
async fn unanswered_ping(ping: Option<h2::PingPong>, keep_alive: KeepAlive) {
    let Some(mut ping) = ping else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(keep_alive.interval).await;
        match tokio::time::timeout(keep_alive.timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            // The connection is ending; its own future says how.
            Ok(Err(_)) => return std::future::pending().await,
            Err(_) => return,
        }
    }
}

/// Whether a request with this method has a body by definition (RFC 9110): one of known
/// length zero still says `content-length: 0` then, as hyper's client did.
fn has_payload_semantics(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::DELETE | Method::CONNECT
    )
}

/// Streams the caller's `body` on `stream` (see [`send_body`]), and resets the stream if
/// the body fails or the caller goes away.
async fn pipe<B>(
    mut body: B,
    mut stream: h2::SendStream<Bytes>,
    failed: Arc<Mutex<Option<BoxError>>>,
    cancel: CancellationToken,
) where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let sent = tokio::select! {
        sent = send_body(&mut body, &mut stream) => sent,
        () = cancel.cancelled() => {
            stream.send_reset(h2::Reason::CANCEL);
            return;
        }
    };
    match sent {
        Ok(()) | Err(Cut::Stream) => {}
        Err(Cut::Body(e)) => {
            // Before the reset, so the response's failure finds it.
            if let Ok(mut f) = failed.lock() {
                *f = Some(e);
            }
            stream.send_reset(h2::Reason::CANCEL);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The client against h2's own server on loopback: uploads under a small window,
    //! trailers both ways, a caller's failing body, and a caller that goes away.

    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use http::HeaderMap;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::http::h2_body::read_all;

    const KEEP_ALIVE: KeepAlive = KeepAlive {
        interval: Duration::from_secs(30),
        timeout: Duration::from_secs(10),
    };

    /// A caller's body: these frames, then (if `fail`) an error instead of the end; or
    /// no end at all while `hang`.
    struct Caller {
        frames: VecDeque<Frame<Bytes>>,
        fail: bool,
        hang: bool,
    }

    impl Body for Caller {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            if let Some(f) = self.frames.pop_front() {
                return Poll::Ready(Some(Ok(f)));
            }
            if self.hang {
                return Poll::Pending;
            }
            if self.fail {
                return Poll::Ready(Some(Err(std::io::Error::other("caller hung up"))));
            }
            Poll::Ready(None)
        }
    }

    fn caller(frames: Vec<Frame<Bytes>>) -> Caller {
        Caller {
            frames: frames.into(),
            fail: false,
            hang: false,
        }
    }

    /// One HTTP/2 server connection (a 1 KiB window, so uploads wait on flow control),
    /// each request handed to `serve`.
    async fn server<F, Fut>(serve: F) -> H2Sender
    where
        F: Fn(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::Builder::new()
                .initial_window_size(1024)
                .handshake::<_, Bytes>(tcp)
                .await
                .unwrap();
            while let Some(Ok((req, respond))) = conn.accept().await {
                tokio::spawn(serve(req, respond));
            }
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        H2Sender::handshake(tcp, addr, KEEP_ALIVE).await.unwrap()
    }

    #[tokio::test]
    async fn an_upload_streams_under_flow_control_and_trailers_go_both_ways() {
        let sender = server(|req, mut respond| async move {
            let (_, mut body) = req.into_parts();
            let (bytes, trailers) = read_all(&mut body).await.unwrap();
            let head = Response::builder()
                .header("got", bytes.len().to_string())
                .header("got-trailer", trailers.unwrap()["grpc-timeout"].clone())
                .body(())
                .unwrap();
            let mut stream = respond.send_response(head, false).unwrap();
            stream
                .send_data(Bytes::from_static(b"done"), false)
                .unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            stream.send_trailers(trailers).unwrap();
        })
        .await;
        let chunk = Bytes::from(vec![7u8; 10_000]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-timeout", HeaderValue::from_static("1S"));
        let body = caller(vec![
            Frame::data(chunk.clone()),
            Frame::data(chunk),
            Frame::trailers(trailers),
        ]);
        let req = Request::post("http://up/upload").body(body).unwrap();
        let resp = sender.send(req).await.map_err(|(_, e)| e).unwrap();
        assert_eq!(resp.headers()["got"], "20000");
        assert_eq!(resp.headers()["got-trailer"], "1S");
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(collected.to_bytes(), "done");
    }

    #[tokio::test]
    async fn a_body_of_known_length_says_so_and_its_response_hints_its_own() {
        let sender = server(|req, mut respond| async move {
            let length = req.headers().get(CONTENT_LENGTH).cloned();
            let head = Response::builder()
                .header(
                    "asked-length",
                    length.unwrap_or(HeaderValue::from_static("none")),
                )
                .header(CONTENT_LENGTH, "2")
                .body(())
                .unwrap();
            let mut stream = respond.send_response(head, false).unwrap();
            stream.send_data(Bytes::from_static(b"ok"), true).unwrap();
        })
        .await;
        let body = http_body_util::Full::new(Bytes::from_static(b"hello"));
        let req = Request::put("http://up/").body(body).unwrap();
        let resp = sender.send(req).await.map_err(|(_, e)| e).unwrap();
        assert_eq!(resp.headers()["asked-length"], "5");
        assert_eq!(resp.body().size_hint().exact(), Some(2));
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    }

    /// A server that answers nothing and reports how the first upload ended (the reset's
    /// reason, if it was reset).
    async fn upload_watcher() -> (H2Sender, tokio::sync::oneshot::Receiver<Option<h2::Reason>>) {
        let (saw, seen) = tokio::sync::oneshot::channel();
        let saw = Mutex::new(Some(saw));
        let sender = server(move |req, _respond| {
            let saw = saw.lock().unwrap().take();
            async move {
                let (_, mut body) = req.into_parts();
                let reason = read_all(&mut body).await.err().and_then(|e| e.reason());
                let _ = saw.unwrap().send(reason);
            }
        })
        .await;
        (sender, seen)
    }

    #[tokio::test]
    async fn a_callers_failing_body_is_the_callers_fault_and_resets_the_stream() {
        let (sender, seen) = upload_watcher().await;
        let body = Caller {
            fail: true,
            ..caller(vec![Frame::data(Bytes::from_static(b"part"))])
        };
        let req = Request::post("http://up/").body(body).unwrap();
        let err = sender.send(req).await.map(|_| ()).unwrap_err().1;
        // Not the upstream's: outlier detection must not count it against the endpoint.
        assert!(
            matches!(err, ForwardError::RequestBody(BodyError::Read(_))),
            "{err:?}"
        );
        assert_eq!(seen.await.unwrap(), Some(h2::Reason::CANCEL));
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_resets_its_upload() {
        let (sender, seen) = upload_watcher().await;
        let body = Caller {
            hang: true,
            ..caller(vec![Frame::data(Bytes::from_static(b"part"))])
        };
        let req = Request::post("http://up/").body(body).unwrap();
        // The caller gives up before any answer.
        let gave_up = tokio::time::timeout(Duration::from_millis(200), sender.send(req)).await;
        assert!(gave_up.is_err());
        assert_eq!(seen.await.unwrap(), Some(h2::Reason::CANCEL));
    }

    #[tokio::test]
    async fn an_early_answer_with_no_error_reset_ends_the_body_cleanly() {
        // The server answers before the upload ends, and once the caller has the head,
        // resets the stream with NO_ERROR (RFC 9113 8.1: it needs no more of the request).
        let (has_head, head_seen) = tokio::sync::oneshot::channel::<()>();
        let head_seen = Mutex::new(Some(head_seen));
        let sender = server(move |_req, mut respond| {
            let head_seen = head_seen.lock().unwrap().take();
            async move {
                let mut stream = respond.send_response(Response::new(()), false).unwrap();
                stream
                    .send_data(Bytes::from_static(b"early"), false)
                    .unwrap();
                let _ = head_seen.unwrap().await;
                stream.send_reset(h2::Reason::NO_ERROR);
            }
        })
        .await;
        let body = Caller {
            hang: true,
            ..caller(Vec::new())
        };
        let req = Request::post("http://up/").body(body).unwrap();
        let resp = sender.send(req).await.map_err(|(_, e)| e).unwrap();
        has_head.send(()).unwrap();
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.to_bytes(), "early");
    }

    #[tokio::test]
    async fn a_draining_upstream_is_left_at_once_though_a_stream_is_still_open() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            // The first request stays open (a watch); then the server drains.
            let open = conn.accept().await.unwrap().unwrap();
            conn.graceful_shutdown();
            while conn.accept().await.is_some() {}
            drop(open);
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let sender = H2Sender::handshake(tcp, addr, KEEP_ALIVE).await.unwrap();
        let watch = sender.clone();
        tokio::spawn(async move {
            let req = Request::get("http://up/watch")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let _ = watch.send(req).await;
        });
        // Once GOAWAY is in, a request comes back unsent and the connection says it is
        // closed, so the pool opens another rather than failing requests on this one.
        let mut back = None;
        for _ in 0..200 {
            let req = Request::get("http://up/next")
                .body(http_body_util::Empty::<Bytes>::new())
                .unwrap();
            let sent = tokio::time::timeout(Duration::from_millis(50), sender.send(req)).await;
            if let Ok(Err((Some(req), ForwardError::H2(_)))) = sent {
                back = Some(req);
                break;
            }
        }
        assert!(back.is_some(), "a request went to a draining connection");
        assert!(sender.is_closed());
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_gives_the_request_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut conn = h2::server::handshake(tcp).await.unwrap();
            // A draining server: GOAWAY, then the connection ends.
            conn.graceful_shutdown();
            while conn.accept().await.is_some() {}
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let sender = H2Sender::handshake(tcp, addr, KEEP_ALIVE).await.unwrap();
        for _ in 0..200 {
            if sender.is_closed() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(sender.is_closed());
        let req = Request::get("http://up/")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        // Never sent: the pool may send it on a new connection.
        let Err((Some(back), ForwardError::H2(_))) = sender.send(req).await else {
            panic!("a closed connection took the request");
        };
        assert_eq!(back.uri(), "http://up/");
    }
}
