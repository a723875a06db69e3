//! Real-world pod shapes through the webhook's review path: each pod is wrapped in the
//! captured AdmissionReview of a real 1.28 API server, answered by `review_json`, and
//! the patch (base64 JSON Patch, as the API server receives it) is applied to the pod's
//! JSON, which must then deserialise into a `k8s_openapi` Pod.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine as _;
use braid_injector::inject::{INIT_CONTAINER, PROXY_CONTAINER};
use braid_injector::settings::Settings;
use braid_injector::webhook::review::review_json;
use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What the webhook answered for one pod.
enum Answer {
    /// Allowed with this patched pod.
    Injected(Box<Pod>),
    /// Allowed unchanged.
    Unchanged,
    /// Refused with this message.
    Denied(String),
}

fn review(pod_yaml: &str, settings: &Settings) -> (Pod, Answer) {
    let pod: serde_json::Value = serde_norway::from_str(pod_yaml).unwrap();
    let mut body: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../fixtures/admission/deployment-pod-create.json"),
        )
        .unwrap(),
    )
    .unwrap();
    body["request"]["object"] = pod.clone();
    let answer = review_json(&serde_json::to_vec(&body).unwrap(), settings);
    let response = &answer["response"];
    assert_eq!(response["uid"], body["request"]["uid"]);
    let before: Pod = serde_json::from_value(pod.clone()).unwrap();
    if response["allowed"] != true {
        return (
            before,
            Answer::Denied(response["status"]["message"].as_str().unwrap().to_owned()),
        );
    }
    let Some(patch) = response["patch"].as_str() else {
        return (before, Answer::Unchanged);
    };
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let mut json = pod;
    json_patch::patch(&mut json, &patch).unwrap();
    let after: Pod = serde_json::from_value(json).unwrap();
    (before, Answer::Injected(Box::new(after)))
}

