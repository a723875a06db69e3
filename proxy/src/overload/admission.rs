//! Admission under a concurrency limit the controller sets: a request is admitted while
//! fewer than the limit are in flight at the app, else shed at once (never queued: a
//! queue in the proxy is latency the caller pays for nothing). It also counts what was
//! shed and the most in flight at once, and keeps the admitted requests' latencies, for
//! the controller's next sample.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::limiter::admits;
use super::signal::LatencyWindow;

/// Admits requests up to a number in flight.
#[derive(Debug, Default)]
pub struct Admission {
    /// The most in flight at once, the bits of an `f64` (see `limiter::admits`);
    /// infinite: no limit.
    limit: AtomicU64,
    in_flight: AtomicU64,
    peak: AtomicU64,
    shed: AtomicU64,
    /// Latencies count only for requests admitted in the current generation: a probe of
    /// the no-load latency starts one, so requests admitted before it (and queued behind
    /// a higher limit) do not blur it.
    generation: AtomicU64,
    latency: LatencyWindow,
}

/// An admitted request, counted in flight until dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    generation: u64,
}

impl Admitted {
    /// Records how long the app took to answer.
    pub fn answered(&self, latency: Duration) {
        let a = &self.admission;
        if a.generation.load(Ordering::Relaxed) == self.generation {
            a.latency.record(latency);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// Admits up to `limit` requests at once (`None`: any number).
    pub fn new(limit: Option<f64>) -> Self {
        let a = Self::default();
        a.set_limit(limit);
        a
    }

    /// Admits a request, or `None`: shed it.
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let limit = f64::from_bits(self.limit.load(Ordering::Relaxed));
        // A coin only for a fractional limit: a whole one (or none) never needs it.
        let coin = if limit.fract() > 0.0 {
            fastrand::f64()
        } else {
            0.0
        };
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                admits(n, limit, coin).then_some(n + 1)
            });
        match admitted {
            Ok(before) => {
                self.peak.fetch_max(before + 1, Ordering::Relaxed);
                Some(Admitted {
                    admission: self.clone(),
                    generation: self.generation.load(Ordering::Relaxed),
                })
            }
            Err(_) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Sets the limit (`None`: none); at least one request.
    pub fn set_limit(&self, limit: Option<f64>) {
        let limit = limit.unwrap_or(f64::INFINITY).max(1.0);
        self.limit.store(limit.to_bits(), Ordering::Relaxed);
    }

    /// The limit in force (`None`: none).
    pub fn limit(&self) -> Option<f64> {
        Some(f64::from_bits(self.limit.load(Ordering::Relaxed))).filter(|l| l.is_finite())
    }

    /// Starts a new generation: latencies of requests admitted before it no longer count.
    pub fn new_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// The most in flight at once since the last call (starting again from those in
    /// flight now).
    pub fn take_peak(&self) -> u64 {
        self.peak.swap(self.in_flight(), Ordering::Relaxed)
    }

    /// Requests shed since the last call.
    pub fn take_shed(&self) -> u64 {
        self.shed.swap(0, Ordering::Relaxed)
    }

    /// The latencies recorded since the last call.
    pub fn take_latencies(&self) -> Option<super::limiter::Latencies> {
        self.latency.take()
    }

    /// Admitted requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_counts() {
        let a = Arc::new(Admission::new(Some(2.0)));
        let first = a.admit().unwrap();
        let second = a.admit().unwrap();
        assert!(a.admit().is_none());
        assert_eq!((a.in_flight(), a.take_shed(), a.take_peak()), (2, 1, 2));
        drop(first);
        let third = a.admit().unwrap();
        drop((second, third));
        assert_eq!((a.in_flight(), a.take_peak()), (0, 2));
        assert_eq!(a.take_peak(), 0);
        a.set_limit(None);
        let many: Vec<_> = (0..1000).map(|_| a.admit().unwrap()).collect();
        assert_eq!((a.in_flight(), a.limit()), (1000, None));
        drop(many);
    }

    #[test]
    fn a_fractional_limit_admits_its_last_request_by_chance() {
        let a = Arc::new(Admission::new(Some(1.5)));
        let mut second = 0;
        for _ in 0..2000 {
            let first = a.admit().unwrap();
            second += usize::from(a.admit().is_some());
            drop(first);
        }
        assert!((800..1200).contains(&second), "{second} of 2000");
        assert!(admits(1, 2.0, 0.99) && !admits(2, 2.0, 0.0));
        assert!(admits(2, 2.5, 0.49) && !admits(2, 2.5, 0.5) && !admits(3, 2.5, 0.0));
    }

    #[test]
    fn latencies_of_an_earlier_generation_do_not_count() {
        let a = Arc::new(Admission::new(None));
        let before = a.admit().unwrap();
        a.new_generation();
        let after = a.admit().unwrap();
        for _ in 0..10 {
            before.answered(Duration::from_millis(100));
            after.answered(Duration::from_millis(2));
        }
        let l = a.take_latencies().unwrap();
        assert_eq!(l.count, 10);
        assert!(l.p99 < 0.0025, "{l:?}");
        assert_eq!(a.take_latencies(), None);
    }
}
