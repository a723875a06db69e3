//! The automatic move from Audit to Enforce, as pure decisions: when a policy is safe to
//! enforce, and when enforcing it must step back.
//!
//! - Auditing: after a whole `interval` in which the covered proxies report no request
//!   the policy would refuse, and at least `minRequests` requests (or
//!   `advanceWithoutTraffic`), and this replica heard reports for all of that interval,
//!   the policy is enforced.
//!   Every covered proxy must hold the config in force, so none is still counting for
//!   an older one.
//! - Enforcing: for one `interval` after every covered proxy holds Enforce, the operator
//!   watches for refusals of traffic the proxies let through while the policy audited:
//!   the same caller asking the same method and path (each proxy remembers them, so a
//!   caller the policy was written to stop, refused before and after, does not count,
//!   and no caller can force a step back by asking for something new). One is enough to
//!   step back to Audit: something that worked is refused. After three step-backs the
//!   rollout holds in Audit until its spec changes.

use std::time::{Duration, Instant};

use braid_crds::access_policy::AccessRollout;

use super::book::{Evidence, Refused};

/// Where a rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Counting; nothing refused.
    Auditing,
    /// Refusing.
    Enforcing,
}

/// Step-backs after which a rollout holds in Audit until its spec changes.
pub const MAX_STEP_BACKS: u32 = 3;

/// What the operator measured for one policy.
#[derive(Debug, Default)]
pub struct Measured<'a> {
    /// Covered proxies that do not hold the config in force.
    pub proxies_behind: usize,
    /// Step-backs of this rollout so far.
    pub step_backs: u32,
    /// The reports of the last interval.
    pub last_interval: Evidence,
    /// Whether this replica heard reports for all of it.
    pub observed_full_interval: bool,
    /// The reports since the current stage began (for the watch after enforcing).
    pub since_stage: Option<&'a Evidence>,
}

/// What a tick decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// A clean interval passed: enforce.
    Enforce {
        /// Requests decided in it.
        requests: u64,
    },
    /// A caller let through while auditing was refused: back to Audit.
    StepBack {
        /// Who.
        caller: Refused,
    },
}

/// Why an auditing policy is not enforced yet, for status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Its interval has not passed since auditing began.
    Interval,
    /// This replica has not heard reports for a whole interval yet.
    Listening,
    /// Requests in the last interval would have been refused.
    WouldDeny(u64),
    /// Too few requests to go by.
    TooFewRequests(u64),
    /// Covered proxies that do not hold the config in force yet.
    ProxiesBehind(usize),
    /// It stepped back [`MAX_STEP_BACKS`] times: it waits for its spec to change.
    Halted,
}

