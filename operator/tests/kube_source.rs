#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The Kubernetes source's conversions on pods a real API server produced (the
//! AdmissionReview captures in `fixtures/admission`), and its start-up access check
//! against a scripted API server.

mod kube_mock;

use std::path::Path;

use braid_operator::source::kube::publish::Watched;
use braid_operator::source::kube::workload::{PROXY_CONTAINER, slim_pod, workload};
use braid_operator::source::kube::{AccessError, KubeSource};
use k8s_openapi::api::core::v1::{Container, Pod, PodIP, PodStatus};

/// `request.object` of a capture: the pod as the webhook saw it, before it had a name or
/// an IP.
fn captured_pod(file: &str) -> Pod {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/admission")
        .join(file);
    let review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    serde_json::from_value(review["request"]["object"].clone()).unwrap()
}

/// The same pod once created, injected, scheduled and running.
fn running(mut pod: Pod, injected: bool) -> Pod {
    if pod.metadata.name.is_none() {
        let prefix = pod.metadata.generate_name.clone().unwrap();
        pod.metadata.name = Some(format!("{prefix}x7k2p"));
    }
    if injected {
        let spec = pod.spec.as_mut().unwrap();
        spec.init_containers
            .get_or_insert_with(Vec::new)
            .push(Container {
                name: PROXY_CONTAINER.into(),
                ..Default::default()
            });
    }
    pod.status = Some(PodStatus {
        phase: Some("Running".into()),
        pod_ip: Some("10.244.1.17".into()),
        pod_ips: Some(vec![PodIP {
            ip: "10.244.1.17".into(),
        }]),
        ..Default::default()
    });
    pod
}

#[test]
fn a_captured_pod_without_an_ip_is_not_a_workload_yet() {
    for file in [
        "deployment-pod-create.json",
        "job-pod-create.json",
        "pod-opted-out-create.json",
    ] {
        assert!(workload(&captured_pod(file), true).is_none(), "{file}");
    }
}

#[test]
fn a_deployment_pod_is_meshed_once_injected() {
    let pod = captured_pod("deployment-pod-create.json");
    let w = workload(&running(pod.clone(), true), true).unwrap();
    assert_eq!(w.key.namespace, "shop");
    assert_eq!(w.key.name, "payments-844b89b794-x7k2p");
    assert_eq!(w.service_account, "payments");
    assert_eq!(w.labels["app"], "payments");
    assert_eq!(w.labels["version"], "v2");
    assert_eq!(
        w.ips,
        vec!["10.244.1.17".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(w.meshed);
    // Not injected (created before its namespace opted in): no proxy, not meshed.
    assert!(!workload(&running(pod.clone(), false), true).unwrap().meshed);
    // Its namespace not (or no longer) opted in.
    assert!(!workload(&running(pod, true), false).unwrap().meshed);
}

#[test]
fn a_job_pod_runs_as_default() {
    let w = workload(&running(captured_pod("job-pod-create.json"), true), true).unwrap();
    assert_eq!(w.service_account, "default");
    assert_eq!(w.labels["job-name"], "nightly-report");
    assert!(w.meshed);
}

#[test]
fn an_opted_out_pod_is_not_meshed_even_with_a_proxy() {
    let w = workload(
        &running(captured_pod("pod-opted-out-create.json"), true),
        true,
    )
    .unwrap();
    assert_eq!(w.key.name, "checkout-0");
    assert!(!w.meshed);
}

#[test]
fn slimmed_captured_pods_convert_the_same() {
    for file in [
        "deployment-pod-create.json",
        "job-pod-create.json",
        "pod-opted-out-create.json",
    ] {
        let pod = running(captured_pod(file), true);
        let mut slim = pod.clone();
        slim_pod(&mut slim);
        assert_eq!(workload(&slim, true), workload(&pod, true), "{file}");
        assert!(
            serde_json::to_vec(&slim).unwrap().len() * 2 < serde_json::to_vec(&pod).unwrap().len(),
            "{file}: slimming should at least halve the pod"
        );
    }
}

/// An API server that lists nothing, and answers `refuse(path)` where that is `Some`.
fn api(
    refuse: impl Fn(&str) -> Option<(http::StatusCode, serde_json::Value)> + Send + 'static,
) -> (kube::Client, kube_mock::Log) {
    kube_mock::client(move |r| {
        assert_eq!(r.method, http::Method::GET);
        assert!(r.query.contains("limit=1"), "{}", r.query);
        refuse(&r.path).unwrap_or_else(kube_mock::empty_list)
    })
}

#[tokio::test]
async fn access_check_lists_everything_watched() {
    let (client, log) = api(|_| None);
    KubeSource::new(client).check_access().await.unwrap();
    let paths: Vec<String> = log.lock().unwrap().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/services",
            "/apis/discovery.k8s.io/v1/endpointslices",
            "/api/v1/pods",
            "/api/v1/namespaces",
            "/apis/braid.dev/v1alpha1/trafficroutes",
            "/apis/braid.dev/v1alpha1/encryptionpolicies",
            "/apis/braid.dev/v1alpha1/selfhealings",
            "/apis/braid.dev/v1alpha1/accesspolicies",
        ]
    );
}