fn names(list: &[Container]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

fn injected(answer: Answer) -> Pod {
    match answer {
        Answer::Injected(pod) => *pod,
        Answer::Unchanged => panic!("allowed unchanged"),
        Answer::Denied(why) => panic!("denied: {why}"),
    }
}

fn probe_port(c: &Container, kind: &str) -> Option<IntOrString> {
    let probe = match kind {
        "liveness" => &c.liveness_probe,
        "readiness" => &c.readiness_probe,
        _ => &c.startup_probe,
    };
    probe.as_ref()?.http_get.as_ref().map(|h| h.port.clone())
}

const META: &str = "
apiVersion: v1
kind: Pod
metadata:
  generateName: web-7c9f-
  namespace: shop
  labels: {app: web}
";

/// A pod with several containers, an init container of its own, volumes, security
/// contexts, named ports, and probes of every kind.
fn busy_pod() -> String {
    format!(
        "{META}spec:
  serviceAccountName: web
  securityContext: {{runAsNonRoot: true, runAsUser: 1000, fsGroup: 2000}}
  initContainers:
  - name: migrate
    image: example/migrate:1
    securityContext: {{runAsUser: 1000}}
  containers:
  - name: app
    image: example/web:1
    ports:
    - {{name: http, containerPort: 8080}}
    - {{name: metrics, containerPort: 9090, protocol: TCP}}
    - {{name: dns, containerPort: 5353, protocol: UDP}}
    livenessProbe: {{httpGet: {{path: /live, port: http}}}}
    readinessProbe: {{httpGet: {{path: /ready, port: 8080, httpHeaders: [{{name: X-Probe, value: '1'}}]}}}}
    startupProbe: {{httpGet: {{path: /started, port: metrics, scheme: HTTPS}}}}
    volumeMounts: [{{name: data, mountPath: /data}}]
    securityContext: {{readOnlyRootFilesystem: true, capabilities: {{drop: [ALL]}}}}
  - name: log-shipper
    image: example/shipper:1
    ports: [{{containerPort: 24224}}]
    livenessProbe: {{exec: {{command: [/bin/true]}}}}
    readinessProbe: {{tcpSocket: {{port: 24224}}}}
    startupProbe: {{grpc: {{port: 24224}}}}
  - name: admin
    image: example/admin:1
    livenessProbe: {{httpGet: {{path: /, port: undeclared}}}}
    readinessProbe: {{httpGet: {{path: /, port: 7070, host: 10.0.0.1}}}}
  volumes:
  - {{name: data, emptyDir: {{}}}}
  - {{name: config, configMap: {{name: web}}}}
"
    )
}

#[test]
fn a_busy_pod_keeps_everything_it_had() {
    let (before, answer) = review(&busy_pod(), &Settings::default());
    let after = injected(answer);
    let (b, a) = (before.spec.unwrap(), after.spec.unwrap());
    // braid-init first, the native sidecar next, then the pod's own init containers, so
    // they already have a working network.
    assert_eq!(
        names(a.init_containers.as_deref().unwrap()),
        [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]
    );
    assert_eq!(
        a.init_containers.as_ref().unwrap()[2],
        b.init_containers.unwrap()[0]
    );
    assert_eq!(names(&a.containers), names(&b.containers));
    // Volumes: the pod's, untouched and first, then braid's.
    let volumes: Vec<&str> = a
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(
        volumes,
        [
            "data",
            "config",
            "braid-token",
            "braid-operator-ca",
            "braid-run"
        ]
    );
    assert_eq!(a.volumes.as_ref().unwrap()[..2], b.volumes.unwrap()[..]);
    // The pod's security context stays; braid-init overrides runAsNonRoot for itself
    // only (iptables needs root), the proxy runs as 1337.
    assert_eq!(a.security_context, b.security_context);
    let init_sc = a.init_containers.as_ref().unwrap()[0]
        .security_context
        .clone()
        .unwrap();
    assert_eq!(
        (init_sc.run_as_user, init_sc.run_as_non_root),
        (Some(0), Some(false))
    );
    let proxy_sc = a.init_containers.as_ref().unwrap()[1]
        .security_context
        .clone()
        .unwrap();
    assert_eq!(proxy_sc.run_as_user, Some(1337));
    // Everything about the app's containers but the probes taken over is as it was.
    for (old, new) in b.containers.iter().zip(&a.containers) {
        let strip = |c: &Container| Container {
            liveness_probe: None,
            readiness_probe: None,
            startup_probe: None,
            ..c.clone()
        };
        assert_eq!(strip(old), strip(new), "{}", old.name);
    }
}

#[test]
fn every_probe_the_proxy_can_reach_is_taken_over_and_the_rest_stay() {
    let (before, answer) = review(&busy_pod(), &Settings::default());
    let after = injected(answer);
    let (b, a) = (before.spec.unwrap(), after.spec.unwrap());
    let health = Some(IntOrString::Int(15021));
    let find =
        |list: &[Container], name: &str| list.iter().find(|c| c.name == name).cloned().unwrap();
    let app = find(&a.containers, "app");
    // Named and numbered ports alike, headers carried to the proxy; HTTPS too (the
    // proxy skips verification, as kubelet does).
    assert_eq!(probe_port(&app, "liveness"), health);
    assert_eq!(probe_port(&app, "readiness"), health);
    assert_eq!(probe_port(&app, "startup"), health);
    // tcpSocket and grpc are taken over; exec runs in the container and stays.
    let (shipper, old_shipper) = (
        find(&a.containers, "log-shipper"),
        find(&b.containers, "log-shipper"),
    );
    assert_eq!(shipper.liveness_probe, old_shipper.liveness_probe);
    assert_eq!(probe_port(&shipper, "readiness"), health);
    assert_eq!(probe_port(&shipper, "startup"), health);
    // Another host and an undeclared named port cannot be performed over loopback.
    let (admin, old_admin) = (find(&a.containers, "admin"), find(&b.containers, "admin"));
    assert_eq!(
        (&admin.liveness_probe, &admin.readiness_probe),
        (&old_admin.liveness_probe, &old_admin.readiness_probe)
    );
    let proxy = &a.init_containers.as_ref().unwrap()[1];
    let probes = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "BRAID_APP_PROBES")
        .and_then(|e| e.value.clone())
        .unwrap();
    let probes: serde_json::Value = serde_json::from_str(&probes).unwrap();
    assert_eq!(
        probes["app/liveness"]["http"]["port"], 8080,
        "the named port resolved"
    );
    assert_eq!(
        probes["app/readiness"]["http"]["headers"][0],
        serde_json::json!(["X-Probe", "1"])
    );
    assert_eq!(
        probes["app/startup"],
        serde_json::json!({"https": {"port": 9090, "path": "/started", "headers": []}})
    );
    assert_eq!(
        probes["log-shipper/readiness"],
        serde_json::json!({"tcp": {"port": 24224}})
    );
    assert_eq!(
        probes["log-shipper/startup"],
        serde_json::json!({"grpc": {"port": 24224, "service": ""}})
    );
    assert_eq!(probes.as_object().unwrap().len(), 5, "{probes}");
}

