//! Slow start: an endpoint that comes back from an ejection, or joins a group while the
//! proxy runs (a new or restarted pod), has a weight that grows from 0.1 to 1 over
//! [`WINDOW`], as with Envoy's slow start. Power of two choices keeps a warming
//! endpoint it picked only with its weight relative to the other candidate's, so its
//! share starts at a tenth to a fifth of its fair share (a fifth when it also looks the
//! cheaper of every pair it is drawn in, as a fresh latency estimate does) and grows
//! with the weight.
//!
//! Without it, power of two choices sends such an endpoint most requests at once: its
//! latency estimate is the optimistic default, or has decayed while it was out, so it
//! looks cheaper than every endpoint that is working. A pod just restarted (a cold cache,
//! a JIT) or just healed would take the brunt of the traffic before it shows how it does.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long an endpoint takes to reach its full share.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The share of its fair share an endpoint starts from.
const FLOOR: f64 = 0.1;

/// Whether, and since when, an endpoint is warming up: one atomic, read on every pick.
#[derive(Debug, Default)]
pub struct Warmup {
    /// When it started warming up, in nanoseconds after [`epoch`], plus one; 0: warm.
    since: AtomicU64,
}

/// The instant warm-up times count from: an hour before the first use, so that times a
/// little before it (tests) still count.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(|| {
        let now = Instant::now();
        now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)
    })
}

impl Warmup {
    /// The endpoint starts warming up at `now` (again, if it was).
    pub fn start(&self, now: Instant) {
        let nanos = now.saturating_duration_since(epoch()).as_nanos();
        let stamp = u64::try_from(nanos).unwrap_or(u64::MAX - 1) + 1;
        self.since.store(stamp, Ordering::Relaxed);
    }

    /// The weight of the endpoint at `now`: from 0.1 when it starts warming up, rising
    /// linearly to 1 at the end of the window.
    pub fn weight(&self, now: Instant) -> f64 {
        let stamp = self.since.load(Ordering::Relaxed);
        if stamp == 0 {
            return 1.0;
        }
        let started = epoch() + Duration::from_nanos(stamp - 1);
        let elapsed = now.saturating_duration_since(started);
        if elapsed >= WINDOW {
            // Warm now; a start since this load is kept.
            let _ = self
                .since
                .compare_exchange(stamp, 0, Ordering::Relaxed, Ordering::Relaxed);
            return 1.0;
        }
        FLOOR + (1.0 - FLOOR) * elapsed.as_secs_f64() / WINDOW.as_secs_f64()
    }
}

/// Whether to keep `chosen` (of weight `chosen`) over the other candidate (of weight
/// `other`), given `roll`, uniform in [0, 1) and asked for only when needed: a warming
/// endpoint gives its pick to a warmer one in proportion to how far behind it is. Equal
/// weights (both warm, or two endpoints of a new service warming together) always keep
/// the choice.
pub fn keeps(chosen: f64, other: f64, roll: impl FnOnce() -> f64) -> bool {
    chosen >= other || roll() < chosen / other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_weight_rises_from_a_tenth_to_one_over_the_window() {
        let w = Warmup::default();
        let now = Instant::now();
        assert_eq!(w.weight(now), 1.0, "a warm endpoint");
        w.start(now);
        assert!((w.weight(now) - 0.1).abs() < 1e-9);
        assert!((w.weight(now + WINDOW / 2) - 0.55).abs() < 1e-9);
        assert_eq!(w.weight(now + WINDOW), 1.0);
        // Warm now, and it stays so.
        assert_eq!(w.weight(now), 1.0);
    }

    #[test]
    fn a_warming_choice_gives_way_in_proportion() {
        let never = || -> f64 { panic!("no roll needed") };
        assert!(keeps(1.0, 1.0, never));
        assert!(keeps(0.3, 0.3, never), "equal weights keep the choice");
        assert!(keeps(1.0, 0.1, never), "a warm endpoint keeps it");
        assert!(keeps(0.1, 1.0, || 0.05));
        assert!(!keeps(0.1, 1.0, || 0.2));
    }
}
