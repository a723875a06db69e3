//! Every `braid.dev/*` annotation is read at admission, through the webhook's review
//! path with the captured Job pod: a bad value or an unknown key refuses the pod with a
//! message naming the annotation, what it accepts and the fix; what braid-injector
//! writes itself stays accepted; `braid-init` gets requests and limits of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine as _;
use braid_injector::inject::{INIT_CONTAINER, PROXY_CONTAINER};
use braid_injector::settings::Settings;
use braid_injector::webhook::review::review_json;
use k8s_openapi::api::core::v1::{Container, Pod};

/// What the webhook answered.
#[derive(Debug)]
enum Answer {
    Injected(Box<Pod>),
    Unchanged,
    Denied(String),
}

fn job_review() -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/admission/job-pod-create.json"),
        )
        .unwrap(),
    )
    .unwrap()
}

/// Answers the captured Job pod as changed by `edit`.
fn review_pod(edit: impl FnOnce(&mut serde_json::Value)) -> Answer {
    let mut body = job_review();
    edit(&mut body["request"]["object"]);
    let out = review_json(&serde_json::to_vec(&body).unwrap(), &Settings::default());
    let response = &out["response"];
    assert_eq!(response["uid"], body["request"]["uid"]);
    if response["allowed"] != true {
        return Answer::Denied(response["status"]["message"].as_str().unwrap().to_owned());
    }
    let Some(patch) = response["patch"].as_str() else {
        return Answer::Unchanged;
    };
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(patch)
            .unwrap(),
    )
    .unwrap();
    let mut pod = body["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    Answer::Injected(Box::new(serde_json::from_value(pod).unwrap()))
}

fn annotated(pairs: &[(&str, &str)]) -> Answer {
    let annotations: serde_json::Map<_, _> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    review_pod(|pod| pod["metadata"]["annotations"] = annotations.into())
}

fn denied(answer: Answer) -> String {
    match answer {
        Answer::Denied(why) => why,
        other => panic!("not refused: {other:?}"),
    }
}

fn injected(answer: Answer) -> Pod {
    match answer {
        Answer::Injected(pod) => *pod,
        other => panic!("not injected: {other:?}"),
    }
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().unwrap();
    spec.init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .find(|c| c.name == name)
        .unwrap()
}

/// `requests` and `limits` of a container, as `cpu/memory`.
fn resources(c: &Container) -> (String, String) {
    let r = c.resources.as_ref().expect("resources");
    let pair = |m: &Option<std::collections::BTreeMap<_, _>>| {
        let m: &std::collections::BTreeMap<
            String,
            k8s_openapi::apimachinery::pkg::api::resource::Quantity,
        > = m.as_ref().expect("set");
        format!("{}/{}", m["cpu"].0, m["memory"].0)
    };
    (pair(&r.requests), pair(&r.limits))
}

#[test]
fn braid_init_has_requests_and_limits_so_a_resource_quota_admits_the_pod() {
    let pod = injected(annotated(&[]));
    assert_eq!(
        resources(container(&pod, INIT_CONTAINER)),
        ("10m/16Mi".to_owned(), "100m/64Mi".to_owned())
    );
    // Overridable like the proxy's: the annotation sets request and limit.
    let pod = injected(annotated(&[
        ("braid.dev/init-cpu", "200m"),
        ("braid.dev/init-memory", "96Mi"),
    ]));
    assert_eq!(
        resources(container(&pod, INIT_CONTAINER)),
        ("200m/96Mi".to_owned(), "200m/96Mi".to_owned())
    );
    assert_eq!(
        resources(container(&pod, PROXY_CONTAINER)),
        ("50m/32Mi".to_owned(), "1/128Mi".to_owned()),
        "the proxy keeps its own"
    );
    let why = denied(annotated(&[("braid.dev/init-memory", "lots")]));
    assert!(
        why.contains("annotation braid.dev/init-memory: \"lots\" is not a Kubernetes quantity"),
        "{why}"
    );
}

