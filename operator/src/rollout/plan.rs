//! An automatic mTLS rollout as a pure state machine: from where it stands, what callers
//! did during the current step and the clock, the next position and what changed.
//!
//! The rollout starts at the policy's `rollout.percent`, measuring callers' failure rate
//! as the baseline, and moves up one step every `interval` once the step has seen
//! `minRequestsPerStep` of callers' requests (or at once with `advanceWithoutTraffic`).
//! Whenever callers' failure rate during a step rises above the baseline by more than
//! `maxErrorRateIncrease`, it steps back at once; after three step-backs it holds until
//! the policy changes. At 100 % with `enforceStrict`, it switches to Strict once it is
//! [`Safety::Safe`]: heard from proxies for a whole interval, mTLS and no plaintext
//! reaching the workloads in it, and every caller holding the config in force.

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
    /// mTLS requests that reached the workloads in the last `interval`.
    pub mtls_last_interval: u64,
    /// Whether the operator has heard from proxies for a whole interval (a fresh
    /// operator knows nothing of the plaintext before it started).
    pub observed_full_interval: bool,
    /// Callers that do not (or not yet) hold the config in force, so may still call in
    /// plaintext at an older percent: unknown, not safe.
    pub callers_behind: usize,
}

/// Whether Strict would refuse nothing, as far as the operator can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safety {
    /// The operator has not heard from proxies for a whole window yet.
    NotObserved,
    /// Plaintext requests reached the workloads in the window.
    PlaintextSeen(u64),
    /// Callers that have not applied the config in force.
    CallersBehind(usize),
    /// Nothing reached the workloads in the window: no evidence either way.
    NoTraffic,
    /// mTLS and only mTLS reached the workloads, and every caller is current.
    Safe,
}

impl Measured {
    /// What these measurements say about enforcing Strict.
    pub fn safety(&self) -> Safety {
        if !self.observed_full_interval {
            Safety::NotObserved
        } else if self.plaintext_last_interval > 0 {
            Safety::PlaintextSeen(self.plaintext_last_interval)
        } else if self.callers_behind > 0 {
            Safety::CallersBehind(self.callers_behind)
        } else if self.mtls_last_interval == 0 {
            Safety::NoTraffic
        } else {
            Safety::Safe
        }
    }
}

/// Why a rollout that is due to move does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The step has seen fewer of callers' requests than it needs.
    TooFewRequests {
        /// Seen during the step.
        seen: u64,
        /// Needed.
        needed: u64,
    },
    /// At 100 %, Strict waits until it is safe.
    NotSafe(Safety),
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
    if elapsed < interval || hold(pos, levels, auto, interval, measured, now).is_some() {
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
    if auto.enforce_strict && levels[level] == 100 {
        pos.strict = true;
        return Some(Transition::StrictEnforced);
    }
    None
}

