//! The loops that keep the CA's output current in a running operator: every replica
//! re-reads the CA Secret; the leader keeps the webhook's certificate and `caBundle`
//! and the proxies' trust ConfigMaps up to date.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::authority::{Ca, timestamp};
use super::secret::CaSecret;
use super::serving::MAX_WAIT;
use super::trust::TrustDistributor;
use super::webhook::WebhookTls;
use crate::metrics::Metrics;
use crate::registry::Snapshot;

/// How often the CA Secret is re-read and the webhook's TLS checked.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How often every trust ConfigMap is written again, in case one was edited or deleted.
pub const TRUST_RESYNC: Duration = Duration::from_secs(600);

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
                 in the Secret before then (README: rotate a root), or no certificate can be \
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

/// What woke the leader's loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Its interval ([`Upkeep::every`]).
    Tick,
    /// Leadership was gained or lost.
    Leadership,
    /// The CA changed.
    Ca,
    /// A new snapshot (the labelled namespaces may have changed).
    Snapshot,
}

/// One round of the leader's loop, done: what woke it, and whether it led (and so
/// wrote what was due) or followed (and wrote nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Round {
    /// What woke it.
    pub cause: Cause,
    /// Whether this replica led.
    pub leading: bool,
}

/// The leader's upkeep of what the CA hands out.
pub struct Upkeep {
    /// The webhook's certificate and `caBundle`.
    pub webhook: WebhookTls,
    /// The proxies' trust ConfigMaps; `None` when the operator serves a certificate of
    /// its own (`--tls-cert`) that the braid CA did not sign.
    pub trust: Option<TrustDistributor>,
    /// How often to re-check without being asked ([`RESYNC`]).
    pub every: Duration,
    /// Told of every round once it is done, so a test can tell that the loop handled
    /// an event before checking what it wrote (or did not); `None` in the operator.
    pub rounds: Option<mpsc::UnboundedSender<Round>>,
}

impl Upkeep {
    /// While `leader` says so: checks the webhook on gaining leadership, on a new CA and
    /// every `every`; writes trust ConfigMaps when a namespace is labelled
    /// (`snapshots`), on a new CA, on gaining leadership and every [`TRUST_RESYNC`].
    /// A follower writes nothing.
    pub async fn run(
        mut self,
        mut leader: watch::Receiver<bool>,
        mut ca: watch::Receiver<Arc<Ca>>,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
        stop: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut leading = false;
        let mut config_missing_told = false;
        let mut ca_ending_told: Option<Instant> = None;
        let mut full_trust_at = Instant::now();
        loop {
            let cause = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => Cause::Tick,
                r = leader.changed() => match r { Ok(()) => Cause::Leadership, Err(_) => return },
                r = ca.changed() => match r { Ok(()) => Cause::Ca, Err(_) => return },
                r = snapshots.changed() => match r { Ok(()) => Cause::Snapshot, Err(_) => return },
            };
            let now_leading = *leader.borrow_and_update();
            let gained = now_leading && !leading;
            leading = now_leading;
            if !leading {
                // A future term starts from scratch.
                if let Some(trust) = &mut self.trust {
                    trust.rewrite_all();
                }
                config_missing_told = false;
                self.report(cause, false);
                continue;
            }
            let current = ca.borrow_and_update().clone();
            if cause != Cause::Snapshot || gained {
                let outcome = self.webhook.reconcile(&current, SystemTime::now()).await;
                match outcome.as_ref().map(|o| o.ca_ending) {
                    Ok(Some(ending)) => {
                        if ca_ending_told.is_none_or(|at| at.elapsed() >= MAX_WAIT) {
                            tracing::error!(
                                secret = %self.webhook.secret_name(),
                                "webhook certificate not renewed: {ending}"
                            );
                            ca_ending_told = Some(Instant::now());
                        }
                    }
                    Ok(None) => ca_ending_told = None,
                    Err(_) => {}
                }
                match outcome {
                    Ok(outcome) if outcome.config_missing => {
                        if !std::mem::replace(&mut config_missing_told, true) {
                            tracing::warn!(
                                config = %self.webhook.config_name(),
                                "MutatingWebhookConfiguration not found, so the injector is not called: install it with `kubectl apply -k manifests/`"
                            );
                        }
                    }
                    Ok(_) => config_missing_told = false,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook TLS not brought up to date; retrying")
                    }
                }
            }
            if let Some(trust) = &mut self.trust {
                if gained || full_trust_at.elapsed() >= TRUST_RESYNC {
                    trust.rewrite_all();
                    full_trust_at = Instant::now();
                }
                let meshed: BTreeSet<String> =
                    snapshots.borrow_and_update().meshed_namespaces.clone();
                trust.reconcile(&meshed, current.trust_bundle()).await;
            }
            self.report(cause, true);
        }
    }

    fn report(&self, cause: Cause, leading: bool) {
        if let Some(rounds) = &self.rounds {
            // The listener may be gone; the loop does not depend on it.
            let _ = rounds.send(Round { cause, leading });
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
