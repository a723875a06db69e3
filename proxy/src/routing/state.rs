//! What a rule keeps between requests — its rate-limit bucket and its retry budget —
//! handed from one config version to the next. A config version comes with every
//! endpoint change, so starting them afresh each time would refill every bucket and
//! budget exactly during pod churn, when they matter most.

use std::collections::HashMap;
use std::sync::Arc;

use super::{RetryBudget, TokenBucket};
use crate::config::InvalidField;
use crate::config::routes::RateLimit;

/// Identifies a rule across versions: its TrafficRoute, service port and name.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct RuleKey {
    /// The TrafficRoute (`namespace/name`).
    pub from: Arc<str>,
    /// The service port it routes.
    pub port: u16,
    /// The rule's name.
    pub rule: Arc<str>,
}

/// The rule states of one config version.
#[derive(Debug, Default)]
pub struct RuleStates {
    buckets: HashMap<RuleKey, (RateLimit, Arc<TokenBucket>)>,
    budgets: HashMap<RuleKey, Arc<RetryBudget>>,
}

/// Builds the states of a new version, taking over those of `previous` that still apply.
#[derive(Debug)]
pub struct Carry<'a> {
    previous: Option<&'a RuleStates>,
    next: RuleStates,
}

impl<'a> Carry<'a> {
    /// Starts a new version after `previous`.
    pub fn after(previous: Option<&'a RuleStates>) -> Self {
        Self {
            previous,
            next: RuleStates::default(),
        }
    }

    /// The bucket of `key` for `limit`: the previous version's when the limit is the same.
    pub fn bucket(
        &mut self,
        key: &RuleKey,
        limit: &RateLimit,
        at: &str,
    ) -> Result<Arc<TokenBucket>, InvalidField> {
        let kept = self
            .previous
            .and_then(|p| p.buckets.get(key))
            .filter(|(was, _)| was == limit)
            .map(|(_, bucket)| bucket.clone());
        let bucket = match kept {
            Some(b) => b,
            None => Arc::new(TokenBucket::compile(limit, at)?),
        };
        self.next
            .buckets
            .insert(key.clone(), (limit.clone(), bucket.clone()));
        Ok(bucket)
    }

    /// The retry budget of `key`: the previous version's when it had one.
    pub fn budget(&mut self, key: &RuleKey) -> Arc<RetryBudget> {
        let budget = self
            .previous
            .and_then(|p| p.budgets.get(key))
            .cloned()
            .unwrap_or_default();
        self.next.budgets.insert(key.clone(), budget.clone());
        budget
    }

    /// Takes over every previous state whose rule `kept` holds: the rules of a table the
    /// new version keeps as it was, not compiled again.
    pub fn keep(&mut self, kept: impl Fn(&RuleKey) -> bool) {
        let Some(previous) = self.previous else {
            return;
        };
        for (key, state) in previous.buckets.iter().filter(|(k, _)| kept(k)) {
            self.next.buckets.insert(key.clone(), state.clone());
        }
        for (key, budget) in previous.budgets.iter().filter(|(k, _)| kept(k)) {
            self.next.budgets.insert(key.clone(), budget.clone());
        }
    }

    /// The states of the new version.
    pub fn finish(self) -> RuleStates {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rule: &str) -> RuleKey {
        RuleKey {
            from: "shop/payments".into(),
            port: 80,
            rule: rule.into(),
        }
    }

    #[test]
    fn state_is_kept_while_the_rule_and_its_limit_stay() {
        let limit = RateLimit {
            requests_per_second: 10,
            burst: None,
        };
        let mut first = Carry::after(None);
        let bucket = first.bucket(&key("a"), &limit, "r").unwrap();
        let budget = first.budget(&key("a"));
        let first = first.finish();

        let mut second = Carry::after(Some(&first));
        assert!(Arc::ptr_eq(
            &bucket,
            &second.bucket(&key("a"), &limit, "r").unwrap()
        ));
        assert!(Arc::ptr_eq(&budget, &second.budget(&key("a"))));
        // A changed limit starts a new bucket; another rule has its own.
        let raised = RateLimit {
            requests_per_second: 20,
            burst: None,
        };
        assert!(!Arc::ptr_eq(
            &bucket,
            &second.bucket(&key("a"), &raised, "r").unwrap()
        ));
        assert!(!Arc::ptr_eq(&budget, &second.budget(&key("b"))));
        let second = second.finish();
        // A rule gone from a version is forgotten.
        let third = Carry::after(Some(&second)).finish();
        assert!(third.buckets.is_empty() && third.budgets.is_empty());
    }
}
