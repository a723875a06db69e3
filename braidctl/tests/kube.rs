//! braidctl's Kubernetes paths against a scripted API server: `check` before and after
//! install (a good install and a broken one), `status` and `proxy-status` over objects a
//! real API server returned, and kubeconfig contexts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fake_api;

use std::process::Output;

use base64::Engine;
use fake_api::{Cluster, FakeApi};
use serde_json::{Value, json};

const REALAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/realapi");
const MANIFESTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../manifests");

fn braidctl(api: &FakeApi, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_braidctl"))
        .arg("--kubeconfig")
        .arg(api.kubeconfig())
        .args(["--timeout", "3s"])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("KUBECONFIG")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn yaml_documents(path: &str) -> Vec<Value> {
    use serde::Deserialize;
    let text = std::fs::read_to_string(path).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn manifest(file: &str) -> Vec<Value> {
    yaml_documents(&format!("{MANIFESTS}/{file}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A certificate valid from `from_days` to `to_days` days from now.
fn certificate(from_days: i64, to_days: i64, ca: bool) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["braid".into()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(from_days);
    params.not_after = now + time::Duration::days(to_days);
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.self_signed(&key).unwrap().pem()
}

fn secret(name: &str, cert: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": name, "namespace": "braid-system"},
        "data": {"tls.crt": b64(cert.as_bytes()), "tls.key": b64(b"key"), "ca.crt": b64(cert.as_bytes())},
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
        "status": {"nodeInfo": {
            "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.0",
            "kernelVersion": "6.1.0-18-amd64", "kubeProxyVersion": "v1.32.1", "kubeletVersion": "v1.32.1",
            "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12", "systemUUID": "u",
        }},
    })
}

fn operator_pod(name: &str, ip: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "braid-system", "labels": {"app.kubernetes.io/name": "braid-operator"}},
        "spec": {"containers": [{"name": "operator", "image": "ghcr.io/braid-mesh/braid:0.1.0",
                  "ports": [{"name": "https-stream", "containerPort": 8443}, {"name": "http-admin", "containerPort": 9090}]}]},
        "status": {"phase": "Running", "podIP": ip},
    })
}

/// The meshed pods a real API server stored after the injector's patch, now running.
fn shop_pods() -> Vec<Value> {
    let list: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REALAPI}/injected-pods.json")).unwrap(),
    )
    .unwrap();
    let mut pods = list["items"].as_array().unwrap().clone();
    for (i, p) in pods.iter_mut().enumerate() {
        p["status"]["phase"] = json!("Running");
        p["status"]["podIP"] = json!(format!("10.1.0.{}", i + 10));
    }
    pods
}

fn pod_names() -> Vec<String> {
    shop_pods()
        .iter()
        .map(|p| format!("shop/{}", p["metadata"]["name"].as_str().unwrap()))
        .collect()
}

/// An operator replica's `/debug/proxies`: every shop pod current, half streaming here.
fn proxies_answer(name: &str, leader: bool, half: usize) -> Value {
    let proxies: Vec<Value> = pod_names()
        .iter()
        .enumerate()
        .map(|(i, pod)| {
            let mut p = json!({
                "pod": pod, "expectedVersion": "v7", "appliedVersion": "v7", "current": true,
                "appliedAt": "2026-12-02T10:00:00Z", "lastReport": "2026-12-02T10:05:00Z",
                "proxyVersion": "0.1.0",
            });
            if i % 2 == half {
                p["connectedSince"] = json!("2026-12-02T09:00:00Z");
            }
            p
        })
        .collect();
    json!({"replica": {"name": name, "version": "0.1.0", "leader": leader}, "proxies": proxies})
}

const OPERATOR_A: &str =
    "/api/v1/namespaces/braid-system/pods/braid-operator-a:9090/proxy/debug/proxies";
const OPERATOR_B: &str =
    "/api/v1/namespaces/braid-system/pods/braid-operator-b:9090/proxy/debug/proxies";
