//! The request path's steps without sockets: admission on the inbound side (the port's
//! TLS mode, what the operator is told), and, with a scripted [`Exchange`] that answers
//! each attempt as told and records where it was sent, the rule (rate limit, faults, deadline),
//! the retries and their budget, and one attempt's judgement (load, outlier detection)
//! are checked on their own. Where a step must not reach the network, the script has no
//! answer and the test fails if it is asked.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use super::*;
use crate::balance::Upstream;
use crate::http::Route;
use crate::http::exchange::{Answer, Exchange};
use crate::metrics::Metrics;
use crate::routing::{RequestHead, is_idempotent};
use crate::tables::TableStore;

/// What one scripted attempt does.
enum Step {
    /// Answers with this status.
    Status(u16),
    /// Answers with this status, shed by the endpoint's overload protection.
    Shed(u16),
    /// Fails as the upstream breaking the connection would.
    Reset,
    /// Fails as the caller's body breaking would.
    CallerBody,
    /// Answers 200 after this long.
    Slow(Duration),
}

struct Scripted {
    steps: VecDeque<Step>,
    /// Where each attempt went.
    sent: Vec<SocketAddr>,
    /// Whether the request can be sent more than once.
    replayable: bool,
    /// Whether `prepare` was called.
    prepared: bool,
}

impl Scripted {
    fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        Self {
            steps: steps.into_iter().collect(),
            sent: Vec::new(),
            replayable: true,
            prepared: false,
        }
    }
}

struct Answered(u16, bool);

impl Answer for Answered {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.0).unwrap()
    }

    fn overloaded(&self) -> bool {
        self.1
    }

    fn body_length(&self) -> Option<u64> {
        None
    }
}

impl Exchange for Scripted {
    type Answer = Answered;

    async fn prepare(&mut self, _: &Outgoing<'_>, _: bool) -> Result<bool, ForwardError> {
        self.prepared = true;
        Ok(self.replayable)
    }

    async fn send(&mut self, up: &Upstream) -> Result<Answered, ForwardError> {
        self.sent.push(up.addr);
        match self.steps.pop_front() {
            Some(Step::Status(s)) => Ok(Answered(s, false)),
            Some(Step::Shed(s)) => Ok(Answered(s, true)),
            Some(Step::Reset) => Err(ForwardError::Relay(super::super::h1::RelayError::Closed)),
            Some(Step::CallerBody) => Err(ForwardError::RequestBody(super::super::BodyError::Cut)),
            Some(Step::Slow(d)) => {
                tokio::time::sleep(d).await;
                Ok(Answered(200, false))
            }
            None => panic!("attempt {} was not in the script", self.sent.len()),
        }
    }
}

/// A forwarder over a config with `payments` (VIP 10.96.0.10:80, two endpoints) and one
/// rule `r` with `rule` (YAML fields) and `outlier` (YAML, or empty).
fn forwarder(rule: &str, outlier: &str) -> (Forwarder, Arc<OutboundTarget>) {
    let yaml = format!(
        r#"version: t
services:
- name: payments
  namespace: shop
  vips: [10.96.0.10]
  ports: [{{port: 80, targetPort: 8080, protocol: http}}]
  groups:
  - {{name: stable, endpoints: [{{address: 10.0.0.1}}, {{address: 10.0.0.2}}]}}
  {outlier}
routes:
- from: shop/caller
  service: payments
  namespace: shop
  rules:
  - name: r
    route: [{{group: stable, weight: 100}}]
    {rule}
"#
    );
    let config: crate::config::ProxyConfig = serde_norway::from_str(&yaml).unwrap();
    let store = Arc::new(TableStore::new(|_| {}).unwrap());
    store.apply(config).unwrap();
    let target = store
        .with_tables(|t| t.outbound("10.96.0.10:80".parse().unwrap()).cloned())
        .unwrap();
    let fw = over(
        store,
        Side::Outbound(OutboundSide {
            ejections: Arc::default(),
        }),
    );
    (fw, target)
}

/// A forwarder for `side` over the tables of `store`.
fn over(store: Arc<TableStore>, side: Side) -> Forwarder {
    let pool = Pool::new(Duration::from_secs(1), None, None, Duration::from_secs(4));
    Forwarder::new(
        store,
        pool.clone(),
        Mirrors::new(pool),
        Arc::new(Metrics::new()),
        side,
    )
}

