//! The access log: a JSON line per request on standard output, written by a thread of
//! its own from a bounded queue. A request only queues its record; when the queue is
//! full (stdout blocked, or a burst beyond what the writer keeps up with) the line is
//! dropped and counted, never waited for.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use super::record::Record;
use crate::metrics::telemetry::TelemetryMetrics;

/// Lines waiting for the writer; beyond this they are dropped.
pub const QUEUE: usize = 4096;

/// Where requests leave their records for the log.
#[derive(Clone)]
pub struct AccessLog {
    queue: SyncSender<Arc<Record>>,
    metrics: Arc<TelemetryMetrics>,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out` (standard output in the proxy).
    pub fn start(
        out: Box<dyn Write + Send>,
        metrics: Arc<TelemetryMetrics>,
    ) -> std::io::Result<Self> {
        let (queue, lines) = sync_channel(QUEUE);
        let counted = metrics.clone();
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&lines, out, &counted))?;
        Ok(Self { queue, metrics })
    }

    /// Queues `record`'s line, or drops and counts it when the queue is full.
    pub fn log(&self, record: Arc<Record>) {
        match self.queue.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.log_line(false);
            }
        }
    }
}

/// Writes each queued record as a line, flushing whenever the queue runs empty.
fn write_lines(lines: &Receiver<Arc<Record>>, out: Box<dyn Write + Send>, m: &TelemetryMetrics) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    while let Ok(record) = lines.recv() {
        let mut next = Some(record);
        while let Some(record) = next {
            line.clear();
            let written = record.write_json_line(&mut line).is_ok() && out.write_all(&line).is_ok();
            m.log_line(written);
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            // Standard output is gone: keep draining, counting each line as dropped.
            tracing::debug!("access log: standard output failed");
        }
    }
}
