//! Semantic validation of an AccessPolicy.
//!
//! Re-checks the schema and CEL rules (for the directory source and clusters without
//! CEL) and adds what a schema cannot say: identities that parse, label syntax, regexes
//! that compile, and duplicates pointed at.

use std::collections::BTreeSet;

use super::{AccessMode, AccessPolicy, AccessPolicySpec, AccessRule, HttpCondition, Source};
use crate::limits;
use crate::validation::{
    FieldPath, Report, Validate, ValidationErrors, check_duration, check_header_match, check_items,
    check_labels, check_path_match, check_range, check_selector, exactly_one, is_dns_subdomain,
};

impl Validate for AccessPolicy {
    fn validate(&self) -> Result<(), ValidationErrors> {
        self.spec.validate()
    }
}

impl Validate for AccessPolicySpec {
    fn validate(&self) -> Result<(), ValidationErrors> {
        let mut r = Report::default();
        let spec = FieldPath::root("spec");
        check_selector(&mut r, &spec.field("selector"), &self.selector);

        let ports = spec.field("ports");
        check_items(&mut r, &ports, self.ports.len(), limits::MAX_ACCESS_PORTS);
        let mut seen = BTreeSet::new();
        for (i, &port) in self.ports.iter().enumerate() {
            check_range(&mut r, &ports.index(i), port, 1, 65535);
            r.check(seen.insert(port), &ports.index(i), || {
                format!("port {port} is listed twice: list each port once")
            });
        }

        if let Some(rollout) = &self.rollout {
            let at = spec.field("rollout");
            r.check(self.mode == AccessMode::Audit, &spec.field("mode"), || {
                "rollout starts from Audit and lets the operator switch to Enforce: set mode \
                 Audit, or remove rollout to enforce now"
                    .into()
            });
            if let Some(d) = check_duration(&mut r, &at.field("interval"), &rollout.interval) {
                r.check(d >= MIN_INTERVAL, &at.field("interval"), || {
                    format!(
                        "{} is too short: use at least 5s (proxies report every 2 s, and a shorter interval could miss a would-be refusal)",
                        rollout.interval
                    )
                });
            }
            check_range(
                &mut r,
                &at.field("minRequests"),
                rollout.min_requests,
                1,
                1_000_000_000,
            );
        }

        let rules = spec.field("rules");
        r.check(!self.rules.is_empty(), &rules, || {
            "give at least one rule, e.g. - from: [{serviceAccount: checkout}]".into()
        });
        check_items(&mut r, &rules, self.rules.len(), limits::MAX_ACCESS_RULES);
        let mut names = BTreeSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = rules.index(i);
            let name = rule.name_at(i);
            r.check(names.insert(name.clone()), &at.field("name"), || {
                format!("{name:?} names two rules: give each rule its own name")
            });
            validate_rule(&mut r, &at, rule);
        }
        r.finish()
    }
}

/// The shortest rollout interval: a few of the proxies' 2 s reports.
const MIN_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

fn validate_rule(r: &mut Report, at: &FieldPath, rule: &AccessRule) {
    if let Some(name) = &rule.name {
        crate::validation::check_name(r, &at.field("name"), name);
    }
    let from = at.field("from");
    check_items(r, &from, rule.from.len(), limits::MAX_ACCESS_SOURCES);
    for (j, source) in rule.from.iter().enumerate() {
        validate_source(r, &from.index(j), source);
    }
    if let Some(http) = &rule.http {
        validate_http(r, &at.field("http"), http);
    }
}

