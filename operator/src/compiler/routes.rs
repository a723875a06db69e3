//! TrafficRoute rules compiled into the `routes` of each caller's config. The oldest
//! route of a service port wins; a rule's `sourceLabels` are resolved here, so a caller
//! receives only the rules that can match it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use braid_api::config::routes::{
    AbortFault, DelayFault, Fault, HeaderMatch, Mirror, PathMatch, RateLimit, RequestMatch,
    Retries, RetryOn, Rule, ServiceRoutes, ValueMatch, WeightedGroup,
};
use braid_crds::traffic_route::{
    HeaderMatch as CrdHeaderMatch, PathMatch as CrdPathMatch, RequestMatch as CrdRequestMatch,
    RetryOn as CrdRetryOn, RouteRule, TrafficRoute,
};

use super::host::service_for_host;
use super::version::Digest256;
use crate::registry::{ObjectKey, Snapshot};

/// A route that lost a service port to an older one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// The route left out.
    pub loser: ObjectKey,
    /// The older route in force for the same service port.
    pub winner: ObjectKey,
}

/// A rule with the `sourceLabels` of each of its match entries set aside.
#[derive(Clone, Debug)]
struct SourcedRule {
    rule: Rule,
    /// Per entry of `rule.matches`, the caller labels it requires (empty: any caller).
    sources: Vec<BTreeMap<String, String>>,
}

#[derive(Clone, Debug)]
struct Entry {
    routes: ServiceRoutes,
    rules: Vec<SourcedRule>,
}

/// One caller's routes and their digest.
pub type CallerRoutes = (Arc<[ServiceRoutes]>, Digest256);

/// The routes in force, ready to be cut per caller.
#[derive(Debug, Default)]
pub struct RouteSet {
    entries: Vec<Entry>,
    /// Whether any entry depends on the caller's labels.
    per_caller: bool,
    /// Routes with nothing cut: what every caller gets when none depends on labels.
    shared: Arc<[ServiceRoutes]>,
    shared_digest: Option<Digest256>,
    /// Callers' labels → their routes and digest, so replicas share one copy.
    by_labels: HashMap<BTreeMap<String, String>, CallerRoutes>,
}

/// Whether two routes' ports overlap (absent: every port).
fn overlaps(a: Option<u16>, b: Option<u16>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// A route in force for a service port.
struct Winner<'a> {
    key: &'a ObjectKey,
    route: &'a TrafficRoute,
    service: ObjectKey,
}

/// The accepted TrafficRoutes of `snapshot` whose host is one of its Services, oldest
/// first (ties by namespace/name), split into those in force and those left out because
/// an older one overlaps them on the same service port.
fn resolve<'a>(snapshot: &'a Snapshot, cluster_domain: &str) -> (Vec<Winner<'a>>, Vec<Conflict>) {
    let mut winners: Vec<Winner<'a>> = Vec::new();
    let mut conflicts = Vec::new();
    for (key, route) in snapshot.traffic_routes_oldest_first() {
        let Some(service) = service_for_host(&route.spec.host, &key.namespace, cluster_domain)
            .filter(|svc| snapshot.services.contains_key(svc))
        else {
            continue;
        };
        let port = route.spec.port;
        match winners
            .iter()
            .find(|w| w.service == service && overlaps(w.route.spec.port, port))
        {
            Some(w) => conflicts.push(Conflict {
                loser: key.clone(),
                winner: w.key.clone(),
            }),
            None => winners.push(Winner {
                key,
                route,
                service,
            }),
        }
    }
    (winners, conflicts)
}

/// The TrafficRoutes left out because an older one holds their service port (what
/// their status reports), without compiling any rule.
pub fn conflicts(snapshot: &Snapshot, cluster_domain: &str) -> Vec<Conflict> {
    resolve(snapshot, cluster_domain).1
}

impl RouteSet {
    /// The routes in force in `snapshot` (see [`conflicts`] for those left out).
    pub fn new(snapshot: &Snapshot, cluster_domain: &str) -> Self {
        let (winners, _) = resolve(snapshot, cluster_domain);
        let mut set = Self::default();
        for Winner {
            key,
            route,
            service,
        } in winners
        {
            let rules: Vec<SourcedRule> = route.spec.rules.iter().map(sourced_rule).collect();
            set.per_caller |= rules
                .iter()
                .any(|r| r.sources.iter().any(|s| !s.is_empty()));
            set.entries.push(Entry {
                routes: ServiceRoutes {
                    from: key.to_string(),
                    service: service.name,
                    namespace: service.namespace,
                    port: route.spec.port,
                    rules: rules.iter().map(|r| r.rule.clone()).collect(),
                },
                rules,
            });
        }
        set.shared = set.entries.iter().map(|e| e.routes.clone()).collect();
        set
    }

