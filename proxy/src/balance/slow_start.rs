//! Slow start: an endpoint that comes back from an ejection, or joins a group while the
//! proxy runs (a new or restarted pod), gets a share of requests that grows from a tenth
//! of its fair share to all of it over [`WINDOW`], as Envoy's slow start does.
//!
//! Without it, power of two choices sends such an endpoint most requests at once: its
//! latency estimate is the optimistic default, or has decayed while it was out, so it
//! looks cheaper than every endpoint that is working. A pod just restarted (a cold cache,
//! a JIT) or just healed would take the brunt of the traffic before it shows how it does.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How long an endpoint takes to reach its full share.
pub const WINDOW: Duration = Duration::from_secs(10);
/// The share of its fair share an endpoint starts from.
const FLOOR: f64 = 0.1;

/// Whether, and since when, an endpoint is warming up.
#[derive(Debug, Default)]
pub struct Warmup {
    /// Set while warming, so that a warm endpoint costs one atomic load.
    warming: AtomicBool,
    since: Mutex<Option<Instant>>,
}

impl Warmup {
    /// The endpoint starts warming up at `now` (again, if it was).
    pub fn start(&self, now: Instant) {
        if let Ok(mut since) = self.since.lock() {
            *since = Some(now);
            self.warming.store(true, Ordering::Relaxed);
        }
    }

    /// The share of its fair share the endpoint takes at `now`: from 0.1 when it starts
    /// warming up, rising linearly to 1 at the end of the window.
    pub fn weight(&self, now: Instant) -> f64 {
        if !self.warming.load(Ordering::Relaxed) {
            return 1.0;
        }
        let Ok(mut since) = self.since.lock() else {
            return 1.0;
        };
        let Some(started) = *since else {
            return 1.0;
        };
        let elapsed = now.saturating_duration_since(started);
        if elapsed >= WINDOW {
            *since = None;
            self.warming.store(false, Ordering::Relaxed);
            return 1.0;
        }
        FLOOR + (1.0 - FLOOR) * elapsed.as_secs_f64() / WINDOW.as_secs_f64()
    }
}

/// Whether to keep `chosen` (of weight `chosen`) over the other candidate (of weight
/// `other`), given `roll`, uniform in [0, 1): a warming endpoint gives its pick to a
/// warmer one in proportion to how far behind it is. Equal weights (both warm, or two
/// endpoints of a new service warming together) always keep the choice.
pub fn keeps(chosen: f64, other: f64, roll: f64) -> bool {
    chosen >= other || roll < chosen / other
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
        assert!(keeps(1.0, 1.0, 0.99));
        assert!(keeps(0.3, 0.3, 0.99), "equal weights keep the choice");
        assert!(keeps(1.0, 0.1, 0.99), "a warm endpoint keeps it");
        assert!(keeps(0.1, 1.0, 0.05));
        assert!(!keeps(0.1, 1.0, 0.2));
    }
}