#[test]
fn inject_accepts_exactly_true_or_false() {
    for value in ["no", "maybe", "yes", "True", "FALSE", "", "0"] {
        let why = denied(annotated(&[("braid.dev/inject", value)]));
        assert!(
            why.contains(&format!("annotation braid.dev/inject: {value:?}"))
                && why.contains("\"true\" or \"false\"")
                && why.contains("quote"),
            "{value:?}: {why}"
        );
    }
    assert!(matches!(
        annotated(&[("braid.dev/inject", "false")]),
        Answer::Unchanged
    ));
    injected(annotated(&[("braid.dev/inject", "true")]));
}

#[test]
fn a_log_level_the_proxy_would_refuse_is_refused_at_admission() {
    // "debgu" and "loud" parse as tracing targets with no level: the sidecar would start
    // and log nothing, so they are refused too.
    for value in ["nonsense===", "info,[", "braid_proxy=loud", "debgu", "loud"] {
        let why = denied(annotated(&[("braid.dev/log-level", value)]));
        assert!(
            why.contains(&format!("annotation braid.dev/log-level: {value:?}"))
                && why.contains("debug"),
            "{value:?}: {why}"
        );
    }
    for value in ["debug", "warn,braid_proxy=trace", "off"] {
        let pod = injected(annotated(&[("braid.dev/log-level", value)]));
        let env = container(&pod, PROXY_CONTAINER).env.clone().unwrap();
        let level = env.iter().find(|e| e.name == "BRAID_LOG_LEVEL").unwrap();
        assert_eq!(level.value.as_deref(), Some(value));
    }
}

#[test]
fn connection_limits_are_the_proxys_flags_checked_at_admission() {
    let pod = injected(annotated(&[
        ("braid.dev/idle-timeout", "90s"),
        ("braid.dev/header-read-timeout", " 5s "),
        ("braid.dev/max-connections", "5000"),
    ]));
    let env = container(&pod, PROXY_CONTAINER).env.clone().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(value("BRAID_IDLE_TIMEOUT").as_deref(), Some("90s"));
    assert_eq!(value("BRAID_HEADER_READ_TIMEOUT").as_deref(), Some("5s"));
    assert_eq!(value("BRAID_MAX_CONNECTIONS").as_deref(), Some("5000"));
    // Unset ones are the proxy's defaults: nothing is written for them.
    assert_eq!(value("BRAID_RESPONSE_TIMEOUT"), None);
    for (annotation, value, says) in [
        ("braid.dev/idle-timeout", "90", "the unit is missing"),
        ("braid.dev/response-timeout", "0s", "longer than zero"),
        ("braid.dev/upstream-idle-timeout", "soon", "e.g. 500ms, 10s"),
        ("braid.dev/max-header-bytes", "512", "from 1024 to 1048576"),
        (
            "braid.dev/max-connections",
            "0",
            "--max-connections, default 20000",
        ),
    ] {
        let why = denied(annotated(&[(annotation, value)]));
        assert!(
            why.contains(&format!("annotation {annotation}: ")) && why.contains(says),
            "{annotation}: {why}"
        );
    }
}

/// The proxy's environment variable `name`, if set.
fn proxy_env(pod: &Pod, name: &str) -> Option<String> {
    container(pod, PROXY_CONTAINER)
        .env
        .iter()
        .flatten()
        .find(|e| e.name == name)
        .map(|e| e.value.clone().unwrap_or_default())
}

/// Answers the captured Job pod, annotated, with these injector settings.
fn injected_with(settings: &Settings, pairs: &[(&str, &str)]) -> Pod {
    let mut body = job_review();
    body["request"]["object"]["metadata"]["annotations"] = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let out = review_json(&serde_json::to_vec(&body).unwrap(), settings);
    let patch: json_patch::Patch = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(out["response"]["patch"].as_str().expect("a patch"))
            .unwrap(),
    )
    .unwrap();
    let mut pod = body["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    serde_json::from_value(pod).unwrap()
}

