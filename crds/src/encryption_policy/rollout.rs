//! The gradual move of callers from plaintext to mTLS.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;
use crate::limits;

/// What share of callers originate mTLS. A caller is in or out by a stable hash of its
/// pod name, so it does not flip back and forth as the share grows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// Percent of callers that originate mTLS, 0 to 100. With `auto`, the share the
    /// rollout starts from.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub percent: u32,
    /// Let the operator advance the share itself, watching callers' error rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<AutoRollout>,
}

/// An automatic rollout: the operator moves through `steps`, one per `interval`, stepping
/// back when errors rise.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AutoRollout {
    /// Percentages to move through, strictly ascending and ending at 100, e.g. [10, 25, 50, 100].
    #[schemars(
        length(min = 1, max = limits::MAX_ROLLOUT_STEPS),
        inner(range(min = 1, max = 100))
    )]
    #[x_kube(
        validation = Rule::new(crate::cel::strictly_ascending(limits::MAX_ROLLOUT_STEPS))
            .message("steps must be strictly ascending, e.g. [10, 25, 50, 100]"),
        validation = Rule::new("self.size() == 0 || self[self.size() - 1] == 100")
            .message("the last step must be 100")
    )]
    pub steps: Vec<u32>,
    /// How long each step holds before the next, e.g. `5m`.
    pub interval: Duration,
    /// Step back when callers' error rate rises by more than this (0 to 1; 0.01 is one
    /// percentage point) compared with before the step.
    #[serde(default = "default_max_error_rate_increase")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: f64,
    /// After 100%, switch the servers to Strict once no plaintext request reached them for
    /// a whole interval.
    #[serde(default)]
    pub enforce_strict: bool,
    /// Callers' requests a step must see before the rollout moves past it, and mTLS
    /// requests the servers must see in the last interval before Strict: each step up
    /// rests on evidence, not on silence.
    #[serde(default = "default_min_requests_per_step")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub min_requests_per_step: u64,
    /// Move on, and enforce Strict, even when callers sent nothing during a step (for
    /// workloads that are rarely called). Without traffic nothing is measured, so a caller
    /// outside the mesh would be refused unseen.
    #[serde(default)]
    pub advance_without_traffic: bool,
}

/// Requests a step must see by default.
pub const DEFAULT_MIN_REQUESTS_PER_STEP: u64 = 20;

fn default_min_requests_per_step() -> u64 {
    DEFAULT_MIN_REQUESTS_PER_STEP
}

fn default_max_error_rate_increase() -> f64 {
    0.01
}
