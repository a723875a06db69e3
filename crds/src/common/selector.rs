//! Which pods a policy applies to: the label selector users know from Deployments.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::limits;

/// Selects workloads (pods) by their labels, like a Deployment's `spec.selector`.
/// Empty (or absent) selects every workload in the resource's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    /// Labels a pod must carry, all of them, with these exact values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "crate::common::label_map_schema")]
    pub match_labels: BTreeMap<String, String>,
    /// Further requirements, all of which must hold (ANDed with `matchLabels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_LABELS))]
    pub match_expressions: Vec<SelectorRequirement>,
}

/// One label requirement: `key` `operator` `values`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.operator == 'In' || self.operator == 'NotIn' ? (has(self.values) && self.values.size() > 0) : (!has(self.values) || self.values.size() == 0)"
).message("In and NotIn need at least one value; Exists and DoesNotExist take none"))]
pub struct SelectorRequirement {
    /// The label key, e.g. `app` or `app.kubernetes.io/name`.
    #[schemars(length(min = 1, max = limits::MAX_LABEL_KEY_LENGTH))]
    pub key: String,
    /// How the label's value is compared with `values`.
    pub operator: SelectorOperator,
    /// The values for `In` and `NotIn` (at least one); must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = limits::MAX_LABELS), inner(length(max = limits::MAX_LABEL_VALUE_LENGTH)))]
    pub values: Vec<String>,
}

/// The operator of a [`SelectorRequirement`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SelectorOperator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent or its value is none of `values`.
    NotIn,
    /// The label is present, whatever its value.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

impl WorkloadSelector {
    /// True when the selector names no requirement and so selects every workload.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether a pod with `labels` is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|req| req.matches(labels))
    }
}

impl SelectorRequirement {
    /// Whether a pod with `labels` satisfies this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            SelectorOperator::In => value.is_some_and(|v| self.values.contains(v)),
            SelectorOperator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            SelectorOperator::Exists => value.is_some(),
            SelectorOperator::DoesNotExist => value.is_none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_selects_everything() {
        assert!(WorkloadSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn labels_and_expressions_are_anded() {
        let sel = WorkloadSelector {
            match_labels: labels(&[("app", "payments")]),
            match_expressions: vec![SelectorRequirement {
                key: "track".into(),
                operator: SelectorOperator::NotIn,
                values: vec!["canary".into()],
            }],
        };
        assert!(sel.matches(&labels(&[("app", "payments")])));
        assert!(sel.matches(&labels(&[("app", "payments"), ("track", "stable")])));
        assert!(!sel.matches(&labels(&[("app", "payments"), ("track", "canary")])));
        assert!(!sel.matches(&labels(&[("app", "checkout")])));
    }

    #[test]
    fn exists_and_does_not_exist() {
        let req = |operator| SelectorRequirement {
            key: "zone".into(),
            operator,
            values: vec![],
        };
        assert!(req(SelectorOperator::Exists).matches(&labels(&[("zone", "a")])));
        assert!(!req(SelectorOperator::Exists).matches(&labels(&[])));
        assert!(req(SelectorOperator::DoesNotExist).matches(&labels(&[])));
        assert!(!req(SelectorOperator::In).matches(&labels(&[("zone", "a")])));
    }
}
