//! The HTTP handlers of the config stream and of proxy reports (see
//! [`braid_api::control`] for the wire protocol).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use braid_api::control::delta::ServiceRef;
use braid_api::control::{
    ACCEPT_DELTA, ACCEPT_HEADER, ACCEPT_ON_DEMAND, CERTIFICATE_PATH, CONFIG_PATH,
    CertificateRequest, CertificateResponse, DISCOVER_PATH, DiscoverRequest, DiscoverResponse,
    ERROR_HEADER, FORGET_PATH, ForgetRequest, POD_HEADER, PROXY_VERSION_HEADER, PodRef,
    REPORT_PATH, Report, SERVICES_HEADER, STREAM_CONTENT_TYPE, VERSION_HEADER,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::auth::{AuthError, Authenticator, authorize};
use super::relay::{RELAYED_HEADER, Relay};
use super::view::View;
use crate::ca::Ca;
use crate::ca::authority::timestamp;
use crate::healer::ReportBatch;
use crate::hub::{Hub, Published, Wanted};
use crate::metrics::{Metrics, Refusal};
use crate::registry::{ObjectKey, Workload};
use crate::rollout::TrafficBatch;

/// What the handlers share.
#[derive(Clone)]
pub struct StreamState {
    /// Compiled configs and reported versions.
    pub hub: Arc<Hub>,
    /// Checks proxies' tokens.
    pub auth: Arc<dyn Authenticator>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Ends every stream (shutdown).
    pub stop: CancellationToken,
    /// How often an idle stream carries an empty line, so idle-timeouts of anything in
    /// between never cut it.
    pub heartbeat: Duration,
    /// How long to wait for a pod the operator has not seen yet.
    pub pod_wait: Duration,
    /// Where proxies' ejection reports go: the healer.
    pub healer: mpsc::Sender<ReportBatch>,
    /// Where proxies' traffic counts go: the rollout loop.
    pub traffic: mpsc::Sender<TrafficBatch>,
    /// Where proxies' AccessPolicy decisions go: the access loop.
    pub access: mpsc::Sender<crate::access::AccessBatch>,
    /// Whether this replica leads.
    pub leader: watch::Receiver<bool>,
    /// Passes reports on to the leader when this replica does not lead (Kubernetes mode).
    pub relay: Option<Arc<Relay>>,
    /// Signs proxies' certificates: the CA in force, their trust domain and lifetime.
    pub signer: Signer,
}

/// What signing proxies' certificates takes.
#[derive(Clone)]
pub struct Signer {
    /// The CA in force (replaced when it is rotated).
    pub ca: watch::Receiver<Arc<Ca>>,
    /// The SPIFFE trust domain of identities.
    pub trust_domain: String,
    /// How long a proxy's certificate is valid.
    pub lifetime: Duration,
}

/// The routes of the config server.
pub fn router(state: StreamState) -> Router {
    Router::new()
        .route(CONFIG_PATH, get(config_stream))
        .route(REPORT_PATH, post(report))
        .route(CERTIFICATE_PATH, post(certificate))
        .route(DISCOVER_PATH, post(discover))
        .route(FORGET_PATH, post(forget))
        .with_state(state)
}

/// A refusal: status, reason in the body and in `x-braid-error`.
struct Refused {
    status: StatusCode,
    reason: Refusal,
    message: String,
}

impl Refused {
    fn new(status: StatusCode, reason: Refusal, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }
}

impl From<AuthError> for Refused {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::unavailable,
                e.to_string(),
            ),
            AuthError::Missing | AuthError::Invalid(_) => Self::new(
                StatusCode::UNAUTHORIZED,
                Refusal::unauthenticated,
                e.to_string(),
            ),
        }
    }
}

fn refuse(metrics: &Metrics, r: Refused) -> Response {
    metrics.refused(r.reason);
    tracing::info!(status = r.status.as_u16(), reason = %r.message, "proxy refused");
    let mut resp = (r.status, format!("{}\n", r.message)).into_response();
    // Header values cannot hold every character a message might: fall back to the status.
    let value = HeaderValue::from_str(&r.message)
        .unwrap_or_else(|_| HeaderValue::from_static("refused; see the response body"));
    resp.headers_mut().insert(ERROR_HEADER, value);
    resp
}

