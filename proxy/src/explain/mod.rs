//! `GET /explain`: how this proxy would handle one request, worked out by its own routing
//! ([`crate::routing`], [`crate::tables`]) and authorization ([`crate::authz`]) code on
//! the tables in force, so the answer cannot drift from what the proxy does. The
//! question is the query string ([`braid_api::explain`] defines it); the answer is a
//! [`braid_api::explain::Explanation`].
//!
//! Pure: no sockets, and nothing is recorded — no metric, no evidence, no rate-limit
//! token, no round-robin step, no weighted roll, no ejection ended early.
//!
//! `question.rs` reads the query string, `outbound.rs` answers `to`, `inbound.rs` answers
//! `inbound`, `policy.rs` puts a rule's policy in words.

mod inbound;
mod outbound;
mod policy;
mod question;

use std::fmt::Debug;
use std::time::Instant;

use braid_api::explain::{AskedRequest, Explanation};
use serde::Serialize;

use crate::routing::RequestHead;
use crate::tables::Tables;

/// Why a question cannot be answered: each names the query parameter at fault and how
/// to ask instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// Neither `to` nor `inbound` was given.
    #[error(
        "give to=<service>[.<namespace>][:<port>] (how a request is sent out, e.g. to=payments.shop:80) or inbound=<port> (whether a request is let in to the app, e.g. inbound=8080)"
    )]
    NothingAsked,
    /// A parameter `/explain` does not take.
    #[error(
        "{0}: not a parameter of /explain (it takes to, inbound, identity, address, method, path and header)"
    )]
    Unknown(String),
    /// A parameter whose value cannot be used, or names what the config does not hold.
    #[error("{param}: {problem}")]
    Param {
        /// The query parameter.
        param: &'static str,
        /// What is wrong with it, and the fix.
        problem: String,
    },
}

impl ExplainError {
    fn param(param: &'static str, problem: impl Into<String>) -> Self {
        Self::Param {
            param,
            problem: problem.into(),
        }
    }
}

/// Answers the question `query` (the query string's pairs, in order) on `tables`.
pub fn explain(tables: &Tables, query: &[(String, String)]) -> Result<Explanation, ExplainError> {
    explain_at(tables, query, Instant::now())
}

/// As [`explain`], with ejections judged at `now`.
fn explain_at(
    tables: &Tables,
    query: &[(String, String)],
    now: Instant,
) -> Result<Explanation, ExplainError> {
    let q = question::Question::parse(query)?;
    let head = RequestHead {
        method: &q.method,
        path: &q.path,
        headers: &q.headers,
    };
    let outbound = match &q.to {
        Some(to) => Some(outbound::explain(tables, to, &head, now)?),
        None => None,
    };
    let inbound = q
        .inbound
        .map(|port| inbound::explain(tables, port, q.identity.as_deref(), q.address, &head));
    let node = &tables.config.node;
    Ok(Explanation {
        pod: format!("{}/{}", node.namespace, node.workload),
        config_version: tables.config.version.clone(),
        identity: node.identity.as_ref().map(|i| i.0.clone()),
        request: AskedRequest {
            method: q.method.to_string(),
            path: q.path.clone(),
            headers: q.header_list.clone(),
        },
        outbound,
        inbound,
    })
}

/// The name `value` has in the config (its serde name: `http`, `Strict`, `5xx`), for
/// an enum of unit variants.
fn serde_name<T: Serialize + Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{value:?}"),
    }
}

#[cfg(test)]
mod tests;
