//! The adaptive limiter's controller: a PID in velocity form acting on the logarithm of
//! the admitted rate. The error is logarithmic (`ln(target / measured)`) and the output
//! multiplies the rate, so the same gains behave the same for a service that handles 50
//! requests a second and one that handles 5,000. Signals whose response to the rate is
//! steep (latency near saturation rises far faster than the rate) would make fixed gains
//! oscillate, so the controller measures that steepness as it goes — how much the signal
//! moved per unit of rate change — and divides its step by it.

/// Gains and bounds of the controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gains {
    /// Proportional gain (on the change of the error).
    pub kp: f64,
    /// Integral gain (on the error itself, in velocity form).
    pub ki: f64,
    /// Derivative gain (on the change of the change).
    pub kd: f64,
    /// The largest step down, as a factor per period (e.g. 0.5: at most halve).
    pub max_decrease: f64,
    /// The largest step up, as a factor per period (e.g. 1.25).
    pub max_increase: f64,
}

impl Default for Gains {
    /// Stable across a 10× range of capacity (see the tests): with a plant whose signal
    /// is proportional to the admitted rate, the integral gain alone closes half the gap
    /// each period; the small proportional and derivative terms damp measurement noise.
    fn default() -> Self {
        Self {
            kp: 0.2,
            ki: 0.5,
            kd: 0.05,
            max_decrease: 0.5,
            max_increase: 1.25,
        }
    }
}

/// A PID controller setting an admitted rate (requests per second).
#[derive(Clone, Debug)]
pub struct Pid {
    gains: Gains,
    target: f64,
    min: f64,
    max: f64,
    limit: f64,
    /// The last two errors, newest first.
    errors: [f64; 2],
    /// The previous sample: (ln of the rate in force, ln of the signal).
    previous: Option<(f64, f64)>,
    /// How many times faster the signal moves than the rate, in log terms (an average).
    sensitivity: f64,
    /// Whether the limit is in force: from the first sample above the target until the
    /// signal is back under it with fewer requests coming than the limit admits.
    engaged: bool,
}

/// The rate admitted while the limiter is not engaged: no limit at all (finite, so the
/// bucket arithmetic stays finite).
pub const UNLIMITED: f64 = 1e12;

/// Signals at or below this count as this (a logarithm needs a positive number).
const FLOOR: f64 = 1e-6;

impl Pid {
    /// A controller holding `signal` at `target`, starting at `initial` requests per
    /// second and never going below `min` or above `max`.
    pub fn new(gains: Gains, target: f64, min: f64, max: f64, initial: f64) -> Self {
        Self {
            gains,
            target,
            min,
            max,
            limit: initial.clamp(min, max).max(min).min(UNLIMITED),
            errors: [0.0; 2],
            previous: None,
            sensitivity: 1.0,
            engaged: false,
        }
    }

    /// The admitted rate now ([`UNLIMITED`] while not engaged).
    pub fn limit(&self) -> f64 {
        if self.engaged {
            self.limit
        } else {
            UNLIMITED.min(self.max)
        }
    }

    /// Whether the limit is in force.
    pub fn engaged(&self) -> bool {
        self.engaged
    }

