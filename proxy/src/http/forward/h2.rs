//! HTTP/2, served by hyper: each stream's request goes through the same request path
//! (admission, routing, the rule, retries, attempts) to a pooled HTTP/2 upstream
//! (`http/h2_upstream.rs`).

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{
    Admission, Finished, Forwarder, HeadersOf, Outgoing, ProxyBody, error_response,
    grpc_error_response,
};
use crate::balance::Upstream;
use crate::http::exchange::{Answer, Exchange};
use crate::http::h2_upstream::H2Body;
use crate::http::replay::Replayable;
use crate::http::{ForwardError, Route, strip_hop_by_hop};
use crate::limits::{Activity, BusyBody};
use crate::metrics::limits::Limit;
use crate::routing::{RequestHead, is_idempotent};

impl Forwarder {
    /// Forwards one HTTP/2 request and answers with the upstream's response or an error
    /// status. The target is looked up in the config in force now.
    pub async fn forward(&self, mut req: Request<Incoming>, route: &Route) -> Response<ProxyBody> {
        let (in_flight, edits) = self.observe(&telemetry_head(&req)).unzip();
        if let Err(e) = crate::http::host::check(&mut req) {
            let e = ForwardError::BadHost(e);
            self.refused(in_flight, &e);
            return error_response(&e);
        }
        let admission = Admission {
            probe: is_probe(&req),
            method: req.method(),
            path: req.uri().path(),
            headers: HeadersOf::Parsed(req.headers()),
            // Extended CONNECT (RFC 8441) names its protocol; plain CONNECT tunnels.
            tunnel: (req.method() == http::Method::CONNECT).then(|| {
                req.extensions()
                    .get::<hyper::ext::Protocol>()
                    .map_or("CONNECT", |p| p.as_str())
            }),
        };
        let mut started = match self.begin(&admission, route) {
            Ok(started) => started,
            Err(e) => {
                tracing::debug!(error = %e, "request refused");
                self.refused(in_flight, &e);
                return match is_grpc(&req) {
                    true => grpc_error_response(&e),
                    false => error_response(&e),
                };
            }
        };
        started.telemetry = in_flight.map(|mut t| {
            t.to_target(&started.target.label);
            t
        });
        strip_hop_by_hop(req.headers_mut());
        let selected = started.target.select(&RequestHead::of(&req));
        // After routing, which sees the caller's headers, as on HTTP/1.1.
        for (name, value) in edits.into_iter().flatten() {
            match value {
                Some(value) => req.headers_mut().insert(name, value),
                None => req.headers_mut().remove(name),
            };
        }
        let idempotent = is_idempotent(req.method());
        let mut x = HyperExchange {
            forwarder: self,
            req: HyperRequest::Once(Some(req)),
        };
        let (result, routed) = self
            .send(&started.target, selected, &mut x, idempotent)
            .await;
        if let Err(e) = &result {
            tracing::debug!(target = %started.target.label, error = %e, "request failed");
        }
        self.finish(started, routed, Finished::of(&result));
        match result {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                resp.map(|body| body.map_err(Into::into).boxed())
            }
            Err(e) => error_response(&e),
        }
    }
}

/// The request's body, once or buffered for several attempts.
enum HyperRequest {
    Once(Option<Request<Incoming>>),
    Replay(Replayable),
}

/// Attempts of an HTTP/2 request through hyper's client.
struct HyperExchange<'a> {
    forwarder: &'a Forwarder,
    req: HyperRequest,
}

impl Exchange for HyperExchange<'_> {
    type Answer = Response<H2Body>;

    async fn prepare(&mut self, send: &Outgoing<'_>, retry: bool) -> Result<bool, ForwardError> {
        let mirror = send.selected.mirror();
        if !retry && mirror.is_none() {
            return Ok(false);
        }
        let HyperRequest::Once(req) = &mut self.req else {
            return Ok(true);
        };
        let Some(req) = req.take() else {
            return Ok(false);
        };
        match Replayable::buffer(req).await? {
            // Too large (or of unknown length) to hold: sent once, not copied. No per-try
            // deadline: it would run while the caller is still uploading.
            Err(req) => {
                self.req = HyperRequest::Once(Some(req));
                Ok(false)
            }
            Ok(replayable) => {
                if let Some((group, endpoint)) = mirror {
                    let fw = self.forwarder;
                    let sent = fw.mirrors.send_h2(endpoint, replayable.request());
                    fw.metrics.http.mirrored(send.label, group, sent);
                }
                self.req = HyperRequest::Replay(replayable);
                Ok(true)
            }
        }
    }

    async fn send(&mut self, up: &Upstream) -> Result<Response<H2Body>, ForwardError> {
        let req = match &mut self.req {
            HyperRequest::Once(req) => req.take().ok_or(ForwardError::Consumed)?.map(Either::Left),
            HyperRequest::Replay(r) => r.request(),
        };
        self.forwarder.pool.send_h2(up, req).await
    }
}

impl Answer for Response<H2Body> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }

    fn overloaded(&self) -> bool {
        self.headers().contains_key("x-braid-overloaded")
    }

    fn body_length(&self) -> Option<u64> {
        http_body::Body::size_hint(self.body()).exact()
    }
}

/// What the access log and the trace take of an HTTP/2 request's head.
fn telemetry_head<B>(req: &Request<B>) -> crate::telemetry::Head<'_> {
    crate::telemetry::Head {
        method: req.method(),
        authority: req.uri().authority().map_or("", |a| a.as_str()),
        path: req.uri().path(),
        protocol: "HTTP/2",
        request_bytes: req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok()),
        headers: req.headers(),
    }
}

/// Whether `req` is a gRPC call (its client reads `grpc-status`, not the HTTP status).
fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether `req` is a kubelet health check (never shed).
fn is_probe<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("kube-probe/"))
}

/// Serves HTTP/2 on `io`, forwarding every request along `route`, until the client
/// closes, the connection has no open stream for the idle timeout, or `drain` fires
/// (then in-flight requests finish and the client gets GOAWAY).
pub async fn serve_h2<I>(
    io: I,
    forwarder: Forwarder,
    route: Route,
    drain: tokio_util::sync::CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = *forwarder.limits();
    let metrics = forwarder.metrics.clone();
    let direction = forwarder.direction();
    // Each stream holds the connection busy until its response body ends: an HTTP/2
    // connection with none open is idle.
    let activity = Arc::new(Activity::default());
    let busy = activity.clone();
    // Shared by the connection's streams: one reference count per stream, not a copy of
    // every part of the forwarder.
    let forwarder = Arc::new(forwarder);
    let service = service_fn(move |req| {
        let forwarder = forwarder.clone();
        let route = route.clone();
        let busy = busy.busy();
        // Boxed: the request path's future is large, and hyper moves each stream's future
        // into a task of its own; a pointer moves for nothing, the whole state did not
        // (memmove was a sixth of the proxy's CPU under HTTP/2 load).
        Box::pin(async move {
            let resp = forwarder.forward(req, &route).await;
            // The guard lives as long as the body: dropped when it ends or is abandoned.
            let resp = resp.map(|body| BusyBody::new(body, busy));
            Ok::<_, std::convert::Infallible>(resp)
        })
    });
    let max_head = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(max_head)
        .serve_connection(TokioIo::new(crate::io::for_h2(io)), service);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(error = %e, "downstream connection ended");
            }
        }
        _ = drain.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = activity.idle_for(limits.idle) => {
            metrics.limits.reached(direction, Limit::idle_timeout);
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
