//! Request routing rules in `ProxyConfig`: what the operator compiles from TrafficRoutes
//! for one caller (rules whose `sourceLabels` cannot match the caller are already left
//! out, so the proxy never sees them).

use serde::{Deserialize, Serialize};

/// The rules this caller applies to one service's HTTP traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceRoutes {
    /// The TrafficRoute these rules come from (`namespace/name`), for metrics and errors.
    pub from: String,
    /// The service's name, as in `services`.
    pub service: String,
    /// Its namespace.
    #[serde(default)]
    pub namespace: String,
    /// The service port the rules apply to; absent: every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// In order; the first rule that matches a request decides. A request no rule
    /// matches is answered 404, as with Istio.
    pub rules: Vec<Rule>,
}

/// One rule: which requests, and where they go.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The rule's name, for metrics.
    pub name: String,
    /// Any of these matches selects the rule (OR); none at all matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    /// Groups of the service's endpoints and their weights; each request goes to one,
    /// chosen by weight. Empty: any of the service's endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub route: Vec<WeightedGroup>,
    /// The request's deadline in milliseconds; on expiry the caller gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Deliberate delays and errors, for testing how callers cope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// Copies of a share of requests sent to another group; their responses are dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// How failed attempts are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<Retries>,
    /// A token bucket this caller applies to the rule's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// Copies of requests for another group (shadow traffic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// A group of the service (`services[].groups[].name`).
    pub group: String,
    /// Percent of the rule's requests copied, 0 to 100.
    pub percent: f64,
}

/// Retries of failed attempts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Retries {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// The deadline of each attempt in milliseconds; absent: only the rule's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout_ms: Option<u64>,
    /// Which failures are retried, for every method; empty: `connect-failure` and
    /// `refused-stream`, and `reset` for idempotent methods.
    #[serde(default, rename = "on", skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<RetryOn>,
}

/// A failure that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryOn {
    /// The connection to the endpoint could not be opened.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The HTTP/2 server refused the stream before processing it.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// The connection failed before a response arrived.
    #[serde(rename = "reset")]
    Reset,
    /// The response was 502, 503 or 504 (an attempt's own timeout counts as 504).
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The response was any 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

/// A token bucket: `requestsPerSecond` sustained, `burst` more at once.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second.
    pub requests_per_second: u32,
    /// Extra requests allowed at once; absent: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Faults injected into a rule's requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Fault {
    /// Hold a share of requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    /// Answer a share of requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

/// A fixed delay for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelayFault {
    /// Percent of requests delayed, 0 to 100.
    pub percent: f64,
    /// How long each is held, in milliseconds.
    pub fixed_ms: u64,
}

/// An error answer for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AbortFault {
    /// Percent of requests aborted, 0 to 100.
    pub percent: f64,
    /// The status answered, 200 to 599.
    pub status: u16,
}

/// Conditions on one request, all of which must hold (AND).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// Header conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeaderMatch>,
    /// A path condition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// The method, e.g. `POST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

/// A condition on one header (names are case-insensitive).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// The header's name.
    pub name: String,
    /// What its value must be.
    #[serde(flatten)]
    pub value: ValueMatch,
}

/// How a header value matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ValueMatch {
    /// Equal to this.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// The whole value matches this regular expression (RE2 syntax).
    Regex(String),
    /// `true`: the header is present; `false`: it is absent.
    Present(bool),
}

/// How the path (without the query) matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PathMatch {
    /// Equal to this.
    Exact(String),
    /// Starts with this.
    Prefix(String),
    /// The whole path matches this regular expression (RE2 syntax).
    Regex(String),
}

/// A group and its share of the rule's requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedGroup {
    /// A group of the service (`services[].groups[].name`).
    pub group: String,
    /// Its weight; the weights of a rule need not sum to 100 (they are relative).
    pub weight: u32,
}
