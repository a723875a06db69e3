//! Injection of the AdmissionReview captures from a real 1.28 API server: the patched
//! pods deserialise, carry exactly what braid adds, and a second pass changes nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use braid_injector::annotations::{Overrides, STATUS};
use braid_injector::decide::{Decision, decide};
use braid_injector::inject::{INIT_CONTAINER, InjectError, PROXY_CONTAINER, inject, patch};
use braid_injector::settings::Settings;
use k8s_openapi::api::core::v1::{Container, Pod, Volume};

fn captured_pod(file: &str) -> Pod {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/admission")
        .join(file);
    let review: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    serde_json::from_value(review["request"]["object"].clone()).unwrap()
}

/// Injects like the webhook: decide, parse annotations, change, diff, apply the patch to
/// the JSON as received, and read the result back as a Pod.
fn webhook(pod: &Pod, settings: &Settings) -> Option<Pod> {
    let ns = pod.metadata.namespace.clone().unwrap();
    let Decision::Inject(overrides) = decide(pod, &ns, true, settings) else {
        return None;
    };
    let mut injected = pod.clone();
    inject(&mut injected, settings, &overrides).unwrap();
    let mut json = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut json, &patch(pod, &injected)).unwrap();
    let patched: Pod = serde_json::from_value(json).unwrap();
    assert_eq!(patched, injected, "the patch reproduces the typed change");
    Some(patched)
}

fn names(list: Option<&Vec<Container>>) -> Vec<String> {
    list.into_iter().flatten().map(|c| c.name.clone()).collect()
}

#[test]
fn a_deployment_pod_gets_init_then_native_sidecar_before_its_own_init() {
    let pod = captured_pod("deployment-pod-create.json");
    let before = pod.spec.as_ref().unwrap();
    let out = webhook(&pod, &Settings::default()).unwrap();
    let spec = out.spec.as_ref().unwrap();
    let mut want = vec![INIT_CONTAINER.to_string(), PROXY_CONTAINER.to_string()];
    want.extend(names(before.init_containers.as_ref()));
    assert_eq!(names(spec.init_containers.as_ref()), want);
    assert_eq!(
        names(Some(&spec.containers)),
        names(Some(&before.containers))
    );
    let inits = spec.init_containers.as_ref().unwrap();
    // The pod's annotation reaches the capture rules.
    let args = inits[0].args.clone().unwrap().join(" ");
    assert!(args.contains("--exclude-outbound-ports 5432"), "{args}");
    let caps = inits[0]
        .security_context
        .as_ref()
        .unwrap()
        .capabilities
        .as_ref()
        .unwrap();
    assert_eq!(
        caps.add.clone().unwrap(),
        ["NET_ADMIN".to_string(), "NET_RAW".to_string()]
    );
    let proxy = &inits[1];
    assert_eq!(proxy.restart_policy.as_deref(), Some("Always"));
    assert!(proxy.startup_probe.is_some());
    let sc = proxy.security_context.as_ref().unwrap();
    assert_eq!(
        (
            sc.run_as_user,
            sc.run_as_non_root,
            sc.read_only_root_filesystem
        ),
        (Some(1337), Some(true), Some(true))
    );
    let token = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "braid-token")
        .unwrap();
    let sources = token.projected.as_ref().unwrap().sources.as_ref().unwrap();
    let projection = sources[0].service_account_token.as_ref().unwrap();
    assert_eq!(projection.audience.as_deref(), Some("braid"));
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .any(|v| v.name == "braid-operator-ca")
    );
    assert!(
        out.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(STATUS)
    );
}

#[test]
fn injection_is_idempotent() {
    let pod = captured_pod("job-pod-create.json");
    let once = webhook(&pod, &Settings::default()).unwrap();
    assert!(webhook(&once, &Settings::default()).is_none());
    assert_eq!(
        decide(&once, "shop", true, &Settings::default()),
        Decision::Skip("already injected".into())
    );
}

#[test]
fn legacy_clusters_get_the_proxy_first_with_a_post_start_wait() {
    let settings = Settings {
        native_sidecars: false,
        ..Default::default()
    };
    let out = webhook(&captured_pod("deployment-pod-create.json"), &settings).unwrap();
    let spec = out.spec.unwrap();
    assert_eq!(spec.containers[0].name, PROXY_CONTAINER);
    let lifecycle = spec.containers[0].lifecycle.as_ref().unwrap();
    let hook = lifecycle
        .post_start
        .as_ref()
        .unwrap()
        .exec
        .as_ref()
        .unwrap();
    assert_eq!(
        hook.command.clone().unwrap().join(" "),
        "braid-proxy wait-ready"
    );
    assert_eq!(names(spec.init_containers.as_ref())[0], INIT_CONTAINER);
}

