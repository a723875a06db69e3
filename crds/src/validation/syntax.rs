//! Checks shared by the three resources: names, labels, selectors, durations, regexes,
//! ranges and bounds. Each records errors in a [`Report`] and says how to fix them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::LazyLock;

use regex::Regex;

use super::{FieldPath, Report};
use crate::common::{Duration, SelectorOperator, WorkloadSelector};
use crate::limits;

/// The schema pattern for `TrafficRoute.spec.host`: a DNS-1123 subdomain.
pub const HOST_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// The schema pattern for group and rule names: letters, digits, '-', '_' and '.',
/// starting and ending with a letter or digit (`Group_2` from the seed article fits).
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// The schema pattern for HTTP header names (RFC 9110 token characters).
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$";

/// The largest compiled regex braid accepts; bigger ones would cost every request.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A regex built once from one of this module's constant patterns.
macro_rules! static_regex {
    ($name:ident = $pattern:expr) => {
        static $name: LazyLock<Regex> = LazyLock::new(|| {
            // A constant pattern; the unit tests compile every one of them.
            #[allow(clippy::expect_used)]
            Regex::new($pattern).expect("built-in pattern compiles")
        });
    };
}

static_regex!(HOST_RE = HOST_PATTERN);
static_regex!(NAME_RE = NAME_PATTERN);
static_regex!(HEADER_NAME_RE = HEADER_NAME_PATTERN);

/// Whether `s` is a DNS-1123 subdomain (at most 253 characters).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= limits::MAX_HOST_LENGTH as usize && HOST_RE.is_match(s)
}

fn is_label_name(s: &str) -> bool {
    // [A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?, at most 63: the NAME_PATTERN shape.
    !s.is_empty() && s.len() <= 63 && NAME_RE.is_match(s)
}

