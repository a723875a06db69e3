//! The injector's webhook TLS: its serving certificate in a `kubernetes.io/tls` Secret
//! (which the injector mounts and reloads when it changes), and `caBundle` of every
//! webhook in its MutatingWebhookConfiguration, with which the API server verifies it.
//! Leader only.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};

use super::authority::{Ca, CaEnding, CaError, LeafRequest};
use super::issued::{Assessment, Reason, assess};
use super::material::TrustBundle;
use super::secret::{CA_ROLE, CLUSTER_ROLE, forbidden_hint, labelled_secret};
use crate::sink::kube::FIELD_MANAGER;

/// How long a webhook certificate is valid. Long enough that the webhook keeps working
/// through a long operator outage (it is renewed with 30 days left), short enough that
/// renewal is routine rather than a forgotten yearly event.
pub const WEBHOOK_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);
/// The webhook Secret's default name (`--webhook-secret`).
pub const DEFAULT_WEBHOOK_SECRET: &str = "braid-injector-tls";
/// The injector Service's default name (`--webhook-service`).
pub const DEFAULT_WEBHOOK_SERVICE: &str = "braid-injector";
/// The MutatingWebhookConfiguration's default name (`--webhook-config`).
pub const DEFAULT_WEBHOOK_CONFIG: &str = "braid-injector";
/// The Secret's certificate key.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The Secret's private key key.
pub const TLS_KEY_KEY: &str = "tls.key";

/// What the webhook TLS is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookNames {
    /// The namespace of the Service and the Secret (the operator's).
    pub namespace: String,
    /// The injector's Service (`--webhook-service`).
    pub service: String,
    /// The Secret the injector mounts (`--webhook-secret`).
    pub secret: String,
    /// The MutatingWebhookConfiguration (`--webhook-config`).
    pub config: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
}

impl WebhookNames {
    /// The names the API server may call the webhook by: `<service>.<namespace>.svc`
    /// (what it uses for a `service` reference) and the fully qualified one.
    pub fn dns_names(&self) -> Vec<String> {
        let short = format!("{}.{}.svc", self.service, self.namespace);
        let full = format!("{short}.{}", self.cluster_domain);
        vec![short, full]
    }
}

/// The webhook TLS could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// An API call failed.
    #[error("{what}: {source}{hint}")]
    Api {
        /// What was being read or written.
        what: String,
        /// The error.
        #[source]
        source: kube::Error,
        /// What to do about it (empty when there is nothing to say), starting with "; ".
        hint: String,
    },
    /// A certificate could not be issued.
    #[error("issuing the webhook certificate: {0}")]
    Issue(#[from] CaError),
}

/// What a round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookOutcome {
    /// The certificate was (re)issued, and why.
    pub issued: Option<String>,
    /// The certificate should be reissued, but one issued now would already be due: the
    /// CA ends too soon, so the Secret is left as it is (not rewritten every round).
    pub ca_ending: Option<CaEnding>,
    /// How many webhooks' `caBundle` were set.
    pub bundles_patched: usize,
    /// The MutatingWebhookConfiguration does not exist.
    pub config_missing: bool,
}

/// What became of the webhook's certificate.
enum Certificate {
    /// It is good.
    Current,
    /// It was issued again, for this reason.
    Issued(Reason),
    /// It is due, but one issued now would be due too.
    Withheld(CaEnding),
}

/// Keeps the webhook's certificate and `caBundle` current.
pub struct WebhookTls {
    names: WebhookNames,
    secrets: Api<Secret>,
    configs: Api<MutatingWebhookConfiguration>,
}

