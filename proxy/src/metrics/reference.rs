//! The proxy's part of the metrics reference (`docs/metrics.md`): every family it
//! registers, one sample of each recorded with placeholder values so that the text
//! exposition shows its label names (a family without samples shows none).

use std::sync::Arc;
use std::time::SystemTime;

use super::connection::ConnProtocol;
use super::discovery::Outcome;
use super::http::{RetryResult, Routed};
use super::limits::Limit;
use super::telemetry::SpanResult;
use super::tls::{HandshakeResult, RefusedReason};
use super::{Direction, Metrics};

/// A registry of every proxy metric with one sample in each family.
pub fn exercised() -> Metrics {
    let m = Metrics::for_workload(Some("checkout"), Some("shop"));
    let target: Arc<str> = Arc::from("payments.shop:80");
    let rule: Arc<str> = Arc::from("gray");
    let _open = m.connections.open(Direction::inbound, ConnProtocol::http1);
    let bytes = m.connections.bytes(
        Direction::outbound,
        ConnProtocol::tcp,
        &Arc::from("db.shop:5432"),
    );
    bytes.read.inc_by(512);
    bytes.written.inc_by(2048);
    let _in_flight = m.http.request_started(Direction::inbound);
    m.http.request(
        Direction::inbound,
        &target,
        Routed {
            rule: Some(rule.clone()),
            group: Some(Arc::from("canary")),
            tls: true,
            peer: Some(Arc::from("spiffe://cluster.local/ns/shop/sa/checkout")),
            ..Routed::default()
        },
        200,
        0.001,
    );
    m.http.retry(&target, &rule, RetryResult::sent);
    m.http.mirrored(&target, &Arc::from("shadow"), true);
    m.outlier
        .ejected(&target, ([10, 0, 0, 1], 8080).into(), "consecutive_errors");
    m.outlier.spared(&target, "consecutive_errors");
    m.outlier.returned(&target, 1);
    m.outlier.panic_request(&target);
    m.tls.handshake(Direction::outbound, HandshakeResult::ok);
    m.tls.refused(8080, RefusedReason::plaintext);
    m.limits
        .reached(Direction::inbound, Limit::header_read_timeout);
    m.config.applied("0123456789abcdef");
    m.overload.sampled(100.0, 0.5);
    m.overload.shed();
    m.identity.expiry(SystemTime::now());
    m.discovery.discovered(Outcome::service);
    m.telemetry.log_line(true);
    m.telemetry.spans(SpanResult::exported, 1);
    let [_, deny] = m.authz.counters(
        &Arc::from("shop/payments-callers"),
        crate::config::access::AccessMode::Audit,
    );
    deny.inc();
    m
}
