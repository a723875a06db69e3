//! Whether a pod gets the mesh.

use k8s_openapi::api::core::v1::Pod;

use crate::annotations::{INJECT, STATUS};
use crate::inject::PROXY_CONTAINER;
use crate::settings::Settings;

/// The verdict for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Add braid-init and braid-proxy.
    Inject,
    /// Leave the pod as it is, and why.
    Skip(String),
}

/// Decides for a pod created in `namespace`. `namespace_enabled` says whether the
/// namespace carries `braid.dev/inject=enabled`; a pod annotated `braid.dev/inject: "true"`
/// is injected without it, one annotated `"false"` never is.
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
    let annotation = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(INJECT))
        .map(|v| v.trim().to_ascii_lowercase());
    match annotation.as_deref() {
        Some("false") => return skip("the pod says braid.dev/inject: \"false\""),
        Some("true") => {}
        _ if !namespace_enabled => {
            return skip("the namespace is not labelled braid.dev/inject=enabled");
        }
        _ => {}
    }
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.host_network) == Some(true) {
        return skip(
            "hostNetwork pods share the node's network: capturing it would capture the node",
        );
    }
    let has_proxy = spec.is_some_and(|s| {
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    });
    let has_status = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS));
    if has_proxy || has_status {
        return skip("already injected");
    }
    Decision::Inject
}
