//! `TrafficRoute`: how callers' proxies steer requests to one host.

mod actions;
mod request_match;
mod status;
mod validate;

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use actions::{
    AbortFault, DelayFault, Destination, Fault, Mirror, RateLimit, RetryOn, RetryPolicy,
};
pub use request_match::{HeaderMatch, HttpMethod, PathMatch, RequestMatch};
pub use status::{ProxyCounts, TrafficRouteStatus};

use crate::common::Duration;
use crate::limits;
use crate::validation::{HOST_PATTERN, NAME_PATTERN};

/// Steers requests to one host: named groups of its pods, and rules (first match wins)
/// that send each request to a weighted choice of groups, optionally mirrored, delayed,
/// aborted, timed out, retried and rate limited. Applied by the proxies of the callers.
// kube's printcolumn(...) arguments repeat `type_`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "braid.dev",
    version = "v1alpha1",
    kind = "TrafficRoute",
    namespaced,
    status = "TrafficRouteStatus",
    shortname = "tr",
    category = "braid",
    derive = "PartialEq",
    printcolumn(name = "HOST", type_ = "string", json_path = ".spec.host"),
    printcolumn(name = "RULES", type_ = "integer", json_path = ".status.ruleCount"),
    printcolumn(
        name = "ACCEPTED",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Steers requests to one host: named groups of its pods, and rules (first match wins) that send each request to a weighted choice of groups, optionally mirrored, delayed, aborted, timed out, retried and rate limited. Applied by the proxies of the callers."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.rules) || self.rules.all(r, !has(r.route) || r.route.all(d, has(self.groups) && self.groups.exists(g, g.name == d.group)))"
).message("every spec.rules[].route[].group must name a group in spec.groups"))]
#[x_kube(validation = Rule::new(
    "!has(self.rules) || self.rules.all(r, !has(r.mirror) || (has(self.groups) && self.groups.exists(g, g.name == r.mirror.group)))"
).message("every spec.rules[].mirror.group must name a group in spec.groups"))]
pub struct TrafficRouteSpec {
    /// The destination: a Service in this namespace (`payments`) or a fully qualified name
    /// (`payments.shop.svc.cluster.local`).
    #[schemars(length(min = 1, max = limits::MAX_HOST_LENGTH), regex(pattern = HOST_PATTERN))]
    pub host: String,
    /// The Service port these rules apply to. Absent: every port of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// Named subsets of the host's pods, selected by labels. Rules route to these names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_GROUPS),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub groups: Vec<Group>,
    /// Rules tried in order; the first whose `match` fits the request decides. A request
    /// no rule matches goes to all of the host's pods, as without a TrafficRoute.
    #[schemars(
        length(min = 1, max = limits::MAX_RULES),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    #[x_kube(validation = Rule::new(crate::cel::only_last_may_lack("match", limits::MAX_RULES))
        .message("only the last rule may omit match: a rule without match takes every request, so rules after it are unreachable"))]
    pub rules: Vec<RouteRule>,
}

/// A named subset of the host's pods.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Group {
    /// The group's name, used by `route[].group` and `mirror.group` (e.g. `Group_2`, `canary`).
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// Pods carrying all of these labels belong to the group.
    #[schemars(schema_with = "crate::common::non_empty_label_map_schema")]
    pub labels: BTreeMap<String, String>,
}

/// One routing rule: when it applies and what happens to the request.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.timeout) || !has(self.retries) || !has(self.retries.perTryTimeout) || duration(self.retries.perTryTimeout) <= duration(self.timeout)"
).message("retries.perTryTimeout must not exceed timeout, or no retry could ever start"))]
pub struct RouteRule {
    /// The rule's name, unique in this TrafficRoute; it labels the proxies' metrics.
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), regex(pattern = NAME_PATTERN))]
    pub name: String,
    /// When the rule applies: any one entry must fit (OR); the conditions inside an entry
    /// must all hold (AND). Absent: every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_MATCHES))]
    pub matches: Vec<RequestMatch>,
    /// Where matching requests go: groups with weights summing to 100. Absent or empty: all
    /// of the host's pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_DESTINATIONS))]
    #[x_kube(validation = Rule::new(crate::cel::weights_sum_to_100(limits::MAX_DESTINATIONS))
        .message("route weights must sum to 100"))]
    pub route: Vec<Destination>,
    /// A fire-and-forget copy of a share of the matching requests to another group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Mirror>,
    /// Deliberate delays and errors, for testing how callers cope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    /// The whole request's deadline including retries; on expiry the caller gets 504.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Retries of failed attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<RetryPolicy>,
    /// A token bucket per calling proxy; requests over it get 429 with `retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}
