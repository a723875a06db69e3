//! Semantic validation of a TrafficRoute.
//!
//! Beyond the schema and CEL rules (re-checked here for the directory source and for
//! clusters without CEL), this checks what CEL in 1.28 cannot express within its cost
//! budget or at all: regexes compile, labels are well-formed, names are unique with the
//! duplicate pointed at, rules after a catch-all are unreachable, and a per-try timeout
//! fits inside the overall timeout.

use std::collections::{BTreeSet, HashSet};

use super::{Fault, RequestMatch, RouteRule, TrafficRoute, TrafficRouteSpec};
use crate::limits;
use crate::validation::{
    FieldPath, Report, Validate, ValidationErrors, check_duration, check_header_match, check_items,
    check_labels, check_name, check_path_match, check_percent, check_range, is_dns_subdomain,
};

impl Validate for TrafficRoute {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

impl Validate for TrafficRouteSpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut r = Report::default();
        let spec = FieldPath::root("spec");

        r.check(is_dns_subdomain(&self.host) && !self.host.is_empty(), &spec.field("host"), || {
            format!(
                "{:?} is not a host: use a Service name in this namespace (payments) or a fully \
                 qualified name (payments.shop.svc.cluster.local), lower case",
                self.host
            )
        });
        if let Some(port) = self.port {
            check_range(&mut r, &spec.field("port"), port, 1, 65535);
        }

        let groups_path = spec.field("groups");
        check_items(&mut r, &groups_path, self.groups.len(), limits::MAX_GROUPS);
        let mut seen = BTreeSet::new();
        for (i, group) in self.groups.iter().enumerate() {
            let at = groups_path.index(i);
            check_name(&mut r, &at.field("name"), &group.name);
            if !seen.insert(group.name.as_str()) {
                r.error(
                    &at.field("name"),
                    format!(
                        "duplicate group name {:?}: give each group its own name",
                        group.name
                    ),
                );
            }
            r.check(!group.labels.is_empty(), &at.field("labels"), || {
                "a group needs at least one label to select its pods, e.g. {version: v2}".into()
            });
            check_labels(&mut r, &at.field("labels"), &group.labels);
        }
        let group_names: Vec<&str> = self.groups.iter().map(|g| g.name.as_str()).collect();

        let rules_path = spec.field("rules");
        r.check(!self.rules.is_empty(), &rules_path, || {
            "at least one rule is needed; a rule without `match` applies to every request".into()
        });
        check_items(&mut r, &rules_path, self.rules.len(), limits::MAX_RULES);
        let mut seen = BTreeSet::new();
        let mut catch_all: Option<(usize, &str)> = None;
        for (i, rule) in self.rules.iter().enumerate() {
            let at = rules_path.index(i);
            if !seen.insert(rule.name.as_str()) {
                r.error(
                    &at.field("name"),
                    format!(
                        "duplicate rule name {:?}: give each rule its own name",
                        rule.name
                    ),
                );
            }
            if let Some((first, name)) = catch_all {
                r.error(
                    &at,
                    format!(
                        "rule {:?} is unreachable: rule {name:?} at spec.rules[{first}] has no \
                         `match` and takes every request; move it to the end",
                        rule.name
                    ),
                );
            } else if rule.matches.is_empty() {
                catch_all = Some((i, rule.name.as_str()));
            }
            validate_rule(&mut r, &at, rule, &group_names);
        }
        r.finish()
    }
}

fn missing_group(name: &str, groups: &[&str]) -> String {
    if groups.is_empty() {
        format!(
            "no group {name:?}: spec.groups is empty; add a group with that name and its labels"
        )
    } else {
        let have: BTreeSet<&str> = groups.iter().copied().collect();
        let have: Vec<&str> = have.into_iter().collect();
        format!(
            "no group {name:?} in spec.groups (have: {})",
            have.join(", ")
        )
    }
}

