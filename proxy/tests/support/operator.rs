//! A fake operator in the test process: the config stream and report endpoints over
//! HTTP/2 and TLS, with a self-signed certificate for 127.0.0.1, recording what proxies
//! send and answering what the test says.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use braid_proxy::control::protocol::{
    CONFIG_PATH, ERROR_HEADER, REPORT_PATH, Report, STREAM_CONTENT_TYPE, VERSION_HEADER,
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::eventually;

/// The pod the proxies under test claim to be.
pub const POD_NAMESPACE: &str = "shop";
/// See [`POD_NAMESPACE`].
pub const POD_NAME: &str = "web-0";
/// Stream lines are sent in pieces this large, so a line spans many DATA frames and a
/// frame boundary falls inside a line.
const CHUNK: usize = 7 * 1024;

/// What the fake has seen and will say.
#[derive(Default)]
struct State {
    /// The config a new stream starts with: (version, line).
    current: Option<(String, Bytes)>,
    /// Open streams.
    streams: Vec<mpsc::UnboundedSender<Bytes>>,
    /// Answers for the next stream requests, instead of a stream.
    refusals: VecDeque<(StatusCode, String)>,
    /// Headers of every stream request, in order.
    requests: Vec<HeaderMap>,
    /// Every report, with its headers.
    reports: Vec<(HeaderMap, Report)>,
}

/// The fake operator; stops when dropped.
pub struct FakeOperator {
    pub addr: SocketAddr,
    /// PEM of its (self-signed) certificate: the proxy's `--operator-ca`.
    pub ca: tempfile::NamedTempFile,
    /// The proxy's `--token-file`.
    pub token: tempfile::NamedTempFile,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl FakeOperator {
    /// Listens on a loopback port with a certificate for `127.0.0.1`.
    pub async fn start() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let ca = tempfile::Builder::new().suffix(".pem").tempfile().unwrap();
        std::fs::write(ca.path(), cert.cert.pem()).unwrap();
        let token = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(token.path(), "token-1\n").unwrap();

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = st.cancelled() => return,
                    a = listener.accept() => a.unwrap().0,
                };
                let (acceptor, s, st) = (acceptor.clone(), s.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = service_fn(move |req| handle(s.clone(), req));
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc);
                    // Stopping drops the connection: the proxy sees its operator vanish.
                    tokio::select! {
                        _ = st.cancelled() => {}
                        _ = conn => {}
                    }
                });
            }
        });
        Self {
            addr,
            ca,
            token,
            state,
            stop,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The `braid-proxy run` flags that point a proxy at this operator.
    pub fn proxy_args(&self) -> Vec<OsString> {
        vec![
            "--operator".into(),
            self.url().into(),
            "--operator-ca".into(),
            self.ca.path().into(),
            "--token-file".into(),
            self.token.path().into(),
            "--pod-name".into(),
            POD_NAME.into(),
            "--pod-namespace".into(),
            POD_NAMESPACE.into(),
        ]
    }

    /// Replaces the token file's content (as the kubelet rotates it).
    pub fn rotate_token(&self, token: &str) {
        std::fs::write(self.token.path(), format!("{token}\n")).unwrap();
    }

    /// Answers the next stream request with `status` and `reason`.
    pub fn refuse_next(&self, status: u16, reason: &str) {
        self.state()
            .refusals
            .push_back((StatusCode::from_u16(status).unwrap(), reason.to_owned()));
    }

    /// Makes `line` (a config of `version`) current: sent to every open stream now, and
    /// first on every new stream whose `x-braid-version` is not `version`.
    pub fn publish(&self, version: &str, line: &str) {
        let line = Bytes::from(format!("{line}\n"));
        let mut state = self.state();
        state.current = Some((version.to_owned(), line.clone()));
        send(&mut state, &line);
    }

    /// Makes `line` (a config of `version`) what new streams start with, without sending
    /// it to the open ones.
    pub fn set_current(&self, version: &str, line: &str) {
        self.state().current = Some((version.to_owned(), Bytes::from(format!("{line}\n"))));
    }

    /// Sends `line` to the open streams without making it current (a line the proxy
    /// must refuse).
    pub fn send_line(&self, line: &str) {
        send(&mut self.state(), &Bytes::from(format!("{line}\n")));
    }

    /// Sends an empty line (a heartbeat) to the open streams.
    pub fn heartbeat(&self) {
        send(&mut self.state(), &Bytes::from_static(b"\n"));
    }

    /// Ends every open stream cleanly (the proxy sees the end of its body).
    pub fn end_streams(&self) {
        self.state().streams.clear();
    }

    /// Closes the listener and drops every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Headers of every stream request so far.
    pub fn stream_requests(&self) -> Vec<HeaderMap> {
        self.state().requests.clone()
    }

    /// Every report so far, with its headers.
    pub fn reports(&self) -> Vec<(HeaderMap, Report)> {
        self.state().reports.clone()
    }

    /// Waits for `n` stream requests.
    pub async fn wait_for_stream_requests(&self, n: usize) {
        eventually(&format!("{n} stream requests"), || async move {
            self.state().requests.len() >= n
        })
        .await;
    }

    /// Waits for a report matching `matches` and returns it.
    pub async fn wait_for_report(&self, what: &str, matches: impl Fn(&Report) -> bool) -> Report {
        let matches = &matches;
        eventually(&format!("a report: {what}"), || async move {
            self.state().reports.iter().any(|(_, r)| matches(r))
        })
        .await;
        self.state()
            .reports
            .iter()
            .find(|(_, r)| matches(r))
            .map(|(_, r)| r.clone())
            .unwrap()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }
}

impl Drop for FakeOperator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sends `line` in [`CHUNK`]-sized pieces to every open stream, forgetting closed ones.
fn send(state: &mut State, line: &Bytes) {
    state.streams.retain(|tx| {
        (0..line.len()).step_by(CHUNK).all(|at| {
            tx.send(line.slice(at..(at + CHUNK).min(line.len())))
                .is_ok()
        })
    });
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let resp = match (parts.method, parts.uri.path()) {
        (Method::GET, CONFIG_PATH) => {
            let mut state = state.lock().unwrap();
            state.requests.push(parts.headers.clone());
            if let Some((status, reason)) = state.refusals.pop_front() {
                Response::builder()
                    .status(status)
                    .header(ERROR_HEADER, &reason)
                    .body(Full::new(Bytes::from(reason)).boxed())
                    .unwrap()
            } else {
                let (tx, rx) = mpsc::unbounded_channel();
                let held = parts
                    .headers
                    .get(VERSION_HEADER)
                    .and_then(|v| v.to_str().ok());
                if let Some((version, line)) = &state.current
                    && held != Some(version.as_str())
                {
                    tx.send(line.clone()).unwrap();
                }
                state.streams.push(tx);
                Response::builder()
                    .header(http::header::CONTENT_TYPE, STREAM_CONTENT_TYPE)
                    .body(Lines(rx).boxed())
                    .unwrap()
            }
        }
        (Method::POST, REPORT_PATH) => {
            let bytes = body.collect().await.unwrap().to_bytes();
            let report: Report = serde_json::from_slice(&bytes).unwrap();
            state.lock().unwrap().reports.push((parts.headers, report));
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()).boxed())
                .unwrap()
        }
        _ => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()).boxed())
            .unwrap(),
    };
    Ok(resp)
}

/// A stream body fed by [`FakeOperator::publish`]; ends when its sender is dropped.
struct Lines(mpsc::UnboundedReceiver<Bytes>);

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}
