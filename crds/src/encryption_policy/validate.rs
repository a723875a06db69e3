//! Semantic validation of an EncryptionPolicy.
//!
//! Re-checks the schema and CEL rules (for the directory source and clusters without
//! CEL) and adds what a schema cannot say: label syntax and duplicate ports pointed at.

use std::collections::BTreeSet;

use super::{AutoRollout, EncryptionPolicy, EncryptionPolicySpec, TlsMode};
use crate::limits;
use crate::validation::{
    FieldPath, Report, Validate, ValidationErrors, check_duration, check_items, check_range,
    check_selector,
};

impl Validate for EncryptionPolicy {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

impl Validate for EncryptionPolicySpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut r = Report::default();
        let spec = FieldPath::root("spec");
        check_selector(&mut r, &spec.field("selector"), &self.selector);

        let ports = spec.field("portOverrides");
        check_items(
            &mut r,
            &ports,
            self.port_overrides.len(),
            limits::MAX_PORT_OVERRIDES,
        );
        let mut seen = BTreeSet::new();
        for (i, o) in self.port_overrides.iter().enumerate() {
            let at = ports.index(i).field("port");
            check_range(&mut r, &at, o.port, 1, 65535);
            r.check(seen.insert(o.port), &at, || {
                format!(
                    "port {} is overridden twice: keep one entry per port",
                    o.port
                )
            });
        }

        if let Some(rollout) = &self.rollout {
            let at = spec.field("rollout");
            check_range(&mut r, &at.field("percent"), rollout.percent, 0, 100);
            match self.mode {
                TlsMode::Strict if rollout.percent != 100 || rollout.auto.is_some() => r.error(
                    &spec.field("mode"),
                    "Strict refuses plaintext, but the rollout still leaves callers on plaintext: \
                     set rollout.percent to 100 without rollout.auto, or keep mode Permissive and \
                     let rollout.auto.enforceStrict switch to Strict",
                ),
                TlsMode::Disabled if rollout.percent != 0 || rollout.auto.is_some() => r.error(
                    &spec.field("mode"),
                    "mode Disabled accepts only plaintext, so no caller may originate mTLS: \
                     remove rollout or set mode Permissive",
                ),
                _ => {}
            }
            if let Some(auto) = &rollout.auto {
                validate_auto(&mut r, &at.field("auto"), auto);
            }
        }
        r.finish()
    }
}

fn validate_auto(r: &mut Report, at: &FieldPath, auto: &AutoRollout) {
    let steps = at.field("steps");
    r.check(!auto.steps.is_empty(), &steps, || {
        "give at least one step, e.g. [10, 25, 50, 100]".into()
    });
    check_items(r, &steps, auto.steps.len(), limits::MAX_ROLLOUT_STEPS);
    for (i, &step) in auto.steps.iter().enumerate() {
        check_range(r, &steps.index(i), step, 1, 100);
        if let Some(&prev) = i.checked_sub(1).and_then(|p| auto.steps.get(p)) {
            r.check(step > prev, &steps.index(i), || {
                format!("{step} does not come after {prev}: steps must be strictly ascending")
            });
        }
    }
    if let Some(&last) = auto.steps.last() {
        r.check(last == 100, &steps, || {
            format!("the last step is {last}; end at 100, e.g. [10, 25, 50, 100]")
        });
    }
    check_duration(r, &at.field("interval"), &auto.interval);
    r.check(
        (0.0..=1.0).contains(&auto.max_error_rate_increase),
        &at.field("maxErrorRateIncrease"),
        || {
            format!(
                "{} is not a rate: use a fraction from 0 to 1 (0.01 = one percentage point)",
                auto.max_error_rate_increase
            )
        },
    );
}
