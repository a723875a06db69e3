//! The real operator (directory source) and the real proxy over loopback: configs
//! arrive and follow file changes, only the right proxy gets a pod's config, and an
//! invalid TrafficRoute is reported while proxies keep their config.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Instant;

use support::{Operator, eventually};

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-0, namespace: shop, ips: [10.0.0.1], labels: {app: payments, zone: a}, serviceAccount: payments}
- {name: checkout-0, namespace: shop, ips: [10.0.0.2], labels: {app: checkout}, serviceAccount: checkout, meshed: false}
"#;

const PAYMENTS_TOKEN: &str = "payments-token-0123456789";
const CHECKOUT_TOKEN: &str = "checkout-token-0123456789";

fn route(timeout: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: payments, namespace: shop}}\nspec:\n  host: payments\n  groups: [{{name: zone-a, labels: {{zone: a}}}}]\n  rules: [{{name: all, timeout: {timeout}}}]\n"
    )
}

/// The endpoint addresses of `service`'s group `group` in a config dump.
fn group_addresses(dump: &serde_json::Value, service: &str, group: &str) -> Option<Vec<String>> {
    let svc = dump["services"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == service)?;
    let g = svc["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)?;
    Some(
        g["endpoints"]
            .as_array()?
            .iter()
            .map(|e| e["address"].as_str().unwrap().to_string())
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_change_reaches_the_proxy_and_is_reported_back() {
    let op = Operator::start(REGISTRY).await;
    let proxy = op.proxy("shop", "payments-0", PAYMENTS_TOKEN);
    // On demand, the proxy holds the services its app calls: as its first connection
    // to payments' VIP would, ask for it.
    let found = op
        .discover("shop", "payments-0", PAYMENTS_TOKEN, "10.96.0.10")
        .await;
    assert_eq!(found.as_deref(), Some("shop/payments"));
    eventually("the first config in the proxy", || async {
        group_addresses(&proxy.config_dump().await, "payments", "(default)")
            == Some(vec!["10.0.0.1".into()])
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["node"]["identity"],
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
    assert_eq!(dump["inbound"]["ports"][0]["port"], 8080);

    // A new pod behind the service: measure until the proxy holds it.
    let started = Instant::now();
    op.write(
        "registry.yaml",
        &format!("{REGISTRY}- {{name: payments-1, namespace: shop, ips: [10.0.0.3], labels: {{app: payments}}, serviceAccount: payments}}\n"),
    );
    eventually("the new endpoint in the proxy", || async {
        group_addresses(&proxy.config_dump().await, "payments", "(default)")
            .is_some_and(|a| a.contains(&"10.0.0.3".to_string()))
    })
    .await;
    println!(
        "directory change → proxy config_dump: {} ms",
        started.elapsed().as_millis()
    );

    // A TrafficRoute groups the endpoints; its status counts the proxy once it applied.
    op.write("route.yaml", &route("2s"));
    eventually("the route's group in the proxy", || async {
        group_addresses(&proxy.config_dump().await, "payments", "zone-a")
            == Some(vec!["10.0.0.1".into()])
    })
    .await;
    eventually(
        // The route reaches the proxies holding payments: payments-0's, which found it.
        // payments-1 runs no proxy here, so holds nothing anyone knows of.
        "status: accepted, applied by the one proxy holding payments",
        || async {
            op.status("TrafficRoute", "shop", "payments")
                .is_some_and(|s| {
                    s["status"]["conditions"][0]["status"] == "True"
                        && s["status"]["proxies"]["targeted"] == 1
                        && s["status"]["proxies"]["applied"] == 1
                })
        },
    )
    .await;
    let version = proxy.config_dump().await["version"].clone();

    // An invalid edit: reported with its field path; the proxy keeps its config.
    op.write("route.yaml", &route("soon"));
    eventually("status: not accepted, naming the field", || async {
        op.status("TrafficRoute", "shop", "payments")
            .is_some_and(|s| {
                let c = &s["status"]["conditions"][0];
                s["status"]["observedGeneration"] == 2
                    && c["status"] == "False"
                    && c["reason"] == "Invalid"
                    && c["message"]
                        .as_str()
                        .unwrap()
                        .contains("spec.rules[0].timeout")
            })
    })
    .await;
    let dump = proxy.config_dump().await;
    assert_eq!(
        dump["version"], version,
        "the proxy keeps the last valid config"
    );
    assert_eq!(
        group_addresses(&dump, "payments", "zone-a"),
        Some(vec!["10.0.0.1".into()])
    );

    // Deleted: its groups leave the proxy's config and its status file goes.
    std::fs::remove_file(op.dir.path().join("route.yaml")).unwrap();
    eventually("the route's groups gone from the proxy", || async {
        group_addresses(&proxy.config_dump().await, "payments", "zone-a").is_none()
    })
    .await;
    eventually("the route's status file removed", || async {
        op.status("TrafficRoute", "shop", "payments").is_none()
    })
    .await;

    let metrics = support::admin_get(op.admin, "/metrics").await.1;
    assert!(
        metrics.contains("braid_operator_connected_proxies 1"),
        "{metrics}"
    );
}

/// A counter's value in the operator's metrics text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_the_proxy_as_a_delta_and_leaves_it_with_the_whole_config() {
    // A mesh of 30 services besides payments, so a whole config is far larger than one
    // service's change.
    let services: String = (0..30)
        .map(|i| format!("- {{name: orders-{i}, namespace: shop, vips: [10.96.1.{i}], selector: {{app: orders-{i}}}, ports: [{{port: 80, protocol: http}}]}}\n"))
        .collect();
    let workloads: String = (0..30)
        .map(|i| format!("- {{name: orders-{i}, namespace: shop, ips: [10.1.0.{i}], labels: {{app: orders-{i}}}, serviceAccount: orders, meshed: false}}\n"))
        .collect();
    let registry = REGISTRY
        .replace("workloads:\n", &format!("{services}workloads:\n"))
        .replace("meshed: false}\n", &format!("meshed: false}}\n{workloads}"));
    let op = Operator::start(&registry).await;
    let proxy = op.proxy_with("shop", "payments-0", PAYMENTS_TOKEN, &["--services", "all"]);
    eventually("the first config in the proxy", || async {
        proxy.config_dump().await["services"]
            .as_array()
            .is_some_and(|s| s.len() == 31)
    })
    .await;
    let metrics = support::admin_get(op.admin, "/metrics").await.1;
    let whole = counter(&metrics, "braid_operator_config_bytes_total");
    assert_eq!(counter(&metrics, "braid_operator_config_deltas_total"), 0);

    // A second pod behind one service.
    op.write(
        "registry.yaml",
        &registry.replace(
            "labels: {app: orders-7}, serviceAccount: orders, meshed: false}\n",
            "labels: {app: orders-7}, serviceAccount: orders, meshed: false}\n- {name: orders-7b, namespace: shop, ips: [10.1.1.7], labels: {app: orders-7}, serviceAccount: orders, meshed: false}\n",
        ),
    );
    eventually("the new endpoint in the proxy", || async {
        group_addresses(&proxy.config_dump().await, "orders-7", "(default)")
            .is_some_and(|a| a.contains(&"10.1.1.7".to_string()))
    })
    .await;
    let metrics = support::admin_get(op.admin, "/metrics").await.1;
    assert_eq!(counter(&metrics, "braid_operator_config_deltas_total"), 1);
    let sent = counter(&metrics, "braid_operator_config_bytes_total") - whole;
    assert!(
        sent * 10 < whole,
        "the delta ({sent} B) is a fraction of the whole config ({whole} B)"
    );

    // What the proxy holds now is exactly what the operator would send it whole.
    let (status, _, line) = op
        .stream_get(&[
            ("authorization", &format!("Bearer {PAYMENTS_TOKEN}")),
            ("x-braid-pod", "shop/payments-0"),
        ])
        .await;
    assert_eq!(status, 200);
    let whole: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(proxy.config_dump().await, whole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_on_demand_proxy_holds_what_it_called_and_hears_only_of_that() {
    let services: String = (0..5)
        .map(|i| format!("- {{name: orders-{i}, namespace: shop, vips: [10.96.1.{i}], selector: {{app: orders-{i}}}, ports: [{{port: 80, protocol: http}}]}}\n"))
        .collect();
    let workloads = |extra: &str| -> String {
        let pods: String = (0..5)
            .map(|i| format!("- {{name: orders-{i}, namespace: shop, ips: [10.1.0.{i}], labels: {{app: orders-{i}}}, serviceAccount: orders, meshed: false}}\n"))
            .collect();
        REGISTRY
            .replace("workloads:\n", &format!("{services}workloads:\n"))
            .replace(
                "meshed: false}\n",
                &format!("meshed: false}}\n{pods}{extra}"),
            )
    };
    let op = Operator::start(&workloads("")).await;
    let proxy = op.proxy("shop", "payments-0", PAYMENTS_TOKEN);
    proxy.first_config().await;
    assert!(
        proxy.services().await.is_empty(),
        "a first config, with no service"
    );
    assert_eq!(
        op.discover("shop", "payments-0", PAYMENTS_TOKEN, "10.96.1.3")
            .await
            .as_deref(),
        Some("shop/orders-3")
    );
    assert_eq!(
        op.discover("shop", "payments-0", PAYMENTS_TOKEN, "203.0.113.9")
            .await,
        None,
        "not a mesh service: it passes through"
    );
    eventually("orders-3, and only it, in the proxy", || async {
        proxy.services().await == ["orders-3"]
    })
    .await;
    let metrics = |op: &Operator| {
        let op = op.admin;
        async move { support::admin_get(op, "/metrics").await.1 }
    };
    let before = metrics(&op).await;
    // Another service gains an endpoint: nothing reaches this proxy.
    op.write(
        "registry.yaml",
        &workloads("- {name: orders-1b, namespace: shop, ips: [10.1.1.1], labels: {app: orders-1}, serviceAccount: orders, meshed: false}\n"),
    );
    eventually("the operator to compile the change", || async {
        counter(&metrics(&op).await, "braid_operator_compile_seconds_count")
            > counter(&before, "braid_operator_compile_seconds_count")
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let after = metrics(&op).await;
    assert_eq!(
        counter(&after, "braid_operator_config_bytes_total"),
        counter(&before, "braid_operator_config_bytes_total"),
        "a change to a service it does not call sends it nothing"
    );
    // The one it calls gains an endpoint: only that service travels, as a delta.
    let version = proxy.config_dump().await["version"].clone();
    op.write(
        "registry.yaml",
        &workloads("- {name: orders-3b, namespace: shop, ips: [10.1.1.3], labels: {app: orders-3}, serviceAccount: orders, meshed: false}\n"),
    );
    eventually("the new endpoint in the proxy", || async {
        group_addresses(&proxy.config_dump().await, "orders-3", "(default)")
            .is_some_and(|a| a.contains(&"10.1.1.3".to_string()))
    })
    .await;
    assert_ne!(proxy.config_dump().await["version"], version);
    let sent = counter(&metrics(&op).await, "braid_operator_config_bytes_total")
        - counter(&after, "braid_operator_config_bytes_total");
    assert!(sent < 4096, "{sent} bytes for one endpoint");
    assert_eq!(
        counter(&metrics(&op).await, "braid_operator_config_deltas_total"),
        counter(&after, "braid_operator_config_deltas_total") + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_only_its_own_config() {
    let op = Operator::start(REGISTRY).await;
    let pod = ("x-braid-pod", "shop/payments-0");

    let (status, reason, _) = op.stream_get(&[pod]).await;
    assert_eq!(status, 401);
    assert!(reason.unwrap().contains("no bearer token"));

    let (status, reason, _) = op
        .stream_get(&[pod, ("authorization", "Bearer not-a-token")])
        .await;
    assert_eq!(status, 401);
    assert_eq!(
        reason.as_deref(),
        Some("token refused: unknown bootstrap token")
    );

    // checkout's token asking for payments' config.
    let bearer = format!("Bearer {CHECKOUT_TOKEN}");
    let (status, reason, body) = op.stream_get(&[pod, ("authorization", &bearer)]).await;
    assert_eq!(status, 403, "{body}");
    assert!(reason.unwrap().contains("runs as shop/payments"));

    let bearer = format!("Bearer {PAYMENTS_TOKEN}");
    let (status, reason, _) = op
        .stream_get(&[("x-braid-pod", "shop/nobody"), ("authorization", &bearer)])
        .await;
    assert_eq!(status, 404);
    assert!(reason.unwrap().contains("shop/nobody is not known"));

    let (status, _, body) = op.stream_get(&[pod, ("authorization", &bearer)]).await;
    assert_eq!(status, 200);
    let config: serde_json::Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(config["node"]["workload"], "payments-0");

    // A reconnect with the version it holds gets nothing until something changes.
    let version = config["version"].as_str().unwrap();
    let (status, _, body) = op
        .stream_get(&[
            pod,
            ("authorization", &bearer),
            ("x-braid-version", version),
        ])
        .await;
    assert_eq!(status, 200);
    assert!(body.trim().is_empty(), "nothing new to send, got {body:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_starts_with_what_its_siblings_call() {
    // payments-1 is a replica of payments-0 from a later rollout; audit-0 shares the
    // identity but is another workload.
    let registry = REGISTRY
        .replace(
            "ports: [{port: 80, targetPort: 8080, protocol: http}]}\n",
            "ports: [{port: 80, targetPort: 8080, protocol: http}]}\n- {name: orders, namespace: shop, vips: [10.96.1.1], selector: {app: orders}, ports: [{port: 80, protocol: http}]}\n",
        )
        .replace(
            "labels: {app: payments, zone: a}, serviceAccount: payments}\n",
            "labels: {app: payments, zone: a, pod-template-hash: aaa}, serviceAccount: payments}\n\
             - {name: payments-1, namespace: shop, ips: [10.0.0.3], labels: {app: payments, zone: a, pod-template-hash: bbb}, serviceAccount: payments}\n\
             - {name: audit-0, namespace: shop, ips: [10.0.0.4], labels: {app: audit}, serviceAccount: payments}\n\
             - {name: orders-0, namespace: shop, ips: [10.1.0.1], labels: {app: orders}, serviceAccount: orders, meshed: false}\n",
        );
    let op = Operator::start(&registry).await;
    let first = op.proxy("shop", "payments-0", PAYMENTS_TOKEN);
    op.discover("shop", "payments-0", PAYMENTS_TOKEN, "10.96.1.1")
        .await;
    eventually("orders in the first replica's proxy", || async {
        first.services().await == ["orders"]
    })
    .await;
    // Its report (sent as it applies) names what it holds; then a new replica starts.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let second = op.proxy("shop", "payments-1", PAYMENTS_TOKEN);
    let other = op.proxy("shop", "audit-0", PAYMENTS_TOKEN);
    second.first_config().await;
    assert_eq!(
        second.services().await,
        ["orders"],
        "seeded with what its sibling calls, before any call of its own"
    );
    other.first_config().await;
    assert!(
        other.services().await.is_empty(),
        "same identity, another workload: nothing seeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_no_longer_called_is_let_go_of() {
    let registry = REGISTRY.replace(
        "ports: [{port: 80, targetPort: 8080, protocol: http}]}\n",
        "ports: [{port: 80, targetPort: 8080, protocol: http}]}\n- {name: orders, namespace: shop, vips: [10.96.1.1], selector: {app: orders}, ports: [{port: 80, protocol: http}]}\n",
    );
    let op = Operator::start(&registry).await;
    let proxy = op.proxy_with(
        "shop",
        "payments-0",
        PAYMENTS_TOKEN,
        &["--services-idle", "2s"],
    );
    op.discover("shop", "payments-0", PAYMENTS_TOKEN, "10.96.1.1")
        .await;
    let holds_orders = || async { proxy.services().await.contains(&"orders".to_owned()) };
    eventually("orders in the proxy", holds_orders).await;
    // Never called: after 2 s the proxy lets go of it, and its stream stops sending it.
    let held_at = Instant::now();
    eventually("orders let go of", || async { !holds_orders().await }).await;
    assert!(held_at.elapsed() >= std::time::Duration::from_millis(500));
    // A change to orders no longer reaches the proxy.
    let version = proxy.config_dump().await["version"].clone();
    op.write(
        "registry.yaml",
        &registry.replace(
            "- {name: checkout-0",
            "- {name: orders-0, namespace: shop, ips: [10.1.0.1], labels: {app: orders}, serviceAccount: orders, meshed: false}\n- {name: checkout-0",
        ),
    );
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(proxy.config_dump().await["version"], version);
    assert!(!holds_orders().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_missed_a_change_is_sent_what_changed_not_its_whole_view() {
    let op = &Operator::start(REGISTRY).await;
    let bearer = &format!("Bearer {PAYMENTS_TOKEN}");
    let connect = |version: Option<&str>, on_demand: bool| {
        let mut headers = vec![
            ("x-braid-pod", "shop/payments-0".to_string()),
            ("authorization", bearer.clone()),
            (
                "x-braid-accept",
                if on_demand {
                    "delta,on-demand"
                } else {
                    "delta"
                }
                .to_string(),
            ),
        ];
        if on_demand {
            headers.push(("x-braid-services", "shop/payments".to_string()));
        }
        if let Some(v) = version {
            headers.push(("x-braid-version", v.to_string()));
        }
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, _, line) = op.stream_get(&headers).await;
            assert_eq!(status, 200);
            serde_json::from_str::<serde_json::Value>(line.trim()).unwrap()
        }
    };
    // What a proxy holding every service, and one holding payments only, hold now.
    let whole_v1 = connect(None, false).await;
    let view_v1 = connect(None, true).await;

    // While they are away, payments gains a pod.
    op.write(
        "registry.yaml",
        &REGISTRY.replace(
            "- {name: checkout-0",
            "- {name: payments-1, namespace: shop, ips: [10.0.0.9], labels: {app: payments}, serviceAccount: payments}\n- {name: checkout-0",
        ),
    );
    eventually("the change compiled", || async {
        connect(None, false).await["version"] != whole_v1["version"]
    })
    .await;
    let whole_v2 = connect(None, false).await;
    let view_v2 = connect(None, true).await;

    // Each reconnects naming what it holds: it is sent a delta from that, which makes
    // exactly what a new proxy would be sent whole.
    for (held, now, on_demand) in [(&whole_v1, &whole_v2, false), (&view_v1, &view_v2, true)] {
        let line = connect(held["version"].as_str(), on_demand).await;
        let delta = &line["delta"];
        assert_eq!(delta["base"], held["version"], "{line}");
        assert_eq!(delta["version"], now["version"]);
        let delta: braid_api::control::delta::ConfigDelta =
            serde_json::from_value(delta.clone()).unwrap();
        let held: braid_api::config::ProxyConfig = serde_json::from_value(held.clone()).unwrap();
        let made = delta.apply(&held).unwrap();
        assert_eq!(serde_json::to_value(&made).unwrap(), *now);
    }

    // A version this operator never compiled gets the whole view.
    let line = connect(Some("0000000000000000"), false).await;
    assert_eq!(line, whole_v2);
}
