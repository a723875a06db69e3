//! What a rule does to each request besides choosing where it goes: a deadline,
//! injected faults and retries, compiled and checked with the config.

use std::time::Duration;

use http::StatusCode;

use super::RetryPolicy;
use crate::config::InvalidField;
use crate::config::routes::Rule;

/// A rule's per-request behaviour. Cheap to copy into each request.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RulePolicy {
    /// The request's deadline.
    pub timeout: Option<Duration>,
    /// Hold `percent` of requests this long before forwarding.
    pub delay: Option<(f64, Duration)>,
    /// Answer `percent` of requests with this status instead of forwarding.
    pub abort: Option<(f64, StatusCode)>,
    /// Retries of failed attempts.
    pub retry: Option<RetryPolicy>,
}

/// Whether a request falls in `percent` (0 to 100) of requests.
pub(super) fn roll(percent: f64) -> bool {
    percent >= 100.0 || (percent > 0.0 && fastrand::f64() * 100.0 < percent)
}

impl RulePolicy {
    /// Compiles `rule`'s timeout and fault; errors name the field under `at`.
    pub fn compile(rule: &Rule, at: &str) -> Result<Self, InvalidField> {
        let percent = |p: f64, field: &str| {
            if (0.0..=100.0).contains(&p) {
                Ok(p)
            } else {
                Err(InvalidField::new(
                    format!("{at}.{field}"),
                    format!("{p} is not a percentage from 0 to 100"),
                ))
            }
        };
        let timeout = match rule.timeout_ms {
            Some(0) => {
                return Err(InvalidField::new(
                    format!("{at}.timeoutMs"),
                    "give a deadline above 0",
                ));
            }
            t => t.map(Duration::from_millis),
        };
        let fault = rule.fault.clone().unwrap_or_default();
        let delay = match fault.delay {
            None => None,
            Some(d) => Some((
                percent(d.percent, "fault.delay.percent")?,
                Duration::from_millis(d.fixed_ms),
            )),
        };
        let abort = match fault.abort {
            None => None,
            Some(a) => {
                let status = StatusCode::from_u16(a.status)
                    .ok()
                    .filter(|s| (200..=599).contains(&s.as_u16()))
                    .ok_or_else(|| {
                        InvalidField::new(
                            format!("{at}.fault.abort.status"),
                            format!("{} is not a status from 200 to 599", a.status),
                        )
                    })?;
                Some((percent(a.percent, "fault.abort.percent")?, status))
            }
        };
        let retry = match &rule.retries {
            Some(r) => Some(RetryPolicy::compile(r, at)?),
            None => None,
        };
        if let (Some(total), Some(per_try)) = (timeout, retry.and_then(|r| r.per_try_timeout))
            && per_try > total
        {
            return Err(InvalidField::new(
                format!("{at}.retries.perTryTimeoutMs"),
                format!(
                    "{} ms is longer than the rule's timeoutMs ({} ms); make it shorter",
                    per_try.as_millis(),
                    total.as_millis()
                ),
            ));
        }
        Ok(Self {
            timeout,
            delay,
            abort,
            retry,
        })
    }

    /// The status to abort this request with, if it draws an abort.
    pub fn roll_abort(&self) -> Option<StatusCode> {
        self.abort.filter(|(p, _)| roll(*p)).map(|(_, s)| s)
    }

    /// How long to hold this request, if it draws a delay.
    pub fn roll_delay(&self) -> Option<Duration> {
        self.delay.filter(|(p, _)| roll(*p)).map(|(_, d)| d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{AbortFault, DelayFault, Fault};

    fn rule(timeout_ms: Option<u64>, fault: Option<Fault>) -> Rule {
        Rule {
            name: "r".into(),
            timeout_ms,
            fault,
            ..Default::default()
        }
    }

    #[test]
    fn compiles_deadline_and_faults() {
        let p = RulePolicy::compile(
            &rule(
                Some(250),
                Some(Fault {
                    delay: Some(DelayFault {
                        percent: 100.0,
                        fixed_ms: 20,
                    }),
                    abort: Some(AbortFault {
                        percent: 0.0,
                        status: 503,
                    }),
                }),
            ),
            "r",
        )
        .unwrap();
        assert_eq!(p.timeout, Some(Duration::from_millis(250)));
        assert_eq!(p.roll_delay(), Some(Duration::from_millis(20)));
        assert_eq!(p.roll_abort(), None);
        assert_eq!(
            RulePolicy::compile(&rule(None, None), "r").unwrap(),
            RulePolicy::default()
        );
    }

    #[test]
    fn abort_percentages_hold() {
        let p = RulePolicy::compile(
            &rule(
                None,
                Some(Fault {
                    delay: None,
                    abort: Some(AbortFault {
                        percent: 25.0,
                        status: 503,
                    }),
                }),
            ),
            "r",
        )
        .unwrap();
        let aborted = (0..20_000).filter(|_| p.roll_abort().is_some()).count();
        // 25% of 20,000 = 5,000; the standard deviation is about 61.
        assert!((4_700..5_300).contains(&aborted), "{aborted}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let bad = |fault| {
            RulePolicy::compile(&rule(None, Some(fault)), "routes[0].rules[2]")
                .unwrap_err()
                .to_string()
        };
        let err = bad(Fault {
            delay: None,
            abort: Some(AbortFault {
                percent: 10.0,
                status: 99,
            }),
        });
        assert!(
            err.starts_with("routes[0].rules[2].fault.abort.status"),
            "{err}"
        );
        let err = bad(Fault {
            delay: Some(DelayFault {
                percent: 120.0,
                fixed_ms: 1,
            }),
            abort: None,
        });
        assert!(
            err.starts_with("routes[0].rules[2].fault.delay.percent"),
            "{err}"
        );
        let err = RulePolicy::compile(&rule(Some(0), None), "r")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("r.timeoutMs"), "{err}");
    }
}
