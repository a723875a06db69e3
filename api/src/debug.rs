//! What an operator replica tells people (through `braidctl`) on its admin port, as
//! JSON. Every replica answers for itself: which proxies stream from it, and, for all of
//! them, what their reports said (a follower passes reports on to the leader and keeps
//! them too), so the leader's answer counts every proxy.

use serde::{Deserialize, Serialize};

/// `GET` on the operator's admin port: every meshed workload's proxy ([`ProxiesAnswer`]).
pub const PROXIES_PATH: &str = "/debug/proxies";
/// `GET` on the operator's admin port: the operator's own version ([`OperatorInfo`]).
pub const INFO_PATH: &str = "/debug/info";

/// Directory mode: the name of the file under the status directory (`<dir>/.status`)
/// holding one resource's status, which the operator writes and braidctl reads:
/// `<kind, lower-case>.<namespace>.<name>.yaml`.
pub fn status_file_name(kind: &str, namespace: &str, name: &str) -> String {
    format!("{}.{namespace}.{name}.yaml", kind.to_ascii_lowercase())
}

/// The answer of [`PROXIES_PATH`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxiesAnswer {
    /// The replica answering.
    pub replica: OperatorInfo,
    /// One entry per meshed workload of the latest compile, by pod.
    pub proxies: Vec<ProxyStatus>,
}

/// One operator replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorInfo {
    /// Its name (its pod's, in a cluster).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Whether it leads now (heals, steps rollouts, writes status).
    pub leader: bool,
    /// When its latest compile was published (RFC 3339); absent before the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiled_at: Option<String>,
}

/// One proxy as an operator replica knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    /// Its pod, `namespace/name`.
    pub pod: String,
    /// The config version it should hold (its config in the latest compile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_version: Option<String>,
    /// The version it last reported holding; absent: it never reported to this replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_version: Option<String>,
    /// Whether it holds the latest compile's config.
    pub current: bool,
    /// When it first reported holding `appliedVersion` (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// When its latest report came (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report: Option<String>,
    /// Since when its config stream is open on this replica (RFC 3339); absent: it
    /// streams from another replica, or from none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_since: Option<String>,
    /// The proxy's version, as it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_version: Option<String>,
    /// When its mesh certificate expires (RFC 3339), as it reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_expires: Option<String>,
}
