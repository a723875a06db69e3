//! The Kubernetes source (`--source kube`): kube-runtime reflectors over Services,
//! EndpointSlices, Pods, opted-in Namespaces and the three braid resources.
//!
//! The watching is thin; what the objects mean is decided by pure functions, each in its
//! own file and tested with objects built in code: [`service`] (Service + EndpointSlices),
//! [`workload`] (Pod), [`resource`] (braid resources), [`snapshot`] (all of it at once),
//! and [`publish`] (when a snapshot goes out).

pub mod protocol;
pub mod publish;
pub mod resource;
pub mod service;
pub mod snapshot;
pub mod workload;

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Source, SourceError};
use crate::registry::Snapshot;
use crate::registry::progress::progress_part;
use publish::{Signal, Watched};
use snapshot::{Assembler, Objects};
use workload::{INJECT_ENABLED, INJECT_KEY};

/// How long changes are gathered into one snapshot unless told otherwise.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(50);

/// Watches the cluster `client` talks to.
pub struct KubeSource {
    client: Client,
    debounce: Duration,
}

/// The operator may not read something it watches.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The API server answered, and said no: retrying will not help.
    #[error("{what}: {message}")]
    Refused {
        /// What could not be listed.
        what: Watched,
        /// Why, and what to do.
        message: String,
    },
    /// The API server could not be asked (or failed); worth retrying.
    #[error("listing {what}: {message}")]
    Unreachable {
        /// What could not be listed.
        what: Watched,
        /// The error.
        message: String,
    },
}

impl KubeSource {
    /// A source over `client`'s cluster, gathering changes for [`DEFAULT_DEBOUNCE`].
    pub fn new(client: Client) -> Self {
        Self {
            client,
            debounce: DEFAULT_DEBOUNCE,
        }
    }

    /// Gathers changes arriving within `debounce` into one snapshot.
    pub fn with_debounce(mut self, debounce: Duration) -> Self {
        self.debounce = debounce;
        self
    }

    /// Lists one object of every watched kind, so a missing CRD or RBAC rule stops the
    /// operator at start with a message saying what to apply, instead of a source that
    /// never syncs.
    pub async fn check_access(&self) -> Result<(), AccessError> {
        let c = &self.client;
        can_list(Api::<Service>::all(c.clone()), Watched::Services).await?;
        can_list(
            Api::<EndpointSlice>::all(c.clone()),
            Watched::EndpointSlices,
        )
        .await?;
        can_list(Api::<Pod>::all(c.clone()), Watched::Pods).await?;
        can_list(Api::<Namespace>::all(c.clone()), Watched::Namespaces).await?;
        for (ar, what) in braid_resources() {
            can_list(Api::<DynamicObject>::all_with(c.clone(), &ar), what).await?;
        }
        Ok(())
    }
}

/// The four braid kinds, watched untyped so that one object this build cannot read (from
/// a newer CRD, say) is reported in its status rather than breaking the whole watch.
fn braid_resources() -> [(ApiResource, Watched); 4] {
    [
        (
            ApiResource::erase::<TrafficRoute>(&()),
            Watched::TrafficRoutes,
        ),
        (
            ApiResource::erase::<EncryptionPolicy>(&()),
            Watched::EncryptionPolicies,
        ),
        (
            ApiResource::erase::<SelfHealing>(&()),
            Watched::SelfHealings,
        ),
        (
            ApiResource::erase::<AccessPolicy>(&()),
            Watched::AccessPolicies,
        ),
    ]
}

async fn can_list<K>(api: Api<K>, what: Watched) -> Result<(), AccessError>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) => match status.code {
            401 => Err(AccessError::Refused {
                what,
                message: "the API server does not accept the operator's credentials".into(),
            }),
            403 => Err(AccessError::Refused {
                what,
                message: format!(
                    "the operator's service account may not list it ({}): apply manifests/rbac/operator.yaml",
                    status.message
                ),
            }),
            404 if what.is_braid() => Err(AccessError::Refused {
                what,
                message: "not a resource of this cluster: install braid's CRDs (kubectl apply -f manifests/crds/)".into(),
            }),
            _ => Err(AccessError::Unreachable {
                what,
                message: format!("{} ({})", status.message, status.code),
            }),
        },
        Err(e) => Err(AccessError::Unreachable {
            what,
            message: e.to_string(),
        }),
    }
}

