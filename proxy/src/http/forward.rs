//! The per-request path: pick the upstream, forward, map failures to statuses.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::Route;
use super::exchange::{Answer, Exchange};
use super::replay::Replayable;
use super::{ForwardError, Mirrors, Pool, strip_hop_by_hop};
use crate::balance::outlier::OutlierPolicy;
use crate::balance::{self, Endpoint, Picked, Upstream, Verdict};
use crate::config::tls::TlsMode;
use crate::control::protocol::Ejection;
use crate::limits::{Activity, BusyBody, Limits};
use crate::metrics::{Direction, Limit, Metrics, OpenGuard, RefusedReason, RetryResult, Routed};
use crate::overload::{Admitted, Protector};
use crate::reports::{EjectionLog, SourceCounter, TrafficLog};
use crate::routing::{AttemptOutcome, RequestHead, is_idempotent};
use crate::tables::{OutboundTarget, PickError, Selected, TableStore};

/// The body of every response the proxy sends.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// The first retry waits about this long; each next one twice as long, up to
/// [`MAX_BACKOFF`] (jittered, so callers that failed together do not retry together).
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// One request's way out: what routing chose.
pub(super) struct Outgoing<'a> {
    pub(super) label: &'a Arc<str>,
    pub(super) selected: Selected<'a>,
    /// Whether the last attempt went over mTLS (for the request's metrics).
    tls: std::sync::atomic::AtomicBool,
}

/// Forwards requests for one direction.
#[derive(Clone)]
pub struct Forwarder {
    config: Arc<TableStore>,
    pool: Arc<Pool>,
    metrics: Arc<Metrics>,
    direction: Direction,
    mirrors: Mirrors,
    overload: Option<Arc<Protector>>,
    ejections: Option<Arc<EjectionLog>>,
    /// The caller, on the inbound side: whether it came over mTLS, and its identity.
    peer: Option<InboundPeer>,
    /// Inbound requests counted for the operator.
    traffic: Option<Arc<TrafficLog>>,
    /// The connection limits in force.
    limits: Limits,
}

/// Who is calling, as the inbound side sees the connection.
#[derive(Clone, Debug, Default)]
pub struct InboundPeer {
    /// The connection is braid's mTLS.
    pub tls: bool,
    /// The caller's SPIFFE identity (mTLS only).
    pub identity: Option<Arc<str>>,
    /// Where a plaintext caller's requests are counted for the operator.
    pub source: Option<Arc<SourceCounter>>,
    /// The port it called.
    pub port: u16,
}

