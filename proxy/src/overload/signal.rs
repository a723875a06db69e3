//! The signals overload protection holds at a target: CPU (cgroup v2 `cpu.stat` against
//! `cpu.max`, else this process's own CPU time against one CPU), the p99 latency of
//! admitted inbound requests, or inbound requests in flight.

use super::limiter::Latencies;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Where CPU usage is read from.
#[derive(Debug)]
pub enum CpuSource {
    /// A cgroup v2 directory (`cpu.stat`, `cpu.max`).
    Cgroup(PathBuf),
    /// This process (`/proc/self/stat`), against one CPU.
    Process,
}

impl CpuSource {
    /// The cgroup at `dir` when it has `cpu.stat`, else this process.
    pub fn detect(dir: &Path) -> Self {
        if dir.join("cpu.stat").is_file() {
            Self::Cgroup(dir.to_owned())
        } else {
            Self::Process
        }
    }

    /// CPU time used so far, and how many CPUs it is measured against.
    pub fn read(&self) -> Option<(Duration, f64)> {
        match self {
            Self::Cgroup(dir) => {
                let stat = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                let max = std::fs::read_to_string(dir.join("cpu.max")).unwrap_or_default();
                Some((usage_usec(&stat)?, cpus(&max)))
            }
            Self::Process => {
                let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
                Some((process_cpu(&stat)?, 1.0))
            }
        }
    }
}

/// `usage_usec` of a cgroup v2 `cpu.stat`.
fn usage_usec(stat: &str) -> Option<Duration> {
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_micros)
}

/// The CPUs a cgroup v2 `cpu.max` allows (`quota period`); `max` or unreadable: the
/// machine's CPUs.
fn cpus(max: &str) -> f64 {
    let mut parts = max.split_whitespace();
    match (
        parts.next().and_then(|q| q.parse::<f64>().ok()),
        parts.next().and_then(|p| p.parse::<f64>().ok()),
    ) {
        (Some(quota), Some(period)) if period > 0.0 => quota / period,
        _ => std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
    }
}

/// utime + stime of `/proc/self/stat`, at the usual 100 ticks a second.
fn process_cpu(stat: &str) -> Option<Duration> {
    // The command name may hold spaces; fields are counted after its closing ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU share over the time between two readings.
pub fn cpu_share(before: (Duration, f64), after: (Duration, f64), elapsed: Duration) -> f64 {
    let used = after.0.saturating_sub(before.0).as_secs_f64();
    let available = elapsed.as_secs_f64() * after.1;
    if available > 0.0 {
        used / available
    } else {
        0.0
    }
}

/// Latencies of admitted requests over one sample period, in buckets from 100 µs up,
/// eight to each doubling (9% apart: the median the controller's gradient divides by
/// must tell 2 ms from 2.5 ms), for quantiles without keeping every value.
#[derive(Debug)]
pub struct LatencyWindow {
    buckets: [AtomicU64; BUCKETS],
}

const FIRST_BUCKET: Duration = Duration::from_micros(100);
const PER_DOUBLING: f64 = 8.0;
/// 24 doublings from 100 µs: up to about 28 minutes.
const BUCKETS: usize = 24 * 8;

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl LatencyWindow {
    /// Records one latency.
    pub fn record(&self, latency: Duration) {
        let ratio = latency.as_secs_f64() / FIRST_BUCKET.as_secs_f64();
        let i = if ratio <= 1.0 {
            0
        } else {
            (ratio.log2() * PER_DOUBLING).ceil() as usize
        };
        self.buckets[i.min(BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// The median and p99 of the period's latencies (each the upper bound of its
    /// bucket), and starts a new period; `None` when nothing was recorded.
    pub fn take(&self) -> Option<Latencies> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let count: u64 = counts.iter().sum();
        if count == 0 {
            return None;
        }
        let quantile = |q: f64| {
            let rank = ((count as f64 * q).ceil() as u64).max(1);
            let mut seen = 0;
            let i = counts
                .iter()
                .position(|n| {
                    seen += n;
                    seen >= rank
                })
                .unwrap_or(BUCKETS - 1);
            FIRST_BUCKET.as_secs_f64() * 2f64.powf(i as f64 / PER_DOUBLING)
        };
        Some(Latencies {
            p50: quantile(0.5),
            p99: quantile(0.99),
            count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_and_process_readings_parse() {
        assert_eq!(
            usage_usec("usage_usec 2500000\nuser_usec 2000000\n"),
            Some(Duration::from_millis(2500))
        );
        assert_eq!(cpus("150000 100000\n"), 1.5);
        assert!(cpus("max 100000\n") >= 1.0);
        let stat = "42 (braid proxy) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0";
        assert_eq!(process_cpu(stat), Some(Duration::from_millis(3000)));
        let share = cpu_share(
            (Duration::from_millis(1000), 2.0),
            (Duration::from_millis(2500), 2.0),
            Duration::from_secs(1),
        );
        assert!((share - 0.75).abs() < 1e-9);
    }

    #[test]
    fn the_p99_comes_from_the_slowest_percent() {
        let w = LatencyWindow::default();
        for _ in 0..990 {
            w.record(Duration::from_millis(1));
        }
        for _ in 0..10 {
            w.record(Duration::from_millis(300));
        }
        let l = w.take().unwrap();
        // Each is the upper bound of its bucket: at most 9% over.
        assert!((0.001..0.00109).contains(&l.p50), "{l:?}");
        assert!((0.001..0.00109).contains(&l.p99), "{l:?}");
        assert_eq!(l.count, 1000);
        w.record(Duration::from_millis(300));
        let l = w.take().unwrap();
        assert!((0.3..0.33).contains(&l.p99), "{l:?}");
        assert_eq!(w.take(), None);
        for ms in [2, 2, 2, 3, 3] {
            w.record(Duration::from_millis(ms));
        }
        // The median tells 2 ms from 3 ms.
        let l = w.take().unwrap();
        assert!((0.002..0.0022).contains(&l.p50), "{l:?}");
        assert!((0.003..0.0033).contains(&l.p99), "{l:?}");
    }
}
