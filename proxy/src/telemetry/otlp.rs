//! Span export: each sampled request's span, queued (bounded, [`Queue`]) and sent in
//! batches to an OpenTelemetry collector as OTLP/HTTP protobuf. A request only queues
//! its record; a full queue drops the span and counts it, and a collector that is down
//! or slow costs a counted batch, never a request's time.
//!
//! The wire types are opentelemetry-proto's. The SDK's batch processor is not used: it
//! reports dropped spans only in its own log, and its span API wants a `Context` per
//! request where the proxy has all it needs in the record it logs anyway.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use braid_api::telemetry::CollectorUrl;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use prost::Message;
use tokio::sync::Notify;

use super::queue::Queue;
use super::record::Record;
use crate::metrics::Direction;
use crate::metrics::telemetry::{SpanResult, TelemetryMetrics};

/// Spans waiting for export; beyond this they are dropped.
pub const QUEUE: usize = 2048;
/// The most spans one export carries.
const MAX_BATCH: usize = 512;
/// How long a batch waits to fill before it goes.
const BATCH_DELAY: Duration = Duration::from_secs(1);
/// An export that takes longer is abandoned (its spans counted as failed).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Who the spans are from: the OTLP resource's attributes.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `service.name`: the proxy's workload, else its service account, else
    /// `braid-proxy`.
    pub service: String,
    /// `k8s.namespace.name`.
    pub namespace: Option<String>,
    /// `k8s.pod.name`.
    pub pod: Option<String>,
}

/// Where requests leave their spans for export.
#[derive(Clone)]
pub struct SpanExporter {
    queue: Arc<Queue<Arc<Record>>>,
    metrics: Arc<TelemetryMetrics>,
    /// Tells the exporter to send what waits and stop; it answers when done.
    stop: Arc<(Notify, Notify)>,
}

impl SpanExporter {
    /// Starts the export task (on the current Tokio runtime).
    pub fn start(collector: CollectorUrl, source: &Source, metrics: Arc<TelemetryMetrics>) -> Self {
        let batch_ready = Arc::new(Notify::new());
        let nudge = batch_ready.clone();
        let queue = Arc::new(Queue::new(
            QUEUE,
            MAX_BATCH,
            Box::new(move || nudge.notify_one()),
        ));
        let stop = Arc::new((Notify::new(), Notify::new()));
        let exporter = Exporter {
            queue: queue.clone(),
            batch_ready,
            stop: stop.clone(),
            collector,
            resource: resource(source),
            metrics: metrics.clone(),
        };
        tokio::spawn(exporter.run());
        Self {
            queue,
            metrics,
            stop,
        }
    }

    /// Sends what waits and stops the exporter (the proxy is ending), waiting for it at
    /// most `within`.
    pub async fn flush(&self, within: Duration) {
        let (stop, stopped) = &*self.stop;
        stop.notify_one();
        let _ = tokio::time::timeout(within, stopped.notified()).await;
    }

    /// Queues `record`'s span, or drops and counts it when the queue is full.
    pub fn export(&self, record: Arc<Record>) {
        if self.queue.push(record).is_err() {
            self.metrics.spans(SpanResult::dropped_queue_full, 1);
        }
    }
}

/// The export task's parts.
struct Exporter {
    queue: Arc<Queue<Arc<Record>>>,
    batch_ready: Arc<Notify>,
    stop: Arc<(Notify, Notify)>,
    collector: CollectorUrl,
    resource: Resource,
    metrics: Arc<TelemetryMetrics>,
}

impl Exporter {
    /// Sends what waits, in batches of at most [`MAX_BATCH`], one at a time, every
    /// [`BATCH_DELAY`] or as soon as a batch's worth waits, until told to stop.
    async fn run(self) {
        let (stop, stopped) = &*self.stop;
        loop {
            let last = tokio::select! {
                () = self.batch_ready.notified() => false,
                () = tokio::time::sleep(BATCH_DELAY) => false,
                () = stop.notified() => true,
            };
            let waiting = self.queue.take();
            for batch in waiting.chunks(MAX_BATCH) {
                self.send(batch).await;
            }
            if last {
                stopped.notify_one();
                return;
            }
        }
    }

