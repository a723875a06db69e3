//! The adaptive concurrency limit: how many admitted requests may be at the app at once.
//!
//! Learned from gradient limiters (Netflix's concurrency-limits, Envoy's adaptive
//! concurrency filter): limit concurrency, not rate. A rate limit has to know the app's
//! capacity to the percent to keep goodput near it, and a wrong guess either starves the
//! app or builds a queue that outlives the callers' deadlines. A concurrency limit is
//! self-clocking: a slot frees when the app answers, so the app never idles while work is
//! waiting and never holds more than the limit. What is left to learn is the limit itself,
//! and Little's law gives it: the concurrency the app serves at its no-load latency is
//! `limit × no_load / latency`. So every period the limit is multiplied by the gradient
//! `no_load × (1 + BUFFER) / p50` and a little headroom is added:
//!
//! - Past saturation latency grows in proportion to the limit, so `limit × gradient` is
//!   the same whatever the limit was: the step lands on the fixed point instead of
//!   overshooting it, with no gain to tune per service (a 100 req/s and a 10,000 req/s
//!   app behave alike). Below saturation latency does not move and the limit grows only
//!   by the headroom, and only while the limit is what holds requests back.
//! - The no-load latency is measured, as Envoy does: now and then one period runs at an
//!   eighth of the limit (the floor, the first time), and its median latency is the app's
//!   own, with no queue in it. A median, not a minimum, so an app whose requests differ
//!   in cost is not mistaken for a queued one.
//! - The configured signal (CPU share or p99) is a ceiling on top: over its target, the
//!   gradient is at most `target / signal`.
//! - Down, the step is taken whole: past saturation it lands on the fixed point. Up, it
//!   goes half way (the map from one limit to the next then has a slope between 0 and 1,
//!   so it converges without oscillating), or the whole way while both latency and the
//!   signal show room, so a limit left low by an overload lets go quickly.
//! - The headroom is `0.5·√limit` while latency is under the buffer and `0.25·√limit`
//!   once it shows the buffer's queue: at the fixed point more headroom is only more
//!   queue. For an app that serves one request at a time, `0.5·√limit` settled the limit
//!   near 2.4, so three were at the app now and then and the p99 was 2.3× the unloaded
//!   one; `0.25·√limit` settles it near 2 (1.6× in the bench), with goodput still ≥ 90%.
//!
//! Nothing is limited until the signal first passes its target, and the limit is lifted
//! again after a while under it with nothing shed, so a quiet moment never leaves a low
//! limit behind for the next burst of healthy traffic.

/// The signal protection holds at its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A CPU share.
    Cpu,
    /// The p99 latency, in seconds.
    Latency,
    /// A fixed number of requests in flight: the target is the limit.
    Inflight,
}

/// What one sample period saw.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// The signal's reading (CPU share or p99 seconds); `None`: not readable.
    pub signal: Option<f64>,
    /// Latencies of requests admitted in this period's generation that finished in it.
    pub latency: Option<Latencies>,
    /// The most admitted requests in flight at once.
    pub peak_in_flight: u64,
    /// Requests shed.
    pub shed: u64,
}

/// Quantiles of a period's latencies, in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Latencies {
    /// The median.
    pub p50: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// How many were measured.
    pub count: u64,
}

/// What the next period admits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    /// Requests in flight at once, fractional (see [`admits`]); `None`: no limit.
    pub limit: Option<f64>,
    /// Whether the next period measures the no-load latency (its latencies start a new
    /// generation).
    pub probe: bool,
}

/// Whether a request finding `in_flight` admitted ones may go in under `limit`, given a
/// `coin` drawn uniformly from [0, 1). A fractional limit admits its last request by
/// chance: 1.4 lets one through always and a second 40% of the time, so the limit can
/// settle between two whole numbers instead of flipping between them (for an app that
/// serves one request at a time, 1 may leave it idle a fifth of the time and 2 run it
/// flat out).
pub fn admits(in_flight: u64, limit: f64, coin: f64) -> bool {
    let whole = limit.floor();
    let n = in_flight as f64;
    n < whole || (n == whole && coin < limit - whole)
}

