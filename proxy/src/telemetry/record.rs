//! One request as its access-log line and its span tell it: what the head said when it
//! arrived ([`Begun`]), and what became of it ([`Outcome`]), put together in a
//! [`Record`] that the log writer and the span exporter read off the request path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use opentelemetry::trace::TraceId;

use super::context::HopSpan;
use crate::metrics::Direction;

/// The longest path a log line or span keeps (a longer one is cut).
const MAX_PATH: usize = 1024;

/// What a request's head said, taken when it arrived.
#[derive(Debug, Clone)]
pub struct Begun {
    pub(super) start: SystemTime,
    pub(super) at: Instant,
    pub(super) method: http::Method,
    pub(super) authority: Box<str>,
    pub(super) path: Box<str>,
    pub(super) protocol: &'static str,
    pub(super) request_bytes: Option<u64>,
    pub(super) request_id: Box<str>,
    /// The trace it is part of: this hop's span's, else the caller's (tracing off).
    pub(super) trace_id: Option<TraceId>,
    /// This hop's span, when tracing is on.
    pub(super) span: Option<HopSpan>,
}

/// What a request's head says, for [`super::Telemetry::begin`].
pub struct Head<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The authority (Host) as the caller sent it.
    pub authority: &'a str,
    /// The path, with its query (the query is not kept).
    pub path: &'a str,
    /// `HTTP/1.1`, `HTTP/1.0` or `HTTP/2`.
    pub protocol: &'static str,
    /// The body's declared length, when it has one.
    pub request_bytes: Option<u64>,
    /// Its headers.
    pub headers: &'a http::HeaderMap,
}

impl Head<'_> {
    /// The path without its query, which may carry tokens, cut at [`MAX_PATH`] bytes.
    pub(super) fn logged_path(&self) -> &str {
        super::cut(self.path.split(['?', '#']).next().unwrap_or(""), MAX_PATH)
    }
}

/// What became of a request.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The status the caller got.
    pub status: u16,
    /// The service it went to (none: no route).
    pub target: Option<Arc<str>>,
    /// The TrafficRoute rule that matched.
    pub rule: Option<Arc<str>>,
    /// The group the rule chose.
    pub group: Option<Arc<str>>,
    /// The endpoint of the last attempt.
    pub upstream: Option<SocketAddr>,
    /// Attempts after the first.
    pub retries: u32,
    /// Whether it travelled over braid's mTLS.
    pub tls: bool,
    /// The caller's SPIFFE identity (inbound mTLS).
    pub peer_identity: Option<Arc<str>>,
    /// Why the proxy answered itself (its `x-braid-error`), when it did.
    pub error: Option<String>,
    /// The response body's declared length, when it has one.
    pub response_bytes: Option<u64>,
}

/// A finished request: its head, its outcome, and when.
#[derive(Debug, Clone)]
pub struct Record {
    pub(super) direction: Direction,
    pub(super) begun: Begun,
    pub(super) outcome: Outcome,
    pub(super) duration: Duration,
    pub(super) end: SystemTime,
}

/// One access-log line, as JSON.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    direction: &'static str,
    method: &'a str,
    authority: &'a str,
    path: &'a str,
    protocol: &'a str,
    status: u16,
    duration_ms: f64,
    request_bytes: Option<u64>,
    response_bytes: Option<u64>,
    upstream: Option<SocketAddr>,
    target: Option<&'a str>,
    rule: Option<&'a str>,
    group: Option<&'a str>,
    retries: u32,
    tls: bool,
    peer_identity: Option<&'a str>,
    request_id: &'a str,
    trace_id: Option<String>,
    span_id: Option<String>,
    error: Option<&'a str>,
}

impl Record {
    /// Appends its access-log line (JSON and a newline) to `out`.
    pub fn write_json_line(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let (b, o) = (&self.begun, &self.outcome);
        let line = Line {
            time: humantime::format_rfc3339_millis(b.start).to_string(),
            direction: self.direction.as_str(),
            method: b.method.as_str(),
            authority: &b.authority,
            path: &b.path,
            protocol: b.protocol,
            status: o.status,
            duration_ms: (self.duration.as_secs_f64() * 1e6).round() / 1e3,
            request_bytes: b.request_bytes,
            response_bytes: o.response_bytes,
            upstream: o.upstream,
            target: o.target.as_deref(),
            rule: o.rule.as_deref(),
            group: o.group.as_deref(),
            retries: o.retries,
            tls: o.tls,
            peer_identity: o.peer_identity.as_deref(),
            request_id: &b.request_id,
            trace_id: b.trace_id.map(|t| format!("{t:032x}")),
            span_id: b.span.as_ref().map(HopSpan::span_hex),
            error: o.error.as_deref(),
        };
        serde_json::to_writer(&mut *out, &line)?;
        out.push(b'\n');
        Ok(())
    }
}