    /// Takes one sample of the signal, with the rates of requests offered and served
    /// (admitted and finished) meanwhile, and returns the new admitted rate. Nothing is
    /// shed until the signal first passes the target; the limit then starts from the rate
    /// served, scaled down by how far the signal is over the target (at most by half),
    /// and while the signal stays over the target it never exceeds the rate served. Once the signal is back
    /// under the target while fewer requests come than the limit admits, the limit is
    /// lifted again — so a quiet moment never leaves a low limit behind to shed the next
    /// burst of healthy traffic.
    pub fn update(&mut self, measured: f64, offered: f64, served: f64) -> f64 {
        let above = measured > self.target;
        // What the server got through lately: past saturation, the one measure of its
        // capacity (a CPU share stops at 100% however far the load goes beyond it).
        let served = if served > 0.0 { served } else { offered };
        if !self.engaged {
            if !above {
                return self.limit();
            }
            self.engaged = true;
            let scale = (self.target / measured.max(FLOOR)).clamp(0.5, 1.0);
            self.limit = (served * scale).clamp(self.min, self.max);
            self.previous = None;
            self.errors = [0.0; 2];
        } else if above {
            // Over the target, admitting more than was served only builds a queue.
            self.limit = self.limit.min(served).max(self.min);
        }
        let saturated = offered < self.limit;
        if saturated && !above {
            self.engaged = false;
            return self.limit();
        }
        let (ln_rate, ln_signal) = (self.limit.ln(), measured.max(FLOOR).ln());
        if let Some((rate0, signal0)) = self.previous {
            let moved = ln_rate - rate0;
            // Only a real change of the rate tells how the signal responds to it.
            if moved.abs() > 0.01 && !saturated {
                let observed = ((ln_signal - signal0) / moved).abs().clamp(0.1, 50.0);
                self.sensitivity = 0.6 * self.sensitivity + 0.4 * observed;
            }
        }
        self.previous = Some((ln_rate, ln_signal));
        // Far past the target (latency of a collapsed queue) is no reason for a step
        // beyond the bounds; clamp so the terms stay sane.
        let e = (self.target.max(FLOOR).ln() - ln_signal).clamp(-2.0, 2.0);
        let [e1, e2] = self.errors;
        let g = self.gains;
        let step =
            (g.kp * (e - e1) + g.ki * e + g.kd * (e - 2.0 * e1 + e2)) / self.sensitivity.max(1.0);
        let mut factor = step.exp().clamp(g.max_decrease, g.max_increase);
        if saturated && factor > 1.0 {
            factor = 1.0;
        }
        self.limit = (self.limit * factor).clamp(self.min, self.max);
        self.errors = [e, e1];
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CPU-bound server of fixed capacity driven at twice it: its CPU share is the
    /// admitted rate over its capacity, capped at 1, with a little noise.
    fn settle_cpu(capacity: f64) -> Vec<f64> {
        let offered = 2.0 * capacity;
        let mut pid = Pid::new(Gains::default(), 0.75, 10.0, f64::MAX, offered);
        let mut rng = fastrand::Rng::with_seed(7);
        (0..60)
            .map(|_| {
                let admitted = pid.limit().min(offered);
                let cpu = (admitted / capacity).min(1.0) + (rng.f64() - 0.5) * 0.02;
                pid.update(cpu, offered, admitted.min(capacity));
                pid.limit()
            })
            .collect()
    }

    fn mean(xs: &[f64]) -> f64 {
        xs.iter().sum::<f64>() / xs.len() as f64
    }

    #[test]
    fn cpu_settles_at_the_target_across_a_tenfold_range_of_capacity() {
        for capacity in [100.0, 1_000.0, 10_000.0] {
            let limits = settle_cpu(capacity);
            let tail = &limits[30..];
            let m = mean(tail);
            // Near 75% of capacity...
            assert!(
                (m / capacity - 0.75).abs() < 0.03,
                "capacity {capacity}: settled at {m}"
            );
            // ...and steady: no oscillation in the last half.
            let spread = tail.iter().cloned().fold(f64::MIN, f64::max)
                - tail.iter().cloned().fold(f64::MAX, f64::min);
            assert!(spread / m < 0.05, "capacity {capacity}: {tail:?}");
            // Reached within ten periods.
            assert!(
                (limits[10] / capacity - 0.75).abs() < 0.05,
                "capacity {capacity}: {limits:?}"
            );
        }
    }

    /// A queue: p99 latency of an M/M/1 server, `4.6 / (capacity − admitted)`, and a
    /// backlog that grows past capacity.
    #[test]
    fn latency_settles_without_oscillating() {
        for capacity in [200.0, 2_000.0] {
            let offered = 2.0 * capacity;
            let target = 0.05;
            let mut pid = Pid::new(Gains::default(), target, 10.0, f64::MAX, offered);
            let mut backlog = 0.0_f64;
            let mut limits = Vec::new();
            for _ in 0..80 {
                let admitted = pid.limit().min(offered);
                backlog = (backlog + admitted - capacity).max(0.0);
                let p99 = if admitted < capacity {
                    4.6 / (capacity - admitted) + backlog / capacity
                } else {
                    1.0 + backlog / capacity
                };
                pid.update(p99, offered, admitted.min(capacity));
                limits.push(pid.limit());
            }
            // The rate where p99 is 50 ms: capacity − 92.
            let want = capacity - 4.6 / target;
            let tail = &limits[50..];
            let m = mean(tail);
            assert!(
                (m - want).abs() / want < 0.1,
                "capacity {capacity}: {m} vs {want}"
            );
            let spread = tail.iter().cloned().fold(f64::MIN, f64::max)
                - tail.iter().cloned().fold(f64::MAX, f64::min);
            assert!(spread / m < 0.05, "capacity {capacity}: {tail:?}");
        }
    }

    /// A single-threaded server on a machine of two CPUs: its share stops at 0.5, just
    /// over a 0.45 target, so the signal alone says little about how far past capacity
    /// the load is. The rate served says it: the limit is near capacity at once.
    #[test]
    fn a_saturated_signal_close_to_its_target_still_limits_at_once() {
        let capacity = 500.0;
        let offered = 2.0 * capacity;
        let mut pid = Pid::new(Gains::default(), 0.45, 10.0, f64::MAX, offered);
        let mut limits = Vec::new();
        for _ in 0..30 {
            let admitted = pid.limit().min(offered);
            let cpu = 0.5 * (admitted / capacity).min(1.0);
            pid.update(cpu, offered, admitted.min(capacity));
            limits.push(pid.limit());
        }
        assert!(limits[0] <= capacity, "{limits:?}");
        let tail = &limits[10..];
        let m = mean(tail);
        assert!(
            (m / capacity - 0.9).abs() < 0.03,
            "settled at {m}: {limits:?}"
        );
    }

    #[test]
    fn the_floor_holds_and_an_idle_limit_does_not_run_away() {
        let mut pid = Pid::new(Gains::default(), 0.75, 10.0, f64::MAX, 100.0);
        for _ in 0..50 {
            pid.update(1.0, 1_000.0, 0.0);
        }
        assert_eq!(pid.limit(), 10.0);
        // Under the target with little traffic, nothing is limited...
        let mut pid = Pid::new(Gains::default(), 0.75, 10.0, f64::MAX, 1e6);
        for _ in 0..50 {
            pid.update(0.1, 80.0, 80.0);
        }
        assert!(!pid.engaged());
        assert_eq!(pid.limit(), UNLIMITED);
        // ...overload engages it from the rate coming in, and a quiet spell lifts it.
        pid.update(1.0, 500.0, 500.0);
        assert!(pid.engaged() && pid.limit() < 500.0);
        pid.update(0.2, 5.0, 5.0);
        assert!(!pid.engaged());
        assert_eq!(pid.limit(), UNLIMITED);
    }
}
