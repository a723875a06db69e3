//! End-to-end. Access logs and distributed tracing, turned on by pod annotations as the
//! injector reads them: a request from the client's app through both sidecars yields
//! two spans of one trace, the server's the child of the client's, received by a real
//! OTLP/HTTP receiver in a pod of its own (a collector outside the mesh), and an
//! access-log line on each side naming that trace and one request id. With the
//! collector gone, requests are unaffected and the lost spans are counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use braid_e2e::otlp::read_spans;
use serde_json::Value;
use support::*;

/// The sidecars' standard output: access-log lines among their own log lines.
fn access_log(pod: &Pod) -> Vec<Value> {
    pod.log("sidecar")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("request_id").is_some())
        .collect()
}

#[test]
fn a_request_through_both_sidecars_is_one_trace_and_a_log_line_on_each_side() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut collector = mesh.pod("collector").unwrap();
    mesh.start_operator(&registry(&[&server], &[&client]))
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();

    let spans_file = collector.dir().join("spans.jsonl");
    let out = spans_file.display().to_string();
    collector
        .spawn_app("otlp", &["otlp-receiver", "--port", "4318", "--out", &out])
        .unwrap();
    collector.wait_listening(4318).unwrap();
    let collector_url = format!("http://{}:4318", collector.ip);
    let annotations = [
        ("braid.dev/access-log", "json"),
        ("braid.dev/trace-collector", collector_url.as_str()),
        ("braid.dev/trace-sampling", "100"),
    ];
    let operator = mesh.operator().unwrap();
    server.capture(&ProxyFlags::default()).unwrap();
    server
        .start_sidecar_annotated(operator, &annotations)
        .unwrap_or_else(|e| panic!("{e}"));
    serve_on_8080(&mut server, "http", &["--name", "server"]);
    client.capture(&ProxyFlags::default()).unwrap();
    client
        .start_sidecar_annotated(operator, &annotations)
        .unwrap_or_else(|e| panic!("{e}"));

    // Strict mTLS: the server's span and log name the caller's identity.
    let op = mesh.operator().unwrap();
    make_payments_strict(op, &server);
    let out = client
        .app(&["get", "payments:80", "--host", "payments", "--path", "/pay"])
        .unwrap();
    assert_eq!(out, "200 server");
    wait_until("the client to originate mTLS", 15, || {
        endpoint_tls(&client, &server).is_some()
    });

    wait_until("two spans at the collector", 10, || {
        read_spans(&spans_file).len() >= 2
    });
    let spans = read_spans(&spans_file);
    assert_eq!(spans.len(), 2, "{spans:#?}");
    let client_span = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_CLIENT")
        .unwrap_or_else(|| panic!("no client span: {spans:#?}"));
    let server_span = spans
        .iter()
        .find(|s| s["kind"] == "SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("no server span: {spans:#?}"));
    let trace = client_span["trace_id"].as_str().unwrap();
    assert_eq!(trace.len(), 32);
    assert_eq!(server_span["trace_id"], trace);
    // The app sent no context: the client's sidecar began the trace, and the server's
    // hop is its child.
    assert_eq!(client_span["parent_span_id"], "");
    assert_eq!(server_span["parent_span_id"], client_span["span_id"]);
    assert_eq!(
        client_span["attributes"]["braid.target"],
        "payments.shop:80"
    );
    assert_eq!(client_span["attributes"]["http.response.status_code"], 200);
    assert_eq!(server_span["attributes"]["braid.tls"], true);
    assert_eq!(
        server_span["attributes"]["braid.peer_identity"],
        "spiffe://cluster.local/ns/shop/sa/client"
    );
    assert_eq!(client_span["resource"]["service.name"], "client");
    assert_eq!(server_span["resource"]["service.name"], "server");

    let (client_log, server_log) = (access_log(&client), access_log(&server));
    assert_eq!(client_log.len(), 1, "{}", client.log("sidecar"));
    assert_eq!(server_log.len(), 1, "{}", server.log("sidecar"));
    let (c, s) = (&client_log[0], &server_log[0]);
    assert_eq!(c["trace_id"], trace);
    assert_eq!(s["trace_id"], trace);
    assert_eq!(c["span_id"], client_span["span_id"]);
    assert_eq!(s["span_id"], server_span["span_id"]);
    // The client's sidecar made the request id up; the server's kept it.
    assert_eq!(c["request_id"].as_str().unwrap().len(), 36);
    assert_eq!(s["request_id"], c["request_id"]);
    assert_eq!(
        (&c["direction"], &s["direction"]),
        (&Value::from("outbound"), &Value::from("inbound"))
    );
    assert_eq!((&c["status"], &s["status"]), (&200.into(), &200.into()));
    assert_eq!(c["path"], "/pay");
    // The endpoint, as the service's endpoints name it.
    assert_eq!(c["upstream"], format!("{}:8080", server.ip));
    assert_eq!(s["upstream"], "127.0.0.1:8080");
    assert_eq!((&c["tls"], &s["tls"]), (&true.into(), &true.into()));
    assert_eq!(
        s["peer_identity"],
        server_span["attributes"]["braid.peer_identity"]
    );

    // The collector goes away: requests go on, and the spans are counted as lost.
    collector.terminate("otlp").unwrap();
    wait_until("the collector gone", 5, || {
        !collector.is_running("otlp").unwrap()
    });
    for _ in 0..5 {
        let out = client
            .app(&["get", "payments:80", "--host", "payments"])
            .unwrap();
        assert_eq!(out, "200 server");
    }
    wait_until("the client's lost spans counted", 15, || {
        client.metrics().unwrap().contains(
            r#"braid_trace_spans_total{workload="client",workload_namespace="shop",result="dropped_export_failed"} 5"#,
        )
    });
    assert_eq!(access_log(&client).len(), 6);
    // Every series names the workload the sidecar serves.
    let metrics = server.metrics().unwrap();
    assert!(
        metrics.contains(r#"braid_access_log_lines_total{workload="server",workload_namespace="shop",result="written"} 6"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"braid_request_duration_seconds_count{workload="server",workload_namespace="shop",direction="inbound",target="127.0.0.1:8080",rule="",group="",class="2xx"} 6"#),
        "{metrics}"
    );
    assert_eq!(read_spans(&spans_file).len(), 2);
}
