//! The config stream between the operator and its proxies (HTTP/2 over TLS).
//!
//! - `GET /v1/config` with `authorization: Bearer <token>` (the pod's projected
//!   ServiceAccount token, audience `braid`), `x-braid-pod: <namespace>/<name>`, and on a
//!   reconnect `x-braid-version: <the version last applied>`. The answer is a long-lived
//!   `application/x-ndjson` body: each non-empty line is one complete [`ProxyConfig`]
//!   (compact JSON, its `version` a content hash). The first line comes at once unless the
//!   proxy already holds that version; then one line each time this pod's config changes.
//!   Empty lines are heartbeats and carry nothing. A proxy that sends
//!   `x-braid-accept: delta` gets, after a first full config, only what changed: see
//!   [`delta`]. One that also accepts `on-demand` holds only the services it calls: its
//!   config carries the services named in `x-braid-services` (those it held before a
//!   reconnect, `namespace/name`, comma-separated) and those it discovered since.
//! - `POST /v1/discover` with the same two headers and a JSON [`DiscoverRequest`] (an
//!   address the app connected to that the proxy's config does not know), on the
//!   connection that carries the proxy's stream: a [`DiscoverResponse`] naming the service
//!   behind it, which the stream then sends, or none (not a mesh service).
//! - `POST /v1/forget` with the same two headers and a JSON [`ForgetRequest`], on the
//!   same connection: services the proxy no longer calls, which its stream then removes
//!   (204; those its workload's outbound scope names stay).
//! - `POST /v1/report` with the same two headers and a JSON [`Report`]: the version the
//!   proxy applied (or why it refused one); later issues add ejections and traffic counts.
//! - `POST /v1/certificate` with the same two headers and a JSON [`CertificateRequest`]
//!   (a CSR): a [`CertificateResponse`] with the certificate of the pod's identity.
//! - Refusals carry the reason in the body and in `x-braid-error`: 401 for a missing or bad
//!   token, 403 for a token that does not belong to the named pod, 404 for a pod the
//!   operator does not know.
//!
//! [`ProxyConfig`]: crate::config::ProxyConfig

pub mod delta;
pub mod tls;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Path of the config stream.
pub const CONFIG_PATH: &str = "/v1/config";
/// Path of proxy reports.
pub const REPORT_PATH: &str = "/v1/report";
/// Path where an on-demand proxy asks for the service behind an address.
pub const DISCOVER_PATH: &str = "/v1/discover";
/// Path where an on-demand proxy lets go of services it no longer calls.
pub const FORGET_PATH: &str = "/v1/forget";
/// Path where a proxy has its certificate signed.
pub const CERTIFICATE_PATH: &str = "/v1/certificate";
/// Names the pod a proxy runs in: `<namespace>/<name>`.
pub const POD_HEADER: &str = "x-braid-pod";
/// The config version a reconnecting proxy already holds.
pub const VERSION_HEADER: &str = "x-braid-version";
/// What a proxy understands beyond full configs, comma-separated: [`ACCEPT_DELTA`].
pub const ACCEPT_HEADER: &str = "x-braid-accept";
/// In [`ACCEPT_HEADER`]: the proxy applies [`delta::DeltaLine`]s.
pub const ACCEPT_DELTA: &str = "delta";
/// In [`ACCEPT_HEADER`]: the proxy holds only the services it calls, found on demand
/// ([`DISCOVER_PATH`]).
pub const ACCEPT_ON_DEMAND: &str = "on-demand";
/// A pod annotation: services its proxy holds before its app calls them,
/// `namespace/name` or `namespace/*`, comma-separated (the others are found on demand).
pub const OUTBOUND_SCOPE_ANNOTATION: &str = "braid.dev/outbound-scope";
/// The services an on-demand proxy holds as it connects: `namespace/name`,
/// comma-separated.
pub const SERVICES_HEADER: &str = "x-braid-services";
/// The proxy's version, on every request it makes to the operator (shown by
/// `braidctl proxy-status` and `braidctl version`).
pub const PROXY_VERSION_HEADER: &str = "x-braid-proxy-version";
/// Why a request was refused.
pub const ERROR_HEADER: &str = "x-braid-error";
/// Content type of the stream: one JSON document per line.
pub const STREAM_CONTENT_TYPE: &str = "application/x-ndjson";
/// The token audience proxies request for their projected ServiceAccount token.
pub const TOKEN_AUDIENCE: &str = "braid";

/// A pod, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PodRef {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
}

impl fmt::Display for PodRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A `x-braid-pod` value that is not `<namespace>/<name>`.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not <namespace>/<name>")]
pub struct BadPodRef(pub String);

impl FromStr for PodRef {
    type Err = BadPodRef;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok(Self {
                    namespace: ns.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(BadPodRef(s.to_owned())),
        }
    }
}

