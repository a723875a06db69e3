//! The loops that keep the CA's output current in a running operator: every replica
//! re-reads the CA Secret; the leader keeps the webhook's certificate and `caBundle`
//! and the proxies' trust ConfigMaps up to date.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::authority::Ca;
use super::secret::CaSecret;
use super::trust::TrustDistributor;
use super::webhook::WebhookTls;
use crate::registry::Snapshot;

/// How often the CA Secret is re-read and the webhook's TLS checked.
pub const RESYNC: Duration = Duration::from_secs(60);
/// How often every trust ConfigMap is written again, in case one was edited or deleted.
pub const TRUST_RESYNC: Duration = Duration::from_secs(600);

/// Re-reads the CA Secret every `every` and publishes a CA that changed (an
/// administrator rotated it). A Secret that became unusable is logged and the CA in
/// use kept.
pub async fn refresh_ca(
    secret: CaSecret,
    ca: watch::Sender<Arc<Ca>>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let current = ca.borrow().clone();
        match secret.refresh(&current, SystemTime::now()).await {
            Ok(Some(fresh)) => {
                tracing::info!("the CA Secret changed; issuing from the new CA");
                ca.send_replace(Arc::new(fresh));
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
enum Cause {
    Tick,
    Leadership,
    Ca,
    Snapshot,
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
                continue;
            }
            let current = ca.borrow_and_update().clone();
            if cause != Cause::Snapshot || gained {
                match self.webhook.reconcile(&current, SystemTime::now()).await {
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
        }
    }
}
