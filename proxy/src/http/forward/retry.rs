//! Retries: the rule's attempts, each on an endpoint other than the last one that failed,
//! within the rule's retry budget, with a jittered backoff between them.

use std::time::Duration;

use super::{Forwarder, Outgoing};
use crate::http::ForwardError;
use crate::http::exchange::{Answer, Exchange};
use crate::metrics::http::RetryResult;
use crate::routing::AttemptOutcome;

/// The first retry waits about this long; each next one twice as long, up to
/// [`MAX_BACKOFF`] (jittered, so callers that failed together do not retry together).
const BASE_BACKOFF: Duration = Duration::from_millis(25);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

impl Forwarder {
    /// Sends the request, retrying as the rule allows (waiting a jittered, growing
    /// backoff between attempts) when `x` can send it more than once.
    pub(super) async fn attempts<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        x: &mut X,
        idempotent: bool,
    ) -> Result<X::Answer, ForwardError> {
        // `attempts: 0` retries nothing, so nothing need be buffered or budgeted.
        let retry = send.selected.policy().retry.filter(|r| r.attempts > 0);
        let replayable = x.prepare(send, retry.is_some()).await?;
        let Some(retry) = retry.filter(|_| replayable) else {
            let endpoint = send.selected.endpoint(None)?;
            return self.attempt(send, endpoint, x, None).await;
        };
        let rule = send.selected.rule;
        let budget = rule.and_then(|r| r.budget.as_ref());
        if let Some(b) = budget {
            b.deposit();
        }
        let mut last = None;
        let mut attempt = 0;
        loop {
            let picked = send.selected.endpoint(last)?;
            let endpoint = picked.endpoint;
            let result = self.attempt(send, picked, x, retry.per_try_timeout).await;
            if attempt >= retry.attempts || !retry.retries(outcome(&result), idempotent) {
                return result;
            }
            let granted = budget.is_none_or(|b| b.withdraw());
            if let Some(rule) = rule {
                let counted = match granted {
                    true => RetryResult::sent,
                    false => RetryResult::budget_exhausted,
                };
                self.metrics.http.retry(send.label, &rule.name, counted);
            }
            if !granted {
                return result;
            }
            tracing::debug!(target = %send.label, endpoint = %endpoint.addr, attempt, "retrying");
            drop(result);
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
            send.retries
                .store(attempt, std::sync::atomic::Ordering::Relaxed);
            last = Some(endpoint.addr);
        }
    }
}

/// The wait before retry number `attempt + 1`: half of the doubled base, plus a random
/// share of the other half.
fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE_BACKOFF
        .saturating_mul(1 << attempt.min(8))
        .min(MAX_BACKOFF);
    ceiling / 2 + ceiling.mul_f64(fastrand::f64() / 2.0)
}

/// What retrying needs to know of an attempt's result.
fn outcome<A: Answer>(result: &Result<A, ForwardError>) -> AttemptOutcome {
    match result {
        Ok(resp) => AttemptOutcome::Status(resp.status()),
        Err(ForwardError::Tls(e)) if e.is_local() => AttemptOutcome::Local,
        // The caller's own body broke: another endpoint would fare no better.
        Err(ForwardError::RequestBody(_)) => AttemptOutcome::Local,
        // A refused mTLS handshake happens before any request byte leaves.
        Err(ForwardError::Connect(_) | ForwardError::ConnectTimeout | ForwardError::Tls(_)) => {
            AttemptOutcome::ConnectFailure
        }
        Err(ForwardError::PerTryTimeout(_)) => AttemptOutcome::PerTryTimeout,
        // The HTTP/2 server refused the stream: it did not process it.
        Err(ForwardError::H2(e)) if e.reason() == Some(h2::Reason::REFUSED_STREAM) => {
            AttemptOutcome::RefusedStream
        }
        Err(_) => AttemptOutcome::Reset,
    }
}