/// What a proxy tells the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The config version now in force in the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<String>,
    /// The services of the config in force, when the proxy holds only those its app
    /// calls: with them any operator replica can tell that `appliedVersion` is this
    /// proxy's view of the config it compiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_services: Option<Vec<delta::ServiceRef>>,
    /// A version the proxy refused, and why (it keeps `appliedVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<Rejected>,
    /// Endpoints the proxy ejected since its last report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ejections: Vec<Ejection>,
    /// Requests since its last report (for EncryptionPolicy rollouts and status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// What each AccessPolicy covering its app decided since its last report (for
    /// AccessPolicy status and rollouts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessCount>,
    /// When the proxy's mesh certificate expires (seconds since the Unix epoch), once it
    /// holds one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires_unix: Option<u64>,
}

/// One AccessPolicy's decisions in a proxy since its last report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessCount {
    /// The policy, `namespace/name`.
    pub policy: String,
    /// Requests (and TCP connections) it let through.
    #[serde(default)]
    pub allowed: u64,
    /// Requests it would have refused, had it been enforced (it audits).
    #[serde(default)]
    pub would_deny: u64,
    /// Requests it refused (it enforces).
    #[serde(default)]
    pub denied: u64,
    /// Of `denied`, refusals of traffic it let through while it audited: the same caller
    /// asking the same method and path (or opening a TCP connection).
    #[serde(default)]
    pub denied_allowed_before: u64,
    /// The callers it refused or would refuse most, those it had let through while
    /// auditing first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused_sources: Vec<RefusedSource>,
}

/// A caller an AccessPolicy refused, or would refuse, and what it asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedSource {
    /// Its verified mTLS identity; absent for plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::IpAddr>,
    /// `METHOD /path` for HTTP; absent for a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Its would-be refusals.
    #[serde(default)]
    pub would_deny: u64,
    /// Its refusals.
    #[serde(default)]
    pub denied: u64,
    /// Refused now, though the same request was let through while the policy audited.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allowed_before: bool,
}

/// Requests a proxy saw since its last report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traffic {
    /// Requests reaching its app over mTLS.
    #[serde(default)]
    pub inbound_mtls: u64,
    /// Requests reaching its app in plaintext.
    #[serde(default)]
    pub inbound_plaintext: u64,
    /// Where the plaintext came from: the busiest sources.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plaintext_sources: Vec<SourceCount>,
    /// Its app's requests to each service port, and how many failed (5xx, or the proxy
    /// could not deliver them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outbound: Vec<TargetCount>,
}

/// Plaintext requests from one source address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceCount {
    /// The caller's address.
    pub address: std::net::IpAddr,
    /// Its plaintext requests.
    pub requests: u64,
}

/// Requests to one service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCount {
    /// The service port (`name.namespace:port`).
    pub target: String,
    /// Requests sent.
    pub requests: u64,
    /// Of which failed.
    pub failures: u64,
}

/// An endpoint a proxy's outlier detection ejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ejection {
    /// The service port it serves (`name.namespace:port`).
    pub target: String,
    /// The endpoint.
    pub endpoint: std::net::SocketAddr,
    /// Why (`consecutive_errors`, `error_rate`, `relative_error_rate`).
    pub reason: String,
    /// For how long, in milliseconds.
    pub duration_ms: u64,
}

/// `POST /v1/discover`: which service is behind an address the proxy does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverRequest {
    /// The address the app connected to (a service's virtual IP, it may be).
    pub address: std::net::IpAddr,
}

/// The operator's answer to a [`DiscoverRequest`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoverResponse {
    /// The service behind the address, now on its way on the stream; absent when the
    /// address is no mesh service's (the connection passes through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<delta::ServiceRef>,
}

/// `POST /v1/forget`: services an on-demand proxy has not called for a long while, to
/// be removed from what its stream sends it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ForgetRequest {
    /// The services to let go of.
    pub services: Vec<delta::ServiceRef>,
}

/// `POST /v1/certificate`: a proxy asks for the certificate of its identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateRequest {
    /// A PEM certificate signing request, signed by the proxy's own key (ECDSA P-256),
    /// which never leaves the proxy.
    pub csr: String,
}

/// The operator's answer to a [`CertificateRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateResponse {
    /// The identity certified, `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`.
    pub identity: String,
    /// The certificate, then the CA's signing chain, as PEM.
    pub chain: String,
    /// When it stops being valid (RFC 3339).
    pub not_after: String,
    /// The same, in seconds since the Unix epoch.
    pub not_after_unix: u64,
    /// The roots that verify peers' certificates, as PEM (several during a rotation).
    pub trust_bundle: String,
}

/// A config version the proxy could not apply.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    /// The refused version.
    pub version: String,
    /// The proxy's error.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_refs_parse_and_print() {
        let p: PodRef = "shop/payments-0".parse().unwrap();
        assert_eq!(p.namespace, "shop");
        assert_eq!(p.to_string(), "shop/payments-0");
        for bad in ["", "shop", "/x", "shop/", "a/b/c"] {
            assert!(bad.parse::<PodRef>().is_err(), "{bad:?}");
        }
    }
}
