//! The access log: a JSON line per request on standard output, written by a thread of
//! its own. A request only queues its record ([`Queue`]); the writer takes what waits
//! every [`PERIOD`], or as soon as a batch's worth does. When the queue is full (stdout
//! blocked, or a burst beyond what the writer keeps up with) the line is dropped and
//! counted, never waited for.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use super::queue::Queue;
use super::record::Record;
use crate::metrics::telemetry::TelemetryMetrics;

/// Lines waiting for the writer; beyond this they are dropped.
pub const QUEUE: usize = 4096;
/// The writer is woken when this many wait.
const BATCH: usize = 512;
/// How often the writer comes by unasked: the most a line waits.
const PERIOD: Duration = Duration::from_millis(100);

/// Where requests leave their records for the log.
#[derive(Clone)]
pub struct AccessLog {
    queue: Arc<Queue<Arc<Record>>>,
    metrics: Arc<TelemetryMetrics>,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out` (standard output in the proxy).
    pub fn start(
        out: Box<dyn Write + Send>,
        metrics: Arc<TelemetryMetrics>,
    ) -> std::io::Result<Self> {
        // The writer is known only once spawned; a nudge before then is not needed.
        let writer_thread = Arc::new(std::sync::OnceLock::<std::thread::Thread>::new());
        let nudged = writer_thread.clone();
        let queue = Arc::new(Queue::new(
            QUEUE,
            BATCH,
            Box::new(move || {
                if let Some(writer) = nudged.get() {
                    writer.unpark();
                }
            }),
        ));
        let (taken, counted) = (queue.clone(), metrics.clone());
        let writer = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(&taken, out, &counted))?;
        let _ = writer_thread.set(writer.thread().clone());
        Ok(Self { queue, metrics })
    }

    /// Queues `record`'s line, or drops and counts it when the queue is full.
    pub fn log(&self, record: Arc<Record>) {
        if self.queue.push(record).is_err() {
            self.metrics.log_line(false);
        }
    }
}

/// Writes what waits as lines, batch by batch, for as long as the proxy runs.
fn write_lines(queue: &Queue<Arc<Record>>, out: Box<dyn Write + Send>, m: &TelemetryMetrics) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut line = Vec::with_capacity(512);
    loop {
        std::thread::park_timeout(PERIOD);
        let records = queue.take();
        if records.is_empty() {
            continue;
        }
        let (mut written, mut failed) = (0, 0);
        for record in records {
            line.clear();
            match record.write_json_line(&mut line).is_ok() && out.write_all(&line).is_ok() {
                true => written += 1,
                false => failed += 1,
            }
        }
        if out.flush().is_err() {
            tracing::debug!("access log: standard output failed");
        }
        m.log_lines(written, failed);
    }
}