#[tokio::test]
async fn access_check_names_a_missing_crd() {
    let (client, _) = api(|path| {
        path.ends_with("/selfhealings").then(|| {
            kube_mock::failure(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )
        })
    });
    match KubeSource::new(client).check_access().await.unwrap_err() {
        AccessError::Refused { what, message } => {
            assert_eq!(what, Watched::SelfHealings);
            assert!(message.contains("manifests/crds"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn access_check_names_a_missing_rbac_rule() {
    let (client, _) = api(|path| {
        (path == "/api/v1/pods").then(|| {
            kube_mock::failure(
                403,
                "Forbidden",
                "pods is forbidden: User \"system:serviceaccount:braid-system:braid-operator\" cannot list resource \"pods\"",
            )
        })
    });
    let err = KubeSource::new(client).check_access().await.unwrap_err();
    assert!(
        matches!(
            err,
            AccessError::Refused {
                what: Watched::Pods,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("manifests/rbac/operator.yaml"),
        "{err}"
    );
}

#[tokio::test]
async fn access_check_retries_a_server_error() {
    let (client, _) = api(|path| {
        (path == "/api/v1/services").then(|| kube_mock::failure(503, "ServiceUnavailable", "etcd"))
    });
    let err = KubeSource::new(client).check_access().await.unwrap_err();
    assert!(
        matches!(
            err,
            AccessError::Unreachable {
                what: Watched::Services,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Runs the Kubernetes source on `client` until its first snapshot: the snapshot, and
/// how to stop the source and wait for it.
async fn first_snapshot(
    client: kube::Client,
) -> (
    std::sync::Arc<braid_operator::registry::Snapshot>,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<Result<(), braid_operator::source::SourceError>>,
) {
    let (tx, mut rx) = tokio::sync::watch::channel(std::sync::Arc::new(
        braid_operator::registry::Snapshot::default(),
    ));
    rx.mark_unchanged();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(braid_operator::source::Source::run(
        KubeSource::new(client),
        tx,
        stop.clone(),
    ));
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.changed())
        .await
        .expect("a first snapshot")
        .unwrap();
    let snap = rx.borrow_and_update().clone();
    (snap, stop, task)
}

#[tokio::test]
async fn the_source_publishes_what_the_api_server_lists() {
    let pod =
        serde_json::to_value(running(captured_pod("deployment-pod-create.json"), true)).unwrap();
    let (client, log) = kube_mock::client(move |r| {
        if r.query.contains("watch=true") {
            return kube_mock::Answer::Hang;
        }
        let items = match r.path.as_str() {
            "/api/v1/services" => serde_json::json!([{
                "metadata": {"namespace": "shop", "name": "payments"},
                "spec": {"clusterIPs": ["10.96.0.10"], "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}
            }]),
            "/apis/discovery.k8s.io/v1/endpointslices" => serde_json::json!([{
                "metadata": {"namespace": "shop", "name": "payments-abc", "labels": {"kubernetes.io/service-name": "payments"}},
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["10.244.1.17"], "conditions": {"ready": true},
                               "targetRef": {"kind": "Pod", "namespace": "shop", "name": "payments-844b89b794-x7k2p"}}]
            }]),
            "/api/v1/pods" => serde_json::json!([pod.clone()]),
            "/api/v1/namespaces" => serde_json::json!([{
                "metadata": {"name": "shop", "labels": {"braid.dev/inject": "enabled"}}
            }]),
            "/apis/braid.dev/v1alpha1/trafficroutes" => serde_json::json!([{
                "apiVersion": "braid.dev/v1alpha1", "kind": "TrafficRoute",
                "metadata": {"namespace": "shop", "name": "payments", "generation": 2,
                             "creationTimestamp": "2026-11-22T01:02:03Z"},
                "spec": {"host": "payments",
                         "groups": [{"name": "v2", "labels": {"version": "v2"}}],
                         "rules": [{"name": "all", "route": [{"group": "v2", "weight": 100}]}]}
            }]),
            _ => serde_json::json!([]),
        };
        kube_mock::Answer::Json(
            http::StatusCode::OK,
            serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "5"}, "items": items}),
        )
    });
    let (snap, stop, task) = first_snapshot(client).await;

    use braid_operator::registry::ObjectKey;
    let svc = &snap.services[&ObjectKey::new("shop", "payments")];
    assert_eq!(svc.ports[0].target_port, 8080);
    assert_eq!(
        svc.endpoints[0].workload,
        Some(ObjectKey::new("shop", "payments-844b89b794-x7k2p"))
    );
    let w = &snap.workloads[&ObjectKey::new("shop", "payments-844b89b794-x7k2p")];
    assert!(w.meshed, "the namespace is opted in and the pod injected");
    let route = &snap.traffic_routes[&ObjectKey::new("shop", "payments")];
    assert_eq!(route.generation, Some(2));
    assert!(route.current.is_ok(), "{:?}", route.current.as_ref().err());

    stop.cancel();
    task.await.unwrap().unwrap();
    let log = log.lock().unwrap();
    let namespaces = log
        .iter()
        .find(|r| r.path == "/api/v1/namespaces" && !r.query.contains("limit=1"))
        .unwrap();
    assert!(
        namespaces
            .query
            .contains("labelSelector=braid.dev%2Finject%3Denabled"),
        "only opted-in namespaces are watched: {}",
        namespaces.query
    );
}

/// The braid resources of `fixtures/realapi` as a real API server returned them (status,
/// `resourceVersion`, `uid`), each with the `managedFields` a watch carries too (kubectl
/// printed the capture without them), by kind.
fn realapi_resources() -> std::collections::BTreeMap<String, serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/realapi/braid-resources-with-status.yaml");
    let list: serde_json::Value =
        serde_norway::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut by_kind = std::collections::BTreeMap::new();
    for mut item in list["items"].as_array().unwrap().clone() {
        item["metadata"]["managedFields"] = serde_json::json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "braid.dev/v1alpha1",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}},
            {"manager": "braid-operator", "operation": "Apply", "apiVersion": "braid.dev/v1alpha1",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}, "subresource": "status"}
        ]);
        let kind = item["kind"].as_str().unwrap().to_string();
        by_kind.entry(kind).or_insert_with(Vec::new).push(item);
    }
    by_kind
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::Array(v)))
        .collect()
}

