//! Retries: which failures a rule retries, how many times, each attempt's deadline, and
//! the budget that keeps retries to about a fifth of the rule's requests, so an outage is
//! not made worse by callers multiplying their load.

use std::time::Duration;

use http::StatusCode;
use tower::retry::budget::{Budget, TpsBudget};

use crate::config::InvalidField;
use crate::config::routes::{Retries, RetryOn};

/// Retries a rule allows. Cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Each attempt's deadline.
    pub per_try_timeout: Option<Duration>,
    on: u8,
    /// Of `on`, the conditions retried only for idempotent methods.
    idempotent_only: u8,
}

/// What an attempt ended with, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// A response with this status.
    Status(StatusCode),
    /// No connection could be opened.
    ConnectFailure,
    /// The HTTP/2 server refused the stream: it did not process the request.
    RefusedStream,
    /// The connection failed before a response came.
    Reset,
    /// The attempt's own deadline passed.
    PerTryTimeout,
    /// It could not be sent for a reason no other endpoint changes (this proxy has no
    /// certificate yet, the caller's body broke): never retried.
    Local,
}

const fn bit(on: RetryOn) -> u8 {
    1 << on as u8
}

/// Safe by default: connect failures and refused streams never reached the application,
/// so any request is retried; a reset may have come after the server acted, so only
/// requests that are safe to repeat (idempotent methods) are retried on it.
const DEFAULT_ON: u8 =
    bit(RetryOn::ConnectFailure) | bit(RetryOn::RefusedStream) | bit(RetryOn::Reset);
const DEFAULT_IDEMPOTENT_ONLY: u8 = bit(RetryOn::Reset);

/// Whether repeating a request with `method` has the effect of sending it once
/// (RFC 9110, section 9.2.2).
pub fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(method)
}

impl RetryPolicy {
    /// Compiles `retries`; errors name the field under `at`.
    pub fn compile(retries: &Retries, at: &str) -> Result<Self, InvalidField> {
        let per_try_timeout = match retries.per_try_timeout_ms {
            Some(0) => {
                return Err(InvalidField::new(
                    format!("{at}.retries.perTryTimeoutMs"),
                    "give a deadline above 0",
                ));
            }
            t => t.map(Duration::from_millis),
        };
        // Conditions listed explicitly apply to every method: the administrator chose
        // them (and can match the rule on method to narrow them).
        let (on, idempotent_only) = match retries.on.is_empty() {
            true => (DEFAULT_ON, DEFAULT_IDEMPOTENT_ONLY),
            false => (retries.on.iter().fold(0, |set, on| set | bit(*on)), 0),
        };
        Ok(Self {
            attempts: retries.attempts,
            per_try_timeout,
            on,
            idempotent_only,
        })
    }

    /// The failures retried, each with whether it is retried only for idempotent
    /// methods, in [`RetryOn`]'s order.
    pub fn conditions(&self) -> Vec<(RetryOn, bool)> {
        [
            RetryOn::ConnectFailure,
            RetryOn::RefusedStream,
            RetryOn::Reset,
            RetryOn::GatewayError,
            RetryOn::ServerError,
        ]
        .into_iter()
        .filter(|on| self.on & bit(*on) != 0)
        .map(|on| (on, self.idempotent_only & bit(on) != 0))
        .collect()
    }

    /// Whether an attempt of a request that is (or is not) `idempotent` and ended with
    /// `outcome` is worth another.
    pub fn retries(&self, outcome: AttemptOutcome, idempotent: bool) -> bool {
        let allowed = match idempotent {
            true => self.on,
            false => self.on & !self.idempotent_only,
        };
        let retries_on = |on: RetryOn| allowed & bit(on) != 0;
        match outcome {
            AttemptOutcome::ConnectFailure => retries_on(RetryOn::ConnectFailure),
            AttemptOutcome::RefusedStream => {
                retries_on(RetryOn::RefusedStream) || retries_on(RetryOn::Reset)
            }
            AttemptOutcome::Reset => retries_on(RetryOn::Reset),
            AttemptOutcome::PerTryTimeout => {
                retries_on(RetryOn::GatewayError) || retries_on(RetryOn::ServerError)
            }
            AttemptOutcome::Status(s) if s.is_server_error() => {
                let gateway = matches!(s.as_u16(), 502..=504);
                retries_on(RetryOn::ServerError) || (gateway && retries_on(RetryOn::GatewayError))
            }
            AttemptOutcome::Status(_) | AttemptOutcome::Local => false,
        }
    }
}

