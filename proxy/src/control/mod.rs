//! The proxy's side of the operator's config stream: the wire protocol shared with the
//! operator, and the client that keeps the proxy's config current.

pub mod protocol;