const HEALTHZ: &str =
    "/api/v1/namespaces/braid-system/services/https:braid-injector:443/proxy/healthz";

/// A cluster before braid: Kubernetes 1.32, two nodes, namespaces.
fn bare_cluster() -> Cluster {
    let mut c = Cluster {
        version: json!({"major": "1", "minor": "32", "gitVersion": "v1.32.1", "gitCommit": "x",
            "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23",
            "compiler": "gc", "platform": "linux/amd64"}),
        ..Cluster::default()
    };
    c.add(namespace("default", json!({})));
    c.add(namespace("shop", json!({"braid.dev/inject": "enabled"})));
    c.add(node("node-1"));
    c.add(node("node-2"));
    c
}

/// braid installed from this release's manifests, working: what the API server holds
/// after `kubectl apply -k manifests/`, the operator's leader and a few minutes.
fn good_install() -> Cluster {
    let mut c = bare_cluster();
    c.add(namespace("braid-system", json!({})));
    for file in [
        "crds/accesspolicies.yaml",
        "crds/encryptionpolicies.yaml",
        "crds/selfhealings.yaml",
        "crds/trafficroutes.yaml",
    ] {
        for mut crd in manifest(file) {
            crd["status"] = json!({
                "acceptedNames": crd["spec"]["names"].clone(),
                "conditions": [{"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}],
            });
            c.add(crd);
        }
    }
    for file in ["operator/deployment.yaml", "injector/deployment.yaml"] {
        for mut d in manifest(file) {
            d["status"] = json!({"replicas": 2, "readyReplicas": 2, "availableReplicas": 2, "updatedReplicas": 2});
            c.add(d);
        }
    }
    let ca = certificate(-10, 3650, true);
    for mut hook in manifest("injector/webhook.yaml") {
        hook["webhooks"][0]["clientConfig"]["caBundle"] = json!(b64(ca.as_bytes()));
        c.add(hook);
    }
    c.add(secret("braid-ca", &ca));
    c.add(secret("braid-injector-tls", &certificate(-1, 300, false)));
    c.add(operator_pod("braid-operator-a", "10.0.0.5"));
    c.add(operator_pod("braid-operator-b", "10.0.0.6"));
    for p in shop_pods() {
        c.add(p);
    }
    c.proxied.insert(HEALTHZ.into(), (200, "ok\n".into()));
    c.proxied.insert(
        OPERATOR_A.into(),
        (200, proxies_answer("braid-operator-a", true, 0).to_string()),
    );
    c.proxied.insert(
        OPERATOR_B.into(),
        (
            200,
            proxies_answer("braid-operator-b", false, 1).to_string(),
        ),
    );
    c
}

fn lines_marked<'a>(out: &'a str, mark: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(mark)).collect()
}