async fn send(
    fw: &Forwarder,
    target: &OutboundTarget,
    method: http::Method,
    x: &mut Scripted,
) -> Result<Answered, ForwardError> {
    let headers = http::HeaderMap::new();
    let head = RequestHead {
        method: &method,
        path: "/",
        headers: &headers,
    };
    let idempotent = is_idempotent(&method);
    fw.send(target, target.select(&head), x, idempotent).await.0
}

#[tokio::test]
async fn a_gateway_error_is_retried_on_another_endpoint() {
    let (fw, target) = forwarder("retries: {attempts: 2, on: [gateway-error]}", "");
    let mut x = Scripted::new([Step::Status(503), Step::Status(200)]);
    let answer = send(&fw, &target, http::Method::GET, &mut x).await.unwrap();
    assert_eq!(answer.0, 200);
    assert_eq!(x.sent.len(), 2);
    assert_ne!(
        x.sent[0], x.sent[1],
        "the retry avoids the endpoint that failed"
    );
}

#[tokio::test]
async fn a_request_that_cannot_be_replayed_is_sent_once() {
    let (fw, target) = forwarder("retries: {attempts: 3, on: [gateway-error]}", "");
    let mut x = Scripted::new([Step::Status(503)]);
    x.replayable = false;
    let answer = send(&fw, &target, http::Method::GET, &mut x).await.unwrap();
    assert_eq!((answer.0, x.sent.len()), (503, 1));
}

/// With the default conditions a reset is retried for idempotent methods only (a
/// condition the administrator lists applies to every method).
#[tokio::test]
async fn a_reset_post_is_not_retried_but_a_reset_get_is() {
    let (fw, target) = forwarder("retries: {attempts: 2}", "");
    let mut post = Scripted::new([Step::Reset]);
    let e = send(&fw, &target, http::Method::POST, &mut post).await;
    assert!(matches!(e, Err(ForwardError::Relay(_))));
    assert_eq!(post.sent.len(), 1, "the upstream may have seen it");
    let mut get = Scripted::new([Step::Reset, Step::Status(200)]);
    let answer = send(&fw, &target, http::Method::GET, &mut get)
        .await
        .unwrap();
    assert_eq!((answer.0, get.sent.len()), (200, 2));
}

