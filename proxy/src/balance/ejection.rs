//! Ejection within a group: an endpoint's outlier record, shared by every group and
//! service that has the endpoint, and the group-level decisions — whether the group
//! may lose it (`maxEjectionPercent`), and which endpoints a request may use.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::Endpoint;
use super::outlier::{OutlierPolicy, OutlierState, Reason, is_relative_outlier};
use super::slow_start::Warmup;

/// An endpoint's outlier record.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<OutlierState>,
    /// Set while ejected, so that picking an endpoint costs one atomic load.
    ejected: AtomicBool,
    /// Its slow start, begun when an ejection ends (or when it joins a running group).
    pub warmup: Warmup,
}

/// What one outcome did to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing changed.
    Kept,
    /// Ejected for this long.
    Ejected(Reason, Duration),
    /// It qualified for ejection, but the group already has its share ejected.
    Spared(Reason),
}

impl Health {
    /// Whether the endpoint is ejected at `now`; an ejection that has run out ends here
    /// (`returned` is then `true`).
    pub fn check(&self, now: Instant) -> (bool, bool) {
        if !self.ejected.load(Ordering::Relaxed) {
            return (false, false);
        }
        let Ok(mut state) = self.state.lock() else {
            return (false, false);
        };
        if state.expire(now) {
            self.returned(now);
            return (false, true);
        }
        (state.is_ejected(now), false)
    }

    /// Whether the endpoint is ejected at `now`, as [`Health::check`] says, without
    /// ending an ejection that has run out (the next pick does that): for reading the
    /// state without changing it.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected.load(Ordering::Relaxed)
            && self.state.lock().is_ok_and(|state| state.is_ejected(now))
    }

    /// Its outlier record, as a successor proxy takes it over.
    pub fn carried(&self, now: Instant) -> super::carry::CarriedOutlier {
        self.state
            .lock()
            .map(|state| state.carried(now))
            .unwrap_or_default()
    }

    /// Takes over the record a predecessor proxy handed over.
    pub fn resume(&self, carried: &super::carry::CarriedOutlier, now: Instant) {
        let state = OutlierState::resumed(carried, now);
        let ejected = state.is_ejected(now);
        if let Ok(mut held) = self.state.lock() {
            *held = state;
        }
        self.ejected.store(ejected, Ordering::Relaxed);
    }

    /// Its ejection ended at `now`: it is picked again, warming up from there.
    fn returned(&self, now: Instant) {
        self.ejected.store(false, Ordering::Relaxed);
        self.warmup.start(now);
    }

    fn rate(&self, now: Instant, policy: &OutlierPolicy) -> Option<f64> {
        let state = self.state.lock().ok()?;
        (!state.is_ejected(now))
            .then(|| state.rate(policy))
            .flatten()
    }
}

