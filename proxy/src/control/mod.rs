//! The proxy's side of the operator's config stream: the wire protocol shared with the
//! operator, and the client that keeps the proxy's config current.

pub mod backoff;
pub mod client;
pub mod lines;
pub mod protocol;
pub mod tls;
pub mod url;

pub use client::{ClientSettings, OperatorClient, StreamError};
pub use url::{BadOperatorUrl, OperatorUrl};
