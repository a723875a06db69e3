//! Where an automatic mTLS rollout stands, and what an EncryptionPolicy's status records
//! of it. The leader writes it; every replica compiles with it as its source reads it
//! back, and a new leader (or a restarted operator) resumes from it, so no failover or
//! restart lowers protection.

use std::collections::BTreeMap;

use braid_crds::encryption_policy::EncryptionPolicySpec;
use serde_json::Value;

use super::ObjectKey;

/// Where an automatic rollout stands, as the leader's rollout loop drives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// The share of callers originating mTLS now.
    pub percent: u8,
    /// The rollout switched the policy to Strict (`enforceStrict`).
    pub strict: bool,
}

/// The progress of each automatic rollout, by policy.
pub type Rollouts = BTreeMap<ObjectKey, Progress>;

/// The status fields the progress is read from; a source may drop the rest of a status
/// (request counts change every few seconds and are of no use to the compiler).
pub const PROGRESS_FIELDS: [&str; 6] = [
    "observedGeneration",
    "currentPercent",
    "phase",
    "stepStartedAt",
    "phaseStartedAt",
    "progressOf",
];

/// Of `status`, only [`PROGRESS_FIELDS`]; `None` when none of them is there.
pub fn progress_part(status: &Value) -> Option<Value> {
    let object = status.as_object()?;
    let kept: serde_json::Map<String, Value> = PROGRESS_FIELDS
        .iter()
        .filter_map(|f| Some(((*f).to_string(), object.get(*f)?.clone())))
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// What a rollout's progress belongs to: the spec fields that decide what a percent and
/// Strict mean (mode, selector, the starting percent, the steps, enforceStrict). Written
/// into status as `progressOf`; an edit that leaves these alone keeps the progress.
pub fn progress_of(spec: &EncryptionPolicySpec) -> String {
    use sha2::{Digest, Sha256};
    let rollout = spec.rollout.as_ref();
    let auto = rollout.and_then(|r| r.auto.as_ref());
    let meaning = serde_json::json!({
        "mode": spec.mode,
        "selector": spec.selector,
        "percent": rollout.map(|r| r.percent),
        "steps": auto.map(|a| &a.steps),
        "enforceStrict": auto.map(|a| a.enforce_strict),
    });
    Sha256::digest(meaning.to_string().as_bytes())
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The progress `status` records for the resource at `generation` whose spec is `spec`:
/// `currentPercent`, and whether its phase is Strict. A status written for another
/// generation counts only when it was written for a spec that means the same
/// ([`progress_of`]); one for a different spec (say, a static Strict since changed to an
/// automatic rollout, or a new selector) would be wrong to resume from: `None`.
pub fn recorded_progress(
    generation: Option<i64>,
    spec: Option<&EncryptionPolicySpec>,
    status: &Value,
) -> Option<Progress> {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    let same_generation = observed.is_some() && observed == generation;
    let same_meaning = spec.is_some_and(|spec| {
        status.get("progressOf").and_then(Value::as_str) == Some(progress_of(spec).as_str())
    });
    if !same_generation && !same_meaning {
        return None;
    }
    let percent = status.get("currentPercent")?.as_u64()?.min(100) as u8;
    let strict = status.get("phase").and_then(Value::as_str) == Some("Strict");
    Some(Progress { percent, strict })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_is_read_from_a_status_of_the_current_generation_only() {
        let status = serde_json::json!({
            "observedGeneration": 3, "currentPercent": 25, "phase": "RollingOut"
        });
        assert_eq!(
            recorded_progress(Some(3), None, &status),
            Some(Progress {
                percent: 25,
                strict: false
            })
        );
        assert_eq!(
            recorded_progress(Some(4), None, &status),
            None,
            "another spec"
        );
        assert_eq!(recorded_progress(None, None, &status), None);
        let strict = serde_json::json!({
            "observedGeneration": 1, "currentPercent": 100, "phase": "Strict"
        });
        assert_eq!(
            recorded_progress(Some(1), None, &strict),
            Some(Progress {
                percent: 100,
                strict: true
            })
        );
    }

    fn spec(yaml: &str) -> EncryptionPolicySpec {
        serde_norway::from_str(yaml).unwrap()
    }

    #[test]
    fn an_edit_that_keeps_the_meaning_keeps_the_progress() {
        let before = spec(
            "{mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 1m, enforceStrict: true}}}",
        );
        let slower = spec(
            "{mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 10m, enforceStrict: true}}}",
        );
        let other_steps = spec(
            "{mode: Permissive, rollout: {percent: 0, auto: {steps: [25, 100], interval: 1m, enforceStrict: true}}}",
        );
        let other_selector = spec(
            "{selector: {matchLabels: {app: x}}, mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 1m, enforceStrict: true}}}",
        );
        assert_eq!(progress_of(&before), progress_of(&slower));
        assert_ne!(progress_of(&before), progress_of(&other_steps));
        assert_ne!(progress_of(&before), progress_of(&other_selector));
        let status = serde_json::json!({
            "observedGeneration": 1, "currentPercent": 100, "phase": "Strict",
            "progressOf": progress_of(&before)
        });
        let strict = Some(Progress {
            percent: 100,
            strict: true,
        });
        // Generation 2 changed only the interval: still Strict.
        assert_eq!(recorded_progress(Some(2), Some(&slower), &status), strict);
        assert_eq!(
            recorded_progress(Some(2), Some(&other_steps), &status),
            None
        );
    }

    #[test]
    fn the_part_kept_is_what_progress_is_read_from() {
        let status = serde_json::json!({
            "observedGeneration": 1, "currentPercent": 50, "phase": "RollingOut",
            "traffic": {"mtlsRequests": 10}, "conditions": [{"type": "Accepted"}]
        });
        let kept = progress_part(&status).unwrap();
        assert_eq!(
            kept,
            serde_json::json!({"observedGeneration": 1, "currentPercent": 50, "phase": "RollingOut"})
        );
        assert_eq!(
            recorded_progress(Some(1), None, &kept),
            recorded_progress(Some(1), None, &status)
        );
        assert_eq!(progress_part(&serde_json::json!({"conditions": []})), None);
    }
}
