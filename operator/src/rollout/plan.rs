//! An automatic mTLS rollout as a pure state machine: from where it stands, what callers
//! did during the current step and the clock, the next position and what changed.
//!
//! The rollout starts at the policy's `rollout.percent`, measuring callers' failure rate
//! as the baseline, and moves up one step every `interval`. Whenever callers' failure
//! rate during a step rises above the baseline by more than `maxErrorRateIncrease`, it
//! steps back at once; after three step-backs it holds until the policy changes. At 100 %
//! with `enforceStrict`, it switches to Strict once a whole interval passed without
//! plaintext reaching the workloads.

use std::time::{Duration, Instant};

use braid_crds::encryption_policy::AutoRollout;

/// Step-backs before the rollout holds where it is.
pub const MAX_STEP_BACKS: u32 = 3;
/// A step's failure rate is judged only over at least this many requests.
pub const MIN_REQUESTS: u64 = 20;

/// The percentages a rollout passes through: where it starts, then the steps above it.
pub fn levels(initial: u8, auto: &AutoRollout) -> Vec<u8> {
    let mut levels = vec![initial];
    levels.extend(
        auto.steps
            .iter()
            .map(|s| (*s).min(100) as u8)
            .filter(|s| *s > initial),
    );
    levels
}

/// Where one rollout stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Position {
    /// Index into [`levels`].
    pub level: usize,
    /// When the current level began.
    pub since: Instant,
    /// Callers' failure rate before the current level (`None`: not measured).
    pub baseline: Option<f64>,
    /// Step-backs so far.
    pub step_backs: u32,
    /// Strict is enforced.
    pub strict: bool,
}

impl Position {
    /// The start of a rollout.
    pub fn start(now: Instant) -> Self {
        Self {
            level: 0,
            since: now,
            baseline: None,
            step_backs: 0,
            strict: false,
        }
    }

    /// Whether it has stopped moving: Strict, or too many step-backs.
    pub fn settled(&self) -> bool {
        self.strict || self.step_backs >= MAX_STEP_BACKS
    }
}

/// What callers and servers did, as the rollout judges it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Measured {
    /// Callers' requests to the policy's workloads since the current level began.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
    /// Plaintext requests that reached the workloads in the last `interval`.
    pub plaintext_last_interval: u64,
    /// Whether the operator has heard from proxies for a whole interval (a fresh
    /// operator knows nothing of the plaintext before it started).
    pub observed_full_interval: bool,
}

impl Measured {
    fn failure_rate(&self) -> Option<f64> {
        (self.requests >= MIN_REQUESTS).then(|| self.failures as f64 / self.requests as f64)
    }
}

/// A change worth an Event.
#[derive(Clone, Debug, PartialEq)]
pub enum Transition {
    /// Moved up a step.
    Advanced {
        /// From this percentage.
        from: u8,
        /// To this one.
        to: u8,
    },
    /// Moved down a step: callers' failures rose.
    SteppedBack {
        /// From this percentage.
        from: u8,
        /// To this one.
        to: u8,
        /// The failure rate during the step.
        rate: f64,
        /// The rate before it.
        baseline: f64,
    },
    /// Holds after too many step-backs.
    Halted {
        /// Where it holds.
        at: u8,
    },
    /// Switched to Strict.
    StrictEnforced,
}

