//! Adaptive overload protection: a gradient concurrency limiter on the inbound side.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;

fn default_min_limit() -> u32 {
    1
}

fn default_sample_period() -> Duration {
    Duration::new("1s")
}

/// Sheds requests (503 with `x-braid-overloaded: 1`; health checks never) once a signal
/// passes its target, limiting how many requests reach the app at once and adjusting
/// that limit every sample period to the app's latency without a queue.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.signal != 'cpu' || (self.target > 0.0 && self.target <= 1.0)")
    .message("for signal cpu, target is a share of the pod's CPU limit: above 0 and at most 1, e.g. 0.75"))]
#[x_kube(validation = Rule::new("self.signal != 'latency' || (self.target > 0.0 && self.target <= 60.0)")
    .message("for signal latency, target is a p99 in seconds: above 0 and at most 60, e.g. 0.25"))]
#[x_kube(validation = Rule::new("self.signal != 'inflight' || self.target >= 1.0")
    .message("for signal inflight, target is a number of concurrent requests: at least 1"))]
#[x_kube(validation = Rule::new("!has(self.maxLimit) || self.maxLimit >= self.minLimit")
    .message("maxLimit must be at least minLimit"))]
pub struct OverloadProtection {
    /// What is measured: `cpu` (share of the pod's CPU limit), `latency` (p99 seconds) or
    /// `inflight` (concurrent requests).
    pub signal: OverloadSignal,
    /// When protection starts, and the ceiling it keeps the signal under: a CPU share
    /// (0.75), a p99 in seconds (0.25) or, for `inflight`, the number of requests let
    /// through at once (200).
    #[schemars(range(min = 0.0, max = 1_000_000.0))]
    pub target: f64,
    /// Requests let through at once never drop below this, 1 to 1,000,000.
    #[serde(default = "default_min_limit")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub min_limit: u32,
    /// Requests let through at once never rise above this. Absent: no ceiling.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub max_limit: Option<u32>,
    /// How often the signal is measured and the limit adjusted, e.g. `1s`.
    #[serde(default = "default_sample_period")]
    pub sample_period: Duration,
}

/// The signal overload protection holds at its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OverloadSignal {
    /// CPU used as a share of the pod's CPU limit.
    Cpu,
    /// The p99 latency of inbound requests, in seconds.
    Latency,
    /// Requests in flight on the inbound side.
    Inflight,
}
