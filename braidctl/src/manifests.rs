//! The install manifests of this release (`manifests/`, in the kustomization's order),
//! built into braidctl: `install --render` prints them, `check` compares the cluster's
//! CRDs and permissions with them.

/// Each file of the install, by its path under `manifests/`, in the order
/// `manifests/kustomization.yaml` lists them.
pub const FILES: [(&str, &str); 14] = [
    (
        "namespace.yaml",
        include_str!("../../manifests/namespace.yaml"),
    ),
    (
        "crds/accesspolicies.yaml",
        include_str!("../../manifests/crds/accesspolicies.yaml"),
    ),
    (
        "crds/encryptionpolicies.yaml",
        include_str!("../../manifests/crds/encryptionpolicies.yaml"),
    ),
    (
        "crds/selfhealings.yaml",
        include_str!("../../manifests/crds/selfhealings.yaml"),
    ),
    (
        "crds/trafficroutes.yaml",
        include_str!("../../manifests/crds/trafficroutes.yaml"),
    ),
    (
        "rbac/operator.yaml",
        include_str!("../../manifests/rbac/operator.yaml"),
    ),
    (
        "rbac/injector.yaml",
        include_str!("../../manifests/rbac/injector.yaml"),
    ),
    (
        "operator/deployment.yaml",
        include_str!("../../manifests/operator/deployment.yaml"),
    ),
    (
        "operator/service.yaml",
        include_str!("../../manifests/operator/service.yaml"),
    ),
    (
        "operator/pdb.yaml",
        include_str!("../../manifests/operator/pdb.yaml"),
    ),
    (
        "injector/deployment.yaml",
        include_str!("../../manifests/injector/deployment.yaml"),
    ),
    (
        "injector/service.yaml",
        include_str!("../../manifests/injector/service.yaml"),
    ),
    (
        "injector/pdb.yaml",
        include_str!("../../manifests/injector/pdb.yaml"),
    ),
    (
        "injector/webhook.yaml",
        include_str!("../../manifests/injector/webhook.yaml"),
    ),
];

/// The image every file names, and the tag it carries in this release.
pub const IMAGE: &str = "ghcr.io/braid-mesh/braid";

/// The install's documents, parsed, with the file each came from.
pub fn documents() -> Vec<(&'static str, serde_json::Value)> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for (file, text) in FILES {
        for doc in serde_norway::Deserializer::from_str(text) {
            // The files are this crate's own, and a test parses them all.
            if let Ok(v) = serde_json::Value::deserialize(doc)
                && !v.is_null()
            {
                docs.push((file, v));
            }
        }
    }
    docs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_kustomization_is_built_in_and_parses() {
        let kustomization = include_str!("../../manifests/kustomization.yaml");
        let listed: Vec<&str> = kustomization
            .lines()
            .skip_while(|l| *l != "resources:")
            .skip(1)
            .map_while(|l| l.strip_prefix("  - "))
            .collect();
        let built_in: Vec<&str> = FILES.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            listed, built_in,
            "braidctl/src/manifests.rs must list the kustomization's files"
        );
        for (file, text) in FILES {
            use serde::Deserialize;
            for doc in serde_norway::Deserializer::from_str(text) {
                serde_json::Value::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
        let kinds: Vec<String> = documents()
            .iter()
            .map(|(_, d)| d["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            kinds
                .iter()
                .filter(|k| *k == "CustomResourceDefinition")
                .count(),
            4
        );
        assert!(kinds.contains(&"MutatingWebhookConfiguration".to_owned()));
    }
}
