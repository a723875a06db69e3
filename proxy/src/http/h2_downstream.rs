//! A downstream HTTP/2 connection, served with the h2 crate directly.
//!
//! Why not hyper's server: it spawns a task per stream, moving the stream's whole state
//! into it, and wraps each body twice more. Here the connection's own task polls its
//! streams: no task per stream, each stream's state allocated once and never moved, and
//! an answer's frames gathered with the connection's other writes of the same turn.
//! What hyper's server did is kept: its window, buffer and stream limits, the head size
//! limit, `content-length` for a body of known length, a stream whose caller resets it
//! dropped (its upstream attempt with it), and GOAWAY that lets open streams finish.
//! One thing it did not: the connection is idle (and closed after the idle timeout) when
//! no stream is open, which the loop here sees without any counting.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{CONTENT_LENGTH, DATE, Entry};
use http::{HeaderValue, Request, Response};
use http_body::Body;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::BoxError;
use super::h2_body::{Cut, reset_reason, send_body};

/// hyper's server defaults, which braid served with before.
const CONN_WINDOW: u32 = 1024 * 1024;
const STREAM_WINDOW: u32 = 1024 * 1024;
const MAX_SEND_BUFFER: usize = 400 * 1024;
const MAX_CONCURRENT_STREAMS: u32 = 200;
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// How a served connection ended.
#[derive(Debug)]
pub enum Ended {
    /// The caller closed it, or it ended after GOAWAY.
    Closed,
    /// No stream was open for the idle timeout: GOAWAY, then closed.
    Idle,
    /// The caller did not finish its preface within the head timeout: closed.
    PrefaceTimeout,
    /// The proxy drained it: GOAWAY, then closed once its streams finished.
    Drained,
    /// The connection failed (a protocol error, or the socket's).
    Failed(h2::Error),
}

/// What a served connection is held to.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// The largest request head, in bytes (HPACK-decoded).
    pub max_header_list: u32,
    /// From the accept to the client's connection preface.
    pub preface: Duration,
    /// A connection with no open stream this long is closed.
    pub idle: Duration,
}

/// How long a closing connection with no stream open waits for the client's part of
/// the GOAWAY exchange (h2 sends its final GOAWAY once the client answers a PING)
/// before it is closed outright: a client that never answers holds nothing.
const CLOSE_GRACE: Duration = Duration::from_secs(10);

/// Serves HTTP/2 on `io`: each stream the caller opens is handed to `on_stream`, and the
/// future it returns is polled by this task until it ends. Ends when the caller closes,
/// when no stream has been open for `bounds.idle`, or when `drain` fires (GOAWAY; open
/// streams finish first).
pub async fn serve<I, F, Fut>(
    io: I,
    bounds: Bounds,
    drain: &CancellationToken,
    mut on_stream: F,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Fut,
    Fut: Future<Output = ()>,
{
    let handshake = h2::server::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONN_WINDOW)
        .max_header_list_size(bounds.max_header_list)
        .max_send_buffer_size(MAX_SEND_BUFFER)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .handshake::<_, Bytes>(io);
    // A caller that never finishes its preface holds nothing past the head timeout.
    let mut conn = tokio::select! {
        conn = handshake => match conn {
            Ok(conn) => conn,
            Err(e) => return Ended::Failed(e),
        },
        () = tokio::time::sleep(bounds.preface) => return Ended::PrefaceTimeout,
        () = drain.cancelled() => return Ended::Drained,
    };
    let idle = bounds.idle;
    let mut streams = FuturesUnordered::new();
    // One timer, for the present wait: idleness, or the close grace.
    let mut timer = Timer {
        sleep: pin!(tokio::time::sleep_until(after(idle))),
        armed: true,
    };
    let mut drained = pin!(drain.cancelled());
    let mut closing = None;
    poll_fn(|cx| {
        loop {
            // Streams first: the answers they hand over are then written with this
            // turn's other frames when the connection is polled next.
            while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            let mut accepted = false;
            loop {
                match conn.poll_accept(cx) {
                    Poll::Ready(Some(Ok((req, respond)))) => {
                        streams.push(on_stream(req, respond));
                        accepted = true;
                        // Idle from when this stream ends, however soon that is.
                        timer.armed = false;
                    }
                    // A caller that closes once it has GOAWAY may leave the last
                    // frames unwritten: that is how a closing connection ends.
                    Poll::Ready(Some(Err(e))) => {
                        return Poll::Ready(closing.take().unwrap_or(Ended::Failed(e)));
                    }
                    Poll::Ready(None) => {
                        return Poll::Ready(closing.take().unwrap_or(Ended::Closed));
                    }
                    Poll::Pending => break,
                }
            }
            if accepted {
                // New streams start now, not on the next wake.
                continue;
            }
            if closing.is_some() {
                // Open streams finish (a drain's own deadline bounds them); with none
                // open, the client has CLOSE_GRACE to let the connection close.
                if streams.is_empty() && timer.expired(cx, CLOSE_GRACE) {
                    tracing::debug!("closing connection: the client did not finish GOAWAY");
                    return Poll::Ready(closing.take().unwrap_or(Ended::Closed));
                }
                return Poll::Pending;
            }
            if drained.as_mut().poll(cx).is_ready() {
                conn.graceful_shutdown();
                closing = Some(Ended::Drained);
                timer.armed = false;
                continue;
            }
            if !streams.is_empty() {
                return Poll::Pending;
            }
            if timer.expired(cx, idle) {
                conn.graceful_shutdown();
                closing = Some(Ended::Idle);
                timer.armed = false;
                continue;
            }
            return Poll::Pending;
        }
    })
    .await
}

