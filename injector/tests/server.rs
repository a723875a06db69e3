//! The real `braid-injector serve` over HTTPS: the API server's POST of a captured
//! AdmissionReview gets a patch back, and a rotated certificate is picked up live.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_cert(dir: &Path) -> CertificateDer<'static> {
    let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    // Key first, certificate last: the injector reloads once both have changed.
    std::fs::write(dir.join("tls.key"), c.signing_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("tls.crt"), c.cert.pem()).unwrap();
    c.cert.der().clone()
}

/// A TLS connection to the injector trusting only `cert`, offering `alpn`; `None` when
/// the handshake fails.
async fn connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .ok()
}

/// POSTs `body` to /inject trusting only `cert`; `None` when the TLS handshake fails
/// (the server presented another certificate).
async fn post(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    body: Vec<u8>,
) -> Option<(u16, serde_json::Value)> {
    let tls = connect(addr, cert, b"http/1.1").await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post("/inject")
        .header("host", "braid-injector")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Some((status, serde_json::from_slice(&bytes).unwrap_or_default()))
}

/// Starts `braid-injector serve` with `extra` arguments and waits until it listens. The
/// port is picked free and released before the injector binds it, so a test running
/// beside this one can take it first: then the injector exits, and another port is tried
/// (a connection that succeeded would have reached the other test's server).
async fn start(dir: &Path, extra: &[&str]) -> (Killed, SocketAddr) {
    for _ in 0..5 {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut injector = Killed(
            Command::new(env!("CARGO_BIN_EXE_braid-injector"))
                .args(["serve", "--listen", &addr.to_string()])
                .args(["--native-sidecars", "false"])
                .arg("--tls-cert")
                .arg(dir.join("tls.crt"))
                .arg("--tls-key")
                .arg(dir.join("tls.key"))
                .args(extra)
                // Tests run side by side: each its own metrics port unless it asks for one.
                .args(match extra.contains(&"--metrics-addr") {
                    true => vec![],
                    false => vec!["--metrics-addr", "127.0.0.1:0"],
                })
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if injector.0.try_wait().unwrap().is_some() {
                break;
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                // An injector that lost the port exits at once: still running a moment
                // later, it is the one listening.
                tokio::time::sleep(Duration::from_millis(100)).await;
                if injector.0.try_wait().unwrap().is_none() {
                    return (injector, addr);
                }
                break;
            }
            assert!(Instant::now() < deadline, "the injector did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("the injector exited at start five times");
}

#[tokio::test]
async fn the_webhook_answers_over_tls_and_follows_certificate_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let first = write_cert(dir.path());
    let (_injector, addr) = start(dir.path(), &[]).await;
    let review = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/admission/deployment-pod-create.json"),
    )
    .unwrap();
    let (status, answer) = post(addr, &first, review.clone()).await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    // --native-sidecars false: the proxy is an ordinary container with both hooks.
    let patch = answer["response"]["patch"].as_str().unwrap();
    let patch = String::from_utf8(
        base64::Engine::decode(&base64::engine::general_purpose::STANDARD, patch).unwrap(),
    )
    .unwrap();
    assert!(
        patch.contains("wait-app-exit") && patch.contains("wait-ready"),
        "{patch}"
    );

    // Rotate: new connections must present the new certificate (trusting only it).
    std::thread::sleep(Duration::from_millis(20)); // a new modification time
    let second = write_cert(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while post(addr, &second, review.clone()).await.map(|r| r.0) != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        post(addr, &first, review).await.is_none(),
        "the old certificate is gone"
    );
}

#[test]
fn auto_native_sidecars_without_a_cluster_names_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_braid-injector"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .arg("--tls-cert")
        .arg(dir.path().join("tls.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("tls.key"))
        .env("KUBECONFIG", dir.path().join("no-such-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("BRAID_NATIVE_SIDECARS")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("--native-sidecars auto")
            && stderr.contains("pass --native-sidecars true (Kubernetes 1.29+) or false"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_a_v1_admission_review_gets_http_400_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let (_injector, addr) = start(dir.path(), &[]).await;
    let mut review: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/admission/job-pod-create.json"),
        )
        .unwrap(),
    )
    .unwrap();
    review["apiVersion"] = "admission.k8s.io/v9".into();
    for body in [serde_json::to_vec(&review).unwrap(), b"not json".to_vec()] {
        let (status, answer) = post(addr, &cert, body).await.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["response"]["allowed"], false);
        assert!(
            answer["response"]["status"]["message"]
                .as_str()
                .unwrap()
                .starts_with("braid-injector: "),
            "{answer}"
        );
    }
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let (_injector, addr) = start(dir.path(), &["--idle-timeout-seconds", "1"]).await;
    let closed_within = Duration::from_secs(10);

    // TLS done, then not a byte: the server must not wait for a request forever.
    let mut silent = connect(addr, &cert, b"h2").await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(
        closed_within,
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await
    .expect("a silent connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // One request, then idle, over HTTP/1.1 keep-alive and over HTTP/2.
    let request = || {
        http::Request::get("/healthz")
            .header("host", "braid-injector")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let tls = connect(addr, &cert, b"http/1.1").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(send.send_request(request()).await.unwrap().status(), 200);
    tokio::time::timeout(closed_within, conn)
        .await
        .expect("an idle HTTP/1.1 connection is closed")
        .unwrap()
        .ok();

    let tls = connect(addr, &cert, b"h2").await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(send.send_request(request()).await.unwrap().status(), 200);
    tokio::time::timeout(closed_within, conn)
        .await
        .expect("an idle HTTP/2 connection is closed")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn reviews_are_counted_on_the_metrics_port() {
    let dir = tempfile::tempdir().unwrap();
    let cert = write_cert(dir.path());
    let metrics = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let metrics_addr = metrics.to_string();
    let (_injector, addr) = start(dir.path(), &["--metrics-addr", &metrics_addr]).await;
    let (status, _) = post(addr, &cert, b"not a review".to_vec()).await.unwrap();
    assert_eq!(status, 400);
    let stream = tokio::net::TcpStream::connect(metrics).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/metrics")
        .header("host", "prometheus")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(r#"braid_injector_reviews_total{result="invalid"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("braid_injector_review_duration_seconds_count 1"),
        "{text}"
    );
}
