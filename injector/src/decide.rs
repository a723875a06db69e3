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
    Refuse(String),
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
        Err(errors) => return Decision::Refuse(join(&errors)),
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
        let missing: Vec<&String> = status
            .init_containers
            .iter()
            .chain(&status.containers)
            .filter(|n| !names.contains(&n.as_str()))
            .collect();
        if !missing.is_empty() {
            return Decision::Refuse(format!(
                "annotation {STATUS}: it records an injection of {missing:?}, which the pod does \
                 not have (copied from another pod?): remove it from the pod (or its template) to \
                 have the pod injected"
            ));
        }
        return skip("already injected");
    }
    Decision::Inject(Box::new(overrides))
}

/// All annotation problems in one message, so a user fixes them in one go.
fn join(errors: &[BadAnnotation]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
