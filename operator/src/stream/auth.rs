//! Who is asking: a proxy proves its pod with its projected ServiceAccount token, checked
//! by TokenReview in Kubernetes mode and against a bootstrap token file in directory mode.

use std::collections::HashMap;
use std::path::Path;

use braid_api::invalid::{InvalidField, InvalidInput};
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::registry::{ObjectKey, Workload};

/// The authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount's name.
    pub service_account: String,
    /// The pod the token is bound to, when the token says (projected tokens do).
    pub pod: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token was sent.
    #[error(
        "no bearer token: send the pod's projected ServiceAccount token (audience braid) as `authorization: Bearer <token>`"
    )]
    Missing,
    /// The token is not valid.
    #[error("token refused: {0}")]
    Invalid(String),
    /// The token could not be checked now (TokenReview failed); the caller should retry.
    #[error("cannot check the token now: {0}")]
    Unavailable(String),
}

/// Checks tokens.
pub trait Authenticator: Send + Sync + 'static {
    /// Who `token` belongs to.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>>;
}

/// Why an authenticated caller may not have a pod's config.
#[derive(Debug, thiserror::Error)]
pub enum Forbidden {
    /// The token belongs to another namespace or service account.
    #[error("the token is for {token}, but pod {pod} runs as {runs_as}")]
    OtherServiceAccount {
        /// The token's `namespace/serviceaccount`.
        token: String,
        /// The claimed pod.
        pod: ObjectKey,
        /// The pod's `namespace/serviceaccount`.
        runs_as: String,
    },
    /// The token is bound to another pod.
    #[error("the token is bound to pod {bound}, not {pod}")]
    OtherPod {
        /// The pod the token is bound to.
        bound: String,
        /// The claimed pod.
        pod: ObjectKey,
    },
}

/// Whether `who` may read the config of `pod`: the token must belong to the pod's own
/// service account, and to the pod itself when it is bound to one.
pub fn authorize(who: &Principal, pod: &Workload) -> Result<(), Forbidden> {
    if who.namespace != pod.key.namespace || who.service_account != pod.service_account {
        return Err(Forbidden::OtherServiceAccount {
            token: format!("{}/{}", who.namespace, who.service_account),
            pod: pod.key.clone(),
            runs_as: format!("{}/{}", pod.key.namespace, pod.service_account),
        });
    }
    match &who.pod {
        Some(bound) if *bound != pod.key.name => Err(Forbidden::OtherPod {
            bound: bound.clone(),
            pod: pod.key.clone(),
        }),
        _ => Ok(()),
    }
}

/// Bootstrap tokens for directory mode, from a YAML file:
///
/// ```yaml
/// - {token: "…", namespace: shop, serviceAccount: payments}            # any pod of the SA
/// - {token: "…", namespace: shop, serviceAccount: payments, pod: payments-0}
/// ```
#[derive(Debug, Default)]
pub struct BootstrapTokens {
    tokens: std::sync::RwLock<HashMap<String, Principal>>,
    file: Option<TokenFile>,
}

/// The file tokens came from, re-read when it changes so tokens can be added or revoked
/// without restarting the operator.
#[derive(Debug)]
struct TokenFile {
    path: std::path::PathBuf,
    seen: std::sync::Mutex<Option<(std::time::SystemTime, u64)>>,
}

