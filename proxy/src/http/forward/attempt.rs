//! One attempt on the picked endpoint: its deadline (the rule's per-try timeout, else the
//! proxy's response timeout), the endpoint's load while it runs, and the outcome judged
//! by outlier detection (the caller's own faults and shed answers are not the endpoint's).

use std::time::Instant;

use super::{Forwarder, Outgoing, Side};
use crate::balance::outlier::OutlierPolicy;
use crate::balance::{self, Endpoint, Picked, Verdict};
use crate::control::protocol::Ejection;
use crate::http::ForwardError;
use crate::http::exchange::{Answer, Exchange};
use crate::metrics::limits::Limit;

impl Forwarder {
    /// One attempt on the picked endpoint, within `per_try` if set; its latency feeds
    /// the endpoint's load, its outcome the service's outlier detection.
    pub(super) async fn attempt<X: Exchange>(
        &self,
        send: &Outgoing<'_>,
        picked: Picked<'_>,
        x: &mut X,
        per_try: Option<std::time::Duration>,
    ) -> Result<X::Answer, ForwardError> {
        let endpoint = picked.endpoint;
        if picked.panic {
            self.metrics.outlier.panic_request(send.label);
        }
        if picked.returned > 0 {
            self.metrics.outlier.returned(send.label, picked.returned);
        }
        send.attempting(endpoint.addr);
        let in_flight = endpoint.load.start();
        let up = endpoint.upstream();
        send.tls
            .store(up.tls.is_some(), std::sync::atomic::Ordering::Relaxed);
        // A rule's per-try timeout, else the proxy's response timeout: no attempt waits
        // for ever on an upstream that never answers.
        // An exchange that streams the caller's body bounds its own wait, from when the
        // body is sent.
        let limit = per_try.unwrap_or(self.limits.response);
        let result = match per_try.is_none() && x.bounds_response() {
            true => x.send(&up).await,
            false => match tokio::time::timeout(limit, x.send(&up)).await {
                Ok(result) => result,
                Err(_) if per_try.is_some() => Err(ForwardError::PerTryTimeout(limit)),
                Err(_) => Err(ForwardError::ResponseTimeout(limit)),
            },
        };
        if let Err(ForwardError::ResponseTimeout(_)) = &result {
            self.limit_hit(Limit::response_timeout);
        }
        match &result {
            // This proxy's own fault: nothing to hold against the endpoint.
            Err(ForwardError::Tls(e)) if e.is_local() => {
                in_flight.done();
                return result;
            }
            // The endpoint could not be reached or broke the connection: avoid it while
            // others answer. (Error statuses are for outlier detection to judge.)
            Err(
                ForwardError::Connect(_)
                | ForwardError::ConnectTimeout
                | ForwardError::H2(_)
                | ForwardError::Relay(_)
                | ForwardError::Tls(_),
            ) => in_flight.failed(),
            // The caller's own body failed, perhaps after it stalled: the time it took
            // is not the endpoint's latency.
            Err(ForwardError::RequestBody(_)) => in_flight.forget(),
            _ => in_flight.done(),
        }
        if let Some(policy) = send.selected.outlier() {
            self.judge(send, endpoint, &result, policy);
        }
        result
    }

    /// Feeds an attempt's outcome to outlier detection: 5xx answers, failed connections
    /// and attempts out of time count against the endpoint.
    fn judge<A: Answer>(
        &self,
        send: &Outgoing<'_>,
        endpoint: &Endpoint,
        result: &Result<A, ForwardError>,
        policy: &OutlierPolicy,
    ) {
        let failed = match result {
            // Shed by the endpoint's overload protection: busy, not broken; ejecting it
            // would pile its load onto the others.
            Ok(resp) if resp.overloaded() => return,
            Ok(resp) => resp.status().is_server_error(),
            // The caller's fault, not the endpoint's.
            Err(ForwardError::RequestBody(_)) => false,
            Err(_) => true,
        };
        let verdict = balance::record(
            endpoint,
            send.selected.endpoints(),
            failed,
            Instant::now(),
            policy,
        );
        match verdict {
            Verdict::Kept => {}
            Verdict::Ejected(reason, length) => {
                tracing::warn!(
                    target = %send.label,
                    endpoint = %endpoint.addr,
                    reason = reason.as_str(),
                    seconds = length.as_secs_f64(),
                    "endpoint ejected"
                );
                self.metrics
                    .outlier
                    .ejected(send.label, endpoint.addr, reason.as_str());
                if let Side::Outbound(outbound) = &self.side {
                    outbound.ejections.push(Ejection {
                        target: send.label.to_string(),
                        endpoint: endpoint.addr,
                        reason: reason.as_str().to_owned(),
                        duration_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
                    });
                }
            }
            Verdict::Spared(reason) => {
                self.metrics.outlier.spared(send.label, reason.as_str());
            }
        }
    }
}
