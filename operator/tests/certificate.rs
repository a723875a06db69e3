#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Proxies' certificates from the real operator (directory mode, its own CA): a CSR with
//! the pod's token gets the identity of the pod's service account, whatever the CSR asks
//! for; a token for another service account, a bad CSR and a missing token are refused.

mod support;

use braid_api::control::{CERTIFICATE_PATH, CertificateResponse, POD_HEADER};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use support::Operator;
use x509_parser::prelude::{FromDer, X509Certificate};

const REGISTRY: &str = r#"
services: []
workloads:
- {name: payments-0, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
"#;

fn csr_json(names: &[&str]) -> String {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let pem = params.serialize_request(&key).unwrap().pem().unwrap();
    serde_json::json!({ "csr": pem }).to_string()
}

fn auth(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_gets_the_certificate_of_its_service_account_and_nothing_else() {
    let op = Operator::start(REGISTRY).await;
    let payments = auth("payments-token-0123456789");
    let headers = [
        ("authorization", payments.as_str()),
        (POD_HEADER, "shop/payments-0"),
    ];
    let (status, reason, body) = op
        .post(CERTIFICATE_PATH, &headers, &csr_json(&["ledger.bank.svc"]))
        .await;
    assert_eq!(status, 200, "{reason:?} {body}");
    let answer: CertificateResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer.identity,
        "spiffe://cluster.local/ns/shop/sa/payments"
    );
    let chain: Vec<CertificateDer> = CertificateDer::pem_slice_iter(answer.chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, ["URI(spiffe://cluster.local/ns/shop/sa/payments)"]);
    // About a day (the default lifetime), and the bundle verifies it.
    let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp())
        as f64
        / 86_400.0;
    assert!((1.0..1.01).contains(&days), "{days}");
    assert!(
        answer
            .not_after
            .starts_with(&leaf.validity().not_after.to_datetime().year().to_string())
    );
    let root = CertificateDer::pem_slice_iter(answer.trust_bundle.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    let (_, root) = X509Certificate::from_der(&root).unwrap();
    leaf.verify_signature(Some(root.public_key())).unwrap();

    // The checkout token cannot get a certificate in payments-0's name.
    let checkout = auth("checkout-token-0123456789");
    let (status, reason, _) = op
        .post(
            CERTIFICATE_PATH,
            &[
                ("authorization", checkout.as_str()),
                (POD_HEADER, "shop/payments-0"),
            ],
            &csr_json(&[]),
        )
        .await;
    assert_eq!(status, 403, "{reason:?}");
    // No token; a body that is no CSR.
    let (status, _, _) = op
        .post(
            CERTIFICATE_PATH,
            &[(POD_HEADER, "shop/payments-0")],
            &csr_json(&[]),
        )
        .await;
    assert_eq!(status, 401);
    let (status, reason, _) = op
        .post(CERTIFICATE_PATH, &headers, r#"{"csr": "hello"}"#)
        .await;
    assert_eq!(status, 400);
    assert!(reason.unwrap().contains("the CSR does not parse"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_holds_a_certificate_from_the_operator_soon_after_start() {
    let op = Operator::start(REGISTRY).await;
    let proxy = op.proxy("shop", "payments-0", "payments-token-0123456789");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    support::eventually("the proxy's certificate", || async {
        let metrics = support::admin_get(proxy.admin, "/metrics").await.1;
        metrics
            .lines()
            .find(|l| l.starts_with("braid_identity_expiry_timestamp_seconds"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            // A day from now (the default lifetime).
            .is_some_and(|t| t > now + 86_000.0 && t < now + 86_500.0)
    })
    .await;
}
