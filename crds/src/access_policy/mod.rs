//! `AccessPolicy`: who may call a set of workloads, tried in Audit before it is enforced.

mod rollout;
mod rule;
mod status;
mod validate;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use rollout::{AccessRollout, DEFAULT_MIN_REQUESTS};
pub use rule::{AccessRule, HttpCondition, Source};
pub use status::{AccessPhase, AccessPolicyStatus, DecisionCounts, DeniedSource};

use crate::common::WorkloadSelector;
use crate::limits;

/// Authorization for a set of workloads (servers): which callers, by their mesh identity
/// or as plaintext, may reach which ports, methods and paths. Tried in `Audit` (counted,
/// nothing refused) before `Enforce`, or moved there by the operator on evidence.
// kube's printcolumn(...) arguments repeat `type_`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "braid.dev",
    version = "v1alpha1",
    kind = "AccessPolicy",
    namespaced,
    status = "AccessPolicyStatus",
    shortname = "ap",
    category = "braid",
    derive = "PartialEq",
    printcolumn(name = "ACTION", type_ = "string", json_path = ".spec.action"),
    printcolumn(name = "PHASE", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "WOULD-DENY",
        type_ = "integer",
        json_path = ".status.decisions.wouldDeny"
    ),
    printcolumn(
        name = "DENIED",
        type_ = "integer",
        json_path = ".status.decisions.denied"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Authorization for a set of workloads (servers): which callers, by their mesh identity or as plaintext, may reach which ports, methods and paths. Tried in Audit (counted, nothing refused) before Enforce, or moved there by the operator on evidence."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.rollout) || self.mode == 'Audit'")
    .message("rollout starts from Audit and lets the operator switch to Enforce: set mode Audit, or remove rollout to enforce now"))]
pub struct AccessPolicySpec {
    /// The workloads (servers) this policy protects. Empty: every workload in the namespace.
    #[serde(default, skip_serializing_if = "WorkloadSelector::is_empty")]
    pub selector: WorkloadSelector,
    /// The container ports it applies to. Empty: every port of the selected workloads.
    /// The proxy's own admin and health ports are never subject to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_ACCESS_PORTS), inner(range(min = 1, max = 65535)))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q == p))")
        .message("list each port once"))]
    pub ports: Vec<u16>,
    /// `Allow`: once any Allow policy covers a port, only what some Allow rule matches gets
    /// through. `Deny`: what a rule matches is refused, whatever Allow policies say.
    #[serde(default)]
    pub action: AccessAction,
    /// `Audit`: decisions are counted and logged, nothing is refused. `Enforce`: refused
    /// requests get 403 (gRPC: PERMISSION_DENIED), refused TCP connections are closed.
    #[serde(default)]
    pub mode: AccessMode,
    /// Let the operator switch from Audit to Enforce once a whole interval passed without a
    /// request this policy would refuse, and back to Audit if it then refuses a caller it
    /// let through before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<AccessRollout>,
    /// Any rule that matches a request makes the policy's `action` apply to it (OR).
    #[schemars(length(min = 1, max = limits::MAX_ACCESS_RULES))]
    pub rules: Vec<AccessRule>,
}

/// What a policy does to the requests its rules match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessAction {
    /// Let them through; everything else to the covered ports is refused.
    #[default]
    Allow,
    /// Refuse them; takes precedence over every Allow.
    Deny,
}

/// Whether a policy refuses requests or only counts what it would refuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AccessMode {
    /// Count and log what would be refused; refuse nothing.
    #[default]
    Audit,
    /// Refuse.
    Enforce,
}
