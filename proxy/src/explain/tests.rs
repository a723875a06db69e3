//! Explanations of a config with a three-rule TrafficRoute and an enforced AccessPolicy,
//! checked against what the proxy's own selection and decisions do.

use std::time::Instant;

use braid_api::explain::{Explanation, Outbound};
use proptest::prelude::*;

use super::*;
use crate::config::ProxyConfig;
use crate::routing::RequestHead;

const A: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
const B: &str = "spiffe://cluster.local/ns/shop/sa/stray";

/// `payments` (one port; groups stable, canary, debug; outlier detection) routed by
/// three rules: a header, a path prefix, and a catch-all sending 90/10; `orders` (two
/// ports, a rule on port 80 that only some requests match); an inbound side that is
/// Permissive but Strict on 9090, with an enforced Allow policy on 8080 and an opaque
/// port 5000.
const CONFIG: &str = r#"
version: v7
node: {workload: checkout-1, namespace: shop, identity: "spiffe://cluster.local/ns/shop/sa/checkout"}
inbound:
  ports: [{port: 8080, protocol: http}, {port: 5000, protocol: tcp}]
  tls: {mode: Permissive, portOverrides: [{port: 9090, mode: Strict}]}
  accessPolicies:
  - name: shop/callers
    mode: Enforce
    ports: [8080, 9090]
    rules:
    - {name: checkout, from: [{identity: "spiffe://cluster.local/ns/shop/sa/checkout"}]}
  - name: shop/no-admin
    action: Deny
    mode: Enforce
    ports: [8080]
    rules:
    - {name: admin, http: [{path: {prefix: /admin}}]}
  - name: shop/web-only
    mode: Enforce
    ports: [5000]
    rules:
    - {name: web, http: [{method: GET}]}
services:
- name: payments
  namespace: shop
  vips: [10.96.0.10]
  ports: [{port: 80, targetPort: 8080, protocol: http}]
  groups:
  - name: stable
    endpoints:
    - {address: 10.0.0.1}
    - address: 10.0.0.2
      meshed: true
      identity: spiffe://cluster.local/ns/shop/sa/payments
      tls: {mode: Strict}
  - {name: canary, endpoints: [{address: 10.0.0.3}]}
  - {name: debug, endpoints: [{address: 10.0.0.4}]}
  outlierDetection: {consecutiveErrors: 2, baseEjectionTimeMs: 30000, maxEjectionTimeMs: 300000, maxEjectionPercent: 50}
- name: orders
  namespace: shop
  vips: [10.96.0.11]
  ports: [{port: 80, protocol: http}, {port: 8081, protocol: http}]
  groups:
  - {name: (default), endpoints: [{address: 10.0.1.1}]}
  - {name: empty, endpoints: []}
routes:
- from: shop/payments
  service: payments
  namespace: shop
  rules:
  - name: debug
    match: [{headers: [{name: x-user, exact: ann}]}]
    route: [{group: debug, weight: 100}]
  - name: api
    match: [{path: {prefix: /api/}}]
    route: [{group: stable, weight: 100}]
    timeoutMs: 2000
    retries: {attempts: 2, perTryTimeoutMs: 500, on: [5xx, connect-failure]}
  - name: rest
    route: [{group: stable, weight: 90}, {group: canary, weight: 10}]
    fault: {abort: {percent: 10, status: 503}, delay: {percent: 5, fixedMs: 200}}
    mirror: {group: debug, percent: 20}
    rateLimit: {requestsPerSecond: 1, burst: 1}
- from: shop/orders
  service: orders
  namespace: shop
  port: 80
  rules:
  - name: transfers
    match: [{headers: [{name: type, exact: transfer}], method: POST}]
  - name: maybe-empty
    match: [{headers: [{name: x-empty, present: true}]}]
    route: [{group: (default), weight: 50}, {group: empty, weight: 50}]
"#;

/// The tables of [`CONFIG`], as a config file is read (YAML to JSON, then the config).
fn tables() -> Tables {
    let yaml: serde_json::Value = serde_norway::from_str(CONFIG).unwrap();
    let config: ProxyConfig = serde_json::from_value(yaml).unwrap();
    Tables::build(config).unwrap()
}

