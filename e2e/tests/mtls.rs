//! End-to-end. Link encryption (EncryptionPolicy): mTLS on the wire, Strict refusing
//! what is not the mesh, a server with another identity refused, automatic rollouts to
//! Strict and back, and certificates rotating under load. Run with `make e2e` (root
//! needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

#[test]
fn mtls_is_on_the_wire_and_strict_refuses_whatever_is_not_the_mesh() {
    // `server2` plays a pod outside the mesh: no capture, no sidecar.
    let (mesh, client, mut server, outsider) = mesh_with_spare();
    let op = mesh.operator().unwrap();
    let get = |pod: &Pod, addr: &str| pod.app(&["get", addr]).unwrap_or_default();

    // Disabled (no policy): the request crosses the wire in plaintext.
    let bytes = capture_8080(&mut server, "plain-capture", || {
        assert_eq!(get(&client, "payments:80"), "200 server");
    });
    assert!(
        contains(&bytes, b"GET / HTTP/1.1"),
        "plaintext not seen on the wire ({} bytes captured): {}",
        bytes.len(),
        server.log("plain-capture")
    );

    // Permissive, every caller: mTLS on the wire, outsiders still served.
    op.write_resource(
        "tls.yaml",
        &encryption_policy(
            "payments",
            "selector: {matchLabels: {app: payments}}, mode: Permissive, rollout: {percent: 100}",
        ),
    )
    .unwrap();
    wait_until("the client to originate mTLS", 15, || {
        endpoint_tls(&client, &server) == Some(("Permissive".into(), 100))
    });
    wait_until("the server to accept mTLS", 15, || {
        inbound_tls(&server) == "Permissive"
    });
    let bytes = capture_8080(&mut server, "mtls-capture", || {
        for _ in 0..3 {
            assert_eq!(get(&client, "payments:80"), "200 server");
        }
    });
    assert!(
        contains(&bytes, b"braid/http1.1"),
        "no braid ClientHello on the wire"
    );
    assert!(
        !contains(&bytes, b"GET /") && !contains(&bytes, b"server"),
        "plaintext leaked onto the wire"
    );
    let direct = format!("{}:8080", server.ip);
    assert_eq!(
        get(&outsider, &direct),
        "200 server",
        "Permissive serves outsiders"
    );
    let metrics = server.metrics().unwrap();
    let from_client = r#"tls="true",peer_identity="spiffe://cluster.local/ns/shop/sa/client""#;
    assert!(count(&metrics, from_client) >= 3, "{metrics}");
    assert!(
        count(&metrics, r#"code="200",tls="false""#) >= 1,
        "{metrics}"
    );

    // Strict: the mesh still works; plaintext, an app's TLS and TLS without the mesh's
    // certificate are all refused.
    make_payments_strict(op, &server);
    assert_eq!(get(&client, "payments:80"), "200 server");
    assert!(
        !get(&outsider, &direct).starts_with("200"),
        "Strict served a plaintext outsider"
    );
    // An app's own TLS (no braid ALPN) is cut before the server says a word; a braid
    // hello without the mesh's client certificate fails the handshake.
    let probe = |alpn: &str| {
        let out = outsider
            .exec(&[
                "sh",
                "-c",
                &format!(
                    "echo GET / | openssl s_client -connect {direct} -alpn {alpn} 2>&1; echo exit=$?"
                ),
            ])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let app_tls = probe("h2");
    assert!(
        app_tls.contains("no peer certificate available") && !app_tls.contains("exit=0"),
        "openssl got a session from a Strict port: {app_tls}"
    );
    // (TLS 1.3: the client learns of the refusal only after it sent its request, which
    // gets no answer.)
    let no_cert = probe("braid/http1.1");
    assert!(
        !no_cert.contains("HTTP/1.1"),
        "a braid hello without a client certificate got an answer: {no_cert}"
    );
    let failed = count(
        &server.metrics().unwrap(),
        r#"braid_tls_handshakes_total{direction="inbound",result="failed"}"#,
    );
    assert!(failed >= 1, "the refused handshake was not counted");
    let refused = count(
        &server.metrics().unwrap(),
        "braid_tls_refused_connections_total",
    );
    assert!(refused >= 2, "refusals not counted: {refused}");
    wait_until("status phase Strict", 15, || {
        op.status("encryptionpolicy", "shop", "payments")
            .contains("phase: Strict")
    });
}

#[test]
fn a_server_presenting_another_identity_is_refused() {
    let (mesh, client, server) = mesh();
    let op = mesh.operator().unwrap();
    op.write_resource(
        "tls.yaml",
        &encryption_policy("payments", "mode: Permissive, rollout: {percent: 100}"),
    )
    .unwrap();
    // The client's sidecar holds payments once its app has called it.
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    wait_until("the client to originate mTLS", 15, || {
        endpoint_tls(&client, &server).is_some()
    });
    assert_eq!(client.app(&["get", "payments:80"]).unwrap(), "200 server");
    // The registry now says the server runs as `ledger`: callers expect that identity,
    // but its proxy holds the certificate of `server`.
    let registry = registry(&[&server], &[&client]).replace(
        &format!("serviceAccount: {}", server.name),
        "serviceAccount: ledger",
    );
    op.write_registry(&registry).unwrap();
    wait_until("the client to expect the new identity", 15, || {
        client.config_dump().unwrap()["services"]
            .to_string()
            .contains("sa/ledger")
    });
    let answer = client.app(&["get", "payments:80"]).unwrap();
    assert!(answer.starts_with("502"), "{answer}");
    let metrics = client.metrics().unwrap();
    assert!(
        count(
            &metrics,
            r#"braid_tls_handshakes_total{direction="outbound",result="failed"}"#
        ) >= 1,
        "{metrics}"
    );
}

#[test]
fn an_automatic_rollout_reaches_strict_without_a_failed_request() {
    let (mesh, mut client, server) = mesh();
    let op = mesh.operator().unwrap();
    let stop = start_load(&mut client);
    op.write_resource(
        "tls.yaml",
        &encryption_policy(
            "payments",
            "selector: {matchLabels: {app: payments}}, mode: Permissive, rollout: {percent: 0, auto: {steps: [10, 25, 50, 100], interval: 2s, enforceStrict: true}}",
        ),
    )
    .unwrap();
    let mut seen = Vec::new();
    let started = Instant::now();
    wait_until("the rollout to reach Strict", 60, || {
        let now = shop::rollout_progress(&op.status("encryptionpolicy", "shop", "payments"));
        if seen.last() != Some(&now) {
            println!(
                "{:>5.1} s: {} at {} %",
                started.elapsed().as_secs_f64(),
                now.0,
                now.1
            );
            seen.push(now.clone());
        }
        now.0 == "Strict"
    });
    // Status records a step first; proxies take it once it is read back (so no proxy
    // ever holds a step a new leader would not resume from).
    wait_until("the server's proxy to hold Strict", 5, || {
        inbound_tls(&server) == "Strict"
    });
    // The client is still served, now over mTLS only.
    std::thread::sleep(Duration::from_millis(500));
    stop_load(&mut client, stop);
    let percents: Vec<&str> = seen.iter().map(|(_, p)| p.as_str()).collect();
    for step in ["10", "25", "50", "100"] {
        assert!(
            percents.contains(&step),
            "step {step} never shown: {seen:?}"
        );
    }
    let log = op.log();
    assert_eq!(log.matches("RolloutAdvanced").count(), 4, "{log}");
    assert!(log.contains("StrictEnforced"), "{log}");
    let status = op.status("encryptionpolicy", "shop", "payments");
    assert!(status.contains("type: SafeToEnforce"), "{status}");
    // The operator's metrics tell the same story as its status and Events.
    wait_until("the rollout in the operator's metrics", 10, || {
        let m = op.metrics();
        m.contains(r#"braid_operator_encryption_rollout_percent{policy="shop/payments"} 100"#)
            && m.contains(
                r#"braid_operator_encryption_phase{policy="shop/payments",phase="Strict"} 1"#,
            )
    });
    let m = op.metrics();
    assert!(
        m.contains(r#"braid_operator_events_total{kind="EncryptionPolicy",reason="RolloutAdvanced",type="Normal"} 4"#),
        "{m}"
    );
    let metrics = server.metrics().unwrap();
    assert!(
        count(
            &metrics,
            r#"tls="true",peer_identity="spiffe://cluster.local/ns/shop/sa/client""#
        ) > 0
    );
}

#[test]
fn an_automatic_rollout_steps_back_when_callers_start_failing() {
    let (mesh, mut client, _server) = mesh();
    let op = mesh.operator().unwrap();
    let stop = client.dir().join("stop-load");
    client
        .spawn_app(
            "load",
            &["load", "payments:80", "--stop-file", stop.to_str().unwrap()],
        )
        .unwrap();
    op.write_resource(
        "tls.yaml",
        &encryption_policy(
            "payments",
            "mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 3s, maxErrorRateIncrease: 0.05}}",
        ),
    )
    .unwrap();
    let percent = || {
        status_field(
            &op.status("encryptionpolicy", "shop", "payments"),
            "currentPercent",
        )
        .unwrap_or_default()
    };
    wait_until("the first step", 30, || percent() == "50");
    // A fault makes a third of callers' requests fail: the rollout must back off.
    op.write_resource(
        "route.yaml",
        "apiVersion: braid.dev/v1alpha1
kind: TrafficRoute
metadata: {name: payments, namespace: shop}
spec:
  host: payments
  rules:
  - name: flaky
    fault: {abort: {percent: 33, status: 503}}
",
    )
    .unwrap();
    wait_until("the rollout to step back", 30, || percent() == "0");
    std::fs::write(&stop, "").unwrap();
    assert!(client.wait_exit("load", Duration::from_secs(10)).unwrap());
    let log = op.log();
    assert!(log.contains("RolloutSteppedBack"), "{log}");
    println!(
        "{}",
        log.lines()
            .filter(|l| l.contains("Rollout"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn certificates_rotating_every_thirty_seconds_fail_no_request() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    mesh.start_operator_with(
        &registry(&[&server], &[&client]),
        &["--proxy-cert-lifetime-secs", "60"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    let op = mesh.operator().unwrap();
    op.write_resource("tls.yaml", &encryption_policy("payments", "mode: Strict"))
        .unwrap();
    server.capture(&ProxyFlags::default()).unwrap();
    server
        .start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    serve_http(&mut server, "server");
    client.capture(&ProxyFlags::default()).unwrap();
    client
        .start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("Strict in force", 15, || {
        // The client's sidecar holds payments once its app has called it.
        if endpoint_tls(&client, &server).is_none() {
            let _ = client.app(&["get", "payments:80"]);
        }
        inbound_tls(&server) == "Strict" && endpoint_tls(&client, &server).is_some()
    });
    let expiry = |pod: &Pod| {
        pod.metrics()
            .unwrap()
            .lines()
            .find(|l| l.starts_with("braid_identity_expiry_timestamp_seconds"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_default()
    };
    let first = (expiry(&client), expiry(&server));
    let stop = start_load(&mut client);
    // Renewal comes at half-life: 30 s.
    wait_until("both proxies to renew", 45, || {
        expiry(&client) > first.0 && expiry(&server) > first.1
    });
    std::thread::sleep(Duration::from_secs(2));
    stop_load(&mut client, stop);
    println!(
        "certificates renewed: client expiry {} → {}, server {} → {}",
        first.0,
        expiry(&client),
        first.1,
        expiry(&server)
    );
}
