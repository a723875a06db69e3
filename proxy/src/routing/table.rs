//! The rules of one service port, compiled: first match wins, then a weighted group.

use std::sync::Arc;

use super::{
    Carry, CompiledMatch, MirrorPolicy, RequestHead, RetryBudget, RuleKey, RulePolicy, TokenBucket,
    WeightedChoice,
};
use crate::config::InvalidField;
use crate::config::routes::ServiceRoutes;

/// A compiled rule.
#[derive(Clone, Debug)]
pub struct CompiledRule {
    /// The rule's name.
    pub name: Arc<str>,
    matches: Vec<CompiledMatch>,
    /// `None`: the rule names no group, any endpoint of the service serves.
    choice: Option<WeightedChoice>,
    /// Its deadline, faults and retries.
    pub policy: RulePolicy,
    /// Where copies of its requests go.
    pub mirror: Option<MirrorPolicy>,
    /// Its requests' token bucket (shared by every request of this config version).
    pub rate_limit: Option<Arc<TokenBucket>>,
    /// Its retry budget, when it retries.
    pub budget: Option<Arc<RetryBudget>>,
}

impl CompiledRule {
    /// Whether `req` selects this rule: any match entry holds, or there are none.
    pub fn matches(&self, req: &RequestHead<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(req))
    }

    /// The index (into the group list given to [`RouteTable::compile`]) of the group
    /// this request goes to; `None` when the rule sends to any endpoint.
    pub fn choose_group(&self) -> Option<usize> {
        self.choice.as_ref().map(WeightedChoice::choose)
    }

    /// Why `req` does not select this rule: for each match entry, the first condition it
    /// fails (`match[0]: header x-user is absent; match[1]: …`); `None` exactly when
    /// [`CompiledRule::matches`] holds.
    pub fn mismatch(&self, req: &RequestHead<'_>) -> Option<String> {
        if self.matches.is_empty() {
            return None;
        }
        let mut why = Vec::with_capacity(self.matches.len());
        for (i, m) in self.matches.iter().enumerate() {
            why.push(format!("match[{i}]: {}", m.mismatch(req)?));
        }
        Some(why.join("; "))
    }

    /// Why `req` selects this rule (`match[1] holds`, or that it has no conditions);
    /// `None` when it does not.
    pub fn why_matches(&self, req: &RequestHead<'_>) -> Option<String> {
        if self.matches.is_empty() {
            return Some("no match conditions: matches every request".to_owned());
        }
        self.matches
            .iter()
            .position(|m| m.matches(req))
            .map(|i| format!("match[{i}] holds"))
    }

    /// The groups the rule sends to (indices as for [`CompiledRule::choose_group`]),
    /// each with its share of requests in percent, in the rule's order; groups of weight
    /// 0 get none and are left out. `None`: the rule sends to any endpoint.
    pub fn shares(&self) -> Option<Vec<(usize, f64)>> {
        let choice = self.choice.as_ref()?;
        let total = choice.total() as f64;
        let mut shares: Vec<(usize, f64)> = Vec::new();
        for (group, weight) in choice.weights() {
            let percent = weight as f64 * 100.0 / total;
            // A group listed twice gets the sum of its weights.
            match shares.iter_mut().find(|(g, _)| *g == group) {
                Some((_, p)) => *p += percent,
                None => shares.push((group, percent)),
            }
        }
        Some(shares)
    }
}

/// Why a request found no way through the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No rule matched.
    #[error("no rule of TrafficRoute {0} matches the request")]
    NoRuleMatches(Arc<str>),
    /// The chosen group has no endpoint.
    #[error("no healthy endpoints in group {0}")]
    EmptyGroup(Arc<str>),
}

/// The rules of one service port.
#[derive(Clone, Debug)]
pub struct RouteTable {
    /// The TrafficRoute they come from.
    pub from: Arc<str>,
    rules: Vec<CompiledRule>,
}