impl Source for KubeSource {
    async fn run(
        self,
        out: watch::Sender<Arc<Snapshot>>,
        stop: CancellationToken,
    ) -> Result<(), SourceError> {
        let mut delay = Duration::from_secs(1);
        loop {
            match self.check_access().await {
                Ok(()) => break,
                Err(e @ AccessError::Refused { .. }) => {
                    return Err(SourceError::Kube(e.to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "kubernetes API not reachable");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }

        let client = self.client;
        let config = watcher::Config::default;
        let (services, writer) = reflector::store::<Service>();
        let services_signals = signals(
            watcher(Api::<Service>::all(client.clone()), config())
                .default_backoff()
                .modify(drop_managed_fields)
                .reflect(writer),
            Watched::Services,
        );
        let (slices, writer) = reflector::store::<EndpointSlice>();
        let slices_signals = signals(
            watcher(Api::<EndpointSlice>::all(client.clone()), config())
                .default_backoff()
                .modify(drop_managed_fields)
                .reflect(writer),
            Watched::EndpointSlices,
        );
        let (pods, writer) = reflector::store::<Pod>();
        let pods_signals = signals(
            watcher(Api::<Pod>::all(client.clone()), config())
                .default_backoff()
                .modify(workload::slim_pod)
                .reflect(writer),
            Watched::Pods,
        );
        // Only opted-in namespaces, metadata only: a namespace whose label is removed
        // leaves the selection, which the watch reports as a deletion.
        let (namespaces, writer) = reflector::store::<PartialObjectMeta<Namespace>>();
        let namespaces_signals = signals(
            watcher(
                Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
                config().labels(&format!("{INJECT_KEY}={INJECT_ENABLED}")),
            )
            .default_backoff()
            .reflect(writer),
            Watched::Namespaces,
        );
        let [
            (routes, routes_signals),
            (policies, policies_signals),
            (healings, healings_signals),
            (access, access_signals),
        ] = braid_resources().map(|(ar, what)| {
            let events = watcher(
                Api::<DynamicObject>::all_with(client.clone(), &ar),
                config(),
            )
            .default_backoff();
            let writer = reflector::store::Writer::<DynamicObject>::new(ar);
            let store = writer.as_reader();
            let stream = events
                .modify(move |obj| slim_resource(what, obj))
                .reflect(writer);
            (store, signals(stream, what))
        });
        let all_signals = vec![
            services_signals,
            slices_signals,
            pods_signals,
            namespaces_signals,
            routes_signals,
            policies_signals,
            healings_signals,
            access_signals,
        ];

        let mut assembler = Assembler::default();
        let build = || {
            assembler.snapshot(&Objects {
                services: services.state(),
                endpoint_slices: slices.state(),
                pods: pods.state(),
                meshed_namespaces: namespaces.state().iter().map(|n| n.name_any()).collect(),
                traffic_routes: routes.state(),
                encryption_policies: policies.state(),
                self_healings: healings.state(),
                access_policies: access.state(),
            })
        };
        publish::publish(
            futures::stream::select_all(all_signals),
            self.debounce,
            build,
            &out,
            &stop,
        )
        .await;
        Ok(())
    }
}

/// A watch stream as change signals; its errors are logged (the stream retries them with
/// backoff, keeping the store as it was).
fn signals<K: Send + 'static>(
    stream: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    watched: Watched,
) -> BoxStream<'static, Signal> {
    stream
        .filter_map(move |event| {
            futures::future::ready(match event {
                Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(Signal {
                    watched,
                    synced: false,
                }),
                Ok(watcher::Event::InitDone) => Some(Signal {
                    watched,
                    synced: true,
                }),
                // The store changes only when the list is complete (InitDone).
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
                Err(e) => {
                    tracing::warn!(resource = %watched, error = %e, "watch failed; retrying");
                    None
                }
            })
        })
        .boxed()
}

/// Server-side apply bookkeeping: often the largest part of an object, never read here.
fn drop_managed_fields<K: Resource>(obj: &mut K)
where
    K::DynamicType: Eq + Hash,
{
    obj.meta_mut().managed_fields = None;
}

/// A braid resource as kept: without bookkeeping, and without its status (the
/// operator's own output) except the rollout progress of an EncryptionPolicy or an
/// AccessPolicy, which every replica compiles with and a new leader resumes from.
fn slim_resource(what: Watched, obj: &mut DynamicObject) {
    obj.metadata.managed_fields = None;
    if let Some(data) = obj.data.as_object_mut() {
        let progress = match what {
            Watched::EncryptionPolicies | Watched::AccessPolicies => {
                data.get("status").and_then(progress_part)
            }
            _ => None,
        };
        match progress {
            Some(p) => data.insert("status".into(), p),
            None => data.remove("status"),
        };
    }
}
