#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The leader's controllers of what the CA hands out — the proxies' trust ConfigMaps and
//! the webhook's Secret and caBundle — run as they run in the operator (kube-runtime
//! controllers over real list and watch requests) against an in-memory API server: only
//! the leader writes, a labelled namespace gets its ConfigMap, one deleted or edited by
//! hand is put back at once, a new CA reaches every object, a failing namespace is
//! retried on its own while the others are written.

mod kube_mock;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use braid_operator::ca::Ca;
use braid_operator::ca::upkeep::Leading;
use braid_operator::ca::upkeep::trust::TrustUpkeep;
use braid_operator::ca::upkeep::webhook::WebhookUpkeep;
use braid_operator::ca::webhook::WebhookNames;
use http::Method;
use kube_mock::cluster::{Cluster, Key};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const NS: &str = "braid-system";
const TRUST: &str = "braid-operator-ca";
const WEBHOOK_SECRET: &str = "braid-injector-tls";
const WEBHOOK_CONFIG: &str = "braid-injector";

/// How long anything asked of a controller may take on a loaded machine. The point is
/// that it is not the ten minutes of a timer.
const DEADLINE: Duration = Duration::from_secs(10);

fn namespace(name: &str, labelled: bool) -> (Key, Value) {
    let labels = if labelled {
        json!({"braid.dev/inject": "enabled"})
    } else {
        json!({})
    };
    (
        Key::cluster("namespaces", name),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
}

fn trust_key(ns: &str) -> Key {
    Key::namespaced("configmaps", ns, TRUST)
}

/// The bundle in `ns`'s trust ConfigMap, if it has one.
fn bundle_in(cluster: &Cluster, ns: &str) -> Option<String> {
    cluster
        .get(&trust_key(ns))
        .and_then(|cm| cm["data"]["ca.crt"].as_str().map(str::to_string))
}

/// Polls until `done` holds, for at most [`DEADLINE`].
async fn eventually(what: &str, done: impl Fn() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cluster` serves `watches` open watches of each of `resources`: the
/// controllers have listed and watch.
async fn watched(cluster: &Cluster, resources: &[&str]) {
    for resource in resources {
        eventually(&format!("a watch of {resource}"), || {
            cluster.watching(resource) > 0
        })
        .await;
    }
}

fn writes(log: &kube_mock::Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|r| r.method != Method::GET)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn ca() -> Arc<Ca> {
    Arc::new(Ca::generate_root(SystemTime::now()).unwrap())
}

struct Running {
    log: kube_mock::Log,
    leader: watch::Sender<bool>,
    ca: watch::Sender<Arc<Ca>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn bundle(&self) -> String {
        self.ca.borrow().trust_bundle().pem().to_string()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(DEADLINE, self.task)
            .await
            .expect("the controller stops when asked")
            .unwrap();
    }
}

fn start_trust(cluster: Cluster, leading: bool) -> Running {
    let (client, log) = cluster.client();
    let (leader, leader_rx) = watch::channel(leading);
    let (ca_tx, ca_rx) = watch::channel(ca());
    let stop = CancellationToken::new();
    let upkeep = TrustUpkeep::new(client, Leading::new(leader_rx, ca_rx));
    let task = tokio::spawn(upkeep.run(stop.clone()));
    Running {
        log,
        leader,
        ca: ca_tx,
        stop,
        task,
    }
}

#[tokio::test]
async fn trust_configmaps_follow_labelled_namespaces_are_restored_at_once_and_only_the_leader_writes()
 {
    let cluster = Cluster::default();
    for (name, labelled) in [("shop", true), ("web", true), ("other", false)] {
        let (key, ns) = namespace(name, labelled);
        cluster.put(key, ns);
    }
    let run = start_trust(cluster.clone(), false);
    watched(&cluster, &["namespaces", "configmaps"]).await;

    // A follower: it watches, and writes nothing, through a new CA and a deletion.
    run.ca.send_replace(ca());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(writes(&run.log).is_empty(), "{:?}", writes(&run.log));
    assert_eq!(bundle_in(&cluster, "shop"), None);

    // Leading: every labelled namespace gets the bundle; no other does.
    run.leader.send_replace(true);
    let bundle = run.bundle();
    eventually("shop and web hold the bundle", || {
        ["shop", "web"].map(|ns| bundle_in(&cluster, ns))
            == [Some(bundle.clone()), Some(bundle.clone())]
    })
    .await;
    assert_eq!(bundle_in(&cluster, "other"), None);
    let cm = cluster.get(&trust_key("shop")).unwrap();
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "braid-operator"
    );
    let apply = run
        .log
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.method == Method::PATCH)
        .cloned()
        .unwrap();
    assert_eq!(apply.content_type, "application/apply-patch+yaml");
    assert!(
        apply.query.contains("fieldManager=braid-operator"),
        "{}",
        apply.query
    );

    // A namespace labelled while leading.
    let (key, ns) = namespace("new", true);
    cluster.put(key, ns);
    eventually("the labelled namespace holds the bundle", || {
        bundle_in(&cluster, "new") == Some(bundle.clone())
    })
    .await;

    // Deleted by hand: back at once.
    cluster.delete(&trust_key("shop"));
    eventually("the deleted ConfigMap is back", || {
        bundle_in(&cluster, "shop") == Some(bundle.clone())
    })
    .await;
    // Edited by hand: its bundle put back.
    let mut edited = cluster.get(&trust_key("web")).unwrap();
    edited["data"]["ca.crt"] = json!("not a bundle");
    cluster.put(trust_key("web"), edited);
    eventually("the edited ConfigMap holds the bundle again", || {
        bundle_in(&cluster, "web") == Some(bundle.clone())
    })
    .await;
    // Its label removed (it leaves the watch's selection): the label put back.
    let mut unlabelled = cluster.get(&trust_key("web")).unwrap();
    unlabelled["metadata"]["labels"] = json!({});
    cluster.put(trust_key("web"), unlabelled);
    eventually("the ConfigMap's label is back", || {
        cluster.get(&trust_key("web")).unwrap()["metadata"]["labels"]
            ["app.kubernetes.io/managed-by"]
            == "braid-operator"
    })
    .await;

    // A new CA reaches every namespace.
    run.ca.send_replace(ca());
    let next = run.bundle();
    assert_ne!(next, bundle);
    eventually("every namespace holds the new bundle", || {
        ["shop", "web", "new"]
            .iter()
            .all(|ns| bundle_in(&cluster, ns) == Some(next.clone()))
    })
    .await;

    // Leadership lost: a deletion stays deleted.
    run.leader.send_replace(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    run.log.lock().unwrap().clear();
    cluster.delete(&trust_key("shop"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(writes(&run.log).is_empty(), "{:?}", writes(&run.log));
    assert_eq!(bundle_in(&cluster, "shop"), None);
    // ... until it leads again.
    run.leader.send_replace(true);
    eventually("the ConfigMap is back under the new term", || {
        bundle_in(&cluster, "shop") == Some(next.clone())
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn a_namespace_that_cannot_be_written_is_retried_on_its_own_while_the_others_are_written() {
    let cluster = Cluster::default();
    for name in ["broken", "shop"] {
        let (key, ns) = namespace(name, true);
        cluster.put(key, ns);
    }
    let broken = format!("/api/v1/namespaces/broken/configmaps/{TRUST}");
    cluster.fail(Method::PATCH, &broken, Some(500));
    let run = start_trust(cluster.clone(), true);
    let bundle = run.bundle();
    eventually("shop holds the bundle", || {
        bundle_in(&cluster, "shop") == Some(bundle.clone())
    })
    .await;
    let attempts = || {
        run.log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::PATCH && r.path == broken)
            .count()
    };
    eventually("broken retried", || attempts() >= 2).await;
    cluster.fail(Method::PATCH, &broken, None);
    eventually("broken written once it accepts", || {
        bundle_in(&cluster, "broken") == Some(bundle.clone())
    })
    .await;
    run.stop().await;
}

fn names() -> WebhookNames {
    WebhookNames {
        namespace: NS.into(),
        service: "braid-injector".into(),
        secret: WEBHOOK_SECRET.into(),
        config: WEBHOOK_CONFIG.into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn start_webhook(cluster: Cluster, leading: bool) -> Running {
    let (client, log) = cluster.client();
    let (leader, leader_rx) = watch::channel(leading);
    let (ca_tx, ca_rx) = watch::channel(ca());
    let stop = CancellationToken::new();
    let upkeep = WebhookUpkeep::new(client, names(), Leading::new(leader_rx, ca_rx));
    let task = tokio::spawn(upkeep.run(stop.clone()));
    Running {
        log,
        leader,
        ca: ca_tx,
        stop,
        task,
    }
}

fn secret_key() -> Key {
    Key::namespaced("secrets", NS, WEBHOOK_SECRET)
}

fn config_key() -> Key {
    Key::cluster("mutatingwebhookconfigurations", WEBHOOK_CONFIG)
}

/// The certificate in the webhook's Secret (base64, as stored).
fn webhook_cert(cluster: &Cluster) -> Option<String> {
    cluster
        .get(&secret_key())
        .and_then(|s| s["data"]["tls.crt"].as_str().map(str::to_string))
}

/// The caBundle of each webhook, decoded.
fn ca_bundles(cluster: &Cluster) -> Vec<Option<String>> {
    let config = cluster.get(&config_key()).unwrap();
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let b64 = w["clientConfig"]["caBundle"].as_str()?;
            let bytes: k8s_openapi::ByteString = serde_json::from_value(json!(b64)).unwrap();
            Some(String::from_utf8(bytes.0).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn the_webhook_secret_and_ca_bundles_are_kept_and_a_deleted_secret_issued_again_at_once() {
    let cluster = Cluster::default();
    cluster.put(
        config_key(),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": WEBHOOK_CONFIG},
            "webhooks": [
                {"name": "pods.braid.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": {}},
                {"name": "other.braid.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None", "clientConfig": {}},
            ],
        }),
    );
    let run = start_webhook(cluster.clone(), false);
    watched(&cluster, &["mutatingwebhookconfigurations", "secrets"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        writes(&run.log).is_empty(),
        "a follower: {:?}",
        writes(&run.log)
    );

    run.leader.send_replace(true);
    let bundle = run.bundle();
    eventually("the Secret issued and every caBundle set", || {
        webhook_cert(&cluster).is_some()
            && ca_bundles(&cluster) == [Some(bundle.clone()), Some(bundle.clone())]
    })
    .await;
    let first = webhook_cert(&cluster).unwrap();

    // Deleted by hand: issued again at once (not at the next minute's round).
    cluster.delete(&secret_key());
    eventually("the deleted Secret issued again", || {
        webhook_cert(&cluster).is_some_and(|c| c != first)
    })
    .await;
    // Its certificate edited: replaced.
    let mut edited = cluster.get(&secret_key()).unwrap();
    edited["data"]["tls.crt"] = json!("bm90IGEgY2VydA==");
    cluster.put(secret_key(), edited);
    eventually("the edited Secret replaced", || {
        webhook_cert(&cluster).is_some_and(|c| c != "bm90IGEgY2VydA==")
    })
    .await;
    // A caBundle edited: set back.
    let mut config = cluster.get(&config_key()).unwrap();
    config["webhooks"][1]["clientConfig"]["caBundle"] = json!("b2xk");
    cluster.put(config_key(), config);
    eventually("the caBundle set back", || {
        ca_bundles(&cluster) == [Some(bundle.clone()), Some(bundle.clone())]
    })
    .await;
    // A new CA: the Secret issued by it, the bundles its.
    let before = webhook_cert(&cluster).unwrap();
    run.ca.send_replace(ca());
    let next = run.bundle();
    eventually("the new CA's Secret and bundles", || {
        webhook_cert(&cluster).is_some_and(|c| c != before)
            && ca_bundles(&cluster) == [Some(next.clone()), Some(next.clone())]
    })
    .await;
    run.stop().await;
}

#[tokio::test]
async fn without_its_configuration_the_webhook_secret_is_still_kept() {
    let cluster = Cluster::default();
    let run = start_webhook(cluster.clone(), true);
    eventually("the Secret issued", || webhook_cert(&cluster).is_some()).await;
    run.stop().await;
}

#[tokio::test]
async fn a_configuration_the_operator_may_not_read_still_has_its_secret_kept() {
    // RBAC of an older version, or a --webhook-config the ClusterRole does not name: the
    // watch never lists, and the Secret the injector mounts is kept all the same.
    let cluster = Cluster::default();
    let configs = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";
    cluster.fail(Method::GET, configs, Some(403));
    cluster.fail(
        Method::GET,
        &format!("{configs}/{WEBHOOK_CONFIG}"),
        Some(403),
    );
    let run = start_webhook(cluster.clone(), true);
    eventually("the Secret issued", || webhook_cert(&cluster).is_some()).await;
    run.stop().await;
}

#[tokio::test]
async fn every_list_and_watch_selects_one_name_where_rbac_grants_only_names() {
    // The in-memory API server refuses (403) a list or watch of ConfigMaps, Secrets or
    // webhook configurations without a metadata.name selector, as RBAC would.
    let cluster = Cluster::default();
    let (key, ns) = namespace("shop", true);
    cluster.put(key, ns);
    let trust = start_trust(cluster.clone(), true);
    let webhook = start_webhook(cluster.clone(), true);
    watched(
        &cluster,
        &[
            "namespaces",
            "configmaps",
            "secrets",
            "mutatingwebhookconfigurations",
        ],
    )
    .await;
    for run in [&trust, &webhook] {
        let refused: Vec<String> = run
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.method == Method::GET && !r.query.contains("fieldSelector"))
            .filter(|r| {
                ["configmaps", "secrets", "mutatingwebhookconfigurations"]
                    .iter()
                    .any(|k| r.path.ends_with(k))
            })
            .map(|r| format!("{}?{}", r.path, r.query))
            .collect();
        assert!(refused.is_empty(), "{refused:?}");
    }
    trust.stop().await;
    webhook.stop().await;
}
