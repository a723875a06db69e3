//! The decision table: how Allow and Deny, Audit and Enforce, callers and requests
//! combine, without sockets.

use std::net::IpAddr;

use serde_json::json;

use super::*;
use crate::routing::RequestHead;

fn policies(list: serde_json::Value) -> Authorizer {
    let list: Vec<AccessPolicy> = serde_json::from_value(list).unwrap();
    Authorizer::build(&list, None).unwrap()
}

const A: &str = "spiffe://cluster.local/ns/shop/sa/checkout";
const B: &str = "spiffe://cluster.local/ns/shop/sa/stray";

fn mtls(id: &'static str, ip: &str) -> Caller<'static> {
    Caller {
        identity: Some(id),
        address: Some(ip.parse::<IpAddr>().unwrap()),
    }
}

fn plaintext(ip: &str) -> Caller<'static> {
    Caller {
        identity: None,
        address: Some(ip.parse().unwrap()),
    }
}

fn refused(az: &Authorizer, caller: &Caller<'_>, method: &str, path: &str) -> Option<String> {
    let method = http::Method::from_bytes(method.as_bytes()).unwrap();
    let headers = http::HeaderMap::new();
    let head = RequestHead {
        method: &method,
        path,
        headers: &headers,
    };
    let d = az.decide(8080, caller, Asked::Request(&head));
    d.refused_by.map(|i| az.policies[i].name.to_string())
}

fn outcomes(az: &Authorizer, caller: &Caller<'_>, asked: Asked<'_>) -> Vec<(String, Outcome)> {
    az.decide(8080, caller, asked)
        .outcomes
        .into_iter()
        .map(|(i, o)| (az.policies[i].name.to_string(), o))
        .collect()
}

fn allow_a(mode: &str) -> serde_json::Value {
    json!({"name": "shop/callers", "mode": mode, "rules": [{"name": "a", "from": [{"identity": A}]}]})
}

#[test]
fn an_enforced_allow_lets_its_callers_through_and_refuses_the_rest() {
    let az = policies(json!([allow_a("Enforce")]));
    assert_eq!(refused(&az, &mtls(A, "10.0.0.1"), "GET", "/"), None);
    assert_eq!(
        refused(&az, &mtls(B, "10.0.0.2"), "GET", "/").as_deref(),
        Some("shop/callers")
    );
    // A plaintext caller has no identity: an identity rule cannot let it in.
    assert_eq!(
        refused(&az, &plaintext("10.0.0.1"), "GET", "/").as_deref(),
        Some("shop/callers")
    );
    assert_eq!(
        outcomes(&az, &mtls(B, "10.0.0.2"), Asked::Connection),
        [("shop/callers".into(), Outcome::Denied)]
    );
}

#[test]
fn an_audit_policy_refuses_nothing_and_counts_what_it_would() {
    let az = policies(json!([allow_a("Audit")]));
    assert_eq!(refused(&az, &mtls(B, "10.0.0.2"), "GET", "/"), None);
    assert_eq!(
        outcomes(&az, &mtls(B, "10.0.0.2"), Asked::Connection),
        [("shop/callers".into(), Outcome::WouldDeny)]
    );
    assert_eq!(
        outcomes(&az, &mtls(A, "10.0.0.1"), Asked::Connection),
        [("shop/callers".into(), Outcome::Allowed)]
    );
}

#[test]
fn deny_beats_allow_and_a_path_scoped_rule_decides_per_request() {
    let az = policies(json!([
        {"name": "shop/public", "mode": "Enforce", "rules": [
            {"name": "a-all", "from": [{"identity": A}]},
            {"name": "b-public", "from": [{"identity": B}], "http": [{"method": "GET", "path": {"prefix": "/public"}}]},
        ]},
        {"name": "shop/no-admin", "action": "Deny", "mode": "Enforce", "rules": [
            {"name": "admin-writes", "http": [{"method": "POST", "path": {"prefix": "/admin"}}]},
        ]},
    ]));
    let b = mtls(B, "10.0.0.2");
    assert_eq!(refused(&az, &b, "GET", "/public/x"), None);
    assert_eq!(
        refused(&az, &b, "GET", "/publicity").as_deref(),
        Some("shop/public"),
        "segment-wise"
    );
    assert_eq!(
        refused(&az, &b, "POST", "/public").as_deref(),
        Some("shop/public")
    );
    assert_eq!(
        refused(&az, &b, "POST", "/admin").as_deref(),
        Some("shop/no-admin")
    );
    let a = mtls(A, "10.0.0.1");
    assert_eq!(refused(&az, &a, "GET", "/admin"), None);
    assert_eq!(
        refused(&az, &a, "POST", "/admin/users").as_deref(),
        Some("shop/no-admin"),
        "Deny beats Allow"
    );
    // B's opaque connection: its only Allow rule looks into HTTP, which TCP does not
    // show; the Deny rule with an HTTP part refuses the connection whole.
    let d = az.decide(8080, &b, Asked::Connection);
    assert_eq!(d.refused_by, Some(1));
    let d = az.decide(8080, &a, Asked::Connection);
    assert_eq!(
        d.refused_by,
        Some(1),
        "a Deny with an HTTP part refuses TCP it cannot see into"
    );
}

