#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! TokenReviewer against a scripted API server: what it sends, what it makes of the
//! answers, and that accepted tokens are not reviewed again at once.

mod kube_mock;

use std::time::Duration;

use braid_operator::stream::auth::{AuthError, Authenticator};
use braid_operator::stream::token_review::TokenReviewer;
use http::{Method, StatusCode};

/// An API server that accepts `good-token` for shop/payments bound to payments-0.
fn api() -> (kube::Client, kube_mock::Log) {
    kube_mock::client(|r| {
        let token = r.body["spec"]["token"].as_str().unwrap_or_default();
        let status = if token == "good-token" {
            serde_json::json!({
                "authenticated": true,
                "audiences": r.body["spec"]["audiences"].clone(),
                "user": {
                    "username": "system:serviceaccount:shop:payments",
                    "extra": {"authentication.kubernetes.io/pod-name": ["payments-0"]}
                }
            })
        } else {
            serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
        };
        let mut review = r.body.clone();
        review["status"] = status;
        (StatusCode::CREATED, review)
    })
}

#[tokio::test]
async fn asks_the_api_server_for_audience_braid() {
    let (client, log) = api();
    let reviewer = TokenReviewer::new(client);
    let who = reviewer.authenticate("good-token").await.unwrap();
    assert_eq!(who.namespace, "shop");
    assert_eq!(who.service_account, "payments");
    assert_eq!(who.pod.as_deref(), Some("payments-0"));

    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    let r = &log[0];
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/apis/authentication.k8s.io/v1/tokenreviews");
    assert_eq!(r.body["kind"], "TokenReview");
    assert_eq!(r.body["spec"]["token"], "good-token");
    assert_eq!(r.body["spec"]["audiences"], serde_json::json!(["braid"]));
}

#[tokio::test]
async fn a_refused_token_is_invalid_with_the_servers_reason_and_not_cached() {
    let (client, log) = api();
    let reviewer = TokenReviewer::new(client);
    for _ in 0..2 {
        match reviewer.authenticate("bad-token").await {
            Err(AuthError::Invalid(reason)) => assert_eq!(reason, "invalid bearer token"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn accepted_tokens_are_cached_briefly() {
    let (client, log) = api();
    let reviewer = TokenReviewer::new(client).with_cache(Duration::from_millis(200), 10);
    for _ in 0..5 {
        reviewer.authenticate("good-token").await.unwrap();
    }
    assert_eq!(
        log.lock().unwrap().len(),
        1,
        "one review for five connections"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    reviewer.authenticate("good-token").await.unwrap();
    assert_eq!(log.lock().unwrap().len(), 2, "reviewed again once expired");
}

#[tokio::test]
async fn an_api_failure_is_unavailable() {
    let (client, _) = kube_mock::client(|_| {
        kube_mock::failure(
            403,
            "Forbidden",
            "tokenreviews.authentication.k8s.io is forbidden",
        )
    });
    match TokenReviewer::new(client).authenticate("good-token").await {
        Err(AuthError::Unavailable(reason)) => {
            assert!(reason.contains("manifests/rbac/operator.yaml"), "{reason}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let (client, _) = kube_mock::client(|_| kube_mock::failure(500, "InternalError", "etcd"));
    assert!(matches!(
        TokenReviewer::new(client).authenticate("good-token").await,
        Err(AuthError::Unavailable(_))
    ));
}