    /// Sends one batch, counting its spans as exported or dropped.
    async fn send(&self, batch: &[Arc<Record>]) {
        let (collector, metrics) = (&self.collector, &self.metrics);
        let count = batch.len() as u64;
        // Encoding hundreds of spans takes milliseconds: off the workers that serve
        // requests, or each batch would stall the requests behind it.
        let (records, resource) = (batch.to_vec(), self.resource.clone());
        let Ok(body) = tokio::task::spawn_blocking(move || encode(&records, &resource)).await
        else {
            metrics.spans(SpanResult::dropped_export_failed, count);
            return;
        };
        match tokio::time::timeout(EXPORT_TIMEOUT, post(collector, body)).await {
            Ok(Ok(())) => metrics.spans(SpanResult::exported, count),
            Ok(Err(e)) => {
                tracing::debug!(collector = %collector, error = %e, spans = count, "span export failed");
                metrics.spans(SpanResult::dropped_export_failed, count);
            }
            Err(_) => {
                tracing::debug!(collector = %collector, spans = count, "span export timed out");
                metrics.spans(SpanResult::dropped_export_failed, count);
            }
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("connecting: {0}")]
    Connect(#[from] std::io::Error),
    #[error("http: {0}")]
    Http(#[from] hyper::Error),
    #[error("request: {0}")]
    Request(#[from] http::Error),
    #[error("the collector answered {0}")]
    Status(http::StatusCode),
}

/// POSTs one batch to `<collector>/v1/traces`.
async fn post(collector: &CollectorUrl, body: Vec<u8>) -> Result<(), ExportError> {
    let stream = tokio::net::TcpStream::connect((collector.host.as_str(), collector.port)).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let authority = match collector.host.contains(':') {
        true => format!("[{}]:{}", collector.host, collector.port),
        false => format!("{}:{}", collector.host, collector.port),
    };
    let req = http::Request::post("/v1/traces")
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    // Read the answer whole so the collector is not cut off mid-response.
    let _ = resp.into_body().collect().await;
    match status.is_success() {
        true => Ok(()),
        false => Err(ExportError::Status(status)),
    }
}

fn resource(source: &Source) -> Resource {
    let mut attributes = vec![
        kv("service.name", text(&source.service)),
        kv("telemetry.sdk.name", text("braid-proxy")),
        kv("telemetry.sdk.language", text("rust")),
        kv("service.version", text(env!("CARGO_PKG_VERSION"))),
    ];
    if let Some(ns) = &source.namespace {
        attributes.push(kv("k8s.namespace.name", text(ns)));
    }
    if let Some(pod) = &source.pod {
        attributes.push(kv("k8s.pod.name", text(pod)));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// The protobuf of an export request carrying `batch`'s spans.
pub fn encode(batch: &[Arc<Record>], resource: &Resource) -> Vec<u8> {
    let spans = batch.iter().filter_map(|r| span(r)).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "braid-proxy".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn nanos(t: std::time::SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A record's span: named by method and service, a client span on the outbound side
/// and a server span on the inbound side.
fn span(r: &Record) -> Option<Span> {
    let (b, o) = (&r.begun, &r.outcome);
    let hop = b.span.as_ref()?;
    let target = o.target.as_deref().unwrap_or(&b.authority);
    let mut attributes = vec![
        kv("http.request.method", text(b.method.as_str())),
        kv(
            "http.response.status_code",
            Value::IntValue(i64::from(o.status)),
        ),
        kv("url.path", text(&b.path)),
        kv("server.address", text(&b.authority)),
        kv("network.protocol.name", text(b.protocol)),
        kv("braid.direction", text(r.direction.as_str())),
        kv("braid.target", text(target)),
        kv("braid.retries", Value::IntValue(i64::from(o.retries))),
        kv("braid.tls", Value::BoolValue(o.tls)),
        kv("braid.request_id", text(&b.request_id)),
    ];
    let optional = [
        ("braid.rule", o.rule.as_deref()),
        ("braid.group", o.group.as_deref()),
        ("braid.peer_identity", o.peer_identity.as_deref()),
        ("braid.error", o.error.as_deref()),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            attributes.push(kv(key, text(v)));
        }
    }
    if let Some(up) = o.upstream {
        attributes.push(kv("network.peer.address", text(&up.ip().to_string())));
        attributes.push(kv(
            "network.peer.port",
            Value::IntValue(i64::from(up.port())),
        ));
    }
    let failed = o.error.is_some() || o.status >= 500;
    Some(Span {
        trace_id: hop.trace_id.to_bytes().to_vec(),
        span_id: hop.span_id.to_bytes().to_vec(),
        parent_span_id: hop
            .parent
            .map(|p| p.to_bytes().to_vec())
            .unwrap_or_default(),
        name: format!("{} {target}", b.method),
        kind: match r.direction {
            Direction::outbound => SpanKind::Client,
            Direction::inbound => SpanKind::Server,
        } as i32,
        start_time_unix_nano: nanos(b.start),
        end_time_unix_nano: nanos(r.end),
        attributes,
        // W3C's sampled flag, in the low byte.
        flags: 0x1,
        status: Some(Status {
            code: match failed {
                true => StatusCode::Error,
                false => StatusCode::Unset,
            } as i32,
            message: o.error.clone().unwrap_or_default(),
        }),
        ..Default::default()
    })
}

fn text(s: &str) -> Value {
    Value::StringValue(s.to_owned())
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}
