//! Access logs and tracing through a running proxy: the request goes on with this hop's
//! trace context and an `x-request-id`, its span reaches a real OTLP/HTTP receiver (the
//! protobuf decoded with opentelemetry-proto) as a child of the caller's, the access log
//! names the same trace; and with the collector down requests are unaffected and the
//! lost spans are counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::*;
use tokio::net::TcpListener;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A backend answering with the trace headers and request id it received, one per line.
async fn header_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let mut body = String::new();
                    for name in ["traceparent", "tracestate", "x-request-id", "b3"] {
                        let value = req.headers().get(name).map(|v| v.to_str().unwrap());
                        body.push_str(&format!("{name}={}\n", value.unwrap_or("")));
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A real OTLP/HTTP trace receiver: every span of every export it decoded.
async fn otlp_receiver() -> (SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spans = Arc::new(Mutex::new(Vec::new()));
    let received = spans.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let received = received.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let received = received.clone();
                    async move {
                        assert_eq!(req.uri().path(), "/v1/traces");
                        assert_eq!(req.headers()["content-type"], "application/x-protobuf");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let export = ExportTraceServiceRequest::decode(body).unwrap();
                        for rs in export.resource_spans {
                            for ss in rs.scope_spans {
                                received.lock().unwrap().extend(ss.spans);
                            }
                        }
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(
                            answer,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, spans)
}

/// A proxy on `front` forwarding `protocol` to `backend`, with the access log on (its
/// standard output in `log`) and spans sent to `collector` at `sampling` percent.
async fn observed(
    front: SocketAddr,
    backend: SocketAddr,
    protocol: &str,
    collector: SocketAddr,
    sampling: &str,
    log: &std::path::Path,
) -> Proxy {
    let collector_url = format!("http://{collector}");
    Proxy::start_writing(
        &format!(
            "version: t1\nlisteners:\n{}",
            listener("web", front, backend, protocol)
        ),
        &[
            "--access-log",
            "json",
            "--trace-collector",
            &collector_url,
            "--trace-sampling",
            sampling,
        ],
        log,
    )
    .await
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The access-log lines the proxy wrote (its own log lines are not JSON objects with a
/// request id).
fn access_log(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v.get("request_id").is_some())
        .collect()
}

fn echoed(body: &str, name: &str) -> String {
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_request_carries_its_trace_on_and_is_exported_and_logged() {
    let backend = header_echo().await;
    let (collector, spans) = otlp_receiver().await;
    let front = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stdout");
    let _proxy = observed(front, backend, "http1", collector, "0", &log).await;

    // A sampled caller's trace goes on with this hop's span as the parent; tracestate
    // passes unchanged; the proxy makes up an x-request-id.
    let resp = http1_request(
        front,
        Request::get("/pay?card=4111")
            .header("host", "payments")
            .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
            .header("tracestate", "vendor=opaque")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 200);
    let body = body_string(resp).await;
    let first_body_len = body.len();
    let sent = echoed(&body, "traceparent");
    let hop_span = sent.split('-').nth(2).unwrap().to_owned();
    assert_eq!(sent, format!("00-{TRACE}-{hop_span}-01"), "{body}");
    assert_ne!(hop_span, CALLER_SPAN);
    assert_eq!(echoed(&body, "tracestate"), "vendor=opaque");
    let request_id = echoed(&body, "x-request-id");
    assert_eq!(request_id.len(), 36, "{body}");

    // A caller's own request id is kept; with no context and 0 % sampling, the new
    // trace goes on unsampled and is not exported.
    let resp = http1_request(
        front,
        Request::get("/quiet")
            .header("host", "payments")
            .header("x-request-id", "caller-chose-this")
            .body(empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let body = body_string(resp).await;
    assert_eq!(echoed(&body, "x-request-id"), "caller-chose-this");
    assert!(echoed(&body, "traceparent").ends_with("-00"), "{body}");

    eventually("the span exported", || {
        let spans = spans.clone();
        async move { !spans.lock().unwrap().is_empty() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let spans = spans.lock().unwrap().clone();
    assert_eq!(spans.len(), 1, "only the sampled request: {spans:?}");
    let span = &spans[0];
    assert_eq!(hex(&span.trace_id), TRACE);
    assert_eq!(hex(&span.parent_span_id), CALLER_SPAN);
    assert_eq!(hex(&span.span_id), hop_span);
    let attr = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    assert_eq!(
        attr("http.response.status_code"),
        Some(Value::IntValue(200))
    );
    assert_eq!(attr("url.path"), Some(Value::StringValue("/pay".into())));
    assert_eq!(
        attr("braid.request_id"),
        Some(Value::StringValue(request_id.clone()))
    );
    assert_eq!(
        attr("network.peer.port"),
        Some(Value::IntValue(i64::from(backend.port())))
    );

    let lines = access_log(&log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let first = &lines[0];
    assert_eq!(first["trace_id"], TRACE);
    assert_eq!(first["span_id"], hop_span.as_str());
    assert_eq!(first["request_id"], request_id.as_str());
    assert_eq!(first["status"], 200);
    assert_eq!(first["method"], "GET");
    assert_eq!(first["authority"], "payments");
    // The query is not logged: it may carry secrets.
    assert_eq!(first["path"], "/pay");
    assert_eq!(first["upstream"], backend.to_string());
    assert_eq!(first["response_bytes"], first_body_len);
    assert_eq!(first["request_bytes"], 0);
    assert_eq!(first["direction"], "outbound");
    assert_eq!(lines[1]["request_id"], "caller-chose-this");
}

#[tokio::test]
async fn with_the_collector_down_requests_pass_and_lost_spans_are_counted() {
    let backend = header_echo().await;
    // A port nothing listens on.
    let dead = free_addr();
    let front = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let proxy = observed(
        front,
        backend,
        "http2",
        dead,
        "100",
        &dir.path().join("stdout"),
    )
    .await;
    let mut client = http2_client(front).await;
    for _ in 0..20 {
        let resp = client
            .send_request(
                Request::get("http://payments/h2")
                    .header("b3", format!("{TRACE}-{CALLER_SPAN}"))
                    .body(empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body = body_string(resp).await;
        // B3 in, B3 (and W3C) out, in the same trace; no decision came, 100 % samples.
        let b3 = echoed(&body, "b3");
        assert!(
            b3.starts_with(TRACE) && b3.ends_with(&format!("-1-{CALLER_SPAN}")),
            "{body}"
        );
        assert!(echoed(&body, "traceparent").starts_with(&format!("00-{TRACE}-")));
    }
    let proxy = &proxy;
    eventually("20 spans counted as lost", || async move {
        let (_, metrics) = proxy.admin_get("/metrics").await;
        metrics.contains(r#"braid_trace_spans_total{result="dropped_export_failed"} 20"#)
    })
    .await;
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert!(
        metrics.contains(r#"braid_access_log_lines_total{result="written"} 20"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_http2_request_the_caller_gives_up_on_is_logged_as_499() {
    let backend = http_backend("app").await;
    let front = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stdout");
    let _proxy = Proxy::start_writing(
        &format!(
            "version: t1\nlisteners:\n{}",
            listener("web", front, backend, "http2")
        ),
        &["--access-log", "json"],
        &log,
    )
    .await;
    let mut client = http2_client(front).await;
    let slow = client.send_request(Request::get("http://payments/slow").body(empty()).unwrap());
    // The backend takes 1.5 s; the caller resets its stream after 200 ms.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), slow)
            .await
            .is_err()
    );
    drop(client);
    let log = &log;
    eventually("a line for the abandoned request", || async move {
        !access_log(log).is_empty()
    })
    .await;
    let lines = access_log(log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["status"], 499);
    assert_eq!(lines[0]["path"], "/slow");
    assert_eq!(lines[0]["target"], backend.to_string());
    assert!(lines[0]["error"].as_str().unwrap().contains("went away"));
}

#[tokio::test]
async fn lines_and_spans_of_the_last_requests_are_written_before_the_proxy_exits() {
    let backend = header_echo().await;
    let (collector, spans) = otlp_receiver().await;
    let front = free_addr();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stdout");
    let mut proxy = observed(front, backend, "http1", collector, "100", &log).await;
    for _ in 0..3 {
        let resp = http1_get(front, "payments", "/last").await;
        assert_eq!(resp.status(), 200);
    }
    // At once: the writer and the exporter would otherwise come by 100 ms and 1 s later.
    proxy.terminate();
    let exited = tokio::task::spawn_blocking(move || {
        let status = proxy.child.wait().unwrap();
        (proxy, status)
    })
    .await
    .unwrap();
    assert!(exited.1.success(), "{:?}", exited.1);
    assert_eq!(access_log(&log).len(), 3);
    assert_eq!(spans.lock().unwrap().len(), 3);
}