impl TokenFile {
    fn stamp(&self) -> Option<(std::time::SystemTime, u64)> {
        let meta = std::fs::metadata(&self.path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    token: String,
    namespace: String,
    service_account: String,
    #[serde(default)]
    pod: Option<String>,
}

impl BootstrapTokens {
    /// Reads the token file; errors name the file, the entry and the field.
    pub fn load(path: &Path) -> Result<Self, TokenFileError> {
        let file = TokenFile {
            path: path.to_owned(),
            seen: std::sync::Mutex::new(None),
        };
        let stamp = file.stamp();
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut tokens = Self::parse(&text).map_err(|source| TokenFileError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        *file.seen.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
        tokens.file = Some(file);
        Ok(tokens)
    }

    /// Re-reads the token file if it changed; a file that no longer parses is logged and
    /// the tokens in force stay.
    fn refresh(&self) {
        let Some(file) = &self.file else { return };
        let stamp = file.stamp();
        {
            let mut seen = file.seen.lock().unwrap_or_else(|e| e.into_inner());
            if stamp.is_none() || *seen == stamp {
                return;
            }
            *seen = stamp;
        }
        match std::fs::read_to_string(&file.path)
            .map_err(|e| e.to_string())
            .and_then(|text| Self::parse(&text).map_err(|e| e.to_string()))
        {
            Ok(fresh) => {
                let fresh = fresh.tokens.into_inner().unwrap_or_else(|e| e.into_inner());
                tracing::info!(file = %file.path.display(), tokens = fresh.len(), "bootstrap tokens reloaded");
                *self.tokens.write().unwrap_or_else(|e| e.into_inner()) = fresh;
            }
            Err(e) => {
                tracing::error!(file = %file.path.display(), error = %e, "bootstrap tokens refused; keeping the ones in force")
            }
        }
    }

    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<Self, InvalidInput> {
        let value: serde_json::Value =
            serde_norway::from_str(text).map_err(|e| InvalidInput::Syntax(e.to_string()))?;
        let entries: Vec<TokenEntry> = serde_path_to_error::deserialize(value)
            .map_err(|e| InvalidField::new(e.path().to_string(), e.inner().to_string()))?;
        let mut tokens = HashMap::new();
        for (i, e) in entries.into_iter().enumerate() {
            if e.token.len() < 16 {
                return Err(InvalidField::new(
                    format!("[{i}].token"),
                    "use at least 16 characters (e.g. `openssl rand -hex 16`)",
                )
                .into());
            }
            let who = Principal {
                namespace: e.namespace,
                service_account: e.service_account,
                pod: e.pod,
            };
            if tokens.insert(e.token, who).is_some() {
                return Err(InvalidField::new(
                    format!("[{i}].token"),
                    "the same token is listed twice",
                )
                .into());
            }
        }
        Ok(Self {
            tokens: std::sync::RwLock::new(tokens),
            file: None,
        })
    }
}

/// Why the bootstrap token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// It could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// Its content is refused.
    #[error("{}: {source}", path.display())]
    Invalid {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong, naming the entry and field.
        source: InvalidInput,
    },
}

impl Authenticator for BootstrapTokens {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        self.refresh();
        let found = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(t, _)| constant_time_eq(t.as_bytes(), token.as_bytes()))
            .map(|(_, p)| p.clone());
        Box::pin(async move {
            found.ok_or_else(|| AuthError::Invalid("unknown bootstrap token".into()))
        })
    }
}

/// Compares without an early exit, so response timing does not reveal a token's prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod(ns: &str, name: &str, sa: &str) -> Workload {
        Workload {
            key: ObjectKey::new(ns, name),
            ips: vec![],
            labels: BTreeMap::new(),
            service_account: sa.into(),
            meshed: true,
            outbound_scope: Vec::new(),
        }
    }

    #[tokio::test]
    async fn bootstrap_tokens_name_their_service_account() {
        let tokens = BootstrapTokens::parse(
            "- {token: 0123456789abcdef0, namespace: shop, serviceAccount: payments}\n",
        )
        .unwrap();
        let who = tokens.authenticate("0123456789abcdef0").await.unwrap();
        assert_eq!(who.service_account, "payments");
        assert!(matches!(
            tokens.authenticate("0123456789abcdef1").await,
            Err(AuthError::Invalid(_))
        ));
        assert!(
            BootstrapTokens::parse("- {token: short, namespace: a, serviceAccount: b}")
                .unwrap_err()
                .to_string()
                .contains("[0].token")
        );
        assert!(
            BootstrapTokens::parse("- {token: 0123456789abcdef0, namespace: a, sa: b}")
                .unwrap_err()
                .to_string()
                .contains("sa")
        );
    }

    #[tokio::test]
    async fn the_token_file_is_reread_when_it_changes() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            file.path(),
            "- {token: first-token-0123456789, namespace: shop, serviceAccount: a}\n",
        )
        .unwrap();
        let tokens = BootstrapTokens::load(file.path()).unwrap();
        assert!(tokens.authenticate("first-token-0123456789").await.is_ok());
        // Rotated: the new token works, the old one is revoked.
        std::fs::write(
            file.path(),
            "- {token: second-token-0123456789abc, namespace: shop, serviceAccount: a}\n",
        )
        .unwrap();
        assert!(
            tokens
                .authenticate("second-token-0123456789abc")
                .await
                .is_ok()
        );
        assert!(tokens.authenticate("first-token-0123456789").await.is_err());
        // A broken edit keeps what is in force.
        std::fs::write(file.path(), "- {token: short}\n").unwrap();
        assert!(
            tokens
                .authenticate("second-token-0123456789abc")
                .await
                .is_ok()
        );
    }

    #[test]
    fn a_token_reads_only_its_own_pods() {
        let who = Principal {
            namespace: "shop".into(),
            service_account: "payments".into(),
            pod: None,
        };
        assert!(authorize(&who, &pod("shop", "payments-0", "payments")).is_ok());
        let err = authorize(&who, &pod("shop", "checkout-0", "checkout")).unwrap_err();
        assert!(err.to_string().contains("runs as shop/checkout"), "{err}");
        assert!(authorize(&who, &pod("bank", "payments-0", "payments")).is_err());
        let bound = Principal {
            pod: Some("payments-0".into()),
            ..who
        };
        assert!(authorize(&bound, &pod("shop", "payments-0", "payments")).is_ok());
        let err = authorize(&bound, &pod("shop", "payments-1", "payments")).unwrap_err();
        assert!(err.to_string().contains("bound to pod payments-0"), "{err}");
    }
}