impl Forwarder {
    /// A forwarder sending through `pool` and its copies through `mirrors` (shared by the
    /// direction, so their bound holds for all its connections).
    pub fn new(
        config: Arc<TableStore>,
        pool: Arc<Pool>,
        mirrors: Mirrors,
        metrics: Arc<Metrics>,
        direction: Direction,
    ) -> Self {
        Self {
            config,
            mirrors,
            pool,
            metrics,
            direction,
            overload: None,
            ejections: None,
            peer: None,
            traffic: None,
            limits: Limits::default(),
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
        self.metrics.limit(self.direction, limit);
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
        self.metrics.mirrored(target, group, sent);
    }

    /// Counts inbound requests in `log` for the operator.
    pub fn with_traffic(mut self, log: Option<Arc<TrafficLog>>) -> Self {
        self.traffic = log;
        self
    }

    /// Counts this connection's requests under the caller's TLS and identity.
    pub fn with_peer(mut self, peer: InboundPeer) -> Self {
        self.peer = Some(peer);
        self
    }

    /// Queues this forwarder's ejections for the operator.
    pub fn with_ejection_log(mut self, log: Option<Arc<EjectionLog>>) -> Self {
        self.ejections = log;
        self
    }

    /// Sheds requests as `overload` says (the inbound side).
    pub fn with_overload(mut self, overload: Option<Arc<Protector>>) -> Self {
        self.overload = overload;
        self
    }

    /// What every request goes through first, however it is sent: the port's TLS mode
    /// (now, not when the connection opened: a plaintext connection kept alive from
    /// before the port turned Strict gets no more requests through), overload admission
    /// (health checks are never shed) and the target.
    pub(super) fn begin(&self, probe: bool, route: &Route) -> Result<Started, ForwardError> {
        let at = Instant::now();
        // One look at the config in force serves both the port's mode and the route.
        let (mode, target) = self.config.with_tables(|t| {
            let mode = self.peer.as_ref().map(|p| t.inbound_tls_mode(p.port));
            (mode, route.resolve(t))
        });
        let in_flight = self.metrics.request_started(self.direction);
        let admitted = match self.overload.as_ref().and_then(|p| p.admission()) {
            Some(a) if !probe => match a.admit(at) {
                Some(admitted) => Some(admitted),
                None => {
                    self.metrics.shed();
                    return Err(ForwardError::Overloaded);
                }
            },
            _ => None,
        };
        if let (Some(peer), Some(mode)) = (&self.peer, mode) {
            if !peer.tls && mode == TlsMode::Strict {
                self.metrics.refused(peer.port, RefusedReason::plaintext);
                return Err(ForwardError::PlaintextRefused(peer.port));
            }
            if let Some(log) = &self.traffic {
                log.inbound(peer.tls, mode, peer.source.as_deref());
            }
        }
        let target = target.ok_or_else(|| ForwardError::NoRoute(route.describe()))?;
        Ok(Started {
            at,
            _in_flight: in_flight,
            admitted,
            target,
        })
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
                    tls: std::sync::atomic::AtomicBool::new(false),
                };
                let result = self.apply_rule(&send, x, idempotent).await;
                routed.tls = send.tls.load(std::sync::atomic::Ordering::Relaxed);
                result
            }
        };
        if let Some(peer) = &self.peer {
            routed.tls = peer.tls;
            routed.peer = peer.identity.clone();
        }
        (result, routed)
    }

    /// Counts a request whose response (or error) with `status` is on its way.
    pub(super) fn finish(&self, started: Started, routed: Routed, status: u16) {
        if self.direction == Direction::outbound {
            started.target.traffic.record(status);
        }
        let took = started.at.elapsed();
        if let (Some(p), Some(_)) = (&self.overload, &started.admitted) {
            p.record_latency(took);
        }
        self.metrics.request(
            self.direction,
            &started.target.label,
            routed,
            status,
            took.as_secs_f64(),
        );
    }

    /// Forwards one HTTP/2 request and answers with the upstream's response or an error
    /// status. The target is looked up in the config in force now.
    pub async fn forward(&self, mut req: Request<Incoming>, route: &Route) -> Response<ProxyBody> {
        if let Err(e) = super::host::check(&mut req) {
            return error_response(&ForwardError::BadHost(e));
        }
        let started = match self.begin(is_probe(&req), route) {
            Ok(started) => started,
            Err(e) => {
                tracing::debug!(error = %e, "request refused");
                return error_response(&e);
            }
        };
        strip_hop_by_hop(req.headers_mut());
        let selected = started.target.select(&RequestHead::of(&req));
        let idempotent = is_idempotent(req.method());
        let mut x = HyperExchange {
            forwarder: self,
            req: HyperRequest::Once(Some(req)),
        };
        let (result, routed) = self
            .send(&started.target, selected, &mut x, idempotent)
            .await;
        let response = match result {
            Ok(mut resp) => {
                strip_hop_by_hop(resp.headers_mut());
                resp.map(BodyExt::boxed)
            }
            Err(e) => {
                tracing::debug!(target = %started.target.label, error = %e, "request failed");
                error_response(&e)
            }
        };
        self.finish(started, routed, response.status().as_u16());
        response
    }

    /// The rule's rate limit and faults, then its attempts within its deadline.
    async fn apply_rule<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        x: &mut X,
        idempotent: bool,
    ) -> Result<X::Answer, ForwardError> {
        let policy = send.selected.policy();
        if let Some(bucket) = send.selected.rule.and_then(|r| r.rate_limit.as_ref()) {
            bucket
                .take(Instant::now())
                .map_err(ForwardError::RateLimited)?;
        }
        if let Some(status) = policy.roll_abort() {
            return Err(ForwardError::FaultAbort(status));
        }
        if let Some(delay) = policy.roll_delay() {
            tokio::time::sleep(delay).await;
        }
        let attempts = self.attempts(send, x, idempotent);
        match policy.timeout {
            // The deadline runs until the response starts, over every attempt.
            Some(limit) => tokio::time::timeout(limit, attempts)
                .await
                .unwrap_or(Err(ForwardError::RouteTimeout(limit))),
            None => attempts.await,
        }
    }

    /// Sends the request, retrying as the rule allows (waiting a jittered, growing
    /// backoff between attempts) when `x` can send it more than once.
    async fn attempts<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        x: &mut X,
        idempotent: bool,
    ) -> Result<X::Answer, ForwardError> {
        // `attempts: 0` retries nothing, so nothing need be buffered or budgeted.
        let retry = send.selected.policy().retry.filter(|r| r.attempts > 0);
        let replayable = x.prepare(send, retry.is_some()).await?;
        let Some(retry) = retry.filter(|_| replayable) else {
            let endpoint = send.selected.endpoint(None)?;
            return self.attempt(send, endpoint, x, None).await;
        };
        let rule = send.selected.rule;
        let budget = rule.and_then(|r| r.budget.as_ref());
        if let Some(b) = budget {
            b.deposit();
        }
        let mut last = None;
        let mut attempt = 0;
        loop {
            let picked = send.selected.endpoint(last)?;
            let endpoint = picked.endpoint;
            let result = self.attempt(send, picked, x, retry.per_try_timeout).await;
            if attempt >= retry.attempts || !retry.retries(outcome(&result), idempotent) {
                return result;
            }
            let granted = budget.is_none_or(|b| b.withdraw());
            if let Some(rule) = rule {
                let counted = match granted {
                    true => RetryResult::sent,
                    false => RetryResult::budget_exhausted,
                };
                self.metrics.retry(send.label, &rule.name, counted);
            }
            if !granted {
                return result;
            }
            tracing::debug!(target = %send.label, endpoint = %endpoint.addr, attempt, "retrying");
            drop(result);
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            last = Some(endpoint.addr);
        }
    }

    /// One attempt on the picked endpoint, within `per_try` if set; its latency feeds
    /// the endpoint's load, its outcome the service's outlier detection.
    async fn attempt<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        picked: Picked<'_>,
        x: &mut X,
        per_try: Option<std::time::Duration>,
    ) -> Result<X::Answer, ForwardError> {
        let endpoint = picked.endpoint;
        if picked.panic {
            self.metrics.panic_request(send.label);
        }
        if picked.returned > 0 {
            self.metrics.returned(send.label, picked.returned);
        }
        let in_flight = endpoint.load.start();
        let up = endpoint.upstream();
        send.tls
            .store(up.tls.is_some(), std::sync::atomic::Ordering::Relaxed);
        // A rule's per-try timeout, else the proxy's response timeout: no attempt waits
        // for ever on an upstream that never answers.
        // An exchange that streams the caller's body bounds its own wait, from when the
        // body is sent.
        let limit = per_try.unwrap_or(self.limits.response);
        let result = match per_try.is_none() && x.bounds_response() {
            true => x.send(&up).await,
            false => match tokio::time::timeout(limit, x.send(&up)).await {
                Ok(result) => result,
                Err(_) if per_try.is_some() => Err(ForwardError::PerTryTimeout(limit)),
                Err(_) => Err(ForwardError::ResponseTimeout(limit)),
            },
        };
        if let Err(ForwardError::ResponseTimeout(_)) = &result {
            self.limit_hit(Limit::response_timeout);
        }
        match &result {
            // This proxy's own fault: nothing to hold against the endpoint.
            Err(ForwardError::Tls(e)) if e.is_local() => {
                in_flight.done();
                return result;
            }
            // The endpoint could not be reached or broke the connection: avoid it while
            // others answer. (Error statuses are for outlier detection to judge.)
            Err(
                ForwardError::Connect(_)
                | ForwardError::ConnectTimeout
                | ForwardError::Upstream(_)
                | ForwardError::Relay(_)
                | ForwardError::Tls(_),
            ) => in_flight.failed(),
            // The caller's own body failed, perhaps after it stalled: the time it took
            // is not the endpoint's latency.
            Err(ForwardError::RequestBody(_)) => in_flight.forget(),
            _ => in_flight.done(),
        }
        if let Some(policy) = send.selected.outlier() {
            self.judge(send, endpoint, &result, policy);
        }
        result
    }

    /// Feeds an attempt's outcome to outlier detection: 5xx answers, failed connections
    /// and attempts out of time count against the endpoint.
    fn judge<A: Answer>(
        &self,
        send: &Outgoing<'_>,
        endpoint: &Endpoint,
        result: &Result<A, ForwardError>,
        policy: &OutlierPolicy,
    ) {
        let failed = match result {
            // Shed by the endpoint's overload protection: busy, not broken; ejecting it
            // would pile its load onto the others.
            Ok(resp) if resp.overloaded() => return,
            Ok(resp) => resp.status().is_server_error(),
            // The caller's fault, not the endpoint's.
            Err(ForwardError::RequestBody(_)) => false,
            Err(_) => true,
        };
        let verdict = balance::record(
            endpoint,
            send.selected.endpoints(),
            failed,
            Instant::now(),
            policy,
        );
        match verdict {
            Verdict::Kept => {}
            Verdict::Ejected(reason, length) => {
                tracing::warn!(
                    target = %send.label,
                    endpoint = %endpoint.addr,
                    reason = reason.as_str(),
                    seconds = length.as_secs_f64(),
                    "endpoint ejected"
                );
                self.metrics
                    .ejected(send.label, endpoint.addr, reason.as_str());
                if let Some(log) = &self.ejections {
                    log.push(Ejection {
                        target: send.label.to_string(),
                        endpoint: endpoint.addr,
                        reason: reason.as_str().to_owned(),
                        duration_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                    });
                }
            }
            Verdict::Spared(reason) => {
                self.metrics.ejection_spared(send.label, reason.as_str());
            }
        }
    }
}

