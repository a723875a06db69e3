//! `braid-proxy run --operator` against a fake operator in the test process: configs are
//! applied and reported, refused ones are reported and change nothing, reconnects resume
//! from the version in force, and the proxy serves whatever the operator does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;

use braid_proxy::control::protocol::{Report, VERSION_HEADER};
use http::Request;
use support::operator::FakeOperator;
use support::*;

/// A config with one explicit listener on `front` forwarding to `target`, as the
/// operator's stream carries it: one line of compact JSON.
fn config(version: &str, front: SocketAddr, target: SocketAddr) -> String {
    serde_json::json!({
        "version": version,
        "node": {"workload": "web-0", "namespace": "shop", "serviceAccount": "web"},
        "listeners": [{
            "name": "web",
            "bind": front.to_string(),
            "target": {"address": target.to_string()},
            "protocol": "http1",
        }],
    })
    .to_string()
}

/// Who served a request through the proxy's listener on `front` (`a`, `b`, …).
async fn served_by(front: SocketAddr) -> String {
    let req = Request::get("/")
        .header("host", "web")
        .body(empty())
        .unwrap();
    let resp = http1_request(front, req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = body_string(resp).await;
    body.split(' ').next().unwrap().to_owned()
}

/// [`served_by`] once the listener on `front` accepts: a version in force may still be
/// rebinding its listeners for a moment.
async fn served_by_when_listening(front: SocketAddr) -> String {
    eventually("the listener to accept", || async move {
        tokio::net::TcpStream::connect(front).await.is_ok()
    })
    .await;
    served_by(front).await
}

fn applied(version: &str) -> impl Fn(&Report) -> bool {
    move |r| r.applied_version.as_deref() == Some(version) && r.rejected.is_none()
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn configs_are_applied_and_reported_as_they_arrive() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.publish("v1", &config("v1", front, a));

    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    assert_eq!(proxy.version_in_force().await, "v1");
    assert_eq!(served_by(front).await, "a");
    op.wait_for_report("v1 applied", applied("v1")).await;
    let (headers, _) = op.reports()[0].clone();
    assert_eq!(header(&headers, "authorization"), Some("Bearer token-1"));
    assert_eq!(header(&headers, "x-braid-pod"), Some("shop/web-0"));
    assert_eq!(header(&headers, "content-type"), Some("application/json"));

    // Heartbeats carry nothing; the next version follows on the same stream.
    op.heartbeat();
    op.publish("v2", &config("v2", front, b));
    proxy.wait_for_version("v2").await;
    assert_eq!(proxy.version_in_force().await, "v2");
    assert_eq!(served_by(front).await, "b");
    op.wait_for_report("v2 applied", applied("v2")).await;
    assert_eq!(op.stream_requests().len(), 1);
    assert!(proxy.is_ready().await);
}

#[tokio::test]
async fn refused_streams_are_retried_and_the_proxy_is_not_ready_until_a_config_arrives() {
    let a = http_backend("a").await;
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.refuse_next(401, "token expired");
    op.refuse_next(403, "token of another pod");

    let proxy = Proxy::start_with_operator(&op).await;
    // The third attempt is accepted; the operator has no config for the pod yet.
    op.wait_for_stream_requests(3).await;
    let (status, body) = proxy.admin_get("/ready").await;
    assert_eq!((status, body.as_str()), (503, "no config yet\n"));

    op.publish("v1", &config("v1", front, a));
    proxy.wait_ready().await;
    assert_eq!(proxy.version_in_force().await, "v1");
    assert_eq!(served_by(front).await, "a");
    op.wait_for_report("v1 applied", applied("v1")).await;
    for request in op.stream_requests() {
        assert_eq!(header(&request, "authorization"), Some("Bearer token-1"));
        assert_eq!(header(&request, "x-braid-pod"), Some("shop/web-0"));
        assert_eq!(header(&request, VERSION_HEADER), None);
    }
}

#[tokio::test]
async fn a_reconnect_carries_the_version_in_force_and_a_fresh_token() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.publish("v1", &config("v1", front, a));
    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    op.wait_for_report("v1 applied", applied("v1")).await;

    // The kubelet rotates the token; the operator ends the stream (a restart, say).
    op.rotate_token("token-2");
    op.end_streams();
    op.wait_for_stream_requests(2).await;
    let requests = op.stream_requests();
    assert_eq!(header(&requests[0], VERSION_HEADER), None);
    assert_eq!(header(&requests[1], VERSION_HEADER), Some("v1"));
    assert_eq!(
        header(&requests[1], "authorization"),
        Some("Bearer token-2")
    );
    assert_eq!(header(&requests[1], "x-braid-pod"), Some("shop/web-0"));
    assert!(proxy.is_ready().await);
    assert_eq!(proxy.version_in_force().await, "v1");

    op.publish("v2", &config("v2", front, b));
    proxy.wait_for_version("v2").await;
    assert_eq!(served_by(front).await, "b");
    op.wait_for_report("v2 applied", applied("v2")).await;
    let reports = op.reports();
    // The operator did not resend v1 to a proxy holding it: v1 was reported once when
    // applied, and once more on reconnecting (what it holds, so a replica that does not
    // lead can pass it on at once), not applied again.
    let v1 = reports.iter().filter(|(_, r)| applied("v1")(r)).count();
    assert_eq!(v1, 2, "{reports:?}");
    let (headers, _) = reports.iter().find(|(_, r)| applied("v2")(r)).unwrap();
    assert_eq!(header(headers, "authorization"), Some("Bearer token-2"));
}

