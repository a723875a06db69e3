//! Overload protection as the proxy runs it: the settings in force, the admission the
//! inbound side asks per request, and the loop that samples the signal every period and
//! has the PID controller set the admitted rate.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use super::metrics::OverloadMetrics;
use super::signal::{CpuSource, LatencyWindow, cpu_share};
use super::{Admission, Gains, Pid};
use crate::config::overload::{OverloadProtection, OverloadSignal};

/// The limiter of the inbound side.
pub struct Protector {
    admission: ArcSwapOption<Admission>,
    active: Mutex<Option<(OverloadProtection, Pid)>>,
    latency: LatencyWindow,
    cpu: CpuSource,
}

impl Protector {
    /// A protector reading CPU from the cgroup v2 directory `cgroup` (else this process).
    pub fn new(cgroup: PathBuf) -> Self {
        Self {
            admission: ArcSwapOption::empty(),
            active: Mutex::new(None),
            latency: LatencyWindow::default(),
            cpu: CpuSource::detect(&cgroup),
        }
    }

    /// Applies the settings of a new config version; the controller's state is kept
    /// while they stay the same.
    pub fn configure(&self, settings: Option<&OverloadProtection>) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        if active.as_ref().map(|(s, _)| s) == settings {
            return;
        }
        *active = settings.map(|s| {
            let max = s.max_limit.map_or(f64::MAX, f64::from);
            // Start with no limit in effect; the first sample brings it to what comes.
            let pid = Pid::new(Gains::default(), s.target, f64::from(s.min_limit), max, max);
            (s.clone(), pid)
        });
        self.admission.store(
            active
                .as_ref()
                .map(|(_, pid)| Arc::new(Admission::new(pid.limit()))),
        );
    }

    /// The admission to ask, when protection is on (one atomic load when it is off).
    pub fn admission(&self) -> Option<Arc<Admission>> {
        self.admission.load_full()
    }

    /// Records the latency of an admitted request.
    pub fn record_latency(&self, latency: Duration) {
        self.latency.record(latency);
    }

    /// Samples and adjusts every period until `stop`.
    pub async fn run(self: Arc<Self>, metrics: OverloadMetrics, stop: CancellationToken) {
        let mut cpu_before = self.cpu.read();
        let mut last = Instant::now();
        let mut served_avg: Option<f64> = None;
        loop {
            let period = self
                .active
                .lock()
                .ok()
                .and_then(|a| a.as_ref().map(|(s, _)| s.sample_period_ms))
                .map_or(Duration::from_secs(1), Duration::from_millis);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
            let now = Instant::now();
            let elapsed = now.duration_since(last);
            last = now;
            let cpu_now = self.cpu.read();
            let cpu = match (cpu_before, cpu_now) {
                (Some(a), Some(b)) => Some(cpu_share(a, b, elapsed)),
                _ => None,
            };
            cpu_before = cpu_now;
            let p99 = self.latency.take_p99();
            let Some(admission) = self.admission() else {
                continue;
            };
            let per_sec = |n: u64| n as f64 / elapsed.as_secs_f64().max(1e-3);
            let offered = per_sec(admission.take_offered());
            // Smoothed: requests longer than a period finish in bursts.
            let served_now = per_sec(admission.take_served());
            let served = served_avg.map_or(served_now, |avg| 0.5 * avg + 0.5 * served_now);
            served_avg = Some(served);
            let Ok(mut active) = self.active.lock() else {
                continue;
            };
            let Some((settings, pid)) = active.as_mut() else {
                continue;
            };
            let measured = match settings.signal {
                OverloadSignal::Cpu => cpu,
                // No request finished: nothing says latency is high.
                OverloadSignal::Latency => Some(p99.unwrap_or(0.0)),
                OverloadSignal::Inflight => Some(admission.in_flight() as f64),
            };
            // A hung app finishes nothing: no p99 to go by while requests wait, so the
            // sample is skipped rather than read as "fast".
            if settings.signal == OverloadSignal::Latency
                && p99.is_none()
                && admission.in_flight() > 0
            {
                continue;
            }
            let Some(measured) = measured else {
                continue;
            };
            let limit = pid.update(measured, offered, served);
            admission.set_rate(limit);
            metrics.sampled(if pid.engaged() { limit } else { f64::INFINITY }, measured);
        }
    }
}
