//! Admission at a rate the controller sets: a token bucket holding a tenth of a second's
//! worth, so bursts pass but a sustained excess is shed. It also counts what came, what
//! was admitted and what is in flight, for the controller's next sample.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bucket holds this much of the rate.
const BURST: Duration = Duration::from_millis(100);

/// Admits requests at a rate.
#[derive(Debug)]
pub struct Admission {
    /// (rate per second, tokens, when counted).
    bucket: Mutex<(f64, f64, Instant)>,
    offered: AtomicU64,
    served: AtomicU64,
    in_flight: AtomicU64,
}

/// An admitted request, counted in flight until dropped.
#[derive(Debug)]
pub struct Admitted(Arc<Admission>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.served.fetch_add(1, Ordering::Relaxed);
    }
}

impl Admission {
    /// Admits `rate` requests a second.
    pub fn new(rate: f64) -> Self {
        Self {
            bucket: Mutex::new((rate, capacity(rate), Instant::now())),
            offered: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    /// Admits a request at `now`, or `None`: shed it.
    pub fn admit(self: &Arc<Self>, now: Instant) -> Option<Admitted> {
        self.offered.fetch_add(1, Ordering::Relaxed);
        let mut b = self.bucket.lock().ok()?;
        let (rate, tokens, then) = *b;
        let tokens =
            (tokens + now.saturating_duration_since(then).as_secs_f64() * rate).min(capacity(rate));
        // A hair under one token is one: refills add up in floating point.
        if tokens >= 1.0 - 1e-9 {
            *b = (rate, (tokens - 1.0).max(0.0), now);
            drop(b);
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            Some(Admitted(self.clone()))
        } else {
            *b = (rate, tokens, now);
            None
        }
    }

    /// Sets the rate.
    pub fn set_rate(&self, rate: f64) {
        if let Ok(mut b) = self.bucket.lock() {
            b.0 = rate;
            b.1 = b.1.min(capacity(rate));
        }
    }

    /// Requests offered since the last call (admitted or not).
    pub fn take_offered(&self) -> u64 {
        self.offered.swap(0, Ordering::Relaxed)
    }

    /// Admitted requests finished since the last call.
    pub fn take_served(&self) -> u64 {
        self.served.swap(0, Ordering::Relaxed)
    }

    /// Admitted requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

fn capacity(rate: f64) -> f64 {
    (rate * BURST.as_secs_f64()).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_at_the_rate_and_counts() {
        let a = Arc::new(Admission::new(100.0));
        let t = Instant::now();
        // A tenth of a second's burst, then one per 10 ms.
        let burst: Vec<_> = (0..50).filter_map(|_| a.admit(t)).collect();
        assert_eq!(burst.len(), 10);
        assert_eq!(a.in_flight(), 10);
        drop(burst);
        assert_eq!(a.in_flight(), 0);
        let later = (1..=100)
            .filter(|i| a.admit(t + Duration::from_millis(*i)).is_some())
            .count();
        assert_eq!(later, 10);
        assert_eq!(a.take_offered(), 150);
        a.set_rate(1000.0);
        assert!(a.admit(t + Duration::from_millis(200)).is_some());
    }
}
