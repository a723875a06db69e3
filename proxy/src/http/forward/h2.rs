//! HTTP/2, served by `http/h2_downstream.rs`: each stream's request goes through the same
//! request path (admission, routing, the rule, retries, attempts) to a pooled HTTP/2
//! upstream (`http/h2_upstream.rs`).

use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

use super::{
    Admission, Finished, Forwarder, HeadersOf, Outgoing, ProxyBody, error_response,
    grpc_error_response,
};
use crate::balance::Upstream;
use crate::http::exchange::{Answer, Exchange};
use crate::http::h2_body::H2Body;
use crate::http::h2_downstream::{self, Bounds, Ended};
use crate::http::replay::Replayable;
use crate::http::{ForwardError, Route, strip_hop_by_hop};
use crate::metrics::limits::Limit;
use crate::routing::{RequestHead, is_idempotent};

impl Forwarder {
    /// Forwards one HTTP/2 request and answers with the upstream's response or an error
    /// status. The target is looked up in the config in force now.
    pub async fn forward(&self, mut req: Request<H2Body>, route: &Route) -> Response<ProxyBody> {
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
                    .get::<h2::ext::Protocol>()
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
        let connect = req.method() == http::Method::CONNECT;
        let mut x = H2Exchange {
            forwarder: self,
            req: H2Request::Once(Some(req)),
        };
        // Boxed: sending (rule, retries, attempt, upstream) holds about 3 KB of state,
        // which would otherwise be copied with every future that contains it.
        let (result, routed) =
            Box::pin(self.send(&started.target, selected, &mut x, idempotent)).await;
        if let Err(e) = &result {
            tracing::debug!(target = %started.target.label, error = %e, "request failed");
        }
        self.finish(started, routed, Finished::of(&result));
        match result {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                // A tunnel's bytes follow a 2xx to CONNECT: a length there would make
                // the caller reset it (RFC 9113 8.5).
                if connect && resp.status().is_success() {
                    resp.headers_mut().remove(http::header::CONTENT_LENGTH);
                }
                resp.map(|body| body.map_err(Into::into).boxed())
            }
            Err(e) => error_response(&e),
        }
    }
}

/// The request's body, once or buffered for several attempts.
enum H2Request {
    Once(Option<Request<H2Body>>),
    Replay(Replayable),
}

/// Attempts of an HTTP/2 request over pooled upstream connections.
struct H2Exchange<'a> {
    forwarder: &'a Forwarder,
    req: H2Request,
}

impl Exchange for H2Exchange<'_> {
    type Answer = Response<H2Body>;

    async fn prepare(&mut self, send: &Outgoing<'_>, retry: bool) -> Result<bool, ForwardError> {
        let mirror = send.selected.mirror();
        if !retry && mirror.is_none() {
            return Ok(false);
        }
        let H2Request::Once(req) = &mut self.req else {
            return Ok(true);
        };
        let Some(req) = req.take() else {
            return Ok(false);
        };
        match Replayable::buffer(req).await? {
            // Too large (or of unknown length) to hold: sent once, not copied. No per-try
            // deadline: it would run while the caller is still uploading.
            Err(req) => {
                self.req = H2Request::Once(Some(req));
                Ok(false)
            }
            Ok(replayable) => {
                if let Some((group, endpoint)) = mirror {
                    let fw = self.forwarder;
                    let sent = fw.mirrors.send_h2(endpoint, replayable.request());
                    fw.metrics.http.mirrored(send.label, group, sent);
                }
                self.req = H2Request::Replay(replayable);
                Ok(true)
            }
        }
    }

    async fn send(&mut self, up: &Upstream) -> Result<Response<H2Body>, ForwardError> {
        let req = match &mut self.req {
            H2Request::Once(req) => req.take().ok_or(ForwardError::Consumed)?.map(Either::Left),
            H2Request::Replay(r) => r.request(),
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
pub async fn serve_h2<I>(io: I, forwarder: Forwarder, route: Route, drain: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let limits = *forwarder.limits();
    let bounds = Bounds {
        max_header_list: u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX),
        preface: limits.header_read,
        idle: limits.idle,
    };
    let (fw, route) = (&forwarder, &route);
    let io = crate::io::for_h2(io);
    let ended = h2_downstream::serve(io, bounds, &drain, |req, respond| {
        let (parts, recv) = req.into_parts();
        let body = H2Body::request(recv, &parts.headers);
        // Boxed: the stream's future then holds a pointer to the request path's state
        // (about 1.4 KB), not the state itself, so pushing it copies little.
        let forward = Box::pin(fw.forward(Request::from_parts(parts, body), route));
        h2_downstream::answer(respond, forward)
    })
    .await;
    match ended {
        Ended::Idle => fw
            .metrics
            .limits
            .reached(fw.direction(), Limit::idle_timeout),
        // The preface waits as a request head does.
        Ended::PrefaceTimeout => fw
            .metrics
            .limits
            .reached(fw.direction(), Limit::header_read_timeout),
        Ended::Failed(e) => tracing::debug!(error = %e, "downstream connection ended"),
        Ended::Closed | Ended::Drained => {}
    }
}