/// Latency may rise this much over the no-load latency before the limit comes down: the
/// little queue that keeps the app busy between one answer and the next request.
const BUFFER: f64 = 0.25;
/// Fewer latencies than this in a period say nothing reliable about a median...
const MIN_SAMPLES: u64 = 10;
/// ...but a probe, which admits only a few at once, takes what a slow app gives it.
const MIN_PROBE_SAMPLES: u64 = 3;
/// Probes in a row that may come back with too few answers before the limiter goes on
/// without a no-load latency (the signal alone then moves the limit).
const PROBE_TRIES: u32 = 3;
/// Periods between two probes while the limit is in force.
const PROBE_EVERY: u32 = 60;
/// Periods under the target with nothing shed before the limit is lifted.
const QUIET_PERIODS: u32 = 8;
/// Headroom added each period, times √limit: while latency shows room (under the
/// buffer), and once it shows the buffer's queue.
const HEADROOM: (f64, f64) = (0.5, 0.25);
/// Under this share of its target the signal is clear: with latency under the buffer
/// too, a limit that holds requests back grows by the whole step, not half way.
const CLEAR: f64 = 0.8;
/// The gradient's bounds per period: at most a quarter (a queue that collapsed before
/// the limit engaged is cut in a second), at most half as much again.
const GRADIENT: (f64, f64) = (0.25, 1.5);

/// The concurrency limiter's state.
#[derive(Clone, Debug)]
pub struct Limiter {
    signal: Signal,
    target: f64,
    min: f64,
    max: f64,
    /// The limit in force while engaged (fractional: it moves by fractions of a request).
    limit: f64,
    engaged: bool,
    /// The median latency the last probe measured.
    no_load: Option<f64>,
    /// Whether the period now running is a probe.
    probing: bool,
    /// Periods since the last probe.
    since_probe: u32,

    /// Periods in a row under the target with nothing shed.
    quiet: u32,
    /// Probes in a row that had too few answers.
    failed_probes: u32,
}

impl Limiter {
    /// A limiter holding `signal` at `target`, its limit never below `min` (at least one
    /// request) nor above `max`.
    pub fn new(signal: Signal, target: f64, min: u64, max: Option<u64>) -> Self {
        let min = min.max(1) as f64;
        let max = max.map_or(f64::MAX, |m| (m as f64).max(min));
        Self {
            signal,
            target,
            min,
            max,
            limit: max,
            engaged: signal == Signal::Inflight,
            no_load: None,
            probing: false,
            since_probe: 0,
            quiet: 0,
            failed_probes: 0,
        }
    }

    /// The limit in force: `None` while not engaged.
    pub fn limit(&self) -> Option<f64> {
        if !self.engaged {
            return None;
        }
        if self.signal == Signal::Inflight {
            return Some(self.target.clamp(self.min, self.max).floor());
        }
        let limit = if self.probing {
            self.probe_limit().floor()
        } else {
            self.limit
        };
        Some(limit.max(1.0))
    }

    /// What a probe admits: the floor for the first one (nothing is known yet), then an
    /// eighth of the limit, which leaves an app with many threads most of its work and
    /// one with few the single request that shows its latency without a queue.
    fn probe_limit(&self) -> f64 {
        match self.no_load {
            None => self.min,
            Some(_) => (self.limit / 8.0).max(self.min),
        }
    }

    /// The median latency of the last probe, in seconds.
    pub fn no_load(&self) -> Option<f64> {
        self.no_load
    }