/// Moves `pos` on at `now`, given `measured`; returns what changed.
pub fn step(
    pos: &mut Position,
    levels: &[u8],
    auto: &AutoRollout,
    interval: Duration,
    measured: &Measured,
    now: Instant,
) -> Option<Transition> {
    if pos.settled() || levels.is_empty() {
        return None;
    }
    let level = pos.level.min(levels.len() - 1);
    let rate = measured.failure_rate();
    let elapsed = now.duration_since(pos.since);
    // Judged only against a measured baseline (a service that always fails a little
    // must not step back for it), and not on the first few requests of a step.
    if let (Some(rate), Some(baseline)) = (rate, pos.baseline)
        && level > 0
        && elapsed >= interval / 4
        && rate - baseline > auto.max_error_rate_increase
    {
        pos.level = level - 1;
        pos.since = now;
        pos.step_backs += 1;
        let back = Transition::SteppedBack {
            from: levels[level],
            to: levels[level - 1],
            rate,
            baseline,
        };
        return Some(if pos.step_backs >= MAX_STEP_BACKS {
            Transition::Halted {
                at: levels[level - 1],
            }
        } else {
            back
        });
    }
    if elapsed < interval {
        return None;
    }
    if level + 1 < levels.len() {
        // The finished step's rate is the next one's baseline (when it was measured).
        if rate.is_some() {
            pos.baseline = rate;
        }
        pos.level = level + 1;
        pos.since = now;
        return Some(Transition::Advanced {
            from: levels[level],
            to: levels[level + 1],
        });
    }
    if auto.enforce_strict
        && levels[level] == 100
        && measured.observed_full_interval
        && measured.plaintext_last_interval == 0
    {
        pos.strict = true;
        return Some(Transition::StrictEnforced);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auto(enforce_strict: bool) -> AutoRollout {
        AutoRollout {
            steps: vec![10, 25, 50, 100],
            interval: braid_crds::common::Duration::new("10s"),
            max_error_rate_increase: 0.05,
            enforce_strict,
        }
    }

    const I: Duration = Duration::from_secs(10);

    fn ok(requests: u64) -> Measured {
        Measured {
            requests,
            failures: 0,
            plaintext_last_interval: 5,
            observed_full_interval: true,
        }
    }

    #[test]
    fn advances_one_step_per_interval_then_enforces_strict_without_plaintext() {
        let a = auto(true);
        let levels = levels(0, &a);
        assert_eq!(levels, [0, 10, 25, 50, 100]);
        let t0 = Instant::now();
        let mut pos = Position::start(t0);
        assert_eq!(step(&mut pos, &levels, &a, I, &ok(100), t0 + I / 2), None);
        let mut seen = Vec::new();
        for i in 1..=4 {
            seen.push(step(&mut pos, &levels, &a, I, &ok(100), t0 + I * i).unwrap());
        }
        assert_eq!(
            seen,
            [(0, 10), (10, 25), (25, 50), (50, 100)]
                .map(|(from, to)| Transition::Advanced { from, to })
        );
        // Plaintext still arrives: no Strict.
        assert_eq!(step(&mut pos, &levels, &a, I, &ok(100), t0 + I * 5), None);
        let quiet = Measured {
            plaintext_last_interval: 0,
            ..ok(100)
        };
        assert_eq!(
            step(&mut pos, &levels, &a, I, &quiet, t0 + I * 6),
            Some(Transition::StrictEnforced)
        );
        assert!(pos.strict && pos.settled());
        // Without enforceStrict it stays at 100 %.
        let b = auto(false);
        let mut pos = Position {
            level: 4,
            ..Position::start(t0)
        };
        assert_eq!(step(&mut pos, &levels, &b, I, &quiet, t0 + I), None);
    }

    #[test]
    fn steps_back_at_once_when_callers_fail_more_and_halts_after_three() {
        let a = auto(true);
        let levels = levels(0, &a);
        let t0 = Instant::now();
        let mut pos = Position::start(t0);
        // 1 % failures at the start: that is the baseline.
        let base = Measured {
            failures: 1,
            ..ok(100)
        };
        step(&mut pos, &levels, &a, I, &base, t0 + I);
        step(&mut pos, &levels, &a, I, &base, t0 + I * 2);
        assert_eq!(pos.level, 2);
        assert_eq!(pos.baseline, Some(0.01));
        // 4 % more is within the allowed 5 points...
        let within = Measured {
            failures: 5,
            ..ok(100)
        };
        assert_eq!(
            step(&mut pos, &levels, &a, I, &within, t0 + I * 2 + I / 2),
            None
        );
        // ...10 % is not: back to 10 % at once, before the interval ends.
        let bad = Measured {
            failures: 11,
            ..ok(100)
        };
        let back = step(&mut pos, &levels, &a, I, &bad, t0 + I * 2 + I / 2).unwrap();
        assert!(
            matches!(
                back,
                Transition::SteppedBack {
                    from: 25,
                    to: 10,
                    ..
                }
            ),
            "{back:?}"
        );
        // Too few requests say nothing.
        let few = Measured {
            requests: 5,
            failures: 5,
            ..ok(0)
        };
        assert_eq!(
            step(&mut pos, &levels, &a, I, &few, t0 + I * 3),
            None,
            "mid-interval"
        );
        assert_eq!(
            step(&mut pos, &levels, &a, I, &few, t0 + I * 4),
            Some(Transition::Advanced { from: 10, to: 25 })
        );
        step(&mut pos, &levels, &a, I, &bad, t0 + I * 4 + I / 2);
        assert_eq!(pos.level, 1);
        let halted = step(&mut pos, &levels, &a, I, &bad, t0 + I * 5);
        assert_eq!(halted, Some(Transition::Halted { at: 0 }));
        assert!(pos.settled());
        assert_eq!(step(&mut pos, &levels, &a, I, &ok(100), t0 + I * 10), None);
    }

    #[test]
    fn the_start_percent_skips_lower_steps() {
        assert_eq!(levels(25, &auto(false)), [25, 50, 100]);
    }
}