fn validate_rule(r: &mut Report, at: &FieldPath, rule: &RouteRule, groups: &[&str]) {
    check_name(r, &at.field("name"), &rule.name);

    let matches = at.field("match");
    check_items(r, &matches, rule.matches.len(), limits::MAX_MATCHES);
    for (j, m) in rule.matches.iter().enumerate() {
        validate_match(r, &matches.index(j), m);
    }

    let route = at.field("route");
    check_items(r, &route, rule.route.len(), limits::MAX_DESTINATIONS);
    for (k, dest) in rule.route.iter().enumerate() {
        let d = route.index(k);
        r.check(
            groups.contains(&dest.group.as_str()),
            &d.field("group"),
            || missing_group(&dest.group, groups),
        );
        check_range(r, &d.field("weight"), dest.weight, 0, 100);
    }
    if !rule.route.is_empty() {
        let sum: u64 = rule.route.iter().map(|d| u64::from(d.weight)).sum();
        r.check(sum == 100, &route, || {
            format!("weights sum to {sum}; make them sum to 100")
        });
    }

    if let Some(mirror) = &rule.mirror {
        let m = at.field("mirror");
        r.check(
            groups.contains(&mirror.group.as_str()),
            &m.field("group"),
            || missing_group(&mirror.group, groups),
        );
        check_percent(r, &m.field("percent"), mirror.percent);
    }

    if let Some(fault) = &rule.fault {
        validate_fault(r, &at.field("fault"), fault);
    }

    let timeout = rule
        .timeout
        .as_ref()
        .and_then(|t| check_duration(r, &at.field("timeout"), t));

    if let Some(retries) = &rule.retries {
        let p = at.field("retries");
        check_range(
            r,
            &p.field("attempts"),
            retries.attempts,
            0,
            limits::MAX_RETRY_ATTEMPTS,
        );
        let per_try = retries
            .per_try_timeout
            .as_ref()
            .and_then(|t| check_duration(r, &p.field("perTryTimeout"), t));
        if let (Some(per_try), Some(timeout)) = (per_try, timeout) {
            r.check(per_try <= timeout, &p.field("perTryTimeout"), || {
                format!(
                    "{per_try:?} is longer than the rule's timeout ({timeout:?}), so no retry \
                     could ever start; lower perTryTimeout or raise timeout"
                )
            });
        }
        check_items(r, &p.field("on"), retries.on.len(), limits::MAX_RETRY_ON);
        let mut seen = HashSet::new();
        for (k, on) in retries.on.iter().enumerate() {
            r.check(seen.insert(on), &p.field("on").index(k), || {
                "listed twice: remove the duplicate".into()
            });
        }
    }

    if let Some(limit) = &rule.rate_limit {
        let p = at.field("rateLimit");
        check_range(
            r,
            &p.field("requestsPerSecond"),
            limit.requests_per_second,
            1,
            1_000_000,
        );
        if let Some(burst) = limit.burst {
            check_range(r, &p.field("burst"), burst, 0, 1_000_000);
        }
    }
}

fn validate_match(r: &mut Report, at: &FieldPath, m: &RequestMatch) {
    let headers = at.field("headers");
    check_items(r, &headers, m.headers.len(), limits::MAX_HEADER_MATCHES);
    for (k, h) in m.headers.iter().enumerate() {
        check_header_match(r, &headers.index(k), h);
    }
    if let Some(path) = &m.path {
        check_path_match(r, &at.field("path"), path);
    }
    check_labels(r, &at.field("sourceLabels"), &m.source_labels);
}

fn validate_fault(r: &mut Report, at: &FieldPath, fault: &Fault) {
    r.check(fault.delay.is_some() || fault.abort.is_some(), at, || {
        "set delay, abort or both".into()
    });
    if let Some(delay) = &fault.delay {
        let d = at.field("delay");
        check_percent(r, &d.field("percent"), delay.percent);
        check_duration(r, &d.field("fixed"), &delay.fixed);
    }
    if let Some(abort) = &fault.abort {
        let a = at.field("abort");
        check_percent(r, &a.field("percent"), abort.percent);
        check_range(r, &a.field("status"), abort.status, 200, 599);
    }
}
