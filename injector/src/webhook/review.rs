//! One AdmissionReview in, one out: the webhook's logic, without any I/O.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};

use crate::decide::{Decision, decide};
use crate::inject::{inject, patch};
use crate::settings::Settings;

/// The only AdmissionReview version the webhook answers (its configuration's
/// `admissionReviewVersions: [v1]`).
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// The kind of object the webhook answers.
pub const KIND: &str = "AdmissionReview";

/// Why a body is not a review the webhook can answer.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    /// Not JSON at all.
    #[error("not an AdmissionReview: {0}")]
    NotJson(serde_json::Error),
    /// Another version than v1: answering it as v1 would be read wrongly, or not at all.
    #[error(
        "apiVersion {0:?} is not {API_VERSION}, the only version braid-injector answers (admissionReviewVersions: [v1] in its MutatingWebhookConfiguration)"
    )]
    ApiVersion(String),
    /// Another kind of object.
    #[error("kind {0:?} is not {KIND}")]
    Kind(String),
    /// A review without a request.
    #[error("the AdmissionReview has no request")]
    NoRequest,
    /// A review whose object is not a pod.
    #[error("not an AdmissionReview of a Pod: {0}")]
    NotAPod(serde_json::Error),
}

impl BadReview {
    /// The HTTP status to answer with: 400 when the body is not a v1 AdmissionReview
    /// request at all. A review of something that is not a pod is answered 200 with its
    /// `uid`, so the API server shows the refusal to whoever created the object.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::NotAPod(_) => 200,
            _ => 400,
        }
    }
}

/// The webhook's answer to one POST: an HTTP status and an AdmissionReview (JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// 200 for a review answered (allowed or not), 400 for a body that is not a review.
    pub status: u16,
    /// The `admission.k8s.io/v1` AdmissionReview holding the response.
    pub body: serde_json::Value,
}

/// Answers one POST body (an AdmissionReview, JSON).
///
/// The patch goes out base64-encoded, as the API documents for this `[]byte` field
/// (kube's own serialisation writes an array of numbers: kube-rs/kube#1781).
pub fn reply(body: &[u8], settings: &Settings) -> Reply {
    let (status, review) = match parse(body) {
        Ok(request) => (200, respond(&request, settings).into_review()),
        Err(e) => (e.http_status(), invalid(body, &e)),
    };
    let mut out = serde_json::to_value(review).unwrap_or_default();
    if let Some(patch) = out.pointer_mut("/response/patch")
        && let Ok(bytes) = serde_json::from_value::<Vec<u8>>(patch.clone())
    {
        *patch = serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    Reply { status, body: out }
}

/// Answers one AdmissionReview (as received, JSON) with the JSON to send back; see
/// [`reply`], which also gives the HTTP status.
pub fn review_json(body: &[u8], settings: &Settings) -> serde_json::Value {
    reply(body, settings).body
}

/// Answers one AdmissionReview (as received, JSON). Never fails: malformed input gets a
/// response that says what is wrong, so the API server shows it to whoever created the
/// pod. The namespace selector of the webhook configuration has already checked the
/// namespace label, so every pod that reaches here is in an enabled namespace.
pub fn review(body: &[u8], settings: &Settings) -> AdmissionReview<DynamicObject> {
    match parse(body) {
        Ok(request) => respond(&request, settings).into_review(),
        Err(e) => invalid(body, &e),
    }
}

/// The request of a v1 AdmissionReview of a Pod. The envelope is checked first: kube's
/// types read any apiVersion and kind.
fn parse(body: &[u8]) -> Result<AdmissionRequest<Pod>, BadReview> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(BadReview::NotJson)?;
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or_default();
    if field("apiVersion") != API_VERSION {
        return Err(BadReview::ApiVersion(field("apiVersion").to_owned()));
    }
    if field("kind") != KIND {
        return Err(BadReview::Kind(field("kind").to_owned()));
    }
    if value.get("request").is_none_or(serde_json::Value::is_null) {
        return Err(BadReview::NoRequest);
    }
    let review: AdmissionReview<Pod> = serde_json::from_value(value).map_err(BadReview::NotAPod)?;
    review.try_into().map_err(|_| BadReview::NoRequest)
}

fn respond(request: &AdmissionRequest<Pod>, settings: &Settings) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    if request.operation != Operation::Create {
        return response;
    }
    if request.kind.kind != "Pod" {
        return response.deny(format!(
            "braid-injector: admits pods only, not {:?}: its MutatingWebhookConfiguration's rules should name only pods",
            request.kind.kind
        ));
    }
    let Some(pod) = &request.object else {
        return response.deny("braid-injector: a pod CREATE without the pod");
    };
    let namespace = request
        .namespace
        .as_deref()
        .or(pod.metadata.namespace.as_deref())
        .unwrap_or("default");
    let overrides = match decide(pod, namespace, true, settings) {
        Decision::Inject(o) => o,
        Decision::Skip(_) => return response,
        Decision::Refuse(why) => return response.deny(format!("braid-injector: {why}")),
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
fn invalid(body: &[u8], why: &BadReview) -> AdmissionReview<DynamicObject> {
    let mut response = AdmissionResponse::invalid(format!("braid-injector: {why}"));
    response.result = response.result.with_code(400);
    if let Some(uid) = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["request"]["uid"].as_str().map(str::to_owned))
    {
        response.uid = uid;
    }
    response.into_review()
}
