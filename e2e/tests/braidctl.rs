//! End-to-end. braidctl against the directory-mode operator and real proxies: `status`
//! converges to N/N after a change and shows M/N, naming the proxy, while one proxy is
//! stopped; `proxy-status` shows that proxy stale and not connected; `explain` names the
//! rule and group the proxy actually sends each of 20 generated requests to. Run with
//! `make e2e` (root needed).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use support::*;

/// An AccessPolicy over every workload of `shop`, auditing: it changes no request, and
/// every proxy of the mesh carries it. `rule` names its one rule, so an edit makes a new
/// config for every proxy.
fn audit_everything(rule: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1
kind: AccessPolicy
metadata: {{name: watch-all, namespace: shop}}
spec:
  selector: {{}}
  action: Allow
  mode: Audit
  rules:
  - name: {rule}
    from: [{{namespace: shop}}]
"
    )
}

/// `braidctl status -o json`'s entry for the AccessPolicy: `(applied, targeted, pending)`.
fn access_convergence(mesh: &Mesh, dir: &str) -> Option<(u64, u64, Vec<String>)> {
    let out = mesh
        .braidctl(&["--dir", dir, "-o", "json", "status"])
        .ok()?;
    let all: serde_json::Value = serde_json::from_str(&out).ok()?;
    let entry = all
        .as_array()?
        .iter()
        .find(|r| r["kind"] == "AccessPolicy" && r["name"] == "watch-all")?
        .clone();
    let pending = entry["pending"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    Some((
        entry["applied"].as_u64()?,
        entry["targeted"].as_u64()?,
        pending,
    ))
}

#[test]
fn status_and_proxy_status_show_convergence_and_name_the_proxy_left_behind() {
    let (mesh, client, _server, mut server2) = steering_mesh(&["--name", "server2"]);
    let op = mesh.operator().unwrap();
    let dir = op.source_dir().display().to_string();
    let admin = op.admin.to_string();

    // Every proxy applies the policy: 3/3.
    op.write_resource("access.yaml", &audit_everything("first"))
        .unwrap();
    wait_until("status to show the policy on 3/3 proxies", 20, || {
        access_convergence(&mesh, &dir).is_some_and(|(a, t, _)| (a, t) == (3, 3))
    });
    let table = mesh.braidctl(&["--dir", &dir, "status"]).unwrap();
    let line = table
        .lines()
        .find(|l| l.contains("AccessPolicy") && l.contains("watch-all"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("True") && line.contains("Auditing") && line.ends_with("3/3"),
        "{table}"
    );

    // Every proxy current and streaming from the one replica.
    let ps = mesh
        .braidctl(&["--dir", &dir, "--operator", &admin, "proxy-status"])
        .unwrap();
    for pod in ["shop/client", "shop/server", "shop/server2"] {
        let line = ps
            .lines()
            .find(|l| l.starts_with(&format!("{pod} ")))
            .unwrap_or_else(|| panic!("no {pod} in:\n{ps}"));
        assert!(
            line.contains("current") && line.contains("operator-0 ("),
            "{ps}"
        );
        assert!(line.contains(env!("CARGO_PKG_VERSION")), "{ps}");
    }

    // server2's proxy stops; the policy changes: the two running proxies apply it, and
    // server2's is named as the one left behind.
    server2.terminate("sidecar").unwrap();
    assert!(
        server2
            .wait_exit("sidecar", Duration::from_secs(15))
            .unwrap()
    );
    op.write_resource("access.yaml", &audit_everything("second"))
        .unwrap();
    wait_until("status to show 2/3 with server2 pending", 20, || {
        access_convergence(&mesh, &dir)
            .is_some_and(|(a, t, p)| (a, t) == (2, 3) && p == ["shop/server2"])
    });
    let table = mesh.braidctl(&["--dir", &dir, "status"]).unwrap();
    println!("$ braidctl status\n{table}");
    assert!(table.contains("2/3 (waiting: shop/server2)"), "{table}");

    let ps = mesh
        .braidctl(&["--dir", &dir, "--operator", &admin, "proxy-status"])
        .unwrap();
    println!("$ braidctl proxy-status\n{ps}");
    let stale = ps
        .lines()
        .find(|l| l.starts_with("shop/server2 "))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(
        stale.contains("STALE: holds ") && stale.contains("not connected"),
        "{ps}"
    );
    let fresh = ps
        .lines()
        .find(|l| l.starts_with("shop/client "))
        .unwrap_or_else(|| panic!("{ps}"));
    assert!(fresh.contains("current"), "{ps}");
    // As JSON, the versions are whole: the stale one's differs from the latest.
    let json: serde_json::Value = serde_json::from_str(
        &mesh
            .braidctl(&[
                "--dir",
                &dir,
                "--operator",
                &admin,
                "-o",
                "json",
                "proxy-status",
            ])
            .unwrap(),
    )
    .unwrap();
    let s2 = json["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "shop/server2")
        .unwrap();
    assert_eq!(s2["current"], false, "{json}");
    assert_ne!(s2["appliedVersion"], s2["expectedVersion"], "{json}");

    // `version` names the replica and counts the proxies by version.
    let v = mesh
        .braidctl(&["--dir", &dir, "--operator", &admin, "version"])
        .unwrap();
    assert!(
        v.contains(&format!(
            "operator   operator-0: {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{v}"
    );
    assert!(
        v.contains(&format!("proxies    3 × {}", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    drop(client);
}

/// The rules `explain` is checked against: a header, a method with a path prefix, and
/// a catch-all.
const RULES: &str = "  - name: transfers
    match: [{headers: [{name: type, exact: transfer}]}]
    route: [{group: Group_2, weight: 100}]
  - name: admin-writes
    match: [{method: POST, path: {prefix: /admin}}]
    route: [{group: Group_2, weight: 100}]
  - name: default
    route: [{group: Group_1, weight: 100}]
";

/// `braidctl stat BY --window 0s` from the hub: requests since each proxy started, by
/// (namespace or service, name, rule:group).
fn stat(
    mesh: &Mesh,
    dir: &str,
    by: &str,
) -> std::collections::BTreeMap<(String, String, String), u64> {
    let out = mesh
        .braidctl(&["--dir", dir, "-o", "json", "stat", by, "--window", "0s"])
        .unwrap();
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    rows.iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
            let key = match by {
                "route" => (s("name"), s("rule"), s("group")),
                _ => (s("namespace"), s("name"), String::new()),
            };
            (key, r["requests"].as_u64().unwrap())
        })
        .collect()
}

#[test]
fn explain_names_the_rule_and_group_the_proxy_actually_uses() {
    let (mesh, client, _server, _server2) = routed_mesh(&["--name", "server2"], RULES);
    let dir = mesh.operator().unwrap().source_dir().display().to_string();
    let methods = ["GET", "POST", "PUT"];
    let paths = ["/", "/admin", "/admin/users", "/adminx", "/api/admin"];
    let types = [None, Some("transfer"), Some("refund")];
    // 20 requests, spread over the combinations by a fixed stride (reproducible).
    let mut seen_rules = std::collections::BTreeSet::new();
    let routed_before = stat(&mesh, &dir, "route");
    let served_before = stat(&mesh, &dir, "pod");
    let mut routed = std::collections::BTreeMap::<(String, String), u64>::new();
    let mut served = std::collections::BTreeMap::<String, u64>::new();
    for i in 0..20usize {
        let method = methods[(i * 7) % methods.len()];
        let path = paths[(i * 3) % paths.len()];
        let kind = types[(i * 5 + i / 3) % types.len()];
        let mut args = vec![
            "--dir", &dir, "-o", "json", "explain", "request", "client", "--to", "payments",
            "--method", method, "--path", path,
        ];
        let header_arg = kind.map(|k| format!("type={k}"));
        if let Some(h) = &header_arg {
            args.extend(["--header", h.as_str()]);
        }
        let explained: serde_json::Value =
            serde_json::from_str(&client.braidctl(&args).unwrap()).unwrap();
        let outbound = &explained["caller"]["outbound"];
        let rule = outbound["rule"]
            .as_str()
            .unwrap_or_else(|| panic!("{explained}"));
        let groups: Vec<&str> = outbound["groups"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["percent"].as_f64() == Some(100.0))
            .filter_map(|g| g["name"].as_str())
            .collect();
        assert_eq!(
            groups.len(),
            1,
            "one group takes every request: {explained}"
        );

        // What the proxy actually does with the same request.
        let mut get = vec!["get", "payments:80", "--method", method, "--path", path];
        let header = kind.map(|k| format!("type: {k}"));
        if let Some(h) = &header {
            get.extend(["--header", h.as_str()]);
        }
        let answer = client.app(&get).unwrap();
        let served_by = match answer.as_str() {
            "200 server" => "Group_1",
            "200 server2" => "Group_2",
            other => panic!("request {method} {path} {kind:?}: {other}"),
        };
        assert_eq!(
            groups[0], served_by,
            "{method} {path} type={kind:?}: explain says {rule} → {}, the proxy sent it to {served_by}",
            groups[0]
        );
        // Every rule before the chosen one is listed as not matching, with a reason.
        let rules = outbound["rules"].as_array().unwrap();
        assert_eq!(rules.last().unwrap()["name"], rule, "{explained}");
        for r in &rules[..rules.len() - 1] {
            assert_eq!(r["matched"], false, "{explained}");
            assert!(
                !r["why"].as_str().unwrap_or_default().is_empty(),
                "{explained}"
            );
        }
        seen_rules.insert(rule.to_owned());
        *routed
            .entry((rule.to_owned(), served_by.to_owned()))
            .or_default() += 1;
        let pod = if served_by == "Group_1" {
            "server"
        } else {
            "server2"
        };
        *served.entry(pod.to_owned()).or_default() += 1;
    }
    // braidctl stat, from the proxies' own metrics, counts what was sent: by rule and
    // group on the caller's side, by pod on the servers'.
    let routed_after = stat(&mesh, &dir, "route");
    let mut counted = std::collections::BTreeMap::new();
    for (k, n) in &routed_after {
        let new = n - routed_before.get(k).copied().unwrap_or(0);
        if new > 0 && k.0 == "payments:80" {
            counted.insert((k.1.clone(), k.2.clone()), new);
        }
    }
    assert_eq!(counted, routed);
    let served_after = stat(&mesh, &dir, "pod");
    for (pod, n) in &served {
        let key = ("shop".to_owned(), pod.clone(), String::new());
        let before = served_before.get(&key).copied().unwrap_or(0);
        assert_eq!(
            served_after.get(&key).copied().unwrap_or(0) - before,
            *n,
            "{pod}"
        );
    }
    // The generated requests exercised every rule.
    assert_eq!(
        seen_rules.into_iter().collect::<Vec<_>>(),
        ["admin-writes", "default", "transfers"]
    );

    // In words, for a person.
    let text = client
        .braidctl(&[
            "--dir",
            &dir,
            "explain",
            "request",
            "client",
            "--to",
            "payments",
            "--path",
            "/",
            "--header",
            "type=refund",
        ])
        .unwrap();
    println!("$ braidctl explain request client --to payments --header type=refund\n{text}");
    assert!(
        text.contains("ROUTE     TrafficRoute shop/payments"),
        "{text}"
    );
    assert!(text.contains("✘ rule transfers: "), "{text}");
    assert!(text.contains("✔ rule default: "), "{text}");
    assert!(text.contains("GOES TO   group Group_1 (100%): "), "{text}");

    // Asked of another pod, braidctl says whose proxy it reached.
    let err = client
        .braidctl(&[
            "--dir", &dir, "explain", "request", "server", "--to", "payments",
        ])
        .unwrap_err()
        .to_string();
    assert!(err.contains("is shop/client's, not server's"), "{err}");
}

/// `braidctl explain inbound server --port 8080` in `server`'s netns, for a plaintext
/// caller at `address`, with `extra` arguments.
fn explain_inbound(server: &Pod, dir: &str, address: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "--dir",
        dir,
        "explain",
        "inbound",
        "server",
        "--port",
        "8080",
        "--address",
        address,
    ];
    args.extend(extra);
    server.braidctl(&args).unwrap()
}

#[test]
fn explain_inbound_agrees_with_what_an_enforced_access_policy_does() {
    let (mesh, client, server) = mesh();
    let op = mesh.operator().unwrap();
    let dir = op.source_dir().display().to_string();
    op.write_resource(
        "access.yaml",
        "apiVersion: braid.dev/v1alpha1
kind: AccessPolicy
metadata: {name: no-admin-writes, namespace: shop}
spec:
  selector: {matchLabels: {app: payments}}
  ports: [8080]
  action: Deny
  mode: Enforce
  rules:
  - name: admin-writes
    http: {methods: [POST], paths: [{prefix: /admin}]}
",
    )
    .unwrap();
    wait_until("the server's proxy to enforce the policy", 20, || {
        shop::access_mode(&server, "shop/no-admin-writes") == "Enforce"
    });
    let client_ip = client.ip.to_string();
    for (method, path) in [
        ("POST", "/admin/users"),
        ("GET", "/admin/users"),
        ("POST", "/adminx"),
    ] {
        // What the server's proxy says it would do with the client's request...
        let explained: serde_json::Value = serde_json::from_str(&explain_inbound(
            &server,
            &dir,
            &client_ip,
            &["-o", "json", "--method", method, "--path", path],
        ))
        .unwrap();
        let allowed = explained["inbound"]["allowed"].as_bool().unwrap();
        // ...and what it does.
        let answer = client
            .app(&["get", "payments:80", "--method", method, "--path", path])
            .unwrap();
        let served = answer.starts_with("200 ");
        assert_eq!(
            allowed, served,
            "{method} {path}: explain says allowed={allowed}, the request got {answer}: {explained}"
        );
        if !allowed {
            assert_eq!(
                explained["inbound"]["policies"][0]["matchedRule"], "admin-writes",
                "{explained}"
            );
            assert!(answer.starts_with("403 "), "{answer}");
        }
    }
    let text = explain_inbound(
        &server,
        &dir,
        &client_ip,
        &["-X", "POST", "--path", "/admin"],
    );
    println!("$ braidctl explain inbound server --port 8080 -X POST --path /admin\n{text}");
    assert!(
        text.contains("REFUSED: denied by AccessPolicy shop/no-admin-writes"),
        "{text}"
    );
}