#[test]
fn observability_settings_reach_the_proxy_annotation_first() {
    // The injector's defaults: no access log, 1 % sampling, no collector (no export).
    let pod = injected(annotated(&[]));
    assert_eq!(proxy_env(&pod, "BRAID_ACCESS_LOG").as_deref(), Some("off"));
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_SAMPLING").as_deref(),
        Some("1")
    );
    assert_eq!(proxy_env(&pod, "BRAID_TRACE_COLLECTOR"), None);

    // The cluster's settings, then a pod's own.
    let settings = Settings {
        access_log: "json".into(),
        trace_collector: Some("http://otel-collector.observability:4318".into()),
        trace_sampling: "10".into(),
        ..Settings::default()
    };
    let pod = injected_with(&settings, &[]);
    assert_eq!(proxy_env(&pod, "BRAID_ACCESS_LOG").as_deref(), Some("json"));
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_COLLECTOR").as_deref(),
        Some("http://otel-collector.observability:4318")
    );
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_SAMPLING").as_deref(),
        Some("10")
    );
    let pod = injected_with(
        &settings,
        &[
            ("braid.dev/access-log", "off"),
            ("braid.dev/trace-collector", "http://10.0.0.7:4318/"),
            ("braid.dev/trace-sampling", "0.5%"),
        ],
    );
    // Each in the proxy's normal form.
    assert_eq!(proxy_env(&pod, "BRAID_ACCESS_LOG").as_deref(), Some("off"));
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_COLLECTOR").as_deref(),
        Some("http://10.0.0.7:4318")
    );
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_SAMPLING").as_deref(),
        Some("0.5")
    );
    // An empty annotation is the injector's setting.
    let pod = injected_with(&settings, &[("braid.dev/trace-sampling", "")]);
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_SAMPLING").as_deref(),
        Some("10")
    );
    // A pod's "off" turns off the cluster's collector, and only that.
    let pod = injected_with(&settings, &[("braid.dev/trace-collector", "off")]);
    assert_eq!(proxy_env(&pod, "BRAID_TRACE_COLLECTOR"), None);
    assert_eq!(proxy_env(&pod, "BRAID_ACCESS_LOG").as_deref(), Some("json"));
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_SAMPLING").as_deref(),
        Some("10")
    );
    let pod = injected(annotated(&[("braid.dev/trace-collector", "off")]));
    assert_eq!(proxy_env(&pod, "BRAID_TRACE_COLLECTOR"), None);
    // A pod alone may name a collector.
    let pod = injected(annotated(&[(
        "braid.dev/trace-collector",
        "http://otel-agent:4318",
    )]));
    assert_eq!(
        proxy_env(&pod, "BRAID_TRACE_COLLECTOR").as_deref(),
        Some("http://otel-agent:4318")
    );
}

#[test]
fn observability_values_the_proxy_would_refuse_are_refused_at_admission() {
    for (annotation, value, says) in [
        (
            "braid.dev/access-log",
            "JSON",
            "neither \"json\" nor \"off\"",
        ),
        ("braid.dev/trace-sampling", "-1", "is negative"),
        ("braid.dev/trace-sampling", "101", "above 100"),
        ("braid.dev/trace-sampling", "NaN", "from 0 to 100"),
        (
            "braid.dev/trace-sampling",
            "0.5%%",
            "a trailing % is accepted",
        ),
        (
            "braid.dev/trace-collector",
            "https://otel:4318",
            "TLS to the collector is not supported yet",
        ),
        (
            "braid.dev/trace-collector",
            "http://otel:4318/v1/traces",
            "leave out /v1/traces",
        ),
        ("braid.dev/trace-collector", "http://:4318", "no host"),
        (
            "braid.dev/trace-collector",
            "Off",
            "write \"off\" (lowercase)",
        ),
        (
            "braid.dev/trace-collector",
            "http://otel:99999",
            "is not a port",
        ),
    ] {
        let why = denied(annotated(&[(annotation, value)]));
        assert!(
            why.contains(&format!("annotation {annotation}: {value:?}"))
                && why.contains(says)
                && why.contains("remove it for the injector's default"),
            "{annotation}={value}: {why}"
        );
    }
}

#[test]
fn an_unknown_braid_annotation_is_refused_with_the_closest_name() {
    let why = denied(annotated(&[("braid.dev/proxy-memroy", "64Mi")]));
    assert!(
        why.contains("annotation braid.dev/proxy-memroy")
            && why.contains("did you mean braid.dev/proxy-memory?")
            && why.contains("braid.dev/exclude-outbound-cidrs"),
        "{why}"
    );
    // Other prefixes are not braid's business.
    injected(annotated(&[
        ("example.com/proxy-memroy", "x"),
        ("sidecar.braid.dev/x", "y"),
    ]));
}

