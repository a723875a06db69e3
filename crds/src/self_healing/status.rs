//! What the operator reports about a SelfHealing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::HealingAction;
use crate::limits;

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfHealingStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: whether the spec is valid and in force; when not, the message names the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// How many endpoints are listed in `unhealthy` (the UNHEALTHY column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_count: Option<u32>,
    /// Endpoints proxies currently report as ejected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_STATUS_ENTRIES))]
    pub unhealthy: Vec<UnhealthyEndpoint>,
    /// Recent healing actions, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_STATUS_ENTRIES))]
    pub actions: Vec<HealingActionRecord>,
    /// How many proxies should carry this policy, and how many have applied it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<crate::traffic_route::ProxyCounts>,
}

/// An endpoint reported as ejected.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnhealthyEndpoint {
    /// The pod behind the endpoint.
    #[schemars(length(max = 253))]
    pub pod: String,
    /// The endpoint's address, `ip:port`.
    #[schemars(length(max = 64))]
    pub address: String,
    /// When it was first reported.
    pub since: Time,
    /// How many distinct proxies report it.
    pub reporters: u32,
}

/// A healing action the operator took.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealingActionRecord {
    /// The pod acted on.
    #[schemars(length(max = 253))]
    pub pod: String,
    /// What was done.
    pub action: HealingAction,
    /// When.
    pub at: Time,
}
