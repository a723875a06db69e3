//! Overload protection as the proxy runs it: the settings in force, the admission the
//! inbound side asks per request, and the loop that samples the signal every period and
//! has the limiter set the concurrency admitted.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio_util::sync::CancellationToken;

use super::Admission;
use super::limiter::{Limiter, Sample, Signal};
use super::metrics::OverloadMetrics;
use super::signal::{CpuSource, cpu_share};
use crate::config::overload::{OverloadProtection, OverloadSignal};

/// The limiter of the inbound side.
pub struct Protector {
    admission: ArcSwapOption<Admission>,
    active: Mutex<Option<(OverloadProtection, Limiter)>>,
    cpu: CpuSource,
}

impl Protector {
    /// A protector reading CPU from the cgroup v2 directory `cgroup` (else this process).
    pub fn new(cgroup: PathBuf) -> Self {
        Self {
            admission: ArcSwapOption::empty(),
            active: Mutex::new(None),
            cpu: CpuSource::detect(&cgroup),
        }
    }

    /// Applies the settings of a new config version; the limiter's state is kept while
    /// they stay the same.
    pub fn configure(&self, settings: Option<&OverloadProtection>) {
        let Ok(mut active) = self.active.lock() else {
            return;
        };
        if active.as_ref().map(|(s, _)| s) == settings {
            return;
        }
        *active = settings.map(|s| {
            let signal = match s.signal {
                OverloadSignal::Cpu => Signal::Cpu,
                OverloadSignal::Latency => Signal::Latency,
                OverloadSignal::Inflight => Signal::Inflight,
            };
            let limiter = Limiter::new(
                signal,
                s.target,
                u64::from(s.min_limit),
                s.max_limit.map(u64::from),
            );
            (s.clone(), limiter)
        });
        self.admission.store(
            active
                .as_ref()
                .map(|(_, limiter)| Arc::new(Admission::new(limiter.limit()))),
        );
    }

    /// The admission to ask, when protection is on (one atomic load when it is off).
    pub fn admission(&self) -> Option<Arc<Admission>> {
        self.admission.load_full()
    }

    /// Samples and adjusts every period until `stop`.
    pub async fn run(self: Arc<Self>, metrics: OverloadMetrics, stop: CancellationToken) {
        let mut cpu_before = self.cpu.read();
        let mut last = Instant::now();
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
            let Some(admission) = self.admission() else {
                continue;
            };
            let latency = admission.take_latencies();
            let Ok(mut active) = self.active.lock() else {
                continue;
            };
            let Some((settings, limiter)) = active.as_mut() else {
                continue;
            };
            let signal = match settings.signal {
                OverloadSignal::Cpu => cpu,
                OverloadSignal::Latency => latency.map(|l| l.p99),
                OverloadSignal::Inflight => Some(admission.in_flight() as f64),
            };
            let decision = limiter.update(&Sample {
                signal,
                latency,
                peak_in_flight: admission.take_peak(),
                shed: admission.take_shed(),
            });
            admission.set_limit(decision.limit);
            if decision.probe {
                admission.new_generation();
            }
            let shown = decision.limit.unwrap_or(f64::INFINITY);
            metrics.sampled(shown, signal.unwrap_or(0.0));
        }
    }
}
