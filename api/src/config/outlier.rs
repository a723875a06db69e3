//! Outlier detection settings of a service, compiled by the operator from the
//! SelfHealing resources that select its endpoints.

use serde::{Deserialize, Serialize};

/// When this proxy ejects an endpoint of the service, for how long, and how many may be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Eject after this many failures in a row (5xx, connect failures, resets).
    pub consecutive_errors: u32,
    /// Also eject when the failure rate over a window passes a threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRate>,
    /// How long the first ejection lasts, in milliseconds; each repeat doubles it.
    pub base_ejection_time_ms: u64,
    /// The longest an ejection lasts, in milliseconds.
    pub max_ejection_time_ms: u64,
    /// Never eject more than this percent of a group's endpoints.
    pub max_ejection_percent: u32,
}

/// Ejection by failure rate over a window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRate {
    /// The share of failed requests (above 0, at most 1) that ejects.
    pub threshold: f64,
    /// Only an endpoint with at least this many requests in the window is judged.
    pub min_requests: u32,
    /// The window, in milliseconds.
    pub window_ms: u64,
}