/// A request admitted and routed, from its start until its response head.
pub(super) struct Started {
    at: Instant,
    _in_flight: OpenGuard,
    admitted: Option<Admitted>,
    /// Where it goes.
    pub(super) target: Arc<OutboundTarget>,
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
    type Answer = Response<Incoming>;

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
                    fw.metrics.mirrored(send.label, group, sent);
                }
                self.req = HyperRequest::Replay(replayable);
                Ok(true)
            }
        }
    }

    async fn send(&mut self, up: &Upstream) -> Result<Response<Incoming>, ForwardError> {
        let req = match &mut self.req {
            HyperRequest::Once(req) => req.take().ok_or(ForwardError::Consumed)?.map(Either::Left),
            HyperRequest::Replay(r) => r.request(),
        };
        self.forwarder.pool.send_h2(up, req).await
    }
}

impl Answer for Response<Incoming> {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }

    fn overloaded(&self) -> bool {
        self.headers().contains_key("x-braid-overloaded")
    }
}

/// The wait before retry number `attempt + 1`: half of the doubled base, plus a random
/// share of the other half.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(8))
        .min(MAX_BACKOFF);
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}

/// Whether `req` is a kubelet health check (never shed).
fn is_probe<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ua| ua.starts_with("kube-probe/"))
}

