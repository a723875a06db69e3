//! The request path, shared by both engines, in steps of a file each: admission and the
//! port's TLS mode (`begin`, `admit.rs`), the rule's rate limit, faults and deadline
//! (`rule.rs`), retries and their budget (`retry.rs`), one attempt with its timeout, load
//! and outlier judgement (`attempt.rs`), and the accounting of a finished request
//! (`finish`, here). The HTTP/1.1 relay (`h1/`) and HTTP/2 (`h2.rs`) each send through
//! an [`Exchange`](super::exchange::Exchange).

mod admit;
mod attempt;
mod h2;
mod retry;
mod rule;

pub(super) use admit::{Admission, HeadersOf, Started};
pub use h2::serve_h2;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use super::exchange::{Answer, Exchange};
use super::{ForwardError, Mirrors, Pool};
use crate::limits::Limits;
use crate::metrics::http::Routed;
use crate::metrics::limits::Limit;
use crate::metrics::{Direction, Metrics};
use crate::overload::Protector;
use crate::reports::{EjectionLog, SourceCounter, TrafficLog};
use crate::tables::{OutboundTarget, PickError, Selected, TableStore};
use crate::telemetry::{Head, HeaderEdits, InFlight, Outcome, Telemetry};

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, crate::http::BoxError>;

/// One request's way out: what routing chose.
pub(super) struct Outgoing<'a> {
    pub(super) label: &'a Arc<str>,
    pub(super) selected: Selected<'a>,
    /// Whether the last attempt went over mTLS (for the request's metrics).
    tls: AtomicBool,
    /// The last attempt's endpoint, kept only when telemetry is on.
    upstream: Option<Mutex<Option<SocketAddr>>>,
    /// Attempts after the first.
    retries: AtomicU32,
}

/// Forwards the requests of one connection.
#[derive(Clone)]
pub struct Forwarder {
    config: Arc<TableStore>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    mirrors: Mirrors,
    /// What only its side has.
    side: Side,
    /// The connection limits in force.
    limits: Limits,
    /// The access log and tracing (both may be off).
    telemetry: Arc<Telemetry>,
}

/// What only one side of the proxy adds to the request path, so neither carries the
/// other's parts as `None`s.
#[derive(Clone)]
pub enum Side {
    /// From the mesh to the app.
    Inbound(InboundSide),
    /// From the app to the mesh.
    Outbound(OutboundSide),
}

impl Side {
    /// The metrics' name of the side.
    pub fn direction(&self) -> Direction {
        match self {
            Self::Inbound(_) => Direction::inbound,
            Self::Outbound(_) => Direction::outbound,
        }
    }
}

/// The inbound side, for one connection: its caller, and what every inbound connection
/// shares.
#[derive(Clone)]
pub struct InboundSide {
    /// Who is calling on this connection.
    pub peer: InboundPeer,
    /// The side's own parts.
    pub shared: InboundShared,
}

/// What every connection of the inbound side shares.
#[derive(Clone)]
pub struct InboundShared {
    /// Sheds requests when the app is overloaded.
    pub overload: Arc<Protector>,
    /// Counts requests for the operator's rollouts.
    pub traffic: Arc<TrafficLog>,
}

/// The outbound side.
#[derive(Clone)]
pub struct OutboundSide {
    /// Where ejections wait for the operator.
    pub ejections: Arc<EjectionLog>,
}

/// Who is calling, as the inbound side sees the connection.
#[derive(Clone, Debug, Default)]
pub struct InboundPeer {
    /// The connection is braid's mTLS.
    pub tls: bool,
    /// The caller's SPIFFE identity (mTLS only).
    pub identity: Option<Arc<str>>,
    /// The connection's source address.
    pub address: Option<std::net::IpAddr>,
    /// Where a plaintext caller's requests are counted for the operator.
    pub source: Option<Arc<SourceCounter>>,
    /// The port it called.
    pub port: u16,
}

impl InboundPeer {
    /// The caller as AccessPolicies judge it.
    pub fn caller(&self) -> crate::authz::Caller<'_> {
        crate::authz::Caller {
            identity: self.identity.as_deref(),
            address: self.address,
        }
    }
}

