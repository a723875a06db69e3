//! Table tests of the compiler, with snapshots written as the directory source's YAML.

use std::sync::Arc;

use braid_api::config::{DEFAULT_GROUP, Protocol, ProxyConfig};

use super::*;
use crate::registry::{Progress, carry_accepted};

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
- {name: ledger, namespace: shop, vips: [10.96.0.11], selector: {app: ledger}, ports: [{port: 9090, protocol: http2}]}
- {name: empty, namespace: shop, vips: [10.96.0.12], selector: {app: nobody}, ports: [{port: 80}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments, zone: a}, serviceAccount: payments}
- {name: payments-b, namespace: shop, ips: [10.0.0.2], labels: {app: payments, zone: b}, serviceAccount: payments}
- {name: payments-c, namespace: shop, ips: [10.0.0.3], labels: {app: payments, zone: c}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
- {name: legacy, namespace: shop, ips: [10.0.0.10], labels: {app: ledger}, meshed: false}
"#;

fn route(groups: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: payments, namespace: shop}}\nspec:\n  host: payments\n  groups: {groups}\n  rules: [{{name: all}}]\n"
    )
}

fn snapshot(registry: &str, resources: &str) -> Snapshot {
    crate::source::dir::snapshot_of(registry, resources)
}

/// A workload's whole config, as a proxy holding every service has it.
trait Whole {
    fn whole(&self, pod: &ObjectKey) -> ProxyConfig;
}

impl Whole for Output {
    fn whole(&self, pod: &ObjectKey) -> ProxyConfig {
        self.catalog.whole(pod, &self.configs[pod])
    }
}

fn service<'a>(cfg: &'a ProxyConfig, name: &str) -> &'a braid_api::config::Service {
    cfg.services.iter().find(|s| s.name == name).unwrap()
}

/// Group name → endpoint addresses, in config order.
fn groups(cfg: &ProxyConfig, name: &str) -> Vec<(String, Vec<String>)> {
    service(cfg, name)
        .groups
        .iter()
        .map(|g| {
            let eps = g.endpoints.iter().map(|e| e.address.to_string()).collect();
            (g.name.clone(), eps)
        })
        .collect()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("shop", name)
}

