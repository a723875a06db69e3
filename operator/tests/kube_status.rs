#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! KubeSink: statuses written with server-side apply on the status subresource and events
//! through the Recorder, against kube-fake-client's in-memory API server (and, for the
//! exact request a real API server receives, a scripted one).

mod kube_mock;

use std::sync::{Arc, Mutex};

use braid_crds::TrafficRoute;
use braid_operator::registry::{Kind, ObjectKey};
use braid_operator::sink::kube::FIELD_MANAGER;
use braid_operator::sink::{Event, KubeSink, StatusSink, StatusUpdate};
use k8s_openapi::api::events::v1::Event as KubeEvent;
use kube::Api;
use kube::api::ListParams;
use kube_fake_client::interceptor::{self, PatchStatusContext};
use kube_fake_client::{ClientBuilder, PatchType};

/// kube-fake-client enables a status subresource by a type with `Default`, which
/// braid's resources do not have: a stand-in of the same group, version and kind.
mod gvk {
    #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, Default)]
    #[kube(
        group = "braid.dev",
        version = "v1alpha1",
        kind = "TrafficRoute",
        namespaced,
        schema = "disabled",
        derive = "Default"
    )]
    pub struct Spec {}
}

fn route() -> TrafficRoute {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "braid.dev/v1alpha1",
        "kind": "TrafficRoute",
        "metadata": {"namespace": "shop", "name": "payments", "generation": 1},
        "spec": {
            "host": "payments",
            "groups": [{"name": "v1", "labels": {"version": "v1"}}],
            "rules": [{"name": "all", "route": [{"group": "v1", "weight": 100}]}]
        }
    }))
    .unwrap()
}

fn accepted(generation: i64, ok: bool, message: &str) -> StatusUpdate {
    StatusUpdate {
        kind: Kind::TrafficRoute,
        key: ObjectKey::new("shop", "payments"),
        status: serde_json::json!({
            "observedGeneration": generation,
            "conditions": [{
                "type": "Accepted",
                "status": if ok { "True" } else { "False" },
                "reason": if ok { "Accepted" } else { "Invalid" },
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": "2026-11-22T01:02:03Z",
            }],
            "ruleCount": 1,
        }),
    }
}

/// Patch-status requests seen: field manager, force, patch type.
type Seen = Arc<Mutex<Vec<(Option<String>, bool, PatchType)>>>;

async fn fake() -> (kube::Client, Seen) {
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let client = ClientBuilder::new()
        .with_resource::<TrafficRoute>()
        .with_status_subresource::<gvk::TrafficRoute>()
        .with_object(route())
        .with_interceptor_funcs(interceptor::Funcs::new().patch_status(
            move |ctx: PatchStatusContext| {
                record.lock().unwrap().push((
                    ctx.params.field_manager.clone(),
                    ctx.params.force,
                    ctx.patch_type,
                ));
                Ok(None)
            },
        ))
        .build()
        .await
        .unwrap();
    (client, seen)
}

#[tokio::test]
async fn a_status_is_applied_and_a_second_apply_replaces_it() {
    let (client, seen) = fake().await;
    let sink = KubeSink::new(client.clone(), Some("braid-operator-0".into()));
    let routes: Api<TrafficRoute> = Api::namespaced(client, "shop");

    sink.apply(&accepted(1, true, "in force")).await.unwrap();
    let status = routes.get("payments").await.unwrap().status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.rule_count, Some(1));
    assert_eq!(status.conditions.len(), 1);
    let c = &status.conditions[0];
    assert_eq!((c.type_.as_str(), c.status.as_str()), ("Accepted", "True"));
    assert_eq!(c.message, "in force");

    sink.apply(&accepted(2, false, "spec.rules[0]: bad"))
        .await
        .unwrap();
    let after = routes.get("payments").await.unwrap();
    let status = after.status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.conditions.len(), 1);
    let c = &status.conditions[0];
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Invalid"));
    assert_eq!(c.message, "spec.rules[0]: bad");
    // The status subresource leaves the spec alone.
    assert_eq!(after.spec, route().spec);

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (manager, force, patch_type) in seen.iter() {
        assert_eq!(manager.as_deref(), Some(FIELD_MANAGER));
        assert!(force, "force: the operator owns the status");
        assert_eq!(*patch_type, PatchType::ApplyPatch);
    }
}

