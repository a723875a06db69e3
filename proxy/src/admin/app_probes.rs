//! The app's probes, performed by the proxy on kubelet's behalf.
//!
//! In a meshed pod kubelet's own probes would go wrong: under strict mTLS its plaintext
//! HTTP, its HTTPS and its gRPC are refused at the app's port, and in every mode a
//! tcpSocket probe is accepted by the proxy's inbound listener whether or not the app
//! listens. So the injector points them at the health port
//! (`/app-health/<container>/<kind>`, a plain `httpGet`) and hands the proxy the
//! originals; the proxy performs each against the app over loopback (its own traffic
//! is not captured) as kubelet would, and answers so that kubelet, which passes an
//! `httpGet` on 200..=399, reaches the verdict it would have reached on the app itself:
//! a pass is 200, a failure the app's own 4xx/5xx or else 503.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;

use tokio::net::TcpStream;

pub use braid_api::probes::{
    AppProbe, AppProbes, GrpcProbe, HttpProbe, ParseError, TcpProbe, parse,
};

/// What the health port needs to perform the probes.
pub struct AppProber {
    probes: AppProbes,
    /// Made once; an error (ring lacking a TLS version) fails the HTTPS probes only.
    tls: Result<Arc<rustls::ClientConfig>, rustls::Error>,
}

impl AppProber {
    /// A prober for `probes`.
    pub fn new(probes: AppProbes) -> Self {
        Self {
            probes,
            tls: crate::tls::unverified::client_config().map(Arc::new),
        }
    }
}

/// How long the proxy waits for the app; kubelet's own timeout usually ends it sooner.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);
/// kubelet's redirect limit: the tenth request answered with a redirect fails.
const MAX_REQUESTS: usize = 10;
/// kubelet reads this much of a probe's answer.
const MAX_BODY: usize = 10 * 1024;
/// The user agent when kubelet's request carried none.
const USER_AGENT: &str = "kube-probe (via braid-proxy)";

/// Why a probe could not be performed: kubelet would call each a failure.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("connect to 127.0.0.1:{port}: {source}")]
    Connect { port: u16, source: std::io::Error },
    #[error("TLS handshake: {0}")]
    Tls(std::io::Error),
    #[error("TLS client: {0}")]
    TlsConfig(rustls::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("the probe's request is invalid: {0}")]
    Request(#[from] http::Error),
    #[error("stopped after {MAX_REQUESTS} redirects")]
    Redirects,
    #[error("redirect to {0:?}: unsupported location")]
    Location(String),
}

/// kubelet's verdict on the app, and a line saying why.
enum Verdict {
    Pass(String),
    Fail(StatusCode, String),
}

/// `GET /app-health/{container}/{kind}`.
pub async fn handle(
    State(prober): State<Arc<AppProber>>,
    Path((container, kind)): Path<(String, String)>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let Some(probe) = prober.probes.get(&format!("{container}/{kind}")) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no {kind} probe of container {container} was handed to the proxy\n"),
        );
    };
    let agent = headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(USER_AGENT);
    let port = probe.port();
    match tokio::time::timeout(PROBE_TIMEOUT, run(&prober, probe, agent)).await {
        Ok(Ok(Verdict::Pass(why))) => (StatusCode::OK, format!("{why}\n")),
        Ok(Ok(Verdict::Fail(status, why))) => (status, format!("{why}\n")),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of 127.0.0.1:{port} failed: {e}\n"),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("probe of 127.0.0.1:{port} timed out\n"),
        ),
    }
}

async fn run(prober: &AppProber, probe: &AppProbe, agent: &str) -> Result<Verdict, ProbeError> {
    match probe {
        AppProbe::Http(p) => http_get(prober, p, false, agent).await,
        AppProbe::Https(p) => http_get(prober, p, true, agent).await,
        AppProbe::Tcp(p) => {
            // kubelet only needs the connection to open.
            connect(p.port).await?;
            Ok(Verdict::Pass(format!("127.0.0.1:{} accepted", p.port)))
        }
        AppProbe::Grpc(p) => grpc(p, agent).await,
    }
}

async fn connect(port: u16) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .await
        .map_err(|source| ProbeError::Connect { port, source })?;
    crate::listen::nodelay(&stream);
    Ok(stream)
}

/// One request of an `httpGet` probe.
struct Get {
    https: bool,
    port: u16,
    path: String,
    /// The `Host` header: the probe's own, else the address dialled, as kubelet sends.
    host: String,
}

