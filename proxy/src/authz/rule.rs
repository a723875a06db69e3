//! One AccessPolicy rule compiled: its callers and, for HTTP, its request matches.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::InvalidField;
use crate::config::access::{AccessAction, AccessRule, Source};
use crate::routing::{CompiledMatch, RequestHead};

/// Who is calling, as the inbound side knows it: the identity only from a verified mTLS
/// peer certificate (never from a header), and the connection's source address.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller<'a> {
    /// The verified mTLS identity; `None` for plaintext.
    pub identity: Option<&'a str>,
    /// Where the connection came from.
    pub address: Option<IpAddr>,
}

/// What is asked for: a whole connection (opaque TCP) or one HTTP request.
#[derive(Clone, Copy, Debug)]
pub enum Asked<'a> {
    /// An opaque TCP connection, decided once when it opens.
    Connection,
    /// One HTTP request, decided on its head.
    Request(&'a RequestHead<'a>),
}

/// A compiled source.
#[derive(Clone, Debug)]
enum Who {
    Identity(String),
    IdentityPrefix(String),
    Pod { identity: String, address: IpAddr },
    Address(IpAddr),
    Meshed,
    Unauthenticated,
}

impl Who {
    fn of(s: &Source) -> Self {
        match s {
            Source::Identity(id) => match id.strip_suffix('*') {
                Some(prefix) => Self::IdentityPrefix(prefix.to_owned()),
                None => Self::Identity(id.clone()),
            },
            Source::Pod { identity, address } => Self::Pod {
                identity: identity.clone(),
                address: address.to_canonical(),
            },
            Source::Address(a) => Self::Address(a.to_canonical()),
            Source::Meshed => Self::Meshed,
            Source::Unauthenticated => Self::Unauthenticated,
        }
    }

    fn fits(&self, caller: &Caller<'_>) -> bool {
        match self {
            Self::Identity(id) => caller.identity == Some(id.as_str()),
            Self::IdentityPrefix(prefix) => caller
                .identity
                .is_some_and(|id| id.starts_with(prefix.as_str())),
            Self::Pod { identity, address } => {
                caller.identity == Some(identity.as_str())
                    && caller.address.map(|a| a.to_canonical()) == Some(*address)
            }
            Self::Address(a) => caller.address.map(|c| c.to_canonical()) == Some(*a),
            Self::Meshed => caller.identity.is_some(),
            Self::Unauthenticated => caller.identity.is_none(),
        }
    }
}

/// One rule, ready to test callers and requests.
#[derive(Clone, Debug)]
pub(super) struct CompiledRule {
    /// Its name as written (may be empty).
    pub(super) name: Arc<str>,
    /// `None`: every caller.
    from: Option<Vec<Who>>,
    /// `None`: whole connections, TCP and HTTP alike.
    http: Option<Vec<CompiledMatch>>,
}

impl CompiledRule {
    /// Compiles `rule`; errors name the field under `at`.
    pub(super) fn compile(rule: &AccessRule, at: &str) -> Result<Self, InvalidField> {
        let http = match &rule.http {
            None => None,
            Some(matches) => Some(
                matches
                    .iter()
                    .enumerate()
                    .map(|(i, m)| CompiledMatch::compile(m, &format!("{at}.http[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Self {
            name: Arc::from(rule.name.as_str()),
            from: rule.from.as_ref().map(|f| f.iter().map(Who::of).collect()),
            http,
        })
    }

    /// Whether the rule matches. A rule with an HTTP part cannot see inside an opaque
    /// connection: for Deny it matches the connection whole (what it carries may be
    /// what the rule refuses), for Allow it does not.
    pub(super) fn matches(
        &self,
        caller: &Caller<'_>,
        asked: Asked<'_>,
        action: AccessAction,
    ) -> bool {
        let from = self
            .from
            .as_ref()
            .is_none_or(|who| who.iter().any(|w| w.fits(caller)));
        from && match (&self.http, asked) {
            (None, _) => true,
            (Some(matches), Asked::Request(head)) => matches.iter().any(|m| m.matches(head)),
            (Some(_), Asked::Connection) => action == AccessAction::Deny,
        }
    }

    /// Whether the rule looks into HTTP requests.
    pub(super) fn reads_http(&self) -> bool {
        self.http.is_some()
    }

    /// Whether the rule looks at headers (so an HTTP/1.1 head must be parsed whole).
    pub(super) fn reads_headers(&self) -> bool {
        self.http
            .as_ref()
            .is_some_and(|ms| ms.iter().any(CompiledMatch::reads_headers))
    }
}
