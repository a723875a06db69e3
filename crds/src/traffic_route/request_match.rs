//! Conditions on a request: headers, path, method and the caller's labels.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;
use crate::validation::HEADER_NAME_PATTERN;

/// Conditions that must all hold for a request to match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestMatch {
    /// Header conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_HEADER_MATCHES))]
    pub headers: Vec<HeaderMatch>,
    /// A condition on the request path (without the query string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HttpMethod>,
    /// Labels the calling pod must carry. Resolved when config is compiled: a caller
    /// only receives the rules that can match it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::label_map_schema")]
    pub source_labels: BTreeMap<String, String>,
}

/// A condition on one header: set exactly one of `exact`, `prefix`, `regex`, `present`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::cel::exactly_one_of(&["exact", "prefix", "regex", "present"]))
    .message("set exactly one of exact, prefix, regex, present"))]
pub struct HeaderMatch {
    /// The header name, matched case-insensitively (e.g. `type`, `x-user-group`).
    #[schemars(
        length(min = 1, max = limits::MAX_HEADER_NAME_LENGTH),
        regex(pattern = HEADER_NAME_PATTERN)
    )]
    pub name: String,
    /// The header's value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_MATCH_VALUE_LENGTH))]
    pub exact: Option<String>,
    /// The header's value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_MATCH_VALUE_LENGTH))]
    pub prefix: Option<String>,
    /// The header's whole value matches this regular expression (RE2 syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = limits::MAX_MATCH_VALUE_LENGTH))]
    pub regex: Option<String>,
    /// `true`: the header is present, any value; `false`: the header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub present: Option<bool>,
}

/// A condition on the path: set exactly one of `exact`, `prefix`, `regex`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(crate::cel::exactly_one_of(&["exact", "prefix", "regex"]))
    .message("set exactly one of exact, prefix, regex"))]
pub struct PathMatch {
    /// The path equals this, e.g. `/api/transfer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_MATCH_VALUE_LENGTH), regex(pattern = "^/"))]
    pub exact: Option<String>,
    /// The path starts with this, segment-wise: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_MATCH_VALUE_LENGTH), regex(pattern = "^/"))]
    pub prefix: Option<String>,
    /// The whole path matches this regular expression (RE2 syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = limits::MAX_MATCH_VALUE_LENGTH))]
    pub regex: Option<String>,
}

/// An HTTP request method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// CONNECT
    Connect,
    /// OPTIONS
    Options,
    /// TRACE
    Trace,
    /// PATCH
    Patch,
}
