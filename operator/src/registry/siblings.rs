//! Which workloads are replicas of one another: pods of one Deployment, StatefulSet,
//! DaemonSet or Job, across its rollouts. A new pod calls what its siblings call, so its
//! proxy is given the services theirs hold before its app makes a first call.

use super::Workload;

/// Labels their controllers give each pod or each revision: they tell replicas apart,
/// not what the workload is.
const PER_POD_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/job-completion-index",
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
];

/// Whether `a` and `b` are replicas of one workload: the same namespace and service
/// account (so the same identity) and the same labels, but for those that vary per pod
/// or per revision. Two pods with no labels at all are not taken for replicas.
pub fn siblings(a: &Workload, b: &Workload) -> bool {
    let (ka, kb) = (kind(a), kind(b));
    a.key != b.key
        && a.key.namespace == b.key.namespace
        && a.service_account == b.service_account
        && !ka.is_empty()
        && ka == kb
}

/// A workload's labels but for those that vary per pod or revision.
fn kind(w: &Workload) -> Vec<(&String, &String)> {
    w.labels
        .iter()
        .filter(|(k, _)| !PER_POD_LABELS.contains(&k.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::registry::ObjectKey;

    fn pod(ns: &str, name: &str, sa: &str, labels: &[(&str, &str)]) -> Workload {
        Workload {
            key: ObjectKey::new(ns, name),
            ips: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            service_account: sa.into(),
            meshed: true,
            outbound_scope: Vec::new(),
        }
    }

    #[test]
    fn replicas_of_one_deployment_across_a_rollout_are_siblings() {
        let a = pod(
            "shop",
            "web-1",
            "web",
            &[("app", "web"), ("pod-template-hash", "aa")],
        );
        let b = pod(
            "shop",
            "web-2",
            "web",
            &[("app", "web"), ("pod-template-hash", "bb")],
        );
        assert!(siblings(&a, &b));
        assert!(siblings(&b, &a));
        assert!(!siblings(&a, &a), "a pod is not its own sibling");
    }

    #[test]
    fn another_workload_namespace_or_identity_is_not_a_sibling() {
        let a = pod("shop", "web-1", "web", &[("app", "web")]);
        for other in [
            pod("shop", "api-1", "web", &[("app", "api")]),
            pod(
                "shop",
                "web-2",
                "web",
                &[("app", "web"), ("tier", "canary")],
            ),
            pod("other", "web-2", "web", &[("app", "web")]),
            pod("shop", "web-2", "admin", &[("app", "web")]),
        ] {
            assert!(!siblings(&a, &other), "{}", other.key);
        }
    }

    #[test]
    fn pods_without_labels_are_not_taken_for_replicas() {
        let a = pod("shop", "a", "default", &[]);
        let b = pod("shop", "b", "default", &[("pod-template-hash", "x")]);
        assert!(!siblings(&a, &b));
    }
}
