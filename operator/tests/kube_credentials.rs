#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Credentials that cannot be used are named as such, not as a missing cluster: a real
//! cluster's kubeconfig held an X.509 v1 client certificate, which rustls refuses.

use braid_operator::kube_mode::{ClusterError, client_from};

#[tokio::test]
async fn a_kubeconfig_with_an_x509_v1_client_certificate_is_named_as_the_problem() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kubeconfig-x509-v1.yaml"
    ))
    .unwrap();
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let Err(err) = client_from(config) else {
        panic!("rustls took an X.509 v1 client certificate");
    };
    assert!(matches!(err, ClusterError::Credentials { .. }), "{err:?}");
    let message = err.to_string();
    assert!(!message.contains("no cluster found"), "{message}");
    assert!(message.contains("X.509 v1"), "{message}");
    assert!(message.contains("credentials"), "{message}");
}