/// The query string's pairs of `q`, `k=v&k=v` (no escapes needed here).
fn query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn ask(t: &Tables, q: &str) -> Explanation {
    explain(t, &query(q)).unwrap_or_else(|e| panic!("{q}: {e}"))
}

fn out(t: &Tables, q: &str) -> Outbound {
    ask(t, q).outbound.unwrap()
}

fn refused(t: &Tables, q: &str) -> String {
    match explain(t, &query(q)) {
        Ok(e) => panic!("{q}: answered {e:?}"),
        Err(e) => e.to_string(),
    }
}

/// `(name, matched, why)` of each rule verdict.
fn verdicts(o: &Outbound) -> Vec<(&str, bool, &str)> {
    o.rules
        .iter()
        .map(|r| (r.name.as_str(), r.matched, r.why.as_str()))
        .collect()
}

#[test]
fn each_request_is_explained_by_the_rule_that_takes_it() {
    let t = tables();
    let e = ask(&t, "to=payments&header=X-User:ann&path=/api/x");
    assert_eq!(e.pod, "shop/checkout-1");
    assert_eq!(e.config_version, "v7");
    assert_eq!(e.identity.as_deref(), Some(A));
    assert_eq!(e.request.method, "GET");
    assert_eq!(e.request.path, "/api/x");
    assert_eq!(e.request.headers, [("x-user".to_owned(), "ann".to_owned())]);
    let o = e.outbound.unwrap();
    assert_eq!(o.target, "payments.shop:80");
    assert_eq!(o.protocol, "http");
    assert_eq!(o.route.as_deref(), Some("shop/payments"));
    assert_eq!(verdicts(&o), [("debug", true, "match[0] holds")]);
    assert_eq!(o.rule.as_deref(), Some("debug"));
    assert_eq!(o.error, None);
    let groups: Vec<_> = o.groups.iter().map(|g| (&*g.name, g.percent)).collect();
    assert_eq!(groups, [("debug", 100.0)]);
    assert_eq!(o.groups[0].endpoints[0].address, "10.0.0.4:8080");
    assert!(o.endpoints.is_empty());

    // No x-user: the path rule.
    let o = out(&t, "to=payments.shop:80&path=/api/orders?id=1");
    assert_eq!(
        verdicts(&o),
        [
            ("debug", false, "match[0]: header x-user is absent"),
            ("api", true, "match[0] holds"),
        ]
    );
    assert_eq!(o.rule.as_deref(), Some("api"));
    assert_eq!(o.policy.timeout_ms, Some(2000));
    assert_eq!(
        o.policy.retries.as_deref(),
        Some("up to 2 more attempts on connect-failure, 5xx, 500 ms each, within the retry budget")
    );
    let stable = &o.groups[0];
    assert_eq!((&*stable.name, stable.percent), ("stable", 100.0));
    let addresses: Vec<_> = stable
        .endpoints
        .iter()
        .map(|e| (&*e.address, e.mtls.as_deref()))
        .collect();
    assert_eq!(
        addresses,
        [
            ("10.0.0.1:8080", None),
            (
                "10.0.0.2:8080",
                Some("spiffe://cluster.local/ns/shop/sa/payments")
            )
        ]
    );

    // Another user, another path: the catch-all, 90/10.
    let o = out(&t, "to=payments&header=x-user:bob&path=/apix");
    assert_eq!(
        verdicts(&o),
        [
            (
                "debug",
                false,
                r#"match[0]: header x-user is "bob", not "ann""#
            ),
            (
                "api",
                false,
                "match[0]: path /apix does not start with /api/"
            ),
            ("rest", true, "no match conditions: matches every request"),
        ]
    );
    assert_eq!(o.rule.as_deref(), Some("rest"));
    let groups: Vec<_> = o.groups.iter().map(|g| (&*g.name, g.percent)).collect();
    assert_eq!(groups, [("stable", 90.0), ("canary", 10.0)]);
    assert_eq!(
        o.policy.faults,
        [
            "abort 503 for 10% of requests",
            "delay 200 ms for 5% of requests"
        ]
    );
    assert_eq!(
        o.policy.mirror.as_deref(),
        Some("group debug, 20% of requests")
    );
    assert_eq!(
        o.policy.rate_limit.as_deref(),
        Some("1 requests a second, bursts of up to 1; more are answered 429 at once")
    );
    assert_eq!(o.policy.timeout_ms, None);
}

