//! Adaptive overload protection settings of the inbound side, compiled by the operator
//! from the SelfHealing that selects this workload.

use serde::{Deserialize, Serialize};

/// Shed inbound requests to hold a signal at a target.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OverloadProtection {
    /// What is measured.
    pub signal: OverloadSignal,
    /// When protection starts and the ceiling it keeps the signal under: a CPU share
    /// (0.75), a p99 in seconds (0.25), or the number of requests in flight let through
    /// (200).
    pub target: f64,
    /// Requests let through to the app at once never drop below this.
    pub min_limit: u32,
    /// ...nor rises above this, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<u32>,
    /// How often the signal is measured and the limit adjusted, in milliseconds.
    pub sample_period_ms: u64,
}

/// The signal overload protection holds at its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverloadSignal {
    /// CPU used as a share of the CPU limit (cgroup v2), or else of one CPU by this
    /// process.
    Cpu,
    /// The p99 latency of inbound requests, in seconds.
    Latency,
    /// Inbound requests in flight.
    Inflight,
}