/// What a real API server lists, through the source's own watches (the same stripping
/// the reflectors apply): a rollout's progress in status must reach the snapshot, or a
/// follower compiles the spec's percent and a restarted leader starts over at 0 %.
#[tokio::test]
async fn rollout_progress_in_a_real_api_servers_status_reaches_the_snapshot() {
    let resources = realapi_resources();
    let (client, _) = kube_mock::client(move |r| {
        if r.query.contains("watch=true") {
            return kube_mock::Answer::Hang;
        }
        let items = match r.path.as_str() {
            "/apis/braid.dev/v1alpha1/trafficroutes" => resources["TrafficRoute"].clone(),
            "/apis/braid.dev/v1alpha1/encryptionpolicies" => resources["EncryptionPolicy"].clone(),
            "/apis/braid.dev/v1alpha1/selfhealings" => resources["SelfHealing"].clone(),
            _ => serde_json::json!([]),
        };
        kube_mock::Answer::Json(
            http::StatusCode::OK,
            serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "640"}, "items": items}),
        )
    });
    let (snap, stop, task) = first_snapshot(client).await;
    stop.cancel();
    task.await.unwrap().unwrap();

    use braid_operator::registry::ObjectKey;
    use braid_operator::registry::Progress;
    let key = ObjectKey::new("shop", "shop-mtls");
    assert_eq!(
        snap.rollout_status.get(&key),
        Some(&Progress {
            percent: 50,
            strict: false
        }),
        "status.currentPercent of {key} (generation 1, observedGeneration 1)"
    );
    // The status is not part of what the compiler decodes: every resource is accepted.
    for (kind, accepted) in [
        (
            "TrafficRoute",
            snap.traffic_routes
                .values()
                .all(|o| o.current.as_ref().is_ok_and(|r| r.status.is_none())),
        ),
        (
            "EncryptionPolicy",
            snap.encryption_policies
                .values()
                .all(|o| o.current.as_ref().is_ok_and(|r| r.status.is_none())),
        ),
        (
            "SelfHealing",
            snap.self_healings
                .values()
                .all(|o| o.current.as_ref().is_ok_and(|r| r.status.is_none())),
        ),
    ] {
        assert!(accepted, "{kind}: {snap:?}");
    }
    assert_eq!(snap.encryption_policies.len(), 1);
}
