//! Authorization in `ProxyConfig`: the AccessPolicies that cover this workload, compiled
//! by the operator for its proxy's inbound side. Names are resolved: a rule's sources are
//! identities (exact, or a prefix ending in `*`), pods (identity and address), any
//! meshed caller, or plaintext callers.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::routes::RequestMatch;

/// One AccessPolicy, as this workload's proxy applies it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicy {
    /// The policy, `namespace/name`: in metrics, logs and the 403's `x-braid-error`.
    pub name: String,
    /// The ports it covers (the app's, as callers address them); empty: every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// What it does to the requests its rules match.
    #[serde(default)]
    pub action: AccessAction,
    /// Whether it refuses or only counts (the operator's choice, with a rollout).
    #[serde(default)]
    pub mode: AccessMode,
    /// Any rule that matches makes `action` apply (OR).
    #[serde(default)]
    pub rules: Vec<AccessRule>,
}

/// What a policy does to what its rules match.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessAction {
    /// Let it through; once any Allow policy covers a port, what none allows is refused.
    #[default]
    Allow,
    /// Refuse it, whatever Allow policies say.
    Deny,
}

/// Whether a policy refuses or only counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    /// Count and log what it would refuse; refuse nothing.
    #[default]
    Audit,
    /// Refuse.
    Enforce,
}

/// Callers and, optionally, HTTP requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// The rule's name, for evidence and logs.
    #[serde(default)]
    pub name: String,
    /// Who: any entry fits (OR). Absent: every caller; empty: nobody (its workload
    /// labels match no pod now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Vec<Source>>,
    /// What, for HTTP: any entry fits (OR). Absent: the rule matches whole connections,
    /// TCP and HTTP alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Vec<RequestMatch>>,
}

/// One kind of caller.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// A verified mTLS identity equal to this, or starting with it less its final `*`.
    Identity(String),
    /// One pod: a verified mTLS identity equal to `identity`, from `address`.
    Pod {
        /// The pod's identity.
        identity: String,
        /// The pod's address.
        address: IpAddr,
    },
    /// Any caller from this address, with a verified identity or without (the operator
    /// names pods so only to refuse them: an address alone never lets a caller in).
    Address(IpAddr),
    /// Any caller with a verified mTLS identity.
    Meshed,
    /// Any caller without one (plaintext).
    Unauthenticated,
}
