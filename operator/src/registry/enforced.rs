//! Which AccessPolicies an automatic rollout has switched to Enforce, as their status
//! records it. The leader writes it; every replica compiles with it as its source reads
//! it back, and a new leader (or a restarted operator) resumes from it, so no failover or
//! restart turns an enforced policy back to Audit.

use std::collections::BTreeSet;

use braid_crds::access_policy::AccessPolicySpec;
use serde_json::Value;

use super::ObjectKey;

/// The AccessPolicies whose rollout enforces them now.
pub type Enforced = BTreeSet<ObjectKey>;

/// What a rollout's progress belongs to: the spec fields that decide what is refused
/// (selector, ports, action, rules). Written into status as `progressOf`; an edit that
/// leaves these alone (the interval, say) keeps the policy enforced, any other starts
/// the rollout again from Audit.
pub fn access_progress_of(spec: &AccessPolicySpec) -> String {
    use sha2::{Digest, Sha256};
    let meaning = serde_json::json!({
        "selector": spec.selector,
        "ports": spec.ports,
        "action": spec.action,
        "rules": spec.rules,
    });
    Sha256::digest(meaning.to_string().as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether `status` records the rollout of the policy at `generation` with `spec` as
/// enforcing. As for EncryptionPolicies, a status of another generation counts only when
/// it was written for a spec that means the same ([`access_progress_of`]).
pub fn recorded_enforcing(
    generation: Option<i64>,
    spec: Option<&AccessPolicySpec>,
    status: &Value,
) -> Option<bool> {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    let same_generation = observed.is_some() && observed == generation;
    let same_meaning = spec.is_some_and(|spec| {
        status.get("progressOf").and_then(Value::as_str) == Some(access_progress_of(spec).as_str())
    });
    if !same_generation && !same_meaning {
        return None;
    }
    let phase = status.get("phase").and_then(Value::as_str)?;
    Some(phase == "Enforcing")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> AccessPolicySpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn an_enforcing_status_counts_for_its_generation_or_an_edit_that_keeps_the_rules() {
        let before =
            spec("{mode: Audit, rollout: {interval: 1m}, rules: [{from: [{meshed: true}]}]}");
        let slower =
            spec("{mode: Audit, rollout: {interval: 10m}, rules: [{from: [{meshed: true}]}]}");
        let other =
            spec("{mode: Audit, rollout: {interval: 1m}, rules: [{from: [{namespace: ops}]}]}");
        let status = serde_json::json!({
            "observedGeneration": 1, "phase": "Enforcing", "progressOf": access_progress_of(&before)
        });
        assert_eq!(
            recorded_enforcing(Some(1), Some(&before), &status),
            Some(true)
        );
        assert_eq!(
            recorded_enforcing(Some(2), Some(&slower), &status),
            Some(true)
        );
        assert_eq!(
            recorded_enforcing(Some(2), Some(&other), &status),
            None,
            "other rules start again"
        );
        let auditing = serde_json::json!({"observedGeneration": 1, "phase": "Auditing"});
        assert_eq!(recorded_enforcing(Some(1), None, &auditing), Some(false));
        assert_eq!(
            recorded_enforcing(Some(1), None, &serde_json::json!({})),
            None
        );
    }
}