/// kubelet's `httpGet`: `GET` with the probe's headers (and `User-Agent`, `Accept: */*`
/// unless set), same-host redirects followed up to its limit; 200..=399 passes.
async fn http_get(
    prober: &AppProber,
    probe: &HttpProbe,
    https: bool,
    agent: &str,
) -> Result<Verdict, ProbeError> {
    let custom_host = probe
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.clone());
    let mut get = Get {
        https,
        port: probe.port,
        path: absolute_path(&probe.path),
        host: custom_host.unwrap_or_else(|| format!("127.0.0.1:{}", probe.port)),
    };
    for _ in 0..MAX_REQUESTS {
        let (status, location) = fetch(prober, &get, &probe.headers, agent).await?;
        let redirect = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let Some(location) = location.filter(|_| redirect) else {
            return Ok(judge(status));
        };
        match follow(&get, &location)? {
            Some(next) => get = next,
            // kubelet stops at a redirect to another host and passes it with a warning.
            None => {
                return Ok(Verdict::Pass(format!(
                    "app answered {} to another host ({location})",
                    status.as_u16()
                )));
            }
        }
    }
    Err(ProbeError::Redirects)
}

fn judge(status: StatusCode) -> Verdict {
    let code = status.as_u16();
    if (200..400).contains(&code) {
        Verdict::Pass(format!("app answered {code}"))
    } else if (400..600).contains(&code) {
        Verdict::Fail(status, format!("app answered {code}"))
    } else {
        Verdict::Fail(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("app answered {code}"),
        )
    }
}

fn absolute_path(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    }
}

/// Where a redirect to `location` leads from `from`: `None` when to another host (only
/// `127.0.0.1`, the address dialled, is this one, as kubelet compares the host it
/// dialled, the pod's IP, with the location's).
fn follow(from: &Get, location: &str) -> Result<Option<Get>, ProbeError> {
    let location = location.split('#').next().unwrap_or_default();
    let absolute = if let Some(rest) = location.strip_prefix("//") {
        Some(format!(
            "{}://{rest}",
            if from.https { "https" } else { "http" }
        ))
    } else if location.contains("://") {
        Some(location.to_owned())
    } else {
        None
    };
    let Some(absolute) = absolute else {
        // Relative: same host, same Host header.
        let path = if location.starts_with('/') {
            location.to_owned()
        } else {
            let base = from.path.split('?').next().unwrap_or("/");
            let dir = base.rsplit_once('/').map(|(d, _)| d).unwrap_or_default();
            format!("{dir}/{location}")
        };
        return Ok(Some(Get {
            path,
            host: from.host.clone(),
            ..*from
        }));
    };
    let bad = || ProbeError::Location(location.to_owned());
    let uri: http::Uri = absolute.parse().map_err(|_| bad())?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.host() != "127.0.0.1" {
        return Ok(None);
    }
    Ok(Some(Get {
        https,
        port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
        path: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        host: authority.as_str().to_owned(),
    }))
}

/// One GET: the status and the `Location`, after reading (some of) the body, as
/// kubelet does: an answer whose body breaks off fails.
async fn fetch(
    prober: &AppProber,
    get: &Get,
    headers: &[(String, String)],
    agent: &str,
) -> Result<(StatusCode, Option<String>), ProbeError> {
    let tcp = connect(get.port).await?;
    let mut req = http::Request::get(get.path.as_str());
    let (mut has_agent, mut has_accept) = (false, false);
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("host") {
            continue;
        }
        has_agent |= name.eq_ignore_ascii_case("user-agent");
        if name.eq_ignore_ascii_case("accept") {
            has_accept = true;
            // kubelet drops an Accept header set empty.
            if value.is_empty() {
                continue;
            }
        }
        req = req.header(name.as_str(), value.as_str());
    }
    if !has_agent {
        req = req.header(http::header::USER_AGENT, agent);
    }
    if !has_accept {
        req = req.header(http::header::ACCEPT, "*/*");
    }
    let req = req
        .header(http::header::HOST, get.host.as_str())
        .header(http::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())?;
    if get.https {
        // No SNI: the name is an IP address, as kubelet's is (the pod's).
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let config = prober.tls.clone().map_err(ProbeError::TlsConfig)?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(ProbeError::Tls)?;
        send_http1(tls, req).await
    } else {
        send_http1(tcp, req).await
    }
}

async fn send_http1<IO>(
    io: IO,
    req: http::Request<Empty<Bytes>>,
) -> Result<(StatusCode, Option<String>), ProbeError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let location = resp
        .headers()
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = resp.into_body();
    let mut read = 0;
    while read < MAX_BODY {
        match body.frame().await {
            None => break,
            Some(frame) => read += frame?.data_ref().map_or(0, Bytes::len),
        }
    }
    Ok((status, location))
}

