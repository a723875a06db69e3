//! Outlier detection: which endpoints a caller stops sending to, and for how long.
//! Pure: every decision takes the time as an argument, so it is tested without clocks.
//!
//! An endpoint is ejected after `consecutiveErrors` failures in a row, when its failure
//! rate over a window passes `errorRate.threshold`, or when its rate is several times
//! the rest of its group's (a bad pod among good ones). Each repeat doubles the ejection
//! time up to the maximum; never more than `maxEjectionPercent` of a group is ejected.

use std::time::{Duration, Instant};

use crate::config::InvalidField;
use crate::config::outlier::OutlierDetection;

/// A rate this many times the rest of the group's is an outlier...
const RELATIVE_FACTOR: f64 = 3.0;
/// ...when it is at least this high (a few errors among none are not an outlier)...
const RELATIVE_FLOOR: f64 = 0.2;
/// ...over this window and this many requests, unless `errorRate` sets them.
const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const DEFAULT_MIN_REQUESTS: u32 = 20;

/// Why an endpoint was ejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Too many failures in a row.
    ConsecutiveErrors,
    /// Its failure rate passed the threshold.
    ErrorRate,
    /// Its failure rate was several times the rest of its group's.
    RelativeErrorRate,
}

impl Reason {
    /// The name used in metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsecutiveErrors => "consecutive_errors",
            Self::ErrorRate => "error_rate",
            Self::RelativeErrorRate => "relative_error_rate",
        }
    }
}

/// A service's outlier detection, compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierPolicy {
    consecutive: u32,
    threshold: Option<f64>,
    min_requests: u32,
    window: Duration,
    base: Duration,
    max: Duration,
    max_percent: u32,
}

impl OutlierPolicy {
    /// Compiles `o`; errors name the field under `at`.
    pub fn compile(o: &OutlierDetection, at: &str) -> Result<Self, InvalidField> {
        if o.consecutive_errors == 0 {
            return Err(InvalidField::new(
                format!("{at}.consecutiveErrors"),
                "give at least 1",
            ));
        }
        if o.base_ejection_time_ms == 0 || o.max_ejection_time_ms < o.base_ejection_time_ms {
            return Err(InvalidField::new(
                format!("{at}.maxEjectionTimeMs"),
                "give a baseEjectionTimeMs above 0 and a maxEjectionTimeMs at least as long",
            ));
        }
        if o.max_ejection_percent > 100 {
            return Err(InvalidField::new(
                format!("{at}.maxEjectionPercent"),
                format!(
                    "{} is not a percentage from 0 to 100",
                    o.max_ejection_percent
                ),
            ));
        }
        let (threshold, min_requests, window) = match &o.error_rate {
            Some(r) => {
                if !(r.threshold > 0.0 && r.threshold <= 1.0) || r.window_ms == 0 {
                    return Err(InvalidField::new(
                        format!("{at}.errorRate"),
                        "give a threshold above 0 and at most 1, and a windowMs above 0",
                    ));
                }
                (
                    Some(r.threshold),
                    r.min_requests.max(1),
                    Duration::from_millis(r.window_ms),
                )
            }
            None => (None, DEFAULT_MIN_REQUESTS, DEFAULT_WINDOW),
        };
        Ok(Self {
            consecutive: o.consecutive_errors,
            threshold,
            min_requests,
            window,
            base: Duration::from_millis(o.base_ejection_time_ms),
            max: Duration::from_millis(o.max_ejection_time_ms),
            max_percent: o.max_ejection_percent,
        })
    }

    /// Whether `ejected` of a group of `size` may become `ejected + 1`.
    pub fn may_eject(&self, ejected: usize, size: usize) -> bool {
        (ejected + 1) * 100 <= self.max_percent as usize * size
    }
}