#[test]
fn an_audit_policy_next_to_an_enforced_one_counts_only_what_it_changes() {
    let az = policies(json!([
        allow_a("Enforce"),
        {"name": "shop/tighter", "mode": "Audit", "rules": [{"from": [{"identity": B}]}]},
        {"name": "shop/no-b", "action": "Deny", "mode": "Audit", "rules": [{"from": [{"identity": B}]}]},
    ]));
    // A is allowed by the enforced policy: the audited Allow would change nothing.
    assert_eq!(
        outcomes(&az, &mtls(A, "10.0.0.1"), Asked::Connection),
        [
            ("shop/callers".into(), Outcome::Allowed),
            ("shop/tighter".into(), Outcome::Allowed),
            ("shop/no-b".into(), Outcome::Allowed),
        ]
    );
    // B is refused already: the audited policies are not asked.
    assert_eq!(
        outcomes(&az, &mtls(B, "10.0.0.2"), Asked::Connection),
        [("shop/callers".into(), Outcome::Denied)]
    );
    let only_audit = policies(json!([
        {"name": "shop/no-b", "action": "Deny", "mode": "Audit", "rules": [{"from": [{"identity": B}]}]},
    ]));
    assert_eq!(
        outcomes(&only_audit, &mtls(B, "10.0.0.2"), Asked::Connection),
        [("shop/no-b".into(), Outcome::WouldDeny)]
    );
}

#[test]
fn sources_match_by_identity_prefix_pod_and_kind() {
    let az = policies(json!([{"name": "shop/p", "mode": "Enforce", "rules": [
        {"name": "ops", "from": [{"identity": "spiffe://cluster.local/ns/ops/sa/*"}]},
        {"name": "pod", "from": [{"pod": {"identity": B, "address": "10.0.0.7"}}]},
        {"name": "plain", "from": ["unauthenticated"], "http": [{"path": {"exact": "/healthz"}}]},
    ]}]));
    let ops = Caller {
        identity: Some("spiffe://cluster.local/ns/ops/sa/backup"),
        address: None,
    };
    assert_eq!(refused(&az, &ops, "GET", "/"), None);
    assert_eq!(refused(&az, &mtls(B, "10.0.0.7"), "GET", "/"), None);
    // The same identity from another pod, or the pod's address without the identity.
    assert!(refused(&az, &mtls(B, "10.0.0.8"), "GET", "/").is_some());
    assert!(refused(&az, &plaintext("10.0.0.7"), "GET", "/").is_some());
    assert_eq!(
        refused(&az, &plaintext("10.0.0.7"), "GET", "/healthz"),
        None
    );
    // IPv4 seen through an IPv6 socket.
    let mapped = Caller {
        identity: Some(B),
        address: Some("::ffff:10.0.0.7".parse().unwrap()),
    };
    assert_eq!(refused(&az, &mapped, "GET", "/"), None);
    let meshed =
        policies(json!([{"name": "shop/m", "mode": "Enforce", "rules": [{"from": ["meshed"]}]}]));
    assert_eq!(refused(&meshed, &mtls(B, "10.0.0.2"), "GET", "/"), None);
    assert!(refused(&meshed, &plaintext("10.0.0.2"), "GET", "/").is_some());
    let deny_address = policies(
        json!([{"name": "shop/d", "action": "Deny", "mode": "Enforce", "rules": [{"from": [{"address": "10.0.0.7"}]}]}]),
    );
    assert!(refused(&deny_address, &plaintext("10.0.0.7"), "GET", "/").is_some());
    assert!(refused(&deny_address, &mtls(B, "10.0.0.7"), "GET", "/").is_some());
    assert_eq!(
        refused(&deny_address, &plaintext("10.0.0.8"), "GET", "/"),
        None
    );
    let nobody = policies(json!([{"name": "shop/n", "mode": "Enforce", "rules": [{"from": []}]}]));
    assert!(refused(&nobody, &mtls(A, "10.0.0.1"), "GET", "/").is_some());
}