/// Retries allowed on top of the requests of a rule: 20% of them over the last ten
/// seconds, plus ten a second so that a caller with little traffic can still retry.
pub struct RetryBudget(TpsBudget);

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RetryBudget")
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        // Within TpsBudget's documented bounds (ttl 1–60 s, percent 0–1000), so it
        // cannot panic.
        Self(TpsBudget::new(Duration::from_secs(10), 10, 0.2))
    }
}

impl RetryBudget {
    /// Counts one request of the rule (not a retry).
    pub fn deposit(&self) {
        self.0.deposit();
    }

    /// Takes one retry from the budget; `false` when it is spent.
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(on: &[RetryOn]) -> RetryPolicy {
        RetryPolicy::compile(
            &Retries {
                attempts: 2,
                per_try_timeout_ms: Some(100),
                on: on.to_vec(),
            },
            "r",
        )
        .unwrap()
    }

    #[test]
    fn the_default_retries_what_the_server_never_processed_and_resets_of_idempotent_requests() {
        let p = policy(&[]);
        for idempotent in [true, false] {
            assert!(p.retries(AttemptOutcome::ConnectFailure, idempotent));
            assert!(p.retries(AttemptOutcome::RefusedStream, idempotent));
            assert!(!p.retries(
                AttemptOutcome::Status(StatusCode::SERVICE_UNAVAILABLE),
                idempotent
            ));
            assert!(!p.retries(AttemptOutcome::PerTryTimeout, idempotent));
        }
        // A POST the server may have acted on is not sent twice.
        assert!(p.retries(AttemptOutcome::Reset, true));
        assert!(!p.retries(AttemptOutcome::Reset, false));
        assert!(is_idempotent(&http::Method::PUT));
        assert!(!is_idempotent(&http::Method::POST));
        assert!(!is_idempotent(&http::Method::PATCH));
    }

    #[test]
    fn listed_conditions_apply_to_every_method() {
        assert_eq!(
            policy(&[]).conditions(),
            [
                (RetryOn::ConnectFailure, false),
                (RetryOn::RefusedStream, false),
                (RetryOn::Reset, true)
            ]
        );
        let p = policy(&[RetryOn::Reset]);
        assert_eq!(p.conditions(), [(RetryOn::Reset, false)]);
        assert!(p.retries(AttemptOutcome::Reset, false));
        assert!(!p.retries(AttemptOutcome::ConnectFailure, true));
    }

    #[test]
    fn gateway_errors_and_5xx() {
        let g = policy(&[RetryOn::GatewayError]);
        assert!(g.retries(AttemptOutcome::Status(StatusCode::BAD_GATEWAY), true));
        assert!(g.retries(AttemptOutcome::PerTryTimeout, true));
        assert!(!g.retries(
            AttemptOutcome::Status(StatusCode::INTERNAL_SERVER_ERROR),
            true
        ));
        assert!(!g.retries(AttemptOutcome::ConnectFailure, true));
        let s = policy(&[RetryOn::ServerError]);
        assert!(s.retries(
            AttemptOutcome::Status(StatusCode::INTERNAL_SERVER_ERROR),
            false
        ));
        assert!(s.retries(AttemptOutcome::Status(StatusCode::GATEWAY_TIMEOUT), true));
        assert!(!s.retries(AttemptOutcome::Status(StatusCode::NOT_FOUND), true));
        assert!(!s.retries(AttemptOutcome::Status(StatusCode::OK), true));
    }

    #[test]
    fn a_zero_per_try_timeout_is_refused_by_path() {
        let err = RetryPolicy::compile(
            &Retries {
                attempts: 1,
                per_try_timeout_ms: Some(0),
                on: vec![],
            },
            "routes[0].rules[1]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("routes[0].rules[1].retries.perTryTimeoutMs"),
            "{err}"
        );
    }

    #[test]
    fn the_budget_caps_retries_near_a_fifth_of_requests() {
        let budget = RetryBudget::default();
        // The reserve: ten a second over the ten-second window.
        let reserve = (0..1000).take_while(|_| budget.withdraw()).count();
        assert_eq!(reserve, 100);
        for _ in 0..1000 {
            budget.deposit();
        }
        let earned = (0..1000).take_while(|_| budget.withdraw()).count();
        assert_eq!(earned, 200);
    }
}
