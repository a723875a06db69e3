//! What the operator reports about an AccessPolicy: the mode in force and the evidence
//! for (or against) enforcing it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (the spec is valid and in force) and `SafeToEnforce` (nothing this policy
    /// would refuse reached the covered workloads for a whole window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// The mode the proxies apply now: `spec.mode`, or where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccessPhase>,
    /// When the current phase began (with a rollout: when the clean interval or the watch
    /// after enforcing started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_started_at: Option<Time>,
    /// A digest of the spec fields the rollout's progress belongs to (selector, ports,
    /// action, rules): an edit of anything else keeps the progress, an edit of these
    /// starts the rollout again from Audit, and a restarted operator resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub progress_of: Option<String>,
    /// Decisions over the last window, as the covered workloads' proxies reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<DecisionCounts>,
    /// The callers with the most refused (or would-be refused) requests in the window:
    /// who enforcing breaks, or who it stops.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub denied_sources: Vec<DeniedSource>,
    /// How many proxies should carry this policy, and how many have applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<crate::traffic_route::ProxyCounts>,
}

/// The mode the proxies apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AccessPhase {
    /// Decisions are counted; nothing is refused.
    Auditing,
    /// Refused requests get 403 and refused connections are closed.
    Enforcing,
}

impl From<super::AccessMode> for AccessPhase {
    /// The phase of a policy applied as its `spec.mode` says (no rollout moves it).
    fn from(mode: super::AccessMode) -> Self {
        match mode {
            super::AccessMode::Audit => Self::Auditing,
            super::AccessMode::Enforce => Self::Enforcing,
        }
    }
}

/// Requests the policy decided on, over a sliding window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionCounts {
    /// Requests (and TCP connections) it let through.
    pub allowed: u64,
    /// Requests it would have refused had it been enforced (counted in Audit).
    pub would_deny: u64,
    /// Requests it refused (counted in Enforce).
    pub denied: u64,
    /// The window's length in seconds.
    pub window_seconds: u64,
}

/// A caller whose requests the policy refuses, or would refuse.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeniedSource {
    /// Its mesh identity; absent for a plaintext caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Its address, as the covered workloads' proxies saw it.
    pub address: String,
    /// Its namespace, from its identity or its pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The pod behind the address (`namespace/name`), when the operator knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The request, `METHOD /path`, for HTTP; absent for a TCP connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Its would-be refused requests in the window.
    #[serde(default)]
    pub would_deny: u64,
    /// Its refused requests in the window.
    #[serde(default)]
    pub denied: u64,
    /// Refused now though it was let through while the policy audited: what makes an
    /// automatic rollout step back to Audit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allowed_before: bool,
}