#[test]
fn check_passes_on_a_working_install() {
    let api = FakeApi::start(good_install());
    let out = braidctl(&api, &["check"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(lines_marked(&text, "✘").is_empty(), "{text}");
    assert!(lines_marked(&text, "⚠").is_empty(), "{text}");
    for line in [
        "✔ the API server answers: Kubernetes v1.32.1",
        "✔ native sidecars: the proxy starts before the app's containers and stops after them",
        "✔ Pod Security admits braid-init in 1 namespace(s): shop",
        "✔ CRD trafficroutes.braid.dev is established and current",
        "✔ CRD accesspolicies.braid.dev is established and current",
        "✔ operator: 2/2 replicas ready (ghcr.io/braid-mesh/braid:0.1.0)",
        "✔ injector: 2/2 replicas ready (ghcr.io/braid-mesh/braid:0.1.0)",
        "✔ operator replica braid-operator-a leads (2 replica(s) answer)",
        "✔ webhook inject.braid.dev's caBundle is the CA's and in date",
        "✔ the API server reaches the injector through Service braid-system/braid-injector",
        "✔ 4 meshed pod(s) in 1 namespace(s) run the proxy the injector puts in pods now (ghcr.io/braid-mesh/braid:0.1.0)",
        "✔ all 4 running proxies are connected and hold the latest config",
        "Status check results are ✔",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("✔ the CA (Secret braid-system/braid-ca, tls.crt) is valid until"),
        "{text}"
    );
}

#[test]
fn check_names_every_problem_of_a_broken_install_and_exits_1() {
    let mut c = good_install();
    c.remove("CustomResourceDefinition", "selfhealings.braid.dev");
    c.object("CustomResourceDefinition", "encryptionpolicies.braid.dev")["status"]["conditions"] = json!([{"type": "Established", "status": "False", "message": "not all names are accepted"}]);
    // An older release's schema: a field less.
    let schema = &mut c.object("CustomResourceDefinition", "accesspolicies.braid.dev")["spec"]["versions"]
        [0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    schema.as_object_mut().unwrap().remove("action");
    c.object("Deployment", "braid-injector")["status"]["readyReplicas"] = json!(0);
    c.object("Deployment", "braid-operator")["status"]["readyReplicas"] = json!(1);
    c.object("MutatingWebhookConfiguration", "braid-injector")["webhooks"][0]["clientConfig"]
        .as_object_mut()
        .unwrap()
        .remove("caBundle");
    let expired = certificate(-400, -1, true);
    c.remove("Secret", "braid-ca");
    c.add(secret("braid-ca", &expired));
    c.proxied.insert(
        HEALTHZ.into(),
        (
            503,
            "no endpoints available for service \"braid-injector\"".into(),
        ),
    );
    c.object("Namespace", "shop")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] =
        json!("restricted");
    // A pod created before the namespace was labelled.
    c.add(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "legacy-0", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "example.com/legacy:1"}]},
        "status": {"phase": "Running", "podIP": "10.1.0.99"},
    }));
    // The leader says one proxy holds an older config.
    let stale = pod_names()[3].clone();
    let mut leader = proxies_answer("braid-operator-a", true, 0);
    leader["proxies"][3]["appliedVersion"] = json!("v6");
    leader["proxies"][3]["current"] = json!(false);
    c.proxied
        .insert(OPERATOR_A.into(), (200, leader.to_string()));
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let fails = lines_marked(&text, "✘");
    for expected in [
        "✘ namespace shop enforces Pod Security level restricted, which refuses braid-init",
        "✘ CRD accesspolicies.braid.dev is not this release's (0.1.0)",
        "✘ CRD encryptionpolicies.braid.dev is not established: not all names are accepted",
        "✘ CRD selfhealings.braid.dev is not installed",
        "✘ no injector replica is ready (0/2)",
        "✘ the CA (Secret braid-system/braid-ca, tls.crt) expired at",
        "✘ webhook inject.braid.dev has no caBundle",
        "✘ the API server cannot reach the injector through Service braid-system/braid-injector: 503",
        "✘ 1 pod(s) of meshed namespaces run without the proxy: shop/legacy-0",
        &format!("✘ 1 proxy(ies) hold an old config: {stale} (holds v6, latest v7)"),
    ] {
        assert!(
            fails.iter().any(|l| l.starts_with(expected)),
            "missing {expected:?} in\n{text}"
        );
    }
    assert_eq!(fails.len(), 10, "{text}");
    assert_eq!(
        lines_marked(&text, "⚠"),
        ["⚠ 1/2 operator replicas are ready"],
        "{text}"
    );
    assert!(text.contains("    fix: kubectl label namespace shop pod-security.kubernetes.io/enforce=privileged --overwrite"));
    assert!(text.contains("    fix: kubectl -n shop rollout restart deployment"));
    assert!(
        text.contains("Status check results are ✘: 10 problem(s), 1 warning(s)"),
        "{text}"
    );

    // The same as JSON, for scripts.
    let out = braidctl(&api, &["check", "-o", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        findings.iter().filter(|f| f["verdict"] == "fail").count(),
        10
    );
    assert!(
        findings
            .iter()
            .all(|f| f["verdict"] == "pass" || f["fix"].is_string())
    );
}

