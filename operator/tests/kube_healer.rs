#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The healer's Kubernetes path against a scripted API server: evictions for
//! RestartPod (a PodDisruptionBudget's refusal respected), the quarantine label added
//! and removed, the hourly budget, and nothing at all from a replica that does not lead.

mod kube_mock;

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_api::control::Ejection;
use braid_operator::healer::{
    Act, ActError, Actuator, Healer, HealingView, KubeActuator, ReportBatch, Request,
};
use braid_operator::hub::Published;
use braid_operator::registry::{Kind, ObjectKey, Snapshot};
use braid_operator::sink::{Event, StatusError, StatusSink, StatusUpdate};
use braid_operator::source::dir::registry_file;
use braid_operator::source::dir::resources::{Generations, parse_file};
use futures::future::BoxFuture;
use http::{Method, StatusCode};
use kube_mock::{Log, client, failure};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
- {name: payments-b, namespace: shop, ips: [10.0.0.2], labels: {app: payments}, serviceAccount: payments}
- {name: payments-c, namespace: shop, ips: [10.0.0.3], labels: {app: payments}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
"#;

fn snapshot(action: &str, per_hour: u32) -> Snapshot {
    let (services, workloads) = registry_file::parse(REGISTRY).unwrap().resolve().unwrap();
    let mut snap = Snapshot {
        services,
        workloads,
        ..Default::default()
    };
    let healing = format!(
        "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{name: heal, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: payments}}}}\n  outlierDetection: {{consecutiveErrors: 3}}\n  healing: {{action: {action}, cooldown: 1s, minReporters: 1, maxActionsPerHour: {per_hour}}}\n"
    );
    Generations::default().insert_all(&parse_file(&healing).unwrap(), &mut snap);
    snap
}

fn request(act: Act, pod: &str, snap: &Snapshot) -> Request {
    Request {
        act,
        healing: ObjectKey::new("shop", "heal"),
        pod: snap.workloads[&ObjectKey::new("shop", pod)].clone(),
        endpoint: None,
    }
}

fn ok() -> (StatusCode, serde_json::Value) {
    (
        StatusCode::CREATED,
        serde_json::json!({"apiVersion": "v1", "kind": "Status", "status": "Success"}),
    )
}

fn pod() -> (StatusCode, serde_json::Value) {
    (
        StatusCode::OK,
        serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "payments-a", "namespace": "shop"}}),
    )
}

#[tokio::test]
async fn restart_evicts_and_a_disruption_budget_refusal_is_respected() {
    let snap = snapshot("RestartPod", 3);
    let (c, log) = client(|r| {
        if r.path.ends_with("payments-b/eviction") {
            failure(
                429,
                "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.",
            )
        } else {
            ok()
        }
    });
    let actuator = KubeActuator::new(c);
    actuator
        .act(&request(Act::Restart, "payments-a", &snap))
        .await
        .unwrap();
    let err = actuator
        .act(&request(Act::Restart, "payments-b", &snap))
        .await
        .unwrap_err();
    assert!(matches!(err, ActError::Blocked(_)), "{err}");
    assert!(err.to_string().contains("PodDisruptionBudget"), "{err}");
    let log = log.lock().unwrap();
    assert_eq!(log[0].method, Method::POST);
    assert_eq!(
        log[0].path,
        "/api/v1/namespaces/shop/pods/payments-a/eviction"
    );
    assert_eq!(log[0].body["metadata"]["name"], "payments-a");
}

#[tokio::test]
async fn quarantine_adds_the_labels_and_readmission_removes_them() {
    let snap = snapshot("RemoveFromService", 3);
    let (c, log) = client(|_| pod());
    let actuator = KubeActuator::new(c);
    actuator
        .act(&request(Act::Quarantine, "payments-a", &snap))
        .await
        .unwrap();
    actuator
        .act(&request(Act::Readmit, "payments-a", &snap))
        .await
        .unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2);
    for r in log.iter() {
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(r.path, "/api/v1/namespaces/shop/pods/payments-a");
        assert_eq!(r.content_type, "application/merge-patch+json");
        assert!(
            r.query.contains("fieldManager=braid-operator"),
            "{}",
            r.query
        );
    }
    assert_eq!(
        log[0].body,
        serde_json::json!({"metadata": {"labels": {"braid.dev/quarantined": "true", "braid.dev/quarantined-by": "heal"}}})
    );
    assert_eq!(
        log[1].body,
        serde_json::json!({"metadata": {"labels": {"braid.dev/quarantined": null, "braid.dev/quarantined-by": null}}})
    );
}

