//! Request routing: the rules of a service port compiled once per config version
//! (regexes included), matched against each request's head, and a weighted choice of
//! the group that serves it, and what the rule does besides (faults, deadlines,
//! retries, mirroring, a rate limit). Pure: no sockets, so it is unit-tested and benchmarked
//! on its own.

mod matcher;
mod mirror;
mod policy;
mod rate_limit;
mod retry;
mod state;
mod table;
mod weighted;

pub use matcher::CompiledMatch;
pub use mirror::MirrorPolicy;
pub use policy::RulePolicy;
pub use rate_limit::TokenBucket;
pub use retry::{AttemptOutcome, RetryBudget, RetryPolicy, is_idempotent};
pub use state::{Carry, RuleKey, RuleStates};
pub use table::{CompiledRule, RouteError, RouteTable};
pub use weighted::WeightedChoice;

/// What routing needs of a request: its head.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a http::Method,
    /// The path, without the query.
    pub path: &'a str,
    /// The headers.
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub fn of<B>(req: &'a http::Request<B>) -> Self {
        Self {
            method: req.method(),
            path: req.uri().path(),
            headers: req.headers(),
        }
    }
}