    /// Takes one period's sample and decides the next period.
    pub fn update(&mut self, s: &Sample) -> Decision {
        if self.signal == Signal::Inflight {
            return self.decision();
        }
        let pressure = s.signal.map(|v| v / self.target.max(f64::MIN_POSITIVE));
        let over = pressure.is_some_and(|p| p > 1.0);
        let enough = s.latency.filter(|l| l.count >= MIN_SAMPLES && l.p50 > 0.0);
        if !self.engaged {
            if !over {
                return self.decision();
            }
            // From what was in flight, cut by how far over the target the signal is;
            // then measure the app's own latency at once.
            self.engaged = true;
            let cut = pressure.map_or(0.5, |p| (1.0 / p).clamp(0.5, 1.0));
            self.limit = (s.peak_in_flight as f64 * cut).clamp(self.min, self.max);
            self.quiet = 0;
            return self.start_probe();
        }
        // Lifted after a quiet while: under the target and nothing shed (probe periods
        // count too, so traffic that stops during one does not leave a probe running).
        if !over && s.shed == 0 {
            self.quiet += 1;
            if self.quiet >= QUIET_PERIODS {
                self.engaged = false;
                self.probing = false;
                self.limit = self.max;
                return self.decision();
            }
        } else {
            self.quiet = 0;
        }
        if self.probing {
            self.probing = false;
            self.since_probe = 0;
            let answered = s
                .latency
                .filter(|l| l.count >= MIN_PROBE_SAMPLES && l.p50 > 0.0);
            match answered {
                Some(l) => {
                    self.no_load = Some(l.p50);
                    self.failed_probes = 0;
                }
                // Too few answers to tell: measure again while requests admitted before
                // the probe still drain (a queue that built up before the limit engaged),
                // and a few times more for a slow app or little traffic; then go on by
                // the signal alone until the next probe.
                None if self.no_load.is_none()
                    && (s.peak_in_flight as f64 > self.probe_limit()
                        || self.failed_probes + 1 < PROBE_TRIES) =>
                {
                    self.failed_probes += 1;
                    return self.start_probe();
                }
                None => self.failed_probes = 0,
            }
            return self.decision();
        }
        self.since_probe += 1;
        let by_latency = match (enough, self.no_load) {
            (Some(l), Some(no_load)) => no_load * (1.0 + BUFFER) / l.p50,
            _ => 1.0,
        };
        let by_signal = pressure.map_or(1.0, |p| 1.0 / p.max(f64::MIN_POSITIVE));
        let gradient = by_latency.min(by_signal).clamp(GRADIENT.0, GRADIENT.1);
        // Headroom only under the target: over it, the signal's cut must not be undone.
        // Less of it once latency shows the queue the buffer allows: at the fixed point
        // the headroom is queue the app does not need (for an app that serves one
        // request at a time, 0.5·√limit held three at once now and then, and the p99
        // past twice the unloaded one).
        let headroom = match (over, by_latency > 1.0) {
            (true, _) => 0.0,
            (false, true) => HEADROOM.0 * self.limit.sqrt(),
            (false, false) => HEADROOM.1 * self.limit.sqrt(),
        };
        let next = self.limit * gradient + headroom;
        // Only a limit that holds requests back has a reason to grow, only on the
        // evidence of answers (an app that answers nothing is hung, not idle), and then
        // half way: below saturation latency says nothing of how far it may go. Down, the
        // gradient is taken whole: past saturation it lands on the fixed point.
        let binding = s.shed > 0 || s.peak_in_flight as f64 >= self.limit.floor();
        let next = if next <= self.limit {
            next
        } else if binding && !over && enough.is_some() {
            if by_latency > 1.0 && pressure.is_none_or(|p| p < CLEAR) {
                next
            } else {
                0.5 * (self.limit + next)
            }
        } else {
            self.limit
        };
        self.limit = next.clamp(self.min, self.max);
        if self.since_probe >= PROBE_EVERY {
            return self.start_probe();
        }
        self.decision()
    }

    fn start_probe(&mut self) -> Decision {
        self.probing = true;
        Decision {
            limit: self.limit(),
            probe: true,
        }
    }