/// Authenticates the caller and checks it may act for the pod it names.
async fn admit(state: &StreamState, headers: &HeaderMap) -> Result<Arc<Workload>, Refused> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing)?;
    let pod: PodRef = headers
        .get(POD_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                Refusal::bad_request,
                format!("{POD_HEADER}: required, as <namespace>/<pod name>"),
            )
        })?
        .parse()
        .map_err(|e| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                Refusal::bad_request,
                format!("{POD_HEADER}: {e}"),
            )
        })?;
    let who = state.auth.authenticate(token).await?;
    let key = ObjectKey::from(pod);
    // Refused before the pod is looked up, so a token cannot probe other namespaces.
    if who.namespace != key.namespace {
        return Err(Refused::new(
            StatusCode::FORBIDDEN,
            Refusal::forbidden,
            format!(
                "the token is for namespace {}, not {}",
                who.namespace, key.namespace
            ),
        ));
    }
    let workload = state.hub.workload(&key, state.pod_wait).await.ok_or_else(|| {
        Refused::new(
            StatusCode::NOT_FOUND,
            Refusal::unknown_pod,
            format!("pod {key} is not known to the operator: is it in a namespace labelled braid.dev/inject=enabled (or in registry.yaml)?"),
        )
    })?;
    authorize(&who, &workload)
        .map_err(|e| Refused::new(StatusCode::FORBIDDEN, Refusal::forbidden, e.to_string()))?;
    if !workload.meshed {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            Refusal::unknown_pod,
            format!("pod {key} is not meshed, so it has no proxy config"),
        ));
    }
    Ok(workload)
}

/// [`admit`], then the request's JSON body (`what` names it in a refusal).
async fn admit_json<T: serde::de::DeserializeOwned>(
    state: &StreamState,
    headers: &HeaderMap,
    body: &[u8],
    what: &str,
) -> Result<(Arc<Workload>, T), Response> {
    let workload = admit(state, headers)
        .await
        .map_err(|r| refuse(&state.metrics, r))?;
    let parsed = serde_json::from_slice(body).map_err(|e| {
        refuse(
            &state.metrics,
            Refused::new(
                StatusCode::BAD_REQUEST,
                Refusal::bad_request,
                format!("{what}: {e}"),
            ),
        )
    })?;
    Ok((workload, parsed))
}

async fn config_stream(State(state): State<StreamState>, headers: HeaderMap) -> Response {
    let workload = match admit(&state, &headers).await {
        Ok(w) => w,
        Err(r) => return refuse(&state.metrics, r),
    };
    let asked = Asked::of(&headers);
    tracing::info!(
        pod = %workload.key,
        version = asked.last.as_deref().unwrap_or("-"),
        deltas = asked.deltas,
        on_demand = asked.on_demand.as_ref().map(BTreeSet::len),
        "proxy connected"
    );
    let body = Body::from_stream(follow(state, workload, asked));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(STREAM_CONTENT_TYPE),
    );
    resp
}

/// Counts a connected proxy for as long as its stream lives; remembers the service
/// account its token was checked against.
struct Connected(Arc<Metrics>, ObjectKey, String, Arc<Hub>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.connected_proxies.dec();
        self.3.ledger().disconnected(&self.1);
        tracing::info!(pod = %self.1, "proxy disconnected");
    }
}

/// One proxy's stream as it goes.
struct Follower {
    state: StreamState,
    pod: ObjectKey,
    /// The version the proxy holds (named at connect, or sent last).
    last: Option<String>,
    /// The view sent last (or named at connect and current then): a delta's base.
    sent: Option<View>,
    /// Whether the proxy applies deltas.
    deltas: bool,
    /// What an on-demand proxy calls; `None`: it holds every service.
    wanted: Option<Arc<Wanted>>,
    rx: watch::Receiver<Option<Arc<Published>>>,
    heartbeat: tokio::time::Interval,
    guard: Connected,
}

impl Drop for Follower {
    fn drop(&mut self) {
        if let Some(wanted) = &self.wanted {
            self.state.hub.unregister_wanted(&self.pod, wanted);
        }
    }
}

impl Follower {
    /// The chunks of the line taking the proxy from what it holds to `view`: a delta
    /// when it takes them and this stream knows its base, else the whole view.
    fn line(&self, view: &View) -> Vec<Bytes> {
        match &self.sent {
            Some(sent) if self.deltas => {
                self.state.metrics.deltas.inc();
                sent.delta_line(view)
            }
            _ => view.full_line(),
        }
    }

    /// What the proxy calls in `published`: what it discovered, and what its workload's
    /// scope names there; `None` when it holds every service.
    fn wanted_in(&self, published: &Published) -> Option<BTreeSet<ServiceRef>> {
        self.wanted.as_ref().map(|w| {
            let mut names = w.names();
            if let Some(w) = published.snapshot.workloads.get(&self.pod) {
                names.extend(w.outbound_scope.iter().cloned());
            }
            names
        })
    }

