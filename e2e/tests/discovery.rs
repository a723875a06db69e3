//! End-to-end. On-demand discovery: a sidecar streaming from the operator starts with no
//! service and holds those its app calls, each found on the first call through the real
//! capture; an address no service has passes through; with the operator gone, what the
//! sidecar holds keeps working and a new destination passes through. Run with `make
//! e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Instant;

use support::*;

fn discoveries(pod: &Pod, result: &str) -> u64 {
    count(
        &pod.metrics().unwrap(),
        &format!("braid_discoveries_total{{result=\"{result}\"}}"),
    )
}

fn held(pod: &Pod) -> Vec<String> {
    pod.config_dump().unwrap()["services"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_sidecar_holds_what_its_app_calls_and_passes_the_rest_through() {
    let (mut mesh, client, server) = mesh();
    wait_until("the client's first config", 15, || {
        !client.config_version().unwrap_or_default().is_empty()
    });
    assert!(held(&client).is_empty(), "{:?}", held(&client));

    // The first call to payments' VIP finds the service and is routed as any other.
    let started = Instant::now();
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    let first = started.elapsed();
    let started = Instant::now();
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    println!(
        "first call to a new destination: {} ms; the next: {} ms",
        first.as_millis(),
        started.elapsed().as_millis()
    );
    assert_eq!(held(&client), ["payments"]);
    assert_eq!(discoveries(&client, "service"), 1);
    assert_eq!(
        count(
            &server.metrics().unwrap(),
            &ok_requests("inbound", "127.0.0.1:8080")
        ),
        2,
        "both calls reached the server"
    );
    assert_eq!(
        count(
            &client.metrics().unwrap(),
            r#"braid_requests_total{direction="outbound",target="payments.shop:80""#
        ),
        2
    );

    // The server's own address is no service's: passed through, asked about once.
    for _ in 0..2 {
        assert_eq!(client.app(&["get", "server:9090"]).unwrap(), "200 excluded");
    }
    assert_eq!(discoveries(&client, "unknown"), 1);
    assert_eq!(held(&client), ["payments"]);

    // The operator goes away: payments keeps working from the config in force, and a
    // destination never asked about passes through unchanged.
    mesh.operators()[0].kill();
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    let ip6 = format!("[{}]:8080", server.ip6);
    assert_eq!(client.app(&["get", &ip6]).unwrap(), "200 server");
    assert_eq!(discoveries(&client, "failed"), 1);
    assert_eq!(held(&client), ["payments"]);
}
