//! The automatic move of an AccessPolicy from Audit to Enforce.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::common::Duration;

/// How the operator moves a policy from Audit to Enforce, and back.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRollout {
    /// How long the policy must audit without a single would-be refusal before it is
    /// enforced, e.g. `10m`, at least 5s (proxies report every 2 s); after enforcing, how
    /// long the operator watches for refusals of traffic it let through while auditing.
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s')")
        .message("must be at least 5s: proxies report every 2 s, and a shorter interval could miss a would-be refusal"))]
    pub interval: Duration,
    /// Requests the covered workloads must receive in that interval before enforcing:
    /// the switch rests on evidence, not on silence.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub min_requests: u64,
    /// Enforce even when nothing called the covered workloads for a whole interval (for
    /// workloads that are rarely called). Without traffic nothing is measured, so a
    /// caller the rules forgot would be refused unseen.
    #[serde(default)]
    pub advance_without_traffic: bool,
}

/// Requests an interval must see by default.
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

fn default_min_requests() -> u64 {
    DEFAULT_MIN_REQUESTS
}