/// Records the outcome of a request to `endpoint`, one of `group`, and ejects it when
/// `policy` says so and the group can spare it.
pub fn record(
    endpoint: &Endpoint,
    group: &[Endpoint],
    failed: bool,
    now: Instant,
    policy: &OutlierPolicy,
) -> Verdict {
    // Never hold this endpoint's lock while taking another's: two requests judging two
    // endpoints of one group at once would each wait for the other.
    let (recorded, own_rate, ejected_now) = {
        let Ok(mut state) = endpoint.health.state.lock() else {
            return Verdict::Kept;
        };
        let recorded = state.record(failed, now, policy);
        (recorded, state.rate(policy), state.is_ejected(now))
    };
    if recorded.returned {
        endpoint.health.returned(now);
    }
    let reason = recorded.eject.or_else(|| {
        if !failed || ejected_now {
            return None;
        }
        let others: Vec<f64> = group
            .iter()
            .filter(|e| e.addr != endpoint.addr)
            .filter_map(|e| e.health.rate(now, policy))
            .collect();
        is_relative_outlier(own_rate, &others).then_some(Reason::RelativeErrorRate)
    });
    let Some(reason) = reason else {
        return Verdict::Kept;
    };
    let ejected = group
        .iter()
        .filter(|e| e.addr != endpoint.addr && e.health.check(now).0)
        .count();
    if !policy.may_eject(ejected, group.len()) {
        return Verdict::Spared(reason);
    }
    let Ok(mut state) = endpoint.health.state.lock() else {
        return Verdict::Kept;
    };
    // Another request may have ejected it meanwhile.
    if state.is_ejected(now) {
        return Verdict::Kept;
    }
    let length = state.eject(now, policy);
    endpoint.health.ejected.store(true, Ordering::Relaxed);
    Verdict::Ejected(reason, length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::Loads;
    use crate::config::outlier::OutlierDetection;

    fn group(n: u8) -> Vec<Endpoint> {
        let mut loads = Loads::default();
        (1..=n)
            .map(|i| loads.endpoint(format!("10.0.0.{i}:80").parse().unwrap()))
            .collect()
    }

    fn policy(max_percent: u32) -> OutlierPolicy {
        OutlierPolicy::compile(
            &OutlierDetection {
                consecutive_errors: 3,
                error_rate: None,
                base_ejection_time_ms: 1_000,
                max_ejection_time_ms: 10_000,
                max_ejection_percent: max_percent,
            },
            "o",
        )
        .unwrap()
    }

    #[test]
    fn the_group_keeps_its_share_and_ejections_run_out() {
        let g = group(3);
        let p = policy(50);
        let t = Instant::now();
        let fail = |e: &Endpoint| {
            // Three failures in a row; the verdict of the last.
            (0..3).fold(Verdict::Kept, |_, _| record(e, &g, true, t, &p))
        };
        assert_eq!(
            fail(&g[0]),
            Verdict::Ejected(Reason::ConsecutiveErrors, Duration::from_secs(1))
        );
        assert_eq!(g[0].health.check(t), (true, false));
        // A second of three would be more than half.
        assert_eq!(fail(&g[1]), Verdict::Spared(Reason::ConsecutiveErrors));
        assert_eq!(g[1].health.check(t), (false, false));
        // A second later the first is back, warming up from there (slow start).
        let back = t + Duration::from_secs(1);
        assert_eq!(g[0].health.warmup.weight(back), 1.0, "warm until then");
        // Reading it changes nothing: `check` still finds the ejection to end.
        assert!(g[0].health.is_ejected(t));
        assert!(!g[0].health.is_ejected(back));
        assert_eq!(g[0].health.warmup.weight(back), 1.0, "read only");
        assert_eq!(g[0].health.check(back), (false, true));
        assert!(g[0].health.warmup.weight(back) < 0.2);
        assert_eq!(g[1].health.warmup.weight(back), 1.0, "never ejected");
    }

    #[test]
    fn concurrent_judgements_of_one_group_do_not_deadlock() {
        let g = std::sync::Arc::new(group(3));
        // Consecutive errors never eject: every failure takes the group-wide path.
        let p = std::sync::Arc::new(
            OutlierPolicy::compile(
                &OutlierDetection {
                    consecutive_errors: 1_000_000,
                    error_rate: None,
                    base_ejection_time_ms: 1,
                    max_ejection_time_ms: 1,
                    max_ejection_percent: 100,
                },
                "o",
            )
            .unwrap(),
        );
        let (done, finished) = std::sync::mpsc::channel();
        for t in 0..4 {
            let (g, p, done) = (g.clone(), p.clone(), done.clone());
            std::thread::spawn(move || {
                for i in 0..20_000 {
                    record(&g[(t + i) % 3], &g, true, Instant::now(), &p);
                }
                let _ = done.send(());
            });
        }
        for _ in 0..4 {
            finished
                .recv_timeout(Duration::from_secs(60))
                .expect("judging endpoints deadlocked");
        }
    }

    #[test]
    fn an_endpoint_failing_far_more_than_its_group_is_ejected() {
        let g = group(3);
        let p = policy(50);
        let t = Instant::now();
        for i in 0..30 {
            // The others fail now and then; the first one every other request.
            assert_eq!(record(&g[1], &g, i % 15 == 0, t, &p), Verdict::Kept);
            assert_eq!(record(&g[2], &g, false, t, &p), Verdict::Kept);
        }
        let verdicts: Vec<Verdict> = (0..30)
            .map(|i| record(&g[0], &g, i % 2 == 1, t, &p))
            .collect();
        assert!(
            verdicts.contains(&Verdict::Ejected(
                Reason::RelativeErrorRate,
                Duration::from_secs(1)
            )),
            "{verdicts:?}"
        );
    }
}
