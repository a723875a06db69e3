//! Semantic validation of a SelfHealing.
//!
//! Re-checks the schema and CEL rules (for the directory source and clusters without
//! CEL) and adds what a schema cannot say: durations that fit together, label syntax.

use super::{OutlierDetection, OverloadProtection, OverloadSignal, SelfHealing, SelfHealingSpec};
use crate::validation::{
    FieldPath, Report, Validate, ValidationErrors, check_duration, check_range, check_selector,
};

impl Validate for SelfHealing {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

impl Validate for SelfHealingSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut r = Report::default();
        let spec = FieldPath::root("spec");
        check_selector(&mut r, &spec.field("selector"), &self.selector);
        r.check(
            self.outlier_detection.is_some() || self.overload_protection.is_some(),
            &spec,
            || "set outlierDetection, overloadProtection or both".into(),
        );
        if let Some(od) = &self.outlier_detection {
            validate_outlier(&mut r, &spec.field("outlierDetection"), od);
        }
        if let Some(healing) = &self.healing {
            let at = spec.field("healing");
            r.check(self.outlier_detection.is_some(), &at, || {
                "healing acts on endpoints that outlierDetection ejects: add outlierDetection"
                    .into()
            });
            check_duration(&mut r, &at.field("cooldown"), &healing.cooldown);
            check_range(
                &mut r,
                &at.field("minReporters"),
                healing.min_reporters,
                1,
                100,
            );
            check_range(
                &mut r,
                &at.field("maxActionsPerHour"),
                healing.max_actions_per_hour,
                0,
                100,
            );
        }
        if let Some(op) = &self.overload_protection {
            validate_overload(&mut r, &spec.field("overloadProtection"), op);
        }
        r.finish()
    }
}

fn validate_outlier(r: &mut Report, at: &FieldPath, od: &OutlierDetection) {
    check_range(
        r,
        &at.field("consecutiveErrors"),
        od.consecutive_errors,
        1,
        1000,
    );
    if let Some(rate) = &od.error_rate {
        let e = at.field("errorRate");
        r.check(
            rate.threshold > 0.0 && rate.threshold <= 1.0,
            &e.field("threshold"),
            || {
                format!(
                    "{} is not a usable error rate: use a fraction above 0 and at most 1, e.g. 0.5",
                    rate.threshold
                )
            },
        );
        check_range(r, &e.field("minRequests"), rate.min_requests, 1, 1_000_000);
        check_duration(r, &e.field("window"), &rate.window);
    }
    let base = check_duration(r, &at.field("baseEjectionTime"), &od.base_ejection_time);
    let max = check_duration(r, &at.field("maxEjectionTime"), &od.max_ejection_time);
    if let (Some(base), Some(max)) = (base, max) {
        r.check(max >= base, &at.field("maxEjectionTime"), || {
            format!(
                "{} is shorter than baseEjectionTime ({}): raise maxEjectionTime or lower \
                 baseEjectionTime",
                od.max_ejection_time, od.base_ejection_time
            )
        });
    }
    check_range(
        r,
        &at.field("maxEjectionPercent"),
        od.max_ejection_percent,
        0,
        100,
    );
}

fn validate_overload(r: &mut Report, at: &FieldPath, op: &OverloadProtection) {
    let target = at.field("target");
    match op.signal {
        OverloadSignal::Cpu => r.check(op.target > 0.0 && op.target <= 1.0, &target, || {
            format!(
                "{} is not a CPU share: for signal cpu use a fraction of the pod's CPU limit \
                 above 0 and at most 1, e.g. 0.75",
                op.target
            )
        }),
        OverloadSignal::Latency => r.check(op.target > 0.0 && op.target <= 60.0, &target, || {
            format!(
                "{} is not a usable p99: for signal latency use seconds above 0 and at most 60, \
                 e.g. 0.25",
                op.target
            )
        }),
        OverloadSignal::Inflight => {
            r.check((1.0..=1_000_000.0).contains(&op.target), &target, || {
                format!(
                    "{} is not a request count: for signal inflight use 1 to 1000000, e.g. 200",
                    op.target
                )
            })
        }
    }
    check_range(r, &at.field("minLimit"), op.min_limit, 1, 1_000_000);
    if let Some(max) = op.max_limit {
        check_range(r, &at.field("maxLimit"), max, 1, 1_000_000);
        r.check(max >= op.min_limit, &at.field("maxLimit"), || {
            format!(
                "{max} is below minLimit ({}): raise maxLimit or lower minLimit",
                op.min_limit
            )
        });
    }
    check_duration(r, &at.field("samplePeriod"), &op.sample_period);
}
