//! Outlier detection: when a caller's proxy ejects an endpoint.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;

fn default_consecutive_errors() -> u32 {
    5
}

fn default_base_ejection_time() -> Duration {
    Duration::new("30s")
}

fn default_max_ejection_time() -> Duration {
    Duration::new("5m")
}

fn default_max_ejection_percent() -> u32 {
    50
}

/// When an endpoint is ejected, for how long, and how many may be.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.baseEjectionTime) <= duration(self.maxEjectionTime)")
    .message("maxEjectionTime must be at least baseEjectionTime"))]
pub struct OutlierDetection {
    /// Eject after this many errors in a row (5xx, connect failures, resets), 1 to 1000.
    #[serde(default = "default_consecutive_errors")]
    #[schemars(range(min = 1, max = 1000))]
    pub consecutive_errors: u32,
    /// Also eject when the error rate over a window passes a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
    /// How long the first ejection lasts; each repeat doubles it, up to `maxEjectionTime`.
    #[serde(default = "default_base_ejection_time")]
    pub base_ejection_time: Duration,
    /// The longest an ejection lasts, however often it repeats.
    #[serde(default = "default_max_ejection_time")]
    pub max_ejection_time: Duration,
    /// Never eject more than this percent of a group's endpoints, 0 to 100.
    #[serde(default = "default_max_ejection_percent")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejection_percent: u32,
}

/// Ejection by error rate over a sliding window.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.threshold > 0.0")
    .message("threshold must be above 0: a rate of 0 would eject on the first error"))]
pub struct ErrorRate {
    /// Eject when the share of failed requests exceeds this, above 0 and at most 1.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub threshold: f64,
    /// Only judge an endpoint that served at least this many requests in the window.
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_requests: u32,
    /// The window's length, e.g. `10s`.
    pub window: Duration,
}