/// kubelet's gRPC probe: `grpc.health.v1.Health/Check` of the service over h2c;
/// SERVING passes, anything else — another status, a non-zero `grpc-status`, an error
/// — fails.
async fn grpc(probe: &GrpcProbe, agent: &str) -> Result<Verdict, ProbeError> {
    let tcp = connect(probe.port).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let authority = SocketAddr::from((Ipv4Addr::LOCALHOST, probe.port));
    let req = http::Request::post(format!("http://{authority}{}", health::CHECK_PATH))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header(http::header::USER_AGENT, agent)
        .body(Full::new(health::request(&probe.service)))?;
    let resp = send.send_request(req).await?;
    let fail = |why: String| Ok(Verdict::Fail(StatusCode::SERVICE_UNAVAILABLE, why));
    if resp.status() != http::StatusCode::OK {
        return fail(format!("gRPC answered HTTP {}", resp.status().as_u16()));
    }
    // A trailers-only answer carries grpc-status in its headers.
    let head = resp.headers().get("grpc-status").cloned();
    let body = resp.into_body().collect().await?;
    let code = body
        .trailers()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(head);
    match code.as_ref().map(|c| c.to_str()) {
        Some(Ok("0")) => {}
        Some(Ok(code)) => return fail(format!("grpc-status {code}")),
        _ => return fail("no grpc-status".into()),
    }
    match health::decode_response(&body.to_bytes()) {
        Some(health::SERVING) => Ok(Verdict::Pass("SERVING".into())),
        Some(status) => fail(format!("serving status {}", health::status_name(status))),
        None => fail("malformed HealthCheckResponse".into()),
    }
}

/// `grpc.health.v1` on the wire, by hand: two messages of one field each do not
/// justify prost and tonic's compile time.
mod health {
    /// The method's path.
    pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
    /// `ServingStatus.SERVING`.
    pub const SERVING: u64 = 1;

    pub fn status_name(status: u64) -> String {
        match status {
            0 => "UNKNOWN".into(),
            1 => "SERVING".into(),
            2 => "NOT_SERVING".into(),
            3 => "SERVICE_UNKNOWN".into(),
            n => n.to_string(),
        }
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v & 0x7f) as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn varint(buf: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = buf.split_first()?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A gRPC message frame (uncompressed) of `HealthCheckRequest{service = 1}`; proto3
    /// leaves an empty string out.
    pub fn request(service: &str) -> bytes::Bytes {
        let mut msg = Vec::new();
        if !service.is_empty() {
            msg.push(0x0a); // field 1, length-delimited
            put_varint(&mut msg, service.len() as u64);
            msg.extend_from_slice(service.as_bytes());
        }
        let mut out = Vec::with_capacity(5 + msg.len());
        out.push(0);
        out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        out.extend_from_slice(&msg);
        out.into()
    }

    /// `HealthCheckResponse.status` (field 1, an enum) of the first message in `body`;
    /// 0 (UNKNOWN) when absent, `None` when malformed or compressed.
    pub fn decode_response(body: &[u8]) -> Option<u64> {
        let (&compressed, rest) = body.split_first()?;
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if compressed != 0 {
            return None;
        }
        let mut msg = rest.get(4..4 + len)?;
        let mut status = 0;
        while !msg.is_empty() {
            let key = varint(&mut msg)?;
            match key & 7 {
                0 => {
                    let v = varint(&mut msg)?;
                    if key >> 3 == 1 {
                        status = v;
                    }
                }
                2 => {
                    let n = usize::try_from(varint(&mut msg)?).ok()?;
                    msg = msg.get(n..)?;
                }
                1 => msg = msg.get(8..)?,
                5 => msg = msg.get(4..)?,
                _ => return None,
            }
        }
        Some(status)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn the_messages_are_protobufs() {
            assert_eq!(&request("")[..], b"\0\0\0\0\0");
            assert_eq!(&request("shop")[..], b"\0\0\0\0\x06\x0a\x04shop");
            let long = "s".repeat(200);
            assert_eq!(&request(&long)[5..8], b"\x0a\xc8\x01", "a two-byte length");
            assert_eq!(decode_response(b"\0\0\0\0\x02\x08\x01"), Some(SERVING));
            assert_eq!(decode_response(b"\0\0\0\0\x02\x08\x02"), Some(2));
            assert_eq!(decode_response(b"\0\0\0\0\0"), Some(0), "UNKNOWN");
            // Unknown fields are skipped.
            assert_eq!(
                decode_response(b"\0\0\0\0\x06\x12\x02hi\x08\x01"),
                Some(SERVING)
            );
            assert_eq!(decode_response(b"\0\0\0\0\x02\x08"), None, "truncated");
            assert_eq!(
                decode_response(b"\x01\0\0\0\x02\x08\x01"),
                None,
                "compressed"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn redirects_resolve_like_kubelets() {
        let from = Get {
            https: false,
            port: 8080,
            path: "/health/live?x=1".into(),
            host: "app.example".into(),
        };
        let next = follow(&from, "ready").unwrap().unwrap();
        assert_eq!(
            (next.path.as_str(), next.host.as_str()),
            ("/health/ready", "app.example")
        );
        let next = follow(&from, "/other#frag").unwrap().unwrap();
        assert_eq!(next.path, "/other");
        let next = follow(&from, "https://127.0.0.1:8443/x?y")
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                next.https,
                next.port,
                next.path.as_str(),
                next.host.as_str()
            ),
            (true, 8443, "/x?y", "127.0.0.1:8443")
        );
        let next = follow(&from, "//127.0.0.1/z").unwrap().unwrap();
        assert_eq!((next.https, next.port), (false, 80));
        assert!(follow(&from, "http://login.example/").unwrap().is_none());
        assert!(follow(&from, "ftp://127.0.0.1/").is_err());
    }
}