#[tokio::test]
async fn refused_configs_are_reported_and_the_last_good_one_stays() {
    let a = http_backend("a").await;
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.publish("v1", &config("v1", front, a));
    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    op.wait_for_report("v1 applied", applied("v1")).await;

    // A field that does not parse: the error names it.
    let mut bad = serde_json::from_str::<serde_json::Value>(&config("v2", front, a)).unwrap();
    bad["listeners"][0]["bind"] = "not an address".into();
    op.send_line(&bad.to_string());
    let report = op
        .wait_for_report("v2 rejected", |r| {
            r.rejected.as_ref().is_some_and(|x| x.version == "v2")
        })
        .await;
    assert_eq!(report.applied_version.as_deref(), Some("v1"));
    let error = report.rejected.unwrap().error;
    assert!(error.contains("listeners[0].bind"), "{error}");

    // A config that parses but contradicts itself: two listeners of one name.
    let mut twice = serde_json::from_str::<serde_json::Value>(&config("v3", front, a)).unwrap();
    let mut second = twice["listeners"][0].clone();
    second["bind"] = free_addr().to_string().into();
    twice["listeners"].as_array_mut().unwrap().push(second);
    op.send_line(&twice.to_string());
    let report = op
        .wait_for_report("v3 rejected", |r| {
            r.rejected.as_ref().is_some_and(|x| x.version == "v3")
        })
        .await;
    let error = report.rejected.unwrap().error;
    assert!(error.starts_with("invalid config: listeners[1]"), "{error}");

    // Not JSON at all: no version to name.
    op.send_line("this is not a config");
    let report = op
        .wait_for_report("a line without a version rejected", |r| {
            r.rejected.as_ref().is_some_and(|x| x.version.is_empty())
        })
        .await;
    assert_eq!(report.applied_version.as_deref(), Some("v1"));

    assert_eq!(proxy.version_in_force().await, "v1");
    assert!(proxy.is_ready().await);
    assert_eq!(served_by(front).await, "a");

    // The stream survived the refusals.
    op.publish("v4", &config("v4", front, a));
    proxy.wait_for_version("v4").await;
    op.wait_for_report("v4 applied", applied("v4")).await;
    assert_eq!(op.stream_requests().len(), 1);
}

/// A config whose listener on `front` forwards to service `web.shop:80`, whose one
/// endpoint is `target`.
fn config_with_service(version: &str, front: SocketAddr, target: SocketAddr) -> String {
    serde_json::json!({
        "version": version,
        "node": {"workload": "web-0", "namespace": "shop", "serviceAccount": "web"},
        "services": [service(target)],
        "listeners": [{
            "name": "web",
            "bind": front.to_string(),
            "target": {"service": {"name": "web", "namespace": "shop", "port": 80}},
            "protocol": "http1",
        }],
    })
    .to_string()
}

fn service(target: SocketAddr) -> serde_json::Value {
    serde_json::json!({
        "name": "web",
        "namespace": "shop",
        "ports": [{"port": 80, "targetPort": target.port(), "protocol": "http1"}],
        "groups": [{"name": "(default)", "endpoints": [{"address": target.ip().to_string()}]}],
    })
}

