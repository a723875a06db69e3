//! `--native-sidecars auto`: the injector asks the API server's /version.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use braid_injector::native_sidecars::{DetectError, detect};
use http::{Request, Response};
use kube::client::Body;

/// A client whose API server answers every request with `status` and `body`, and the
/// paths it was asked for.
fn api_server(
    status: u16,
    body: serde_json::Value,
) -> (kube::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (paths, asked) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            // A test may not listen.
            let _ = paths.send(request.uri().path().to_owned());
            let answer = Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
            respond.send_response(answer);
        }
    });
    (kube::Client::new(service, "default"), asked)
}

fn version(major: &str, minor: &str) -> serde_json::Value {
    serde_json::json!({
        "major": major, "minor": minor, "gitVersion": format!("v{major}.{minor}.3"),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "2024-01-01T00:00:00Z",
        "goVersion": "go1.21", "compiler": "gc", "platform": "linux/amd64"
    })
}

#[tokio::test]
async fn a_1_29_api_server_gets_native_sidecars_and_1_28_does_not() {
    let (client, mut asked) = api_server(200, version("1", "29+"));
    assert!(detect(&client).await.unwrap());
    assert_eq!(asked.recv().await.unwrap(), "/version");
    let (client, _) = api_server(200, version("1", "28"));
    assert!(!detect(&client).await.unwrap());
}

#[tokio::test]
async fn a_failing_api_server_says_what_to_pass() {
    let (client, _) = api_server(
        403,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "forbidden", "reason": "Forbidden", "code": 403}),
    );
    let err = detect(&client).await.unwrap_err();
    assert!(matches!(err, DetectError::Version(_)), "{err:?}");
    assert!(
        err.to_string().contains("pass --native-sidecars true"),
        "{err}"
    );
}