fn validate_source(r: &mut Report, at: &FieldPath, s: &Source) {
    let qualified = s.service_account.is_some() || s.workload_labels.is_some();
    exactly_one(
        r,
        at,
        &[
            ("identity", s.identity.is_some()),
            ("serviceAccount", s.service_account.is_some()),
            ("namespace", s.namespace.is_some() && !qualified),
            ("workloadLabels", s.workload_labels.is_some()),
            ("meshed", s.meshed.is_some()),
            ("unauthenticated", s.unauthenticated.is_some()),
        ],
    );
    if s.namespace.is_some() && (s.identity.is_some() || s.meshed.is_some()) {
        r.error(
            &at.field("namespace"),
            "namespace goes alone, or with serviceAccount or workloadLabels: an identity \
             already names its namespace",
        );
    }
    if let Some(id) = &s.identity {
        check_identity(r, &at.field("identity"), id);
    }
    if let Some(sa) = &s.service_account {
        r.check(is_dns_subdomain(sa), &at.field("serviceAccount"), || {
            format!(
                "{sa:?} is not a service account name: use lowercase letters, digits, '-' and '.'"
            )
        });
    }
    if let Some(ns) = &s.namespace {
        r.check(is_namespace(ns), &at.field("namespace"), || {
            format!(
                "{ns:?} is not a namespace name: use at most 63 lowercase letters, digits and '-'"
            )
        });
    }
    if let Some(labels) = &s.workload_labels {
        r.check(!labels.is_empty(), &at.field("workloadLabels"), || {
            "is empty, which would match every pod: give labels, e.g. {app: checkout}, or use meshed: true".into()
        });
        check_labels(r, &at.field("workloadLabels"), labels);
    }
    for (field, value) in [("meshed", s.meshed), ("unauthenticated", s.unauthenticated)] {
        r.check(value != Some(false), &at.field(field), || {
            format!("{field} can only be true: leave it out otherwise")
        });
    }
}

/// A SPIFFE identity, or a prefix of one ending in `*`.
fn check_identity(r: &mut Report, at: &FieldPath, id: &str) {
    let bounded = id.len() <= limits::MAX_IDENTITY_LENGTH as usize;
    r.check(bounded, at, || {
        format!(
            "is {} characters long; at most {} are allowed",
            id.len(),
            limits::MAX_IDENTITY_LENGTH
        )
    });
    let ok = match id.strip_suffix('*') {
        // Whole segments only: `…/ns/ops*` would take `ops-prod` too.
        Some(prefix) => {
            prefix.starts_with("spiffe://") && prefix.ends_with('/') && !prefix.contains('*')
        }
        None => !id.contains('*') && id.parse::<braid_api::identity::WorkloadId>().is_ok(),
    };
    r.check(ok, at, || {
        format!(
            "{id:?} is not an identity: write spiffe://<trust-domain>/ns/<namespace>/sa/<account>, \
             or end a prefix with '/*' (e.g. spiffe://cluster.local/ns/ops/sa/*)"
        )
    });
}

fn is_namespace(ns: &str) -> bool {
    ns.len() <= limits::MAX_NAMESPACE_LENGTH as usize && !ns.contains('.') && is_dns_subdomain(ns)
}

fn validate_http(r: &mut Report, at: &FieldPath, http: &HttpCondition) {
    r.check(
        !(http.methods.is_empty() && http.paths.is_empty() && http.headers.is_empty()),
        at,
        || "give methods, paths or headers, or remove http to match whole connections".into(),
    );
    let methods = at.field("methods");
    check_items(r, &methods, http.methods.len(), 9);
    let mut seen = BTreeSet::new();
    for (k, m) in http.methods.iter().enumerate() {
        r.check(seen.insert(format!("{m:?}")), &methods.index(k), || {
            format!("{m:?} is listed twice")
        });
    }
    let paths = at.field("paths");
    check_items(r, &paths, http.paths.len(), limits::MAX_MATCHES);
    for (k, p) in http.paths.iter().enumerate() {
        check_path_match(r, &paths.index(k), p);
    }
    let headers = at.field("headers");
    check_items(r, &headers, http.headers.len(), limits::MAX_HEADER_MATCHES);
    for (k, h) in http.headers.iter().enumerate() {
        check_header_match(r, &headers.index(k), h);
    }
}
