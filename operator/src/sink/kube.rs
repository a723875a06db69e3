//! Statuses and events written to the Kubernetes API.

use braid_crds::{AccessPolicy, EncryptionPolicy, SelfHealing, TrafficRoute};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::{Event, StatusError, StatusSink, StatusUpdate};
use crate::registry::{Kind, ObjectKey};

/// The field manager of the operator's server-side applies, and the reporting
/// controller of its events.
pub const FIELD_MANAGER: &str = "braid-operator";

/// Events API limits (events.k8s.io/v1): longer values are refused, so they are cut.
const MAX_NOTE_BYTES: usize = 1024;
const MAX_REASON_BYTES: usize = 128;

/// Writes statuses with server-side apply on the status subresource (the operator's
/// field manager owns the whole status, so each apply replaces it, and `force` takes
/// fields over from a manager that wrote them before), and events with kube-runtime's
/// [`Recorder`], which folds repeats into one event with a count.
pub struct KubeSink {
    client: Client,
    recorder: Recorder,
}

impl KubeSink {
    /// A sink writing through `client`; `instance` (the pod name) tells replicas' events
    /// apart.
    pub fn new(client: Client, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance,
            },
        );
        Self { client, recorder }
    }

    fn api(&self, kind: Kind, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &api_resource(kind))
    }
}

/// The API resource of a braid kind.
pub fn api_resource(kind: Kind) -> ApiResource {
    match kind {
        Kind::TrafficRoute => ApiResource::erase::<TrafficRoute>(&()),
        Kind::EncryptionPolicy => ApiResource::erase::<EncryptionPolicy>(&()),
        Kind::SelfHealing => ApiResource::erase::<SelfHealing>(&()),
        Kind::AccessPolicy => ApiResource::erase::<AccessPolicy>(&()),
    }
}

/// The apply body for `update`: the object's identity and its whole status, nothing else.
pub fn status_patch(update: &StatusUpdate) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": format!("{}/{}", braid_crds::GROUP, braid_crds::VERSION),
        "kind": update.kind.as_str(),
        "metadata": {
            "name": update.key.name,
            "namespace": update.key.namespace,
        },
        "status": update.status,
    })
}

fn failed(what: &str, kind: Kind, key: &ObjectKey, e: impl ToString) -> StatusError {
    StatusError {
        what: format!("{what} of {kind} {key}"),
        message: e.to_string(),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl StatusSink for KubeSink {
    /// A resource deleted before its status was written is not an error: there is
    /// nothing left to describe.
    fn apply<'a>(&'a self, update: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async move {
            let params = PatchParams::apply(FIELD_MANAGER).force();
            let result = self
                .api(update.kind, &update.key.namespace)
                .patch_status(
                    &update.key.name,
                    &params,
                    &Patch::Apply(&status_patch(update)),
                )
                .await;
            match result {
                Ok(_) => Ok(()),
                Err(e) if is_not_found(&e) => {
                    tracing::debug!(kind = %update.kind, key = %update.key, "gone before its status was written");
                    Ok(())
                }
                Err(e) => Err(failed("status", update.kind, &update.key, e)),
            }
        })
    }

    /// A GET, which the API server answers from etcd (a quorum read), not from a watch
    /// cache that may lag the last leader's writes.
    fn read<'a>(
        &'a self,
        kind: Kind,
        key: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>> {
        Box::pin(async move {
            match self.api(kind, &key.namespace).get_status(&key.name).await {
                Ok(mut obj) => Ok(obj.data.get_mut("status").map(serde_json::Value::take)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(failed("status read", kind, key, e)),
            }
        })
    }

    /// The event regards the resource by uid too, which `kubectl describe` matches on, so
    /// the resource is read first; one already deleted gets no event.
    fn event<'a>(&'a self, event: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async move {
            let api = self.api(event.kind, &event.key.namespace);
            let meta = match api.get_metadata(&event.key.name).await {
                Ok(meta) => meta.metadata,
                Err(e) if is_not_found(&e) => return Ok(()),
                Err(e) => return Err(failed("event", event.kind, &event.key, e)),
            };
            let regarding = ObjectReference {
                api_version: Some(format!("{}/{}", braid_crds::GROUP, braid_crds::VERSION)),
                kind: Some(event.kind.as_str().into()),
                namespace: Some(event.key.namespace.clone()),
                name: Some(event.key.name.clone()),
                uid: meta.uid,
                ..Default::default()
            };
            let reason = truncate(&event.reason, MAX_REASON_BYTES);
            let note = truncate(&event.note, MAX_NOTE_BYTES);
            let published = KubeEvent {
                type_: if event.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                },
                action: action(reason, note),
                reason: reason.to_string(),
                note: Some(note.to_string()),
                secondary: None,
            };
            self.recorder
                .publish(&published, &regarding)
                .await
                .map_err(|e| failed("event", event.kind, &event.key, e))
        })
    }
}

/// The event's `action`. The Recorder folds events with the same type, reason and action
/// into one (adding to its count, keeping the first note); with the note's digest in the
/// action only true repeats fold, and an event with a new message is not shown under an
/// old one. `kubectl describe` does not show the action.
fn action(reason: &str, note: &str) -> String {
    let digest = Sha256::digest(note.as_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{short}", truncate(reason, MAX_REASON_BYTES - 9))
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_apply_body_is_identity_and_status() {
        let update = StatusUpdate {
            kind: Kind::EncryptionPolicy,
            key: ObjectKey::new("shop", "strict"),
            status: serde_json::json!({"observedGeneration": 4}),
        };
        assert_eq!(
            status_patch(&update),
            serde_json::json!({
                "apiVersion": "braid.dev/v1alpha1",
                "kind": "EncryptionPolicy",
                "metadata": {"name": "strict", "namespace": "shop"},
                "status": {"observedGeneration": 4},
            })
        );
    }

    #[test]
    fn actions_differ_by_note_and_fit_the_limit() {
        assert_eq!(action("Invalid", "a"), action("Invalid", "a"));
        assert_ne!(action("Invalid", "a"), action("Invalid", "b"));
        assert!(action("Invalid", "a").starts_with("Invalid-"));
        assert!(action(&"R".repeat(300), "a").len() <= MAX_REASON_BYTES);
    }

    #[test]
    fn truncation_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
