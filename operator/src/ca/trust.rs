//! The trust bundle for proxies: the ConfigMap `braid-operator-ca` (key `ca.crt`) in
//! every namespace labelled `braid.dev/inject=enabled`, which the injector mounts into
//! each proxy at `/var/run/braid.dev/operator-ca/`. Written by the leader with
//! server-side apply; rewritten when the bundle changes, a namespace is labelled, or the
//! ConfigMap is edited or deleted ([`super::upkeep::trust`]).
//!
//! A namespace that loses its label keeps its ConfigMap: pods injected earlier still
//! mount it.

use k8s_openapi::api::core::v1::ConfigMap;

use super::material::{TRUST_BUNDLE_KEY, TrustBundle};
use super::secret::MANAGED_BY;

/// The ConfigMap's name, in every opted-in namespace (the injector's
/// `OPERATOR_CA_CONFIGMAP`).
pub const TRUST_CONFIGMAP: &str = "braid-operator-ca";

/// The apply body of the ConfigMap in `namespace` holding `bundle`.
pub fn configmap_patch(namespace: &str, bundle: &TrustBundle) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TRUST_CONFIGMAP,
            "namespace": namespace,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "data": {TRUST_BUNDLE_KEY: bundle.pem()},
    })
}

/// Whether `existing` (the ConfigMap in a namespace, if any) already is what
/// [`configmap_patch`] would apply: the bundle under its key, and braid's label (which
/// the upkeep's watch selects on).
pub fn up_to_date(existing: Option<&ConfigMap>, bundle: &TrustBundle) -> bool {
    existing.is_some_and(|cm| {
        let data = cm.data.as_ref().and_then(|d| d.get(TRUST_BUNDLE_KEY));
        let label = cm
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY.0));
        data.map(String::as_str) == Some(bundle.pem())
            && label.map(String::as_str) == Some(MANAGED_BY.1)
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::ca::Ca;

    fn bundle() -> TrustBundle {
        Ca::generate_root(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
            .unwrap()
            .trust_bundle()
            .clone()
    }

    #[test]
    fn only_a_configmap_differing_in_bundle_or_label_is_written_again() {
        let (a, b) = (bundle(), bundle());
        let applied: ConfigMap = serde_json::from_value(configmap_patch("shop", &a)).unwrap();
        assert!(up_to_date(Some(&applied), &a));
        assert!(!up_to_date(None, &a), "deleted");
        assert!(!up_to_date(Some(&applied), &b), "a new bundle");
        let mut edited = applied.clone();
        edited
            .data
            .as_mut()
            .unwrap()
            .insert("ca.crt".into(), "junk".into());
        assert!(!up_to_date(Some(&edited), &a), "its bundle edited");
        let mut unlabelled = applied.clone();
        unlabelled.metadata.labels = None;
        assert!(!up_to_date(Some(&unlabelled), &a), "its label removed");
        let mut more = applied;
        more.data
            .as_mut()
            .unwrap()
            .insert("extra".into(), "kept".into());
        more.metadata.annotations = Some([("note".to_string(), "x".to_string())].into());
        assert!(up_to_date(Some(&more), &a), "what others add is theirs");
    }

    #[test]
    fn the_apply_body_is_the_bundle_only() {
        let b = bundle();
        assert_eq!(
            configmap_patch("shop", &b),
            serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": "braid-operator-ca",
                    "namespace": "shop",
                    "labels": {"app.kubernetes.io/managed-by": "braid-operator"},
                },
                "data": {"ca.crt": b.pem()},
            })
        );
    }
}
