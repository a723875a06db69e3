#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The operator's serving certificate is renewed under a live server: new handshakes get
//! the new certificate, and a connection opened before keeps working.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::routing::get;
use braid_operator::ca::Ca;
use braid_operator::ca::serving::{SERVING_LIFETIME, ServingRotation};
use braid_operator::stream::tls::{serve, server_config};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const NAME: &str = "braid-operator.braid-system.svc";

fn connector(roots: &[CertificateDer<'static>]) -> TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(r.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    // A resumed session skips the certificate (and reports the old one): every
    // handshake here must be a full one to show what is served.
    config.resumption = rustls::client::Resumption::disabled();
    TlsConnector::from(Arc::new(config))
}

async fn connect(tls: &TlsConnector, addr: std::net::SocketAddr) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls.connect(ServerName::try_from(NAME).unwrap(), tcp)
        .await
        .unwrap()
}

fn leaf(conn: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    conn.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One HTTP/1.1 request on a kept-alive connection.
async fn request(conn: &mut TlsStream<TcpStream>) -> String {
    conn.write_all(b"GET / HTTP/1.1\r\nhost: braid\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn a_renewed_certificate_serves_new_handshakes_and_spares_open_connections() {
    let now = SystemTime::now();
    let first_ca = Ca::generate_root(now).unwrap();
    let (mut rotation, cert) =
        ServingRotation::start(&first_ca, &[NAME.to_string()], SERVING_LIFETIME, now).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let router = Router::new().route("/", get(|| async { "ok" }));
    let server = tokio::spawn(serve(
        listener,
        server_config(cert).unwrap(),
        router,
        stop.clone(),
        TaskTracker::new(),
    ));

    // Proxies trusting both roots, as during a rotation.
    let second_ca = Ca::generate_root(now).unwrap();
    let roots: Vec<_> = [&first_ca, &second_ca]
        .iter()
        .flat_map(|ca| ca.trust_bundle().certificates().to_vec())
        .collect();
    let tls = connector(&roots);

    let mut open = connect(&tls, addr).await;
    assert!(request(&mut open).await.starts_with("HTTP/1.1 200"));
    let before = leaf(&open);

    rotation.renew(&second_ca, SystemTime::now()).unwrap();

    // The open connection carries on.
    assert!(request(&mut open).await.starts_with("HTTP/1.1 200"));
    assert_eq!(leaf(&open), before);
    // A new one gets the new certificate, which only the second root verifies.
    let mut fresh = connect(&tls, addr).await;
    assert!(request(&mut fresh).await.starts_with("HTTP/1.1 200"));
    assert_ne!(leaf(&fresh), before);
    let only_first = connector(first_ca.trust_bundle().certificates());
    let tcp = TcpStream::connect(addr).await.unwrap();
    assert!(
        only_first
            .connect(ServerName::try_from(NAME).unwrap(), tcp)
            .await
            .is_err(),
        "the new certificate is the second CA's"
    );

    stop.cancel();
    server.await.unwrap();
}