#[tokio::test]
async fn a_spent_rate_limit_and_an_injected_abort_never_reach_the_network() {
    let (fw, target) = forwarder("rateLimit: {requestsPerSecond: 1, burst: 1}", "");
    let mut first = Scripted::new([Step::Status(200)]);
    assert_eq!(
        send(&fw, &target, http::Method::GET, &mut first)
            .await
            .unwrap()
            .0,
        200
    );
    // The script has no answer: a send would panic.
    let mut second = Scripted::new([]);
    let e = send(&fw, &target, http::Method::GET, &mut second).await;
    assert!(
        matches!(e, Err(ForwardError::RateLimited(_))),
        "{:?}",
        e.err()
    );
    assert!(!second.prepared && second.sent.is_empty());

    let (fw, target) = forwarder("fault: {abort: {percent: 100, status: 418}}", "");
    let mut x = Scripted::new([]);
    let e = send(&fw, &target, http::Method::GET, &mut x).await;
    assert!(matches!(e, Err(ForwardError::FaultAbort(s)) if s == 418));
    assert!(!x.prepared && x.sent.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_rule_deadline_spans_every_attempt() {
    let (fw, target) = forwarder(
        "timeoutMs: 300\n    retries: {attempts: 3, on: [gateway-error]}",
        "",
    );
    let mut x = Scripted::new([Step::Status(502), Step::Slow(Duration::from_secs(5))]);
    let e = send(&fw, &target, http::Method::GET, &mut x).await;
    assert!(matches!(e, Err(ForwardError::RouteTimeout(d)) if d == Duration::from_millis(300)));
    assert_eq!(x.sent.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_ends_one_attempt_and_the_next_one_answers() {
    let (fw, target) = forwarder(
        "retries: {attempts: 1, perTryTimeoutMs: 100, on: [gateway-error]}",
        "",
    );
    let mut x = Scripted::new([Step::Slow(Duration::from_secs(5)), Step::Status(200)]);
    let answer = send(&fw, &target, http::Method::GET, &mut x).await.unwrap();
    assert_eq!((answer.0, x.sent.len()), (200, 2));
}

const EJECT_AFTER_TWO: &str = "outlierDetection: {consecutiveErrors: 2, baseEjectionTimeMs: 30000, maxEjectionTimeMs: 300000, maxEjectionPercent: 50}";

/// How many of `target`'s endpoints are ejected now.
fn ejected(target: &OutboundTarget) -> usize {
    let head = RequestHead {
        method: &http::Method::GET,
        path: "/",
        headers: &http::HeaderMap::new(),
    };
    let selected = target.select(&head).unwrap();
    let now = std::time::Instant::now();
    selected
        .endpoints()
        .iter()
        .filter(|e| e.health.check(now).0)
        .count()
}

#[tokio::test]
async fn server_errors_eject_an_endpoint_but_the_callers_faults_and_shedding_do_not() {
    let (fw, target) = forwarder("", EJECT_AFTER_TWO);
    // The caller's broken bodies, and answers shed by overload protection: never held
    // against the endpoint, however many.
    for _ in 0..6 {
        for step in [Step::CallerBody, Step::Shed(503)] {
            let mut x = Scripted::new([step]);
            let _ = send(&fw, &target, http::Method::POST, &mut x).await;
        }
    }
    assert_eq!(ejected(&target), 0);
    // Real failures are: two in a row on one endpoint eject it.
    let mut failures = std::collections::HashMap::new();
    for _ in 0..8 {
        let mut x = Scripted::new([Step::Status(500)]);
        let _ = send(&fw, &target, http::Method::GET, &mut x).await;
        *failures.entry(x.sent[0]).or_insert(0) += 1;
        if ejected(&target) > 0 {
            break;
        }
    }
    assert_eq!(ejected(&target), 1, "{failures:?}");
    // And the operator hears of it (the outbound side's log).
    let Side::Outbound(outbound) = &fw.side else {
        panic!("an outbound forwarder")
    };
    let queued = outbound.ejections.drain();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].reason, "consecutive_errors");
}

/// An inbound forwarder for a caller on port 8080 (`tls`: over braid's mTLS) whose
/// inbound side is in `mode`, and its request counts.
fn inbound(mode: &str, tls: bool) -> (Forwarder, Arc<TrafficLog>, Route) {
    let yaml = format!("version: t\ninbound: {{tls: {{mode: {mode}}}}}\n");
    let config: crate::config::ProxyConfig = serde_norway::from_str(&yaml).unwrap();
    let store = Arc::new(TableStore::new(|_| {}).unwrap());
    store.apply(config).unwrap();
    let target = store.with_tables(|t| t.inbound_target(8080));
    let traffic = Arc::new(TrafficLog::default());
    let fw = over(
        store,
        Side::Inbound(InboundSide {
            peer: InboundPeer {
                tls,
                port: 8080,
                ..InboundPeer::default()
            },
            shared: InboundShared {
                overload: Arc::new(Protector::new(std::path::PathBuf::new())),
                traffic: traffic.clone(),
            },
        }),
    );
    (fw, traffic, Route::Fixed(target))
}

/// A request head for `begin`: GET / with no headers.
const GET: super::Admission<'static> = super::Admission {
    probe: false,
    method: &http::Method::GET,
    path: "/",
    headers: super::HeadersOf::Raw(b""),
    tunnel: None,
};

#[test]
fn an_access_policy_refuses_by_the_callers_identity_and_a_change_reaches_the_next_request() {
    // As a config file is read: YAML to a JSON value, then the config.
    let config = |rules: &str| -> crate::config::ProxyConfig {
        let yaml: serde_json::Value = serde_norway::from_str(&format!(
            "version: t\ninbound:\n  tls: {{mode: Permissive}}\n  accessPolicies:\n  - {{name: shop/p, mode: Enforce, rules: [{rules}]}}\n"
        ))
        .unwrap();
        serde_json::from_value(yaml).unwrap()
    };
    let store = Arc::new(TableStore::new(|_| {}).unwrap());
    store
        .apply(config(
            "{from: [{identity: 'spiffe://cluster.local/ns/shop/sa/a'}]}",
        ))
        .unwrap();
    let target = store.with_tables(|t| t.inbound_target(8080));
    let caller = |id: &str| {
        over(
            store.clone(),
            Side::Inbound(InboundSide {
                peer: InboundPeer {
                    tls: true,
                    identity: Some(Arc::from(id)),
                    port: 8080,
                    ..InboundPeer::default()
                },
                shared: InboundShared {
                    overload: Arc::new(Protector::new(std::path::PathBuf::new())),
                    traffic: Arc::default(),
                },
            }),
        )
    };
    let route = Route::Fixed(target);
    let (a, b) = (
        caller("spiffe://cluster.local/ns/shop/sa/a"),
        caller("spiffe://cluster.local/ns/shop/sa/b"),
    );
    assert!(a.begin(&GET, &route).is_ok());
    let refused = b.begin(&GET, &route);
    assert!(
        matches!(&refused, Err(ForwardError::Denied(p)) if &**p == "shop/p"),
        "{:?}",
        refused.err()
    );
    let e = ForwardError::Denied(Arc::from("shop/p"));
    assert_eq!(e.status(), http::StatusCode::FORBIDDEN);
    assert_eq!(e.to_string(), "denied by AccessPolicy shop/p");
    // The same forwarders stand for kept-alive connections: the next request is decided
    // by the policy in force now.
    store.apply(config("{from: [meshed]}")).unwrap();
    assert!(b.begin(&GET, &route).is_ok());
    // With rules on requests, a tunnel that would carry requests past them is refused;
    // a WebSocket (decided on its upgrade request) is not.
    store
        .apply(config(
            "{from: [meshed], http: [{method: GET, path: {prefix: /public}}]}",
        ))
        .unwrap();
    let public = |tunnel| super::Admission {
        path: "/public",
        tunnel,
        ..GET
    };
    assert!(b.begin(&public(None), &route).is_ok());
    assert!(b.begin(&public(Some("websocket")), &route).is_ok());
    for tunnel in ["h2c", "CONNECT"] {
        assert!(
            matches!(
                b.begin(&public(Some(tunnel)), &route),
                Err(ForwardError::Denied(_))
            ),
            "{tunnel}"
        );
    }
}

#[test]
fn a_refused_grpc_call_gets_permission_denied_in_a_trailers_only_answer() {
    let resp = super::grpc_error_response(&ForwardError::Denied(Arc::from("shop/p")));
    assert_eq!(resp.status(), http::StatusCode::OK);
    let h = resp.headers();
    assert_eq!(h["grpc-status"], "7");
    assert_eq!(h["grpc-message"], "denied by AccessPolicy shop/p");
    assert_eq!(h["content-type"], "application/grpc");
    assert_eq!(h["x-braid-error"], "denied by AccessPolicy shop/p");
    assert_eq!(http_body::Body::size_hint(resp.body()).exact(), Some(0));
    // Other errors keep their HTTP status, which gRPC clients map themselves.
    let shed = super::grpc_error_response(&ForwardError::Overloaded);
    assert_eq!(shed.status(), http::StatusCode::SERVICE_UNAVAILABLE);
}

#[test]
fn a_plaintext_request_to_a_strict_port_is_refused_before_anything_else() {
    let (fw, traffic, route) = inbound("Strict", false);
    let refused = fw.begin(&GET, &route);
    assert!(
        matches!(refused, Err(ForwardError::PlaintextRefused(8080))),
        "{:?}",
        refused.err()
    );
    assert_eq!(
        traffic.take(std::iter::empty()),
        None,
        "not counted as served"
    );
    // Over mTLS the same port admits it, and the operator hears of an mTLS request.
    let (fw, traffic, route) = inbound("Strict", true);
    assert!(fw.begin(&GET, &route).is_ok());
    assert_eq!(traffic.take(std::iter::empty()).unwrap().inbound_mtls, 1);
}

#[test]
fn plaintext_is_counted_where_strict_would_refuse_it_and_only_there() {
    let (fw, traffic, route) = inbound("Permissive", false);
    assert!(fw.begin(&GET, &route).is_ok());
    assert_eq!(
        traffic.take(std::iter::empty()).unwrap().inbound_plaintext,
        1
    );
    // A Disabled port: Strict would not refuse it, so it must not hold a rollout back.
    let (fw, traffic, route) = inbound("Disabled", false);
    assert!(fw.begin(&GET, &route).is_ok());
    assert_eq!(traffic.take(std::iter::empty()), None);
}
