#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! A follower relays proxies' reports to the leader: found from the Lease's holder and
//! its pod's IP (a scripted API server), reached over TLS (a real operator as the
//! leader), which checks the proxy's own token and counts the ejection.

mod kube_mock;
mod support;

use std::net::SocketAddr;

use braid_api::control::POD_HEADER;
use braid_api::control::tls::client_config;
use braid_operator::stream::relay::{Relay, RelayError};
use http::{HeaderMap, HeaderValue, StatusCode};
use rustls_pki_types::ServerName;
use support::{Operator, admin_get, eventually, free_addr};

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-0, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
"#;

/// A scripted API server whose Lease is held by `holder`, whose pod has IP `ip`.
fn cluster(holder: &'static str, ip: &'static str) -> (kube::Client, kube_mock::Log) {
    kube_mock::client(move |r| {
        if r.path.ends_with("/leases/braid-operator") {
            (
                StatusCode::OK,
                serde_json::json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": "braid-operator", "namespace": "braid-system"},
                    "spec": {"holderIdentity": holder}}),
            )
        } else if r.path.ends_with(&format!("/pods/{holder}")) {
            (
                StatusCode::OK,
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": holder, "namespace": "braid-system"},
                    "status": {"podIP": ip}}),
            )
        } else {
            kube_mock::failure(404, "NotFound", "not found")
        }
    })
}

fn relay(client: kube::Client, me: &str, port: u16, trust: &std::path::Path) -> Relay {
    Relay::new(
        client,
        "braid-system",
        me,
        port,
        client_config(trust).unwrap(),
        ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into()),
    )
}

fn proxy_headers(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h.insert(POD_HEADER, HeaderValue::from_static("shop/payments-0"));
    h
}

const REPORT: &str = r#"{"ejections": [{"target": "payments.shop:80", "endpoint": "10.0.0.1:8080", "reason": "consecutive_errors", "durationMs": 30000}]}"#;

async fn reports_counted(admin: SocketAddr) -> u64 {
    admin_get(admin, "/metrics")
        .await
        .1
        .lines()
        .find(|l| l.starts_with("braid_operator_proxy_ejection_reports_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_relays_reports_to_the_leader_which_checks_the_proxys_token() {
    let leader = Operator::start(REGISTRY).await;
    let (client, log) = cluster("operator-0", "127.0.0.1");
    let relay = relay(client, "operator-1", leader.listen.port(), &leader.trust);
    let relayed = relay
        .forward(&proxy_headers("payments-token-0123456789"), REPORT.into())
        .await
        .unwrap();
    assert!(relayed);
    eventually("the leader to count the relayed ejection", || async {
        reports_counted(leader.admin).await == 1
    })
    .await;
    let paths: Vec<String> = log.lock().unwrap().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/apis/coordination.k8s.io/v1/namespaces/braid-system/leases/braid-operator",
            "/api/v1/namespaces/braid-system/pods/operator-0"
        ]
    );
    // The leader's address is reused; a wrong token is the leader's to refuse.
    let err = relay
        .forward(&proxy_headers("not-a-token-0123456789"), REPORT.into())
        .await
        .unwrap_err();
    assert!(matches!(err, RelayError::Send { .. }), "{err}");
    assert!(err.to_string().contains("401"), "{err}");
    assert_eq!(log.lock().unwrap().len(), 2);
    assert_eq!(reports_counted(leader.admin).await, 1);
}

#[tokio::test]
async fn the_leader_keeps_its_reports_and_an_unreachable_one_is_an_error() {
    let (client, _) = cluster("operator-0", "127.0.0.1");
    let trust = tempfile::NamedTempFile::new().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(trust.path(), cert.cert.pem()).unwrap();
    let me = relay(client, "operator-0", 1, trust.path());
    assert!(
        !me.forward(&proxy_headers("t"), REPORT.into())
            .await
            .unwrap()
    );
    let (client, _) = cluster("operator-0", "127.0.0.1");
    let port = free_addr().port();
    let follower = relay(client, "operator-1", port, trust.path());
    let err = follower
        .forward(&proxy_headers("t"), REPORT.into())
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("relaying to the leader at 127.0.0.1:{port}")),
        "{err}"
    );
}
