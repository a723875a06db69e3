//! `GET /explain` on a proxy's admin port: how the proxy would handle one request, worked
//! out by its own routing and authorization code on the config it holds now, so what
//! `braidctl explain` prints cannot drift from what the proxy does.
//!
//! The question is the query string:
//! - `to`: the service port, `name[.namespace][:port]` (namespace: the proxy's own;
//!   port: the service's only port). Asks how the proxy sends the request out
//!   ([`Explanation::outbound`]).
//! - `inbound`: a port of the proxy's own app. Asks whether the proxy lets a request in
//!   on it ([`Explanation::inbound`]); `identity` and `address` name the caller (no
//!   identity: a plaintext caller).
//! - `method` (default `GET`), `path` (default `/`), and `header` (repeated, `name:value`).
//!
//! Nothing is recorded: no metric, no evidence, no rate-limit token is taken.

use serde::{Deserialize, Serialize};

/// Path of the explanation on the proxy's admin port.
pub const EXPLAIN_PATH: &str = "/explain";

/// The answer of `GET /explain`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// The proxy's pod, `namespace/name`.
    pub pod: String,
    /// The version of the config the answer was worked out on.
    pub config_version: String,
    /// The proxy's own mTLS identity (what a server sees when this proxy calls it over
    /// mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The request asked about.
    pub request: AskedRequest,
    /// How it is sent out, when `to` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Outbound>,
    /// Whether it is let in, when `inbound` was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<Inbound>,
}

/// The request asked about, as the proxy read the question.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AskedRequest {
    /// The method.
    pub method: String,
    /// The path (what rules match on).
    pub path: String,
    /// The headers, `(name, value)`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

/// How the proxy sends a request to a service port.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    /// The service port, `name.namespace:port`.
    pub target: String,
    /// The port's protocol (`http`, `http2`, `grpc`, `tcp`, …).
    pub protocol: String,
    /// The TrafficRoute whose rules apply, `namespace/name`; absent: no rules, every
    /// endpoint of the service serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Every rule in order, up to and including the first that matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleVerdict>,
    /// The rule that decides, absent when no rule matches (or there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Why the request fails at once, if it does (no rule matches, no endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The groups the request may go to, with the share each gets. Empty: the rule
    /// names no group (or there are no rules), and `endpoints` are the service's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<GroupShare>,
    /// The endpoints it may go to when the choice is not by group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointView>,
    /// What the rule does besides choosing where (deadline, retries, faults, mirror,
    /// rate limit).
    #[serde(default)]
    pub policy: PolicyView,
}

/// One rule and whether the request matches it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleVerdict {
    /// The rule's name.
    pub name: String,
    /// Whether it matches.
    pub matched: bool,
    /// Why (for a rule that does not match: the first condition of each match entry
    /// that fails).
    pub why: String,
}

/// A group the request may go to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupShare {
    /// The group's name.
    pub name: String,
    /// The share of requests it gets, in percent.
    pub percent: f64,
    /// Its endpoints on this port.
    #[serde(default)]
    pub endpoints: Vec<EndpointView>,
}

/// An endpoint as the proxy sees it now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// `ip:port`.
    pub address: String,
    /// The identity this proxy verifies when it connects over mTLS; absent: plaintext
    /// (the server does not accept mTLS, or this caller is not in its rollout yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<String>,
    /// Ejected by outlier detection now: no request goes to it until it is let back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ejected: bool,
}

/// What a rule does to a request besides choosing where it goes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    /// The deadline over every attempt, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Retries, in words (`up to 2 more attempts on 5xx, connect-failure, 500 ms each`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<String>,
    /// Injected faults, in words.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<String>,
    /// The group copies are mirrored to, with the share mirrored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<String>,
    /// The rule's rate limit, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<String>,
}

/// Whether the proxy lets a request in to its app.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    /// The app's port.
    pub port: u16,
    /// The port's mTLS mode (`Disabled`, `Permissive`, `Strict`).
    pub tls_mode: String,
    /// The caller's identity as asked; absent: plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The caller's address as asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Whether the request reaches the app.
    pub allowed: bool,
    /// Why not, when it does not (Strict refuses plaintext; the AccessPolicy that
    /// refuses it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_by: Option<String>,
    /// Every AccessPolicy covering the port and what it makes of the request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<PolicyVerdict>,
}

/// What one AccessPolicy makes of a request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyVerdict {
    /// The policy, `namespace/name`.
    pub name: String,
    /// `Allow` or `Deny`.
    pub action: String,
    /// `Audit` or `Enforce`, as the proxy applies it now.
    pub mode: String,
    /// The rule that matches the request, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_rule: Option<String>,
    /// `Allowed`, `WouldDeny` (audits, and enforced it would refuse) or `Denied`; absent
    /// when another policy already refuses the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}
