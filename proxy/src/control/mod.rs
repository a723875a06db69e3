//! The proxy's side of the operator's config stream: the wire protocol shared with the
//! operator, the client that keeps the proxy's config current, and the ejections it
//! reports back.

pub mod client;
pub mod lines;
/// The wire protocol, from the contract crate.
pub use braid_api::control as protocol;
/// TLS towards the operator, from the contract crate.
pub use braid_api::control::tls;
pub mod url;

pub use client::{ClientSettings, OperatorClient, StreamError};
pub use url::{BadOperatorUrl, OperatorUrl};
