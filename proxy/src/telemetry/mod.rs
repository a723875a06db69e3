//! What the proxy tells of each request beyond its metrics: an access-log line
//! (`access_log.rs`) and a span per hop exported by OTLP (`otlp.rs`), with the trace
//! context carried on (`context.rs`) and an `x-request-id` made up when the caller sent
//! none (`request_id.rs`). Both are opt-in; with both off a request pays one branch.
//!
//! The request path calls [`Telemetry::begin`] with the head (it returns the headers
//! the request goes on with) and [`Telemetry::finish`] with what became of it; the
//! [`record::Record`] is then written and exported off the request path.

pub mod access_log;
pub mod context;
pub mod otlp;
mod queue;
pub mod record;
pub mod request_id;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use braid_api::telemetry::{AccessLogFormat, CollectorUrl, SamplingPercent};
use http::HeaderValue;

pub use record::{Head, Outcome};

use self::record::Begun;

use self::access_log::AccessLog;
use self::otlp::{Source, SpanExporter};
use self::record::Record;
use crate::metrics::Direction;
use crate::metrics::telemetry::TelemetryMetrics;

/// The flags that turn them on.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// `--access-log`.
    pub access_log: AccessLogFormat,
    /// `--trace-collector`: none, no tracing.
    pub collector: Option<CollectorUrl>,
    /// `--trace-sampling`.
    pub sampling: SamplingPercent,
    /// Who the spans are from.
    pub source: Source,
}

/// Headers a request goes on with (`Some`) or without (`None`), each replacing any the
/// caller sent of its name.
pub type HeaderEdits = Vec<context::HeaderEdit>;

/// The longest authority a log line or span keeps.
const MAX_AUTHORITY: usize = 256;

/// The access log and the span exporter, as configured (either may be off).
#[derive(Clone, Default)]
pub struct Telemetry {
    access_log: Option<AccessLog>,
    exporter: Option<SpanExporter>,
    sampling: SamplingPercent,
}

impl Telemetry {
    /// Both off.
    pub fn off() -> Self {
        Self::default()
    }

    /// Starts what `config` turns on: the access log's writer thread, and the span
    /// exporter's task on the current Tokio runtime.
    pub fn start(config: TelemetryConfig, metrics: Arc<TelemetryMetrics>) -> std::io::Result<Self> {
        let access_log = match config.access_log {
            AccessLogFormat::Off => None,
            AccessLogFormat::Json => Some(AccessLog::start(
                Box::new(std::io::stdout()),
                metrics.clone(),
            )?),
        };
        Ok(Self {
            access_log,
            exporter: config
                .collector
                .map(|c| SpanExporter::start(c, &config.source, metrics)),
            sampling: config.sampling,
        })
    }

    /// With an access log written to `out` (tests read what it wrote).
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    /// Writes and sends what waits (the proxy is ending, its requests drained), waiting
    /// at most `within` for each.
    pub async fn flush(&self, within: std::time::Duration) {
        if let Some(log) = &self.access_log {
            log.flush(within).await;
        }
        if let Some(exporter) = &self.exporter {
            exporter.flush(within).await;
        }
    }

    /// Whether either is on: with both off, requests skip telemetry altogether.
    pub fn is_on(&self) -> bool {
        self.access_log.is_some() || self.exporter.is_some()
    }

    /// Takes what `head` says of a request as it arrives, and says which headers it
    /// goes on with: an `x-request-id` when it had none, and this hop's trace context
    /// when tracing is on. What it keeps is cut to size first: a record waiting in a
    /// queue holds little, however large the head.
    pub fn begin(
        self: &Arc<Self>,
        direction: Direction,
        head: &Head<'_>,
    ) -> (InFlight, HeaderEdits) {
        let mut edits = HeaderEdits::new();
        let sent_id = head
            .headers
            .get(request_id::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|id| !id.is_empty());
        let request_id: Box<str> = match sent_id {
            Some(id) => request_id::logged(id).into(),
            None => {
                let id = request_id::generate();
                edits.push((request_id::X_REQUEST_ID, HeaderValue::from_str(&id).ok()));
                id.into()
            }
        };
        let caller = context::extract(head.headers);
        let span = self.exporter.as_ref().map(|_| {
            let sampling = self.sampling;
            context::hop(&caller, || sampling.samples(fastrand::f64()))
        });
        if let Some(span) = &span {
            edits.extend(span.outgoing());
        }
        let trace_id = span
            .as_ref()
            .map(|s| s.trace_id)
            .or(caller.context.map(|i| i.trace_id));
        let begun = Begun {
            start: SystemTime::now(),
            at: Instant::now(),
            method: head.method.clone(),
            authority: cut(head.authority, MAX_AUTHORITY).into(),
            path: head.logged_path().into(),
            protocol: head.protocol,
            request_bytes: head.request_bytes,
            request_id,
            trace_id,
            span,
        };
        let in_flight = InFlight {
            telemetry: self.clone(),
            direction,
            begun: Some(begun),
            target: None,
            peer: (false, None),
        };
        (in_flight, edits)
    }

    /// Logs and exports a finished request, off the request path.
    fn finish(&self, direction: Direction, begun: Begun, outcome: Outcome) {
        let sampled = self.exporter.is_some() && begun.span.as_ref().is_some_and(|s| s.sampled);
        let record = Arc::new(Record {
            direction,
            duration: begun.at.elapsed(),
            end: SystemTime::now(),
            begun,
            outcome,
        });
        if sampled && let Some(exporter) = &self.exporter {
            exporter.export(record.clone());
        }
        if let Some(log) = &self.access_log {
            log.log(record);
        }
    }
}

/// The first `max` characters of `s`: what a record keeps of a field the caller wrote.
fn cut(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

/// A request being logged and traced, from its head to its end. Dropped unfinished (an
/// HTTP/2 caller that reset its stream or went away) it is still logged and traced, as
/// 499 and why.
pub struct InFlight {
    telemetry: Arc<Telemetry>,
    direction: Direction,
    begun: Option<Begun>,
    target: Option<Arc<str>>,
    /// The caller came over mTLS, as whom (inbound).
    peer: (bool, Option<Arc<str>>),
}

impl InFlight {
    /// Notes the caller: over mTLS or not, and its identity (inbound).
    pub fn from_peer(mut self, tls: bool, identity: Option<Arc<str>>) -> Self {
        self.peer = (tls, identity);
        self
    }

    /// Notes the service it goes to, for a line written if it never finishes.
    pub fn to_target(&mut self, target: &Arc<str>) {
        self.target = Some(target.clone());
    }

    /// Logs and exports it with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        if let Some(begun) = self.begun.take() {
            self.telemetry.finish(self.direction, begun, outcome);
        }
    }
}

/// The status a request the caller gave up on is logged with (nginx's).
pub const CANCELLED: u16 = 499;

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(begun) = self.begun.take() {
            let outcome = Outcome {
                status: CANCELLED,
                target: self.target.take(),
                tls: self.peer.0,
                peer_identity: self.peer.1.take(),
                error: Some("the caller went away before the response".into()),
                ..Outcome::default()
            };
            self.telemetry.finish(self.direction, begun, outcome);
        }
    }
}