    /// The routes of a caller with `labels`, and their digest.
    pub fn for_caller(
        &mut self,
        labels: &BTreeMap<String, String>,
    ) -> (Arc<[ServiceRoutes]>, Digest256) {
        if !self.per_caller {
            let digest = *self
                .shared_digest
                .get_or_insert_with(|| Digest256::of(&*self.shared));
            return (self.shared.clone(), digest);
        }
        if let Some(hit) = self.by_labels.get(labels) {
            return hit.clone();
        }
        let routes: Arc<[ServiceRoutes]> = self
            .entries
            .iter()
            .map(|e| ServiceRoutes {
                rules: e.rules.iter().filter_map(|r| cut(r, labels)).collect(),
                ..e.routes.clone()
            })
            .collect();
        let out = (routes.clone(), Digest256::of(&*routes));
        self.by_labels.insert(labels.clone(), out.clone());
        out
    }
}

/// `rule` as a caller with `labels` sees it: the match entries it cannot meet removed,
/// and the rule dropped when it had entries and none is left.
fn cut(r: &SourcedRule, labels: &BTreeMap<String, String>) -> Option<Rule> {
    if r.rule.matches.is_empty() {
        return Some(r.rule.clone());
    }
    let fits =
        |source: &BTreeMap<String, String>| source.iter().all(|(k, v)| labels.get(k) == Some(v));
    let matches: Vec<RequestMatch> = r
        .rule
        .matches
        .iter()
        .zip(&r.sources)
        .filter(|(_, source)| fits(source))
        .map(|(m, _)| m.clone())
        .collect();
    (!matches.is_empty()).then(|| Rule {
        matches,
        ..r.rule.clone()
    })
}

fn sourced_rule(rule: &RouteRule) -> SourcedRule {
    SourcedRule {
        rule: Rule {
            name: rule.name.clone(),
            matches: rule.matches.iter().map(request_match).collect(),
            route: rule
                .route
                .iter()
                .map(|d| WeightedGroup {
                    group: d.group.clone(),
                    weight: d.weight,
                })
                .collect(),
            // Validation parsed these durations already; one that does not parse is
            // left out rather than guessed.
            timeout_ms: rule.timeout.as_ref().and_then(millis),
            fault: rule.fault.as_ref().map(|f| Fault {
                delay: f.delay.as_ref().and_then(|d| {
                    Some(DelayFault {
                        percent: d.percent,
                        fixed_ms: millis(&d.fixed)?,
                    })
                }),
                abort: f.abort.as_ref().map(|a| AbortFault {
                    percent: a.percent,
                    status: a.status,
                }),
            }),
            mirror: rule.mirror.as_ref().map(|m| Mirror {
                group: m.group.clone(),
                percent: m.percent,
            }),
            retries: rule.retries.as_ref().map(|r| Retries {
                attempts: r.attempts,
                per_try_timeout_ms: r.per_try_timeout.as_ref().and_then(millis),
                on: r.on.iter().map(|on| retry_on(*on)).collect(),
            }),
            rate_limit: rule.rate_limit.as_ref().map(|l| RateLimit {
                requests_per_second: l.requests_per_second,
                burst: l.burst,
            }),
        },
        sources: rule
            .matches
            .iter()
            .map(|m| m.source_labels.clone())
            .collect(),
    }
}

fn retry_on(on: CrdRetryOn) -> RetryOn {
    match on {
        CrdRetryOn::ConnectFailure => RetryOn::ConnectFailure,
        CrdRetryOn::RefusedStream => RetryOn::RefusedStream,
        CrdRetryOn::Reset => RetryOn::Reset,
        CrdRetryOn::GatewayError => RetryOn::GatewayError,
        CrdRetryOn::ServerError => RetryOn::ServerError,
    }
}

/// A duration in whole milliseconds (at least 1, so a sub-millisecond value is not 0).
pub(super) fn millis(d: &braid_crds::common::Duration) -> Option<u64> {
    let d = d.parse().ok()?;
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}

fn request_match(m: &CrdRequestMatch) -> RequestMatch {
    RequestMatch {
        headers: m.headers.iter().filter_map(header_match).collect(),
        path: m.path.as_ref().and_then(path_match),
        method: m.method.and_then(method_name),
    }
}

/// A method as the proxy's request matches name it (`GET`).
pub(super) fn method_name(method: braid_crds::traffic_route::HttpMethod) -> Option<String> {
    serde_json::to_value(method)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// Validation guarantees exactly one of the four; a header with none cannot be built.
pub(super) fn header_match(h: &CrdHeaderMatch) -> Option<HeaderMatch> {
    let value = if let Some(v) = &h.exact {
        ValueMatch::Exact(v.clone())
    } else if let Some(v) = &h.prefix {
        ValueMatch::Prefix(v.clone())
    } else if let Some(v) = &h.regex {
        ValueMatch::Regex(v.clone())
    } else {
        ValueMatch::Present(h.present?)
    };
    Some(HeaderMatch {
        name: h.name.clone(),
        value,
    })
}

pub(super) fn path_match(p: &CrdPathMatch) -> Option<PathMatch> {
    if let Some(v) = &p.exact {
        Some(PathMatch::Exact(v.clone()))
    } else if let Some(v) = &p.prefix {
        Some(PathMatch::Prefix(v.clone()))
    } else {
        p.regex.clone().map(PathMatch::Regex)
    }
}
