//! A rule's own policy, before any attempt: its rate limit, its injected faults (abort,
//! delay), and its deadline over every attempt.

use std::time::Instant;

use super::{Forwarder, Outgoing};
use crate::http::ForwardError;
use crate::http::exchange::Exchange;

impl Forwarder {
    /// The rule's rate limit and faults, then its attempts within its deadline.
    pub(super) async fn apply_rule<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        x: &mut X,
        idempotent: bool,
    ) -> Result<X::Answer, ForwardError> {
        let policy = send.selected.policy();
        if let Some(bucket) = send.selected.rule.and_then(|r| r.rate_limit.as_ref()) {
            bucket
                .take(Instant::now())
                .map_err(ForwardError::RateLimited)?;
        }
        if let Some(status) = policy.roll_abort() {
            return Err(ForwardError::FaultAbort(status));
        }
        if let Some(delay) = policy.roll_delay() {
            tokio::time::sleep(delay).await;
        }
        let attempts = self.attempts(send, x, idempotent);
        match policy.timeout {
            // The deadline runs until the response starts, over every attempt.
            Some(limit) => tokio::time::timeout(limit, attempts)
                .await
                .unwrap_or(Err(ForwardError::RouteTimeout(limit))),
            None => attempts.await,
        }
    }
}
