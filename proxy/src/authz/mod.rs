//! Authorization on the inbound side: the AccessPolicies of the config in force,
//! compiled, deciding each HTTP request (on its head) and each opaque TCP connection (as
//! it opens) by the caller's verified mTLS identity and address.
//!
//! How policies combine (as with Istio's and Linkerd's): a Deny policy whose rule
//! matches refuses; otherwise, once any Allow policy covers the port, only what some
//! Allow rule matches gets through. Only policies in `Enforce` refuse. An `Audit` policy
//! refuses nothing: it counts, per request, what enforcing it (the others as they are)
//! would do — `wouldDeny` — which is the evidence an automatic rollout waits on.

mod evidence;
mod explained;
mod judged;
mod path;
mod rule;

pub use evidence::PolicyLog;
pub use explained::{Explained, PolicyExplained};
pub use judged::Judged;
pub use path::normalize;
pub use rule::{Asked, Caller};

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;
use smallvec::SmallVec;

use crate::config::InvalidField;
use crate::config::access::{AccessAction, AccessMode, AccessPolicy};
use crate::metrics::authz::AuthzMetrics;
use rule::CompiledRule;

/// What one policy made of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Let through (as far as this policy goes).
    Allowed,
    /// An Audit policy that, enforced, would have refused it.
    WouldDeny,
    /// Refused by this Enforce policy.
    Denied,
}

/// The AccessPolicies of one config, compiled, each with its evidence (carried over from
/// the last config by the policy's name).
#[derive(Debug, Default)]
pub struct Authorizer {
    policies: Vec<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    name: Arc<str>,
    ports: Vec<u16>,
    action: AccessAction,
    mode: AccessMode,
    rules: Vec<CompiledRule>,
    log: Arc<PolicyLog>,
    /// Its `allow` and `deny` counters in this mode, looked up once.
    counters: OnceLock<[Counter; 2]>,
    /// Some rule looks into HTTP requests; some rule reads headers (worked out once, not
    /// per request).
    reads_http: bool,
    reads_headers: bool,
}

impl Compiled {
    fn covers(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    fn matches(&self, caller: &Caller<'_>, asked: Asked<'_>) -> bool {
        self.first_match(caller, asked).is_some()
    }

    /// The index of the first rule that matches, if one does.
    fn first_match(&self, caller: &Caller<'_>, asked: Asked<'_>) -> Option<usize> {
        self.rules
            .iter()
            .position(|r| r.matches(caller, asked, self.action))
    }
}

/// One decision: which policy refuses the request, if any, and each covering policy's
/// outcome (for evidence and metrics).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// The policy that refuses it (an Enforce policy), by index.
    refused_by: Option<usize>,
    /// What each policy covering the port made of it, by index (a few policies cover a
    /// port: kept inline, no allocation per request).
    outcomes: SmallVec<[(usize, Outcome); 4]>,
}

