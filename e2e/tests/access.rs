//! End-to-end. Authorization (AccessPolicy) over real mTLS in network namespaces: an
//! audited policy names the stray caller and refuses nothing; its automatic rollout
//! enforces it after a clean interval, refusing the stray caller (403, TCP closed)
//! while the allowed one keeps every request; path-scoped rules, Deny over Allow,
//! gRPC's PERMISSION_DENIED, and a change reaching a kept-alive connection. Run with
//! `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

const CLIENT: &str = "spiffe://cluster.local/ns/shop/sa/client";
const STRAY: &str = "spiffe://cluster.local/ns/shop/sa/stray";

/// `payments` served by `server` (HTTP on 8080, the `db` banner on 3306), called by
/// `client` and `stray`, all meshed and Strict: every caller has a verified identity.
fn access_mesh() -> (Mesh, Pod, Pod, Pod) {
    let mut mesh = Mesh::new().unwrap_or_else(|e| panic!("{e}"));
    let mut server = mesh.pod("server").unwrap();
    let mut client = mesh.pod("client").unwrap();
    let mut stray = mesh.pod("stray").unwrap();
    mesh.start_operator(&registry(&[&server], &[&client, &stray]))
        .unwrap_or_else(|e| panic!("{e}"));
    mesh.set_hosts(&[("payments", PAYMENTS_VIP), ("db", DB_VIP)])
        .unwrap();
    server.capture(&ProxyFlags::default()).unwrap();
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
    for port in [8080, 3306] {
        server.wait_listening(port).unwrap();
    }
    for pod in [&mut client, &mut stray] {
        pod.capture(&ProxyFlags::default()).unwrap();
        pod.start_sidecar_streaming(mesh.operator().unwrap())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    make_payments_strict(mesh.operator().unwrap(), &server);
    wait_until("both callers to reach payments over mTLS", 15, || {
        [&client, &stray]
            .iter()
            .all(|p| p.app(&["get", "payments:80"]).unwrap_or_default() == "200 server")
    });
    (mesh, client, stray, server)
}

fn access_policy(name: &str, body: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: payments}}}}\n{body}"
    )
}

fn get(pod: &Pod, args: &[&str]) -> String {
    let mut all = vec!["get", "payments:80"];
    all.extend_from_slice(args);
    pod.app(&all).unwrap_or_else(|e| format!("error {e}"))
}

#[test]
fn audit_names_the_stray_caller_then_enforcing_refuses_it_and_no_one_else() {
    let (mesh, mut client, stray, server) = access_mesh();
    let op = mesh.operator().unwrap();
    let load = start_load(&mut client);
    op.write_resource(
        "access.yaml",
        &access_policy(
            "callers",
            "  mode: Audit\n  rollout: {interval: 5s, minRequests: 5}\n  rules:\n  - name: client\n    from: [{serviceAccount: client}]\n",
        ),
    )
    .unwrap();
    wait_until("the server's proxy to audit the policy", 15, || {
        shop::access_mode(&server, "shop/callers") == "Audit"
    });

    // Audit: the stray caller is served, and named.
    let tally = stray
        .app(&["tally", "payments:80", "--count", "10"])
        .unwrap();
    assert_eq!(tallied(&tally, "200 server"), 10, "{tally}");
    let status = || op.status("accesspolicy", "shop", "callers");
    wait_until("status to name the stray caller", 30, || {
        let s = status();
        s.contains(STRAY) && s.contains("pod: shop/stray")
    });
    let s = status();
    assert_eq!(
        status_field(&s, "phase").as_deref(),
        Some("Auditing"),
        "{s}"
    );
    let would_deny: u64 = status_field(&s, "wouldDeny").unwrap().parse().unwrap();
    assert!(would_deny >= 10, "{s}");
    assert!(s.contains("reason: RefusalsSeen"), "{s}");
    assert!(s.contains("request: GET /"), "{s}");
    assert!(
        !s.contains(&format!("identity: {CLIENT}")),
        "the allowed caller is not named: {s}"
    );
    let metrics = server.metrics().unwrap();
    assert!(
        count(
            &metrics,
            r#"braid_authz_decisions_total{policy="shop/callers",decision="deny",mode="audit"}"#
        ) >= 10,
        "{metrics}"
    );

    // The stray caller stops; after one clean interval the operator enforces.
    wait_until("the rollout to enforce", 60, || {
        status_field(&status(), "phase").as_deref() == Some("Enforcing")
    });
    wait_until("the server's proxy to enforce", 10, || {
        shop::access_mode(&server, "shop/callers") == "Enforce"
    });
    assert!(
        op.log().contains("Enforced"),
        "no Enforced event: {}",
        op.log()
    );

    // The stray caller is refused: 403 for HTTP, its TCP connection closed unanswered.
    let refused = get(&stray, &[]);
    assert_eq!(
        refused.trim(),
        "403 denied by AccessPolicy shop/callers",
        "{refused}"
    );
    let banner = stray.app(&["banner-client", "db:3306"]).unwrap_or_default();
    assert!(
        !banner.contains("220 db ready"),
        "the refused caller reached the app: {banner}"
    );
    assert_eq!(
        client.app(&["banner-client", "db:3306"]).unwrap(),
        "220 db ready|PING",
        "the allowed caller's TCP passes"
    );
    let metrics = server.metrics().unwrap();
    assert!(
        count(
            &metrics,
            r#"braid_authz_decisions_total{policy="shop/callers",decision="deny",mode="enforce"}"#
        ) >= 2,
        "{metrics}"
    );
    wait_until("status to count the refusals", 30, || {
        status_field(&status(), "denied").is_some_and(|d| d != "0")
    });
    // The refusal of a caller never let through does not undo the rollout.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        status_field(&status(), "phase").as_deref(),
        Some("Enforcing")
    );
    assert!(!op.log().contains("RolledBack"), "{}", op.log());
    // The allowed caller made every request across the switch.
    stop_load(&mut client, load);
}

