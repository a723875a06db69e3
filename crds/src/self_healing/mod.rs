//! `SelfHealing`: eject bad endpoints, heal them, and shed overload adaptively.

mod healing;
mod outlier;
mod overload;
mod status;
mod validate;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

pub use healing::{Healing, HealingAction};
pub use outlier::{ErrorRate, OutlierDetection};
pub use overload::{OverloadProtection, OverloadSignal};
pub use status::{HealingActionRecord, SelfHealingStatus, UnhealthyEndpoint};

use crate::common::WorkloadSelector;

/// Self-healing for a set of upstream workloads: callers' proxies eject endpoints that
/// fail (`outlierDetection`), the operator heals endpoints that stay bad (`healing`), and
/// the workloads' own proxies shed load adaptively when saturated (`overloadProtection`).
// kube's printcolumn(...) arguments repeat `type_`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "braid.dev",
    version = "v1alpha1",
    kind = "SelfHealing",
    namespaced,
    status = "SelfHealingStatus",
    shortname = "heal",
    category = "braid",
    derive = "PartialEq",
    printcolumn(name = "ACTION", type_ = "string", json_path = ".spec.healing.action"),
    printcolumn(
        name = "UNHEALTHY",
        type_ = "integer",
        json_path = ".status.unhealthyCount"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Self-healing for a set of upstream workloads: callers' proxies eject endpoints that fail (outlierDetection), the operator heals endpoints that stay bad (healing), and the workloads' own proxies shed load adaptively when saturated (overloadProtection)."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::cel::at_least_one_of(&["outlierDetection", "overloadProtection"]))
    .message("set outlierDetection, overloadProtection or both"))]
#[x_kube(validation = Rule::new("!has(self.healing) || has(self.outlierDetection)")
    .message("healing acts on endpoints that outlierDetection ejects: add outlierDetection"))]
pub struct SelfHealingSpec {
    /// The upstream workloads watched and protected. Empty: every workload in the namespace.
    #[serde(default, skip_serializing_if = "WorkloadSelector::is_empty")]
    pub selector: WorkloadSelector,
    /// When callers' proxies stop sending to an endpoint of these workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    /// What the operator does about an endpoint that stays ejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healing: Option<Healing>,
    /// Adaptive load shedding on these workloads' inbound side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overload_protection: Option<OverloadProtection>,
}
