//! The client of the operator's config stream: keeps one `GET /v1/config` open, applies
//! each config line through [`TableStore::apply`], reports the outcome on
//! `POST /v1/report`, and reconnects with backoff for as long as the proxy runs. The
//! config in force stays in force whatever the stream does.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::lines::{LineSplitter, LineTooLong, MAX_LINE};
use super::protocol::delta::{DeltaError, DeltaLine, ServiceRef};
use super::protocol::{
    ACCEPT_DELTA, ACCEPT_HEADER, ACCEPT_ON_DEMAND, CERTIFICATE_PATH, CONFIG_PATH,
    CertificateRequest, CertificateResponse, DISCOVER_PATH, DiscoverRequest, DiscoverResponse,
    ERROR_HEADER, FORGET_PATH, ForgetRequest, POD_HEADER, PROXY_VERSION_HEADER, PodRef,
    REPORT_PATH, Rejected, Report, SERVICES_HEADER, VERSION_HEADER,
};
use super::tls::{self, TlsError};
use super::url::OperatorUrl;
use crate::backoff::Backoff;
use crate::config::ProxyConfig;
use crate::reports::EjectionLog;
use crate::reports::TrafficLog;
use crate::tables::{TableStore, parse_delta, parse_json};

/// TCP connect plus TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Ejections are batched and reported this often.
const EJECTION_REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// A proxy with nothing else to say still reports the version it holds this often: every
/// operator replica passes reports on to the leader, which counts applied versions, so
/// after a failover the new leader knows every proxy within this time.
pub const APPLIED_REPORT_INTERVAL: Duration = Duration::from_secs(10);
/// From sending a request to its response headers.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// HTTP/2 pings: a silently dead operator (node gone, network partition) is noticed
/// within interval + timeout even while the stream has nothing to say.
const PING_INTERVAL: Duration = Duration::from_secs(10);
const PING_TIMEOUT: Duration = Duration::from_secs(10);
/// A discovery holds up the first connection to a new destination: it may take this
/// long before the connection passes through instead.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// How much of a refusal's body is read for its reason.
const MAX_REASON: usize = 4096;

/// Where the operator is and who this proxy is.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// The operator's URL.
    pub url: OperatorUrl,
    /// PEM trust anchors for the operator's serving certificate.
    pub ca_file: PathBuf,
    /// The pod's ServiceAccount token, re-read on every connect.
    pub token_file: PathBuf,
    /// The pod this proxy runs in.
    pub pod: PodRef,
    /// Whether it holds only the services its app calls (found on demand).
    pub on_demand: bool,
}