/// Whether an endpoint whose failure rate is `rate` (`None`: too few requests to tell)
/// is an outlier against `others` (the rates of the rest of its group that have enough
/// requests).
pub fn is_relative_outlier(rate: Option<f64>, others: &[f64]) -> bool {
    let Some(rate) = rate else {
        return false;
    };
    if others.is_empty() || rate < RELATIVE_FLOOR {
        return false;
    }
    let mean = others.iter().sum::<f64>() / others.len() as f64;
    rate >= RELATIVE_FACTOR * mean && rate > mean
}

/// One endpoint's record, as one caller sees it.
#[derive(Debug, Default)]
pub struct OutlierState {
    consecutive: u32,
    window_start: Option<Instant>,
    requests: u32,
    failures: u32,
    /// Ejections so far (each doubles the next one's length).
    ejections: u32,
    ejected_until: Option<Instant>,
    /// When the last ejection ended (or ends).
    last_ejection_end: Option<Instant>,
}

/// What recording an outcome found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The endpoint's ejection had ended: it is back.
    pub returned: bool,
    /// It should be ejected, for this reason (if the group allows).
    pub eject: Option<Reason>,
}

impl OutlierState {
    /// Records one request's outcome at `now`.
    pub fn record(&mut self, failed: bool, now: Instant, policy: &OutlierPolicy) -> Recorded {
        let returned = self.expire(now);
        if self
            .window_start
            .is_none_or(|s| now.duration_since(s) >= policy.window)
        {
            self.window_start = Some(now);
            self.requests = 0;
            self.failures = 0;
        }
        self.requests += 1;
        self.consecutive = if failed { self.consecutive + 1 } else { 0 };
        self.failures += u32::from(failed);
        let eject = if self.is_ejected(now) || !failed {
            None
        } else if self.consecutive >= policy.consecutive {
            Some(Reason::ConsecutiveErrors)
        } else if policy
            .threshold
            .zip(self.rate(policy))
            .is_some_and(|(threshold, rate)| rate >= threshold)
        {
            Some(Reason::ErrorRate)
        } else {
            None
        };
        Recorded { returned, eject }
    }

    /// The failure rate over the current window, once it holds enough requests.
    pub fn rate(&self, policy: &OutlierPolicy) -> Option<f64> {
        (self.requests >= policy.min_requests)
            .then(|| f64::from(self.failures) / f64::from(self.requests))
    }

    /// Ejects the endpoint at `now`; returns for how long.
    pub fn eject(&mut self, now: Instant, policy: &OutlierPolicy) -> Duration {
        // Healthy for a whole maximum ejection time since the last one ended: start over
        // from the base time, as if never ejected.
        if self
            .last_ejection_end
            .is_some_and(|end| now.saturating_duration_since(end) >= policy.max)
        {
            self.ejections = 0;
        }
        self.ejections += 1;
        let doubled = policy
            .base
            .saturating_mul(1u32 << (self.ejections - 1).min(20));
        let length = doubled.min(policy.max);
        self.ejected_until = Some(now + length);
        self.last_ejection_end = self.ejected_until;
        self.consecutive = 0;
        self.window_start = None;
        length
    }

    /// The record as a successor proxy takes it over, at `now`.
    pub fn carried(&self, now: Instant) -> super::carry::CarriedOutlier {
        super::carry::CarriedOutlier::taken(
            self.ejections,
            self.ejected_until,
            self.last_ejection_end,
            now,
        )
    }

    /// The record a predecessor proxy handed over, at `now`; the error window starts
    /// afresh.
    pub fn resumed(carried: &super::carry::CarriedOutlier, now: Instant) -> Self {
        let (ejected_until, last_ejection_end) = carried.at(now);
        Self {
            ejections: carried.ejections,
            ejected_until,
            last_ejection_end,
            ..Self::default()
        }
    }

