//! End-to-end. Traffic steering (TrafficRoute): header and weight splits, mirroring,
//! faults, retries, timeouts and rate limits, and config changes under load from the
//! operator or a file. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

#[test]
fn a_traffic_route_steers_by_header_and_splits_by_weight() {
    // The seed's example: requests whose header `type` is `transfer` go to Group_2.
    let (_mesh, client, _server, _server2) = routed_mesh(
        &["--name", "server2"],
        "  - name: transfers
    match: [{headers: [{name: type, exact: transfer}]}]
    route: [{group: Group_2, weight: 100}]
  - name: gray
    route: [{group: Group_1, weight: 90}, {group: Group_2, weight: 10}]
",
    );
    assert_eq!(
        tally(&client, 200, "/", &["type: transfer"]),
        "200 200 server2"
    );
    // 90/10 within ±3 points over 2,000 requests.
    let split = tally(&client, 2000, "/", &[]);
    let canary = tallied(&split, "200 server2");
    let stable = tallied(&split, "200 server");
    assert_eq!(canary + stable, 2000, "{split}");
    assert!((140..=260).contains(&canary), "{split}");
    println!("90/10 split over 2,000 requests: {stable} to Group_1, {canary} to Group_2");
    // The proxy counts them by rule and group.
    let metrics = client.metrics().unwrap();
    assert_eq!(
        count(
            &metrics,
            r#"braid_requests_total{direction="outbound",target="payments.shop:80",rule="transfers",group="Group_2",code="200",tls="false",peer_identity=""}"#
        ),
        200,
        "{metrics}"
    );
}

