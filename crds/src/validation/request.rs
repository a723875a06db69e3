//! Checks of request conditions (headers, paths), shared by TrafficRoute's `match` and
//! AccessPolicy's `http`.

use super::{FieldPath, Report, check_header_name, check_length, check_regex};
use crate::limits;
use crate::traffic_route::{HeaderMatch, PathMatch};

/// The names of the set fields among `fields`, for "exactly one of" messages.
fn set_fields<'a>(fields: &[(&'a str, bool)]) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(_, set)| *set)
        .map(|(n, _)| *n)
        .collect()
}

/// Records an error unless exactly one of `fields` (name, whether set) is set.
pub fn exactly_one(r: &mut Report, at: &FieldPath, fields: &[(&str, bool)]) {
    let set = set_fields(fields);
    if set.len() != 1 {
        let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
        let found = if set.is_empty() {
            "none is set".to_owned()
        } else {
            format!("found {}", set.join(" and "))
        };
        r.error(
            at,
            format!("set exactly one of {} ({found})", names.join(", ")),
        );
    }
}

/// Records errors in a header condition.
pub fn check_header_match(r: &mut Report, at: &FieldPath, h: &HeaderMatch) {
    check_header_name(r, &at.field("name"), &h.name);
    exactly_one(
        r,
        at,
        &[
            ("exact", h.exact.is_some()),
            ("prefix", h.prefix.is_some()),
            ("regex", h.regex.is_some()),
            ("present", h.present.is_some()),
        ],
    );
    for (field, value) in [
        ("exact", &h.exact),
        ("prefix", &h.prefix),
        ("regex", &h.regex),
    ] {
        if let Some(v) = value {
            check_length(r, &at.field(field), v, limits::MAX_MATCH_VALUE_LENGTH);
        }
    }
    if let Some(re) = &h.regex {
        check_regex(r, &at.field("regex"), re);
    }
}

/// Records errors in a path condition.
pub fn check_path_match(r: &mut Report, at: &FieldPath, p: &PathMatch) {
    exactly_one(
        r,
        at,
        &[
            ("exact", p.exact.is_some()),
            ("prefix", p.prefix.is_some()),
            ("regex", p.regex.is_some()),
        ],
    );
    for (field, value) in [("exact", &p.exact), ("prefix", &p.prefix)] {
        if let Some(v) = value {
            r.check(v.starts_with('/'), &at.field(field), || {
                format!("{v:?} does not start with '/': paths are absolute, e.g. /api")
            });
            check_length(r, &at.field(field), v, limits::MAX_MATCH_VALUE_LENGTH);
        }
    }
    if let Some(re) = &p.regex {
        r.check(!re.is_empty(), &at.field("regex"), || {
            "is empty: give a pattern, e.g. ^/api/v[12]/".into()
        });
        check_length(r, &at.field("regex"), re, limits::MAX_MATCH_VALUE_LENGTH);
        check_regex(r, &at.field("regex"), re);
    }
}