    /// Whether the endpoint is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Ends an ejection that has run out; `true` if one did.
    pub fn expire(&mut self, now: Instant) -> bool {
        match self.ejected_until {
            Some(until) if now >= until => {
                self.ejected_until = None;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::outlier::ErrorRate;

    fn policy(error_rate: Option<ErrorRate>) -> OutlierPolicy {
        OutlierPolicy::compile(
            &OutlierDetection {
                consecutive_errors: 5,
                error_rate,
                base_ejection_time_ms: 30_000,
                max_ejection_time_ms: 100_000,
                max_ejection_percent: 50,
            },
            "services[0].outlierDetection",
        )
        .unwrap()
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let p = policy(None);
        let mut s = OutlierState::default();
        let t = Instant::now();
        for _ in 0..4 {
            assert_eq!(s.record(true, t, &p).eject, None);
        }
        assert_eq!(s.record(false, t, &p).eject, None);
        for _ in 0..4 {
            assert_eq!(s.record(true, t, &p).eject, None);
        }
        assert_eq!(s.record(true, t, &p).eject, Some(Reason::ConsecutiveErrors));
    }

    #[test]
    fn ejections_double_up_to_the_maximum_and_end_with_a_return() {
        let p = policy(None);
        let mut s = OutlierState::default();
        let t = Instant::now();
        let secs = |d: Duration| d.as_secs();
        assert_eq!(secs(s.eject(t, &p)), 30);
        assert!(s.is_ejected(t + Duration::from_secs(29)));
        assert!(!s.is_ejected(t + Duration::from_secs(30)));
        let back = s.record(false, t + Duration::from_secs(31), &p);
        assert!(back.returned);
        assert_eq!(secs(s.eject(t, &p)), 60);
        assert_eq!(secs(s.eject(t, &p)), 100);
        assert_eq!(secs(s.eject(t, &p)), 100);
        // Healthy for the maximum ejection time after the last one ends: base again.
        let much_later = t + Duration::from_secs(100 + 100);
        assert_eq!(secs(s.eject(much_later, &p)), 30);
    }

    #[test]
    fn the_error_rate_needs_enough_requests_in_the_window() {
        let p = policy(Some(ErrorRate {
            threshold: 0.5,
            min_requests: 10,
            window_ms: 10_000,
        }));
        let mut s = OutlierState::default();
        let t = Instant::now();
        // Every other request fails: never 5 in a row, but half of them.
        let mut ejected = None;
        for i in 0..10 {
            let r = s.record(i % 2 == 1, t, &p);
            ejected = ejected.or(r.eject.map(|e| (i, e)));
        }
        assert_eq!(ejected, Some((9, Reason::ErrorRate)));
        // A new window starts counting afresh.
        let later = t + Duration::from_secs(11);
        assert_eq!(s.record(true, later, &p).eject, None);
        assert_eq!(s.rate(&p), None);
    }

    #[test]
    fn a_rate_several_times_the_groups_is_an_outlier() {
        let p = policy(None);
        let mut s = OutlierState::default();
        let t = Instant::now();
        for i in 0..20 {
            s.record(i % 3 == 0, t, &p);
        }
        // 7 of 20 failed (35%): an outlier among endpoints at 5%, not among ones at 20%.
        assert!(is_relative_outlier(s.rate(&p), &[0.05, 0.0]));
        assert!(!is_relative_outlier(s.rate(&p), &[0.2, 0.2]));
        assert!(!is_relative_outlier(s.rate(&p), &[]));
        assert!(!is_relative_outlier(None, &[0.0]));
    }

    #[test]
    fn at_most_the_percentage_of_a_group() {
        let p = policy(None);
        assert!(p.may_eject(0, 3));
        // A second of three would be 67% > 50%.
        assert!(!p.may_eject(1, 3));
        assert!(p.may_eject(1, 4));
        assert!(!p.may_eject(0, 1));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let bad = OutlierPolicy::compile(
            &OutlierDetection {
                consecutive_errors: 0,
                error_rate: None,
                base_ejection_time_ms: 1,
                max_ejection_time_ms: 1,
                max_ejection_percent: 10,
            },
            "services[2].outlierDetection",
        )
        .unwrap_err()
        .to_string();
        assert!(
            bad.starts_with("services[2].outlierDetection.consecutiveErrors"),
            "{bad}"
        );
    }
}
