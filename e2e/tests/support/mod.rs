//! What the end-to-end scenarios share: the mesh of a client and servers, the registry
//! and resources they run under, load, metrics and waits. Each scenario file uses part.

#![allow(dead_code, unused_imports)]

pub use std::net::{Ipv4Addr, Ipv6Addr};
pub use std::time::{Duration, Instant};

pub use braid_api::config::ProxyConfig;
pub use braid_e2e::{Mesh, Pod, ProxyFlags, shop};
pub use serde_json::json;

pub const PAYMENTS_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const DB_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 11);
pub const PAYMENTS_VIP6: Ipv6Addr = Ipv6Addr::new(0xfd96, 0, 0, 0, 0, 0, 0, 0x10);

/// The registry of the mesh: `payments` (IPv4, and an IPv6-only twin) served by
/// `servers`, `db` by the first of them, and `others` as plain callers. Each pod runs as
/// the service account of its own name, as the harness's bootstrap tokens say.
pub fn registry(servers: &[&Pod], others: &[&Pod]) -> String {
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
pub fn mesh() -> (Mesh, Pod, Pod) {
    let (mesh, client, server, _) = mesh_with_spare();
    (mesh, client, server)
}

/// [`mesh`], plus a spare pod `server2` the operator has a token for but that is not in
/// the registry yet.
pub fn mesh_with_spare() -> (Mesh, Pod, Pod, Pod) {
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
pub fn ok_requests(direction: &str, target: &str) -> String {
    format!(
        r#"braid_requests_total{{direction="{direction}",target="{target}",rule="",group="",code="200",tls="false",peer_identity=""}}"#
    )
}

/// The `braid_tcp_connections_total` series for one direction and protocol.
pub fn connections_line(direction: &str, protocol: &str) -> String {
    format!(r#"braid_tcp_connections_total{{direction="{direction}",protocol="{protocol}"}}"#)
}

/// How many connections `pod`'s sidecar accepted in `direction` as `protocol`.
pub fn connections(pod: &Pod, direction: &str, protocol: &str) -> u64 {
    count(
        &pod.metrics().unwrap(),
        &connections_line(direction, protocol),
    )
}

/// `pod`'s sidecar counted exactly one 200 for `target` in `direction`.
pub fn assert_one_ok_request(pod: &Pod, direction: &str, target: &str) {
    let metrics = pod.metrics().unwrap();
    assert_eq!(
        count(&metrics, &ok_requests(direction, target)),
        1,
        "{metrics}"
    );
}

pub fn count(metrics: &str, needle: &str) -> u64 {
    shop::metric_sum(metrics, needle)
}

/// Starts the e2e HTTP server (label `http`) on port 8080 of `pod`, answering `name`.
pub fn serve_http(pod: &mut Pod, name: &str) {
    pod.spawn_app("http", &["http-server", "--port", "8080", "--name", name])
        .unwrap();
    pod.wait_listening(8080).unwrap();
}

/// The steering mesh: [`mesh_with_spare`] with `server2` behind `payments` too, its HTTP
/// server started with `server2_args` after `--port 8080`.
pub fn steering_mesh(server2_args: &[&str]) -> (Mesh, Pod, Pod, Pod) {
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
pub fn routed_mesh(server2_args: &[&str], rules: &str) -> (Mesh, Pod, Pod, Pod) {
    let (mesh, client, server, server2) = steering_mesh(server2_args);
    // Before the route exists, so that this call is not one of the rules' requests
    // (a mirror would count it).
    call_payments(&client);
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
pub fn payments_route(rules: &str) -> String {
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

/// Calls payments once from `client`, as its app would: the sidecar holds the services
/// its app calls, so payments' routes and groups come to it from then on. On `/count`,
/// which the servers do not count.
pub fn call_payments(client: &Pod) {
    let _ = client.app(&["get", "payments:80", "--path", "/count"]);
}

/// Waits until `client`'s proxy holds routes whose first rule is `first_rule`, with an
/// endpoint in both groups; `client` must have called payments ([`call_payments`]).
pub fn wait_for_routes(client: &Pod, first_rule: &str) {
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
pub fn tally(client: &Pod, count: usize, path: &str, headers: &[&str]) -> String {
    shop::tally(client, "payments:80", count, path, headers).unwrap()
}

/// How many of a tally's requests got `answer` (`<status> <body>`).
pub fn tallied(tally: &str, answer: &str) -> usize {
    shop::tallied(tally, answer)
}

/// Starts a request loop from `client` to `payments:80`; returns its stop file.
pub fn start_load(client: &mut Pod) -> shop::Load {
    shop::Load::start(client, "load", "payments:80").unwrap()
}

/// Stops the loop of [`start_load`] and asserts it made many requests and none failed.
pub fn stop_load(client: &mut Pod, load: shop::Load) {
    let summary = load.stop(client).unwrap();
    assert_eq!(summary.failed, 0, "{summary:?}");
    assert!(summary.ok > 50, "{summary:?}");
}

/// Waits until every pod's sidecar holds a config version other than `before[i]`, and
/// returns how long each took.
pub fn wait_for_new_versions(pods: &[&Pod], before: &[String]) -> Vec<Duration> {
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

pub fn client_config(version: &str, servers: &[&Pod]) -> ProxyConfig {
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

pub fn server_config(name: &str) -> ProxyConfig {
    serde_json::from_value(json!({
        "version": "server-1",
        "node": {"workload": name, "namespace": "shop", "serviceAccount": name},
        "inbound": {"ports": [{"port": 8080, "protocol": "detect"}]},
    }))
    .unwrap()
}

/// Starts the sidecar of `pod` (captured) with its config from the operator, and its
/// HTTP server on 8080 with `args` after `--port 8080`, under label `label`.
pub fn start_server(pod: &mut Pod, op: &braid_e2e::Operator, label: &str, args: &[&str]) {
    pod.capture(&ProxyFlags::default()).unwrap();
    pod.start_sidecar_streaming(op)
        .unwrap_or_else(|e| panic!("{e}"));
    serve_on_8080(pod, label, args);
}

/// Starts the e2e HTTP server on port 8080 of `pod` under `label`.
pub fn serve_on_8080(pod: &mut Pod, label: &str, args: &[&str]) {
    let mut all = vec!["http-server", "--port", "8080"];
    all.extend(args);
    pod.spawn_app(label, &all).unwrap();
    pod.wait_listening(8080).unwrap();
}

/// The outlier scenarios' mesh after its operator started: a SelfHealing for payments
/// with `spec` (YAML lines under `spec:`, after the selector), a route retrying 5xx,
/// `server` and `server2` healthy and `server3` answering 500 to everything, and the
/// client, whose proxy holds the route and the outlier detection on return.
pub fn one_of_three_failing(
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
    call_payments(client);
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

/// An EncryptionPolicy `name` in namespace shop with `spec` (YAML flow mapping body).
pub fn encryption_policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{{spec}}}\n"
    )
}

/// The TLS `mode` (and `rolloutPercent`) the client's proxy holds for `server`'s
/// endpoint of payments; `None` for plaintext.
pub fn endpoint_tls(client: &Pod, server: &Pod) -> Option<(String, u64)> {
    shop::endpoint_tls(client, "payments", server).unwrap()
}

/// The inbound TLS mode in `pod`'s proxy (`Disabled` when absent).
pub fn inbound_tls(pod: &Pod) -> String {
    shop::inbound_tls(pod).unwrap()
}

/// Waits until `check` holds, polling every 100 ms; panics naming `what` after `secs`.
pub fn wait_until(what: &str, secs: u64, check: impl FnMut() -> bool) {
    shop::wait_until(what, secs, check).unwrap_or_else(|e| panic!("{e}"));
}

/// Captures TCP port 8080 on `pod`'s eth0 while `during` runs; returns the bytes.
pub fn capture_8080(pod: &mut Pod, label: &str, during: impl FnOnce()) -> Vec<u8> {
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

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The `value` of `field: value` in a status YAML.
pub fn status_field(status: &str, field: &str) -> Option<String> {
    shop::status_field(status, field)
}

/// Applies a Strict EncryptionPolicy to payments and waits until `server`'s sidecar holds it.
pub fn make_payments_strict(op: &braid_e2e::Operator, server: &Pod) {
    op.write_resource(
        "tls.yaml",
        &encryption_policy(
            "payments",
            "selector: {matchLabels: {app: payments}}, mode: Strict",
        ),
    )
    .unwrap();
    wait_until("the server to be Strict", 15, || {
        inbound_tls(server) == "Strict"
    });
}