#[test]
fn path_rules_deny_over_allow_grpc_and_a_change_on_a_kept_alive_connection() {
    let (mesh, client, mut stray, _server) = access_mesh();
    let op = mesh.operator().unwrap();
    let allow = |stray_rules: &str| {
        access_policy(
            "callers",
            &format!(
                "  mode: Enforce\n  rules:\n  - name: client\n    from: [{{serviceAccount: client}}]\n{stray_rules}"
            ),
        )
    };
    let public = "  - name: stray-public\n    from: [{serviceAccount: stray}]\n    http: {methods: [GET], paths: [{prefix: /public}]}\n";
    let deny = access_policy(
        "no-admin-writes",
        "  action: Deny\n  mode: Enforce\n  rules:\n  - http: {methods: [POST], paths: [{prefix: /admin}]}\n",
    );
    op.write_resource("access.yaml", &format!("{}---\n{deny}", allow(public)))
        .unwrap();
    wait_until("the stray caller to be refused outside /public", 15, || {
        get(&stray, &["--path", "/"]).starts_with("403")
    });
    assert_eq!(
        get(&stray, &["--path", "/public/report"]).trim(),
        "200 server"
    );
    assert!(
        get(&stray, &["--path", "/publicity"]).starts_with("403"),
        "segment-wise"
    );
    assert!(get(&stray, &["--path", "/public", "--method", "POST"]).starts_with("403"));
    // Deny beats Allow: the client may do anything but POST to /admin.
    assert_eq!(get(&client, &["--path", "/admin"]).trim(), "200 server");
    assert_eq!(
        get(&client, &["--path", "/admin/users", "--method", "POST"]).trim(),
        "403 denied by AccessPolicy shop/no-admin-writes"
    );
    // gRPC learns why: PERMISSION_DENIED with the reason.
    let grpc = get(
        &stray,
        &[
            "--h2",
            "--path",
            "/shop.Payments/Pay",
            "--method",
            "POST",
            "--header",
            "content-type: application/grpc",
        ],
    );
    assert!(grpc.contains("header grpc-status: 7"), "{grpc}");
    assert!(
        grpc.contains("header grpc-message: denied by AccessPolicy shop/callers"),
        "{grpc}"
    );

    // A connection kept alive across a change gets the new decision on its next request.
    let next = stray.dir().join("next");
    stray
        .spawn_app(
            "twice",
            &[
                "twice",
                "payments:80",
                "--path",
                "/public",
                "--wait-file",
                &next.display().to_string(),
            ],
        )
        .unwrap();
    wait_until("the first request on the kept-alive connection", 10, || {
        stray.log("twice").contains("1 200")
    });
    op.write_resource("access.yaml", &format!("{}---\n{deny}", allow("")))
        .unwrap();
    wait_until("the change to reach the server", 15, || {
        get(&stray, &["--path", "/public/x"]).starts_with("403")
    });
    std::fs::write(&next, "").unwrap();
    assert!(stray.wait_exit("twice", Duration::from_secs(10)).unwrap());
    assert_eq!(
        stray.log("twice").trim(),
        "1 200\n2 403",
        "{}",
        stray.log("twice")
    );
}
