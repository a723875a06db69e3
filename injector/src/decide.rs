//! Whether a pod gets the mesh.

use k8s_openapi::api::core::v1::Pod;

use crate::annotations::{BadAnnotation, Overrides, STATUS};
use crate::settings::Settings;

/// The verdict for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add braid-init and braid-proxy, tuned by the pod's annotations.
    Inject(Box<Overrides>),
    /// Leave the pod as it is, and why.
    Skip(String),
    /// Refuse the pod: what is wrong and how to fix it.
    Refuse(Refusal),
}

/// Why a pod is refused; the message says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Annotations braid cannot use: all of them, in one message, so a user fixes them
    /// in one go.
    #[error("{}", join(.0))]
    Annotations(Vec<BadAnnotation>),
    /// `braid.dev/status` records an injection of containers the pod does not have.
    #[error(
        "annotation {STATUS}: it records an injection of {missing:?}, which the pod does \
         not have (copied from another pod?): remove it from the pod (or its template) to \
         have the pod injected"
    )]
    StaleStatus {
        /// The recorded containers the pod lacks.
        missing: Vec<String>,
    },
}

/// Decides for a pod created in `namespace`. `namespace_enabled` says whether the
/// namespace carries `braid.dev/inject=enabled`; a pod annotated `braid.dev/inject: "true"`
/// is injected without it, one annotated `"false"` never is.
///
/// Every `braid.dev/*` annotation is checked before anything else but the namespace, so
/// a bad one is refused even on a pod that would be skipped (opted out, `hostNetwork`,
/// already injected): it is wrong there too, and would bite once the pod is meshed.
pub fn decide(
    pod: &Pod,
    namespace: &str,
    namespace_enabled: bool,
    settings: &Settings,
) -> Decision {
    let skip = |why: &str| Decision::Skip(why.to_owned());
    if namespace == "kube-system" || namespace == settings.mesh_namespace {
        return skip("the mesh never injects kube-system or its own namespace");
    }
    let overrides = match Overrides::parse(
        pod.metadata
            .annotations
            .as_ref()
            .unwrap_or(&Default::default()),
    ) {
        Ok(o) => o,
        Err(errors) => return Decision::Refuse(Refusal::Annotations(errors)),
    };
    match overrides.inject {
        Some(false) => return skip("the pod says braid.dev/inject: \"false\""),
        Some(true) => {}
        None if !namespace_enabled => {
            return skip("the namespace is not labelled braid.dev/inject=enabled");
        }
        None => {}
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return skip(
            "hostNetwork pods share the node's network: capturing it would capture the node",
        );
    }
    // Only braid's own record says a pod is injected: an app container that happens to
    // be called braid-proxy is a name clash, which `inject` refuses.
    if let Some(status) = &overrides.status {
        let names: Vec<&str> = spec
            .into_iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .map(|c| c.name.as_str())
            .collect();
        let missing: Vec<String> = status
            .init_containers
            .iter()
            .chain(&status.containers)
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Decision::Refuse(Refusal::StaleStatus { missing });
        }
        return skip("already injected");
    }
    Decision::Inject(Box::new(overrides))
}

/// All annotation problems in one message.
fn join(errors: &[BadAnnotation]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"annotations": annotations.iter().copied().collect::<BTreeMap<_, _>>()},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]},
        }))
        .unwrap()
    }

    fn refusal(pod: &Pod) -> String {
        match decide(pod, "shop", true, &Settings::default()) {
            Decision::Refuse(why) => why.to_string(),
            other => panic!("not refused: {other:?}"),
        }
    }

    // The refusal is what the API server shows whoever created the pod, and what the
    // offline CLI prints: each annotation named with its fix, all in one message.
    #[test]
    fn a_refusal_names_every_annotation_and_the_fix() {
        let why = refusal(&pod(&[
            ("braid.dev/exclude-inbound-ports", "http"),
            ("braid.dev/proxy-cpu", "lots"),
        ]));
        assert_eq!(
            why,
            "annotation braid.dev/exclude-inbound-ports: \"http\" is not a port: write \
             comma-separated numbers 1-65535, e.g. \"5432,6379\"; annotation \
             braid.dev/proxy-cpu: \"lots\" is not a Kubernetes quantity: write e.g. \"100m\" \
             (CPU) or \"64Mi\" (memory), or remove it for the default"
        );
        let status =
            r#"{"version":"0.1.0","initContainers":["braid-init"],"containers":[],"volumes":[]}"#;
        assert_eq!(
            refusal(&pod(&[(STATUS, status)])),
            "annotation braid.dev/status: it records an injection of [\"braid-init\"], which \
             the pod does not have (copied from another pod?): remove it from the pod (or its \
             template) to have the pod injected"
        );
    }
}
