//! The CA Secret (`--ca-secret`, in `--namespace`): read at start-up, created with a new
//! root when absent, and re-read every so often so a rotation by an administrator is
//! picked up.

use std::collections::BTreeMap;
use std::time::SystemTime;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::PostParams;
use kube::{Api, Client};

use super::authority::{Ca, CaError};
use super::material::{CaMaterial, MaterialError};

/// The CA Secret's default name.
pub const DEFAULT_CA_SECRET: &str = "braid-ca";
/// The type of Secrets the operator creates: what cert-manager writes for a CA too.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";
/// Label on what the operator creates, so `kubectl get -l` finds it.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "braid-operator");

/// The Role granting the operator its Secrets in its namespace, by name.
pub const CA_ROLE: &str = "Role braid-operator-ca";
/// The ClusterRole granting the operator the rest, some of it by name.
pub const CLUSTER_ROLE: &str = "ClusterRole braid-operator";

/// What to do when the API server refuses (403) the object `name`, the value of `flag`,
/// which `role` grants by name: the shipped RBAC names only the defaults, so a renamed
/// object is not covered until its name is added.
pub fn forbidden_hint(flag: &str, name: &str, role: &str) -> String {
    format!(
        "the operator's service account may not use {flag} {name}: add \"{name}\" to the \
         resourceNames of {role} (manifests/rbac/operator.yaml, which names only the \
         defaults) and apply it"
    )
}

/// An empty `kubernetes.io/tls` Secret `namespace/name`, labelled as the operator's.
pub fn labelled_secret(namespace: &str, name: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_string(),
                MANAGED_BY.1.to_string(),
            )])),
            ..Default::default()
        },
        type_: Some(TLS_SECRET_TYPE.into()),
        ..Default::default()
    }
}

/// The CA could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    /// The Secret exists but cannot be used.
    #[error(
        "Secret {namespace}/{name}, {source}. Fix that key (tls.crt: the signing CA \
         certificate, then any intermediates; tls.key: its PKCS#8 key; ca.crt: the root(s)), \
         or delete the Secret and restart every operator replica, which then creates a new \
         CA (a replica still running writes the CA it holds back into a deleted Secret)"
    )]
    Malformed {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key at fault and why.
        #[source]
        source: MaterialError,
    },
    /// The API server refused or failed.
    #[error("Secret {namespace}/{name}: {message}")]
    Api {
        /// The Secret's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// What happened, and what to do.
        message: String,
    },
    /// A new root could not be made.
    #[error("a new CA: {0}")]
    Generate(#[from] CaError),
}

/// How the CA came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This replica created the Secret with a new root.
    Created,
    /// The Secret was there (an administrator's, an earlier run's, or another replica's
    /// that won the race to create it).
    Existing,
}

/// The CA Secret.
#[derive(Clone)]
pub struct CaSecret {
    api: Api<Secret>,
    namespace: String,
    name: String,
}

impl CaSecret {
    /// The Secret `name` in `namespace`, through `client`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `namespace/name`.
    pub fn reference(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn api_error(&self, e: kube::Error) -> CaSecretError {
        let message = match &e {
            kube::Error::Api(s) if s.code == 403 => format!(
                "{}: {}",
                s.message,
                forbidden_hint("--ca-secret", &self.name, CA_ROLE)
            ),
            _ => e.to_string(),
        };
        CaSecretError::Api {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            message,
        }
    }

    fn read(&self, secret: &Secret, now: SystemTime) -> Result<Ca, CaSecretError> {
        CaMaterial::from_secret_data(secret.data.as_ref())
            .and_then(|m| Ca::from_material(m, now))
            .map_err(|source| CaSecretError::Malformed {
                namespace: self.namespace.clone(),
                name: self.name.clone(),
                source,
            })
    }

    /// The Secret holding `material`.
    pub fn secret(&self, material: &CaMaterial) -> Secret {
        let mut secret = labelled_secret(&self.namespace, &self.name);
        secret.data = Some(material.to_secret_data());
        secret
    }

    /// The CA in the Secret, used exactly as it is; when there is none, a new root,
    /// stored. Of replicas racing to create it, the API server keeps the first; the
    /// others are refused (409) and read the winner's.
    pub async fn load_or_create(&self, now: SystemTime) -> Result<(Ca, Origin), CaSecretError> {
        if let Some(secret) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        {
            return Ok((self.read(&secret, now)?, Origin::Existing));
        }
        let ca = Ca::generate_root(now)?;
        match self
            .api
            .create(&PostParams::default(), &self.secret(ca.material()))
            .await
        {
            Ok(_) => Ok((ca, Origin::Created)),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                let secret = self
                    .api
                    .get(&self.name)
                    .await
                    .map_err(|e| self.api_error(e))?;
                Ok((self.read(&secret, now)?, Origin::Existing))
            }
            Err(e) => Err(self.api_error(e)),
        }
    }

    /// Re-reads the Secret: `Some` CA when its contents differ from `current`'s. A
    /// deleted Secret is recreated from `current`, so trust stays as it is.
    pub async fn refresh(
        &self,
        current: &Ca,
        now: SystemTime,
    ) -> Result<Option<Ca>, CaSecretError> {
        match self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.api_error(e))?
        {
            Some(secret) => {
                let unchanged = CaMaterial::from_secret_data(secret.data.as_ref())
                    .is_ok_and(|m| &m == current.material());
                if unchanged {
                    Ok(None)
                } else {
                    self.read(&secret, now).map(Some)
                }
            }
            None => {
                tracing::warn!(namespace = %self.namespace, name = %self.name, "the CA Secret was deleted; writing it back");
                match self
                    .api
                    .create(&PostParams::default(), &self.secret(current.material()))
                    .await
                {
                    // Another replica wrote it back first; the next refresh reads it.
                    Ok(_) => Ok(None),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                    Err(e) => Err(self.api_error(e)),
                }
            }
        }
    }
}