/// The serve loop's one timer.
struct Timer<'a> {
    sleep: std::pin::Pin<&'a mut tokio::time::Sleep>,
    /// Whether it is set for the present wait (a new wait re-arms it from now).
    armed: bool,
}

impl Timer<'_> {
    /// Whether `wait` has passed since the present wait began (armed now if it was not).
    fn expired(&mut self, cx: &mut std::task::Context<'_>, wait: Duration) -> bool {
        if !self.armed {
            self.sleep.as_mut().reset(after(wait));
            self.armed = true;
        }
        self.sleep.as_mut().poll(cx).is_ready()
    }
}

/// `wait` from now, or far ahead when that is past what the clock can say.
fn after(wait: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(wait)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// Answers the stream of `respond` with what `answer` resolves to, its body sent under
/// flow control. Dropped early (the upstream attempt with it) when the caller resets the
/// stream; a body that fails resets the stream with the upstream's reason. `answer` is
/// `Unpin` (boxed, when it is large) so that it is polled where it is, never copied.
pub async fn answer<A, B>(mut respond: h2::server::SendResponse<Bytes>, mut answer: A)
where
    A: Future<Output = Response<B>> + Unpin,
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let resp = poll_fn(|cx| match Pin::new(&mut answer).poll(cx) {
        Poll::Ready(resp) => Poll::Ready(Some(resp)),
        Poll::Pending => match respond.poll_reset(cx) {
            Poll::Ready(_) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        },
    })
    .await;
    let Some(resp) = resp else {
        tracing::debug!("the caller reset the stream before its answer");
        return;
    };
    let (parts, mut body) = resp.into_parts();
    let mut head = Response::from_parts(parts, ());
    if let Entry::Vacant(date) = head.headers_mut().entry(DATE)
        && let Some(now) = super::date::now()
    {
        date.insert(now);
    }
    let end = body.is_end_stream();
    if !end && let Some(len) = body.size_hint().exact() {
        head.headers_mut()
            .entry(CONTENT_LENGTH)
            .or_insert_with(|| HeaderValue::from(len));
    }
    let mut stream = match respond.send_response(head, end) {
        Ok(stream) => stream,
        // A head h2 will not send (a connection-specific header): the caller hears of
        // it as a reset, not a stream that just ends.
        Err(e) => {
            tracing::warn!(error = %e, "the answer's head could not be sent");
            respond.send_reset(h2::Reason::INTERNAL_ERROR);
            return;
        }
    };
    if end {
        return;
    }
    match send_body(&mut body, &mut stream).await {
        Ok(()) | Err(Cut::Stream) => {}
        Err(Cut::Body(e)) => {
            tracing::debug!(error = %e, "the answer's body failed");
            stream.send_reset(reset_reason(&e));
        }
    }
}

#[cfg(test)]
mod tests {
    //! A served connection over an in-memory pipe, against h2's own client.

    use std::sync::Arc;