impl Forwarder {
    /// A forwarder for `side`, sending through `pool` and its copies through `mirrors`
    /// (shared by the side, so their bound holds for all its connections).
    pub fn new(
        config: Arc<TableStore>,
        pool: Arc<Pool>,
        mirrors: Mirrors,
        metrics: Arc<Metrics>,
        side: Side,
    ) -> Self {
        Self {
            config,
            mirrors,
            pool,
            metrics,
            side,
            limits: Limits::default(),
            telemetry: Arc::default(),
        }
    }

    /// Logs and traces its requests as `telemetry` says.
    pub fn with_telemetry(mut self, telemetry: Arc<Telemetry>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The access log and tracing, when either is on.
    pub(super) fn telemetry(&self) -> Option<&Arc<Telemetry>> {
        Some(&self.telemetry).filter(|t| t.is_on())
    }

    /// Takes a request's head for the access log and trace, when either is on: the
    /// request in flight, and the headers it goes on with.
    pub(super) fn observe(&self, head: &Head<'_>) -> Option<(InFlight, HeaderEdits)> {
        let (in_flight, edits) = self.telemetry()?.begin(self.direction(), head);
        let in_flight = match self.inbound() {
            Some(i) => in_flight.from_peer(i.peer.tls, i.peer.identity.clone()),
            None => in_flight,
        };
        Some((in_flight, edits))
    }

    /// The metrics' name of its side.
    pub(super) fn direction(&self) -> Direction {
        self.side.direction()
    }

    /// The inbound side's parts, on the inbound side.
    fn inbound(&self) -> Option<&InboundSide> {
        match &self.side {
            Side::Inbound(i) => Some(i),
            Side::Outbound(_) => None,
        }
    }

    /// Applies `limits` to its connections and requests.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Counts a connection or request cut off by `limit`.
    pub(super) fn limit_hit(&self, limit: Limit) {
        self.metrics.limits.reached(self.direction(), limit);
    }

    /// The pool its requests go through.
    pub(super) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Where its mirror copies go.
    pub(super) fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Counts a mirror copy of a request to `target`, sent to `group` or dropped.
    pub(super) fn mirrored(&self, target: &Arc<str>, group: &Arc<str>, sent: bool) {
        self.metrics.http.mirrored(target, group, sent);
    }

    /// Sends the request with `x` along `selected` (what routing chose for its head),
    /// under the matching rule's rate limit, faults, deadline and retries.
    pub(super) async fn send<X: Exchange>(
        &self,
        target: &OutboundTarget,
        selected: Result<Selected<'_>, PickError>,
        x: &mut X,
        idempotent: bool,
    ) -> (Result<X::Answer, ForwardError>, Routed) {
        let mut routed = Routed::default();
        let result = match selected {
            Err(e) => Err(ForwardError::from(e)),
            Ok(selected) => {
                routed.rule = selected.rule.map(|r| r.name.clone());
                routed.group = selected.group_name().cloned();
                let send = Outgoing {
                    label: &target.label,
                    selected,
                    tls: AtomicBool::new(false),
                    upstream: self.telemetry().map(|_| Mutex::new(None)),
                    retries: AtomicU32::new(0),
                };
                let result = self.apply_rule(&send, x, idempotent).await;
                routed.tls = send.tls.load(Ordering::Relaxed);
                routed.retries = send.retries.load(Ordering::Relaxed);
                routed.upstream = send.upstream.and_then(|u| u.into_inner().ok().flatten());
                result
            }
        };
        if let Some(inbound) = self.inbound() {
            routed.tls = inbound.peer.tls;
            routed.peer = inbound.peer.identity.clone();
        }
        (result, routed)
    }

    /// Counts a request whose response (or error) is on its way, and logs and traces it.
    pub(super) fn finish(&self, mut started: Started, routed: Routed, finished: Finished<'_>) {
        let Finished {
            status,
            error,
            response_bytes,
        } = finished;
        if let Some(in_flight) = started.telemetry.take() {
            let outcome = Outcome {
                status,
                target: Some(started.target.label.clone()),
                rule: routed.rule.clone(),
                group: routed.group.clone(),
                upstream: routed.upstream,
                retries: routed.retries,
                tls: routed.tls,
                peer_identity: routed.peer.clone(),
                error: error.map(ToString::to_string),
                response_bytes,
            };
            in_flight.finish(outcome);
        }
        let took = started.at.elapsed();
        match &self.side {
            Side::Outbound(_) => started.target.traffic.record(status),
            Side::Inbound(_) => {
                if let Some(admitted) = &started.admitted {
                    admitted.answered(took);
                }
            }
        }
        self.metrics.http.request(
            self.direction(),
            &started.target.label,
            routed,
            status,
            took.as_secs_f64(),
        );
    }
}

impl Forwarder {
    /// Logs and traces a request refused before it was routed (`begin` failed).
    pub(super) fn refused(&self, in_flight: Option<InFlight>, e: &ForwardError) {
        let Some(in_flight) = in_flight else {
            return;
        };
        let inbound = self.inbound().map(|i| &i.peer);
        let outcome = Outcome {
            status: e.status().as_u16(),
            tls: inbound.is_some_and(|p| p.tls),
            peer_identity: inbound.and_then(|p| p.identity.clone()),
            error: Some(e.to_string()),
            ..Outcome::default()
        };
        in_flight.finish(outcome);
    }
}

impl Outgoing<'_> {
    /// Notes the endpoint an attempt goes to, when telemetry wants it.
    pub(super) fn attempting(&self, endpoint: SocketAddr) {
        if let Some(Ok(mut up)) = self.upstream.as_ref().map(Mutex::lock) {
            *up = Some(endpoint);
        }
    }
}