impl WebhookTls {
    /// Through `client`: get/create/update of the Secret, get/patch of the configuration.
    pub fn new(client: Client, names: WebhookNames) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &names.namespace),
            configs: Api::all(client),
            names,
        }
    }

    /// The webhook Secret's name.
    pub fn secret_name(&self) -> &str {
        &self.names.secret
    }

    /// The MutatingWebhookConfiguration's name.
    pub fn config_name(&self) -> &str {
        &self.names.config
    }

    /// An error of a call on the Secret.
    fn secret_api(&self, what: String) -> impl FnOnce(kube::Error) -> WebhookError + '_ {
        move |source| {
            let hint = forbidden(&source)
                .then(|| forbidden_hint("--webhook-secret", &self.names.secret, CA_ROLE));
            api_error(what, source, hint)
        }
    }

    /// An error of a call on the MutatingWebhookConfiguration.
    fn config_api(&self, what: String) -> impl FnOnce(kube::Error) -> WebhookError + '_ {
        move |source| {
            let hint = forbidden(&source)
                .then(|| forbidden_hint("--webhook-config", &self.names.config, CLUSTER_ROLE));
            api_error(what, source, hint)
        }
    }

    /// One round: reissues the certificate if it is missing, unusable, not this CA's or
    /// due for renewal, then sets `caBundle` where it differs from the trust bundle.
    pub async fn reconcile(
        &self,
        ca: &Ca,
        now: SystemTime,
    ) -> Result<WebhookOutcome, WebhookError> {
        let mut outcome = WebhookOutcome::default();
        match self.ensure_certificate(ca, now).await? {
            Certificate::Current => {}
            Certificate::Issued(reason) => outcome.issued = Some(reason.to_string()),
            Certificate::Withheld(ending) => outcome.ca_ending = Some(ending),
        }
        match self.ensure_ca_bundle(ca.trust_bundle()).await? {
            Some(patched) => outcome.bundles_patched = patched,
            None => outcome.config_missing = true,
        }
        Ok(outcome)
    }

    async fn ensure_certificate(
        &self,
        ca: &Ca,
        now: SystemTime,
    ) -> Result<Certificate, WebhookError> {
        let secret_ref = format!("Secret {}/{}", self.names.namespace, self.names.secret);
        let current = self
            .secrets
            .get_opt(&self.names.secret)
            .await
            .map_err(self.secret_api(format!("reading {secret_ref}")))?;
        let data = current.as_ref().and_then(|s| s.data.as_ref());
        let field = |key: &str| data.and_then(|d| d.get(key)).map(|b| b.0.as_slice());
        let names = self.names.dns_names();
        let reason = match assess(field(TLS_CERT_KEY), field(TLS_KEY_KEY), ca, &names, now) {
            Assessment::Current { .. } => return Ok(Certificate::Current),
            Assessment::Reissue(reason) => reason,
        };
        if let Err(ending) = ca.fresh_leaf(WEBHOOK_LIFETIME, now) {
            return Ok(Certificate::Withheld(ending));
        }
        let issued = ca.issue(
            &LeafRequest {
                names,
                lifetime: WEBHOOK_LIFETIME,
            },
            now,
        )?;
        let data = BTreeMap::from([
            (
                TLS_CERT_KEY.to_string(),
                ByteString(issued.chain_pem.into_bytes()),
            ),
            (
                TLS_KEY_KEY.to_string(),
                ByteString(issued.key_pem.into_bytes()),
            ),
        ]);
        match current {
            // Replace keeps the Secret's other fields (its type too, which cannot
            // change) and is conditional on the resourceVersion read: a concurrent
            // writer makes this round fail, and the next one judges what it wrote.
            Some(mut secret) => {
                secret.data = Some(data);
                self.secrets
                    .replace(&self.names.secret, &PostParams::default(), &secret)
                    .await
                    .map_err(self.secret_api(format!("updating {secret_ref}")))?;
            }
            None => {
                let mut secret = labelled_secret(&self.names.namespace, &self.names.secret);
                secret.data = Some(data);
                self.secrets
                    .create(&PostParams::default(), &secret)
                    .await
                    .map_err(self.secret_api(format!("creating {secret_ref}")))?;
            }
        }
        tracing::info!(secret = %secret_ref, %reason, "webhook certificate issued");
        Ok(Certificate::Issued(reason))
    }

    /// Sets `caBundle` of each webhook that differs; `None` when the configuration does
    /// not exist.
    async fn ensure_ca_bundle(&self, bundle: &TrustBundle) -> Result<Option<usize>, WebhookError> {
        let config_ref = format!("MutatingWebhookConfiguration {}", self.names.config);
        let Some(config) = self
            .configs
            .get_opt(&self.names.config)
            .await
            .map_err(self.config_api(format!("reading {config_ref}")))?
        else {
            return Ok(None);
        };
        let Some(patch) = ca_bundle_patch(&config, bundle) else {
            return Ok(Some(0));
        };
        // Two operations (test, add) per webhook.
        let patched = patch.0.len() / 2;
        self.configs
            .patch(
                &self.names.config,
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::<()>::Json(patch),
            )
            .await
            .map_err(self.config_api(format!("patching {config_ref}")))?;
        tracing::info!(config = %config_ref, webhooks = patched, "caBundle set to the trust bundle");
        Ok(Some(patched))
    }
}

