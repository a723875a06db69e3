//! A kubelet-like prober: performs a container's probes the way kubelet's prober does
//! (`pkg/probe/{http,tcp,grpc}` of Kubernetes 1.28), from outside the pod to its IP, so
//! a test can compare what kubelet would conclude about a meshed pod and an unmeshed one.
//!
//! - `httpGet`: `GET <scheme>://<host or pod IP>:<port><path>` with the probe's headers,
//!   `User-Agent: kube-probe/1.28` and `Accept: */*` unless set, one connection per
//!   probe; HTTPS skips certificate verification and sends no SNI for an IP, as kubelet
//!   does. 200..=399 passes.
//! - `tcpSocket`: a connection opens.
//! - `grpc`: `grpc.health.v1.Health/Check` over h2c with the probe's service; SERVING
//!   passes, anything else (another status, an error, a non-zero `grpc-status`) fails.
//!
//! Each is bounded by the probe's `timeoutSeconds` (default 1). Redirects are not
//! followed (kubelet follows same-host ones); the test apps send none.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::{Container, HTTPGetAction, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

use crate::grpc_health;

/// The user agent of a 1.28 kubelet's probes.
pub const USER_AGENT: &str = "kube-probe/1.28";

/// What kubelet concludes from one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The probe passed.
    Success,
    /// It failed, and why.
    Failure(String),
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Success => f.write_str("success"),
            Self::Failure(why) => write!(f, "failure {why}"),
        }
    }
}

/// Every probe of every app container of `pod` (probes of init containers are not
/// kubelet's readiness business here), as `(<container>/<kind>, verdict)`, in order.
pub async fn probe_pod(pod: &Pod, pod_ip: IpAddr) -> Vec<(String, Verdict)> {
    let mut out = Vec::new();
    for c in pod.spec.iter().flat_map(|s| &s.containers) {
        for (kind, probe) in [
            ("liveness", &c.liveness_probe),
            ("readiness", &c.readiness_probe),
            ("startup", &c.startup_probe),
        ] {
            if let Some(probe) = probe {
                out.push((
                    format!("{}/{kind}", c.name),
                    perform(probe, c, pod_ip).await,
                ));
            }
        }
    }
    out
}

/// Performs `probe` of `container` against the pod at `pod_ip`.
pub async fn perform(probe: &Probe, container: &Container, pod_ip: IpAddr) -> Verdict {
    let secs = probe.timeout_seconds.unwrap_or(1).max(1);
    let timeout = Duration::from_secs(u64::try_from(secs).unwrap_or(1));
    match tokio::time::timeout(timeout, run(probe, container, pod_ip)).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => Verdict::Failure(e),
        Err(_) => Verdict::Failure(format!("timed out after {secs}s")),
    }
}

async fn run(probe: &Probe, container: &Container, pod_ip: IpAddr) -> Result<Verdict, String> {
    if let Some(get) = &probe.http_get {
        let port = resolve_port(&get.port, container)?;
        let addr = target(get.host.as_deref(), pod_ip, port).await?;
        http_get(get, addr).await
    } else if let Some(tcp) = &probe.tcp_socket {
        let port = resolve_port(&tcp.port, container)?;
        let addr = target(tcp.host.as_deref(), pod_ip, port).await?;
        TcpStream::connect(addr)
            .await
            .map(|_| Verdict::Success)
            .map_err(|e| format!("dial tcp {addr}: {e}"))
    } else if let Some(g) = &probe.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
        grpc(
            SocketAddr::new(pod_ip, port),
            g.service.as_deref().unwrap_or(""),
        )
        .await
    } else {
        Err("not a probe this prober performs (exec is run in the container)".into())
    }
}

/// kubelet's `ResolveContainerPort`: a number, or the name of a port of the container.
fn resolve_port(port: &IntOrString, container: &Container) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .ok_or_else(|| format!("couldn't find port: {name}"))?,
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

async fn target(host: Option<&str>, pod_ip: IpAddr, port: u16) -> Result<SocketAddr, String> {
    match host.filter(|h| !h.is_empty()) {
        None => Ok(SocketAddr::new(pod_ip, port)),
        Some(h) => tokio::net::lookup_host((h, port))
            .await
            .map_err(|e| format!("{h}: {e}"))?
            .next()
            .ok_or_else(|| format!("{h} has no address")),
    }
}

async fn http_get(get: &HTTPGetAction, addr: SocketAddr) -> Result<Verdict, String> {
    let https = get
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let mut req = http::Request::get(get.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/"));
    let headers = get.http_headers.as_deref().unwrap_or_default();
    let has = |name: &str| headers.iter().any(|h| h.name.eq_ignore_ascii_case(name));
    for h in headers {
        req = req.header(h.name.as_str(), h.value.as_str());
    }
    if !has("host") {
        req = req.header(http::header::HOST, addr.to_string());
    }
    if !has("user-agent") {
        req = req.header(http::header::USER_AGENT, USER_AGENT);
    }
    if !has("accept") {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    // kubelet disables keep-alive: one connection per probe.
    let req = req
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let status = if https {
        let tls = tokio_rustls::TlsConnector::from(Arc::new(
            braid_proxy::tls::unverified::client_config().map_err(|e| e.to_string())?,
        ))
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
        send(tls, req).await?
    } else {
        send(tcp, req).await?
    };
    Ok(if (200..400).contains(&status) {
        Verdict::Success
    } else {
        Verdict::Failure(format!("HTTP probe failed with statuscode: {status}"))
    })
}

async fn send<IO>(io: IO, req: http::Request<Empty<Bytes>>) -> Result<u16, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}

async fn grpc(addr: SocketAddr, service: &str) -> Result<Verdict, String> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("dial tcp {addr}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .map_err(|e| format!("h2 with {addr}: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::post(format!("http://{addr}{}", grpc_health::CHECK_PATH))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, USER_AGENT)
        .body(Full::new(grpc_health::request(service)))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("rpc error: {e}"))?;
    if resp.status() != http::StatusCode::OK {
        return Ok(Verdict::Failure(format!("HTTP status {}", resp.status())));
    }
    let head_status = resp.headers().get("grpc-status").cloned();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("rpc error: {e}"))?;
    let grpc_status = body
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(head_status);
    let code = grpc_status.as_ref().and_then(|v| v.to_str().ok());
    if code != Some("0") {
        return Ok(Verdict::Failure(format!(
            "rpc error: grpc-status {}",
            code.unwrap_or("missing")
        )));
    }
    Ok(match grpc_health::decode_response(&body.to_bytes()) {
        Some(grpc_health::SERVING) => Verdict::Success,
        Some(other) => Verdict::Failure(format!("service unhealthy (responded with {other})")),
        None => Verdict::Failure("malformed HealthCheckResponse".into()),
    })
}
