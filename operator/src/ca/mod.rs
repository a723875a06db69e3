//! braid's certificate authority: a root kept in a Secret, the certificates it signs
//! (the operator's own serving certificate, the injector's webhook certificate), and
//! the trust bundle handed to everything that must verify them.
//!
//! Pure logic and Kubernetes I/O are apart: [`material`] (the Secret's contents),
//! [`authority`] (signing), [`validity`] (when to renew) and [`issued`] (whether a stored
//! certificate is still good) take no client and are tested on their own; [`secret`]
//! (the CA Secret), [`serving`] (each replica's certificate), [`webhook`] (the injector's
//! Secret and `caBundle`), [`maintain`] (re-reading the CA) and [`upkeep`] (the leader's
//! controllers of the webhook TLS and of the [`trust`] ConfigMaps proxies mount) talk to
//! the API server.

pub mod authority;
pub mod files;
pub mod issued;
pub mod maintain;
pub mod material;
pub mod secret;
pub mod serving;
pub mod serving_cert;
pub mod trust;
pub mod upkeep;
pub mod validity;
pub mod verify;
pub mod webhook;

pub use authority::{Ca, CaError, IssuedCert, LeafRequest, SignedIdentity};
pub use material::{CaMaterial, MaterialError, TrustBundle};
pub use serving_cert::{Serving, ServingCert, SwappableCert, TlsError};
pub use validity::Validity;
