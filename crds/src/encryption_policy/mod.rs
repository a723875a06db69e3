//! `EncryptionPolicy`: which workloads accept and receive mutual TLS, rolled out gradually.

mod rollout;
mod status;
mod validate;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use rollout::{AutoRollout, Rollout};
pub use status::{EncryptionPhase, EncryptionPolicyStatus, PlaintextSource, TrafficCounts};

use crate::common::WorkloadSelector;
use crate::limits;

/// Mutual TLS for a set of workloads: what their servers accept (`mode`, per-port
/// overrides) and what share of their callers originate mTLS (`rollout`), optionally
/// advanced by the operator step by step until it is safe to enforce Strict.
// kube's printcolumn(...) arguments repeat `type_`, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "braid.dev",
    version = "v1alpha1",
    kind = "EncryptionPolicy",
    namespaced,
    status = "EncryptionPolicyStatus",
    shortname = "encp",
    category = "braid",
    derive = "PartialEq",
    printcolumn(name = "MODE", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "PHASE", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "PERCENT",
        type_ = "integer",
        json_path = ".status.currentPercent"
    ),
    printcolumn(
        name = "AGE",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    doc = "Mutual TLS for a set of workloads: what their servers accept (mode, per-port overrides) and what share of their callers originate mTLS (rollout), optionally advanced by the operator step by step until it is safe to enforce Strict."
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.mode != 'Strict' || !has(self.rollout) || (self.rollout.percent == 100 && !has(self.rollout.auto))"
).message("mode Strict refuses plaintext, so every caller must already use mTLS: set rollout.percent to 100 without rollout.auto, or keep mode Permissive and let rollout.auto.enforceStrict switch to Strict"))]
#[x_kube(validation = Rule::new(
    "self.mode != 'Disabled' || !has(self.rollout) || (self.rollout.percent == 0 && !has(self.rollout.auto))"
).message("mode Disabled accepts only plaintext, so no caller may originate mTLS: remove rollout or set mode Permissive"))]
pub struct EncryptionPolicySpec {
    /// The workloads (servers) this policy covers. Empty: every workload in the namespace.
    #[serde(default, skip_serializing_if = "WorkloadSelector::is_empty")]
    pub selector: WorkloadSelector,
    /// What the covered servers accept: `Disabled` (plaintext only), `Permissive` (mTLS and
    /// plaintext on the same port) or `Strict` (mTLS only).
    #[serde(default)]
    pub mode: TlsMode,
    /// Ports whose mode differs from `mode`, e.g. a metrics port scraped from outside the mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = limits::MAX_PORT_OVERRIDES),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["port"])
    )]
    pub port_overrides: Vec<PortOverride>,
    /// What share of meshed callers originate mTLS to the covered workloads. Absent: all of
    /// them (unless `mode` is `Disabled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// What a server accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// Plaintext only; callers do not originate mTLS.
    Disabled,
    /// mTLS and plaintext on the same port, told apart by the first bytes.
    #[default]
    Permissive,
    /// mTLS only; plaintext connections are closed and counted.
    Strict,
}

/// A port with its own mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortOverride {
    /// The container port, 1 to 65535.
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// The mode on this port.
    pub mode: TlsMode,
}
