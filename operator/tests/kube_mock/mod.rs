//! A scripted API server for what kube-fake-client cannot serve (TokenReview, listing
//! cluster-scoped namespaces): every request is recorded, and a handler answers it.
// Each test file uses a different part of this module.
#![allow(dead_code)]

pub mod cluster;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::client::Body;
use tokio::sync::mpsc;

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
    /// A watch: each value sent is one event (`{"type": …, "object": …}`), a line of
    /// the response, which ends when the sender is dropped.
    Watch(mpsc::UnboundedReceiver<serde_json::Value>),
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
    type Streamed = UnsyncBoxBody<Bytes, Infallible>;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Streamed>>();
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
            let (status, body) = match answer {
                Answer::Json(status, answer) => (
                    status,
                    Full::new(Bytes::from(serde_json::to_vec(&answer).unwrap())).boxed_unsync(),
                ),
                Answer::Hang => {
                    hanging.push(respond);
                    continue;
                }
                Answer::Watch(events) => {
                    let lines = futures::stream::unfold(events, |mut events| async move {
                        let event = events.recv().await?;
                        let mut line = serde_json::to_vec(&event).unwrap();
                        line.push(b'\n');
                        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), events))
                    });
                    (StatusCode::OK, StreamBody::new(lines).boxed_unsync())
                }
            };
            respond.send_response(
                Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(body)
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
