//! The workload a pod belongs to, as the proxy names it in its metrics (`workload`) and
//! spans (`service.name`): its controller's name, not the pod's, so every replica and
//! every rollout of a Deployment counts as one.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The proxy's variable for it.
pub const WORKLOAD_ENV: &str = "BRAID_WORKLOAD";

/// The pod's workload:
/// - a ReplicaSet's pod: the Deployment's (or Argo Rollout's) name, the ReplicaSet's
///   without its `pod-template-hash` (`rollouts-pod-template-hash`) suffix;
/// - a Job's pod: the CronJob's name when the Job is one of its runs
///   (`<cronjob>-<scheduled minute>`), else the Job's;
/// - another controller's pod (StatefulSet, DaemonSet, …): the controller's name;
/// - a pod of no controller: its `app.kubernetes.io/name` or `app` label, else its name,
///   else its `generateName` without the trailing `-`.
pub fn name(meta: &ObjectMeta) -> Option<String> {
    let label = |key: &str| meta.labels.as_ref().and_then(|l| l.get(key)).cloned();
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = controller {
        let name = owner.name.as_str();
        let trimmed = match owner.kind.as_str() {
            // A Deployment's, or an Argo Rollout's (its own hash label).
            "ReplicaSet" => label("pod-template-hash")
                .or_else(|| label("rollouts-pod-template-hash"))
                .and_then(|hash| name.strip_suffix(hash.as_str()))
                .and_then(|n| n.strip_suffix('-')),
            "Job" => name
                .rsplit_once('-')
                .filter(|(_, run)| run.len() >= 8 && run.bytes().all(|b| b.is_ascii_digit()))
                .map(|(cronjob, _)| cronjob),
            _ => None,
        };
        return Some(trimmed.unwrap_or(name).to_owned());
    }
    label("app.kubernetes.io/name")
        .or_else(|| label("app"))
        .or_else(|| meta.name.clone())
        .or_else(|| {
            meta.generate_name
                .as_deref()
                .map(|g| g.trim_end_matches('-').to_owned())
        })
        .filter(|n| !n.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(kind: &str, owner: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            generate_name: Some(format!("{owner}-")),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            owner_references: Some(vec![OwnerReference {
                kind: kind.into(),
                name: owner.into(),
                controller: Some(true),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn controllers_name_the_workload() {
        let deployment = owned(
            "ReplicaSet",
            "payments-844b89b794",
            &[("pod-template-hash", "844b89b794")],
        );
        assert_eq!(name(&deployment).as_deref(), Some("payments"));
        let rollout = owned(
            "ReplicaSet",
            "checkout-6f7d9c8b4",
            &[("rollouts-pod-template-hash", "6f7d9c8b4")],
        );
        assert_eq!(name(&rollout).as_deref(), Some("checkout"));
        // A ReplicaSet of its own keeps its name.
        assert_eq!(
            name(&owned("ReplicaSet", "cache", &[])).as_deref(),
            Some("cache")
        );
        assert_eq!(
            name(&owned("Job", "backup-29412345", &[])).as_deref(),
            Some("backup")
        );
        assert_eq!(
            name(&owned("Job", "nightly-report", &[])).as_deref(),
            Some("nightly-report")
        );
        assert_eq!(
            name(&owned("StatefulSet", "db", &[("app", "x")])).as_deref(),
            Some("db")
        );
    }

    #[test]
    fn a_pod_of_no_controller_is_named_by_its_labels_or_itself() {
        let mut meta = ObjectMeta {
            name: Some("checkout-0".into()),
            ..Default::default()
        };
        assert_eq!(name(&meta).as_deref(), Some("checkout-0"));
        meta.labels = Some([("app".to_owned(), "checkout".to_owned())].into());
        assert_eq!(name(&meta).as_deref(), Some("checkout"));
        let generated = ObjectMeta {
            generate_name: Some("debug-".into()),
            ..Default::default()
        };
        assert_eq!(name(&generated).as_deref(), Some("debug"));
        assert_eq!(name(&ObjectMeta::default()), None);
    }
}