#[test]
fn skips_say_why() {
    let settings = Settings::default();
    let skip = |pod: &Pod, ns: &str, enabled: bool| match decide(pod, ns, enabled, &settings) {
        Decision::Skip(why) => why,
        Decision::Inject(_) => String::new(),
        Decision::Refuse(why) => panic!("refused: {why}"),
    };
    let opted_out = captured_pod("pod-opted-out-create.json");
    assert!(skip(&opted_out, "shop", true).contains("\"false\""));
    let pod = captured_pod("job-pod-create.json");
    assert!(skip(&pod, "kube-system", true).contains("kube-system"));
    assert!(skip(&pod, "braid-system", true).contains("own namespace"));
    assert!(skip(&pod, "shop", false).contains("not labelled"));
    let mut host = pod.clone();
    host.spec.as_mut().unwrap().host_network = Some(true);
    assert!(skip(&host, "shop", true).contains("hostNetwork"));
    let mut opted_in = pod;
    opted_in
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("braid.dev/inject".into(), "true".into());
    assert!(matches!(
        decide(&opted_in, "shop", false, &settings),
        Decision::Inject(_)
    ));
}

#[test]
fn a_name_braid_needs_is_refused_not_overwritten() {
    let mut pod = captured_pod("job-pod-create.json");
    pod.spec
        .as_mut()
        .unwrap()
        .volumes
        .get_or_insert_with(Vec::new)
        .push(Volume {
            name: "braid-token".into(),
            ..Default::default()
        });
    let err = inject(&mut pod, &Settings::default(), &Overrides::default()).unwrap_err();
    assert_eq!(
        err,
        InjectError::NameTaken {
            field: "volumes",
            name: "braid-token".into()
        }
    );
    assert!(err.to_string().contains("spec.volumes"));
}

/// The injected pod's `BRAID_APP_PROBES`, parsed.
fn app_probes(spec: &k8s_openapi::api::core::v1::PodSpec) -> serde_json::Value {
    let proxy = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .unwrap();
    let env = proxy
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "BRAID_APP_PROBES")
        .unwrap();
    serde_json::from_str(env.value.as_deref().unwrap()).unwrap()
}

/// `uninject` of the injected pod, through YAML as `braid-injector uninject` reads it.
fn uninjected(pod: &Pod) -> Pod {
    let yaml = serde_norway::to_string(pod).unwrap();
    let restored = braid_injector::offline::uninject_documents(&yaml).unwrap();
    serde_norway::from_str(&restored).unwrap()
}

#[test]
fn http_and_tcp_probes_move_to_the_health_port_and_the_proxy_gets_the_originals() {
    let pod = captured_pod("deployment-pod-create.json");
    let out = webhook(&pod, &Settings::default()).unwrap();
    let spec = out.spec.as_ref().unwrap();
    let app = spec.containers.iter().find(|c| c.name == "app").unwrap();
    let get = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let p = p.as_ref().unwrap();
        assert!(p.tcp_socket.is_none(), "{p:?}");
        p.http_get.clone().unwrap()
    };
    let health = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15021);
    for (probe, kind) in [
        (&app.readiness_probe, "readiness"),
        (&app.liveness_probe, "liveness"),
        // The TCP startup probe: kubelet's connection would be accepted by the proxy's
        // inbound listener whether or not the app listens.
        (&app.startup_probe, "startup"),
    ] {
        let get = get(probe);
        assert_eq!(get.path.unwrap(), format!("/app-health/app/{kind}"));
        assert_eq!(get.port, health);
    }
    // Timing settings are kubelet's and stay.
    assert_eq!(
        app.readiness_probe.as_ref().unwrap().period_seconds,
        Some(5)
    );
    assert_eq!(
        app.startup_probe.as_ref().unwrap().failure_threshold,
        Some(30)
    );
    // The proxy performs the originals, the named port resolved.
    let probes = app_probes(spec);
    assert_eq!(probes["app/readiness"]["http"]["port"], 8080);
    assert_eq!(probes["app/readiness"]["http"]["path"], "/ready");
    assert_eq!(probes["app/liveness"]["http"]["path"], "/live");
    assert_eq!(
        probes["app/startup"],
        serde_json::json!({"tcp": {"port": 8080}})
    );
    assert!(
        out.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key("braid.dev/original-probes")
    );

    // uninject puts the originals back.
    let restored = uninjected(&out);
    assert_eq!(
        restored.spec.unwrap().containers,
        pod.spec.unwrap().containers
    );
}

