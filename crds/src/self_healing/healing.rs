//! Healing: what the operator does about an endpoint that stays ejected.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;

fn default_cooldown() -> Duration {
    Duration::new("2m")
}

fn default_min_reporters() -> u32 {
    2
}

fn default_max_actions_per_hour() -> u32 {
    3
}

/// The operator's response to endpoints that stay bad.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Healing {
    /// What to do: `None` (an Event and status only), `RemoveFromService` (label the pod
    /// `braid.dev/quarantined=true` so no proxy sends to it) or `RestartPod` (evict it,
    /// respecting PodDisruptionBudgets).
    #[serde(default)]
    pub action: HealingAction,
    /// How long an endpoint must stay reported before the operator acts, e.g. `2m`.
    #[serde(default = "default_cooldown")]
    pub cooldown: Duration,
    /// How many distinct proxies must report the endpoint, 1 to 100, so one caller's
    /// network trouble does not restart a healthy pod.
    #[serde(default = "default_min_reporters")]
    #[schemars(range(min = 1, max = 100))]
    pub min_reporters: u32,
    /// At most this many actions per hour across the selected workloads, 0 to 100.
    #[serde(default = "default_max_actions_per_hour")]
    #[schemars(range(min = 0, max = 100))]
    pub max_actions_per_hour: u32,
}

/// What the operator does about an unhealthy endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum HealingAction {
    /// Record an Event and list the endpoint in status; change nothing.
    #[default]
    None,
    /// Label the pod `braid.dev/quarantined=true`; no proxy sends to it until the label is removed.
    RemoveFromService,
    /// Evict the pod through the eviction API, so PodDisruptionBudgets hold.
    RestartPod,
}
