//! A rule's rate limit: a token bucket in each calling proxy. Requests beyond it are
//! answered 429 at once, with `retry-after`, and never reach the service.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::InvalidField;
use crate::config::routes::RateLimit;

/// Tokens refill at `rate` a second up to `capacity`; each request takes one.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    /// (tokens, when they were counted).
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    /// A full bucket for `limit`; errors name the field under `at`.
    pub fn compile(limit: &RateLimit, at: &str) -> Result<Self, InvalidField> {
        if limit.requests_per_second == 0 {
            return Err(InvalidField::new(
                format!("{at}.rateLimit.requestsPerSecond"),
                "give a rate above 0",
            ));
        }
        let rate = f64::from(limit.requests_per_second);
        // `burst` requests may come at once; absent, one second's worth.
        let capacity = f64::from(limit.burst.unwrap_or(limit.requests_per_second)).max(1.0);
        Ok(Self {
            rate,
            capacity,
            state: Mutex::new((capacity, Instant::now())),
        })
    }

    /// The sustained rate, in requests a second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// How many requests may come at once (the bucket's size).
    pub fn burst(&self) -> f64 {
        self.capacity
    }

    /// Takes a token at `now`; when there is none, how long until there is.
    pub fn take(&self, now: Instant) -> Result<(), Duration> {
        let Ok(mut state) = self.state.lock() else {
            return Ok(());
        };
        let (tokens, then) = *state;
        let elapsed = now.saturating_duration_since(then).as_secs_f64();
        let tokens = (tokens + elapsed * self.rate).min(self.capacity);
        // A hair under one token is one: refills add up in floating point.
        if tokens >= 1.0 - 1e-9 {
            *state = ((tokens - 1.0).max(0.0), now);
            Ok(())
        } else {
            *state = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rps: u32, burst: Option<u32>) -> TokenBucket {
        TokenBucket::compile(
            &RateLimit {
                requests_per_second: rps,
                burst,
            },
            "r",
        )
        .unwrap()
    }

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let b = bucket(10, Some(5));
        let t0 = Instant::now();
        let burst = (0..100).take_while(|_| b.take(t0).is_ok()).count();
        assert_eq!(burst, 5);
        let wait = b.take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-6, "{wait:?}");
        // Over one more second, ten more.
        let admitted = (1..=100)
            .filter(|i| b.take(t0 + Duration::from_millis(10 * i)).is_ok())
            .count();
        assert_eq!(admitted, 10);
    }

    #[test]
    fn the_default_burst_is_one_seconds_worth_and_zero_is_refused() {
        let b = bucket(3, None);
        let t0 = Instant::now();
        assert_eq!((0..10).take_while(|_| b.take(t0).is_ok()).count(), 3);
        let b = bucket(3, Some(0));
        assert_eq!((0..10).take_while(|_| b.take(t0).is_ok()).count(), 1);
        let err = TokenBucket::compile(
            &RateLimit {
                requests_per_second: 0,
                burst: None,
            },
            "routes[1].rules[0]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("routes[1].rules[0].rateLimit.requestsPerSecond"),
            "{err}"
        );
    }
}
