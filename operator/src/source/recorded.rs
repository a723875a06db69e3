//! What an EncryptionPolicy's status records of its automatic rollout, read back by
//! every source. The leader writes it; followers compile with it, and a new leader (or a
//! restarted operator) resumes from it, so no failover or restart lowers protection.

use serde_json::Value;

use crate::compiler::Progress;

/// The status fields the progress is read from; a source may drop the rest of a status
/// (request counts change every few seconds and are of no use to the compiler).
pub const PROGRESS_FIELDS: [&str; 4] = [
    "observedGeneration",
    "currentPercent",
    "phase",
    "stepStartedAt",
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

/// The progress `status` records for the resource at `generation`: `currentPercent`, and
/// whether its phase is Strict. A status written for another generation describes
/// another spec (say, a static Strict since changed to an automatic rollout), so resuming
/// from it would be wrong: `None`.
pub fn recorded_progress(generation: Option<i64>, status: &Value) -> Option<Progress> {
    let observed = status.get("observedGeneration").and_then(Value::as_i64);
    if observed.is_none() || observed != generation {
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
            recorded_progress(Some(3), &status),
            Some(Progress {
                percent: 25,
                strict: false
            })
        );
        assert_eq!(recorded_progress(Some(4), &status), None, "another spec");
        assert_eq!(recorded_progress(None, &status), None);
        let strict = serde_json::json!({
            "observedGeneration": 1, "currentPercent": 100, "phase": "Strict"
        });
        assert_eq!(
            recorded_progress(Some(1), &strict),
            Some(Progress {
                percent: 100,
                strict: true
            })
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
            recorded_progress(Some(1), &kept),
            recorded_progress(Some(1), &status)
        );
        assert_eq!(progress_part(&serde_json::json!({"conditions": []})), None);
    }
}