#[test]
fn a_grpc_probe_moves_to_the_health_port_and_uninject_restores_it() {
    // The opted-out capture, opted in: its readiness probe is gRPC with service "".
    let mut pod = captured_pod("pod-opted-out-create.json");
    pod.metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove("braid.dev/inject");
    let out = webhook(&pod, &Settings::default()).unwrap();
    let spec = out.spec.as_ref().unwrap();
    let probe = spec.containers[0].readiness_probe.clone().unwrap();
    assert!(probe.grpc.is_none());
    assert_eq!(
        probe.http_get.unwrap().path.as_deref(),
        Some("/app-health/app/readiness")
    );
    assert_eq!(
        app_probes(spec)["app/readiness"],
        serde_json::json!({"grpc": {"port": 8080, "service": ""}})
    );
    assert_eq!(
        uninjected(&out).spec.unwrap().containers,
        pod.spec.unwrap().containers
    );
}

/// The pod's annotations, or none.
fn annotations(pod: &Pod) -> std::collections::BTreeMap<String, String> {
    pod.metadata.annotations.clone().unwrap_or_default()
}

#[test]
fn prometheus_is_pointed_at_the_proxy_unless_the_pod_scrapes_itself_or_opts_out() {
    let pod = captured_pod("deployment-pod-create.json");
    let out = webhook(&pod, &Settings::default()).unwrap();
    let got = annotations(&out);
    assert_eq!(got["prometheus.io/scrape"], "true");
    assert_eq!(got["prometheus.io/port"], "15021");
    assert_eq!(got["prometheus.io/path"], "/stats/prometheus");
    // Recorded, so uninject takes away exactly these.
    assert!(
        got[STATUS].contains("prometheus.io/path"),
        "{}",
        got[STATUS]
    );
    assert_eq!(annotations(&uninjected(&out)), annotations(&pod));
    // One the user changed since is theirs now: uninject leaves it.
    let mut changed = out.clone();
    changed
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("prometheus.io/port".into(), "9102".into());
    let back = annotations(&uninjected(&changed));
    assert_eq!(
        back.get("prometheus.io/port").map(String::as_str),
        Some("9102")
    );
    assert!(!back.contains_key("prometheus.io/path"));

    // The app's own scrape annotations stay as they are, and none is added.
    let mut own = pod.clone();
    let app_annotations = own
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    app_annotations.insert("prometheus.io/scrape".into(), "true".into());
    app_annotations.insert("prometheus.io/port".into(), "9102".into());
    let out = webhook(&own, &Settings::default()).unwrap();
    let got = annotations(&out);
    assert_eq!(got["prometheus.io/port"], "9102");
    assert!(!got.contains_key("prometheus.io/path"));
    assert!(!got[STATUS].contains("prometheus.io"), "{}", got[STATUS]);
    assert_eq!(annotations(&uninjected(&out)), annotations(&own));

    // Opted out.
    let mut out_of_it = pod.clone();
    out_of_it
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("braid.dev/prometheus-scrape".into(), "false".into());
    let got = annotations(&webhook(&out_of_it, &Settings::default()).unwrap());
    assert!(
        !got.keys().any(|k| k.starts_with("prometheus.io/")),
        "{got:?}"
    );

    // A value that is neither is refused, naming the annotation.
    let mut bad = pod.clone();
    bad.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert("braid.dev/prometheus-scrape".into(), "no".into());
    let Decision::Refuse(why) = decide(&bad, "shop", true, &Settings::default()) else {
        panic!("a bad braid.dev/prometheus-scrape was not refused");
    };
    let why = why.to_string();
    assert!(
        why.contains("annotation braid.dev/prometheus-scrape") && why.contains("\"false\""),
        "{why}"
    );
}

/// The proxy's `BRAID_WORKLOAD` in an injected pod.
fn workload_env(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == PROXY_CONTAINER)
        .and_then(|c| c.env.as_ref())
        .and_then(|env| env.iter().find(|e| e.name == "BRAID_WORKLOAD"))
        .and_then(|e| e.value.clone())
}

#[test]
fn the_proxy_is_told_its_workload_from_the_pods_controller() {
    // A Deployment's pod is owned by a ReplicaSet `payments-844b89b794`.
    let deployment = webhook(
        &captured_pod("deployment-pod-create.json"),
        &Settings::default(),
    )
    .unwrap();
    assert_eq!(workload_env(&deployment).as_deref(), Some("payments"));
    let job = webhook(&captured_pod("job-pod-create.json"), &Settings::default()).unwrap();
    assert_eq!(workload_env(&job).as_deref(), Some("nightly-report"));
}