#[test]
fn no_matching_rule_and_empty_groups_are_the_error() {
    let t = tables();
    let o = out(&t, "to=orders:80&header=type:refund");
    assert_eq!(o.rule, None);
    assert_eq!(
        o.error.as_deref(),
        Some("no rule of TrafficRoute shop/orders matches the request")
    );
    assert_eq!(
        verdicts(&o),
        [
            ("transfers", false, "match[0]: method is GET, not POST"),
            ("maybe-empty", false, "match[0]: header x-empty is absent"),
        ]
    );
    // A rule naming no group: the service's endpoints.
    let o = out(&t, "to=orders:80&method=POST&header=type:transfer");
    assert_eq!(o.rule.as_deref(), Some("transfers"));
    assert!(o.groups.is_empty());
    assert_eq!(o.endpoints[0].address, "10.0.1.1:80");
    // Half the requests go to a group without endpoints.
    let o = out(&t, "to=orders:80&header=x-empty:1");
    assert_eq!(
        o.error.as_deref(),
        Some("50% of rule maybe-empty's requests fail: no healthy endpoints in group empty")
    );
    // Port 8081 has no rules: every endpoint serves.
    let o = out(&t, "to=orders.shop:8081");
    assert_eq!((o.route.as_ref(), o.rules.len()), (None, 0));
    assert_eq!(o.endpoints[0].address, "10.0.1.1:8081");
}

/// A request from a small vocabulary: `(method, path, x-user)`.
fn request() -> impl Strategy<Value = (&'static str, &'static str, Option<&'static str>)> {
    (
        prop::sample::select(vec!["GET", "POST", "get"]),
        prop::sample::select(vec!["/", "/api", "/api/", "/api/x", "/apix", "/web"]),
        prop::option::of(prop::sample::select(vec!["ann", "bob", "transfer"])),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 20, ..crate::props::config(1) })]

    /// The product's promise: the rule the explanation names is the rule
    /// `OutboundTarget::select` takes for the same request (and both fail alike).
    #[test]
    fn the_explained_rule_is_the_selected_rule(
        (method, path, user) in request(),
        to in prop::sample::select(vec![("payments", 80), ("orders", 80)]),
    ) {
        let t = tables();
        let mut q = format!("to={}:{}&method={method}&path={path}", to.0, to.1);
        let mut headers = http::HeaderMap::new();
        if let Some(user) = user {
            q.push_str(&format!("&header=x-user:{user}&header=type:{user}"));
            headers.insert("x-user", http::HeaderValue::from_static(user));
            headers.insert("type", http::HeaderValue::from_static(user));
        }
        let o = out(&t, &q);
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let head = RequestHead { method: &m, path, headers: &headers };
        let target = t.target(to.0, "shop", to.1).unwrap();
        // The words agree with `matches`, rule by rule.
        for r in target.routes().unwrap().rules() {
            prop_assert_eq!(r.mismatch(&head).is_none(), r.matches(&head));
            prop_assert_eq!(r.why_matches(&head).is_some(), r.matches(&head));
        }
        let selected = target.select(&head);
        let rule = selected.as_ref().ok().and_then(|s| s.rule).map(|r| r.name.to_string());
        prop_assert_eq!(&o.rule, &rule);
        prop_assert_eq!(o.error.is_some() && o.rule.is_none(), selected.is_err());
        if let Ok(s) = selected {
            // The group drawn is one the explanation gives a share.
            if let Some(group) = s.group_name() {
                prop_assert!(o.groups.iter().any(|g| *g.name == **group && g.percent > 0.0));
            }
        }
        // Each rule before it names why it does not match; the chosen one, why it does.
        for v in &o.rules {
            prop_assert!(!v.why.is_empty(), "{:?}", v);
        }
    }
}