/// How a request ended, as the caller sees it.
pub(super) struct Finished<'a> {
    /// The status the caller gets.
    pub(super) status: u16,
    /// The proxy's reason, when it answered itself.
    pub(super) error: Option<&'a ForwardError>,
    /// The response body's length, when its head says it.
    pub(super) response_bytes: Option<u64>,
}

impl<'a> Finished<'a> {
    /// How a request with `result` ended.
    pub(super) fn of<A: Answer>(result: &'a Result<A, ForwardError>) -> Self {
        Self {
            status: response_status(result),
            error: result.as_ref().err(),
            response_bytes: result.as_ref().ok().and_then(Answer::body_length),
        }
    }
}

/// The status the caller gets for `result`.
fn response_status<A: Answer>(result: &Result<A, ForwardError>) -> u16 {
    match result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status().as_u16(),
    }
}

/// The status, headers and body of the proxy's own answer to a request it could not
/// forward, with the reason in `x-braid-error`.
pub(super) fn error_parts(e: &ForwardError) -> (StatusCode, http::HeaderMap, Bytes) {
    let reason = e.to_string();
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&reason.replace(['\r', '\n'], " ")) {
        headers.insert("x-braid-error", v);
    }
    if let ForwardError::Overloaded = e {
        headers.insert("x-braid-overloaded", HeaderValue::from_static("1"));
    }
    if let ForwardError::RateLimited(after) = e {
        // Whole seconds, rounded up: `retry-after: 0` would invite an immediate retry.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    (e.status(), headers, Bytes::from(format!("{reason}\n")))
}

/// The proxy's own answer to a gRPC call it refused: trailers-only (a head with
/// `grpc-status` and no body), so the client's library reports the code and the reason
/// rather than an HTTP status. Refusals by policy are PERMISSION_DENIED (7); the rest
/// keep their HTTP status, which gRPC clients map themselves (503 is UNAVAILABLE).
pub fn grpc_error_response(e: &ForwardError) -> Response<ProxyBody> {
    const PERMISSION_DENIED: u16 = 7;
    if !matches!(
        e,
        ForwardError::Denied(_) | ForwardError::PlaintextRefused(_)
    ) {
        return error_response(e);
    }
    let (_, mut headers, _) = error_parts(e);
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(PERMISSION_DENIED));
    // grpc-message is percent-encoded outside printable ASCII; the reason is ASCII.
    let message = e.to_string().replace('%', "%25").replace(['\r', '\n'], " ");
    if let Ok(v) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", v);
    }
    let mut resp = Response::new(
        http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.headers_mut() = headers;
    resp
}

/// A response for a request the proxy could not forward, with the reason in `x-braid-error`.
pub fn error_response(e: &ForwardError) -> Response<ProxyBody> {
    let (status, headers, body) = error_parts(e);
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

#[cfg(test)]
mod tests;