    /// The view a reconnecting proxy holds, when it is its view of one of the recent
    /// compiles (it missed a change while away, or was streamed by another replica,
    /// which compiles the same): with it as the base, the proxy is sent what changed
    /// since, not its whole view again. The version names the content, so a view cut
    /// with that version is exactly what the proxy holds.
    fn named_base(&self) -> Option<View> {
        let named = self.last.as_deref()?;
        self.state.hub.recent().iter().find_map(|p| {
            let config = p.configs.get(&self.pod)?;
            let wanted = self.wanted_in(p);
            let view = View::cut(p, &self.pod, config, wanted.as_ref(), None);
            (view.version == named).then_some(view)
        })
    }

    /// The next chunks to write, or `None` when the stream ends.
    async fn next(&mut self) -> Option<Vec<Bytes>> {
        loop {
            // Looked at once on connecting, then after each change or discovery.
            let published = self.rx.borrow_and_update().clone();
            if let Some(published) = published {
                let pod = &self.pod;
                let Some(config) = published.configs.get(pod) else {
                    tracing::info!(%pod, "workload gone or no longer meshed; ending its stream");
                    return None;
                };
                // The token was checked against the pod's service account at connect; a
                // pod re-created under its name with another one (or an edited registry)
                // must reconnect and prove itself again.
                let sa = published
                    .snapshot
                    .workloads
                    .get(pod)
                    .map(|w| w.service_account.as_str());
                if sa != Some(self.guard.2.as_str()) {
                    tracing::info!(%pod, "the pod's service account changed; ending its stream");
                    return None;
                }
                let wanted = self.wanted_in(&published);
                let view = View::cut(&published, pod, config, wanted.as_ref(), self.sent.as_ref());
                if self.last.as_deref() != Some(view.version.as_str()) {
                    if self.sent.is_none() && self.deltas {
                        self.sent = self.named_base();
                    }
                    let chunks = self.line(&view);
                    let metrics = &self.state.metrics;
                    metrics.pushes.inc();
                    let bytes: usize = chunks.iter().map(Bytes::len).sum();
                    metrics.config_bytes.inc_by(bytes as u64);
                    metrics
                        .push_latency
                        .observe(published.seen_at.elapsed().as_secs_f64());
                    tracing::debug!(%pod, version = %view.version, bytes, "config pushed");
                    self.last = Some(view.version.clone());
                    self.sent = Some(view);
                    return Some(chunks);
                }
                // What the proxy holds, cut from this compile: the same content (the
                // same version), and the older compile's services can be let go (a
                // stream that kept a view of each compile it last wrote would keep
                // every such compile alive).
                self.sent = Some(view);
            }
            let wanted = self.wanted.clone();
            let wanted_changed = async {
                match &wanted {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.state.stop.cancelled() => return None,
                changed = self.rx.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = wanted_changed => {}
                _ = self.heartbeat.tick() => {
                    return Some(vec![Bytes::from_static(b"\n")]);
                }
            }
        }
    }
}

/// How a proxy asked to be streamed to.
struct Asked {
    /// The version it holds.
    last: Option<String>,
    /// Whether it applies deltas.
    deltas: bool,
    /// What it holds, when it discovers services on demand.
    on_demand: Option<BTreeSet<ServiceRef>>,
    /// Its own version, as it said.
    proxy_version: Option<String>,
}

impl Asked {
    fn of(headers: &HeaderMap) -> Self {
        let accepts = |what: &str| {
            headers
                .get_all(ACCEPT_HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .any(|v| v.trim() == what)
        };
        let deltas = accepts(ACCEPT_DELTA);
        let on_demand = (deltas && accepts(ACCEPT_ON_DEMAND)).then(|| {
            headers
                .get_all(SERVICES_HEADER)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(ServiceRef::parse_header)
                .collect()
        });
        Self {
            last: headers
                .get(VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            deltas,
            on_demand,
            proxy_version: proxy_version(headers),
        }
    }
}

/// The proxy's own version, from its header (older proxies send none).
fn proxy_version(headers: &HeaderMap) -> Option<String> {
    headers
        .get(PROXY_VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(64).collect())
}

/// The stream of one proxy: its view whenever its version changes (or what changed,
/// when it takes deltas), heartbeats between.
fn follow(
    state: StreamState,
    admitted: Arc<Workload>,
    asked: Asked,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    use futures::StreamExt;
    let pod = admitted.key.clone();
    let wanted = asked.on_demand.map(|mut names| {
        if asked.last.is_some() {
            // What it holds, as it says: its version is its view of that (the same its
            // reports will say).
            state.hub.report_held(&pod, names.iter().cloned().collect());
        } else {
            // A new proxy: what its siblings call, its app will call too. Given now, its
            // first calls need no discovery, and they keep their protection while the
            // operator cannot be asked.
            let seeded = state.hub.siblings_hold(&admitted);
            if !seeded.is_empty() {
                tracing::debug!(%pod, services = seeded.len(), "seeded with what its siblings call");
            }
            names.extend(seeded);
        }
        state.hub.register_wanted(&pod, names)
    });
    // The version a reconnecting proxy names is the one it holds: count it as applied,
    // or a restarted operator would report nothing applied until the next change.
    if let Some(version) = &asked.last {
        state.hub.report_applied(pod.clone(), version.clone());
    }
    state.metrics.connected_proxies.inc();
    state
        .hub
        .ledger()
        .connected(&pod, asked.proxy_version.as_deref(), SystemTime::now());
    let guard = Connected(
        state.metrics.clone(),
        pod.clone(),
        admitted.service_account.clone(),
        state.hub.clone(),
    );
    let rx = state.hub.subscribe();
    let mut heartbeat = tokio::time::interval(state.heartbeat);
    heartbeat.reset(); // the first tick would fire at once
    let follower = Follower {
        state,
        pod,
        last: asked.last,
        sent: None,
        deltas: asked.deltas,
        wanted,
        rx,
        heartbeat,
        guard,
    };
    futures::stream::unfold(follower, |mut f| async move {
        let chunks = f.next().await?;
        Some((chunks, f))
    })
    .flat_map(|chunks| futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// Finds the service behind an address an on-demand proxy does not know, and has the
/// proxy's stream send it.
async fn discover(State(state): State<StreamState>, headers: HeaderMap, body: Bytes) -> Response {
    let (workload, request): (_, DiscoverRequest) =
        match admit_json(&state, &headers, &body, "discover request body").await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
    let Some(current) = state.hub.current() else {
        return refuse(
            &state.metrics,
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                Refusal::unavailable,
                "nothing compiled yet",
            ),
        );
    };
    let set = &current.catalog.set;
    let service = set.by_vip(request.address).and_then(|i| set.name(i));
    state.metrics.discovered(service.is_some());
    if let Some(name) = &service {
        if !state.hub.want(&workload.key, name.clone()) {
            return no_stream_here(&state, &workload.key, DISCOVER_PATH);
        }
        tracing::debug!(pod = %workload.key, address = %request.address, service = %name, "service discovered");
    }
    axum::Json(DiscoverResponse { service }).into_response()
}

/// The refusal of a request about `pod`'s stream that reached a replica not streaming
/// to it on demand.
fn no_stream_here(state: &StreamState, pod: &ObjectKey, path: &str) -> Response {
    refuse(
        &state.metrics,
        Refused::new(
            StatusCode::CONFLICT,
            Refusal::bad_request,
            format!(
                "pod {pod} has no on-demand config stream open on this replica: send {path} on the stream's connection"
            ),
        ),
    )
}

/// Removes services an on-demand proxy no longer calls from what its stream sends.
async fn forget(State(state): State<StreamState>, headers: HeaderMap, body: Bytes) -> Response {
    let (workload, request): (_, ForgetRequest) =
        match admit_json(&state, &headers, &body, "forget request body").await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
    if !state.hub.unwant(&workload.key, &request.services) {
        return no_stream_here(&state, &workload.key, FORGET_PATH);
    }
    tracing::debug!(pod = %workload.key, services = request.services.len(), "services forgotten");
    StatusCode::NO_CONTENT.into_response()
}

async fn report(State(state): State<StreamState>, headers: HeaderMap, body: Bytes) -> Response {
    let (workload, report): (_, Report) =
        match admit_json(&state, &headers, &body, "report body").await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
    if let Some(rejected) = &report.rejected {
        state.metrics.proxy_rejections.inc();
        tracing::warn!(pod = %workload.key, version = %rejected.version, error = %rejected.error, "proxy refused a config");
    }
    let relayed = headers.contains_key(RELAYED_HEADER);
    let leading = *state.leader.borrow();
    // A replica passing a report on believes this one leads: tell it otherwise, so it
    // looks for the leader again (the proxy reports again within seconds).
    if relayed && !leading && state.relay.is_some() {
        return refuse(
            &state.metrics,
            Refused::new(
                StatusCode::MISDIRECTED_REQUEST,
                Refusal::unavailable,
                "this replica does not lead; relay to the Lease's holder",
            ),
        );
    }
    // Only the leader heals, moves rollouts and counts applied versions: a follower passes
    // every report on (in the background, so the proxy is not held up), and keeps it too
    // in case it leads next.
    if let Some(relay) = &state.relay
        && !leading
        && !relayed
    {
        match relay.clone().try_acquire() {
            None => {
                tracing::warn!(reporter = %workload.key, "too many reports being relayed; this one is not")
            }
            Some(permit) => {
                let (pod, relayed_headers, relayed_body) =
                    (workload.key.clone(), headers.clone(), body.clone());
                tokio::spawn(async move {
                    if let Err(e) = permit.forward(&relayed_headers, relayed_body).await {
                        tracing::warn!(reporter = %pod, error = %e, "report not relayed to the leader");
                    }
                });
            }
        }
    }
    for e in &report.ejections {
        state.metrics.ejection_reports.inc();
        tracing::info!(
            reporter = %workload.key,
            target = %e.target,
            endpoint = %e.endpoint,
            reason = %e.reason,
            seconds = e.duration_ms as f64 / 1000.0,
            "proxy ejected an endpoint"
        );
    }
    if !report.ejections.is_empty() {
        let batch = ReportBatch {
            reporter: workload.key.clone(),
            ejections: report.ejections,
        };
        // A full queue means the healer is far behind; the proxy reports again when it
        // ejects again, so dropping is safe.
        if state.healer.try_send(batch).is_err() {
            tracing::warn!(reporter = %workload.key, "healer busy; ejection report dropped");
        }
    }
    if let Some(traffic) = report.traffic {
        let batch = TrafficBatch {
            reporter: workload.key.clone(),
            traffic,
        };
        // A full queue means the rollout loop is far behind; proxies report again in a
        // few seconds.
        if state.traffic.try_send(batch).is_err() {
            tracing::debug!(reporter = %workload.key, "rollout loop busy; traffic report dropped");
        }
    }
    if !report.access.is_empty() {
        let batch = crate::access::AccessBatch {
            reporter: workload.key.clone(),
            counts: report.access,
        };
        // As with traffic: proxies report again in a few seconds.
        if state.access.try_send(batch).is_err() {
            tracing::debug!(reporter = %workload.key, "access loop busy; decisions report dropped");
        }
    }
    state.hub.ledger().reported(
        &workload.key,
        crate::debug::Said {
            version: report.applied_version.as_deref(),
            proxy_version: proxy_version(&headers).as_deref(),
            certificate_expires_unix: report.certificate_expires_unix,
        },
        SystemTime::now(),
    );
    if let Some(held) = report.held_services {
        state.hub.report_held(&workload.key, held);
    }
    if let Some(version) = report.applied_version {
        tracing::debug!(pod = %workload.key, %version, "proxy applied");
        let before = state
            .hub
            .report_applied(workload.key.clone(), version.clone());
        if let Some(took) = state
            .hub
            .applied_after(&workload.key, &version, before.as_deref())
        {
            state.metrics.apply_latency.observe(took.as_secs_f64());
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// Signs the certificate of the calling proxy's identity (its pod's service account)
/// from its CSR.
async fn certificate(
    State(state): State<StreamState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (workload, request): (_, CertificateRequest) =
        match admit_json(&state, &headers, &body, "certificate request body").await {
            Ok(admitted) => admitted,
            Err(refused) => return refused,
        };
    let bad_request = |message: String| {
        refuse(
            &state.metrics,
            Refused::new(StatusCode::BAD_REQUEST, Refusal::bad_request, message),
        )
    };
    let signer = &state.signer;
    let identity = braid_api::identity::WorkloadId::new(
        &signer.trust_domain,
        &workload.key.namespace,
        &workload.service_account,
    )
    .to_string();
    let ca = signer.ca.borrow().clone();
    let now = std::time::SystemTime::now();
    match ca.sign_identity(&request.csr, &identity, signer.lifetime, now) {
        Ok(signed) => {
            tracing::info!(pod = %workload.key, %identity, not_after = %timestamp(signed.validity.not_after), "certificate issued");
            let answer = CertificateResponse {
                identity,
                chain: signed.chain_pem,
                not_after: timestamp(signed.validity.not_after),
                not_after_unix: signed
                    .validity
                    .not_after
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                trust_bundle: ca.trust_bundle().pem().to_string(),
            };
            axum::Json(answer).into_response()
        }
        Err(crate::ca::CaError::BadCsr(message)) => bad_request(format!("the CSR {message}")),
        Err(e) => {
            tracing::error!(pod = %workload.key, error = %e, "cannot issue a certificate");
            refuse(
                &state.metrics,
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Refusal::unavailable,
                    format!("cannot issue a certificate now: {e}"),
                ),
            )
        }
    }
}
