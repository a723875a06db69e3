//! What the operator reports about a TrafficRoute.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRouteStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: whether the spec is valid and in force; when not, the message names the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
    /// How many rules are in force (the RULES column; kubectl cannot count a list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_count: Option<u32>,
    /// How many proxies should carry these rules, and how many have applied them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxies: Option<ProxyCounts>,
}

/// Propagation of a resource to the proxies it concerns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCounts {
    /// Proxies whose config includes this resource.
    pub targeted: u32,
    /// Of those, proxies that have applied the current version.
    pub applied: u32,
    /// Some of the proxies that have not applied it yet (`namespace/pod`, at most 5, the
    /// first in name order), so the slow ones can be found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pending: Vec<String>,
}

/// How many of the proxies that have not applied a resource its status names.
pub const PENDING_NAMED: usize = 5;

impl ProxyCounts {
    /// Counts one targeted proxy, `namespace/name`, that has (`current`) or has not
    /// applied it. The pending names kept are the first in name order, whatever order
    /// proxies are counted in, so the status does not change with it; a name is only
    /// written out when it is kept (a change leaves thousands of proxies pending at once).
    pub fn add(&mut self, namespace: &str, name: &str, current: bool) {
        self.targeted += 1;
        if current {
            self.applied += 1;
            return;
        }
        let pod = || {
            namespace
                .bytes()
                .chain(std::iter::once(b'/'))
                .chain(name.bytes())
        };
        if self.pending.len() >= PENDING_NAMED
            && self
                .pending
                .last()
                .is_some_and(|last| last.bytes().cmp(pod()).is_le())
        {
            return;
        }
        let at = self
            .pending
            .partition_point(|p| p.bytes().cmp(pod()).is_lt());
        if self.pending.get(at).is_some_and(|p| p.bytes().eq(pod())) {
            return;
        }
        self.pending.insert(at, format!("{namespace}/{name}"));
        self.pending.truncate(PENDING_NAMED);
    }

    /// Both counts together (their pending names merged, in order, still at most
    /// [`PENDING_NAMED`]).
    pub fn merged(&self, other: &ProxyCounts) -> ProxyCounts {
        let mut pending: Vec<String> = self.pending.iter().chain(&other.pending).cloned().collect();
        pending.sort();
        pending.dedup();
        pending.truncate(PENDING_NAMED);
        ProxyCounts {
            targeted: self.targeted + other.targeted,
            applied: self.applied + other.applied,
            pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_names_are_the_first_in_name_order_whatever_the_counting_order() {
        let pods: Vec<String> = (0..9).map(|i| format!("p{i}")).collect();
        let mut forward = ProxyCounts::default();
        let mut backward = ProxyCounts::default();
        for (i, p) in pods.iter().enumerate() {
            forward.add("shop", p, i == 4);
        }
        for (i, p) in pods.iter().enumerate().rev() {
            backward.add("shop", p, i == 4);
        }

        assert_eq!(forward, backward);
        assert_eq!((forward.targeted, forward.applied), (9, 1));
        assert_eq!(
            forward.pending,
            ["shop/p0", "shop/p1", "shop/p2", "shop/p3", "shop/p5"]
        );
        let merged = forward.merged(&ProxyCounts {
            targeted: 1,
            applied: 0,
            pending: vec!["a/first".into()],
        });
        assert_eq!(
            (merged.targeted, merged.pending[0].as_str()),
            (10, "a/first")
        );
        assert_eq!(merged.pending.len(), PENDING_NAMED);
        // Names compare as written out (`-` sorts before `/`), and once.
        let mut c = ProxyCounts::default();
        for (ns, name) in [("shop", "a"), ("sho-p", "z"), ("shop", "a")] {
            c.add(ns, name, false);
        }
        assert_eq!(c.pending, ["sho-p/z", "shop/a"]);
    }
}