#[test]
fn every_problem_is_named_at_once() {
    let why = denied(annotated(&[
        ("braid.dev/inject", "maybe"),
        ("braid.dev/log-level", "nonsense==="),
        ("braid.dev/proxy-cpuu", "1"),
    ]));
    for name in [
        "braid.dev/inject",
        "braid.dev/log-level",
        "braid.dev/proxy-cpuu",
    ] {
        assert!(why.contains(&format!("annotation {name}")), "{why}");
    }
}

#[test]
fn an_opted_out_pod_with_a_bad_annotation_is_refused_too() {
    let why = denied(annotated(&[
        ("braid.dev/inject", "false"),
        ("braid.dev/proxy-memroy", "64Mi"),
    ]));
    assert!(why.contains("braid.dev/proxy-memroy"), "{why}");
}

#[test]
fn an_app_container_named_braid_proxy_is_refused_like_braid_init() {
    for name in [PROXY_CONTAINER, INIT_CONTAINER] {
        let why = denied(review_pod(|pod| {
            pod["spec"]["containers"][0]["name"] = name.into();
        }));
        assert!(
            why.contains(&format!(
                "spec.containers: the pod already has {name:?}, which braid adds; rename it"
            )),
            "{name}: {why}"
        );
    }
}

#[test]
fn what_the_injector_writes_is_accepted_and_an_injected_pod_comes_back_unchanged() {
    // A pod whose probes are taken over gets braid.dev/original-probes and
    // braid.dev/status; sent again (reinvocation, or a template injected offline) it is
    // allowed unchanged.
    let pod = injected(review_pod(|pod| {
        pod["metadata"]["annotations"] = serde_json::json!({"braid.dev/proxy-cpu": "100m"});
        pod["spec"]["containers"][0]["readinessProbe"] =
            serde_json::json!({"tcpSocket": {"port": 8080}});
    }));
    let annotations = pod.metadata.annotations.clone().unwrap();
    assert!(annotations.contains_key("braid.dev/status"));
    assert!(annotations.contains_key("braid.dev/original-probes"));
    let again = serde_json::to_value(&pod).unwrap();
    assert!(matches!(review_pod(|p| *p = again), Answer::Unchanged));
}

#[test]
fn a_status_annotation_that_does_not_match_the_pod_is_refused() {
    // braid.dev/status is braid's record of an injection: garbage, or a record of
    // containers the pod does not have (copied from another pod), would skip injection.
    let why = denied(annotated(&[("braid.dev/status", "injected")]));
    assert!(
        why.contains("annotation braid.dev/status") && why.contains("remove it"),
        "{why}"
    );
    let why = denied(annotated(&[(
        "braid.dev/status",
        r#"{"version":"0.1.0","initContainers":["braid-init","braid-proxy"],"containers":[],"volumes":["braid-token"]}"#,
    )]));
    assert!(
        why.contains("annotation braid.dev/status") && why.contains("\"braid-init\""),
        "{why}"
    );
    let why = denied(annotated(&[("braid.dev/original-probes", "{}")]));
    assert!(
        why.contains("annotation braid.dev/original-probes") && why.contains("remove it"),
        "{why}"
    );
}

#[test]
fn the_docs_list_every_annotation_and_each_limits_default() {
    // The annotations are listed in docs/injector.md, the proxy's flags in docs/proxy.md.
    let readme = ["injector.md", "proxy.md"]
        .map(|f| {
            std::fs::read_to_string(format!("{}/../docs/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
        })
        .join("\n");
    let row = |annotation: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{annotation}` |")))
            .unwrap_or_else(|| {
                panic!("docs/injector.md's annotation table has no row for {annotation}")
            })
            .to_owned()
    };
    for annotation in braid_injector::annotations::USER_ANNOTATIONS {
        row(annotation);
    }
    for limit in braid_injector::annotations::LIMITS {
        assert!(
            row(limit.annotation).ends_with(&format!("| `{}` |", limit.default)),
            "{}",
            limit.annotation
        );
        let flag = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `--{}` |", limit.flag)))
            .unwrap_or_else(|| panic!("docs/proxy.md's limits table has no --{}", limit.flag));
        assert!(flag.contains(&format!("| `{}` |", limit.default)), "{flag}");
    }
}
