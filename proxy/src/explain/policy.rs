//! What a rule does to a request besides choosing where it goes, in words: its deadline,
//! retries, injected faults, mirror and rate limit.

use braid_api::explain::PolicyView;

use super::serde_name;
use crate::routing::{CompiledRule, RetryPolicy};
use crate::tables::OutboundTarget;

/// `rule`'s policy (a rule of `target`, which names its groups).
pub(super) fn view(rule: &CompiledRule, target: &OutboundTarget) -> PolicyView {
    let p = &rule.policy;
    let mut faults = Vec::new();
    // In the order the forwarder applies them: an aborted request is never delayed.
    if let Some((percent, status)) = p.abort {
        faults.push(format!(
            "abort {} for {percent}% of requests",
            status.as_u16()
        ));
    }
    if let Some((percent, delay)) = p.delay {
        faults.push(format!(
            "delay {} ms for {percent}% of requests",
            delay.as_millis()
        ));
    }
    PolicyView {
        timeout_ms: p
            .timeout
            .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        retries: p.retry.map(|r| retries(&r)),
        faults,
        mirror: rule.mirror.map(|m| {
            let group = target
                .group(m.group)
                .map_or_else(|| format!("#{}", m.group), |(name, _)| name.to_string());
            format!("group {group}, {}% of requests", m.percent())
        }),
        rate_limit: rule.rate_limit.as_ref().map(|b| {
            format!(
                "{} requests a second, bursts of up to {}; more are answered 429 at once",
                b.rate(),
                b.burst()
            )
        }),
    }
}

/// `up to 2 more attempts on connect-failure, reset (idempotent methods only), 500 ms
/// each`.
fn retries(r: &RetryPolicy) -> String {
    if r.attempts == 0 {
        return "none (attempts: 0)".to_owned();
    }
    let on: Vec<String> = r
        .conditions()
        .into_iter()
        .map(|(on, idempotent_only)| match idempotent_only {
            true => format!("{} (idempotent methods only)", serde_name(&on)),
            false => serde_name(&on),
        })
        .collect();
    let mut words = format!(
        "up to {} more attempt{} on {}",
        r.attempts,
        if r.attempts == 1 { "" } else { "s" },
        on.join(", ")
    );
    if let Some(each) = r.per_try_timeout {
        words.push_str(&format!(", {} ms each", each.as_millis()));
    }
    words.push_str(", within the retry budget");
    words
}
