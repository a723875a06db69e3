//! One AdmissionReview in, one out: the webhook's logic, without any I/O.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::annotations::Overrides;
use crate::decide::{Decision, decide};
use crate::inject::{inject, patch};
use crate::settings::Settings;

/// Answers one AdmissionReview (as received, JSON) with the JSON to send back.
///
/// The patch goes out base64-encoded, as the API documents for this `[]byte` field
/// (kube's own serialisation writes an array of numbers: kube-rs/kube#1781).
pub fn review_json(body: &[u8], settings: &Settings) -> serde_json::Value {
    let mut out = serde_json::to_value(review(body, settings)).unwrap_or_default();
    if let Some(patch) = out.pointer_mut("/response/patch")
        && let Ok(bytes) = serde_json::from_value::<Vec<u8>>(patch.clone())
    {
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    out
}

/// Answers one AdmissionReview (as received, JSON). Never fails: malformed input gets a
/// response that says what is wrong, so the API server shows it to whoever created the
/// pod. The namespace selector of the webhook configuration has already checked the
/// namespace label, so every pod that reaches here is in an enabled namespace.
pub fn review(body: &[u8], settings: &Settings) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<Pod> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                body,
                format!("braid-injector: not an AdmissionReview of a Pod: {e}"),
            );
        }
    };
    let request: AdmissionRequest<Pod> = match review.try_into() {
        Ok(r) => r,
        Err(_) => return invalid(body, "braid-injector: the AdmissionReview has no request"),
    };
    respond(&request, settings).into_review()
}

fn respond(request: &AdmissionRequest<Pod>, settings: &Settings) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation != Operation::Create {
        return response;
    }
    let Some(pod) = &request.object else {
        return response.deny("braid-injector: a pod CREATE without the pod");
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    if let Decision::Skip(_) = decide(pod, namespace, true, settings) {
        return response;
    }
    let overrides = match Overrides::parse(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap_or(&Default::default()),
    ) {
        Ok(o) => o,
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return response.deny(format!("braid-injector: {}", list.join("; ")));
        }
    };
    let mut injected = pod.clone();
    if let Err(e) = inject(&mut injected, settings, &overrides) {
        return response.deny(format!("braid-injector: {e}"));
    }
    match response.clone().with_patch(patch(pod, &injected)) {
        Ok(r) => r,
        Err(e) => response.deny(format!("braid-injector: cannot encode the patch: {e}")),
    }
}

/// A refusal for input that is not a usable review, keeping its `uid` when there is one
/// so the API server can match the answer to its request.
fn invalid(body: &[u8], message: impl Into<String>) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(message.into());
    if let Some(uid) = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["request"]["uid"].as_str().map(str::to_owned))
    {
        response.uid = uid;
    }
    response.into_review()
}
