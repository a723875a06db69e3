//! A decision spelled out, for `GET /explain`: the one [`Authorizer::decide`] takes,
//! with what each policy covering the port makes of the request and which of its rules
//! matches. Records nothing.

use std::sync::Arc;

use super::{Asked, Authorizer, Caller, Outcome};
use crate::config::access::{AccessAction, AccessMode};

/// What one policy covering the port makes of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyExplained {
    /// The policy, `namespace/name`.
    pub name: Arc<str>,
    /// What it does to what its rules match.
    pub action: AccessAction,
    /// Whether it refuses or only counts, as applied now.
    pub mode: AccessMode,
    /// The first of its rules that matches: its name, or `rules[i]` when it has none.
    pub matched_rule: Option<Arc<str>>,
    /// Its outcome, as `check` would record it; `None` when another policy already
    /// refuses the request (nothing is recorded for it then).
    pub outcome: Option<Outcome>,
}

/// A decision spelled out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Explained {
    /// The Enforce policy that refuses the request, if one does.
    pub refused_by: Option<Arc<str>>,
    /// Every policy covering the port, in config order.
    pub policies: Vec<PolicyExplained>,
}

impl Authorizer {
    /// What the policies make of `asked` by `caller` on `port`: the decision of
    /// [`Authorizer::decide`] (so the same refusal), spelled out per policy. Records
    /// nothing.
    pub fn explain(&self, port: u16, caller: &Caller<'_>, asked: Asked<'_>) -> Explained {
        let decision = self.decide(port, caller, asked);
        let policies = self
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.covers(port))
            .map(|(i, p)| PolicyExplained {
                name: p.name.clone(),
                action: p.action,
                mode: p.mode,
                matched_rule: p.first_match(caller, asked).and_then(|j| {
                    let rule = p.rules.get(j)?;
                    Some(match rule.name.is_empty() {
                        true => Arc::from(format!("rules[{j}]")),
                        false => rule.name.clone(),
                    })
                }),
                outcome: decision
                    .outcomes
                    .iter()
                    .find(|(k, _)| *k == i)
                    .map(|(_, o)| *o),
            })
            .collect();
        Explained {
            refused_by: decision
                .refused_by
                .and_then(|i| self.policies.get(i))
                .map(|p| p.name.clone()),
            policies,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::access::AccessPolicy;

    const A: &str = "spiffe://cluster.local/ns/shop/sa/a";
    const B: &str = "spiffe://cluster.local/ns/shop/sa/b";

    #[test]
    fn each_covering_policy_is_spelled_out_as_decide_decides() {
        let list: Vec<AccessPolicy> = serde_json::from_value(json!([
            {"name": "shop/allow", "mode": "Enforce", "rules": [
                {"name": "", "from": [{"identity": B}]},
                {"name": "callers", "from": [{"identity": A}]}
            ]},
            {"name": "shop/audit-deny", "action": "Deny", "mode": "Audit",
             "rules": [{"name": "stray", "from": [{"identity": B}]}]},
            {"name": "shop/other-port", "ports": [9090], "mode": "Enforce", "rules": []}
        ]))
        .unwrap();
        let az = Authorizer::build(&list, None).unwrap();
        let caller = |id| Caller {
            identity: Some(id),
            address: None,
        };
        let a = az.explain(8080, &caller(A), Asked::Connection);
        assert_eq!(a.refused_by, None);
        let summary = |e: &Explained| -> Vec<(String, Option<String>, Option<Outcome>)> {
            e.policies
                .iter()
                .map(|p| {
                    (
                        p.name.to_string(),
                        p.matched_rule.as_deref().map(str::to_owned),
                        p.outcome,
                    )
                })
                .collect()
        };
        assert_eq!(
            summary(&a),
            [
                (
                    "shop/allow".into(),
                    Some("callers".into()),
                    Some(Outcome::Allowed)
                ),
                ("shop/audit-deny".into(), None, Some(Outcome::Allowed)),
            ]
        );
        let b = az.explain(8080, &caller(B), Asked::Connection);
        assert_eq!(b.refused_by, None);
        assert_eq!(
            summary(&b),
            [
                (
                    "shop/allow".into(),
                    Some("rules[0]".into()),
                    Some(Outcome::Allowed)
                ),
                (
                    "shop/audit-deny".into(),
                    Some("stray".into()),
                    Some(Outcome::WouldDeny)
                ),
            ]
        );
        let plaintext = az.explain(8080, &Caller::default(), Asked::Connection);
        assert_eq!(plaintext.refused_by.as_deref(), Some("shop/allow"));
        assert_eq!(
            summary(&plaintext),
            [
                ("shop/allow".into(), None, Some(Outcome::Denied)),
                ("shop/audit-deny".into(), None, None),
            ]
        );
        // The same decision `decide` takes.
        let d = az.decide(8080, &Caller::default(), Asked::Connection);
        assert_eq!(d.refused_by, Some(0));
    }
}