#[test]
fn ports_limit_what_a_policy_covers() {
    let az = policies(
        json!([{"name": "shop/p", "ports": [9090], "mode": "Enforce", "rules": [{"from": [{"identity": A}]}]}]),
    );
    assert!(!az.covers(8080));
    assert!(az.covers(9090));
    assert_eq!(
        refused(&az, &mtls(B, "10.0.0.2"), "GET", "/"),
        None,
        "8080 is not covered"
    );
    assert_eq!(
        az.decide(9090, &mtls(B, "10.0.0.2"), Asked::Connection)
            .refused_by,
        Some(0)
    );
}

#[test]
fn evidence_names_refused_callers_and_those_let_through_while_auditing() {
    let metrics = AuthzMetrics::default();
    let audit = policies(json!([allow_a("Audit")]));
    let (a, b) = (mtls(A, "10.0.0.1"), mtls(B, "10.0.0.2"));
    let get = http::Method::GET;
    let headers = http::HeaderMap::new();
    let head = RequestHead {
        method: &get,
        path: "/orders/1",
        headers: &headers,
    };
    for _ in 0..3 {
        audit
            .check(8080, &a, Asked::Request(&head), &metrics)
            .unwrap();
    }
    audit
        .check(8080, &b, Asked::Request(&head), &metrics)
        .unwrap();
    let taken = audit.take();
    assert_eq!(
        (taken[0].allowed, taken[0].would_deny, taken[0].denied),
        (3, 1, 0)
    );
    assert_eq!(taken[0].refused_sources[0].identity.as_deref(), Some(B));
    assert_eq!(
        taken[0].refused_sources[0].request.as_deref(),
        Some("GET /orders/1")
    );
    assert!(audit.take().is_empty(), "taken once");

    // Enforced: the evidence carries on. B was never let through, so its refusal is not
    // one of traffic allowed before.
    let tighter: Vec<AccessPolicy> = serde_json::from_value(json!([{
        "name": "shop/callers", "mode": "Enforce", "rules": [{"name": "a", "from": [{"identity": A}]}]
    }]))
    .unwrap();
    let enforced = Authorizer::build(&tighter, Some(&audit)).unwrap();
    assert!(Arc::ptr_eq(
        &enforced.policies[0].log,
        &audit.policies[0].log
    ));
    assert_eq!(
        enforced
            .check(8080, &b, Asked::Connection, &metrics)
            .unwrap_err()
            .as_ref(),
        "shop/callers"
    );
    let taken = enforced.take();
    assert_eq!((taken[0].denied, taken[0].denied_allowed_before), (1, 0));
    assert!(
        !taken[0].refused_sources[0].allowed_before,
        "B was never let through"
    );
    // A failed report's counts are put back for the next.
    enforced.restore(&taken);
    assert_eq!(enforced.take()[0].denied, 1);
}

#[test]
fn a_refusal_of_the_same_traffic_let_through_while_auditing_is_flagged() {
    let metrics = AuthzMetrics::default();
    // B's pod, named by workload labels, moves to another address between the audit
    // and the enforcing configs (its old address is what the audited rule names).
    let at = |address: &str, mode: &str| -> Vec<AccessPolicy> {
        serde_json::from_value(json!([{"name": "shop/p", "mode": mode, "rules": [
            {"from": [{"pod": {"identity": B, "address": address}}]},
        ]}]))
        .unwrap()
    };
    let audit = Authorizer::build(&at("10.0.0.2", "Audit"), None).unwrap();
    let b = mtls(B, "10.0.0.2");
    let (get, post) = (http::Method::GET, http::Method::POST);
    let headers = http::HeaderMap::new();
    let head = |m| RequestHead {
        method: m,
        path: "/orders",
        headers: &headers,
    };
    audit
        .check(8080, &b, Asked::Request(&head(&get)), &metrics)
        .unwrap();
    let enforced = Authorizer::build(&at("10.0.0.9", "Enforce"), Some(&audit)).unwrap();
    // Something B never asked for while auditing: refused, but not traffic that worked.
    assert!(
        enforced
            .check(8080, &b, Asked::Request(&head(&post)), &metrics)
            .is_err()
    );
    // What it did ask for: refused now, and flagged.
    assert!(
        enforced
            .check(8080, &b, Asked::Request(&head(&get)), &metrics)
            .is_err()
    );
    let taken = enforced.take();
    assert_eq!((taken[0].denied, taken[0].denied_allowed_before), (2, 1));
    let s = &taken[0].refused_sources[0];
    assert_eq!(
        (s.request.as_deref(), s.allowed_before),
        (Some("GET /orders"), true)
    );
}