#[tokio::test]
async fn deltas_apply_to_the_last_config_and_one_for_another_base_resynchronises() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.publish("v1", &config_with_service("v1", front, a));
    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    assert_eq!(served_by_when_listening(front).await, "a");
    let first = &op.stream_requests()[0];
    assert_eq!(header(first, "x-braid-accept"), Some("delta, on-demand"));
    assert_eq!(
        header(first, "x-braid-services"),
        None,
        "it held nothing yet"
    );

    // What changed only: the service, whole; the listener and node stand.
    let delta = serde_json::json!({"delta": {
        "version": "v2", "base": "v1",
        "services": {"upsert": [service(b)]},
    }});
    op.send_line(&delta.to_string());
    proxy.wait_for_version("v2").await;
    assert_eq!(served_by_when_listening(front).await, "b");
    let report = op.wait_for_report("v2 applied", applied("v2")).await;
    let held: Vec<String> = report
        .held_services
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(held, ["shop/web"], "an on-demand proxy says what it holds");
    let dump: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/config_dump").await.1).unwrap();
    assert_eq!(dump["node"]["serviceAccount"], "web");
    assert_eq!(dump["listeners"][0]["name"], "web");

    // A section the delta replaces, on the config just applied.
    let delta = serde_json::json!({"delta": {
        "version": "v3", "base": "v2",
        "node": {"workload": "web-0", "namespace": "shop", "serviceAccount": "web-2"},
    }});
    op.send_line(&delta.to_string());
    proxy.wait_for_version("v3").await;
    let dump: serde_json::Value =
        serde_json::from_str(&proxy.admin_get("/config_dump").await.1).unwrap();
    assert_eq!(dump["node"]["serviceAccount"], "web-2");
    assert_eq!(dump["services"][0]["ports"][0]["targetPort"], b.port());

    // A delta to a version this proxy does not hold: it keeps its config, reconnects
    // naming what it holds, and the operator's whole config brings it up to date.
    op.set_current("v5", &config_with_service("v5", front, a));
    let stray = serde_json::json!({"delta": {
        "version": "v5", "base": "v4",
        "services": {"remove": [{"namespace": "shop", "name": "web"}]},
    }});
    op.send_line(&stray.to_string());
    op.wait_for_stream_requests(2).await;
    let again = &op.stream_requests()[1];
    assert_eq!(header(again, VERSION_HEADER), Some("v3"));
    assert_eq!(
        header(again, "x-braid-services"),
        Some("shop/web"),
        "what it holds, so a restarted operator keeps sending it"
    );
    proxy.wait_for_version("v5").await;
    assert_eq!(served_by_when_listening(front).await, "a");
    op.wait_for_report("v5 applied", applied("v5")).await;
}

#[tokio::test]
async fn a_config_of_megabytes_arrives_in_many_frames_and_is_applied() {
    let a = http_backend("a").await;
    let front = free_addr();
    let mut big = serde_json::from_str::<serde_json::Value>(&config("big", front, a)).unwrap();
    let services: Vec<serde_json::Value> = (0..400u32)
        .map(|s| {
            let endpoints: Vec<serde_json::Value> = (0..100u32)
                .map(|e| serde_json::json!({"address": format!("10.{}.{}.{}", s / 200, s % 200, e + 1), "meshed": true}))
                .collect();
            serde_json::json!({
                "name": format!("svc-{s}"),
                "namespace": "shop",
                "vips": [format!("10.96.{}.{}", s / 200, s % 200)],
                "ports": [{"port": 80, "targetPort": 8080}],
                "groups": [{"name": "(default)", "endpoints": endpoints}],
            })
        })
        .collect();
    big["services"] = services.into();
    let line = big.to_string();
    assert!(line.len() > 1024 * 1024, "{} bytes", line.len());

    let op = FakeOperator::start().await;
    op.publish("big", &line);
    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    assert_eq!(proxy.version_in_force().await, "big");
    op.wait_for_report("the big config applied", applied("big"))
        .await;
    assert_eq!(served_by(front).await, "a");
}

#[tokio::test]
async fn the_proxy_keeps_serving_when_the_operator_goes_away() {
    let a = http_backend("a").await;
    let front = free_addr();
    let op = FakeOperator::start().await;
    op.publish("v1", &config("v1", front, a));
    let proxy = Proxy::start_with_operator(&op).await;
    proxy.wait_ready().await;
    op.wait_for_report("v1 applied", applied("v1")).await;

    // Connections dropped, listener closed: every reconnect now fails.
    op.stop();
    for _ in 0..20 {
        assert!(proxy.is_ready().await);
        assert_eq!(proxy.version_in_force().await, "v1");
        assert_eq!(served_by(front).await, "a");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Reconnecting does not hold up shutdown.
    let mut proxy = proxy;
    proxy.terminate();
    let child = &mut proxy.child;
    let mut status = None;
    eventually("the proxy to exit", || {
        status = status.or_else(|| child.try_wait().unwrap());
        std::future::ready(status.is_some())
    })
    .await;
    assert!(status.unwrap().success(), "{status:?}");
}