struct NoEvents;

impl StatusSink for NoEvents {
    fn apply<'a>(&'a self, _: &'a StatusUpdate) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async { Ok(()) })
    }
    fn event<'a>(&'a self, _: &'a Event) -> BoxFuture<'a, Result<(), StatusError>> {
        Box::pin(async { Ok(()) })
    }
    fn read<'a>(
        &'a self,
        _: Kind,
        _: &'a ObjectKey,
    ) -> BoxFuture<'a, Result<Option<serde_json::Value>, StatusError>> {
        Box::pin(async { Ok(None) })
    }
}

/// Runs a healer over `snap` whose leadership `leader` sets, acting through a client
/// that accepts everything; every pod of payments is reported by one proxy.
async fn heal(
    snap: Snapshot,
    leader: bool,
) -> (
    Log,
    watch::Sender<bool>,
    CancellationToken,
    watch::Receiver<Arc<HealingView>>,
) {
    let (c, log) = client(|_| ok());
    let (reports, reports_rx) = mpsc::channel(16);
    let (leader_tx, leader_rx) = watch::channel(leader);
    let (view, view_rx) = watch::channel(Arc::new(HealingView::new()));
    let out = braid_operator::compiler::compile(&snap, &Default::default());
    let published = Published {
        snapshot: Arc::new(snap),
        configs: out.configs,
        catalog: out.catalog,
        seen_at: Instant::now(),
    };
    let (published_tx, published_rx) = watch::channel(Some(Arc::new(published)));
    let stop = CancellationToken::new();
    let healer = Healer {
        reports: reports_rx,
        published: published_rx,
        actuator: Arc::new(KubeActuator::new(c)),
        sink: Arc::new(NoEvents),
        leader: leader_rx,
        view,
    };
    let run_stop = stop.clone();
    tokio::spawn(async move {
        let _keep = published_tx;
        healer.run(run_stop).await
    });
    let ejections = ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
        .iter()
        .map(|ip| Ejection {
            target: "payments.shop:80".into(),
            endpoint: format!("{ip}:8080").parse().unwrap(),
            reason: "consecutive_errors".into(),
            duration_ms: 60_000,
        })
        .collect();
    reports
        .send(ReportBatch {
            reporter: ObjectKey::new("shop", "checkout"),
            ejections,
        })
        .await
        .unwrap();
    // Kept open: the healer ends when its report queue closes.
    std::mem::forget(reports);
    (log, leader_tx, stop, view_rx)
}

fn evictions(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.path.ends_with("/eviction"))
        .map(|r| r.path.clone())
        .collect()
}

#[tokio::test]
async fn a_replica_that_does_not_lead_does_nothing_and_the_leader_keeps_the_budget() {
    let (log, leader, stop, view) = heal(snapshot("RestartPod", 2), false).await;
    // Well past the 1 s cooldown: the follower sees the endpoints but sends nothing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());
    assert_eq!(
        view.borrow()[&ObjectKey::new("shop", "heal")]
            .unhealthy
            .len(),
        3
    );

    // Leading now: two of the three pods are evicted, the hourly budget of 2 holds.
    leader.send_replace(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let evicted = evictions(&log);
    assert_eq!(evicted.len(), 2, "{evicted:?}");
    assert_eq!(
        evicted,
        [
            "/api/v1/namespaces/shop/pods/payments-a/eviction",
            "/api/v1/namespaces/shop/pods/payments-b/eviction"
        ]
    );
    let state = view.borrow()[&ObjectKey::new("shop", "heal")].clone();
    assert_eq!(state.actions.len(), 2);
    assert_eq!(state.unhealthy.len(), 1, "payments-c waits for the budget");
    stop.cancel();
}
