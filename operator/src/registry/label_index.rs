//! Workloads by namespace and by each label, so a selector is matched against the
//! workloads that carry one of its labels, not against every workload of the mesh (at
//! 5,000 services × 10 pods that was 250 million label checks per change).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::Workload;

/// An index of workloads, borrowed from where they are kept.
#[derive(Debug, Default)]
pub struct LabelIndex<'a> {
    by_label: HashMap<(&'a str, &'a str, &'a str), Vec<&'a Arc<Workload>>>,
    by_namespace: HashMap<&'a str, Vec<&'a Arc<Workload>>>,
}

impl<'a> LabelIndex<'a> {
    /// Indexes `workloads`; each list keeps their order.
    pub fn new(workloads: impl IntoIterator<Item = &'a Arc<Workload>>) -> Self {
        let mut by_label: HashMap<(&str, &str, &str), Vec<&Arc<Workload>>> = HashMap::new();
        let mut by_namespace: HashMap<&str, Vec<&Arc<Workload>>> = HashMap::new();
        for w in workloads {
            by_namespace
                .entry(w.key.namespace.as_str())
                .or_default()
                .push(w);
            for (k, v) in &w.labels {
                by_label
                    .entry((w.key.namespace.as_str(), k.as_str(), v.as_str()))
                    .or_default()
                    .push(w);
            }
        }
        Self {
            by_label,
            by_namespace,
        }
    }

    /// The workloads of `namespace` that may carry every label of `labels`: those with
    /// its rarest label, or with no labels to go by, all of the namespace's. The caller
    /// checks the whole selector on these few.
    pub fn candidates<'s>(
        &'s self,
        namespace: &'s str,
        labels: &'s BTreeMap<String, String>,
    ) -> &'s [&'s Arc<Workload>] {
        let mut fewest: Option<&Vec<&Arc<Workload>>> = None;
        for (k, v) in labels {
            match self.by_label.get(&(namespace, k.as_str(), v.as_str())) {
                Some(list) if fewest.is_none_or(|f| list.len() < f.len()) => fewest = Some(list),
                Some(_) => {}
                None => return &[],
            }
        }
        match fewest {
            Some(list) => list,
            None => self
                .by_namespace
                .get(namespace)
                .map_or(&[][..], Vec::as_slice),
        }
    }

    /// The workloads of `namespace` that carry every label of `selector`, in the order
    /// indexed; none for an empty selector (a Service without one has no endpoints).
    pub fn select(
        &self,
        namespace: &str,
        selector: &BTreeMap<String, String>,
    ) -> Vec<&'a Arc<Workload>> {
        let mut lists = Vec::with_capacity(selector.len());
        for (k, v) in selector {
            match self.by_label.get(&(namespace, k.as_str(), v.as_str())) {
                Some(list) => lists.push(list),
                None => return Vec::new(),
            }
        }
        // The rarest label decides the candidates; the others only confirm.
        let Some(fewest) = lists.iter().min_by_key(|l| l.len()) else {
            return Vec::new();
        };
        fewest
            .iter()
            .copied()
            .filter(|w| w.carries(selector))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ObjectKey;

    fn w(ns: &str, name: &str, labels: &[(&str, &str)]) -> Arc<Workload> {
        Arc::new(Workload {
            key: ObjectKey::new(ns, name),
            ips: vec![],
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: "default".into(),
            meshed: true,
            outbound_scope: Vec::new(),
        })
    }

    fn names(found: &[&Arc<Workload>]) -> Vec<String> {
        found.iter().map(|w| w.key.name.clone()).collect()
    }

    #[test]
    fn a_selector_picks_what_a_scan_would_in_the_same_order() {
        let all = [
            w("shop", "a", &[("app", "pay"), ("v", "1")]),
            w("shop", "b", &[("app", "pay"), ("v", "2")]),
            w("shop", "c", &[("app", "cart"), ("v", "1")]),
            w("other", "d", &[("app", "pay"), ("v", "1")]),
        ];
        let index = LabelIndex::new(&all);
        let sel = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        for (ns, s) in [
            ("shop", sel(&[("app", "pay")])),
            ("shop", sel(&[("app", "pay"), ("v", "1")])),
            ("shop", sel(&[("v", "1")])),
            ("other", sel(&[("app", "pay")])),
            ("shop", sel(&[("app", "none")])),
            ("shop", sel(&[])),
        ] {
            let scan: Vec<&Arc<Workload>> = all
                .iter()
                .filter(|w| !s.is_empty() && w.key.namespace == ns && w.carries(&s))
                .collect();
            assert_eq!(names(&index.select(ns, &s)), names(&scan), "{ns} {s:?}");
            // Candidates hold every match (an empty selector: the whole namespace).
            let candidates = index.candidates(ns, &s);
            let whole_namespace = all.iter().filter(|w| w.key.namespace == ns).count();
            if s.is_empty() {
                assert_eq!(candidates.len(), whole_namespace);
            }
            for w in &scan {
                assert!(candidates.iter().any(|c| Arc::ptr_eq(c, w)), "{ns} {s:?}");
            }
        }
    }
}
