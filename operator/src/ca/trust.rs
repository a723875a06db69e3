//! The trust bundle for proxies: the ConfigMap `braid-operator-ca` (key `ca.crt`) in
//! every namespace labelled `braid.dev/inject=enabled`, which the injector mounts into
//! each proxy at `/var/run/braid.dev/operator-ca/`. Written by the leader with
//! server-side apply; rewritten when the bundle changes or a namespace is labelled.
//!
//! A namespace that loses its label keeps its ConfigMap: pods injected earlier still
//! mount it.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::material::{TRUST_BUNDLE_KEY, TrustBundle};
use super::secret::MANAGED_BY;
use crate::sink::kube::FIELD_MANAGER;

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

/// A short digest of a bundle, to remember what was written without keeping it.
fn digest(bundle: &TrustBundle) -> [u8; 32] {
    Sha256::digest(bundle.pem().as_bytes()).into()
}

/// What has been written where, and what remains to write.
#[derive(Debug, Default)]
pub struct Written {
    by_namespace: BTreeMap<String, [u8; 32]>,
}

impl Written {
    /// The namespaces of `meshed` whose ConfigMap does not (as far as this replica
    /// wrote it) hold `bundle`.
    pub fn pending<'a>(&self, meshed: &'a BTreeSet<String>, bundle: &TrustBundle) -> Vec<&'a str> {
        let want = digest(bundle);
        meshed
            .iter()
            .filter(|ns| self.by_namespace.get(*ns) != Some(&want))
            .map(String::as_str)
            .collect()
    }

    /// `namespace` now holds `bundle`.
    pub fn record(&mut self, namespace: &str, bundle: &TrustBundle) {
        self.by_namespace
            .insert(namespace.to_string(), digest(bundle));
    }

    /// Forgets namespaces no longer in `meshed`, so one labelled again is rewritten.
    pub fn retain(&mut self, meshed: &BTreeSet<String>) {
        self.by_namespace.retain(|ns, _| meshed.contains(ns));
    }

    /// Forgets everything: the next round writes every namespace (after gaining
    /// leadership, and now and then, in case a ConfigMap was deleted or edited).
    pub fn clear(&mut self) {
        self.by_namespace.clear();
    }
}

/// Writes the trust ConfigMaps.
pub struct TrustDistributor {
    client: Client,
    written: Written,
}

impl TrustDistributor {
    /// Writes through `client` (which needs create and patch on configmaps).
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: Written::default(),
        }
    }

    /// Forgets what was written: the next [`reconcile`](Self::reconcile) writes all.
    pub fn rewrite_all(&mut self) {
        self.written.clear();
    }

    /// Applies the ConfigMap holding `bundle` to each namespace of `meshed` that does
    /// not have it yet. Returns how many could not be written (tried again next time).
    pub async fn reconcile(&mut self, meshed: &BTreeSet<String>, bundle: &TrustBundle) -> usize {
        self.written.retain(meshed);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut failed = 0;
        for namespace in self.written.pending(meshed, bundle) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
            match api
                .patch(
                    TRUST_CONFIGMAP,
                    &params,
                    &Patch::Apply(configmap_patch(namespace, bundle)),
                )
                .await
            {
                Ok(_) => {
                    tracing::debug!(%namespace, "trust bundle written");
                    self.written.record(namespace, bundle);
                }
                Err(e) => {
                    failed += 1;
                    tracing::warn!(%namespace, configmap = TRUST_CONFIGMAP, error = %e, "trust bundle not written; retrying");
                }
            }
        }
        failed
    }
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

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn only_what_changed_is_written_again() {
        let (a, b) = (bundle(), bundle());
        let mut written = Written::default();
        let meshed = set(&["shop", "web"]);
        assert_eq!(written.pending(&meshed, &a), ["shop", "web"]);
        written.record("shop", &a);
        assert_eq!(written.pending(&meshed, &a), ["web"]);
        written.record("web", &a);
        assert!(written.pending(&meshed, &a).is_empty());
        // A namespace labelled: only it.
        let more = set(&["shop", "web", "new"]);
        assert_eq!(written.pending(&more, &a), ["new"]);
        // A new bundle: all of them.
        assert_eq!(written.pending(&meshed, &b), ["shop", "web"]);
        // Unlabelled then labelled again: written again.
        written.retain(&set(&["shop"]));
        assert_eq!(written.pending(&meshed, &a), ["web"]);
        written.clear();
        assert_eq!(written.pending(&meshed, &a), ["shop", "web"]);
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