/// Why a stream ended. Each is logged once, then the client reconnects.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The trust anchors could not be loaded.
    #[error("--operator-ca: {0}")]
    Tls(#[from] TlsError),
    /// The token could not be read.
    #[error("reading the token {path}: {source}")]
    Token {
        /// The token file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The token file holds no usable token.
    #[error("the token file {0} is empty or not a valid header value")]
    BadToken(PathBuf),
    /// TCP or TLS towards the operator failed.
    #[error("connecting to {url}: {source}")]
    Connect {
        /// The operator.
        url: String,
        /// What failed.
        source: std::io::Error,
    },
    /// A step took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// HTTP/2 failed (including a ping the operator did not answer).
    #[error("HTTP/2: {}", with_causes(.0))]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("building the request: {0}")]
    Request(#[from] http::Error),
    /// The operator refused the stream.
    #[error("the operator answered {status}: {reason}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its `x-braid-error`, else the start of its body.
        reason: String,
    },
    /// A line exceeded the bound.
    #[error(transparent)]
    LineTooLong(#[from] LineTooLong),
    /// The operator closed the stream.
    #[error("the operator ended the stream")]
    Ended,
    /// A delta did not fit the config it applies to: reconnecting resynchronises.
    #[error("{0}; reconnecting for the whole config")]
    Delta(#[from] DeltaError),
    /// The operator's certificate answer is unusable.
    #[error("certificate answer: {0}")]
    Certificate(serde_json::Error),
    /// The operator's answer to a discovery is unusable.
    #[error("discovery answer: {0}")]
    Answer(serde_json::Error),
    /// No stream is open to ask on.
    #[error("no config stream is open")]
    NotConnected,
}

/// Keeps the proxy's config current from the operator.
pub struct OperatorClient {
    settings: ClientSettings,
    store: Arc<TableStore>,
    ejections: Arc<EjectionLog>,
    traffic: Arc<TrafficLog>,
    /// The open stream's connection, with its credentials: discoveries go there, to the
    /// replica that streams this proxy its config.
    open: OpenSlot,
    /// The certificate in force, whose expiry reports carry.
    identity: Option<Arc<crate::identity::IdentityStore>>,
}

/// The open stream's connection and credentials, while there is one.
type OpenSlot = std::sync::Mutex<Option<(http2::SendRequest<Full<Bytes>>, HeaderValue)>>;

impl OperatorClient {
    /// A client applying to `store`. Loads the trust anchors once so a wrong
    /// `--operator-ca` stops the proxy at start-up rather than in a retry loop.
    pub fn new(settings: ClientSettings, store: Arc<TableStore>) -> Result<Self, TlsError> {
        tls::client_config(&settings.ca_file)?;
        Ok(Self {
            settings,
            store,
            ejections: Arc::default(),
            traffic: Arc::default(),
            open: std::sync::Mutex::new(None),
            identity: None,
        })
    }

    /// Reports the requests counted in `log` (every few seconds, while connected).
    pub fn with_traffic(mut self, log: Arc<TrafficLog>) -> Self {
        self.traffic = log;
        self
    }

    /// Reports when the certificate in `store` expires: the one in force, not the last one
    /// signed (a renewal the proxy refused leaves the old one in force).
    pub fn with_identity(mut self, store: Arc<crate::identity::IdentityStore>) -> Self {
        self.identity = Some(store);
        self
    }

    /// Reports the ejections queued in `log` (every few seconds, while connected).
    pub fn with_ejections(mut self, log: Arc<EjectionLog>) -> Self {
        self.ejections = log;
        self
    }

    /// Streams until `stop` fires: connects, applies and reports each config, and after
    /// any failure or end of stream waits (exponential backoff with full jitter, reset
    /// by a stream the operator accepted) and connects again. The same client (shared)
    /// also has the proxy's certificate signed ([`Self::certify`]).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut backoff = Backoff::default();
        loop {
            let mut delivered = false;
            let error = tokio::select! {
                _ = stop.cancelled() => return,
                e = self.stream(&mut delivered) => e,
            };
            if delivered {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            tracing::warn!(
                operator = %self.settings.url,
                error = %error,
                retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                in_force = %self.in_force().as_deref().unwrap_or("none"),
                "config stream interrupted; keeping the config in force"
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One connection: returns why it ended. Sets `delivered` once the operator accepts it.
    async fn stream(&self, delivered: &mut bool) -> StreamError {
        let Err(e) = self.try_stream(delivered).await;
        e
    }

    async fn try_stream(
        &self,
        delivered: &mut bool,
    ) -> Result<std::convert::Infallible, StreamError> {
        let auth = self.authorization()?;
        let mut sender = self.connect().await?;
        let mut req = self.request(Method::GET, CONFIG_PATH, &auth, Bytes::new())?;
        if self.settings.on_demand {
            let accept = format!("{ACCEPT_DELTA}, {ACCEPT_ON_DEMAND}");
            if let Ok(v) = HeaderValue::from_str(&accept) {
                req.headers_mut().insert(ACCEPT_HEADER, v);
            }
            // What it holds, so a reconnect (to a restarted operator, say) keeps it.
            let held = self.store.with_tables(|t| {
                ServiceRef::header(
                    &t.config
                        .services
                        .iter()
                        .map(ServiceRef::of)
                        .collect::<Vec<_>>(),
                )
            });
            // Names are DNS labels, always a valid header value.
            if !held.is_empty()
                && let Ok(v) = HeaderValue::from_str(&held)
            {
                req.headers_mut().insert(SERVICES_HEADER, v);
            }
        } else {
            req.headers_mut()
                .insert(ACCEPT_HEADER, HeaderValue::from_static(ACCEPT_DELTA));
        }
        if let Some(version) = self.in_force()
            && let Ok(v) = HeaderValue::from_str(&version)
        {
            req.headers_mut().insert(VERSION_HEADER, v);
        }
        let resp = timed(
            "the config request",
            RESPONSE_TIMEOUT,
            sender.send_request(req),
        )
        .await??;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        // Accepted: the operator is back. A reconnect that already holds the current
        // version gets no line, so waiting for one would let the backoff grow with
        // every operator restart.
        *delivered = true;
        tracing::info!(operator = %self.settings.url, pod = %self.settings.pod, "config stream open");
        let _open = Open::new(&self.open, sender.clone(), auth.clone());

        let mut body = resp.into_body();
        let mut lines = LineSplitter::new(MAX_LINE);
        // The last config this stream sent (applied or refused): what its next delta
        // applies to. Until there is one, the config in force.
        let mut received: Option<Arc<ProxyConfig>> = None;
        let mut flush = tokio::time::interval(EJECTION_REPORT_INTERVAL);
        // The replica reached may not lead: say at once what is held, so the leader
        // counts this proxy without waiting for a change (a reconnect holding the current
        // version gets no line to apply).
        let mut reported = tokio::time::Instant::now();
        if let (Some(version), held_services) = held(&self.store, self.settings.on_demand) {
            let mut report = Report {
                applied_version: Some(version),
                held_services,
                ..Default::default()
            };
            self.report(&mut sender, &auth, &mut report).await;
        }
        loop {
            let frame = tokio::select! {
                frame = body.frame() => frame,
                _ = flush.tick() => {
                    let ejections = self.ejections.drain();
                    let (traffic, access) = self.store.with_tables(|t| {
                        let traffic = self.traffic.take(t.targets().map(|t| (&*t.label, &*t.traffic)));
                        (traffic, t.access.take())
                    });
                    let due = reported.elapsed() >= APPLIED_REPORT_INTERVAL;
                    if !ejections.is_empty() || traffic.is_some() || !access.is_empty() || due {
                        let (applied_version, held_services) = held(&self.store, self.settings.on_demand);
                        let mut report = Report {
                            applied_version,
                            held_services,
                            ejections,
                            traffic,
                            access,
                            ..Default::default()
                        };
                        if !self.report(&mut sender, &auth, &mut report).await && !report.access.is_empty() {
                            // Evidence lost would look like a clean interval to the operator.
                            self.store.with_tables(|t| t.access.restore(&report.access));
                        }
                        reported = tokio::time::Instant::now();
                    }
                    continue;
                }
            };
            let Some(frame) = frame else {
                if lines.pending() > 0 {
                    tracing::warn!(
                        bytes = lines.pending(),
                        "the stream ended inside a config line; it is dropped"
                    );
                }
                return Err(StreamError::Ended);
            };
            let Ok(data) = frame?.into_data() else {
                continue; // trailers carry nothing for us
            };
            lines.push(&data);
            while let Some(line) = lines.next_line()? {
                if line.is_empty() {
                    continue; // heartbeat
                }
                *delivered = true;
                let (mut report, now_held) = self.apply(line, received.take()).await?;
                received = now_held;
                self.report(&mut sender, &auth, &mut report).await;
                reported = tokio::time::Instant::now();
            }
        }
    }

    /// Parses and applies one config line off the async workers: a large mesh's config
    /// takes a while to compile and the proxy may have a single worker, which must keep
    /// forwarding meanwhile. A delta applies to `received` (else the config in force);
    /// one that does not fit it ends the stream, and the reconnect names the version in
    /// force, so the operator sends it whole.
    async fn apply(
        &self,
        line: Bytes,
        received: Option<Arc<ProxyConfig>>,
    ) -> Result<(Report, Option<Arc<ProxyConfig>>), StreamError> {
        let store = self.store.clone();
        let owned = line.clone(); // Bytes: a reference count, not a copy
        let on_demand = self.settings.on_demand;
        match tokio::task::spawn_blocking(move || apply_line(&store, &owned, received, on_demand))
            .await
        {
            Ok(outcome) => Ok(outcome?),
            Err(e) => Ok((
                Report {
                    applied_version: self.in_force(),
                    rejected: Some(Rejected {
                        version: line_version(&line),
                        error: format!("applying the config failed: {e}"),
                    }),
                    ..Default::default()
                },
                None,
            )),
        }
    }

    /// Posts `report`, stamped with the expiry of the certificate in force, on the stream's
    /// connection. A lost report is logged, not retried:
    /// the next connect tells the operator the version in force anyway.
    async fn report(
        &self,
        sender: &mut http2::SendRequest<Full<Bytes>>,
        auth: &HeaderValue,
        report: &mut Report,
    ) -> bool {
        report.certificate_expires_unix = self
            .identity
            .as_ref()
            .and_then(|store| store.current())
            .and_then(|c| c.not_after.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let outcome = async {
            let body = serde_json::to_vec(&*report).map_err(|e| e.to_string())?;
            let req = self
                .json_post(REPORT_PATH, auth, body.into())
                .map_err(|e| e.to_string())?;
            let resp = timed("the report", RESPONSE_TIMEOUT, sender.send_request(req))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            if resp.status().is_success() {
                Ok(())
            } else {
                Err(refusal(resp).await.to_string())
            }
        };
        match outcome.await {
            Ok(()) => {
                tracing::debug!(?report, "reported to the operator");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, ?report, "report to the operator failed");
                false
            }
        }
    }

    /// The service behind `address`, an address the config does not know, asked on the
    /// open stream's connection (so the replica streaming this proxy sends it); `None`
    /// when it is no mesh service's.
    pub async fn discover(&self, address: IpAddr) -> Result<Option<ServiceRef>, StreamError> {
        let body = serde_json::to_vec(&DiscoverRequest { address }).map_err(StreamError::Answer)?;
        let resp = self.post_on_stream(DISCOVER_PATH, body).await?;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        let body = timed(
            "the discovery",
            DISCOVER_TIMEOUT,
            resp.into_body().collect(),
        )
        .await??
        .to_bytes();
        let answer: DiscoverResponse =
            serde_json::from_slice(&body).map_err(StreamError::Answer)?;
        Ok(answer.service)
    }

    /// Has the open stream stop sending `services`, which the app no longer calls.
    pub async fn forget(&self, services: Vec<ServiceRef>) -> Result<(), StreamError> {
        let body = serde_json::to_vec(&ForgetRequest { services }).map_err(StreamError::Answer)?;
        let resp = self.post_on_stream(FORGET_PATH, body).await?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        Ok(())
    }

    /// POSTs `body` (JSON) to `path` on the open stream's connection, so that the replica
    /// streaming to this proxy is the one that hears it.
    async fn post_on_stream(
        &self,
        path: &str,
        body: Vec<u8>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, StreamError> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((mut sender, auth)) = open else {
            return Err(StreamError::NotConnected);
        };
        let req = self.json_post(path, &auth, body.into())?;
        Ok(timed("the request", DISCOVER_TIMEOUT, sender.send_request(req)).await??)
    }

    /// Has `csr_pem` (a CSR signed by this proxy's key) signed: the certificate of this
    /// pod's identity. One request on a connection of its own.
    pub async fn certify(&self, csr_pem: String) -> Result<CertificateResponse, StreamError> {
        let auth = self.authorization()?;
        let mut sender = self.connect().await?;
        let body = serde_json::to_vec(&CertificateRequest { csr: csr_pem })
            .map_err(StreamError::Certificate)?;
        let req = self.json_post(CERTIFICATE_PATH, &auth, body.into())?;
        let resp = timed(
            "the certificate request",
            RESPONSE_TIMEOUT,
            sender.send_request(req),
        )
        .await??;
        if resp.status() != StatusCode::OK {
            return Err(refusal(resp).await);
        }
        let body = timed(
            "the certificate",
            RESPONSE_TIMEOUT,
            resp.into_body().collect(),
        )
        .await??
        .to_bytes();
        serde_json::from_slice(&body).map_err(StreamError::Certificate)
    }

    /// TCP, TLS (trust anchors re-read: the CA may rotate) and the HTTP/2 handshake.
    async fn connect(&self) -> Result<http2::SendRequest<Full<Bytes>>, StreamError> {
        let url = &self.settings.url;
        let tls = tls::client_config(&self.settings.ca_file)?;
        let connect_err = |source| StreamError::Connect {
            url: url.to_string(),
            source,
        };
        let connect = async {
            let tcp = TcpStream::connect((url.host(), url.port())).await?;
            tcp.set_nodelay(true)?;
            TlsConnector::from(tls)
                .connect(url.server_name().clone(), tcp)
                .await
        };
        let stream = timed("connecting to the operator", CONNECT_TIMEOUT, connect)
            .await?
            .map_err(connect_err)?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "operator connection closed");
            }
        });
        Ok(sender)
    }

    /// `Bearer <token>` from the token file, read now: the kubelet rotates it.
    fn authorization(&self) -> Result<HeaderValue, StreamError> {
        let path = &self.settings.token_file;
        let token = std::fs::read_to_string(path).map_err(|source| StreamError::Token {
            path: path.clone(),
            source,
        })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(StreamError::BadToken(path.clone()));
        }
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| StreamError::BadToken(path.clone()))?;
        value.set_sensitive(true);
        Ok(value)
    }

    /// A request to the operator carrying the token and the pod.
    /// A POST of a JSON `body` to `path`.
    fn json_post(
        &self,
        path: &str,
        auth: &HeaderValue,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        let mut req = self.request(Method::POST, path, auth, body)?;
        req.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Ok(req)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        auth: &HeaderValue,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, http::Error> {
        Request::builder()
            .method(method)
            .uri(self.settings.url.uri(path)?)
            .header(AUTHORIZATION, auth.clone())
            .header(POD_HEADER, self.settings.pod.to_string())
            .header(PROXY_VERSION_HEADER, env!("CARGO_PKG_VERSION"))
            .body(Full::new(body))
    }

    /// The version in force, once a config has been applied.
    fn in_force(&self) -> Option<String> {
        in_force(&self.store)
    }
}

/// Holds the open stream's connection for discoveries while the stream lives.
struct Open<'a>(&'a OpenSlot);