#[test]
fn explaining_records_nothing() {
    let t = tables();
    let target = t.target("payments", "shop", 80).unwrap().clone();
    for _ in 0..5 {
        out(&t, "to=payments");
        ask(&t, "inbound=8080&identity=x");
        ask(&t, "inbound=5000");
    }
    // The rule's bucket (a burst of 1) still holds its token.
    let head = RequestHead {
        method: &http::Method::GET,
        path: "/",
        headers: &http::HeaderMap::new(),
    };
    let rule = target.select(&head).unwrap().rule.unwrap();
    let bucket = rule.rate_limit.as_ref().unwrap();
    assert!(bucket.take(Instant::now()).is_ok());
    // Round robin starts at the first endpoint.
    assert_eq!(target.pick().unwrap().addr.to_string(), "10.0.0.1:8080");
    // No policy has evidence to report.
    assert!(t.access.take().is_empty());
}

#[test]
fn an_ejected_endpoint_is_shown_ejected_and_stays_so() {
    let t = tables();
    let target = t.target("payments", "shop", 80).unwrap();
    let policy = target.outlier().unwrap();
    let now = Instant::now();
    let bad = &target.endpoints[0];
    for _ in 0..2 {
        crate::balance::record(bad, &target.endpoints, true, now, policy);
    }
    let o = explain_at(&t, &query("to=payments&path=/api/x"), now).unwrap();
    let o = o.outbound.unwrap();
    let ejected: Vec<_> = o.groups[0]
        .endpoints
        .iter()
        .map(|e| (&*e.address, e.ejected))
        .collect();
    assert_eq!(ejected, [("10.0.0.1:8080", true), ("10.0.0.2:8080", false)]);
    // Asked after the ejection ran out: shown back, and the ejection is left for the
    // next pick to end (its slow start begins then, not at the question).
    let later = now + std::time::Duration::from_secs(31);
    let o = explain_at(&t, &query("to=payments&path=/api/x"), later).unwrap();
    assert!(!o.outbound.unwrap().groups[0].endpoints[0].ejected);
    assert_eq!(bad.health.check(later), (false, true));
}

#[test]
fn an_enforced_allow_lets_its_identity_in_and_names_itself_refusing_another() {
    let t = tables();
    let i = ask(&t, &format!("inbound=8080&identity={A}&address=10.0.0.9"))
        .inbound
        .unwrap();
    assert_eq!(i.tls_mode, "Permissive");
    assert_eq!(i.identity.as_deref(), Some(A));
    assert_eq!(i.address.as_deref(), Some("10.0.0.9"));
    assert!(i.allowed, "{i:?}");
    assert_eq!(i.refused_by, None);
    let p = &i.policies[0];
    assert_eq!(
        (
            &*p.name,
            &*p.action,
            &*p.mode,
            p.matched_rule.as_deref(),
            p.outcome.as_deref()
        ),
        (
            "shop/callers",
            "Allow",
            "Enforce",
            Some("checkout"),
            Some("Allowed")
        )
    );
    assert_eq!(i.policies[1].name, "shop/no-admin");
    assert_eq!(i.policies[1].matched_rule, None);

    let i = ask(&t, &format!("inbound=8080&identity={B}"))
        .inbound
        .unwrap();
    assert!(!i.allowed);
    assert_eq!(
        i.refused_by.as_deref(),
        Some("denied by AccessPolicy shop/callers")
    );
    assert_eq!(i.policies[0].outcome.as_deref(), Some("Denied"));
    assert_eq!(i.policies[0].matched_rule, None);

    // The path is judged normalized and the method upper-cased, as admission does.
    let i = ask(
        &t,
        &format!("inbound=8080&identity={A}&method=get&path=/public/..;/admin"),
    )
    .inbound
    .unwrap();
    assert_eq!(
        i.refused_by.as_deref(),
        Some("denied by AccessPolicy shop/no-admin")
    );
    assert_eq!(i.policies[1].matched_rule.as_deref(), Some("admin"));
    // A tunnel past the path rule is refused by it.
    let i = ask(
        &t,
        &format!("inbound=8080&identity={A}&header=connection:Upgrade&header=upgrade:h2c"),
    )
    .inbound
    .unwrap();
    assert!(
        i.refused_by
            .unwrap()
            .starts_with("denied by AccessPolicy shop/no-admin: a tunnel (h2c)")
    );
    let i = ask(
        &t,
        &format!("inbound=8080&identity={A}&header=connection:Upgrade&header=upgrade:websocket"),
    )
    .inbound
    .unwrap();
    assert!(i.allowed);
}

