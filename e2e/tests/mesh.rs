//! End-to-end: pods as network namespaces, captured by the real `braid-proxy iptables`,
//! sidecars as UID 1337, real traffic between them. Run with `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use braid_api::config::ProxyConfig;
use braid_e2e::{Mesh, Pod, ProxyFlags, shop};
use serde_json::json;

const PAYMENTS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const DB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
const PAYMENTS_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd96, 0, 0, 0, 0, 0, 0, 0x10);

/// The registry of the mesh: `payments` (IPv4, and an IPv6-only twin) served by
/// `servers`, `db` by the first of them, and `others` as plain callers. Each pod runs as
/// the service account of its own name, as the harness's bootstrap tokens say.
fn registry(servers: &[&Pod], others: &[&Pod]) -> String {
    let mut text = format!(
        "services:
- {{name: payments, namespace: shop, vips: [{PAYMENTS_VIP}], selector: {{app: payments}}, ports: [{{port: 80, targetPort: 8080}}]}}
- {{name: payments-v6, namespace: shop, vips: [\"{PAYMENTS_VIP6}\"], selector: {{app: payments}}, ports: [{{port: 80, targetPort: 8080}}]}}
- {{name: db, namespace: shop, vips: [{DB_VIP}], selector: {{role: db}}, ports: [{{port: 3306, protocol: tcp}}]}}
workloads:
"
    );
    let pods = servers.iter().enumerate().map(|(i, p)| {
        (
            p,
            if i == 0 {
                "app: payments, role: db"
            } else {
                "app: payments"
            },
        )
    });
    let pods = pods.chain(others.iter().map(|p| (p, "app: client")));
    for (pod, labels) in pods {
        text.push_str(&format!(
            "- {{name: {n}, namespace: shop, ips: [{ip}, \"{ip6}\"], labels: {{pod: {n}, {labels}}}, serviceAccount: {n}}}\n",
            n = pod.name,
            ip = pod.ip,
            ip6 = pod.ip6,
        ));
    }
    text
}

/// A client and a server pod, both meshed, with their config streamed from the
/// operator; the server runs HTTP on 8080, a banner protocol on 3306 and an excluded
/// HTTP port 9090.
fn mesh() -> (Mesh, Pod, Pod) {
    let (mesh, client, server, _) = mesh_with_spare();
    (mesh, client, server)
}

/// [`mesh`], plus a spare pod `server2` the operator has a token for but that is not in
/// the registry yet.
fn mesh_with_spare() -> (Mesh, Pod, Pod, Pod) {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let spare = mesh.pod("server2").unwrap();
    mesh.start_operator(&registry(&[&server], &[&client]))
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[
        ("payments", PAYMENTS_VIP),
        ("db", DB_VIP),
        ("server", server.ip),
    ])
    .unwrap();

    server
        .capture(&ProxyFlags {
            exclude_inbound_ports: vec![9090],
            ..Default::default()
        })
        .unwrap();
    server
        .start_sidecar_streaming(mesh.operator().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    server
        .spawn_app(
            "http",
            &["http-server", "--port", "8080", "--name", "server"],
        )
        .unwrap();
    server
        .spawn_app(
            "excluded",
            &["http-server", "--port", "9090", "--name", "excluded"],
        )
        .unwrap();
    server
        .spawn_app(
            "db",
            &[
                "banner-server",
                "--port",
                "3306",
                "--banner",
                "220 db ready",
            ],
        )
        .unwrap();
    for port in [8080, 9090, 3306] {
        server.wait_listening(port).unwrap();
    }

    let out = client.capture(&ProxyFlags::default()).unwrap();
    assert!(out.contains("capture rules installed"), "{out}");
    client
        .start_sidecar_streaming(mesh.operator().unwrap())
        .unwrap_or_else(|e| panic!("{e}"));
    (mesh, client, server, spare)
}

/// The `braid_requests_total` series of 200s for one direction and target.
fn ok_requests(direction: &str, target: &str) -> String {
    format!(
        r#"braid_requests_total{{direction="{direction}",target="{target}",rule="",group="",code="200",tls="false",peer_identity=""}}"#
    )
}

/// The `braid_tcp_connections_total` series for one direction and protocol.
fn connections_line(direction: &str, protocol: &str) -> String {
    format!(r#"braid_tcp_connections_total{{direction="{direction}",protocol="{protocol}"}}"#)
}

/// How many connections `pod`'s sidecar accepted in `direction` as `protocol`.
fn connections(pod: &Pod, direction: &str, protocol: &str) -> u64 {
    count(
        &pod.metrics().unwrap(),
        &connections_line(direction, protocol),
    )
}

/// `pod`'s sidecar counted exactly one 200 for `target` in `direction`.
fn assert_one_ok_request(pod: &Pod, direction: &str, target: &str) {
    let metrics = pod.metrics().unwrap();
    assert_eq!(
        count(&metrics, &ok_requests(direction, target)),
        1,
        "{metrics}"
    );
}

fn count(metrics: &str, needle: &str) -> u64 {
    shop::metric_sum(metrics, needle)
}

#[test]
fn http1_to_a_vip_crosses_both_sidecars() {
    let (_mesh, client, server) = mesh();
    let out = client
        .app(&["get", "payments:80", "--host", "payments"])
        .unwrap();
    assert_eq!(out, "200 server");
    assert_one_ok_request(&client, "outbound", "payments.shop:80");
    assert_one_ok_request(&server, "inbound", "127.0.0.1:8080");
}

#[test]
fn http2_prior_knowledge_streams_with_trailers() {
    let (_mesh, client, server) = mesh();
    let out = client
        .app(&["get", "payments:80", "--h2", "--path", "/stream"])
        .unwrap();
    assert_eq!(out, "200 a,b\ntrailer grpc-status: 0");
    assert_eq!(connections(&client, "outbound", "http2"), 1);
    assert_eq!(connections(&server, "inbound", "http2"), 1);
}

#[test]
fn server_speaks_first_tcp_passes_both_sidecars() {
    let (_mesh, client, server) = mesh();
    let out = client.app(&["banner-client", "db:3306"]).unwrap();
    assert_eq!(out, "220 db ready|PING");
    assert_eq!(connections(&client, "outbound", "tcp"), 1);
    assert_eq!(connections(&server, "inbound", "tcp"), 1);
}

#[test]
fn unknown_destinations_pass_through_and_excluded_ports_bypass_the_proxy() {
    let (_mesh, client, server) = mesh();
    // The server's pod IP is no service VIP: the client's sidecar passes it through,
    // and the server's sidecar still captures it inbound.
    let out = client.app(&["get", "server:8080"]).unwrap();
    assert_eq!(out, "200 server");
    let client_metrics = client.metrics().unwrap();
    assert_eq!(
        count(
            &client_metrics,
            &connections_line("outbound", "passthrough")
        ),
        1,
        "{client_metrics}"
    );
    // Port 9090 is excluded from the server's inbound capture.
    let out = client.app(&["get", "server:9090"]).unwrap();
    assert_eq!(out, "200 excluded");
    let server_metrics = server.metrics().unwrap();
    assert_eq!(
        count(&server_metrics, "127.0.0.1:9090"),
        0,
        "{server_metrics}"
    );
    assert_eq!(
        count(&server_metrics, r#"target="127.0.0.1:8080""#),
        1,
        "{server_metrics}"
    );
    // The proxies' own upstream connections are not captured again: had the client
    // sidecar's connection to server:8080 been redirected to 15001, the sidecar would have
    // counted a second outbound connection (and looped).
    assert_eq!(
        count(&client_metrics, "braid_tcp_connections_total"),
        1,
        "{client_metrics}"
    );
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_and_refuses_new_connections() {
    let (_mesh, mut client, _server) = mesh();
    client
        .spawn_app("slow", &["get", "payments:80", "--path", "/slow"])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    client.terminate("sidecar").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let refused = client.app(&["get", "payments:80"]);
    assert!(
        refused.is_err(),
        "a draining sidecar still accepted a connection: {refused:?}"
    );
    assert!(
        client.wait_exit("slow", Duration::from_secs(10)).unwrap(),
        "{}",
        client.log("slow")
    );
    assert_eq!(client.log("slow").trim(), "200 server slow");
    assert!(
        client
            .wait_exit("sidecar", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("sidecar")
    );
}

#[test]
fn without_native_sidecars_the_pre_stop_hook_keeps_the_proxy_until_the_app_has_exited() {
    // Pod termination on a cluster without native sidecars: every container is told to
    // stop at once. The proxy's preStop hook (the injector's own command) must hold the
    // proxy's SIGTERM back while the app still serves and still calls out.
    let (_mesh, mut client, _server) = mesh();
    serve_http(&mut client, "client");
    let stop = start_load(&mut client);
    client.spawn_pre_stop_hook("pre-stop", &[8080]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        client.is_running("pre-stop").unwrap(),
        "the hook returned while the app was busy: {}",
        client.log("pre-stop")
    );
    // The app's last calls, made while it shuts down, all get through.
    stop_load(&mut client, stop);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        client.is_running("pre-stop").unwrap(),
        "the hook returned while the app still listened: {}",
        client.log("pre-stop")
    );
    client.terminate("http").unwrap();
    assert!(
        client
            .wait_exit("pre-stop", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("pre-stop")
    );
    assert!(client.log("pre-stop").contains("the app has exited"));
    // Only now does the kubelet signal the proxy, which has nothing left to drain.
    client.terminate("sidecar").unwrap();
    assert!(
        client
            .wait_exit("sidecar", Duration::from_secs(10))
            .unwrap(),
        "{}",
        client.log("sidecar")
    );
}

/// Starts the e2e HTTP server (label `http`) on port 8080 of `pod`, answering `name`.
fn serve_http(pod: &mut Pod, name: &str) {
    pod.spawn_app("http", &["http-server", "--port", "8080", "--name", name])
        .unwrap();
    pod.wait_listening(8080).unwrap();
}

/// The steering mesh: [`mesh_with_spare`] with `server2` behind `payments` too, its HTTP
/// server started with `server2_args` after `--port 8080`.
fn steering_mesh(server2_args: &[&str]) -> (Mesh, Pod, Pod, Pod) {
    let (mesh, client, server, mut server2) = mesh_with_spare();
    let op = mesh.operator().unwrap();
    op.write_registry(&registry(&[&server, &server2], &[&client]))
        .unwrap();
    server2.capture(&ProxyFlags::default()).unwrap();
    server2
        .start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["http-server", "--port", "8080"];
    args.extend(server2_args);
    server2.spawn_app("http", &args).unwrap();
    server2.wait_listening(8080).unwrap();
    (mesh, client, server, server2)
}

/// [`steering_mesh`] with a TrafficRoute of `rules` (see [`payments_route`]) in force in
/// the client's proxy.
fn routed_mesh(server2_args: &[&str], rules: &str) -> (Mesh, Pod, Pod, Pod) {
    let (mesh, client, server, server2) = steering_mesh(server2_args);
    mesh.operator()
        .unwrap()
        .write_resource("route.yaml", &payments_route(rules))
        .unwrap();
    let first = rules
        .split_once("- name: ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_default();
    wait_for_routes(&client, first.trim());
    (mesh, client, server, server2)
}

/// A TrafficRoute for `payments` with groups `Group_1` (pod `server`) and `Group_2`
/// (pod `server2`), and `rules` (YAML, indented as list items under `rules:`).
fn payments_route(rules: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1
kind: TrafficRoute
metadata: {{name: payments, namespace: shop}}
spec:
  host: payments
  groups: [{{name: Group_1, labels: {{pod: server}}}}, {{name: Group_2, labels: {{pod: server2}}}}]
  rules:
{rules}"
    )
}

/// Waits until `client`'s proxy holds routes whose first rule is `first_rule`, with an
/// endpoint in both groups.
fn wait_for_routes(client: &Pod, first_rule: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let dump = client.config_dump().unwrap();
        let payments = dump["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == "payments"))
            .cloned()
            .unwrap_or_default();
        let groups_filled = ["Group_1", "Group_2"].iter().all(|g| {
            payments["groups"].as_array().is_some_and(|gs| {
                gs.iter().any(|x| {
                    x["name"] == *g && x["endpoints"].as_array().is_some_and(|e| !e.is_empty())
                })
            })
        });
        if dump["routes"][0]["rules"][0]["name"] == first_rule && groups_filled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "rule {first_rule} never reached the client: {dump}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `count` requests from `client` to `payments:80` at `path` with `headers`; the
/// `tally` lines (`<n> <status> <body>`, most frequent first).
fn tally(client: &Pod, count: usize, path: &str, headers: &[&str]) -> String {
    shop::tally(client, "payments:80", count, path, headers).unwrap()
}

/// How many of a tally's requests got `answer` (`<status> <body>`).
fn tallied(tally: &str, answer: &str) -> usize {
    shop::tallied(tally, answer)
}

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

/// Starts a request loop from `client` to `payments:80`; returns its stop file.
fn start_load(client: &mut Pod) -> shop::Load {
    shop::Load::start(client, "load", "payments:80").unwrap()
}

/// Stops the loop of [`start_load`] and asserts it made many requests and none failed.
fn stop_load(client: &mut Pod, load: shop::Load) {
    let summary = load.stop(client).unwrap();
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert!(summary.ok > 50, "{summary:?}");
}

/// Waits until every pod's sidecar holds a config version other than `before[i]`, and
/// returns how long each took.
fn wait_for_new_versions(pods: &[&Pod], before: &[String]) -> Vec<Duration> {
    let started = Instant::now();
    let mut took = vec![None; pods.len()];
    while took.iter().any(Option::is_none) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "config did not propagate: {took:?}"
        );
        for (i, pod) in pods.iter().enumerate() {
            if took[i].is_none() && pod.config_version().unwrap() != before[i] {
                took[i] = Some(started.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    took.into_iter().flatten().collect()
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

fn client_config(version: &str, servers: &[&Pod]) -> ProxyConfig {
    let endpoints: Vec<_> = servers
        .iter()
        .map(|s| json!({"address": s.ip.to_string(), "meshed": true}))
        .collect();
    serde_json::from_value(json!({
        "version": version,
        "node": {"workload": "client", "namespace": "shop", "serviceAccount": "client"},
        "services": [
            {"name": "payments", "namespace": "shop", "vips": [PAYMENTS_VIP.to_string()],
             "ports": [{"port": 80, "targetPort": 8080, "protocol": "detect"}],
             "groups": [{"name": "(default)", "endpoints": endpoints}]},
        ],
    }))
    .unwrap()
}

fn server_config(name: &str) -> ProxyConfig {
    serde_json::from_value(json!({
        "version": "server-1",
        "node": {"workload": name, "namespace": "shop", "serviceAccount": name},
        "inbound": {"ports": [{"port": 8080, "protocol": "detect"}]},
    }))
    .unwrap()
}

#[test]
fn ipv6_is_captured_both_ways() {
    let (_mesh, client, server) = mesh();
    let out = client
        .app(&["get", &format!("[{PAYMENTS_VIP6}]:80")])
        .unwrap();
    assert_eq!(out, "200 server");
    assert_one_ok_request(&client, "outbound", "payments-v6.shop:80");
    assert_one_ok_request(&server, "inbound", "127.0.0.1:8080");
}

#[test]
fn the_init_step_is_idempotent_and_cleanup_removes_the_rules() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let pod = mesh.pod("init").unwrap();
    let flags = ProxyFlags {
        exclude_outbound_ports: vec![5432],
        ..Default::default()
    };
    let dry = pod.iptables(&flags, &["--dry-run"]).unwrap();
    assert!(
        dry.contains("-A BRAID_OUTPUT -p tcp --dport 5432 -j RETURN"),
        "{dry}"
    );
    // Both backends: the one the host uses is picked by default, either can be forced.
    for backend in ["nft", "legacy"] {
        let braid_rules = || {
            [
                format!("iptables-{backend}-save"),
                format!("ip6tables-{backend}-save"),
            ]
            .map(|cmd| {
                let out = pod.exec(&[&cmd, "-t", "nat"]).unwrap();
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter(|l| l.contains("BRAID"))
                    .count()
            })
        };
        let args = ["--backend", backend];
        let first = pod.iptables(&flags, &args).unwrap();
        assert!(
            first.contains(&format!("using the {backend} backend")),
            "the init step must say which backend it uses: {first}"
        );
        let once = braid_rules();
        assert!(once[0] > 10 && once[1] > 10, "{backend}: {once:?}");
        pod.iptables(&flags, &args).unwrap();
        assert_eq!(
            braid_rules(),
            once,
            "{backend}: a second run duplicated rules"
        );
        pod.iptables(&flags, &["--backend", backend, "--cleanup"])
            .unwrap();
        assert_eq!(braid_rules(), [0, 0], "{backend}: cleanup left rules");
    }
}

#[test]
fn leftovers_of_a_killed_run_are_swept() {
    // A namespace named like the harness's, owned by a pid that no longer exists.
    let name = "be2e-4194303-leftover";
    braid_e2e::prerequisites().unwrap_or_else(|e| panic!("{e}"));
    let _ = std::process::Command::new("ip")
        .args(["netns", "add", name])
        .status();
    braid_e2e::sweep();
    let list = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(name),
        "the sweeper left {name}"
    );
}

/// Starts the sidecar of `pod` (captured) with its config from the operator, and its
/// HTTP server on 8080 with `args` after `--port 8080`, under label `label`.
fn start_server(pod: &mut Pod, op: &braid_e2e::Operator, label: &str, args: &[&str]) {
    pod.capture(&ProxyFlags::default()).unwrap();
    pod.start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    serve_on_8080(pod, label, args);
}

/// Starts the e2e HTTP server on port 8080 of `pod` under `label`.
fn serve_on_8080(pod: &mut Pod, label: &str, args: &[&str]) {
    let mut all = vec!["http-server", "--port", "8080"];
    all.extend(args);
    pod.spawn_app(label, &all).unwrap();
    pod.wait_listening(8080).unwrap();
}

/// The outlier scenarios' mesh after its operator started: a SelfHealing for payments
/// with `spec` (YAML lines under `spec:`, after the selector), a route retrying 5xx,
/// `server` and `server2` healthy and `server3` answering 500 to everything, and the
/// client, whose proxy holds the route and the outlier detection on return.
fn one_of_three_failing(
    op: &braid_e2e::Operator,
    [server, server2, server3]: [&mut Pod; 3],
    client: &mut Pod,
    spec: &str,
) {
    op.write_resource(
        "healing.yaml",
        &format!(
            "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{name: payments, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: payments}}}}\n{spec}"
        ),
    )
    .unwrap();
    op.write_resource(
        "route.yaml",
        &payments_route("  - name: retried\n    retries: {attempts: 2, \"on\": [5xx]}\n"),
    )
    .unwrap();
    start_server(server, op, "http", &["--name", "server"]);
    start_server(server2, op, "http", &["--name", "server2"]);
    start_server(
        server3,
        op,
        "http",
        &["--name", "server3", "--fail-every", "1"],
    );
    client.capture(&ProxyFlags::default()).unwrap();
    client
        .start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_for_routes(client, "retried");
    let deadline = Instant::now() + Duration::from_secs(15);
    while client.config_dump().unwrap()["services"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "payments"))
        .is_none_or(|s| s["outlierDetection"].is_null())
    {
        assert!(Instant::now() < deadline, "outlier detection never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_failing_endpoint_is_ejected_and_the_group_keeps_its_share() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut server2 = mesh.pod("server2").unwrap();
    let mut server3 = mesh.pod("server3").unwrap();
    mesh.start_operator(&registry(&[&server, &server2, &server3], &[&client]))
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    let op = mesh.operator().unwrap();
    // One endpoint of three may be ejected (34%); ejections last long enough for the test.
    one_of_three_failing(
        op,
        [&mut server, &mut server2, &mut server3],
        &mut client,
        "  outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 60s, maxEjectionPercent: 34}\n",
    );

    // Retries hide server3's failures; after three of them in a row it is ejected. (How
    // soon the balancer sends server3 three requests depends on the latencies it has
    // seen, so the caller keeps calling until then.)
    let ejections = |metrics: &str| count(metrics, "braid_outlier_ejections_total{");
    let mut first = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let round = tally(&client, 50, "/", &[]);
        assert_eq!(
            tallied(&round, "200 server") + tallied(&round, "200 server2"),
            50,
            "{round}"
        );
        first.push_str(&round);
        let metrics = client.metrics().unwrap();
        if ejections(&metrics) > 0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "server3 never ejected: {metrics}"
        );
    };
    assert_eq!(ejections(&metrics), 1, "{metrics}");
    assert!(
        metrics.contains(&format!(
            r#"braid_outlier_ejections_total{{target="payments.shop:80",endpoint="{}:8080",reason="consecutive_errors"}} 1"#,
            server3.ip
        )),
        "{metrics}"
    );
    // The ejection reaches the operator (which heals what several callers report).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !op.log().lines().any(|l| {
        l.contains("proxy ejected an endpoint") && l.contains(&format!("{}:8080", server3.ip))
    }) {
        assert!(
            Instant::now() < deadline,
            "no ejection report:\n{}",
            op.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Ejected, it sees no more requests: even without retries nothing fails now.
    let served = |pod: &Pod| {
        client
            .app(&["get", &pod.addr(8080).to_string(), "--path", "/count"])
            .unwrap()
    };
    let before = served(&server3);
    let second = tally(&client, 100, "/", &[]);
    assert_eq!(
        tallied(&second, "200 server") + tallied(&second, "200 server2"),
        100,
        "{second}"
    );
    assert_eq!(
        served(&server3),
        before,
        "the ejected endpoint still got requests"
    );

    // server2 goes bad too: ejecting it would exceed 34% of the group, so it stays in
    // (the ejection is spared and counted). The balancer prefers whichever of the two
    // answered faster lately, so keep calling until server2's failures are judged.
    server2.terminate("http").unwrap();
    assert!(server2.wait_exit("http", Duration::from_secs(5)).is_ok());
    serve_on_8080(
        &mut server2,
        "http-bad",
        &["--name", "server2", "--fail-every", "1"],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut third = String::new();
    let metrics = loop {
        third.push_str(&(tally(&client, 50, "/", &[]) + "\n"));
        let metrics = client.metrics().unwrap();
        if count(&metrics, "braid_outlier_ejections_spared_total{") > 0 {
            break metrics;
        }
        assert!(
            Instant::now() < deadline,
            "server2 was never judged: {metrics}"
        );
    };
    assert_eq!(ejections(&metrics), 1, "{metrics}");
    // Still in: it keeps getting requests.
    let before = served(&server2);
    let deadline = Instant::now() + Duration::from_secs(60);
    while served(&server2) == before {
        third.push_str(&(tally(&client, 50, "/", &[]) + "\n"));
        assert!(Instant::now() < deadline, "server2 was dropped after all");
    }
    println!("until ejected: {first:?}; after ejection: {second:?}; two bad: {third:?}");
}

#[test]
fn an_endpoint_that_stays_bad_is_restarted_after_the_cooldown_and_readmitted() {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut server2 = mesh.pod("server2").unwrap();
    let mut server3 = mesh.pod("server3").unwrap();
    // The directory mode's healing command: it records what it was asked and stops the
    // pod's app, whose service manager (this test) starts it again.
    let pods = server3.dir().parent().unwrap().to_owned();
    let (script, healed) = shop::healing_command(&pods).unwrap();
    mesh.start_operator_with(
        &registry(&[&server, &server2, &server3], &[&client]),
        &["--healing-command", &script.display().to_string()],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP)]).unwrap();
    let op = mesh.operator().unwrap();
    one_of_three_failing(
        op,
        [&mut server, &mut server2, &mut server3],
        &mut client,
        "  outlierDetection: {consecutiveErrors: 3, baseEjectionTime: 5s, maxEjectionPercent: 34}
  healing: {action: RestartPod, cooldown: 3s, minReporters: 1, maxActionsPerHour: 2}
",
    );
    let pid = server3.pid("http").unwrap();
    std::fs::write(server3.dir().join("app.pid"), pid.to_string()).unwrap();

    // server3 fails everything: retries hide it, and the caller keeps calling until
    // server3 is ejected, the report reaches the operator and, after the 3 s cooldown,
    // its command runs. (How many calls server3 gets before its third failure in a row
    // depends on the balancer, so the loop does not count them.)
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    let mut first = String::new();
    let record = loop {
        let round = tally(&client, 50, "/", &[]);
        assert_eq!(
            tallied(&round, "200 server") + tallied(&round, "200 server2"),
            50,
            "{round}"
        );
        first.push_str(&round);
        first.push('\n');
        if let Ok(text) = std::fs::read_to_string(&healed) {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the healing command never ran:\n{}\n{}",
            op.log(),
            client.metrics().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let acted_after = started.elapsed();
    assert_eq!(
        record.trim(),
        format!(
            "RestartPod shop/server3 {} {}:8080 shop/payments",
            server3.ip, server3.ip
        )
    );
    assert!(
        acted_after >= Duration::from_secs(3),
        "acted before the cooldown: {acted_after:?}"
    );
    assert!(server3.wait_exit("http", Duration::from_secs(5)).is_ok());
    // The service manager starts it again, healthy now.
    serve_on_8080(&mut server3, "http-restarted", &["--name", "server3"]);
    // The action is in the SelfHealing's status.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = op.status("selfhealing", "shop", "payments");
        if status.contains("action: RestartPod") {
            assert!(status.contains("pod: server3"), "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "no action in status: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Once its ejection ends the proxy tries it again: it is back in the group.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = String::new();
    while tallied(&after, "200 server3") == 0 {
        assert!(
            Instant::now() < deadline,
            "server3 never came back: {after}\n{}",
            client.metrics().unwrap()
        );
        std::thread::sleep(Duration::from_millis(500));
        after = tally(&client, 30, "/", &[]);
    }
    assert_eq!(shop::not_ok(&after), 0, "{after}");
    let metrics = client.metrics().unwrap();
    assert!(
        count(&metrics, "braid_outlier_returns_total") >= 1,
        "{metrics}"
    );
    // Acted on once: the restarted endpoint is not reported again.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        std::fs::read_to_string(&healed).unwrap().lines().count(),
        1,
        "{}",
        op.log()
    );
    println!("acted after {acted_after:?}; before: {first:?}; after: {after:?}");
}

// ---- Link encryption ----

/// An EncryptionPolicy `name` in namespace shop with `spec` (YAML flow mapping body).
fn encryption_policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{{spec}}}\n"
    )
}

/// The TLS `mode` (and `rolloutPercent`) the client's proxy holds for `server`'s
/// endpoint of payments; `None` for plaintext.
fn endpoint_tls(client: &Pod, server: &Pod) -> Option<(String, u64)> {
    shop::endpoint_tls(client, "payments", server).unwrap()
}

/// The inbound TLS mode in `pod`'s proxy (`Disabled` when absent).
fn inbound_tls(pod: &Pod) -> String {
    shop::inbound_tls(pod).unwrap()
}

/// Waits until `check` holds, polling every 100 ms; panics naming `what` after `secs`.
fn wait_until(what: &str, secs: u64, check: impl FnMut() -> bool) {
    shop::wait_until(what, secs, check).unwrap_or_else(|e| panic!("{e}"));
}

/// Captures TCP port 8080 on `pod`'s eth0 while `during` runs; returns the bytes.
fn capture_8080(pod: &mut Pod, label: &str, during: impl FnOnce()) -> Vec<u8> {
    let file = pod.dir().join(format!("{label}.pcap"));
    let path = file.display().to_string();
    pod.spawn_cmd(
        label,
        &[
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            "eth0",
            "-U",
            "-s",
            "0",
            "-w",
            &path,
            "tcp",
            "port",
            "8080",
        ],
    )
    .unwrap();
    wait_until("tcpdump to start", 10, || {
        pod.log(label).contains("listening on")
    });
    during();
    std::thread::sleep(Duration::from_millis(300));
    pod.terminate(label).unwrap();
    assert!(pod.wait_exit(label, Duration::from_secs(5)).unwrap());
    std::fs::read(&file).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

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
    op.write_resource(
        "tls.yaml",
        &encryption_policy(
            "payments",
            "selector: {matchLabels: {app: payments}}, mode: Strict",
        ),
    )
    .unwrap();
    wait_until("the server to be Strict", 15, || {
        inbound_tls(&server) == "Strict"
    });
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

/// The `value` of `field: value` in a status YAML.
fn status_field(status: &str, field: &str) -> Option<String> {
    shop::status_field(status, field)
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

// ---- make demo ----

#[test]
fn the_demo_walks_through_its_three_jobs_and_exits_zero() {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap().to_owned();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let out = std::process::Command::new(dir.join("braid-demo"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for step in ["✔ steering", "✔ link encryption", "✔ self-healing"] {
        assert!(stdout.contains(step), "{stdout}");
    }
    assert!(
        stdout.contains("requests during the rollout:") && stdout.contains(", 0 failed"),
        "{stdout}"
    );
}