#[test]
fn without_native_sidecars_the_hooks_watch_every_declared_tcp_port() {
    let settings = Settings {
        native_sidecars: false,
        ..Default::default()
    };
    let after = injected(review(&busy_pod(), &settings).1);
    let spec = after.spec.unwrap();
    assert_eq!(
        names(&spec.containers),
        [PROXY_CONTAINER, "app", "log-shipper", "admin"]
    );
    let hooks = spec.containers[0].lifecycle.clone().unwrap();
    let command = |h: Option<k8s_openapi::api::core::v1::LifecycleHandler>| {
        h.unwrap().exec.unwrap().command.unwrap().join(" ")
    };
    assert_eq!(command(hooks.post_start), "braid-proxy wait-ready");
    // UDP 5353 is not a port the app could be seen listening on over TCP.
    assert_eq!(
        command(hooks.pre_stop),
        "braid-proxy wait-app-exit --app-ports 8080,9090,24224"
    );
    assert_eq!(
        names(spec.init_containers.as_deref().unwrap()),
        [INIT_CONTAINER, "migrate"]
    );
}

#[test]
fn skipped_pods_are_allowed_unchanged() {
    let plain = format!("{META}spec:\n  containers:\n  - {{name: app, image: example/web:1}}\n");
    let with = |insert: &str| plain.replacen("metadata:\n", &format!("metadata:\n{insert}"), 1);
    let cases = [
        (
            "opted out",
            with("  annotations: {braid.dev/inject: 'false'}\n"),
        ),
        (
            "already injected",
            with(
                "  annotations: {braid.dev/status: '{\"version\":\"0.1.0\",\"initContainers\":[\"braid-init\"],\"containers\":[],\"volumes\":[]}'}\n",
            )
            .replace("spec:\n", "spec:\n  initContainers: [{name: braid-init, image: x}]\n"),
        ),
        (
            "hostNetwork",
            plain.replace("spec:\n", "spec:\n  hostNetwork: true\n"),
        ),
    ];
    for (name, pod) in cases {
        assert!(
            matches!(review(&pod, &Settings::default()).1, Answer::Unchanged),
            "{name}"
        );
    }
    // An injected pod coming back (reinvocation) is unchanged too.
    let once = injected(review(&plain, &Settings::default()).1);
    let again = serde_norway::to_string(&once).unwrap();
    assert!(matches!(
        review(&again, &Settings::default()).1,
        Answer::Unchanged
    ));
}

#[test]
fn pods_braid_cannot_serve_right_are_refused_with_the_fix() {
    let pod = |spec: &str| format!("{META}spec:\n{spec}");
    let cases = [
        (
            pod("  containers:\n  - {name: app, image: x, ports: [{containerPort: 15001}]}\n"),
            "spec.containers[\"app\"].ports: 15001 is braid-proxy's outbound capture port in the pod's shared network; move the app to another port",
        ),
        (
            pod(
                "  containers:\n  - {name: a, image: x}\n  - {name: b, image: x, ports: [{containerPort: 15021}]}\n",
            ),
            "spec.containers[\"b\"].ports: 15021 is braid-proxy's health port",
        ),
        (
            pod("  containers:\n  - {name: app, image: x}\n").replacen(
                "metadata:\n",
                "metadata:\n  annotations: {braid.dev/exclude-outbound-ports: 'db'}\n",
                1,
            ),
            "annotation braid.dev/exclude-outbound-ports: \"db\" is not a port",
        ),
    ];
    for (pod, message) in cases {
        match review(&pod, &Settings::default()).1 {
            Answer::Denied(why) => assert!(why.contains(message), "{why}"),
            _ => panic!("not refused: {pod}"),
        }
    }
}
