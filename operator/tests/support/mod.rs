//! Test support: the real `braid-operator` on the directory source and the real
//! `braid-proxy` streaming from it, both on loopback.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// A free loopback address (bound, then released for the process under test).
pub fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The `braid-proxy` binary: next to the operator's, built when a `-p braid-operator`
/// run has not built it.
pub fn proxy_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_braid-operator")).with_file_name("braid-proxy");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let ok = Command::new(cargo)
            .args(["build", "-q", "-p", "braid-proxy", "--bin", "braid-proxy"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "building braid-proxy failed");
    }
    bin
}

/// Polls `check` every 20 ms until it holds; panics after 15 s naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Kills the child on drop, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `braid-operator --source dir:...` with its directory, tokens and trust file.
pub struct Operator {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub trust: PathBuf,
    pub process: Running,
}

/// Tokens the tests use: one per service account.
pub const TOKENS: &str = "\
- {token: payments-token-0123456789, namespace: shop, serviceAccount: payments}
- {token: checkout-token-0123456789, namespace: shop, serviceAccount: checkout}
";

impl Operator {
    /// Starts the operator on a directory holding `registry`, waits until it is ready.
    pub async fn start(registry: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("registry.yaml"), registry).unwrap();
        let tokens = dir.path().join(".tokens.yaml");
        std::fs::write(&tokens, TOKENS).unwrap();
        let trust = dir.path().join(".operator-ca.pem");
        let (listen, admin) = (free_addr(), free_addr());
        let child = Command::new(env!("CARGO_BIN_EXE_braid-operator"))
            .arg("--source")
            .arg(format!("dir:{}", dir.path().display()))
            .arg("--bootstrap-tokens")
            .arg(&tokens)
            .args([
                "--listen",
                &listen.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .args([
                "--tls-san",
                "127.0.0.1",
                "--poll-ms",
                "50",
                "--pod-wait-ms",
                "500",
            ])
            .arg("--tls-trust-out")
            .arg(&trust)
            .args(["--log-level", "info,braid_operator=debug"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let op = Self {
            dir,
            listen,
            admin,
            trust,
            process: Running(child),
        };
        eventually("the operator to be ready", || async {
            admin_get(op.admin, "/readyz").await.0 == 200
        })
        .await;
        op
    }

    /// Writes a file into the watched directory (rename into place, as editors and
    /// ConfigMap updates do, so the operator never reads half a file).
    pub fn write(&self, name: &str, text: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    /// The status file of a resource, once written.
    pub fn status(&self, kind: &str, ns: &str, name: &str) -> Option<serde_json::Value> {
        let path = self
            .dir
            .path()
            .join(".status")
            .join(format!("{}.{ns}.{name}.yaml", kind.to_lowercase()));
        let text = std::fs::read_to_string(path).ok()?;
        serde_norway::from_str(&text).ok()
    }

    /// Starts a proxy for `ns/pod` presenting `token`, streaming from this operator.
    pub fn proxy(&self, ns: &str, pod: &str, token: &str) -> ProxyProcess {
        self.proxy_with(ns, pod, token, &[])
    }

    /// As [`Self::proxy`], with more flags.
    pub fn proxy_with(&self, ns: &str, pod: &str, token: &str, extra: &[&str]) -> ProxyProcess {
        let token_file = self.dir.path().join(format!(".token-{pod}"));
        std::fs::write(&token_file, token).unwrap();
        let (admin, health) = (free_addr(), free_addr());
        let child = Command::new(proxy_bin())
            .args(["run", "--no-capture"])
            .args(["--operator", &format!("https://{}", self.listen)])
            .arg("--operator-ca")
            .arg(&self.trust)
            .arg("--token-file")
            .arg(&token_file)
            .args(["--pod-name", pod, "--pod-namespace", ns])
            .args([
                "--admin-addr",
                &admin.to_string(),
                "--health-addr",
                &health.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        ProxyProcess {
            admin,
            process: Running(child),
        }
    }

    /// A request to the config server, over TLS and HTTP/2.
    async fn send(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> http::Response<hyper::body::Incoming> {
        let pem = std::fs::read(&self.trust).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.listen).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.listen));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        send.send_request(req.body(http_body_util::Full::new(body)).unwrap())
            .await
            .unwrap()
    }

    /// A POST of `body` to `path` with `headers`: the status, `x-braid-error` and the body.
    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> (u16, Option<String>, String) {
        let resp = self
            .send(
                http::Method::POST,
                path,
                headers,
                Bytes::from(body.to_owned()),
            )
            .await;
        let (status, reason) = status_and_reason(&resp);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, reason, String::from_utf8_lossy(&body).into_owned())
    }

    /// Has `ns/pod`'s stream send it the service behind `address`, as its proxy does
    /// the first time its app connects there (once the proxy's stream is open): the
    /// service's `namespace/name`, if any.
    pub async fn discover(
        &self,
        ns: &str,
        pod: &str,
        token: &str,
        address: &str,
    ) -> Option<String> {
        let ask = || async {
            self.post(
                "/v1/discover",
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("x-braid-pod", &format!("{ns}/{pod}")),
                    ("content-type", "application/json"),
                ],
                &format!(r#"{{"address":"{address}"}}"#),
            )
            .await
        };
        eventually("the proxy's stream to be open for a discovery", || async {
            ask().await.0 != 409
        })
        .await;
        let (status, reason, body) = ask().await;
        assert_eq!(status, 200, "{reason:?} {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        let service = &answer["service"];
        service["name"]
            .as_str()
            .map(|name| format!("{}/{name}", service["namespace"].as_str().unwrap()))
    }

    /// A GET on the config stream with the given headers, over TLS and HTTP/2, returning
    /// the status, the `x-braid-error` header and the body's first line (however many
    /// frames it spans; what arrived within 2 s when no line completes).
    pub async fn stream_get(&self, headers: &[(&str, &str)]) -> (u16, Option<String>, String) {
        let resp = self
            .send(http::Method::GET, "/v1/config", headers, Bytes::new())
            .await;
        let (status, reason) = status_and_reason(&resp);
        let mut body = resp.into_body();
        let mut first = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while !first.contains(&b'\n') {
            let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline, body.frame()).await else {
                break;
            };
            if let Ok(data) = frame.into_data() {
                first.extend_from_slice(&data);
            }
        }
        (status, reason, String::from_utf8_lossy(&first).into_owned())
    }
}

/// A running proxy and its admin address.
pub struct ProxyProcess {
    pub admin: SocketAddr,
    pub process: Running,
}

impl ProxyProcess {
    /// The proxy's `/config_dump`, parsed (null until it answers).
    pub async fn config_dump(&self) -> serde_json::Value {
        let (code, body) = admin_get(self.admin, "/config_dump").await;
        if code != 200 {
            return serde_json::Value::Null;
        }
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// The names of the services the proxy holds.
    pub async fn services(&self) -> Vec<String> {
        self.config_dump().await["services"]
            .as_array()
            .map(|s| {
                s.iter()
                    .map(|s| s["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until the proxy holds a first config.
    pub async fn first_config(&self) {
        eventually("the proxy's first config", || async {
            !self.config_dump().await["version"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
        })
        .await;
    }
}

/// A plain HTTP/1.1 GET; (0, "") when nothing answers.
pub async fn admin_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
    else {
        return (0, String::new());
    };
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let Ok(resp) = send.send_request(req).await else {
        return (0, String::new());
    };
    let code = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (code, String::from_utf8_lossy(&body).into_owned())
}

/// A response's status and `x-braid-error`.
fn status_and_reason<B>(resp: &http::Response<B>) -> (u16, Option<String>) {
    let reason = resp
        .headers()
        .get("x-braid-error")
        .map(|v| v.to_str().unwrap().to_string());
    (resp.status().as_u16(), reason)
}
