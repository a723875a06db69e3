//! The app's HTTP probes, performed by the proxy on kubelet's behalf.
//!
//! Under strict mTLS kubelet's plaintext probes would be refused at the app's port, so
//! the injector points them at the health port (`/app-health/<container>/<kind>`) and
//! hands the proxy the originals; the proxy runs each against the app over loopback and
//! answers with the app's status.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

/// One original HTTP probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpProbe {
    /// The app's port.
    pub port: u16,
    /// The path, with its query.
    #[serde(default = "root")]
    pub path: String,
    /// Extra request headers (`Host` among them, when the probe set one).
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

fn root() -> String {
    "/".into()
}

/// The probes by `<container>/<kind>` (kind: `liveness`, `readiness` or `startup`).
pub type AppProbes = HashMap<String, HttpProbe>;

/// Parses `--app-probes` (JSON, as the injector writes it).
pub fn parse(json: &str) -> Result<AppProbes, String> {
    if json.trim().is_empty() {
        return Ok(AppProbes::new());
    }
    serde_json::from_str(json).map_err(|e| format!("--app-probes: {e}"))
}

/// How long the proxy waits for the app; kubelet's own timeout usually ends it sooner.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /app-health/{container}/{kind}`.
pub async fn handle(
    State(probes): State<std::sync::Arc<AppProbes>>,
    Path((container, kind)): Path<(String, String)>,
) -> impl IntoResponse {
    let Some(probe) = probes.get(&format!("{container}/{kind}")) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no {kind} probe of container {container} was handed to the proxy\n"),
        );
    };
    match tokio::time::timeout(PROBE_TIMEOUT, run(probe)).await {
        Ok(Ok(status)) => (status, format!("app answered {}\n", status.as_u16())),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of 127.0.0.1:{} failed: {e}\n", probe.port),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of 127.0.0.1:{} timed out\n", probe.port),
        ),
    }
}

async fn run(probe: &HttpProbe) -> Result<StatusCode, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", probe.port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = http::Request::get(probe.path.as_str());
    let mut has_host = false;
    for (name, value) in &probe.headers {
        has_host |= name.eq_ignore_ascii_case("host");
        req = req.header(name.as_str(), value.as_str());
    }
    if !has_host {
        req = req.header(http::header::HOST, format!("127.0.0.1:{}", probe.port));
    }
    let req = req
        .header(http::header::USER_AGENT, "kube-probe (via braid-proxy)")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(resp.status())
}