impl<'a> Open<'a> {
    fn new(slot: &'a OpenSlot, sender: http2::SendRequest<Full<Bytes>>, auth: HeaderValue) -> Self {
        *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some((sender, auth));
        Self(slot)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Parses and applies one config line (a whole config, or a delta to `received`, else
/// to the config in force); the report says what happened, and the config now held is
/// the next delta's base. A refused config leaves the last good one in force (and no
/// base: a delta to it resynchronises).
fn apply_line(
    store: &TableStore,
    line: &[u8],
    received: Option<Arc<ProxyConfig>>,
    on_demand: bool,
) -> Result<(Report, Option<Arc<ProxyConfig>>), DeltaError> {
    let parsed = if DeltaLine::is_delta(line) {
        match parse_delta(line) {
            Ok(delta) => {
                let base = received.unwrap_or_else(|| store.tables().config.clone());
                Ok(delta.apply(&base)?)
            }
            Err(e) => Err(e),
        }
    } else {
        parse_json(line)
    };
    let applied = parsed.and_then(|config| {
        let version = config.version.clone();
        store.apply(config).map(|()| version)
    });
    Ok(match applied {
        Ok(_) => (
            {
                let (applied_version, held_services) = held(store, on_demand);
                Report {
                    applied_version,
                    held_services,
                    ..Default::default()
                }
            },
            Some(store.tables().config.clone()),
        ),
        Err(e) => {
            let version = line_version(line);
            tracing::error!(version = %version, error = %e, "config from the operator refused; keeping the last good one");
            (
                Report {
                    applied_version: in_force(store),
                    rejected: Some(Rejected {
                        version,
                        error: e.to_string(),
                    }),
                    ..Default::default()
                },
                None,
            )
        }
    })
}

/// The version in force and, on demand, the services it holds, read from one version
/// of the tables.
fn held(store: &TableStore, on_demand: bool) -> (Option<String>, Option<Vec<ServiceRef>>) {
    if !store.is_loaded() {
        return (None, None);
    }
    store.with_tables(|t| {
        let version = Some(t.config.version.clone()).filter(|v| !v.is_empty());
        let services = on_demand.then(|| t.config.services.iter().map(ServiceRef::of).collect());
        (version, services)
    })
}

/// The version in force, once a config with a version has been applied.
fn in_force(store: &TableStore) -> Option<String> {
    store
        .is_loaded()
        .then(|| store.tables().config.version.clone())
        .filter(|v| !v.is_empty())
}

/// `e` and its causes: hyper's own message ("error reading a body from connection") says
/// what it was doing, the cause says what went wrong.
fn with_causes(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// `fut`, or [`StreamError::Timeout`] after `limit`.
async fn timed<T>(
    what: &'static str,
    limit: Duration,
    fut: impl Future<Output = T>,
) -> Result<T, StreamError> {
    tokio::time::timeout(limit, fut)
        .await
        .map_err(|_| StreamError::Timeout(what))
}

/// A refusal: the status with the `x-braid-error` reason, else the start of the body.
async fn refusal(resp: Response<Incoming>) -> StreamError {
    let status = resp.status();
    let header = resp
        .headers()
        .get(ERROR_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let reason = match header {
        Some(reason) => reason,
        None => {
            let body = Limited::new(resp.into_body(), MAX_REASON).collect();
            match tokio::time::timeout(Duration::from_secs(2), body).await {
                Ok(Ok(body)) => String::from_utf8_lossy(&body.to_bytes()).trim().to_owned(),
                _ => String::new(),
            }
        }
    };
    StreamError::Refused {
        status,
        reason: if reason.is_empty() {
            "no reason given".to_owned()
        } else {
            reason
        },
    }
}

/// The `version` of a config line (or of the delta it holds) that did not parse as a
/// whole, for the rejection report; empty when even that cannot be read.
fn line_version(line: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(default)]
        version: String,
    }
    #[derive(serde::Deserialize)]
    struct Delta {
        delta: Versioned,
    }
    if DeltaLine::is_delta(line) {
        return serde_json::from_slice::<Delta>(line)
            .map(|d| d.delta.version)
            .unwrap_or_default();
    }
    serde_json::from_slice::<Versioned>(line)
        .map(|v| v.version)
        .unwrap_or_default()
}

/// The operator knows which service has an address.
impl crate::discovery::Ask for OperatorClient {
    fn ask(&self, address: IpAddr) -> crate::discovery::Asking<'_> {
        Box::pin(async move { Ok(self.discover(address).await?) })
    }

    fn forget(&self, services: Vec<ServiceRef>) -> crate::discovery::Forgetting<'_> {
        Box::pin(async move { Ok(OperatorClient::forget(self, services).await?) })
    }
}

/// The operator signs the proxy's certificate requests.
impl crate::identity::Certifier for OperatorClient {
    type Error = StreamError;

    fn certify(&self, csr_pem: String) -> crate::identity::Certifying<'_, StreamError> {
        Box::pin(OperatorClient::certify(self, csr_pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_refused_lines() {
        assert_eq!(
            line_version(br#"{"version":"abc","listeners":"nope"}"#),
            "abc"
        );
        assert_eq!(line_version(br#"{"listeners":[]}"#), "");
        assert_eq!(line_version(b"not json"), "");
        assert_eq!(
            line_version(br#"{"delta":{"version":"v2","base":"v1","inbound":7}}"#),
            "v2"
        );
    }
}
