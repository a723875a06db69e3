//! The webhook's answer to the real AdmissionReview captures, and to bad input.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use base64::Engine as _;
use braid_injector::settings::Settings;
use braid_injector::webhook::review::review_json;
use k8s_openapi::api::core::v1::Pod;

fn capture(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/admission")
            .join(file),
    )
    .unwrap()
}

/// The response part of an answer, as JSON.
fn answer(body: &[u8]) -> serde_json::Value {
    let out = review_json(body, &Settings::default());
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(out["kind"], "AdmissionReview");
    out["response"].clone()
}

#[test]
fn a_pod_create_is_answered_with_a_json_patch_that_applies() {
    let body = capture("deployment-pod-create.json");
    let resp = answer(&body);
    let input: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(resp["uid"], input["request"]["uid"]);
    assert_eq!(resp["allowed"], true);
    assert_eq!(resp["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(resp["patch"].as_str().expect("a base64 string"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = input["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let inits: Vec<_> = pod
        .spec
        .unwrap()
        .init_containers
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(&inits[..2], ["braid-init", "braid-proxy"]);
}

#[test]
fn an_opted_out_pod_is_allowed_unchanged() {
    let resp = answer(&capture("pod-opted-out-create.json"));
    assert_eq!(resp["allowed"], true);
    assert!(resp.get("patch").is_none());
}

#[test]
fn a_bad_annotation_denies_the_pod_naming_it() {
    let mut input: serde_json::Value =
        serde_json::from_slice(&capture("job-pod-create.json")).unwrap();
    input["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"braid.dev/exclude-inbound-ports": "http"});
    let resp = answer(&serde_json::to_vec(&input).unwrap());
    assert_eq!(resp["allowed"], false);
    let message = resp["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("braid.dev/exclude-inbound-ports")
            && message.contains("\"http\" is not a port"),
        "{message}"
    );
}

#[test]
fn malformed_input_gets_an_answer_not_a_crash() {
    for body in [
        &b"not json"[..],
        b"{}",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
    ] {
        let resp = answer(body);
        assert_eq!(resp["allowed"], false, "{}", String::from_utf8_lossy(body));
        assert!(
            resp["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("braid-injector: ")
        );
    }
    // A review whose pod is not a pod keeps its uid, so the API server can show the error.
    let mut input: serde_json::Value =
        serde_json::from_slice(&capture("job-pod-create.json")).unwrap();
    input["request"]["object"]["spec"]["containers"] = serde_json::json!("oops");
    let resp = answer(&serde_json::to_vec(&input).unwrap());
    assert_eq!(resp["uid"], input["request"]["uid"]);
    assert_eq!(resp["allowed"], false);
}

#[test]
fn an_unknown_api_version_or_kind_is_refused_not_answered_as_v1() {
    let mut input: serde_json::Value =
        serde_json::from_slice(&capture("job-pod-create.json")).unwrap();
    for (field, value, says) in [
        (
            "apiVersion",
            "admission.k8s.io/v9",
            "apiVersion \"admission.k8s.io/v9\"",
        ),
        (
            "apiVersion",
            "admission.k8s.io/v1beta1",
            "admissionReviewVersions: [v1]",
        ),
        ("kind", "ConfigMap", "kind \"ConfigMap\""),
    ] {
        let mut body = input.clone();
        body[field] = value.into();
        let resp = answer(&serde_json::to_vec(&body).unwrap());
        assert_eq!(resp["allowed"], false, "{field}: {value}");
        assert!(resp.get("patch").is_none());
        let message = resp["status"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("braid-injector: ") && message.contains(says),
            "{message}"
        );
        assert_eq!(resp["status"]["code"], 400, "{message}");
    }
    // Without either field it is not a review at all.
    input.as_object_mut().unwrap().remove("apiVersion");
    assert_eq!(
        answer(&serde_json::to_vec(&input).unwrap())["allowed"],
        false
    );
}
