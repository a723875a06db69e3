//! Every replica re-reads the CA Secret, so a CA an administrator rotated is picked up,
//! and warns while the CA nears its end. (What the leader keeps up to date from the CA is
//! in [`super::upkeep`].)

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::authority::{Ca, timestamp};
use super::secret::CaSecret;
use crate::metrics::Metrics;

/// How often the CA Secret is re-read and the webhook's certificate checked for renewal.
pub const RESYNC: Duration = Duration::from_secs(60);

/// Less than this left on the CA's signing certificate is warned about: time to put a
/// new CA in the Secret while the current one still signs.
pub const CA_WARN_LEFT: Duration = Duration::from_secs(30 * 24 * 3600);
/// While it is so, the warning is repeated this often.
pub const CA_WARN_EVERY: Duration = Duration::from_secs(24 * 3600);

/// Whether to warn at `now` that the signing certificate expiring at `not_after` is near
/// its end, having last warned at `last` (for this CA): the time left when so.
pub fn expiry_warning(
    not_after: SystemTime,
    now: SystemTime,
    last: Option<SystemTime>,
) -> Option<Duration> {
    let left = not_after.duration_since(now).unwrap_or_default();
    if left >= CA_WARN_LEFT {
        return None;
    }
    match last {
        Some(at) if now.duration_since(at).unwrap_or_default() < CA_WARN_EVERY => None,
        _ => Some(left),
    }
}

/// Re-reads the CA Secret every `every` and publishes a CA that changed (an
/// administrator rotated it). A Secret that became unusable is logged and the CA in
/// use kept. Keeps `metrics` told when the CA expires, and warns while it has less than
/// [`CA_WARN_LEFT`] left.
pub async fn refresh_ca(
    secret: CaSecret,
    ca: watch::Sender<Arc<Ca>>,
    metrics: Arc<Metrics>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut warned: Option<SystemTime> = None;
    loop {
        let current = ca.borrow().clone();
        let not_after = current.signing_validity().not_after;
        metrics.ca_expires(&secret.reference(), not_after);
        let now = SystemTime::now();
        if let Some(left) = expiry_warning(not_after, now, warned) {
            tracing::warn!(
                secret = %secret.reference(),
                "the CA's signing certificate (--ca-secret) expires {}, in {} days: put a new CA \
                 in the Secret before then (docs/operator.md: rotate a root), or no certificate can be \
                 issued after it",
                timestamp(not_after),
                left.as_secs() / 86_400
            );
            warned = Some(now);
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        match secret.refresh(&current, SystemTime::now()).await {
            Ok(Some(fresh)) => {
                tracing::info!("the CA Secret changed; issuing from the new CA");
                ca.send_replace(Arc::new(fresh));
                warned = None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "the CA Secret cannot be used; keeping the CA in use")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + DAY * days
    }

    #[test]
    fn a_ca_with_less_than_30_days_left_is_warned_about_daily() {
        let end = at(100);
        assert_eq!(expiry_warning(end, at(0), None), None);
        assert_eq!(expiry_warning(end, at(70), None), None, "30 days left");
        assert_eq!(
            expiry_warning(end, at(71), None),
            Some(29 * DAY),
            "29 days left"
        );
        // Once a day, not every minute.
        assert_eq!(
            expiry_warning(end, at(71) + Duration::from_secs(60), Some(at(71))),
            None
        );
        assert_eq!(expiry_warning(end, at(72), Some(at(71))), Some(28 * DAY));
        // Expired: still said, with nothing left.
        assert_eq!(
            expiry_warning(end, at(101), Some(at(99))),
            Some(Duration::ZERO)
        );
    }
}