fn forbidden(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 403)
}

fn api_error(what: String, source: kube::Error, hint: Option<String>) -> WebhookError {
    WebhookError::Api {
        what,
        source,
        hint: hint.map(|h| format!("; {h}")).unwrap_or_default(),
    }
}

/// A JSON patch setting `clientConfig.caBundle` of every webhook in `config` whose bundle
/// is not `bundle`; `None` when all are. Each change is preceded by a test of the
/// webhook's name at that index, so a list reordered since it was read makes the patch
/// fail instead of writing to the wrong webhook.
pub fn ca_bundle_patch(
    config: &MutatingWebhookConfiguration,
    bundle: &TrustBundle,
) -> Option<json_patch::Patch> {
    let want = ByteString(bundle.pem().as_bytes().to_vec());
    let mut ops = Vec::new();
    for (i, webhook) in config.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref() == Some(&want) {
            continue;
        }
        ops.push(serde_json::json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
        ops.push(serde_json::json!({
            "op": "add",
            "path": format!("/webhooks/{i}/clientConfig/caBundle"),
            // ByteString serializes as base64, as the API expects.
            "value": want,
        }));
    }
    if ops.is_empty() {
        return None;
    }
    // Built as JSON (the RFC 6902 form); the ops above are all well-formed.
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use k8s_openapi::api::admissionregistration::v1::MutatingWebhook;

    use super::*;

    fn config(bundles: &[Option<&str>]) -> MutatingWebhookConfiguration {
        MutatingWebhookConfiguration {
            webhooks: Some(
                bundles
                    .iter()
                    .enumerate()
                    .map(|(i, b)| MutatingWebhook {
                        name: format!("w{i}.braid.dev"),
                        client_config:
                            k8s_openapi::api::admissionregistration::v1::WebhookClientConfig {
                                ca_bundle: b.map(|b| ByteString(b.as_bytes().to_vec())),
                                ..Default::default()
                            },
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_differing_bundles_are_patched_each_guarded_by_its_name() {
        let ca = Ca::generate_root(UNIX_EPOCH + Duration::from_secs(1_800_000_000)).unwrap();
        let bundle = ca.trust_bundle();
        assert!(ca_bundle_patch(&config(&[Some(bundle.pem())]), bundle).is_none());
        assert!(ca_bundle_patch(&config(&[]), bundle).is_none());
        let patch =
            ca_bundle_patch(&config(&[Some(bundle.pem()), None, Some("old")]), bundle).unwrap();
        let b64 = serde_json::to_value(ByteString(bundle.pem().as_bytes().to_vec())).unwrap();
        assert_eq!(
            serde_json::to_value(&patch).unwrap(),
            serde_json::json!([
                {"op": "test", "path": "/webhooks/1/name", "value": "w1.braid.dev"},
                {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64},
                {"op": "test", "path": "/webhooks/2/name", "value": "w2.braid.dev"},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": b64},
            ])
        );
    }

    #[test]
    fn the_names_the_api_server_calls() {
        let names = WebhookNames {
            namespace: "braid-system".into(),
            service: "braid-injector".into(),
            secret: "braid-injector-tls".into(),
            config: "braid-injector".into(),
            cluster_domain: "cluster.local".into(),
        };
        assert_eq!(
            names.dns_names(),
            [
                "braid-injector.braid-system.svc",
                "braid-injector.braid-system.svc.cluster.local"
            ]
        );
    }
}