#[test]
fn check_sees_no_leader_and_a_silent_replica() {
    let mut c = good_install();
    let mut follower = proxies_answer("braid-operator-b", false, 1);
    follower["replica"]["leader"] = json!(false);
    c.proxied.remove(OPERATOR_A);
    c.proxied
        .insert(OPERATOR_B.into(), (200, follower.to_string()));
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        lines_marked(&text, "✘"),
        ["✘ no operator replica leads"],
        "{text}"
    );
    let warns = lines_marked(&text, "⚠");
    assert_eq!(warns.len(), 2, "{text}");
    assert!(warns[0].starts_with("⚠ operator replica braid-operator-a does not answer on its admin port: pod braid-system/braid-operator-a:9090/debug/proxies answered 503"), "{text}");
    assert_eq!(
        warns[1],
        "⚠ 2 proxy(ies) not judged: they may stream from braid-operator-a, which did not answer"
    );
}

#[test]
fn check_pre_passes_on_a_cluster_ready_for_braid() {
    let api = FakeApi::start(bare_cluster());
    let out = braidctl(&api, &["check", "--pre", "-n", "default"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lines_marked(&text, "✘").is_empty() && lines_marked(&text, "⚠").is_empty(),
        "{text}"
    );
    for line in [
        "✔ Kubernetes 1.32 is 1.28 or newer",
        "✔ 2 Linux node(s), kernel 6.1.0-18-amd64: braid-init uses the iptables backend each node already uses (legacy or nft)",
        "✔ Pod Security admits braid-init in 2 namespace(s): default, shop",
        "✔ braid is not installed yet",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
    assert!(
        text.contains("✔ you may create every kind of object the install holds ("),
        "{text}"
    );
}

#[test]
fn check_pre_names_what_stops_an_install() {
    let mut c = bare_cluster();
    c.version["minor"] = json!("27");
    c.version["gitVersion"] = json!("v1.27.9");
    c.denied_create.insert("customresourcedefinitions".into());
    c.denied_create
        .insert("mutatingwebhookconfigurations".into());
    c.forbidden.insert("nodes".into());
    c.add(namespace(
        "web",
        json!({"pod-security.kubernetes.io/enforce": "baseline"}),
    ));
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["check", "--pre", "-n", "web"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert_eq!(
        lines_marked(&text, "✘"),
        [
            "✘ Kubernetes 1.27 is older than 1.28",
            "✘ namespace web enforces Pod Security level baseline, which refuses braid-init",
            "✘ you may not create mutatingwebhookconfigurations.admissionregistration.k8s.io",
            "✘ you may not create customresourcedefinitions.apiextensions.k8s.io",
        ],
        "{text}"
    );
    assert!(text.contains("✔ nodes not visible to you"), "{text}");
}

#[test]
fn an_unreachable_cluster_or_an_unknown_context_is_named() {
    let api = FakeApi::start(bare_cluster());
    let out = braidctl(&api, &["--context", "nowhere", "check"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("Kubernetes\n----------\n✘ cannot reach the API server: "),
        "{text}"
    );
    assert!(
        text.contains(
            "fix: check the kubeconfig's cluster and credentials (--kubeconfig, --context)"
        )
    );
    let out = braidctl(&api, &["--context", "staging", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--kubeconfig") && err.contains("staging"),
        "{err}"
    );
}

#[test]
fn status_and_proxy_status_read_the_cluster() {
    let mut c = good_install();
    let list = yaml_documents(&format!("{REALAPI}/braid-resources-with-status.yaml"));
    for r in list[0]["items"].as_array().unwrap() {
        c.add(r.clone());
    }
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["status", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}/{}/{} {}",
                r["namespace"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["accepted"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "shop/EncryptionPolicy/shop-mtls True",
            "shop/SelfHealing/payments-healing True",
            "shop/TrafficRoute/payments-gray True",
        ]
    );
    let out = braidctl(&api, &["status", "-n", "other"]);
    assert_eq!(stdout(&out), "No braid resources found.\n");

    let out = braidctl(&api, &["proxy-status", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let pods: Vec<&str> = report["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pod"].as_str().unwrap())
        .collect();
    assert_eq!(pods, pod_names());
    assert_eq!(report["replicas"].as_array().unwrap().len(), 2);
    let streams: Vec<&str> = report["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["streamsFrom"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        streams,
        [
            "braid-operator-a",
            "braid-operator-b",
            "braid-operator-a",
            "braid-operator-b"
        ]
    );
}

#[test]
fn status_says_when_braid_is_not_installed() {
    let api = FakeApi::start(bare_cluster());
    let out = braidctl(&api, &["status"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is not installed in this cluster") && err.contains("braidctl check"),
        "{err}"
    );
}

#[test]
fn stat_sums_the_proxies_metrics_through_the_pod_proxy() {
    let mut c = good_install();
    for (i, pod) in pod_names().iter().enumerate() {
        let name = pod.trim_start_matches("shop/");
        let path = format!("/api/v1/namespaces/shop/pods/{name}:15021/proxy/stats/prometheus");
        let inbound = 10 * (i + 1);
        let body = format!(
            "# TYPE braid_requests counter\n\
             braid_requests_total{{workload=\"{name}\",workload_namespace=\"shop\",direction=\"inbound\",target=\"app:8080\",code=\"200\"}} {inbound}\n\
             braid_requests_total{{workload=\"{name}\",workload_namespace=\"shop\",direction=\"outbound\",target=\"payments.shop:80\",rule=\"default\",group=\"v1\",code=\"200\"}} 3\n\
             braid_requests_total{{workload=\"{name}\",workload_namespace=\"shop\",direction=\"outbound\",target=\"payments.shop:80\",rule=\"default\",group=\"v1\",code=\"503\"}} 1\n"
        );
        c.proxied.insert(path, (200, body));
    }
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["stat", "deploy", "--window", "0s", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let by: Vec<(String, u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["proxies"].as_u64().unwrap(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    // The pods of a Deployment are summed under its name (the fixture's pods are in
    // name order: client, payments-v1 twice, payments-v2).
    assert_eq!(
        by,
        [
            ("client".to_owned(), 1, 10),
            ("payments-v1".to_owned(), 2, 50),
            ("payments-v2".to_owned(), 1, 40)
        ]
    );
    let out = braidctl(&api, &["stat", "svc", "--window", "0s"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let words = |l: &str| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
    assert_eq!(
        words(lines[0]),
        [
            "NAMESPACE",
            "NAME",
            "PROXIES",
            "REQUESTS",
            "SUCCESS",
            "RPS",
            "P50",
            "P95",
            "P99"
        ]
    );
    assert_eq!(
        words(lines[1]),
        [
            "shop",
            "payments:80",
            "4",
            "16",
            "75.0%",
            "-",
            "-",
            "-",
            "-"
        ]
    );
}

#[test]
fn check_without_the_right_to_use_the_pod_proxy_warns_rather_than_fails() {
    // The built-in view and edit roles grant no pods/proxy or services/proxy.
    let mut c = good_install();
    for path in [OPERATOR_A, OPERATOR_B, HEALTHZ] {
        c.proxied.insert(
            path.into(),
            (
                403,
                "pods \"x\" is forbidden: cannot get resource \"pods/proxy\"".into(),
            ),
        );
    }
    let api = FakeApi::start(c);
    let out = braidctl(&api, &["check"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(lines_marked(&text, "✘").is_empty(), "{text}");
    assert_eq!(
        lines_marked(&text, "⚠"),
        [
            "⚠ cannot ask the operator's replicas: you may not get pods/proxy in braid-system",
            "⚠ cannot check the API server's path to the injector: you may not get services/proxy in braid-system",
        ],
        "{text}"
    );
}

/// A proxy's admin port as braid-proxy answers it: `/config_dump` for `pod`, and
/// `/explain` answering `explanation` (a request must carry `must_ask`).
fn proxy_admin(pod: &str, explanation: Value, must_ask: &'static str) -> std::net::SocketAddr {
    use axum::http::Uri;
    let (ns, name) = pod.split_once('/').unwrap();
    let config = braid_api::config::ProxyConfig {
        version: "v7".into(),
        node: braid_api::config::Node {
            namespace: ns.into(),
            workload: name.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let config = serde_json::to_value(&config).unwrap();
    let app = axum::Router::new()
        .route(
            "/config_dump",
            axum::routing::get(move || async move { axum::Json(config) }),
        )
        .route(
            "/explain",
            axum::routing::get(move |uri: Uri| async move {
                let query = uri.query().unwrap_or_default().to_owned();
                match query.contains(must_ask) {
                    true => (axum::http::StatusCode::OK, axum::Json(explanation)),
                    false => (
                        axum::http::StatusCode::BAD_REQUEST,
                        axum::Json(json!({"query": query})),
                    ),
                }
            }),
        );
    fake_api::serve(app)
}

#[test]
fn proxy_config_and_explain_reach_loopback_admin_ports_through_port_forwards() {
    let mut c = good_install();
    let client = pod_names()[0].clone();
    let server = pod_names()[1].clone(); // at 10.1.0.11
    let client_id = "spiffe://cluster.local/ns/shop/sa/client";
    let caller = json!({
        "pod": client, "configVersion": "v7", "identity": client_id,
        "request": {"method": "GET", "path": "/"},
        "outbound": {
            "target": "payments.shop:80", "protocol": "http", "rule": "default",
            "rules": [{"name": "default", "matched": true, "why": ""}],
            "groups": [{"name": "v1", "percent": 100.0, "endpoints": [
                {"address": "10.1.0.11:8080", "mtls": "spiffe://cluster.local/ns/shop/sa/payments", "ejected": false}]}],
            "endpoints": [], "policy": {"faults": []},
        },
    });
    let refused = json!({
        "pod": server, "configVersion": "v7", "request": {"method": "GET", "path": "/"},
        "inbound": {"port": 8080, "tlsMode": "Strict", "identity": client_id, "allowed": false,
            "refusedBy": "shop/lock-down",
            "policies": [{"name": "shop/lock-down", "action": "Deny", "mode": "Enforce", "outcome": "refuses"}]},
    });
    let client_admin = proxy_admin(&client, caller, "to=payments");
    // The server is asked for the port the endpoint listens on, as the caller's identity.
    let server_admin = proxy_admin(&server, refused, "inbound=8080");
    c.forwards.insert(format!("{client}:15000"), client_admin);
    c.forwards.insert(format!("{server}:15000"), server_admin);
    let api = FakeApi::start(c);

    let out = braidctl(&api, &["proxy-config", &client, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(config["version"], "v7");
    // A name in -n's namespace, as kubectl takes it.
    let name = client.trim_start_matches("shop/");
    let out = braidctl(&api, &["-n", "shop", "proxy-config", name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = braidctl(
        &api,
        &[
            "explain", "request", &client, "--to", "payments", "-o", "json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["caller"]["outbound"]["rule"], "default");
    assert_eq!(answer["server"]["pod"], server.as_str(), "{answer}");
    assert_eq!(answer["server"]["inbound"]["refusedBy"], "shop/lock-down");

    // A pod whose admin port nothing forwards to: the error names the pod.
    let other = pod_names()[2].clone();
    let out = braidctl(&api, &["proxy-config", &other]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pod {other}:15000")) && err.contains("port-forward"),
        "{err}"
    );
}
