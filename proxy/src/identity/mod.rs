//! The proxy's identity: its own key (made here, never sent anywhere) and the
//! certificate the operator signs for it, renewed at half-life. What mutual TLS will
//! present and trust comes from [`IdentityStore`].

mod certified;
pub mod metrics;
mod peer;
mod renew;
mod store;

pub use certified::{Certified, CertifiedError, RunsAs};
pub use peer::spiffe_id;
pub use renew::{Certifier, Certifying, renew};
pub use store::IdentityStore;
