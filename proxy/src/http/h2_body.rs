//! Bodies on HTTP/2 streams, both ways and on both sides of the proxy: a received
//! stream read as an [`http_body::Body`] ([`H2Body`]: a caller's request, an upstream's
//! response), and a body sent onto a stream under flow control ([`send_body`]: an
//! upload to the upstream, a response to the caller).

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http::header::CONTENT_LENGTH;
use http_body::{Body, Frame, SizeHint};
use tokio_util::sync::DropGuard;

use super::BoxError;

/// A received HTTP/2 stream's body: its data (the window given back as it is taken),
/// then its trailers.
#[derive(Debug)]
pub struct H2Body {
    recv: h2::RecvStream,
    data_done: bool,
    /// What `content-length` says is left, for the size hint.
    length: Option<u64>,
    /// Whether a reset with NO_ERROR ends the body cleanly: a server's way of saying it
    /// answered early (RFC 9113 8.1). From a client it is a cancel.
    early_end: bool,
    /// Dropping the body ends an upload still running.
    _upload: Option<DropGuard>,
    /// A tunnel's send side, held open.
    _tunnel: Option<h2::SendStream<Bytes>>,
}

impl H2Body {
    /// A caller's request body, of the request whose head is `headers`.
    pub fn request(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        Self {
            recv,
            data_done: false,
            length: content_length(headers),
            early_end: false,
            _upload: None,
            _tunnel: None,
        }
    }

    /// An upstream's response body, of the response whose head is `headers`.
    pub fn response(recv: h2::RecvStream, headers: &HeaderMap) -> Self {
        Self {
            early_end: true,
            ..Self::request(recv, headers)
        }
    }

    /// Holds, as long as the body lives, the upload of the request it answers and a
    /// tunnel's send side.
    pub(super) fn holding(
        mut self,
        upload: Option<DropGuard>,
        tunnel: Option<h2::SendStream<Bytes>>,
    ) -> Self {
        self._upload = upload;
        self._tunnel = tunnel;
        self
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut this.length {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                // RST_STREAM with NO_ERROR from a server: it answered early and needs no
                // more of the request; its answer ends here, not in error.
                Some(Err(e)) if this.early_end && e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(None);
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(trailers) => Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t)))),
            Err(e) if this.early_end && e.reason() == Some(h2::Reason::NO_ERROR) => {
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.recv.is_end_stream() {
            return SizeHint::with_exact(0);
        }
        self.length.map(SizeHint::with_exact).unwrap_or_default()
    }
}

/// What a head's `content-length` says.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

/// How sending a body ended early.
#[derive(Debug)]
pub enum Cut {
    /// The body being sent failed.
    Body(BoxError),
    /// The stream is gone: the peer reset it, or the connection ended.
    Stream,
}

/// Sends `body` on `stream` under flow control, then its trailers or the end of the
/// stream. A reset from the peer stops it even while the body has nothing to give.
pub async fn send_body<B>(body: &mut B, stream: &mut h2::SendStream<Bytes>) -> Result<(), Cut>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    loop {
        // The next frame before any capacity is asked for: capacity held while the body
        // has nothing to send would be kept from the connection's other streams.
        let frame = poll_fn(|cx| match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(Cut::Body(e.into()))),
            Poll::Ready(frame) => Poll::Ready(Ok(frame.and_then(Result::ok))),
            Poll::Pending => match stream.poll_reset(cx) {
                Poll::Ready(_) => Poll::Ready(Err(Cut::Stream)),
                Poll::Pending => Poll::Pending,
            },
        })
        .await?;
        let Some(frame) = frame else {
            return stream
                .send_data(Bytes::new(), true)
                .map_err(|_| Cut::Stream);
        };
        let frame = match frame.into_data() {
            Ok(mut data) => {
                let last = body.is_end_stream();
                if data.is_empty() && !last {
                    continue;
                }
                loop {
                    let granted = if data.is_empty() {
                        0
                    } else {
                        stream.reserve_capacity(data.len());
                        match poll_fn(|cx| stream.poll_capacity(cx)).await {
                            Some(Ok(n)) => n,
                            Some(Err(_)) | None => return Err(Cut::Stream),
                        }
                    };
                    let chunk = data.split_to(granted.min(data.len()));
                    let end = last && data.is_empty();
                    if !chunk.is_empty() || end {
                        stream.send_data(chunk, end).map_err(|_| Cut::Stream)?;
                    }
                    if data.is_empty() {
                        break;
                    }
                }
                if last {
                    return Ok(());
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            return stream.send_trailers(trailers).map_err(|_| Cut::Stream);
        }
    }
}

/// The reason to reset a stream with when the body sent on it failed: the upstream's
/// own when it reset its stream (a gRPC server's CANCEL reaches the caller as CANCEL),
/// else INTERNAL_ERROR.
pub fn reset_reason(e: &BoxError) -> h2::Reason {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(e) = source {
        if let Some(reason) = e.downcast_ref::<h2::Error>().and_then(h2::Error::reason) {
            return reason;
        }
        source = e.source();
    }
    h2::Reason::INTERNAL_ERROR
}

/// Reads a received body to its end: its bytes and its trailers (tests of both sides).
#[cfg(test)]
pub(super) async fn read_all(
    body: &mut h2::RecvStream,
) -> Result<(Vec<u8>, Option<HeaderMap>), h2::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, body.trailers().await?))
}
