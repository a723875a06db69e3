//! One rule of an AccessPolicy: which callers (`from`) and, optionally, which HTTP
//! requests (`http`).

use std::collections::BTreeMap;

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::limits;
use crate::traffic_route::{HeaderMatch, HttpMethod, PathMatch};
use crate::validation::NAME_PATTERN;

/// Callers and, optionally, requests: a request matches when one `from` entry fits its
/// caller and `http` (if any) fits the request.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessRule {
    /// A name for the rule, unique in the policy, shown in the evidence and logs.
    /// Absent: `rule-<index>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_NAME_LENGTH), regex(pattern = NAME_PATTERN))]
    pub name: Option<String>,
    /// Who: any one entry fits (OR). Absent or empty: every caller, meshed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_ACCESS_SOURCES))]
    pub from: Vec<Source>,
    /// What, for HTTP: methods, paths and headers. Absent: the rule works at the
    /// connection level and matches TCP and HTTP alike. A Deny rule with `http` refuses
    /// its callers' opaque TCP connections whole, since what they carry cannot be seen;
    /// an Allow rule with `http` lets no TCP through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCondition>,
}

/// One kind of caller. Set exactly one of `identity`, `serviceAccount`, `namespace`,
/// `workloadLabels`, `meshed`, `unauthenticated`; `namespace` may also go with
/// `serviceAccount` or `workloadLabels` to say where they are.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(SOURCE_ONE_OF)
    .message("set exactly one of identity, serviceAccount, namespace, workloadLabels, meshed, unauthenticated (namespace may go with serviceAccount or workloadLabels)"))]
#[x_kube(validation = Rule::new("(!has(self.meshed) || self.meshed) && (!has(self.unauthenticated) || self.unauthenticated)")
    .message("meshed and unauthenticated can only be true: leave them out otherwise"))]
pub struct Source {
    /// A caller's SPIFFE identity, `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`;
    /// a trailing `/*` matches any rest, e.g. `spiffe://cluster.local/ns/ops/sa/*`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_IDENTITY_LENGTH))]
    pub identity: Option<String>,
    /// Pods running as this service account (in `namespace`, or the policy's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_HOST_LENGTH))]
    pub service_account: Option<String>,
    /// Alone: every meshed pod of this namespace. With `serviceAccount` or
    /// `workloadLabels`: where those are (default: the policy's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_NAMESPACE_LENGTH))]
    pub namespace: Option<String>,
    /// Pods carrying all of these labels (in `namespace`, or the policy's own). The
    /// operator resolves them to each pod's identity and address; a caller fits only over
    /// mTLS, with both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::non_empty_label_map_schema")]
    pub workload_labels: Option<BTreeMap<String, String>>,
    /// `true`: any caller with a mesh identity (any verified mTLS peer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meshed: Option<bool>,
    /// `true`: callers without a mesh identity (plaintext). Only meaningful while the
    /// port is not Strict: Strict refuses them before any AccessPolicy is asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unauthenticated: Option<bool>,
}

/// Exactly one kind of source, `namespace` counting as its own kind only when alone.
/// `namespace` is a CEL reserved word: the API server (and kube's evaluator) name the
/// field `__namespace__` in rules.
const SOURCE_ONE_OF: &str = "[has(self.identity), has(self.serviceAccount), has(self.workloadLabels), has(self.meshed), has(self.unauthenticated), has(self.__namespace__) && !has(self.serviceAccount) && !has(self.workloadLabels)].filter(x, x).size() == 1 && (!has(self.__namespace__) || !(has(self.identity) || has(self.meshed) || has(self.unauthenticated)))";

/// HTTP conditions, all of which must hold (AND); each list matches when any entry fits.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::cel::at_least_one_of(&["methods", "paths", "headers"]))
    .message("give methods, paths or headers, or remove http to match whole connections"))]
pub struct HttpCondition {
    /// The request's method is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9))]
    pub methods: Vec<HttpMethod>,
    /// The request's path (without the query) fits one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_MATCHES))]
    pub paths: Vec<PathMatch>,
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_HEADER_MATCHES))]
    pub headers: Vec<HeaderMatch>,
}

impl AccessRule {
    /// The rule's name: its own, or `rule-<index>`.
    pub fn name_at(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("rule-{index}"))
    }
}