    fn decision(&self) -> Decision {
        Decision {
            limit: self.limit(),
            probe: false,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The limiter against simulated apps (`plant.rs`): goodput, latency, steadiness and
    //! recovery, across a tenfold range of capacity and of concurrency.

    use super::super::plant::{Arrivals, Outcome, Phase, Plant, Protection, run};
    use super::{Latencies, Sample};

    const ONE_THREAD: Plant = Plant {
        workers: 1,
        service: 0.002,
        jitter: 0.1,
        slow_share: 0.0,
        slow_factor: 1.0,
        hop: 0.0001,
    };

    /// Apps of 500, 5,000 and 4,000 requests a second: one thread at 2 ms, one at
    /// 0.2 ms, eight at 2 ms.
    fn plants() -> Vec<Plant> {
        vec![
            ONE_THREAD,
            Plant {
                service: 0.0002,
                ..ONE_THREAD
            },
            Plant {
                workers: 8,
                ..ONE_THREAD
            },
        ]
    }

    fn steady(plant: Plant, arrivals: Arrivals, protection: Protection, load: f64) -> Outcome {
        let rate = plant.capacity() * load;
        let mut out = run(
            plant,
            arrivals,
            protection,
            &[Phase { rate, secs: 30.0 }],
            5.0,
            7,
        );
        out.remove(0)
    }

    #[test]
    fn goodput_stays_near_capacity_and_latency_near_unloaded_at_2x_and_4x() {
        for plant in plants() {
            for arrivals in [Arrivals::Even, Arrivals::Random] {
                // Against the unloaded p99 of the same arrivals: even ones queue less, so
                // theirs is the stricter bar (as the bench's paced load is).
                let unloaded = steady(plant, arrivals, Protection::Off, 0.1).p99;
                // The cpu signal holds the app's CPU at its target, so goodput is at most
                // that share of capacity: 95% leaves room for 90%.
                for protection in [Protection::Latency(0.05), Protection::Cpu(0.95)] {
                    for load in [2.0, 4.0] {
                        let out = steady(plant, arrivals, protection, load);
                        let share = out.goodput / plant.capacity();
                        let case = format!(
                            "{plant:?} {arrivals:?} {protection:?} at {load}x: goodput {:.0}% p99 {:.2} ms (unloaded {:.2} ms)",
                            share * 100.0,
                            out.p99 * 1e3,
                            unloaded * 1e3
                        );
                        assert!(share >= 0.9, "{case}");
                        assert!(out.p99 <= 2.0 * unloaded, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn without_protection_the_queue_outgrows_the_deadline() {
        let out = steady(ONE_THREAD, Arrivals::Even, Protection::Off, 2.0);
        assert!(out.goodput < 0.1 * ONE_THREAD.capacity(), "{out:?}");
    }

    #[test]
    fn the_limit_holds_steady_under_steady_overload() {
        for plant in plants() {
            let out = steady(plant, Arrivals::Random, Protection::Latency(0.05), 2.0);
            let limits: Vec<f64> = out.limits.iter().map(|l| l.unwrap_or(f64::MAX)).collect();
            // Probes aside (an eighth of the limit for one period in sixty), the limit
            // stays within a fifth (or one request) of its median.
            let mut sorted = limits.clone();
            sorted.sort_by(f64::total_cmp);
            let typical = sorted[sorted.len() / 2];
            let off = limits
                .iter()
                .filter(|l| (*l - typical).abs() > (typical / 5.0).max(1.0))
                .count();
            assert!(off * 20 <= limits.len(), "{plant:?}: {limits:?}");
        }
    }

    #[test]
    fn the_limit_lifts_when_load_drops_and_comes_back_with_it() {
        for plant in plants() {
            let cap = plant.capacity();
            let phases = [
                Phase {
                    rate: 2.0 * cap,
                    secs: 15.0,
                },
                Phase {
                    rate: 0.5 * cap,
                    secs: 10.0,
                },
                Phase {
                    rate: 4.0 * cap,
                    secs: 15.0,
                },
            ];
            let out = run(
                plant,
                Arrivals::Random,
                Protection::Latency(0.05),
                &phases,
                3.0,
                11,
            );
            // Half load: within three seconds nothing is limited, nothing shed.
            assert!(
                out[1].limits.iter().all(Option::is_none),
                "{plant:?}: {:?}",
                out[1].limits
            );
            assert_eq!(out[1].shed, 0.0, "{plant:?}");
            assert!(out[1].goodput >= 0.47 * cap, "{plant:?}: {:?}", out[1]);
            // Back to overload: protected again.
            assert!(out[2].goodput >= 0.9 * cap, "{plant:?}: {:?}", out[2]);
        }
    }

    #[test]
    fn the_cpu_signal_keeps_the_app_under_its_target() {
        // Eight threads: at 75% of the CPU, six are busy on average.
        let plant = Plant {
            workers: 8,
            ..ONE_THREAD
        };
        for load in [2.0, 4.0] {
            let out = steady(plant, Arrivals::Random, Protection::Cpu(0.75), load);
            let busy = out.goodput / plant.capacity();
            assert!(
                (0.65..=0.8).contains(&busy),
                "at {load}x: {:.0}% busy",
                busy * 100.0
            );
        }
        // One thread: a fractional limit (one always, a second now and then) holds it
        // near 75% too.
        let out = steady(ONE_THREAD, Arrivals::Even, Protection::Cpu(0.75), 2.0);
        let busy = out.goodput / ONE_THREAD.capacity();
        assert!(
            (0.65..=0.8).contains(&busy),
            "one thread: {:.0}% busy",
            busy * 100.0
        );
    }

    fn sample(signal: f64, count: u64, p50: f64, peak: u64, shed: u64) -> Sample {
        Sample {
            signal: Some(signal),
            latency: (count > 0).then_some(Latencies {
                p50,
                p99: p50 * 2.0,
                count,
            }),
            peak_in_flight: peak,
            shed,
        }
    }

    #[test]
    fn a_slow_app_is_not_held_in_probes() {
        // One answer a period at the floor: never the ten a median wants.
        let mut l = super::Limiter::new(super::Signal::Cpu, 0.5, 1, None);
        assert!(l.update(&sample(0.9, 0, 0.0, 40, 0)).probe);
        let mut probes = 0;
        for _ in 0..20 {
            probes += usize::from(l.update(&sample(0.9, 1, 2.0, 1, 5)).probe);
        }
        // A few tries, then the signal alone; the next probe only 60 periods on.
        assert!(probes <= 3, "{probes} probes in 20 periods");
        // And traffic that stops during a probe lifts the limit after the quiet periods.
        let mut l = super::Limiter::new(super::Signal::Cpu, 0.5, 1, None);
        l.update(&sample(0.9, 0, 0.0, 40, 0));
        for _ in 0..8 {
            l.update(&sample(0.1, 0, 0.0, 0, 0));
        }
        assert_eq!(l.limit(), None);
    }

    #[test]
    fn a_hung_app_gets_no_more_requests() {
        let mut l = super::Limiter::new(super::Signal::Latency, 0.05, 1, None);
        l.update(&sample(0.2, 50, 0.1, 40, 0));
        l.update(&sample(0.2, 50, 0.002, 1, 100));
        let before = l.limit().unwrap();
        // Nothing answered while requests wait and others are shed: no p99, no growth.
        for _ in 0..20 {
            l.update(&Sample {
                signal: None,
                latency: None,
                peak_in_flight: 5,
                shed: 100,
            });
        }
        assert!(l.limit().unwrap() <= before, "{:?} > {before}", l.limit());
    }

    #[test]
    fn an_app_whose_requests_differ_in_cost_is_not_starved() {
        // One request in ten costs 20 times the others: a wide spread of latencies with
        // no queue in it.
        let plant = Plant {
            workers: 8,
            slow_share: 0.1,
            slow_factor: 20.0,
            ..ONE_THREAD
        };
        for protection in [Protection::Latency(0.25), Protection::Cpu(0.9)] {
            let out = steady(plant, Arrivals::Random, protection, 2.0);
            let share = out.goodput / plant.capacity();
            assert!(
                share >= 0.85,
                "{protection:?}: goodput {:.0}%",
                share * 100.0
            );
        }
    }
}
