//! The access log's and the span exporter's own metrics: lines written or dropped, spans
//! exported or dropped (queue full, or the collector failed), so a log or a collector
//! that cannot keep up shows, while traffic goes on unaffected.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// What became of an access-log line.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum LineResult {
    /// Written to standard output.
    written,
    /// Dropped: the queue was full, or standard output failed.
    dropped,
}

/// What became of a sampled request's span.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum SpanResult {
    /// The collector took it.
    exported,
    /// The export queue was full.
    dropped_queue_full,
    /// The collector could not be reached, refused the batch, or took too long.
    dropped_export_failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LineLabels {
    result: LineResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLabels {
    result: SpanResult,
}

/// `braid_access_log_lines_total` and `braid_trace_spans_total`.
pub struct TelemetryMetrics {
    lines: Family<LineLabels, Counter>,
    spans: Family<SpanLabels, Counter>,
}

impl TelemetryMetrics {
    /// Registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let lines = Family::<LineLabels, Counter>::default();
        registry.register(
            "access_log_lines",
            "Access-log lines written, or dropped because the log could not keep up",
            lines.clone(),
        );
        let spans = Family::<SpanLabels, Counter>::default();
        registry.register(
            "trace_spans",
            "Sampled spans exported to the collector, or dropped (queue full, export failed)",
            spans.clone(),
        );
        Self { lines, spans }
    }

    /// Counts an access-log line, `written` or dropped.
    pub fn log_line(&self, written: bool) {
        let result = match written {
            true => LineResult::written,
            false => LineResult::dropped,
        };
        self.lines.get_or_create(&LineLabels { result }).inc();
    }

    /// Counts `n` spans with `result`.
    pub fn spans(&self, result: SpanResult, n: u64) {
        self.spans.get_or_create(&SpanLabels { result }).inc_by(n);
    }

    /// Counts access-log lines: `written`, and `dropped` ones.
    pub fn log_lines(&self, written: u64, dropped: u64) {
        for (result, n) in [
            (LineResult::written, written),
            (LineResult::dropped, dropped),
        ] {
            if n > 0 {
                self.lines.get_or_create(&LineLabels { result }).inc_by(n);
            }
        }
    }

    /// Access-log lines dropped so far.
    pub fn lines_dropped(&self) -> u64 {
        self.lines
            .get_or_create(&LineLabels {
                result: LineResult::dropped,
            })
            .get()
    }
}
