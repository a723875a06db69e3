//! A request that can be sent more than once (retries, mirror copies): its head kept,
//! its body read into memory — only when it is small and its length known, so that a
//! large upload is never held up or held in memory.

use bytes::Bytes;
use http::{Request, request::Parts};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full};

use super::h2_body::H2Body;
use super::{ForwardError, UpBody};

/// The largest body buffered for a retry or a mirror copy.
pub const MAX_BUFFERED_BODY: u64 = 64 * 1024;

/// A request's head and body, to build copies from.
pub struct Replayable {
    head: Parts,
    body: Bytes,
}

impl Replayable {
    /// Reads `req`'s body into memory when its length is known and at most
    /// [`MAX_BUFFERED_BODY`]; otherwise gives `req` back untouched.
    pub async fn buffer(
        req: Request<H2Body>,
    ) -> Result<Result<Self, Request<H2Body>>, ForwardError> {
        let small = req.body().is_end_stream()
            || req
                .body()
                .size_hint()
                .exact()
                .is_some_and(|n| n <= MAX_BUFFERED_BODY);
        if !small {
            return Ok(Err(req));
        }
        let (head, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| ForwardError::RequestBody(super::BodyError::H2(e)))?
            .to_bytes();
        Ok(Ok(Self { head, body }))
    }

    /// A copy to send. Extensions (the connection's per-request state) are not copied.
    pub fn request(&self) -> Request<UpBody> {
        let mut req = Request::new(Either::Right(Full::new(self.body.clone())));
        *req.method_mut() = self.head.method.clone();
        *req.uri_mut() = self.head.uri.clone();
        *req.version_mut() = self.head.version;
        *req.headers_mut() = self.head.headers.clone();
        req
    }
}