/// The next step of a rollout at `stage` since `since`.
pub fn step(
    stage: Stage,
    since: Instant,
    rollout: &AccessRollout,
    interval: Duration,
    m: &Measured<'_>,
    now: Instant,
) -> Result<Option<Transition>, Wait> {
    let elapsed = now.saturating_duration_since(since);
    match stage {
        Stage::Auditing => {
            if m.step_backs >= MAX_STEP_BACKS {
                return Err(Wait::Halted);
            }
            if elapsed < interval {
                return Err(Wait::Interval);
            }
            if m.proxies_behind > 0 {
                return Err(Wait::ProxiesBehind(m.proxies_behind));
            }
            if !m.observed_full_interval {
                return Err(Wait::Listening);
            }
            let e = &m.last_interval;
            if e.would_deny > 0 {
                return Err(Wait::WouldDeny(e.would_deny));
            }
            if e.requests() < rollout.min_requests && !rollout.advance_without_traffic {
                return Err(Wait::TooFewRequests(e.requests()));
            }
            Ok(Some(Transition::Enforce {
                requests: e.requests(),
            }))
        }
        Stage::Enforcing if elapsed <= interval => Ok(m
            .since_stage
            .and_then(Evidence::refused_after_allowed)
            .map(|caller| Transition::StepBack { caller })),
        Stage::Enforcing => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollout(min: u64, without_traffic: bool) -> AccessRollout {
        serde_json::from_value(serde_json::json!({
            "interval": "1m", "minRequests": min, "advanceWithoutTraffic": without_traffic
        }))
        .unwrap()
    }

    const MINUTE: Duration = Duration::from_secs(60);

    fn evidence(allowed: u64, would_deny: u64) -> Evidence {
        Evidence {
            allowed,
            would_deny,
            ..Evidence::default()
        }
    }

    #[test]
    fn a_clean_full_interval_with_enough_requests_enforces() {
        let t0 = Instant::now();
        let r = rollout(20, false);
        let m = |e, full| Measured {
            last_interval: e,
            observed_full_interval: full,
            ..Measured::default()
        };
        let later = t0 + MINUTE;
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &m(evidence(50, 0), true),
                t0 + MINUTE / 2
            ),
            Err(Wait::Interval)
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &m(evidence(50, 0), false),
                later
            ),
            Err(Wait::Listening)
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &m(evidence(50, 3), true),
                later
            ),
            Err(Wait::WouldDeny(3))
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &m(evidence(5, 0), true),
                later
            ),
            Err(Wait::TooFewRequests(5))
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &rollout(20, true),
                MINUTE,
                &m(evidence(0, 0), true),
                later
            ),
            Ok(Some(Transition::Enforce { requests: 0 }))
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &m(evidence(50, 0), true),
                later
            ),
            Ok(Some(Transition::Enforce { requests: 50 }))
        );
    }

    #[test]
    fn proxies_behind_or_three_step_backs_hold_the_rollout() {
        let t0 = Instant::now();
        let r = rollout(20, false);
        let clean = |behind, step_backs| Measured {
            last_interval: evidence(50, 0),
            observed_full_interval: true,
            proxies_behind: behind,
            step_backs,
            since_stage: None,
        };
        let later = t0 + MINUTE;
        assert_eq!(
            step(Stage::Auditing, t0, &r, MINUTE, &clean(2, 0), later),
            Err(Wait::ProxiesBehind(2))
        );
        assert_eq!(
            step(
                Stage::Auditing,
                t0,
                &r,
                MINUTE,
                &clean(0, MAX_STEP_BACKS),
                later
            ),
            Err(Wait::Halted)
        );
        assert!(step(Stage::Auditing, t0, &r, MINUTE, &clean(0, 2), later).is_ok());
    }

    #[test]
    fn refusing_a_caller_let_through_before_steps_back_during_the_watch_only() {
        let t0 = Instant::now();
        let r = rollout(20, false);
        let stray = Refused {
            identity: Some("spiffe://cluster.local/ns/shop/sa/stray".into()),
            ..Refused::default()
        };
        let known = Refused {
            identity: Some("spiffe://cluster.local/ns/shop/sa/batch".into()),
            ..Refused::default()
        };
        let mut since = Evidence::default();
        // The caller the policy was written to stop: refused, never let through.
        since.refused.insert(stray, (0, 10, false));
        let m = Measured {
            since_stage: Some(&since),
            ..Measured::default()
        };
        assert_eq!(
            step(Stage::Enforcing, t0, &r, MINUTE, &m, t0 + MINUTE / 2),
            Ok(None)
        );
        since.refused.insert(known.clone(), (0, 1, true));
        since.denied_allowed_before = 1;
        let m = Measured {
            since_stage: Some(&since),
            ..Measured::default()
        };
        assert_eq!(
            step(Stage::Enforcing, t0, &r, MINUTE, &m, t0 + MINUTE / 2),
            Ok(Some(Transition::StepBack { caller: known }))
        );
        assert_eq!(
            step(Stage::Enforcing, t0, &r, MINUTE, &m, t0 + MINUTE * 2),
            Ok(None),
            "after the watch, refusals are evidence in status, not a step back"
        );
    }
}