#[test]
fn strict_refuses_plaintext_and_an_opaque_port_is_decided_whole() {
    let t = tables();
    let i = ask(&t, "inbound=9090").inbound.unwrap();
    assert_eq!(i.tls_mode, "Strict");
    assert!(!i.allowed);
    assert_eq!(
        i.refused_by.as_deref(),
        Some("plaintext refused: port 9090 accepts mTLS only (Strict)")
    );
    assert!(i.policies.is_empty(), "no policy is asked");
    let i = ask(&t, &format!("inbound=9090&identity={A}"))
        .inbound
        .unwrap();
    assert!(i.allowed);
    // Port 5000 is TCP: an Allow rule on HTTP requests cannot see inside it.
    let i = ask(&t, &format!("inbound=5000&identity={A}"))
        .inbound
        .unwrap();
    assert_eq!(
        i.refused_by.as_deref(),
        Some("denied by AccessPolicy shop/web-only")
    );
    // No policy covers 7000: anyone.
    let i = ask(&t, "inbound=7000").inbound.unwrap();
    assert!(i.allowed && i.policies.is_empty());
}

#[test]
fn bad_questions_name_the_parameter_and_the_fix() {
    let t = tables();
    assert_eq!(refused(&t, ""), ExplainError::NothingAsked.to_string());
    assert!(refused(&t, "method=GET").starts_with("give to="));
    assert_eq!(
        refused(&t, "to=foo"),
        r#"to: no service "foo" in namespace "shop" in this proxy's config (it holds: orders.shop, payments.shop)"#
    );
    assert_eq!(
        refused(&t, "to=payments.web"),
        r#"to: no service "payments" in namespace "web" in this proxy's config (it holds payments.shop)"#
    );
    assert_eq!(
        refused(&t, "to=orders.shop"),
        "to: service orders.shop has ports 80, 8081: name one, e.g. to=orders.shop:80"
    );
    assert_eq!(
        refused(&t, "to=orders:9"),
        "to: service orders.shop has no port 9 (it has 80, 8081): name one, e.g. to=orders.shop:80"
    );
    assert!(refused(&t, "to=orders:http").starts_with(r#"to: "http" is not a port"#));
    assert!(refused(&t, "to=a.b.c").starts_with(r#"to: "a.b.c" is not <service>"#));
    assert_eq!(
        refused(&t, "to=payments&header=abc"),
        r#"header: "abc" is not name:value, e.g. header=x-user:ann"#
    );
    assert!(refused(&t, "to=payments&header=a b:c").starts_with(r#"header: "a b""#));
    assert!(refused(&t, "to=payments&method=G T").starts_with("method: "));
    assert!(refused(&t, "to=payments&path=api").starts_with("path: "));
    assert!(refused(&t, "to=payments&to=orders").starts_with("to: given twice"));
    assert!(refused(&t, "inbound=http").starts_with("inbound: "));
    assert!(refused(&t, "inbound=8080&address=x").starts_with("address: "));
    assert!(refused(&t, "to=payments&identity=x").starts_with("identity: "));
    assert!(refused(&t, "to=payments&heder=a:b").starts_with("heder: not a parameter"));
    // A Kubernetes DNS name works as well.
    assert_eq!(
        out(&t, "to=payments.shop.svc.cluster.local:80").target,
        "payments.shop:80"
    );
}