#[test]
fn every_meshed_workload_gets_a_config_with_its_identity_and_ports() {
    let out = compile(&snapshot(REGISTRY, ""), &Options::default());
    let names: Vec<_> = out.configs.keys().map(|k| k.name.as_str()).collect();
    assert_eq!(
        names,
        ["checkout", "payments-a", "payments-b", "payments-c"],
        "legacy is not meshed"
    );
    let cfg = &out.whole(&key("payments-a"));
    assert_eq!(cfg.node.service_account, "payments");
    assert_eq!(
        cfg.node.identity.as_ref().unwrap().0,
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
    let ports: Vec<_> = cfg
        .inbound
        .ports
        .iter()
        .map(|p| (p.port, p.protocol))
        .collect();
    assert_eq!(ports, [(8080, Protocol::Http)]);
    assert!(
        out.whole(&key("checkout")).inbound.ports.is_empty(),
        "backs no service"
    );
}

#[test]
fn table_of_groupings() {
    struct Case {
        name: &'static str,
        route_groups: Option<&'static str>,
        want: Vec<(&'static str, Vec<&'static str>)>,
    }
    let cases = [
        Case {
            name: "no TrafficRoute: one default group of every endpoint",
            route_groups: None,
            want: vec![(DEFAULT_GROUP, vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"])],
        },
        Case {
            name: "groups by label; unclaimed endpoints stay reachable in the default group",
            route_groups: Some(
                "[{name: Group_1, labels: {zone: a}}, {name: Group_2, labels: {zone: b}}]",
            ),
            want: vec![
                ("Group_1", vec!["10.0.0.1"]),
                ("Group_2", vec!["10.0.0.2"]),
                (DEFAULT_GROUP, vec!["10.0.0.3"]),
            ],
        },
        Case {
            name: "overlapping selectors: a pod in both groups, no default group when all are claimed",
            route_groups: Some(
                "[{name: all, labels: {app: payments}}, {name: b, labels: {zone: b}}]",
            ),
            want: vec![
                ("all", vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
                ("b", vec!["10.0.0.2"]),
            ],
        },
        Case {
            name: "a group no pod matches is empty, not missing",
            route_groups: Some("[{name: gone, labels: {zone: z}}]"),
            want: vec![
                ("gone", vec![]),
                (DEFAULT_GROUP, vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
            ],
        },
    ];
    for case in cases {
        let resources = case.route_groups.map(route).unwrap_or_default();
        let out = compile(&snapshot(REGISTRY, &resources), &Options::default());
        let got = groups(&out.whole(&key("checkout")), "payments");
        let want: Vec<(String, Vec<String>)> = case
            .want
            .iter()
            .map(|(g, eps)| (g.to_string(), eps.iter().map(|e| e.to_string()).collect()))
            .collect();
        assert_eq!(got, want, "{}", case.name);
    }
}

#[test]
fn a_service_with_no_endpoints_is_still_known() {
    let out = compile(&snapshot(REGISTRY, ""), &Options::default());
    let cfg = &out.whole(&key("checkout"));
    assert_eq!(groups(cfg, "empty"), [(DEFAULT_GROUP.to_string(), vec![])]);
    assert_eq!(
        service(cfg, "empty").vips,
        ["10.96.0.12".parse::<std::net::IpAddr>().unwrap()]
    );
}

#[test]
fn a_pod_in_two_services_serves_both_ports() {
    let registry = REGISTRY.replace(
        "- {name: empty, namespace: shop, vips: [10.96.0.12], selector: {app: nobody}, ports: [{port: 80}]}",
        "- {name: payments-admin, namespace: shop, vips: [10.96.0.12], selector: {zone: a}, ports: [{port: 81, targetPort: 9000, protocol: tcp}, {port: 82, targetPort: 8080, protocol: http2}]}",
    );
    let out = compile(&snapshot(&registry, ""), &Options::default());
    let cfg = &out.whole(&key("payments-a"));
    let ports: Vec<_> = cfg
        .inbound
        .ports
        .iter()
        .map(|p| (p.port, p.protocol))
        .collect();
    // 8080 is http for one service and http2 for the other: left to detection.
    assert_eq!(ports, [(8080, Protocol::Detect), (9000, Protocol::Tcp)]);
    let eps: Vec<_> = groups(cfg, "payments-admin")[0].1.clone();
    assert_eq!(eps, ["10.0.0.1"]);
}

#[test]
fn unmeshed_endpoints_carry_no_identity() {
    let out = compile(&snapshot(REGISTRY, ""), &Options::default());
    let checkout = out.whole(&key("checkout"));
    let ledger = service(&checkout, "ledger");
    let ep = &ledger.groups[0].endpoints[0];
    assert!(!ep.meshed && ep.identity.is_none());
    let payments = service(&checkout, "payments");
    let ep = &payments.groups[0].endpoints[0];
    assert!(ep.meshed);
    assert_eq!(
        ep.identity.as_ref().unwrap().0,
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
}

#[test]
fn deleted_resources_disappear() {
    let mut compiler = Compiler::new(Options::default());
    let before = compiler.compile(&snapshot(
        REGISTRY,
        &route("[{name: a, labels: {zone: a}}]"),
    ));
    assert_eq!(
        groups(&before.whole(&key("checkout")), "payments")[0].0,
        "a"
    );
    // Route, a service and a workload deleted.
    let registry = REGISTRY
        .replace("- {name: empty, namespace: shop, vips: [10.96.0.12], selector: {app: nobody}, ports: [{port: 80}]}\n", "")
        .replace("- {name: payments-c, namespace: shop, ips: [10.0.0.3], labels: {app: payments, zone: c}, serviceAccount: payments}\n", "");
    let after = compiler.compile(&snapshot(&registry, ""));
    let cfg = &after.whole(&key("checkout"));
    assert_eq!(
        groups(cfg, "payments"),
        [(
            DEFAULT_GROUP.to_string(),
            vec!["10.0.0.1".to_string(), "10.0.0.2".to_string()]
        )]
    );
    assert!(cfg.services.iter().all(|s| s.name != "empty"));
    assert!(!after.configs.contains_key(&key("payments-c")));
    assert_ne!(cfg.version, before.whole(&key("checkout")).version);
}

#[test]
fn an_invalid_route_leaves_the_previous_groups_in_force() {
    let good = snapshot(REGISTRY, &route("[{name: a, labels: {zone: a}}]"));
    let mut bad = snapshot(
        REGISTRY,
        &route("[{name: a, labels: {zone: a}}]").replace(
            "rules: [{name: all}]",
            "rules: [{name: all, timeout: soon}]",
        ),
    );
    // Same object (same creation), new generation that does not validate.
    let k = key("payments");
    bad.traffic_routes.get_mut(&k).unwrap().created = good.traffic_routes[&k].created.clone();
    assert!(bad.traffic_routes[&k].current.is_err());
    carry_accepted(&good, &mut bad);
    let a = compile(&good, &Options::default());
    let b = compile(&bad, &Options::default());
    assert_eq!(
        a.whole(&key("checkout")).version,
        b.whole(&key("checkout")).version
    );
}

#[test]
fn the_oldest_route_defines_a_shared_group_name() {
    let mut snap = snapshot(REGISTRY, "");
    for (name, created, zone) in [
        ("newer", "2026-02-01T00:00:00Z", "b"),
        ("older", "2026-01-01T00:00:00Z", "a"),
    ] {
        let text = route(&format!("[{{name: g, labels: {{zone: {zone}}}}}]")).replace(
            "name: payments, namespace",
            &format!("name: {name}, namespace"),
        );
        let mut s = snapshot(REGISTRY, &text);
        let mut obs = s.traffic_routes.remove(&key(name)).unwrap();
        obs.created = Some(created.into());
        snap.traffic_routes.insert(key(name), obs);
    }
    let out = compile(&snap, &Options::default());
    assert_eq!(
        groups(&out.whole(&key("checkout")), "payments")[0],
        ("g".to_string(), vec!["10.0.0.1".to_string()])
    );
}

#[test]
fn versions_are_content_hashes() {
    let a = compile(&snapshot(REGISTRY, ""), &Options::default());
    let b = compile(&snapshot(REGISTRY, ""), &Options::default());
    for k in a.configs.keys() {
        assert_eq!(a.whole(k).version, b.whole(k).version);
        assert_eq!(a.whole(k).version.len(), 16);
    }
    assert_ne!(
        a.whole(&key("payments-a")).version,
        a.whole(&key("payments-b")).version
    );
    let other = Options {
        trust_domain: "example.org".into(),
        ..Default::default()
    };
    let c = compile(&snapshot(REGISTRY, ""), &other);
    assert_ne!(
        c.whole(&key("payments-a")).version,
        a.whole(&key("payments-a")).version
    );
}

#[test]
fn an_incremental_compile_rebuilds_only_what_changed_and_matches_a_full_one() {
    let mut compiler = Compiler::new(Options::default());
    let first = compiler.compile(&snapshot(REGISTRY, ""));
    assert_eq!(first.stats.services_compiled, 3);
    let same = compiler.compile(&snapshot(REGISTRY, ""));
    assert_eq!(
        same.stats,
        Stats {
            services_reused: 3,
            workloads_reused: 4,
            ..Default::default()
        }
    );
    assert!(Arc::ptr_eq(
        &first.configs[&key("checkout")],
        &same.configs[&key("checkout")]
    ));
    assert!(Arc::ptr_eq(&first.catalog.set, &same.catalog.set));

    // A label change on one pod touches the one service that selects it.
    let changed = REGISTRY.replace(
        "labels: {app: payments, zone: c}",
        "labels: {app: payments, zone: c, canary: \"true\"}",
    );
    let snap = snapshot(
        &changed,
        &route("[{name: canary, labels: {canary: \"true\"}}]"),
    );
    let inc = compiler.compile(&snap);
    assert_eq!(
        (inc.stats.services_compiled, inc.stats.services_reused),
        (1, 2)
    );
    let full = compile(&snap, &Options::default());
    for (k, cfg) in &full.configs {
        assert_eq!(**cfg, *inc.configs[k], "{k}");
    }
    assert!(full.catalog.set.services().eq(inc.catalog.set.services()));
}

const STEERING: &str = r#"apiVersion: braid.dev/v1alpha1
kind: TrafficRoute
metadata: {name: payments, namespace: shop}
spec:
  host: payments
  groups: [{name: Group_1, labels: {zone: a}}, {name: Group_2, labels: {zone: b}}]
  rules:
  - name: transfers
    match:
    - headers: [{name: type, exact: transfer}]
      method: POST
    route: [{group: Group_2, weight: 100}]
  - name: checkout-only
    match:
    - path: {prefix: /api}
      sourceLabels: {app: checkout}
    route: [{group: Group_1, weight: 100}]
  - name: default
    route: [{group: Group_1, weight: 90}, {group: Group_2, weight: 10}]
"#;

fn rule_names(cfg: &ProxyConfig) -> Vec<&str> {
    cfg.routes
        .iter()
        .flat_map(|r| r.rules.iter().map(|rule| rule.name.as_str()))
        .collect()
}

#[test]
fn rules_reach_callers_with_source_labels_resolved() {
    let out = compile(&snapshot(REGISTRY, STEERING), &Options::default());
    let checkout = &out.whole(&key("checkout"));
    assert_eq!(checkout.routes.len(), 1);
    let r = &checkout.routes[0];
    assert_eq!(
        (
            r.from.as_str(),
            r.service.as_str(),
            r.namespace.as_str(),
            r.port
        ),
        ("shop/payments", "payments", "shop", None)
    );
    assert_eq!(
        rule_names(checkout),
        ["transfers", "checkout-only", "default"]
    );
    let transfers = &r.rules[0];
    assert_eq!(transfers.matches[0].method.as_deref(), Some("POST"));
    assert_eq!(
        transfers.matches[0].headers[0].value,
        braid_api::config::routes::ValueMatch::Exact("transfer".into())
    );
    // A caller the sourceLabels exclude never sees that rule.
    let other = &out.whole(&key("payments-a"));
    assert_eq!(rule_names(other), ["transfers", "default"]);
    // What the operator sends, the proxy accepts: every group named exists.
    for pod in out.configs.keys() {
        braid_proxy::tables::Tables::build(out.whole(pod)).unwrap();
    }
}

#[test]
fn the_oldest_route_of_a_service_port_wins_and_the_other_is_reported() {
    let mut snap = snapshot(REGISTRY, "");
    for (name, created, rule) in [
        ("newer", "2026-02-01T00:00:00Z", "newer-rule"),
        ("older", "2026-01-01T00:00:00Z", "older-rule"),
    ] {
        let text = route("[]")
            .replace(
                "name: payments, namespace",
                &format!("name: {name}, namespace"),
            )
            .replace(
                "rules: [{name: all}]",
                &format!("rules: [{{name: {rule}}}]"),
            );
        let mut s = snapshot(REGISTRY, &text);
        let mut obs = s.traffic_routes.remove(&key(name)).unwrap();
        obs.created = Some(created.into());
        snap.traffic_routes.insert(key(name), obs);
    }
    let out = compile(&snap, &Options::default());
    assert_eq!(rule_names(&out.whole(&key("checkout"))), ["older-rule"]);
    // Without sourceLabels every caller holds the same copy.
    assert!(Arc::ptr_eq(
        &out.whole(&key("checkout")).routes,
        &out.whole(&key("payments-a")).routes
    ));
    assert_eq!(
        conflicts(&snap, "cluster.local"),
        [Conflict {
            loser: key("newer"),
            winner: key("older")
        }]
    );
}

#[test]
fn a_route_change_recompiles_callers_and_matches_a_full_compile() {
    let mut compiler = Compiler::new(Options::default());
    let before = compiler.compile(&snapshot(REGISTRY, STEERING));
    let changed = STEERING.replace(
        "weight: 90}, {group: Group_2, weight: 10}",
        "weight: 50}, {group: Group_2, weight: 50}",
    );
    let snap = snapshot(REGISTRY, &changed);
    let after = compiler.compile(&snap);
    assert_ne!(
        before.whole(&key("checkout")).version,
        after.whole(&key("checkout")).version
    );
    let full = compile(&snap, &Options::default());
    for (k, cfg) in &full.configs {
        assert_eq!(**cfg, *after.configs[k], "{k}");
    }
}

/// Compiles `resources` with the test registry; the output and checkout's rule `default`.
fn default_rule(resources: &str) -> (Output, braid_api::config::routes::Rule) {
    let out = compile(&snapshot(REGISTRY, resources), &Options::default());
    let rule = out.whole(&key("checkout")).routes[0]
        .rules
        .iter()
        .find(|r| r.name == "default")
        .unwrap()
        .clone();
    (out, rule)
}

#[test]
fn timeouts_and_faults_reach_the_rules_in_milliseconds() {
    let text = STEERING.replace(
        "  - name: default\n",
        "  - name: default\n    timeout: 1500ms\n    fault: {delay: {percent: 5, fixed: 200ms}, abort: {percent: 0.5, status: 503}}\n",
    );
    let (out, rule) = default_rule(&text);
    assert_eq!(rule.timeout_ms, Some(1500));
    let fault = rule.fault.unwrap();
    assert_eq!(
        (
            fault.delay.as_ref().unwrap().percent,
            fault.delay.as_ref().unwrap().fixed_ms
        ),
        (5.0, 200)
    );
    assert_eq!(
        (
            fault.abort.as_ref().unwrap().percent,
            fault.abort.as_ref().unwrap().status
        ),
        (0.5, 503)
    );
    for pod in out.configs.keys() {
        braid_proxy::tables::Tables::build(out.whole(pod)).unwrap();
    }
}

#[test]
fn retries_mirrors_and_rate_limits_reach_the_rules() {
    let text = STEERING.replace(
        "  - name: default\n",
        "  - name: default\n    timeout: 2s\n    retries: {attempts: 3, perTryTimeout: 250ms, \"on\": [5xx, connect-failure]}\n    mirror: {group: Group_2, percent: 5}\n    rateLimit: {requestsPerSecond: 100, burst: 20}\n",
    );
    let (out, rule) = default_rule(&text);
    use braid_api::config::routes::{Mirror, RateLimit, Retries, RetryOn};
    assert_eq!(
        rule.retries,
        Some(Retries {
            attempts: 3,
            per_try_timeout_ms: Some(250),
            on: vec![RetryOn::ServerError, RetryOn::ConnectFailure],
        })
    );
    assert_eq!(
        rule.mirror,
        Some(Mirror {
            group: "Group_2".into(),
            percent: 5.0
        })
    );
    assert_eq!(
        rule.rate_limit,
        Some(RateLimit {
            requests_per_second: 100,
            burst: Some(20)
        })
    );
    // What the operator writes, the proxy accepts.
    for pod in out.configs.keys() {
        braid_proxy::tables::Tables::build(out.whole(pod)).unwrap();
    }
}

#[test]
fn a_self_healing_gives_the_services_of_its_pods_outlier_detection() {
    let healing = "apiVersion: braid.dev/v1alpha1
kind: SelfHealing
metadata: {name: payments, namespace: shop}
spec:
  selector: {matchLabels: {app: payments}}
  outlierDetection:
    consecutiveErrors: 3
    errorRate: {threshold: 0.5, minRequests: 20, window: 10s}
    baseEjectionTime: 30s
    maxEjectionPercent: 34
";
    let out = compile(&snapshot(REGISTRY, healing), &Options::default());
    let cfg = &out.whole(&key("checkout"));
    let detection = service(cfg, "payments").outlier_detection.clone().unwrap();
    assert_eq!(
        (
            detection.consecutive_errors,
            detection.base_ejection_time_ms,
            detection.max_ejection_time_ms,
            detection.max_ejection_percent
        ),
        (3, 30_000, 300_000, 34)
    );
    assert_eq!(detection.error_rate.unwrap().window_ms, 10_000);
    // Services of other pods are not watched.
    assert_eq!(service(cfg, "ledger").outlier_detection, None);
    // What the operator writes, the proxy accepts.
    braid_proxy::tables::Tables::build(ProxyConfig::clone(cfg)).unwrap();
}

#[test]
fn a_self_healing_gives_its_workloads_overload_protection() {
    let healing = "apiVersion: braid.dev/v1alpha1
kind: SelfHealing
metadata: {name: payments, namespace: shop}
spec:
  selector: {matchLabels: {app: payments}}
  overloadProtection: {signal: cpu, target: 0.75, minLimit: 20, sampleperiod: 1s}
"
    .replace("sampleperiod", "samplePeriod");
    let out = compile(&snapshot(REGISTRY, &healing), &Options::default());
    let protection = out
        .whole(&key("payments-a"))
        .inbound
        .overload_protection
        .clone()
        .unwrap();
    use braid_api::config::overload::OverloadSignal;
    assert_eq!(
        (
            protection.signal,
            protection.target,
            protection.min_limit,
            protection.sample_period_ms
        ),
        (OverloadSignal::Cpu, 0.75, 20, 1000)
    );
    // The caller is not selected.
    assert_eq!(
        out.whole(&key("checkout")).inbound.overload_protection,
        None
    );
}

#[test]
fn a_quarantined_pod_is_in_no_config_until_its_label_goes() {
    let quarantined = REGISTRY.replace(
        "labels: {app: payments, zone: b}",
        "labels: {app: payments, zone: b, braid.dev/quarantined: \"true\"}",
    );
    let mut compiler = Compiler::new(Options::default());
    let out = compiler.compile(&snapshot(&quarantined, ""));
    let cfg = &out.whole(&key("checkout"));
    assert_eq!(
        groups(cfg, "payments"),
        [(
            DEFAULT_GROUP.to_string(),
            vec!["10.0.0.1".into(), "10.0.0.3".into()]
        )]
    );
    // Its own proxy still gets a config: it serves whoever still calls it directly.
    assert!(out.configs.contains_key(&key("payments-b")));
    let back = compiler.compile(&snapshot(REGISTRY, ""));
    assert_eq!(
        groups(&back.whole(&key("checkout")), "payments")[0].1.len(),
        3
    );
}

fn policy(name: &str, selector: &str, spec: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec: {{{selector}{spec}}}\n---\n"
    )
}

/// (inbound mode of `workload`, callers' view of its endpoint: mode and percent).
fn tls_of(out: &Output, workload: &str, ip: &str) -> (TlsMode, Option<(TlsMode, u8)>) {
    let cfg = &out.whole(&key(workload));
    let inbound = cfg
        .inbound
        .tls
        .as_ref()
        .map_or(TlsMode::Disabled, |t| t.mode);
    let caller = &out.whole(&key("checkout"));
    let endpoint = caller
        .services
        .iter()
        .flat_map(|s| s.groups.iter().flat_map(|g| &g.endpoints))
        .find(|e| e.address.to_string() == ip)
        .unwrap();
    (
        inbound,
        endpoint.tls.as_ref().map(|t| (t.mode, t.rollout_percent)),
    )
}

#[test]
fn encryption_policies_apply_by_precedence_with_port_overrides_and_rollout() {
    let resources = [
        policy("ns-wide", "", "mode: Permissive, rollout: {percent: 25}"),
        policy(
            "zone-a",
            "selector: {matchLabels: {zone: a}}, ",
            "mode: Strict, portOverrides: [{port: 9090, mode: Disabled}]",
        ),
    ]
    .concat();
    let out = compile(&snapshot(REGISTRY, &resources), &Options::default());
    // The selecting policy wins over the namespace-wide one; Strict means every caller.
    assert_eq!(
        tls_of(&out, "payments-a", "10.0.0.1"),
        (TlsMode::Strict, Some((TlsMode::Strict, 100)))
    );
    let a = out.whole(&key("payments-a")).inbound.tls.clone().unwrap();
    assert_eq!(a.mode_for(9090), TlsMode::Disabled, "port override");
    assert_eq!(
        tls_of(&out, "payments-b", "10.0.0.2"),
        (TlsMode::Permissive, Some((TlsMode::Permissive, 25)))
    );
    // The unmeshed endpoint gets no TLS: nothing to terminate it.
    let caller = &out.whole(&key("checkout"));
    let legacy = service(caller, "ledger").groups[0].endpoints[0].clone();
    assert_eq!((legacy.meshed, legacy.tls), (false, None));

    // Without policies, the mesh-wide default.
    let plain = compile(&snapshot(REGISTRY, ""), &Options::default());
    assert_eq!(
        tls_of(&plain, "payments-a", "10.0.0.1"),
        (TlsMode::Disabled, None)
    );
    let opts = Options {
        default_tls_mode: TlsMode::Permissive,
        ..Options::default()
    };
    let permissive = compile(&snapshot(REGISTRY, ""), &opts);
    assert_eq!(
        tls_of(&permissive, "payments-a", "10.0.0.1"),
        (TlsMode::Permissive, Some((TlsMode::Permissive, 100)))
    );
}

#[test]
fn an_automatic_rollout_takes_its_percent_and_strictness_from_its_recorded_status() {
    let resources = policy(
        "auto",
        "",
        "mode: Permissive, rollout: {percent: 0, auto: {steps: [10, 50, 100], interval: 1m, enforceStrict: true}}",
    );
    let mut snap = snapshot(REGISTRY, &resources);
    let mut compiler = Compiler::new(Options::default());
    let before = compiler.compile(&snap);
    assert_eq!(
        tls_of(&before, "payments-a", "10.0.0.1"),
        (TlsMode::Permissive, Some((TlsMode::Permissive, 0))),
        "nothing recorded: the rollout's start"
    );
    // The leader's step reaches the compiler only as its status, read back by the source.
    snap.rollout_status.insert(
        key("auto"),
        Progress {
            percent: 50,
            strict: false,
        },
    );
    let halfway = compiler.compile(&snap);
    assert_eq!(
        tls_of(&halfway, "payments-a", "10.0.0.1"),
        (TlsMode::Permissive, Some((TlsMode::Permissive, 50)))
    );
    snap.rollout_status.insert(
        key("auto"),
        Progress {
            percent: 100,
            strict: true,
        },
    );
    let extra = Extra {
        trust_bundle: "-----BEGIN CERTIFICATE-----\n".into(),
    };
    let strict = compiler.compile_with(&snap, &extra);
    assert_eq!(
        tls_of(&strict, "payments-a", "10.0.0.1"),
        (TlsMode::Strict, Some((TlsMode::Strict, 100)))
    );
    assert_eq!(
        &*strict.whole(&key("payments-a")).trust_bundle,
        "-----BEGIN CERTIFICATE-----\n"
    );
    assert_ne!(
        strict.whole(&key("payments-a")).version,
        halfway.whole(&key("payments-a")).version
    );
    // A step back is recorded like any step, and served like one.
    snap.rollout_status.insert(
        key("auto"),
        Progress {
            percent: 10,
            strict: false,
        },
    );
    assert_eq!(
        tls_of(&compiler.compile(&snap), "payments-a", "10.0.0.1"),
        (TlsMode::Permissive, Some((TlsMode::Permissive, 10)))
    );
}

/// What happens to the mesh between two compiles, as a source hands it over: the
/// objects it did not touch are the same `Arc`s.
#[derive(Clone, Debug)]
enum Change {
    /// A workload gains or loses the label `canary: "true"`.
    Relabel(usize),
    /// A workload's proxy comes or goes.
    Mesh(usize),
    /// A workload goes, and the endpoints it backed with it.
    Remove(usize),
    /// A service gains a workload as an endpoint.
    Endpoint(usize, usize),
    /// The braid resources become one of [`RESOURCES`].
    Resources(usize),
    /// The trust bundle changes.
    Bundle(u8),
    /// Nothing.
    Same,
}

const RESOURCES: [&str; 5] = [
    "",
    "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: payments, namespace: shop}\nspec:\n  host: payments\n  groups: [{name: canary, labels: {canary: \"true\"}}]\n  rules: [{name: all, sourceLabels: {app: checkout}}]\n",
    "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {name: payments, namespace: shop}\nspec:\n  selector: {matchLabels: {app: payments}}\n  outlierDetection: {consecutiveErrors: 3}\n  overloadProtection: {signal: cpu, target: 0.75, minLimit: 20}\n",
    "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop}\nspec: {selector: {matchLabels: {app: payments}}, mode: Strict}\n",
    // Its sources name pods by a label other pods gain and lose.
    "apiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: pay, namespace: shop}\nspec:\n  selector: {matchLabels: {app: payments}}\n  mode: Enforce\n  rules: [{from: [{workloadLabels: {canary: \"true\"}}]}]\n",
];

fn apply(snap: &mut Snapshot, extra: &mut Extra, change: &Change) {
    let keys: Vec<ObjectKey> = snap.workloads.keys().cloned().collect();
    let pick = |i: &usize| keys.get(i % keys.len().max(1)).cloned();
    match change {
        Change::Relabel(i) | Change::Mesh(i) => {
            let Some(k) = pick(i) else { return };
            let mut w = Workload::clone(&snap.workloads[&k]);
            if matches!(change, Change::Mesh(_)) {
                w.meshed = !w.meshed;
            } else if w.labels.remove("canary").is_none() {
                w.labels.insert("canary".into(), "true".into());
            }
            snap.workloads.insert(k, Arc::new(w));
        }
        Change::Remove(i) => {
            let Some(k) = pick(i) else { return };
            snap.workloads.remove(&k);
            let backed: Vec<ObjectKey> = snap
                .services
                .iter()
                .filter(|(_, entry)| {
                    entry
                        .endpoints
                        .iter()
                        .any(|e| e.workload.as_ref() == Some(&k))
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in backed {
                let mut e = ServiceEntry::clone(&snap.services[&key]);
                e.endpoints.retain(|e| e.workload.as_ref() != Some(&k));
                snap.services.insert(key, Arc::new(e));
            }
        }
        Change::Endpoint(s, i) => {
            let Some(k) = pick(i) else { return };
            let names: Vec<ObjectKey> = snap.services.keys().cloned().collect();
            let svc = &names[s % names.len()];
            let entry = &snap.services[svc];
            if entry
                .endpoints
                .iter()
                .any(|e| e.workload.as_ref() == Some(&k))
            {
                return;
            }
            let mut e = ServiceEntry::clone(entry);
            e.endpoints.push(crate::registry::ServiceEndpoint {
                ip: snap.workloads[&k].ips[0],
                workload: Some(k),
            });
            snap.services.insert(svc.clone(), Arc::new(e));
        }
        Change::Resources(r) => {
            let parsed = snapshot(
                "services: []\nworkloads: []\n",
                RESOURCES[r % RESOURCES.len()],
            );
            snap.traffic_routes = parsed.traffic_routes;
            snap.self_healings = parsed.self_healings;
            snap.encryption_policies = parsed.encryption_policies;
            snap.access_policies = parsed.access_policies;
        }
        Change::Bundle(b) => extra.trust_bundle = format!("bundle-{b}").into(),
        Change::Same => {}
    }
}

fn a_change() -> impl proptest::strategy::Strategy<Value = Change> {
    use proptest::prelude::*;
    prop_oneof![
        (0..8usize).prop_map(Change::Relabel),
        (0..8usize).prop_map(Change::Mesh),
        (0..8usize).prop_map(Change::Remove),
        (0..4usize, 0..8usize).prop_map(|(s, i)| Change::Endpoint(s, i)),
        (0..5usize).prop_map(Change::Resources),
        (0..2u8).prop_map(Change::Bundle),
        Just(Change::Same),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config::with_cases(200))]

    /// However the mesh changes, and whatever the compiler kept from before, it
    /// compiles what a compiler starting afresh does.
    #[test]
    fn an_incremental_compile_always_matches_a_full_one(
        changes in proptest::collection::vec(a_change(), 1..12)
    ) {
        let mut snap = snapshot(REGISTRY, "");
        let mut extra = Extra::default();
        let mut compiler = Compiler::new(Options::default());
        compiler.compile_with(&snap, &extra);
        for change in &changes {
            apply(&mut snap, &mut extra, change);
            let inc = compiler.compile_with(&snap, &extra);
            let full = Compiler::new(Options::default()).compile_with(&snap, &extra);
            proptest::prop_assert_eq!(&inc.configs, &full.configs, "after {:?}", change);
            proptest::prop_assert_eq!(&inc.catalog.own, &full.catalog.own);
            proptest::prop_assert_eq!(&inc.catalog.set.digests, &full.catalog.set.digests);
            proptest::prop_assert!(inc.catalog.set.services().eq(full.catalog.set.services()));
        }
    }
}

#[test]
fn a_pod_relabelled_without_changing_its_services_rebuilds_only_itself() {
    let mut snap = snapshot(REGISTRY, "");
    let mut compiler = Compiler::new(Options::default());
    compiler.compile(&snap);
    // payments-a (workloads in name order: checkout, legacy, payments-a, …).
    apply(&mut snap, &mut Extra::default(), &Change::Relabel(2));
    let out = compiler.compile(&snap);
    assert_eq!(out.stats.services_compiled, 1, "{:?}", out.stats);
    assert_eq!(out.stats.workloads_compiled, 1, "{:?}", out.stats);
}

fn access(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n{spec}---\n"
    )
}

#[test]
fn access_policies_reach_the_servers_they_select_with_their_sources_resolved() {
    use braid_api::config::access::{AccessAction, AccessMode, Source};
    use braid_api::config::routes::PathMatch;
    let resources = [
        access(
            "callers",
            "  selector: {matchLabels: {app: payments}}\n  ports: [8080]\n  mode: Enforce\n  rules:\n  - name: checkout\n    from: [{serviceAccount: checkout}, {namespace: ops}, {serviceAccount: web, namespace: front}]\n  - from: [{workloadLabels: {app: checkout}}, {workloadLabels: {app: ledger}}, {meshed: true}, {unauthenticated: true}]\n    http: {methods: [GET, HEAD], paths: [{prefix: /public}]}\n  - {}\n",
        ),
        access(
            "zone-a-deny",
            "  selector: {matchLabels: {zone: a}}\n  action: Deny\n  rules: [{from: [{identity: \"spiffe://cluster.local/ns/shop/sa/*\"}]}]\n",
        ),
        access(
            "elsewhere",
            "  selector: {matchLabels: {app: payments}}\n  rules: [{}]\n",
        )
        .replace("namespace: shop", "namespace: other"),
    ]
    .concat();
    let out = compile(&snapshot(REGISTRY, &resources), &Options::default());
    let a = out.whole(&key("payments-a")).inbound.access_policies;
    let names: Vec<&str> = a.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        ["shop/callers", "shop/zone-a-deny"],
        "selected, same namespace only"
    );
    let callers = &a[0];
    assert_eq!(
        (callers.action, callers.mode, &callers.ports[..]),
        (AccessAction::Allow, AccessMode::Enforce, &[8080][..])
    );
    assert_eq!(
        callers.rules[0].from.as_deref().unwrap(),
        [
            Source::Identity("spiffe://cluster.local/ns/shop/sa/checkout".into()),
            Source::Identity("spiffe://cluster.local/ns/ops/sa/*".into()),
            Source::Identity("spiffe://cluster.local/ns/front/sa/web".into()),
        ]
    );
    // Workload labels become each meshed pod's identity and address; the unmeshed
    // ledger pod (`legacy`) has no identity to show, so it adds nothing.
    assert_eq!(
        callers.rules[1].from.as_deref().unwrap(),
        [
            Source::Pod {
                identity: "spiffe://cluster.local/ns/shop/sa/checkout".into(),
                address: "10.0.0.9".parse().unwrap(),
            },
            Source::Meshed,
            Source::Unauthenticated,
        ]
    );
    assert_eq!(callers.rules[1].name, "rule-1");
    let http = callers.rules[1].http.as_deref().unwrap();
    let methods: Vec<_> = http.iter().map(|m| m.method.as_deref().unwrap()).collect();
    assert_eq!(methods, ["GET", "HEAD"]);
    assert!(
        http.iter()
            .all(|m| m.path == Some(PathMatch::Prefix("/public".into())))
    );
    assert_eq!(
        (
            callers.rules[2].from.as_ref(),
            callers.rules[2].http.as_ref()
        ),
        (None, None),
        "an empty rule matches every caller"
    );
    assert_eq!(a[1].action, AccessAction::Deny);
    assert_eq!(a[1].mode, AccessMode::Audit, "the default mode");
    let b = out.whole(&key("payments-b")).inbound.access_policies;
    assert_eq!(b.len(), 1);
    assert!(
        out.whole(&key("checkout"))
            .inbound
            .access_policies
            .is_empty()
    );
    // The proxy takes what the operator writes.
    braid_proxy::tables::Tables::build(out.whole(&key("payments-a"))).unwrap();
}

#[test]
fn a_caller_relabelled_into_an_access_rule_changes_the_servers_config() {
    let resources = access(
        "callers",
        "  selector: {matchLabels: {app: payments}}\n  mode: Enforce\n  rules: [{from: [{workloadLabels: {role: batch}}]}]\n",
    );
    let mut snap = snapshot(REGISTRY, &resources);
    let mut compiler = Compiler::new(Options::default());
    let before = compiler.compile(&snap);
    let rule =
        |out: &Output| out.whole(&key("payments-a")).inbound.access_policies[0].rules[0].clone();
    assert_eq!(
        rule(&before).from,
        Some(vec![]),
        "no pod carries the label: nobody"
    );
    let k = key("checkout");
    let mut w = Workload::clone(&snap.workloads[&k]);
    w.labels.insert("role".into(), "batch".into());
    snap.workloads.insert(k, Arc::new(w));
    let after = compiler.compile(&snap);
    assert_eq!(rule(&after).from.unwrap().len(), 1);
    assert_ne!(
        before.configs[&key("payments-a")].version,
        after.configs[&key("payments-a")].version
    );
}

#[test]
fn a_deny_by_workload_labels_refuses_those_pods_by_address_proxy_or_not() {
    use braid_api::config::access::Source;
    let resources = access(
        "no-ledger",
        "  selector: {matchLabels: {app: payments}}\n  action: Deny\n  mode: Enforce\n  rules: [{from: [{workloadLabels: {app: ledger}}]}]\n",
    );
    let out = compile(&snapshot(REGISTRY, &resources), &Options::default());
    let policies = out.whole(&key("payments-a")).inbound.access_policies;
    // `legacy` runs no proxy: it calls in plaintext, and is refused all the same.
    assert_eq!(
        policies[0].rules[0].from.as_deref().unwrap(),
        [Source::Address("10.0.0.10".parse().unwrap())]
    );
}