#[tokio::test]
async fn a_status_is_read_back_from_the_api_server_and_none_is_not_an_error() {
    let (client, _) = fake().await;
    let sink = KubeSink::new(client, None);
    let key = ObjectKey::new("shop", "payments");
    assert_eq!(
        sink.read(Kind::TrafficRoute, &key).await.unwrap(),
        None,
        "no status written yet"
    );
    sink.apply(&accepted(3, true, "in force")).await.unwrap();
    let read = sink.read(Kind::TrafficRoute, &key).await.unwrap().unwrap();
    assert_eq!(read["observedGeneration"], 3);
    assert_eq!(read["conditions"][0]["message"], "in force");
    let deleted = ObjectKey::new("shop", "deleted");
    assert_eq!(sink.read(Kind::TrafficRoute, &deleted).await.unwrap(), None);
}

#[tokio::test]
async fn the_status_of_a_deleted_resource_is_not_an_error() {
    let (client, _) = fake().await;
    let sink = KubeSink::new(client, None);
    let mut gone = accepted(1, true, "in force");
    gone.key = ObjectKey::new("shop", "deleted");
    sink.apply(&gone).await.unwrap();
}

#[tokio::test]
async fn events_regard_the_resource() {
    let (client, _) = fake().await;
    let sink = KubeSink::new(client.clone(), Some("braid-operator-0".into()));
    let uid = Api::<TrafficRoute>::namespaced(client.clone(), "shop")
        .get("payments")
        .await
        .unwrap()
        .metadata
        .uid;
    let invalid = Event {
        kind: Kind::TrafficRoute,
        key: ObjectKey::new("shop", "payments"),
        reason: "Invalid".into(),
        note: "spec.rules[0].route[0].group: no group v9".into(),
        warning: true,
    };
    // A true repeat folds into the first event (a series), rather than a second event.
    sink.event(&invalid).await.unwrap();
    sink.event(&invalid).await.unwrap();
    sink.event(&Event {
        kind: Kind::TrafficRoute,
        key: ObjectKey::new("shop", "payments"),
        reason: "Accepted".into(),
        note: "in force".into(),
        warning: false,
    })
    .await
    .unwrap();
    // No event about a resource that no longer exists.
    sink.event(&Event {
        kind: Kind::TrafficRoute,
        key: ObjectKey::new("shop", "deleted"),
        reason: "Invalid".into(),
        note: "x".into(),
        warning: true,
    })
    .await
    .unwrap();

    let events = Api::<KubeEvent>::namespaced(client, "shop")
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(events.len(), 2);
    let warning = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Warning"))
        .unwrap();
    assert_eq!(warning.reason.as_deref(), Some("Invalid"));
    assert_eq!(
        warning.note.as_deref(),
        Some("spec.rules[0].route[0].group: no group v9")
    );
    assert_eq!(warning.series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(warning.reporting_controller.as_deref(), Some(FIELD_MANAGER));
    assert_eq!(
        warning.reporting_instance.as_deref(),
        Some("braid-operator-0")
    );
    let regarding = warning.regarding.as_ref().unwrap();
    assert_eq!(regarding.api_version.as_deref(), Some("braid.dev/v1alpha1"));
    assert_eq!(regarding.kind.as_deref(), Some("TrafficRoute"));
    assert_eq!(regarding.name.as_deref(), Some("payments"));
    assert!(uid.is_some());
    assert_eq!(regarding.uid, uid, "kubectl describe matches on the uid");
    let normal = events
        .iter()
        .find(|e| e.type_.as_deref() == Some("Normal"))
        .unwrap();
    assert_eq!(normal.reason.as_deref(), Some("Accepted"));
}

/// What a real API server receives: kube-fake-client merges an apply like a merge patch
/// and does not show the wire format, so the request itself is checked here.
#[tokio::test]
async fn the_apply_request_on_the_wire() {
    let (client, log) = kube_mock::client(|r| {
        let mut answer = r.body.clone();
        answer["metadata"]["uid"] = "u-1".into();
        (http::StatusCode::OK, answer)
    });
    KubeSink::new(client, None)
        .apply(&accepted(3, true, "in force"))
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let r = &log[0];
    assert_eq!(r.method, http::Method::PATCH);
    assert_eq!(
        r.path,
        "/apis/braid.dev/v1alpha1/namespaces/shop/trafficroutes/payments/status"
    );
    let mut query: Vec<&str> = r.query.split('&').filter(|p| !p.is_empty()).collect();
    query.sort();
    assert_eq!(query, ["fieldManager=braid-operator", "force=true"]);
    assert_eq!(r.content_type, "application/apply-patch+yaml");
    assert_eq!(
        r.body,
        serde_json::json!({
            "apiVersion": "braid.dev/v1alpha1",
            "kind": "TrafficRoute",
            "metadata": {"name": "payments", "namespace": "shop"},
            "status": accepted(3, true, "in force").status,
        })
    );
}
