//! Overload protection in the real proxy: an inbound listener in front of an app whose
//! requests take 1.5 s, eight at a time, held to a target of two in flight. The limiter cuts the admitted rate,
//! sheds the excess with 503 and `x-braid-overloaded: 1`, never sheds kubelet probes,
//! and shows its state in `/metrics`. An outbound listener of the same proxy is not
//! protected (overload protection is the server side's).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use support::*;

async fn get(front: SocketAddr, path: &str, user_agent: &str) -> (u16, bool) {
    let req = Request::get(path)
        .header("host", "app")
        .header("user-agent", user_agent)
        .body(empty())
        .unwrap();
    let resp = http1_request(front, req).await.unwrap();
    let overloaded = resp
        .headers()
        .get("x-braid-overloaded")
        .map(|v| v.as_bytes())
        == Some(b"1");
    (resp.status().as_u16(), overloaded)
}

fn metric(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_app_is_protected_and_probes_always_pass() {
    let app = http_backend("app").await;
    let inbound = free_addr();
    let outbound = free_addr();
    let proxy = Proxy::start(&format!(
        r#"version: v1
inbound:
  overloadProtection: {{signal: inflight, target: 2, minLimit: 1, samplePeriodMs: 100}}
listeners:
- {{name: app, bind: "{inbound}", target: {{address: "{app}"}}, protocol: http1, side: inbound}}
- {{name: out, bind: "{outbound}", target: {{address: "{app}"}}, protocol: http1}}
"#
    ))
    .await;
    proxy.wait_ready().await;

    // Slow requests keep eight in flight, far over the target of two.
    let stop = tokio_util::sync::CancellationToken::new();
    for _ in 0..8 {
        let stop = stop.clone();
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let _ = get(inbound, "/slow", "load").await;
            }
        });
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (status, overloaded) = get(inbound, "/", "curl/8").await;
        assert!(
            status == 200 || overloaded,
            "status {status} without x-braid-overloaded"
        );
        if status == 503 {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("nothing shed: {}", proxy.admin_get("/metrics").await.1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While it sheds, kubelet's probes pass, and the outbound side is not limited.
    for _ in 0..20 {
        assert_eq!(get(inbound, "/", "kube-probe/1.28").await, (200, false));
        assert_eq!(get(outbound, "/", "curl/8").await, (200, false));
    }
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metric(&metrics, "braid_overload_shed_total") >= 1.0,
        "{metrics}"
    );
    // The inflight signal's target is the limit itself: two at once reach the app,
    // however many callers wait.
    assert_eq!(metric(&metrics, "braid_overload_limit"), 2.0, "{metrics}");
    let in_flight = metric(&metrics, "braid_overload_signal");
    assert!(
        in_flight <= 2.0,
        "the signal is the requests in flight: {metrics}"
    );
    stop.cancel();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
