//! What the operator reports about an EncryptionPolicy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EncryptionPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted` (the spec is valid) and `SafeToEnforce` (no plaintext reached the covered
    /// workloads for a whole window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// Where the rollout stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EncryptionPhase>,
    /// The share of callers originating mTLS now, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_percent: Option<u32>,
    /// When the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// A digest of the spec fields `phase` and `currentPercent` belong to (mode,
    /// selector, rollout percent, steps, enforceStrict): an edit of anything else (the
    /// interval, say) keeps the progress, and a restarted operator resumes from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub progress_of: Option<String>,
    /// Requests the covered workloads received, by kind, as reported by their proxies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<TrafficCounts>,
    /// The callers that sent the most plaintext in the window: what Strict would cut off.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub plaintext_sources: Vec<PlaintextSource>,
    /// How many proxies should carry this policy, and how many have applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<crate::traffic_route::ProxyCounts>,
}

/// Where an encryption rollout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum EncryptionPhase {
    /// No caller originates mTLS.
    Plaintext,
    /// Some callers originate mTLS.
    RollingOut,
    /// Every meshed caller originates mTLS; servers still accept plaintext.
    Encrypted,
    /// Servers accept mTLS only.
    Strict,
}

/// Request counts over a sliding window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficCounts {
    /// Requests that arrived over mTLS.
    pub mtls_requests: u64,
    /// Requests that arrived in plaintext.
    pub plaintext_requests: u64,
    /// The window's length in seconds.
    pub window_seconds: u64,
}

/// A caller still sending plaintext to the covered workloads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlaintextSource {
    /// Its address, as the workloads' proxies saw it.
    pub address: String,
    /// The pod behind the address (`namespace/name`), when the registry knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Its identity, when it runs a braid proxy (it is then not yet in the rollout).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Its plaintext requests in the window.
    pub requests: u64,
}
