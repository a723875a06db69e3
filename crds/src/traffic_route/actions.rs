//! What a rule does with a matching request.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;
use crate::limits;
use crate::validation::NAME_PATTERN;

fn full_weight() -> u32 {
    100
}

/// A group and its share of the rule's requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    /// A group named in `spec.groups`.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), regex(pattern = NAME_PATTERN))]
    pub group: String,
    /// Percent of the rule's requests sent to this group, 0 to 100. The weights of one
    /// rule sum to 100; a single destination may omit it.
    #[serde(default = "full_weight")]
    #[schemars(range(min = 0, max = 100))]
    pub weight: u32,
}

/// A copy of a share of requests sent to another group; its responses are discarded and
/// it never slows the original request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// A group named in `spec.groups` that receives the copies.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), regex(pattern = NAME_PATTERN))]
    pub group: String,
    /// Percent of matching requests copied, 0 to 100 (fractions allowed, e.g. 0.5).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
}

/// Faults injected into matching requests. Set `delay`, `abort` or both.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::cel::at_least_one_of(&["delay", "abort"]))
    .message("set delay, abort or both"))]
pub struct Fault {
    /// Hold a share of requests before forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelayFault>,
    /// Answer a share of requests with an error instead of forwarding them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<AbortFault>,
}

/// A fixed delay for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DelayFault {
    /// Percent of matching requests delayed, 0 to 100 (fractions allowed).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
    /// How long each is held, e.g. `200ms`.
    pub fixed: Duration,
}

/// An error answer for a share of requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbortFault {
    /// Percent of matching requests aborted, 0 to 100 (fractions allowed).
    #[schemars(range(min = 0.0, max = 100.0))]
    pub percent: f64,
    /// The HTTP status returned, 200 to 599 (usually 503).
    #[schemars(range(min = 200, max = 599))]
    pub status: u16,
}

/// How failed attempts are retried. Retries draw on a budget of about 20% of requests,
/// so they cannot multiply load during an outage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first attempt, 0 to 10.
    #[schemars(range(min = 0, max = limits::MAX_RETRY_ATTEMPTS))]
    pub attempts: u32,
    /// Deadline of each attempt. Absent: only the rule's `timeout` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_try_timeout: Option<Duration>,
    /// Which failures are retried. Absent: `connect-failure` and `refused-stream` (the
    /// server never saw the request) for every method, and `reset` for idempotent ones
    /// (GET, HEAD, OPTIONS, TRACE, PUT, DELETE). Listed conditions apply to every method:
    /// match the rule on method to keep, say, a POST from being sent twice. Quote the key
    /// in YAML (`"on": [reset]`): kubectl reads YAML 1.1, where a bare `on` means `true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_RETRY_ON), extend("x-kubernetes-list-type" = "set"))]
    pub on: Vec<RetryOn>,
}

/// A failure that may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RetryOn {
    /// The connection to the endpoint could not be opened.
    #[serde(rename = "connect-failure")]
    ConnectFailure,
    /// The HTTP/2 server refused the stream before processing it.
    #[serde(rename = "refused-stream")]
    RefusedStream,
    /// The connection was reset before a response arrived.
    #[serde(rename = "reset")]
    Reset,
    /// The response was 502, 503 or 504.
    #[serde(rename = "gateway-error")]
    GatewayError,
    /// The response was any 5xx.
    #[serde(rename = "5xx")]
    ServerError,
}

/// A token bucket in each calling proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimit {
    /// Sustained requests per second each caller may send, 1 to 1,000,000.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: u32,
    /// Extra requests allowed in a burst above the sustained rate. Absent: one second's worth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub burst: Option<u32>,
}
