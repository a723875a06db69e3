//! The protocol of a port.

use serde::{Deserialize, Serialize};

/// How a port's traffic is treated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Look at the first bytes: HTTP/2 preface, HTTP/1 request line, else opaque TCP.
    #[default]
    Detect,
    /// HTTP, version told by the HTTP/2 preface.
    Http,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2 (prior knowledge, e.g. gRPC).
    Http2,
    /// Opaque TCP: bytes are copied both ways.
    Tcp,
}