#[test]
fn mirrored_copies_reach_the_shadow_group_and_never_hold_up_the_caller() {
    // The shadow answers only after a second; the rule's deadline is 500 ms. Were the
    // copy on the caller's path, every request would fail with 504.
    let (_mesh, client, server, server2) = routed_mesh(
        &["--name", "shadow", "--delay-ms", "1000"],
        "  - name: mirrored
    route: [{group: Group_1}]
    mirror: {group: Group_2, percent: 100}
    timeout: 500ms
",
    );
    assert_eq!(tally(&client, 100, "/", &[]), "100 200 server");
    // Every copy arrives (fire-and-forget, so give them a moment).
    let counted = |pod: &Pod| {
        client
            .app(&["get", &pod.addr(8080).to_string(), "--path", "/count"])
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counted(&server2) != "200 100" {
        assert!(
            Instant::now() < deadline,
            "the shadow saw {}",
            counted(&server2)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counted(&server), "200 100");
    let metrics = client.metrics().unwrap();
    assert_eq!(
        count(
            &metrics,
            r#"braid_mirrored_requests_total{target="payments.shop:80",group="Group_2",result="sent"}"#
        ),
        100,
        "{metrics}"
    );
}

#[test]
fn faults_retries_per_try_timeouts_and_rate_limits_act_on_their_requests() {
    // server2 fails every other request it serves.
    let (_mesh, client, _server, _server2) = routed_mesh(
        &["--name", "server2", "--fail-every", "2"],
        "  - name: abort
    match: [{path: {prefix: /abort}}]
    route: [{group: Group_1}]
    fault: {abort: {percent: 25, status: 503}}
  - name: delay
    match: [{path: {prefix: /delay}}]
    route: [{group: Group_1}]
    fault: {delay: {percent: 100, fixed: 400ms}}
  - name: slow
    match: [{path: {prefix: /slow}}]
    route: [{group: Group_1}]
    timeout: 1500ms
    retries: {attempts: 1, perTryTimeout: 300ms, \"on\": [gateway-error]}
  - name: limited
    match: [{path: {prefix: /limited}}]
    route: [{group: Group_1}]
    rateLimit: {requestsPerSecond: 1, burst: 5}
  - name: no-retries
    match: [{path: {prefix: /no-retries}}]
  - name: retried
    retries: {attempts: 2, \"on\": [5xx]}
",
    );

    // Abort: 25% of 400 is 100, with a standard deviation of 8.7. Four of them (65 to
    // 135) fail a fair coin once in 15,000 runs; three failed one CI run in a few hundred.
    let aborts = tally(&client, 400, "/abort", &[]);
    let aborted = tallied(&aborts, "503 fault injected");
    assert_eq!(aborted + tallied(&aborts, "200 server"), 400, "{aborts}");
    assert!((65..=135).contains(&aborted), "{aborts}");

    // Delay: held for the fixed time, then served.
    let started = Instant::now();
    assert_eq!(tally(&client, 1, "/delay", &[]), "1 200 server");
    let held = started.elapsed();
    assert!(held >= Duration::from_millis(400), "{held:?}");

    // Per-try timeout: /slow takes 2 s; two attempts of 300 ms each, then 504 (well
    // before the server would have answered 200).
    let started = Instant::now();
    assert_eq!(
        tally(&client, 1, "/slow", &[]),
        "1 504 per-try timeout: no response within 300 ms"
    );
    assert!(started.elapsed() >= Duration::from_millis(600));

    // Rate limit: a burst of 5, then 429 with retry-after.
    let limited = tally(&client, 20, "/limited", &[]);
    assert!(
        (5..=7).contains(&tallied(&limited, "200 server")),
        "{limited}"
    );
    assert!(
        limited.contains(" 429 rate limited: retry after "),
        "{limited}"
    );

    // Retries: without them, server2's failures reach the caller...
    let unretried = tally(&client, 200, "/no-retries", &[]);
    assert!(tallied(&unretried, "500 server2 failed") > 0, "{unretried}");
    // ...with them, every request succeeds.
    let retried = tally(&client, 200, "/", &[]);
    assert_eq!(
        tallied(&retried, "200 server") + tallied(&retried, "200 server2"),
        200,
        "{retried}"
    );
    let metrics = client.metrics().unwrap();
    let sent = count(
        &metrics,
        r#"braid_retries_total{target="payments.shop:80",rule="retried",result="sent"}"#,
    );
    assert!(sent > 0, "{metrics}");
    println!(
        "aborted {aborted}/400; delay held {held:?}; without retries {unretried:?}; with retries 200/200 after {sent} retries"
    );
}

#[test]
fn route_changes_under_load_fail_nothing_and_an_invalid_route_keeps_the_last_good_one() {
    let (mesh, mut client, _server, _server2) = steering_mesh(&["--name", "server2"]);
    let op = mesh.operator().unwrap();
    call_payments(&client);
    let all_to = |rule: &str, group: &str| {
        payments_route(&format!(
            "  - name: {rule}\n    route: [{{group: {group}}}]\n"
        ))
    };
    op.write_resource("route.yaml", &all_to("first", "Group_1"))
        .unwrap();
    wait_for_routes(&client, "first");
    let stop = start_load(&mut client);
    for (rule, spec) in [
        (
            "split",
            payments_route(
                "  - name: split\n    route: [{group: Group_1, weight: 50}, {group: Group_2, weight: 50}]\n",
            ),
        ),
        ("second", all_to("second", "Group_2")),
    ] {
        op.write_resource("route.yaml", &spec).unwrap();
        wait_for_routes(&client, rule);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(tally(&client, 20, "/", &[]), "20 200 server2");
    // Weights summing to 120: refused, with the field named; the last good rules stay.
    op.write_resource(
        "route.yaml",
        &payments_route(
            "  - name: broken\n    route: [{group: Group_1, weight: 60}, {group: Group_2, weight: 60}]\n",
        ),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = op.status("trafficroute", "shop", "payments");
        if status.contains("reason: Invalid") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "no refusal in the status: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.contains("spec.rules[0].route"), "{status}");
    assert!(
        status.contains("last valid generation stays in force"),
        "{status}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        client.config_dump().unwrap()["routes"][0]["rules"][0]["name"],
        "second"
    );
    assert_eq!(tally(&client, 20, "/", &[]), "20 200 server2");
    stop_load(&mut client, stop);
}

#[test]
fn operator_changes_under_load_reach_every_proxy_and_fail_no_request() {
    let (mesh, mut client, server, mut server2) = mesh_with_spare();
    server2.capture(&ProxyFlags::default()).unwrap();
    serve_http(&mut server2, "server2");
    let op = mesh.operator().unwrap();

    let stop = start_load(&mut client);

    // server2 is created: registered, not yet behind the service (as a pod is not an
    // endpoint before it is ready), so its sidecar gets a config and becomes ready.
    let versions = |pods: &[&Pod]| {
        pods.iter()
            .map(|p| p.config_version().unwrap())
            .collect::<Vec<_>>()
    };
    op.write_registry(&registry(&[&server], &[&client, &server2]))
        .unwrap();
    server2
        .start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));

    // server2 joins the service: the client's outbound and server2's inbound change.
    let before = versions(&[&client, &server2]);
    op.write_registry(&registry(&[&server, &server2], &[&client]))
        .unwrap();
    let took = wait_for_new_versions(&[&client, &server2], &before);
    println!(
        "registry change (server2 joins) → new config applied by client in {:?}, server2 in {:?}",
        took[0], took[1]
    );
    std::thread::sleep(Duration::from_millis(800));

    // server leaves the service: every proxy's config changes.
    let before = versions(&[&client, &server, &server2]);
    op.write_registry(&registry(&[&server2], &[&client, &server]))
        .unwrap();
    let took = wait_for_new_versions(&[&client, &server, &server2], &before);
    println!(
        "registry change (server leaves) → new config applied by client in {:?}, server in {:?}, server2 in {:?}",
        took[0], took[1], took[2]
    );
    std::thread::sleep(Duration::from_millis(800));
    stop_load(&mut client, stop);
    let server2_metrics = server2.metrics().unwrap();
    assert!(
        count(&server2_metrics, r#"direction="inbound""#) > 0,
        "server2 never served: {server2_metrics}"
    );
    // The last stretch went to server2 alone: server's inbound count stopped growing.
    let served = |pod: &Pod| {
        count(
            &pod.metrics().unwrap(),
            r#"braid_requests_total{direction="inbound""#,
        )
    };
    let (a, b) = (served(&server), served(&server2));
    std::thread::sleep(Duration::from_millis(300));
    client.app(&["get", "payments:80"]).unwrap();
    assert_eq!(
        served(&server),
        a,
        "server left the service but still got traffic"
    );
    assert_eq!(served(&server2), b + 1);
}

#[test]
fn a_config_file_change_under_load_fails_no_request() {
    // Hosts without an operator: the sidecar follows a config file.
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut server2 = mesh.pod("server2").unwrap();
    let mut client = mesh.pod("client").unwrap();
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    for (pod, name) in [(&mut server, "server"), (&mut server2, "server2")] {
        pod.capture(&ProxyFlags::default()).unwrap();
        pod.start_sidecar(&server_config(name)).unwrap();
        serve_http(pod, name);
    }
    client.capture(&ProxyFlags::default()).unwrap();
    client
        .start_sidecar(&client_config("client-1", &[&server]))
        .unwrap();

    let stop = start_load(&mut client);
    client
        .write_config(&client_config("client-2", &[&server, &server2]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    client
        .write_config(&client_config("client-3", &[&server2]))
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    stop_load(&mut client, stop);
    assert!(
        client
            .metrics()
            .unwrap()
            .contains(r#"braid_config_info{version="client-3"} 1"#)
    );
    assert!(count(&server2.metrics().unwrap(), r#"direction="inbound""#) > 0);
}
