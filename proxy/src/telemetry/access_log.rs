//! The access log: a JSON line per request on standard output, written by a thread of
//! its own. A request only queues its record ([`Queue`]); the writer takes what waits
//! every [`PERIOD`], or as soon as a batch's worth does. When the queue is full (stdout
//! blocked, or a burst beyond what the writer keeps up with) the line is dropped and
//! counted, never waited for.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tokio::sync::Notify;

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
    /// Tells the writer to write what waits and stop.
    stop: Arc<AtomicBool>,
    /// The writer, once spawned.
    writer: Arc<OnceLock<Thread>>,
    /// Says the writer stopped, all written.
    stopped: Arc<Notify>,
}

impl AccessLog {
    /// Starts the writer thread, writing to `out` (standard output in the proxy).
    pub fn start(
        out: Box<dyn Write + Send>,
        metrics: Arc<TelemetryMetrics>,
    ) -> std::io::Result<Self> {
        // The writer is known only once spawned; a nudge before then is not needed.
        let writer_thread = Arc::new(OnceLock::<Thread>::new());
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
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::new(Notify::new());
        let writer = Writer {
            queue: queue.clone(),
            metrics: metrics.clone(),
            stop: stop.clone(),
            stopped: stopped.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(out))?;
        let _ = writer_thread.set(spawned.thread().clone());
        Ok(Self {
            queue,
            metrics,
            stop,
            writer: writer_thread,
            stopped,
        })
    }

    /// Writes what waits and stops the writer (the proxy is ending), waiting for it at
    /// most `within`.
    pub async fn flush(&self, within: Duration) {
        self.stop.store(true, Ordering::Release);
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
        let _ = tokio::time::timeout(within, self.stopped.notified()).await;
    }

    /// Queues `record`'s line, or drops and counts it when the queue is full.
    pub fn log(&self, record: Arc<Record>) {
        if self.queue.push(record).is_err() {
            self.metrics.log_line(false);
        }
    }
}

/// The writer thread's parts.
struct Writer {
    queue: Arc<Queue<Arc<Record>>>,
    metrics: Arc<TelemetryMetrics>,
    stop: Arc<AtomicBool>,
    stopped: Arc<Notify>,
}

impl Writer {
    /// Writes what waits as lines, batch by batch, until told to stop.
    fn run(self, out: Box<dyn Write + Send>) {
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
        let mut line = Vec::with_capacity(512);
        loop {
            std::thread::park_timeout(PERIOD);
            // Read before taking: a stop seen here has every line queued before it.
            let last = self.stop.load(Ordering::Acquire);
            let (mut written, mut failed) = (0, 0);
            for record in self.queue.take() {
                line.clear();
                match record.write_json_line(&mut line).is_ok() && out.write_all(&line).is_ok() {
                    true => written += 1,
                    false => failed += 1,
                }
            }
            if out.flush().is_err() {
                tracing::debug!("access log: standard output failed");
            }
            self.metrics.log_lines(written, failed);
            if last {
                self.stopped.notify_one();
                return;
            }
        }
    }
}