/// Why a rollout whose step is over does not move on (`None`: it moves, or has nowhere to
/// go). A step up needs `minRequestsPerStep` of callers' requests during the step; Strict
/// needs [`Safety::Safe`]. `advanceWithoutTraffic` lets silence pass, never plaintext or
/// callers behind.
pub fn hold(
    pos: &Position,
    levels: &[u8],
    auto: &AutoRollout,
    interval: Duration,
    measured: &Measured,
    now: Instant,
) -> Option<Hold> {
    if pos.settled() || levels.is_empty() || now.duration_since(pos.since) < interval {
        return None;
    }
    let level = pos.level.min(levels.len() - 1);
    if level + 1 < levels.len() {
        let needed = auto.min_requests_per_step;
        return (!auto.advance_without_traffic && measured.requests < needed).then_some(
            Hold::TooFewRequests {
                seen: measured.requests,
                needed,
            },
        );
    }
    if !auto.enforce_strict || levels[level] != 100 {
        return None;
    }
    match measured.safety() {
        Safety::Safe => None,
        Safety::NoTraffic if auto.advance_without_traffic => None,
        other => Some(Hold::NotSafe(other)),
    }
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
            min_requests_per_step: 20,
            advance_without_traffic: false,
        }
    }

    const I: Duration = Duration::from_secs(10);

    fn ok(requests: u64) -> Measured {
        Measured {
            requests,
            failures: 0,
            plaintext_last_interval: 5,
            mtls_last_interval: requests,
            observed_full_interval: true,
            callers_behind: 0,
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
        // Nor do they move the rollout on: the step waits for evidence.
        assert_eq!(step(&mut pos, &levels, &a, I, &few, t0 + I * 4), None);
        assert_eq!(
            hold(&pos, &levels, &a, I, &few, t0 + I * 4),
            Some(Hold::TooFewRequests {
                seen: 5,
                needed: 20
            })
        );
        assert_eq!(
            step(&mut pos, &levels, &a, I, &ok(20), t0 + I * 4),
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
    fn silence_moves_nothing_unless_the_policy_opts_in() {
        let a = auto(true);
        let levels = levels(0, &a);
        let t0 = Instant::now();
        let silent = Measured {
            observed_full_interval: true,
            ..Measured::default()
        };
        let mut pos = Position::start(t0);
        for i in 1..=5 {
            assert_eq!(step(&mut pos, &levels, &a, I, &silent, t0 + I * i), None);
        }
        assert_eq!(pos.level, 0);
        let opted_in = AutoRollout {
            advance_without_traffic: true,
            ..auto(true)
        };
        let mut seen = Vec::new();
        for i in 1..=5 {
            seen.extend(step(&mut pos, &levels, &opted_in, I, &silent, t0 + I * i));
        }
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert_eq!(seen[4], Transition::StrictEnforced);
    }

    #[test]
    fn strict_waits_for_mtls_traffic_without_plaintext_and_for_every_caller() {
        let a = auto(true);
        let levels = levels(0, &a);
        let t0 = Instant::now();
        let at_100 = || Position {
            level: 4,
            ..Position::start(t0)
        };
        let clean = Measured {
            plaintext_last_interval: 0,
            ..ok(100)
        };
        for (measured, why) in [
            (
                Measured {
                    observed_full_interval: false,
                    ..clean
                },
                Safety::NotObserved,
            ),
            (ok(100), Safety::PlaintextSeen(5)),
            (
                Measured {
                    callers_behind: 2,
                    ..clean
                },
                Safety::CallersBehind(2),
            ),
            (
                Measured {
                    mtls_last_interval: 0,
                    ..clean
                },
                Safety::NoTraffic,
            ),
        ] {
            let mut pos = at_100();
            assert_eq!(step(&mut pos, &levels, &a, I, &measured, t0 + I), None);
            assert_eq!(
                hold(&pos, &levels, &a, I, &measured, t0 + I),
                Some(Hold::NotSafe(why))
            );
            assert!(!pos.strict);
        }
        // Opting in to silence passes no traffic, never plaintext or callers behind.
        let opted_in = AutoRollout {
            advance_without_traffic: true,
            ..auto(true)
        };
        let mut pos = at_100();
        let quiet = Measured {
            mtls_last_interval: 0,
            ..clean
        };
        assert_eq!(
            step(&mut pos, &levels, &opted_in, I, &quiet, t0 + I),
            Some(Transition::StrictEnforced)
        );
        let mut pos = at_100();
        let behind = Measured {
            callers_behind: 1,
            ..quiet
        };
        assert_eq!(step(&mut pos, &levels, &opted_in, I, &behind, t0 + I), None);
        let mut pos = at_100();
        assert_eq!(
            step(&mut pos, &levels, &a, I, &clean, t0 + I),
            Some(Transition::StrictEnforced)
        );
    }

    #[test]
    fn the_start_percent_skips_lower_steps() {
        assert_eq!(levels(25, &auto(false)), [25, 50, 100]);
    }
}
