//! How an attempt reaches an endpoint: the seam between the request path (routing,
//! retries, outlier detection, metrics; `forward/`) and the wire (hyper's clients, or
//! the HTTP/1.1 relay in `h1/`).

use http::StatusCode;

use super::ForwardError;
use super::forward::Outgoing;
use crate::balance::Upstream;

/// What an attempt answered, as retries, outlier detection and metrics see it.
pub(super) trait Answer {
    /// The response's status.
    fn status(&self) -> StatusCode;
    /// Shed by the endpoint's overload protection (busy, not broken).
    fn overloaded(&self) -> bool;
    /// The body's length, when the head says it (for the access log).
    fn body_length(&self) -> Option<u64>;
}

/// Sends one request's attempts.
pub(super) trait Exchange {
    /// What an attempt answers.
    type Answer: Answer;

    /// Gets ready for the attempts (`retry`: the rule may retry) and says whether the
    /// request can be sent more than once.
    async fn prepare(&mut self, send: &Outgoing<'_>, retry: bool) -> Result<bool, ForwardError>;

    /// Whether [`send`](Self::send) bounds its own wait for the response (it streams the
    /// caller's body first, which the response timeout must not count).
    fn bounds_response(&self) -> bool {
        false
    }

    /// Sends one attempt to `up` and waits for its response head.
    async fn send(&mut self, up: &Upstream) -> Result<Self::Answer, ForwardError>;
}
