//! The webhook TLS controller: the MutatingWebhookConfiguration (`--webhook-config`) is
//! reconciled, which issues the injector's certificate Secret when it is missing, edited
//! or due and sets every webhook's `caBundle`. It watches that Secret too, so one deleted
//! or edited is issued again at once; and it runs again every [`RESYNC`] to renew in
//! time.
//!
//! While the configuration does not exist there is nothing to reconcile: the Secret is
//! still kept (the injector's pods mount it) and its absence told, every [`RESYNC`].

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{Backoff, Leading, log_outcome, stopped, until_stopped};
use crate::ca::maintain::RESYNC;
use crate::ca::serving::MAX_WAIT;
use crate::ca::webhook::{WebhookError, WebhookNames, WebhookOutcome, WebhookTls};

/// How long the fallback waits for the configuration's first list before it keeps the
/// Secret itself.
const READY_WAIT: Duration = Duration::from_secs(3);

/// What was last told, so a condition that lasts is not logged every round.
#[derive(Debug, Default)]
struct Told {
    config_missing: bool,
    ca_ending: Option<Instant>,
}

/// What the webhook reconciles share.
pub struct WebhookUpkeep {
    client: Client,
    names: WebhookNames,
    tls: WebhookTls,
    leading: Leading,
    backoff: Backoff,
    told: Mutex<Told>,
}

impl WebhookUpkeep {
    /// Through `client`: get/create/update/list/watch of the Secret, get/patch/list/
    /// watch of the configuration, while and with what `leading` says.
    pub fn new(client: Client, names: WebhookNames, leading: Leading) -> Self {
        Self {
            tls: WebhookTls::new(client.clone(), names.clone()),
            client,
            names,
            leading,
            backoff: Backoff::default(),
            told: Mutex::default(),
        }
    }

    /// Runs the controller until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let by_name =
            |name: &str| watcher::Config::default().fields(&format!("metadata.name={name}"));
        let configs = Api::<MutatingWebhookConfiguration>::all(self.client.clone());
        let secrets = Api::<Secret>::namespaced(self.client.clone(), &self.names.namespace);
        let config = self.names.config.clone();
        let due = self.leading.everything_due();
        let controller = Controller::new(configs, by_name(&self.names.config))
            .watches(secrets, by_name(&self.names.secret), move |_: Secret| {
                Some(ObjectRef::<MutatingWebhookConfiguration>::new(&config))
            })
            .reconcile_all_on(due);
        let store = controller.store();
        let ctx = Arc::new(self);
        let missing = ctx.clone().while_config_missing(store, stop.clone());
        let controller = controller
            .graceful_shutdown_on(stopped(stop.clone()))
            .run(reconcile, error_policy, ctx)
            .for_each(|outcome| async move { log_outcome("webhook TLS", outcome) });
        until_stopped(
            async {
                tokio::join!(controller, missing);
            },
            stop,
        )
        .await;
    }

    /// Every [`RESYNC`] while leading, when the controller has nothing to reconcile —
    /// the configuration is not there, or could not be listed (RBAC of an older version,
    /// a `--webhook-config` the ClusterRole does not name) — keeps the Secret and says
    /// what is wrong (a refusal names the flag and the role to add it to).
    async fn while_config_missing(
        self: Arc<Self>,
        store: Store<MutatingWebhookConfiguration>,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::timeout(READY_WAIT, store.wait_until_ready()) => {}
        }
        let mut tick = tokio::time::interval(RESYNC);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(ca) = self.leading.ca() else {
                *self.told.lock().unwrap_or_else(PoisonError::into_inner) = Told::default();
                continue;
            };
            let listed = store
                .wait_until_ready()
                .now_or_never()
                .is_some_and(|r| r.is_ok());
            if listed && !store.is_empty() {
                continue;
            }
            match self.tls.reconcile(&ca, SystemTime::now()).await {
                Ok(outcome) => self.tell(&outcome),
                Err(error) => {
                    tracing::warn!(%error, "webhook TLS not brought up to date; retrying")
                }
            }
        }
    }

    /// Logs what lasts once (the configuration missing) or now and then (the CA ending).
    fn tell(&self, outcome: &WebhookOutcome) {
        let mut told = self.told.lock().unwrap_or_else(PoisonError::into_inner);
        match &outcome.ca_ending {
            Some(ending) => {
                if told.ca_ending.is_none_or(|at| at.elapsed() >= MAX_WAIT) {
                    tracing::error!(
                        secret = %self.names.secret,
                        "webhook certificate not renewed: {ending}"
                    );
                    told.ca_ending = Some(Instant::now());
                }
            }
            None => told.ca_ending = None,
        }
        if outcome.config_missing {
            if !std::mem::replace(&mut told.config_missing, true) {
                tracing::warn!(
                    config = %self.names.config,
                    "MutatingWebhookConfiguration not found, so the injector is not called: install it with `kubectl apply -k manifests/`"
                );
            }
        } else {
            told.config_missing = false;
        }
    }
}

/// Brings the webhook's certificate and `caBundle` up to date, when leading; again in
/// [`RESYNC`], to renew in time.
pub async fn reconcile(
    _config: Arc<MutatingWebhookConfiguration>,
    ctx: Arc<WebhookUpkeep>,
) -> Result<Action, WebhookError> {
    // A follower looks again later (no request): should leadership come back unseen,
    // renewal is still scheduled. What it told is told again by a future term.
    let Some(ca) = ctx.leading.ca() else {
        *ctx.told.lock().unwrap_or_else(PoisonError::into_inner) = Told::default();
        return Ok(Action::requeue(RESYNC));
    };
    let outcome = ctx.tls.reconcile(&ca, SystemTime::now()).await?;
    ctx.tell(&outcome);
    ctx.backoff.succeeded(&ctx.names.config);
    Ok(Action::requeue(RESYNC))
}

/// A failed round is retried with backoff.
pub fn error_policy(
    _config: Arc<MutatingWebhookConfiguration>,
    error: &WebhookError,
    ctx: Arc<WebhookUpkeep>,
) -> Action {
    let delay = ctx.backoff.failed(&ctx.names.config);
    tracing::warn!(%error, retry_in = ?delay, "webhook TLS not brought up to date");
    Action::requeue(delay)
}
