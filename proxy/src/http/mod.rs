//! HTTP forwarding: HTTP/1.1 connections are served by the relay (`h1/`), the one
//! HTTP/1.1 engine, which passes heads and bodies between the two connections itself;
//! HTTP/2 is served and sent with the h2 crate directly (`h2_downstream.rs`,
//! `h2_upstream.rs`, `h2_body.rs`). Both go through the same request path (`forward/`:
//! admission, routing, retries, outlier detection, metrics). Each request goes to an
//! upstream over a pooled connection of the same HTTP version.

mod date;
mod exchange;
mod forward;
mod h1;
mod h2_body;
mod h2_downstream;
mod h2_upstream;
pub(crate) mod headers;
mod host;
mod mirror;
mod pool;
mod replay;
mod route;

pub use forward::{
    Forwarder, InboundPeer, InboundShared, InboundSide, OutboundSide, ProxyBody, Side,
    error_response, serve_h2,
};
pub use h1::serve_h1;
pub use headers::strip_hop_by_hop;
pub use mirror::Mirrors;
pub use pool::{Pool, RawConn, UpBody, UpstreamIo};
pub use route::Route;

use http::StatusCode;

use crate::routing::RouteError;
use crate::tables::PickError;

/// Why a request could not be forwarded; each maps to a status and an `x-braid-error`.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The upstream refused or reset the connection attempt.
    #[error("connect failure: {0}")]
    Connect(std::io::Error),
    /// The upstream did not accept the connection in time.
    #[error("connect timeout")]
    ConnectTimeout,
    /// The upstream HTTP/2 connection or stream failed.
    #[error("upstream failure: {0}")]
    H2(h2::Error),
    /// The relayed upstream connection failed, or an HTTP/1.1 upstream (relayed or not)
    /// answered something malformed or ambiguous.
    #[error("upstream failure: {0}")]
    Relay(h1::RelayError),
    /// The request's body was sent once and cannot be sent again.
    #[error("request body already sent")]
    Consumed,
    /// The service, or the group its rules chose, has no endpoint to send to, or no
    /// rule matched.
    #[error(transparent)]
    Pick(#[from] crate::tables::PickError),
    /// The rule's deadline passed before the response started.
    #[error("route timeout: no response within {} ms", .0.as_millis())]
    RouteTimeout(std::time::Duration),
    /// The last attempt's own deadline passed before its response started.
    #[error("per-try timeout: no response within {} ms", .0.as_millis())]
    PerTryTimeout(std::time::Duration),
    /// The upstream sent no response head within the proxy's response timeout.
    #[error("response timeout: no response within {}", humantime::format_duration(*.0))]
    ResponseTimeout(std::time::Duration),
    /// The rule's rate limit is spent; the caller may try again after this long.
    #[error("rate limited: retry after {} ms", .0.as_millis())]
    RateLimited(std::time::Duration),
    /// The caller's request body failed (malformed chunks, the caller went away before
    /// sending all it announced, or stalled) while it was being read or sent: the
    /// caller's fault, never held against the endpoint.
    #[error("request body failed: {0}")]
    RequestBody(BodyError),
    /// The caller's HTTP/1.1 head is one RFC 9112 says a server refuses.
    #[error("{0}")]
    BadRequest(h1::HeadError),
    /// The rule's fault injection answered instead of the upstream.
    #[error("fault injected")]
    FaultAbort(StatusCode),
    /// Overload protection shed the request.
    #[error("overloaded: request shed")]
    Overloaded,
    /// The destination is no longer in the config.
    #[error("no route to {0}: it is no longer in the proxy's config")]
    NoRoute(String),
    /// mTLS to the endpoint failed: no certificate yet, or the server's identity or chain
    /// was refused.
    #[error("mTLS: {0}")]
    Tls(crate::tls::TlsError),
    /// The request's Host breaks RFC 9112 §3.2 or RFC 9113 §8.3.1.
    #[error("{0}")]
    BadHost(host::HostError),
    /// A plaintext request on a connection whose port has since turned Strict.
    #[error("plaintext refused: port {0} accepts mTLS only (Strict)")]
    PlaintextRefused(u16),
    /// An AccessPolicy in Enforce refused the request.
    #[error("denied by AccessPolicy {0}")]
    Denied(std::sync::Arc<str>),
}

impl ForwardError {
    /// The status the caller receives.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Tls(e) if e.is_local() => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect(_) | Self::H2(_) | Self::Relay(_) | Self::Tls(_) | Self::Consumed => {
                StatusCode::BAD_GATEWAY
            }
            Self::ConnectTimeout
            | Self::RouteTimeout(_)
            | Self::PerTryTimeout(_)
            | Self::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::BadRequest(h1::HeadError::UnsupportedCoding(_)) => StatusCode::NOT_IMPLEMENTED,
            Self::BadRequest(h1::HeadError::Expectation(_)) => StatusCode::EXPECTATION_FAILED,
            Self::BadRequest(h1::HeadError::TooLarge) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Self::BadRequest(_) | Self::BadHost(_) => StatusCode::BAD_REQUEST,
            Self::RequestBody(BodyError::Stalled(_)) => StatusCode::REQUEST_TIMEOUT,
            Self::RequestBody(_) => StatusCode::BAD_REQUEST,
            Self::PlaintextRefused(_) | Self::Denied(_) => StatusCode::FORBIDDEN,
            Self::FaultAbort(status) => *status,
            Self::Pick(PickError::Route(RouteError::NoRuleMatches(_))) => StatusCode::NOT_FOUND,
            Self::Pick(_) | Self::NoRoute(_) | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Any error a body passed on may end with (a caller's, an upstream's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a caller's request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The caller's HTTP/2 stream failed (it reset the stream, or the connection ended).
    #[error("{0}")]
    H2(h2::Error),
    /// Reading the caller's body failed otherwise.
    #[error("{0}")]
    Read(BoxError),
    /// A chunked body broke its framing.
    #[error("malformed chunked body")]
    Chunked,
    /// The caller closed before it sent the whole body.
    #[error("the caller closed before sending the whole body")]
    Cut,
    /// The caller sent no body bytes for this long.
    #[error("no body bytes for {}", humantime::format_duration(*.0))]
    Stalled(std::time::Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_and_per_try_timeouts() {
        let limited = ForwardError::RateLimited(std::time::Duration::from_millis(250));
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.to_string(), "rate limited: retry after 250 ms");
        let slow = ForwardError::PerTryTimeout(std::time::Duration::from_millis(200));
        assert_eq!(slow.status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn failures_map_to_the_statuses_callers_expect() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ForwardError::Connect(refused).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            ForwardError::ConnectTimeout.status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            ForwardError::from(PickError::NoEndpoints("x".into())).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let empty = ForwardError::from(PickError::from(RouteError::EmptyGroup("Group_2".into())));
        assert_eq!(empty.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(empty.to_string(), "no healthy endpoints in group Group_2");
        assert_eq!(
            ForwardError::from(PickError::from(RouteError::NoRuleMatches("shop/p".into())))
                .status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ForwardError::NoRoute("x".into()).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
