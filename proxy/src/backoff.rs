//! Reconnect delays: exponential backoff with full jitter.
//!
//! Full jitter (a uniform draw between zero and the current ceiling) spreads the
//! reconnects of thousands of proxies after an operator restart instead of having them
//! arrive in waves.

use std::time::Duration;

/// The delay before each reconnect attempt. The ceiling starts at `base`, doubles after
/// every attempt up to `cap`, and returns to `base` on [`Backoff::reset`].
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    ceiling: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// The operator stream's default: 100 ms doubling up to 15 s.
    pub const DEFAULT_BASE: Duration = Duration::from_millis(100);
    /// See [`Backoff::DEFAULT_BASE`].
    pub const DEFAULT_CAP: Duration = Duration::from_secs(15);

    /// Starts at `base` and never exceeds `cap` (a `cap` below `base` is raised to it).
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self::with_rng(base, cap, fastrand::Rng::new())
    }

    /// Like [`Backoff::new`] with a given random source (tests seed it).
    pub fn with_rng(base: Duration, cap: Duration, rng: fastrand::Rng) -> Self {
        Self {
            base,
            cap: cap.max(base),
            ceiling: base,
            rng,
        }
    }

    /// The current ceiling: the next delay is drawn from `0..=ceiling()`.
    pub fn ceiling(&self) -> Duration {
        self.ceiling
    }

    /// The next delay, drawn uniformly from zero to the current ceiling; then the ceiling
    /// doubles (up to the cap).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = u64::try_from(self.ceiling.as_micros()).unwrap_or(u64::MAX);
        let delay = Duration::from_micros(self.rng.u64(0..=ceiling));
        self.ceiling = self.ceiling.saturating_mul(2).min(self.cap);
        delay
    }

    /// Back to the base ceiling, after a connection that worked.
    pub fn reset(&mut self) {
        self.ceiling = self.base;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Self::DEFAULT_BASE, Self::DEFAULT_CAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff::with_rng(
            Duration::from_millis(100),
            Duration::from_secs(15),
            fastrand::Rng::with_seed(7),
        )
    }

    #[test]
    fn delays_stay_within_the_doubling_ceiling() {
        let mut b = backoff();
        let mut ceiling = Duration::from_millis(100);
        for _ in 0..20 {
            assert_eq!(b.ceiling(), ceiling);
            let d = b.next_delay();
            assert!(d <= ceiling, "{d:?} > {ceiling:?}");
            ceiling = (ceiling * 2).min(Duration::from_secs(15));
        }
    }

    #[test]
    fn the_ceiling_stops_at_the_cap() {
        let mut b = backoff();
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(15));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(15));
        // 100 ms · 2^8 = 25.6 s: the cap is reached after eight attempts.
        let mut b = backoff();
        for _ in 0..8 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_secs(15));
    }

    #[test]
    fn delays_are_jittered_across_the_whole_range() {
        let mut b = Backoff::with_rng(
            Duration::from_secs(10),
            Duration::from_secs(10),
            fastrand::Rng::with_seed(1),
        );
        let delays: Vec<Duration> = (0..200).map(|_| b.next_delay()).collect();
        assert!(delays.iter().any(|d| *d < Duration::from_secs(2)));
        assert!(delays.iter().any(|d| *d > Duration::from_secs(8)));
    }

    #[test]
    fn reset_returns_to_the_base() {
        let mut b = backoff();
        for _ in 0..5 {
            b.next_delay();
        }
        assert_eq!(b.ceiling(), Duration::from_millis(3200));
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn a_cap_below_the_base_is_the_base() {
        let mut b = Backoff::with_rng(
            Duration::from_secs(1),
            Duration::from_millis(10),
            fastrand::Rng::with_seed(3),
        );
        b.next_delay();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }
}
