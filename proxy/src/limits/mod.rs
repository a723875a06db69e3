//! Time and space limits on connections, in one place: how long a caller may take to
//! send a request head, to send the next request, to keep its body coming, how long an
//! upstream may take to answer, how long an upstream connection may sit idle in the pool,
//! how long opaque TCP may be silent, how large a head may be, and how many connections a listener holds at once.
//!
//! A sidecar sits in front of every pod: without these, a slowloris or a crowd of idle
//! connections holds memory and upstream connections until the pod is killed for it.
//! The defaults are the ones Envoy, nginx and Linkerd users know; each has a flag (and an
//! injector annotation).

mod cap;

use std::time::Duration;

pub use braid_api::duration::{DurationError, parse_duration};
pub use cap::{CapPermit, ConnectionCap};

/// The limits in force for every listener of one proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From a request's first byte (or a new connection's accept) to its complete head.
    /// Past it the caller gets 408 and the connection closes (nginx's
    /// `client_header_timeout`, Envoy's `request_headers_timeout`).
    pub header_read: Duration,
    /// A kept-alive downstream connection with no request in progress (HTTP/1.1), or no
    /// open stream (HTTP/2), is closed after this long.
    pub idle: Duration,
    /// A request body that makes no progress for this long is abandoned: the caller gets
    /// 408, the upstream attempt is cancelled, and the endpoint is not blamed.
    pub request_body: Duration,
    /// An upstream that sends no response head for this long (and, over HTTP/1.1, no
    /// response body bytes for this long) fails the attempt with 504. A route's own
    /// `timeout` is usually shorter and applies first.
    pub response: Duration,
    /// A pooled upstream connection idle longer than this is closed, not reused: shorter
    /// than app servers' keep-alive (Node.js and uvicorn close after 5 s), so the proxy
    /// does not send a request down a connection the server is closing.
    pub upstream_idle: Duration,
    /// An opaque TCP connection with no bytes either way for this long is closed (Envoy's
    /// `tcp_proxy` `idle_timeout`). Long: database pools keep quiet connections open.
    pub tcp_idle: Duration,
    /// The largest request head (request line and headers) accepted; larger ones are
    /// answered 431.
    pub max_header_bytes: usize,
    /// Connections one listener holds at once; further ones wait in the kernel's backlog
    /// until one closes (established connections are not disturbed).
    pub max_connections: usize,
}

impl Limits {
    /// nginx's `client_header_timeout` is 60 s, Envoy's recommended edge setting 10 s.
    pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(10);
    /// nginx's `keepalive_timeout` is 75 s; Envoy's edge recommendation, 60 s.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(60);
    /// nginx's `client_body_timeout`.
    pub const DEFAULT_REQUEST_BODY: Duration = Duration::from_secs(60);
    /// Envoy's `stream_idle_timeout`: long enough for long polls.
    pub const DEFAULT_RESPONSE: Duration = Duration::from_secs(300);
    /// Under the 5 s keep-alive of Node.js, uvicorn and Apache.
    pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(4);
    /// Envoy's `tcp_proxy` default.
    pub const DEFAULT_TCP_IDLE: Duration = Duration::from_secs(3600);
    /// Envoy's `max_request_headers_kb` is 60 KiB; nginx allows 4 × 8 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
    /// With the sidecar's default 128Mi memory limit, 10,000 idle connections on one
    /// listener still fit (see docs/proxy.md's measurements).
    pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: Self::DEFAULT_HEADER_READ,
            idle: Self::DEFAULT_IDLE,
            request_body: Self::DEFAULT_REQUEST_BODY,
            response: Self::DEFAULT_RESPONSE,
            upstream_idle: Self::DEFAULT_UPSTREAM_IDLE,
            tcp_idle: Self::DEFAULT_TCP_IDLE,
            max_header_bytes: Self::DEFAULT_MAX_HEADER_BYTES,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
        }
    }
}