impl Authorizer {
    /// Compiles `policies`, keeping the evidence of those `previous` had with the same
    /// rules; errors name the field.
    pub fn build(
        policies: &[AccessPolicy],
        previous: Option<&Authorizer>,
    ) -> Result<Self, InvalidField> {
        let before: HashMap<&str, &Compiled> = previous
            .map(|p| p.policies.iter().map(|c| (&*c.name, c)).collect())
            .unwrap_or_default();
        let mut out = Vec::with_capacity(policies.len());
        for (i, p) in policies.iter().enumerate() {
            let at = format!("inbound.accessPolicies[{i}]");
            let rules = p
                .rules
                .iter()
                .enumerate()
                .map(|(j, r)| CompiledRule::compile(r, &format!("{at}.rules[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            // By name, whatever changed: counts not yet reported stay, and so does what
            // it let through while auditing, which a refusal after an edit (of its
            // rules, or of the pods its workload labels name) is still measured against.
            let log = before
                .get(p.name.as_str())
                .map_or_else(Arc::default, |c| c.log.clone());
            let reads_http = rules.iter().any(CompiledRule::reads_http);
            let reads_headers = rules.iter().any(CompiledRule::reads_headers);
            out.push(Compiled {
                name: Arc::from(p.name.as_str()),
                ports: p.ports.clone(),
                action: p.action,
                mode: p.mode,
                rules,
                log,
                counters: OnceLock::new(),
                reads_http,
                reads_headers,
            });
        }
        Ok(Self { policies: out })
    }

    /// Whether any policy covers `port` (if none, nothing is decided there).
    pub fn covers(&self, port: u16) -> bool {
        self.policies.iter().any(|p| p.covers(port))
    }

    /// Whether a policy covering `port` has header conditions (an HTTP/1.1 head must
    /// then be parsed whole to decide).
    pub fn reads_headers(&self, port: u16) -> bool {
        self.policies
            .iter()
            .any(|p| p.reads_headers && p.covers(port))
    }

    /// The first Enforce policy covering `port` with rules on HTTP requests: a tunnel
    /// (CONNECT, or an upgrade to anything but WebSocket, such as h2c) would carry
    /// requests past them, so it refuses the tunnel.
    pub fn refuses_tunnels(&self, port: u16) -> Option<Arc<str>> {
        self.policies
            .iter()
            .find(|p| p.mode == AccessMode::Enforce && p.covers(port) && p.reads_http)
            .map(|p| p.name.clone())
    }

    /// The policy that refuses a request on `port` opening a tunnel to `to` (an
    /// `Upgrade` protocol, or `CONNECT`), if one does: a WebSocket is decided on its
    /// upgrade request like any request; anything else is refused by
    /// [`Authorizer::refuses_tunnels`].
    pub fn refuses_tunnel(&self, port: u16, to: &str) -> Option<Arc<str>> {
        match to.eq_ignore_ascii_case("websocket") {
            true => None,
            false => self.refuses_tunnels(port),
        }
    }

    /// Decides `asked` by `caller` on `port`, without recording anything.
    pub fn decide(&self, port: u16, caller: &Caller<'_>, asked: Asked<'_>) -> Decision {
        let covering = || {
            self.policies
                .iter()
                .enumerate()
                .filter(|(_, p)| p.covers(port))
        };
        let matched: SmallVec<[(usize, bool); 4]> = covering()
            .map(|(i, p)| (i, p.matches(caller, asked)))
            .collect();
        let enforced = |action| {
            matched
                .iter()
                .filter(move |(i, _)| {
                    let p = &self.policies[*i];
                    p.mode == AccessMode::Enforce && p.action == action
                })
                .copied()
        };
        let any_enforced_allow_matched = enforced(AccessAction::Allow).any(|(_, m)| m);
        let refused_by = enforced(AccessAction::Deny)
            .find(|(_, m)| *m)
            .or_else(|| match any_enforced_allow_matched {
                true => None,
                false => enforced(AccessAction::Allow).next(),
            })
            .map(|(i, _)| i);
        let outcomes = matched
            .iter()
            .filter_map(|&(i, m)| {
                let p = &self.policies[i];
                let outcome = match (p.mode, refused_by) {
                    (AccessMode::Enforce, Some(by)) if by == i => Outcome::Denied,
                    (AccessMode::Enforce, Some(_)) => return None,
                    (AccessMode::Enforce, None) => Outcome::Allowed,
                    // Already refused: enforcing this one would change nothing.
                    (AccessMode::Audit, Some(_)) => return None,
                    (AccessMode::Audit, None) => {
                        let would_refuse = match p.action {
                            AccessAction::Deny => m,
                            AccessAction::Allow => !m && !any_enforced_allow_matched,
                        };
                        match would_refuse {
                            true => Outcome::WouldDeny,
                            false => Outcome::Allowed,
                        }
                    }
                };
                Some((i, outcome))
            })
            .collect();
        Decision {
            refused_by,
            outcomes,
        }
    }

    /// Decides `asked` by `caller` on `port` and records each policy's outcome; returns
    /// the name of the policy that refuses it, if one does.
    pub fn check(
        &self,
        port: u16,
        caller: &Caller<'_>,
        asked: Asked<'_>,
        metrics: &AuthzMetrics,
    ) -> Result<(), Arc<str>> {
        let decision = self.decide(port, caller, asked);
        for &(i, outcome) in &decision.outcomes {
            let p = &self.policies[i];
            p.log.record(outcome, p.mode, caller, asked);
            let [allow, deny] = p.counters.get_or_init(|| metrics.counters(&p.name, p.mode));
            match outcome {
                Outcome::Allowed => allow.inc(),
                Outcome::WouldDeny | Outcome::Denied => deny.inc(),
            };
        }
        match decision.refused_by {
            Some(i) => Err(self.policies[i].name.clone()),
            None => Ok(()),
        }
    }

    /// Puts back what a report that failed carried.
    pub fn restore(&self, counts: &[braid_api::control::AccessCount]) {
        for c in counts {
            if let Some(p) = self.policies.iter().find(|p| *p.name == *c.policy) {
                p.log.restore(c);
            }
        }
    }

    /// Every policy's decisions since the last call, for the operator.
    pub fn take(&self) -> Vec<braid_api::control::AccessCount> {
        self.policies
            .iter()
            .filter_map(|p| p.log.take(&p.name))
            .collect()
    }
}

#[cfg(test)]
mod tests;