/// The status the caller gets for `result`.
pub(super) fn response_status<A: Answer>(result: &Result<A, ForwardError>) -> u16 {
    match result {
        Ok(resp) => resp.status().as_u16(),
        Err(e) => e.status().as_u16(),
    }
}

/// What retrying needs to know of an attempt's result.
fn outcome<A: Answer>(result: &Result<A, ForwardError>) -> AttemptOutcome {
    match result {
        Ok(resp) => AttemptOutcome::Status(resp.status()),
        Err(ForwardError::Tls(e)) if e.is_local() => AttemptOutcome::Local,
        // The caller's own body broke: another endpoint would fare no better.
        Err(ForwardError::RequestBody(_)) => AttemptOutcome::Local,
        // A refused mTLS handshake happens before any request byte leaves.
        Err(ForwardError::Connect(_) | ForwardError::ConnectTimeout | ForwardError::Tls(_)) => {
            AttemptOutcome::ConnectFailure
        }
        Err(ForwardError::PerTryTimeout(_)) => AttemptOutcome::PerTryTimeout,
        Err(ForwardError::Upstream(e)) if is_refused_stream(e) => AttemptOutcome::RefusedStream,
        Err(_) => AttemptOutcome::Reset,
    }
}

/// Whether the HTTP/2 server refused the stream (REFUSED_STREAM: it did not process it).
fn is_refused_stream(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = err.source();
    }
    false
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

/// A response for a request the proxy could not forward, with the reason in `x-braid-error`.
pub fn error_response(e: &ForwardError) -> Response<ProxyBody> {
    let (status, headers, body) = error_parts(e);
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
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
    let direction = forwarder.direction;
    // Each stream holds the connection busy until its response body ends: an HTTP/2
    // connection with none open is idle.
    let activity = Arc::new(Activity::default());
    let busy = activity.clone();
    let service = service_fn(move |req| {
        let forwarder = forwarder.clone();
        let route = route.clone();
        let busy = busy.busy();
        async move {
            let resp = forwarder.forward(req, &route).await;
            // The guard lives as long as the body: dropped when it ends or is abandoned.
            let resp = resp.map(|body| BusyBody::new(body, busy));
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let max_head = u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(max_head)
        .serve_connection(TokioIo::new(io), service);
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
            metrics.limit(direction, Limit::idle_timeout);
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests;
