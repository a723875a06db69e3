//! Mutual TLS between proxies: who originates it (a rollout decision), how each side
//! verifies the other (SPIFFE identities chained to the mesh's roots), and how a
//! Permissive port tells braid's mTLS apart from anything else on the same port.

mod alpn;
mod context;
mod hello;
pub mod rollout;
pub mod unverified;
mod verify;

pub use crate::identity::spiffe_id;
pub use alpn::Alpn;
pub use context::{Accepted, TlsContext, TlsError};
pub use hello::{Hello, read_client_hello};
pub use rollout::{RolloutBucket, originate};
pub use verify::SpiffeServerVerifier;