/// Whether `s` is a valid label key: `name` or `prefix/name`, prefix a DNS subdomain.
pub fn is_label_key(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

/// Whether `s` is a valid label value (may be empty).
pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// Records an error unless `s` is at most `max` characters.
pub fn check_length(report: &mut Report, path: &FieldPath, s: &str, max: u32) {
    // Kubernetes counts maxLength in characters, not bytes.
    let chars = s.chars().count();
    report.check(chars <= max as usize, path, || {
        format!("is {chars} characters long; at most {max} are allowed, shorten it")
    });
}

/// Records an error unless the list has at most `max` entries.
pub fn check_items(report: &mut Report, path: &FieldPath, len: usize, max: u32) {
    report.check(len <= max as usize, path, || {
        format!("has {len} entries; at most {max} are allowed, split the resource or merge entries")
    });
}

/// Records an error unless `min <= value <= max`.
pub fn check_range<T: PartialOrd + Display>(
    report: &mut Report,
    path: &FieldPath,
    value: T,
    min: T,
    max: T,
) {
    if value < min || value > max {
        report.error(
            path,
            format!("{value} is out of range: use a value from {min} to {max}"),
        );
    }
}

/// Records an error unless `value` is a percentage from 0 to 100.
pub fn check_percent(report: &mut Report, path: &FieldPath, value: f64) {
    report.check((0.0..=100.0).contains(&value), path, || {
        format!("{value} is not a percentage: use a value from 0 to 100")
    });
}

/// Records an error unless `name` is a valid group or rule name.
pub fn check_name(report: &mut Report, path: &FieldPath, name: &str) {
    report.check(
        !name.is_empty()
            && name.len() <= limits::MAX_NAME_LENGTH as usize
            && NAME_RE.is_match(name),
        path,
        || {
            format!(
                "{name:?} is not a valid name: use 1 to {} letters, digits, '-', '_' or '.', \
                 starting and ending with a letter or digit",
                limits::MAX_NAME_LENGTH
            )
        },
    );
}

/// Records errors for label keys and values that Kubernetes would refuse.
pub fn check_labels(report: &mut Report, path: &FieldPath, labels: &BTreeMap<String, String>) {
    check_items(report, path, labels.len(), limits::MAX_LABELS);
    for (key, value) in labels {
        let at = path.key(key);
        report.check(is_label_key(key), &at, || {
            format!(
                "{key:?} is not a valid label key: use `name` or `prefix/name`, the name 1-63 \
                 alphanumerics, '-', '_' or '.', the prefix a DNS subdomain"
            )
        });
        report.check(is_label_value(value), &at, || {
            format!(
                "{value:?} is not a valid label value: use at most 63 alphanumerics, '-', '_' or \
                 '.', starting and ending with an alphanumeric"
            )
        });
    }
}

/// Records errors in a workload selector.
pub fn check_selector(report: &mut Report, path: &FieldPath, selector: &WorkloadSelector) {
    check_labels(report, &path.field("matchLabels"), &selector.match_labels);
    let exprs = path.field("matchExpressions");
    check_items(
        report,
        &exprs,
        selector.match_expressions.len(),
        limits::MAX_LABELS,
    );
    for (i, req) in selector.match_expressions.iter().enumerate() {
        let at = exprs.index(i);
        report.check(is_label_key(&req.key), &at.field("key"), || {
            format!(
                "{:?} is not a valid label key: use `name` or `prefix/name`",
                req.key
            )
        });
        let needs_values = matches!(req.operator, SelectorOperator::In | SelectorOperator::NotIn);
        if needs_values && req.values.is_empty() {
            report.error(
                &at.field("values"),
                format!("operator {:?} needs at least one value", req.operator),
            );
        } else if !needs_values && !req.values.is_empty() {
            report.error(
                &at.field("values"),
                format!(
                    "operator {:?} takes no values: remove `values`",
                    req.operator
                ),
            );
        }
        check_items(
            report,
            &at.field("values"),
            req.values.len(),
            limits::MAX_LABELS,
        );
        for (j, v) in req.values.iter().enumerate() {
            report.check(is_label_value(v), &at.field("values").index(j), || {
                format!("{v:?} is not a valid label value: use at most 63 alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric")
            });
        }
    }
}

/// Records an error unless `d` parses to more than zero (every braid duration is a
/// timeout, interval or wait); returns the parsed value.
pub fn check_duration(
    report: &mut Report,
    path: &FieldPath,
    d: &Duration,
) -> Option<std::time::Duration> {
    match d.parse() {
        Ok(v) if v.is_zero() => {
            report.error(
                path,
                format!("{d} is zero: use a duration longer than zero, e.g. 500ms or 1s"),
            );
            None
        }
        Ok(v) => Some(v),
        Err(e) => {
            report.error(path, e.to_string());
            None
        }
    }
}

/// Records an error unless `pattern` compiles with the engine the proxy uses.
pub fn check_regex(report: &mut Report, path: &FieldPath, pattern: &str) {
    if let Err(e) = regex::RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        let reason = e.to_string().lines().last().unwrap_or_default().to_owned();
        report.error(
            path,
            format!("{pattern:?} is not a valid regular expression (RE2 syntax): {reason}"),
        );
    }
}

/// Records an error unless `name` is an HTTP header name.
pub fn check_header_name(report: &mut Report, path: &FieldPath, name: &str) {
    report.check(
        !name.is_empty()
            && name.len() <= limits::MAX_HEADER_NAME_LENGTH as usize
            && HEADER_NAME_RE.is_match(name),
        path,
        || {
            format!(
                "{name:?} is not an HTTP header name: use letters, digits and '-', e.g. x-user-type"
            )
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values() {
        assert!(is_label_key("app"));
        assert!(is_label_key("app.kubernetes.io/name"));
        assert!(!is_label_key("-app"));
        assert!(!is_label_key("Bad_Prefix/app"));
        assert!(!is_label_key(""));
        assert!(is_label_value(""));
        assert!(is_label_value("v1.2_3"));
        assert!(!is_label_value("has space"));
        assert!(!is_label_value(&"a".repeat(64)));
    }

    #[test]
    fn dns_names() {
        assert!(is_dns_subdomain("payments"));
        assert!(is_dns_subdomain("payments.shop.svc.cluster.local"));
        assert!(!is_dns_subdomain("Payments"));
        assert!(!is_dns_subdomain("payments..shop"));
    }

    #[test]
    fn regexes_are_compiled() {
        let mut r = Report::default();
        check_regex(&mut r, &FieldPath::root("x"), "^/api/(v1|v2)/.*$");
        assert!(r.finish().is_ok());
        let mut r = Report::default();
        check_regex(&mut r, &FieldPath::root("x"), "(unclosed");
        let errs = r.finish().unwrap_err();
        assert!(
            errs.summary().contains("not a valid regular expression"),
            "{errs}"
        );
    }
}
