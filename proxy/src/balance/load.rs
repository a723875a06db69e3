//! One endpoint's load: a peak-sensitive moving average of its response latency times
//! its requests in flight. A slow response raises the estimate at once; fast ones bring
//! it down gradually, and it decays while the endpoint is idle so that it gets tried again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How fast the estimate forgets: the weight of an old sample halves in about 7 s.
const DECAY: Duration = Duration::from_secs(10);
/// The estimate of an endpoint that has not answered yet: optimistic, so new endpoints
/// get traffic, yet not zero, so requests in flight still count.
const DEFAULT_RTT: Duration = Duration::from_millis(1);
/// What a connect failure counts as: such an endpoint is avoided while others answer.
pub const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The load of one endpoint.
#[derive(Debug)]
pub struct EndpointLoad {
    /// Requests sent and not yet answered.
    in_flight: AtomicU32,
    /// (estimate in nanoseconds, when it was last updated).
    rtt: Mutex<(f64, Instant)>,
}

impl Default for EndpointLoad {
    fn default() -> Self {
        Self {
            in_flight: AtomicU32::new(0),
            rtt: Mutex::new((DEFAULT_RTT.as_nanos() as f64, Instant::now())),
        }
    }
}

/// A request in flight to an endpoint; [`InFlight::done`] records its latency. Dropped
/// without (a cancelled attempt: a deadline passed, the caller left) it records the time
/// waited so far, so an endpoint that never answers does not look fast.
#[derive(Debug)]
pub struct InFlight<'a> {
    load: &'a EndpointLoad,
    started: Instant,
    recorded: bool,
}

impl InFlight<'_> {
    /// The response head arrived now.
    pub fn done(mut self) {
        self.recorded = true;
        self.load.observe(self.started.elapsed(), Instant::now());
    }

    /// The attempt says nothing about the endpoint (the caller's body broke, or the
    /// caller stalled it): no latency is recorded.
    pub fn forget(mut self) {
        self.recorded = true;
    }

    /// The endpoint could not be reached or broke the connection: it is charged the
    /// failure penalty.
    pub fn failed(mut self) {
        self.recorded = true;
        self.load.observe(FAILURE_PENALTY, Instant::now());
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.load.observe(self.started.elapsed(), Instant::now());
        }
        self.load.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl EndpointLoad {
    /// Counts a request as in flight until the guard is dropped.
    pub fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            load: self,
            started: Instant::now(),
            recorded: false,
        }
    }

    /// Records one response latency observed at `now`.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let rtt = rtt.as_nanos() as f64;
        if let Ok(mut est) = self.rtt.lock() {
            let (old, stamp) = *est;
            let next = if rtt > old {
                // Peak: a slow response counts in full at once.
                rtt
            } else {
                let w = decay_weight(now.saturating_duration_since(stamp));
                old * w + rtt * (1.0 - w)
            };
            *est = (next, now);
        }
    }

    /// The cost of sending one more request now: the latency estimate (decayed over the
    /// time since the last response) times the requests that would then be in flight.
    pub fn cost(&self, now: Instant) -> f64 {
        let rtt = match self.rtt.lock() {
            Ok(est) => est.0 * decay_weight(now.saturating_duration_since(est.1)),
            Err(_) => 0.0,
        };
        let pending = f64::from(self.in_flight.load(Ordering::Relaxed)) + 1.0;
        rtt.max(1.0) * pending
    }

    /// The latency estimate in nanoseconds, decayed to `now` (handed to a successor).
    pub fn rtt_ns(&self, now: Instant) -> f64 {
        self.rtt
            .lock()
            .map(|est| est.0 * decay_weight(now.saturating_duration_since(est.1)))
            .unwrap_or(DEFAULT_RTT.as_nanos() as f64)
    }

    /// Takes over the estimate a predecessor proxy handed over, as of `now`.
    pub fn resume(&self, rtt_ns: f64, now: Instant) {
        if rtt_ns.is_finite()
            && rtt_ns > 0.0
            && let Ok(mut est) = self.rtt.lock()
        {
            *est = (rtt_ns, now);
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// The weight an estimate keeps after `elapsed`.
fn decay_weight(elapsed: Duration) -> f64 {
    (-elapsed.as_secs_f64() / DECAY.as_secs_f64()).exp()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_slow_response_counts_at_once_and_fast_ones_bring_it_down_slowly() {
        let load = EndpointLoad::default();
        let t0 = Instant::now();
        load.observe(100 * MS, t0);
        assert!((load.cost(t0) - 100e6).abs() < 1.0);
        // One fast answer a second later barely moves a 100 ms peak...
        load.observe(MS, t0 + Duration::from_secs(1));
        let after_one = load.cost(t0 + Duration::from_secs(1));
        assert!(after_one > 85e6 && after_one < 100e6, "{after_one}");
        // ...a minute of them brings it near the new latency.
        for s in 2..60 {
            load.observe(MS, t0 + Duration::from_secs(s));
        }
        let later = load.cost(t0 + Duration::from_secs(59));
        assert!(later < 2e6, "{later}");
    }

    #[test]
    fn requests_in_flight_multiply_the_cost() {
        let load = EndpointLoad::default();
        let now = Instant::now();
        load.observe(10 * MS, now);
        let idle = load.cost(now);
        let a = load.start();
        let b = load.start();
        assert_eq!(load.in_flight(), 2);
        assert!((load.cost(now) / idle - 3.0).abs() < 0.01);
        a.done();
        drop(b);
        assert_eq!(load.in_flight(), 0);
    }

    #[test]
    fn a_forgotten_attempt_leaves_the_estimate_alone() {
        let load = EndpointLoad::default();
        let now = Instant::now();
        load.observe(10 * MS, now);
        let before = load.cost(now);
        let stalled = load.start();
        std::thread::sleep(20 * MS);
        stalled.forget();
        assert_eq!(load.in_flight(), 0);
        assert_eq!(load.cost(now), before);
    }

    #[test]
    fn an_idle_estimate_decays() {
        let load = EndpointLoad::default();
        let t0 = Instant::now();
        load.observe(FAILURE_PENALTY, t0);
        let much_later = load.cost(t0 + Duration::from_secs(60));
        assert!(much_later < 0.01 * 1e9, "{much_later}");
    }
}
