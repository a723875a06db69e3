//! A scripted API server for what kube-fake-client cannot serve (TokenReview, listing
//! cluster-scoped namespaces): every request is recorded, and a handler answers it.
// Each test file uses a different part of this module.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;

/// One request the client sent.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its method.
    pub method: Method,
    /// Its path.
    pub path: String,
    /// Its query string ("" when none).
    pub query: String,
    /// Its content type ("" when none).
    pub content_type: String,
    /// Its body as JSON (null when empty).
    pub body: serde_json::Value,
}

/// Every request so far.
pub type Log = Arc<Mutex<Vec<Recorded>>>;

/// How the mock answers a request.
pub enum Answer {
    /// This status and JSON body.
    Json(StatusCode, serde_json::Value),
    /// Never: the request stays open (a watch with nothing to report).
    Hang,
}

impl From<(StatusCode, serde_json::Value)> for Answer {
    fn from((status, body): (StatusCode, serde_json::Value)) -> Self {
        Self::Json(status, body)
    }
}

/// A client whose requests `handler` answers.
pub fn client<H, A>(handler: H) -> (kube::Client, Log)
where
    H: Fn(&Recorded) -> A + Send + 'static,
    A: Into<Answer>,
{
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        let mut hanging = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let recorded = Recorded {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string(),
                body: if bytes.is_empty() {
                    serde_json::Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap()
                },
            };
            let answer = handler(&recorded).into();
            seen.lock().unwrap().push(recorded);
            let Answer::Json(status, answer) = answer else {
                hanging.push(respond);
                continue;
            };
            respond.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// An empty list.
pub fn empty_list() -> (StatusCode, serde_json::Value) {
    (
        StatusCode::OK,
        serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": []}),
    )
}

/// A `Status` failure, as the API server sends it.
pub fn failure(code: u16, reason: &str, message: &str) -> (StatusCode, serde_json::Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "code": code, "reason": reason, "message": message,
        }),
    )
}
