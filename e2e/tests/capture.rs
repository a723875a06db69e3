//! End-to-end. Capture: pods as network namespaces, captured by the real `braid-proxy
//! iptables`, sidecars as UID 1337, real traffic between them: HTTP/1.1, HTTP/2,
//! server-first TCP, pass-through, IPv6, and the init step's rules. Run with `make e2e`
//! (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

/// One HTTP/1.1 call from `client` to payments' VIP, answered by `server`.
fn call_payments_once(client: &Pod) {
    let out = client
        .app(&["get", "payments:80", "--host", "payments"])
        .unwrap();
    assert_eq!(out, "200 server");
}

#[test]
fn http1_to_a_vip_crosses_both_sidecars() {
    let (_mesh, client, server) = mesh();
    call_payments_once(&client);
    assert_one_ok_request(&client, "outbound", "payments.shop:80");
    assert_one_ok_request(&server, "inbound", "127.0.0.1:8080");
}

#[test]
fn prometheus_outside_the_mesh_scrapes_a_sidecar_at_the_pods_address() {
    let (mesh, client, server) = mesh();
    call_payments_once(&client);
    // From the hub, where a Prometheus outside the mesh stands: the health port on the
    // pod's address, not loopback, and not captured.
    let health = format!("{}:{}", server.ip, braid_api::ports::HEALTH_PORT);
    let scrape = |path: &str| {
        mesh.hub_app(&["get", &health, "--path", path, "--host", "prometheus"])
            .unwrap()
    };
    let metrics = scrape(braid_api::ports::SCRAPE_PATH);
    assert!(metrics.starts_with("200 "), "{metrics}");
    assert_eq!(
        count(&metrics, &ok_requests("inbound", "127.0.0.1:8080")),
        1,
        "{metrics}"
    );
    // The admin port's config dump is not served there, and the admin port itself
    // listens on the pod's loopback only.
    assert!(scrape("/config_dump").starts_with("404"));
    let admin = format!("{}:{}", server.ip, braid_api::ports::ADMIN_PORT);
    let refused = mesh
        .hub_app(&["get", &admin, "--path", "/config_dump"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("refused"), "{refused}");
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
        count(&server_metrics, &ok_requests("inbound", "127.0.0.1:8080")),
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