impl RouteTable {
    /// Compiles `routes` for `port` of a service whose groups are `groups` (in the order
    /// the chosen indices refer to), taking rate-limit buckets and retry budgets over
    /// through `carry`. Errors name the field under `at`.
    pub fn compile(
        routes: &ServiceRoutes,
        port: u16,
        groups: &[&str],
        carry: &mut Carry<'_>,
        at: &str,
    ) -> Result<Self, InvalidField> {
        let from: Arc<str> = routes.from.as_str().into();
        let mut rules = Vec::with_capacity(routes.rules.len());
        for (i, rule) in routes.rules.iter().enumerate() {
            let here = format!("{at}.rules[{i}]");
            let matches = rule
                .matches
                .iter()
                .enumerate()
                .map(|(j, m)| CompiledMatch::compile(m, &format!("{here}.match[{j}]")))
                .collect::<Result<Vec<_>, _>>()?;
            let mut weights = Vec::with_capacity(rule.route.len());
            for (j, w) in rule.route.iter().enumerate() {
                let index = groups.iter().position(|g| *g == w.group).ok_or_else(|| {
                    InvalidField::new(
                        format!("{here}.route[{j}].group"),
                        format!(
                            "no group {:?} in service {} (have: {})",
                            w.group,
                            routes.service,
                            groups.join(", ")
                        ),
                    )
                })?;
                weights.push((index, w.weight));
            }
            let choice = match weights.is_empty() {
                true => None,
                false => Some(WeightedChoice::new(weights).ok_or_else(|| {
                    InvalidField::new(
                        format!("{here}.route"),
                        "give at least one group a weight above 0",
                    )
                })?),
            };
            let policy = RulePolicy::compile(rule, &here)?;
            let mirror = match &rule.mirror {
                Some(m) => Some(MirrorPolicy::compile(m, groups, &here)?),
                None => None,
            };
            let name: Arc<str> = rule.name.as_str().into();
            let key = RuleKey {
                from: from.clone(),
                port,
                rule: name.clone(),
            };
            let rate_limit = match &rule.rate_limit {
                Some(r) => Some(carry.bucket(&key, r, &here)?),
                None => None,
            };
            rules.push(CompiledRule {
                name,
                matches,
                choice,
                budget: policy.retry.map(|_| carry.budget(&key)),
                policy,
                mirror,
                rate_limit,
            });
        }
        Ok(Self { from, rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// The first rule `req` matches.
    pub fn select(&self, req: &RequestHead<'_>) -> Result<&CompiledRule, RouteError> {
        self.rules
            .iter()
            .find(|r| r.matches(req))
            .ok_or_else(|| RouteError::NoRuleMatches(self.from.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::{HeaderMatch, RequestMatch, Rule, ValueMatch, WeightedGroup};

    fn routes(rules: Vec<Rule>) -> ServiceRoutes {
        ServiceRoutes {
            from: "shop/payments".into(),
            service: "payments".into(),
            namespace: "shop".into(),
            port: None,
            rules,
        }
    }

    fn rule(name: &str, header: Option<(&str, &str)>, route: &[(&str, u32)]) -> Rule {
        Rule {
            name: name.into(),
            matches: header
                .map(|(n, v)| RequestMatch {
                    headers: vec![HeaderMatch {
                        name: n.into(),
                        value: ValueMatch::Exact(v.into()),
                    }],
                    ..Default::default()
                })
                .into_iter()
                .collect(),
            route: route
                .iter()
                .map(|(g, w)| WeightedGroup {
                    group: (*g).into(),
                    weight: *w,
                })
                .collect(),
            ..Default::default()
        }
    }

    const GROUPS: [&str; 3] = ["Group_1", "Group_2", "(default)"];

    #[test]
    fn the_first_matching_rule_decides() {
        let t = RouteTable::compile(
            &routes(vec![
                rule("transfers", Some(("type", "transfer")), &[("Group_2", 100)]),
                rule("default", None, &[("Group_1", 100)]),
            ]),
            80,
            &GROUPS,
            &mut Carry::after(None),
            "routes[0]",
        )
        .unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("type", http::HeaderValue::from_static("transfer"));
        let head = RequestHead {
            method: &http::Method::GET,
            path: "/",
            headers: &h,
        };
        let r = t.select(&head).unwrap();
        assert_eq!((&*r.name, r.choose_group()), ("transfers", Some(1)));
        let empty = http::HeaderMap::new();
        let head = RequestHead {
            headers: &empty,
            ..head
        };
        let r = t.select(&head).unwrap();
        assert_eq!((&*r.name, r.choose_group()), ("default", Some(0)));
    }

    #[test]
    fn a_rule_without_groups_sends_to_any_endpoint() {
        let t = RouteTable::compile(
            &routes(vec![rule("all", None, &[])]),
            80,
            &GROUPS,
            &mut Carry::after(None),
            "r",
        )
        .unwrap();
        let h = http::HeaderMap::new();
        let head = RequestHead {
            method: &http::Method::GET,
            path: "/",
            headers: &h,
        };
        assert_eq!(t.select(&head).unwrap().choose_group(), None);
    }

    #[test]
    fn no_match_is_an_error_naming_the_route() {
        let t = RouteTable::compile(
            &routes(vec![rule(
                "t",
                Some(("type", "transfer")),
                &[("Group_2", 1)],
            )]),
            80,
            &GROUPS,
            &mut Carry::after(None),
            "r",
        )
        .unwrap();
        let h = http::HeaderMap::new();
        let head = RequestHead {
            method: &http::Method::GET,
            path: "/",
            headers: &h,
        };
        let err = t.select(&head).unwrap_err().to_string();
        assert_eq!(
            err.to_string(),
            "no rule of TrafficRoute shop/payments matches the request"
        );
    }

    #[test]
    fn unknown_groups_and_zero_weights_are_refused_by_path() {
        let err = RouteTable::compile(
            &routes(vec![rule("t", None, &[("Group_1", 50), ("Group_9", 50)])]),
            80,
            &GROUPS,
            &mut Carry::after(None),
            "routes[2]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("routes[2].rules[0].route[1].group: no group \"Group_9\""),
            "{err}"
        );
        let err = RouteTable::compile(
            &routes(vec![rule("t", None, &[("Group_1", 0)])]),
            80,
            &GROUPS,
            &mut Carry::after(None),
            "r",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("r.rules[0].route: "), "{err}");
    }
}