    use http::HeaderMap;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};
    use tokio::sync::{Notify, oneshot};
    use tokio::task::JoinHandle;

    use super::*;
    use crate::http::h2_body::read_all;

    type Client = h2::client::SendRequest<Bytes>;
    type Stream = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

    /// Serves one connection with `on_stream`; the client's handle and how the
    /// connection ended.
    async fn serving<F>(
        idle: Duration,
        drain: CancellationToken,
        on_stream: F,
    ) -> (Client, JoinHandle<Ended>)
    where
        F: FnMut(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Stream
            + Send
            + 'static,
    {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let bounds = Bounds {
            max_header_list: 16 * 1024,
            preface: idle,
            idle,
        };
        let served = tokio::spawn(async move { serve(server, bounds, &drain, on_stream).await });
        let (send, conn) = h2::client::handshake(client).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        (send, served)
    }

    /// Sends a GET and waits for its answer's head.
    async fn get(client: &Client, path: &str) -> Response<h2::RecvStream> {
        let req = Request::get(format!("http://app{path}")).body(()).unwrap();
        let mut client = client.clone().ready().await.unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        resp.await.unwrap()
    }

    /// Starts an upload, sends part of it, then resets it with `reason`.
    async fn cut_upload(client: Client, reason: h2::Reason) {
        let mut client = client.ready().await.unwrap();
        let req = Request::post("http://app/upload").body(()).unwrap();
        let (_resp, mut upload) = client.send_request(req, false).unwrap();
        upload
            .send_data(Bytes::from_static(b"part"), false)
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        upload.send_reset(reason);
    }

    /// A stream that waits: `started` once it has begun, answered once `release`d.
    #[derive(Default)]
    struct Gate {
        started: Notify,
        release: Notify,
    }

    /// Answers `/hold` once `gate` releases it, anything else at once.
    fn holding(
        gate: Arc<Gate>,
    ) -> impl FnMut(Request<h2::RecvStream>, h2::server::SendResponse<Bytes>) -> Stream {
        move |req, respond| {
            let gate = gate.clone();
            Box::pin(answer(
                respond,
                Box::pin(async move {
                    if req.uri().path() == "/hold" {
                        gate.started.notify_one();
                        gate.release.notified().await;
                    }
                    Response::new(Full::new(Bytes::from_static(b"ok")))
                }),
            ))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_once_its_last_stream_ended_for_the_timeout() {
        let gate = Arc::new(Gate::default());
        let idle = Duration::from_secs(10);
        let (client, served) = serving(idle, CancellationToken::new(), holding(gate.clone())).await;
        let held = tokio::spawn({
            let client = client.clone();
            async move { get(&client, "/hold").await.status() }
        });
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!served.is_finished(), "a stream is open");
        gate.release.notify_one();
        assert_eq!(held.await.unwrap(), 200);
        tokio::time::sleep(Duration::from_secs(8)).await;
        // A stream within the timeout starts it again once it ends.
        assert_eq!(get(&client, "/now").await.status(), 200);
        tokio::time::sleep(Duration::from_secs(9)).await;
        assert!(!served.is_finished(), "idle for 9 s only");
        tokio::time::sleep(Duration::from_secs(2)).await;
        let ended = served.await.unwrap();
        assert!(matches!(ended, Ended::Idle), "{ended:?}");
    }

    #[tokio::test]
    async fn a_drained_connection_finishes_its_open_streams_first() {
        let gate = Arc::new(Gate::default());
        let drain = CancellationToken::new();
        let (client, served) = serving(
            Duration::from_secs(3600),
            drain.clone(),
            holding(gate.clone()),
        )
        .await;
        let held = tokio::spawn({
            let client = client.clone();
            async move { read_all(get(&client, "/hold").await.body_mut()).await }
        });
        gate.started.notified().await;
        drain.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!served.is_finished(), "the open stream was cut");
        gate.release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().0, b"ok");
        assert!(matches!(served.await.unwrap(), Ended::Drained));
    }

    #[tokio::test]
    async fn a_stream_the_caller_resets_is_dropped_with_its_upstream_attempt() {
        let (dropped_tx, dropped) = oneshot::channel::<()>();
        let mut dropped_tx = Some(dropped_tx);
        let (client, _served) = serving(
            Duration::from_secs(3600),
            CancellationToken::new(),
            move |_req, respond| {
                let attempt = dropped_tx.take();
                Box::pin(answer(
                    respond,
                    Box::pin(async move {
                        let _attempt = attempt;
                        std::future::pending::<Response<Full<Bytes>>>().await
                    }),
                ))
            },
        )
        .await;
        cut_upload(client, h2::Reason::CANCEL).await;
        // The attempt's future is dropped: its sender goes with it.
        let gone = tokio::time::timeout(Duration::from_secs(5), dropped).await;
        assert!(matches!(gone, Ok(Err(_))), "{gone:?}");
    }

    #[tokio::test]
    async fn a_large_body_and_its_trailers_reach_the_caller_under_flow_control() {
        let (client, _served) = serving(
            Duration::from_secs(3600),
            CancellationToken::new(),
            |req, respond| {
                Box::pin(async move {
                    if req.uri().path() == "/small" {
                        let small = Response::new(Full::new(Bytes::from_static(b"ok")));
                        return answer(respond, std::future::ready(small)).await;
                    }
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", HeaderValue::from_static("0"));
                    let frames = [
                        Frame::data(Bytes::from(vec![1u8; 100_000])),
                        Frame::data(Bytes::from(vec![2u8; 100_000])),
                        Frame::trailers(trailers),
                    ];
                    let body = StreamBody::new(futures_util::stream::iter(
                        frames.map(Ok::<_, std::convert::Infallible>),
                    ));
                    answer(respond, std::future::ready(Response::new(body))).await
                })
            },
        )
        .await;
        // The client's window is the spec's 64 KiB: the body waits for it to open.
        let mut resp = get(&client, "/grpc").await;
        assert!(!resp.headers().contains_key(CONTENT_LENGTH));
        let (bytes, trailers) = read_all(resp.body_mut()).await.unwrap();
        assert_eq!(bytes.len(), 200_000);
        assert_eq!(bytes[99_999..100_001], [1, 2]);
        assert_eq!(trailers.unwrap()["grpc-status"], "0");
        // A body of known length says so.
        let small = get(&client, "/small").await;
        assert_eq!(small.headers()[CONTENT_LENGTH], "2");
        // Answers without a date get one (RFC 9110 6.6.1), as hyper's server gave them.
        let date = small.headers()[DATE].to_str().unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }

    #[tokio::test]
    async fn a_failing_body_resets_the_stream_with_the_upstreams_reason() {
        let (client, _served) = serving(
            Duration::from_secs(3600),
            CancellationToken::new(),
            |_req, respond| {
                let frames: [Result<Frame<Bytes>, h2::Error>; 2] = [
                    Ok(Frame::data(Bytes::from_static(b"part"))),
                    Err(h2::Error::from(h2::Reason::CANCEL)),
                ];
                let body = StreamBody::new(futures_util::stream::iter(frames));
                Box::pin(answer(respond, std::future::ready(Response::new(body))))
            },
        )
        .await;
        // What was queued before the reset may be dropped with it (h2 discards what the
        // stream had not sent yet, head included); the reset's reason is what the caller
        // must see.
        let mut client = client.ready().await.unwrap();
        let req = Request::get("http://app/").body(()).unwrap();
        let (resp, _) = client.send_request(req, true).unwrap();
        let err = match resp.await {
            Ok(mut resp) => read_all(resp.body_mut()).await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(err.reason(), Some(h2::Reason::CANCEL));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_sends_its_preface_is_closed_as_a_slow_head() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let bounds = Bounds {
            max_header_list: 16 * 1024,
            preface: Duration::from_secs(3),
            idle: Duration::from_secs(60),
        };
        let drain = CancellationToken::new();
        let served = serve(server, bounds, &drain, holding(Arc::new(Gate::default())));
        let ended = tokio::time::timeout(Duration::from_secs(4), served).await;
        assert!(matches!(ended, Ok(Ended::PrefaceTimeout)), "{ended:?}");
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_goaway_is_closed_after_the_grace() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let bounds = Bounds {
            max_header_list: 16 * 1024,
            preface: Duration::from_secs(10),
            idle: Duration::from_secs(10),
        };
        let served = tokio::spawn(async move {
            let drain = CancellationToken::new();
            serve(server, bounds, &drain, holding(Arc::new(Gate::default()))).await
        });
        // A preface and empty SETTINGS, then nothing: never a PING answered, never a
        // byte read.
        use tokio::io::AsyncWriteExt;
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(19)).await;
        assert!(!served.is_finished(), "closed before the grace ran out");
        let ended = tokio::time::timeout(Duration::from_secs(5), served).await;
        assert!(matches!(ended, Ok(Ok(Ended::Idle))), "{ended:?}");
        drop(client);
    }

    #[tokio::test]
    async fn a_callers_reset_is_a_failed_upload_whatever_its_reason() {
        let (saw, seen) = oneshot::channel();
        let mut saw = Some(saw);
        let (client, _served) = serving(
            Duration::from_secs(3600),
            CancellationToken::new(),
            move |req, respond| {
                let saw = saw.take();
                Box::pin(async move {
                    let (parts, recv) = req.into_parts();
                    let body = crate::http::h2_body::H2Body::request(recv, &parts.headers);
                    let read = http_body_util::BodyExt::collect(body).await;
                    let _ = saw.unwrap().send(read.is_err());
                    drop(respond);
                })
            },
        )
        .await;
        // NO_ERROR from a client is still a cancel: the upload is not complete.
        cut_upload(client, h2::Reason::NO_ERROR).await;
        assert!(seen.await.unwrap(), "a cut upload read as complete");
    }
}
