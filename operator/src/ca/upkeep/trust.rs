//! The trust ConfigMap's controller: one reconcile per opted-in Namespace, which applies
//! `braid-operator-ca` there unless it already holds the CA's bundle. It watches those
//! ConfigMaps too, so one deleted or edited is put back at once.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use super::{Backoff, Leading, log_outcome, stopped, until_stopped};
use crate::ca::secret::MANAGED_BY;
use crate::ca::trust::{TRUST_CONFIGMAP, configmap_patch, up_to_date};
use crate::sink::kube::FIELD_MANAGER;
use crate::source::kube::workload::{INJECT_ENABLED, INJECT_KEY};

/// With nothing happening, each namespace's ConfigMap is read again this often: a safety
/// net under the watch, which already reports edits and deletions.
pub const TRUST_RECHECK: Duration = Duration::from_secs(600);
/// Namespaces reconciled at once.
const CONCURRENCY: u16 = 8;

/// A namespace's ConfigMap could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{what} ConfigMap {namespace}/{TRUST_CONFIGMAP}: {source}")]
pub struct TrustError {
    /// Reading or applying.
    what: &'static str,
    /// The namespace.
    namespace: String,
    /// The API's error.
    #[source]
    source: kube::Error,
}

/// What the trust reconciles share.
pub struct TrustUpkeep {
    client: Client,
    leading: Leading,
    backoff: Backoff,
}

impl TrustUpkeep {
    /// Writes through `client` (get, create and patch of the ConfigMaps), while and with
    /// what `leading` says.
    pub fn new(client: Client, leading: Leading) -> Self {
        Self {
            client,
            leading,
            backoff: Backoff::default(),
        }
    }

    /// Runs the controller until `stop`: watches the opted-in Namespaces and braid's
    /// ConfigMaps (every replica), writes while leading.
    pub async fn run(self, stop: CancellationToken) {
        let namespaces = Api::<Namespace>::all(self.client.clone());
        let configmaps = Api::<ConfigMap>::all(self.client.clone());
        let due = self.leading.everything_due();
        let controller = Controller::new(
            namespaces,
            watcher::Config::default().labels(&format!("{INJECT_KEY}={INJECT_ENABLED}")),
        )
        .watches(
            configmaps,
            // By name (what RBAC grants a list and watch of), and braid's label: one
            // whose label is removed leaves the selection, which reads as a deletion.
            watcher::Config::default()
                .fields(&format!("metadata.name={TRUST_CONFIGMAP}"))
                .labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1)),
            |cm: ConfigMap| cm.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
        )
        .reconcile_all_on(due)
        // Gaining leadership reconciles every namespace: a few at a time, not a burst
        // the API server's fairness would answer with 429s.
        .with_config(controller::Config::default().concurrency(CONCURRENCY))
        .graceful_shutdown_on(stopped(stop.clone()))
        .run(reconcile, error_policy, Arc::new(self))
        .for_each(|outcome| async move { log_outcome("trust ConfigMaps", outcome) });
        until_stopped(controller, stop).await;
    }
}

/// Brings `namespace`'s ConfigMap to the CA's bundle, when leading.
pub async fn reconcile(
    namespace: Arc<Namespace>,
    ctx: Arc<TrustUpkeep>,
) -> Result<Action, TrustError> {
    // A follower looks again later (no request): should leadership come back unseen,
    // nothing is left unscheduled.
    let Some(ca) = ctx.leading.ca() else {
        return Ok(Action::requeue(TRUST_RECHECK));
    };
    // A namespace being deleted refuses new objects; its pods are going too.
    if namespace.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let failed = |what| {
        let namespace = name.clone();
        move |source| TrustError {
            what,
            namespace,
            source,
        }
    };
    let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &name);
    let existing = api
        .get_opt(TRUST_CONFIGMAP)
        .await
        .map_err(failed("reading"))?;
    let bundle = ca.trust_bundle();
    if !up_to_date(existing.as_ref(), bundle) {
        let applied = api
            .patch(
                TRUST_CONFIGMAP,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(configmap_patch(&name, bundle)),
            )
            .await;
        match applied {
            // The namespace is being deleted (the store has not seen it yet): nothing to do.
            Err(kube::Error::Api(status))
                if status.code == 403 && status.message.contains("being terminated") =>
            {
                return Ok(Action::await_change());
            }
            other => other.map_err(failed("applying"))?,
        };
        tracing::info!(namespace = %name, configmap = TRUST_CONFIGMAP, "trust bundle written");
    }
    ctx.backoff.succeeded(&name);
    Ok(Action::requeue(TRUST_RECHECK))
}

/// A failed namespace is retried on its own backoff; the others go on.
pub fn error_policy(
    namespace: Arc<Namespace>,
    error: &TrustError,
    ctx: Arc<TrustUpkeep>,
) -> Action {
    let delay = ctx.backoff.failed(&namespace.name_any());
    tracing::warn!(%error, retry_in = ?delay, "trust bundle not written");
    Action::requeue(delay)
}
