//! `to`: how a request to a service port is sent out — which rule of its TrafficRoute
//! decides (and why the rules before it do not), the groups and endpoints it may go to,
//! and what the rule does besides. Worked out with what [`OutboundTarget::select`] uses
//! (the same rules, matched by the same [`CompiledRule::matches`]), without its rolls.

use std::time::Instant;

use braid_api::explain::{EndpointView, GroupShare, Outbound, RuleVerdict};

use super::question::ServicePortName;
use super::{ExplainError, policy, serde_name};
use crate::balance::Endpoint;
use crate::config::{Protocol, Service};
use crate::connection::served_as;
use crate::routing::{CompiledRule, RequestHead, RouteError};
use crate::tables::{OutboundTarget, PickError, Tables};

/// At most this many services are named when the one asked for is not there (a proxy
/// may hold thousands).
const LISTED: usize = 20;

/// How `req` is sent to the service port `to`, with ejections judged at `now`.
pub(super) fn explain(
    tables: &Tables,
    to: &ServicePortName,
    req: &RequestHead<'_>,
    now: Instant,
) -> Result<Outbound, ExplainError> {
    let namespace = to
        .namespace
        .as_deref()
        .unwrap_or(&tables.config.node.namespace);
    let svc = service(tables, &to.name, namespace)?;
    let port = service_port(svc, to.port)?;
    let target = tables
        .target(&svc.name, &svc.namespace, port)
        .ok_or_else(|| {
            ExplainError::param(
                "to",
                format!(
                    "{} port {port} has no target in the tables in force (they are being replaced: ask again)",
                    name_of(svc)
                ),
            )
        })?;
    let ejecting = target.outlier().is_some();
    let view = |endpoints: &[Endpoint]| -> Vec<EndpointView> {
        endpoints
            .iter()
            .map(|e| EndpointView {
                address: e.addr.to_string(),
                mtls: e.tls.as_ref().map(|id| id.0.clone()),
                ejected: ejecting && e.health.is_ejected(now),
            })
            .collect()
    };
    let mut out = Outbound {
        target: target.label.to_string(),
        protocol: serde_name(&target.protocol),
        ..Default::default()
    };
    let no_endpoints = || PickError::NoEndpoints(target.label.clone()).to_string();
    // Opaque TCP is not routed by request: round robin over every endpoint, no rules.
    let opaque = tables.config.detection.is_opaque(port);
    let routes = match served_as(opaque, target.protocol) {
        Protocol::Tcp => None,
        _ => target.routes(),
    };
    let Some(routes) = routes else {
        out.endpoints = view(&target.endpoints);
        out.error = target.endpoints.is_empty().then(no_endpoints);
        return Ok(out);
    };
    out.route = Some(routes.from.to_string());
    let mut selected = None;
    for rule in routes.rules() {
        // `matches` decides, as in `RouteTable::select`; the words only explain.
        let matched = rule.matches(req);
        let why = match matched {
            true => rule.why_matches(req),
            false => rule.mismatch(req),
        };
        out.rules.push(RuleVerdict {
            name: rule.name.to_string(),
            matched,
            why: why.unwrap_or_default(),
        });
        if matched {
            selected = Some(rule);
            break;
        }
    }
    let Some(rule) = selected else {
        out.error =
            Some(PickError::Route(RouteError::NoRuleMatches(routes.from.clone())).to_string());
        return Ok(out);
    };
    out.rule = Some(rule.name.to_string());
    out.policy = policy::view(rule, target);
    match rule.shares() {
        None => {
            out.endpoints = view(&target.endpoints);
            out.error = target.endpoints.is_empty().then(no_endpoints);
        }
        Some(shares) => {
            let (groups, error) = groups(target, rule, &shares, view);
            out.groups = groups;
            out.error = error;
        }
    }
    Ok(out)
}

/// The groups of `rule` with their `shares`, and the error of the requests that go to
/// a group without endpoints, if any do.
fn groups(
    target: &OutboundTarget,
    rule: &CompiledRule,
    shares: &[(usize, f64)],
    view: impl Fn(&[Endpoint]) -> Vec<EndpointView>,
) -> (Vec<GroupShare>, Option<String>) {
    let mut out = Vec::with_capacity(shares.len());
    let mut empty = Vec::new();
    for &(i, percent) in shares {
        let Some((name, endpoints)) = target.group(i) else {
            // Compiled from the same service: cannot happen; said rather than hidden.
            empty.push((format!("#{i} (not in the service)"), percent));
            continue;
        };
        if endpoints.is_empty() {
            empty.push((name.to_string(), percent));
        }
        out.push(GroupShare {
            name: name.to_string(),
            percent,
            endpoints: view(endpoints),
        });
    }
    let failing: f64 = empty.iter().map(|(_, p)| p).sum();
    let error = match empty.as_slice() {
        [] => None,
        _ => {
            let names: Vec<&str> = empty.iter().map(|(n, _)| n.as_str()).collect();
            let what = RouteError::EmptyGroup(names.join(", ").into()).to_string();
            Some(match empty.len() == shares.len() {
                true => what,
                false => format!(
                    "{} of rule {}'s requests fail: {what}",
                    percent_words(failing),
                    rule.name
                ),
            })
        }
    };
    (out, error)
}

/// `10%`, `33.3%`.
fn percent_words(p: f64) -> String {
    format!("{}%", (p * 10.0).round() / 10.0)
}

/// `name.namespace`, or `name` without a namespace.
fn name_of(svc: &Service) -> String {
    match svc.namespace.is_empty() {
        true => svc.name.clone(),
        false => format!("{}.{}", svc.name, svc.namespace),
    }
}

/// The service `name` in `namespace`, or an error naming what the config holds.
fn service<'a>(
    tables: &'a Tables,
    name: &str,
    namespace: &str,
) -> Result<&'a Service, ExplainError> {
    let services = &tables.config.services;
    if let Some(svc) = services
        .iter()
        .find(|s| s.name == name && s.namespace == namespace)
    {
        return Ok(svc);
    }
    // The same name elsewhere is the likeliest mistake: name those first.
    let elsewhere: Vec<String> = services
        .iter()
        .filter(|s| s.name == name)
        .map(name_of)
        .collect();
    let holds = match elsewhere.is_empty() {
        false => format!("it holds {}", list(elsewhere)),
        true if services.is_empty() => "it holds no services".to_owned(),
        true => {
            let mut all: Vec<String> = services.iter().map(name_of).collect();
            all.sort();
            format!("it holds: {}", list(all))
        }
    };
    Err(ExplainError::param(
        "to",
        format!("no service {name:?} in namespace {namespace:?} in this proxy's config ({holds})"),
    ))
}

/// The first [`LISTED`] of `names`, and how many more there are.
fn list(mut names: Vec<String>) -> String {
    let more = names.len().saturating_sub(LISTED);
    names.truncate(LISTED);
    let mut out = names.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

/// The port asked for, or the service's only one.
fn service_port(svc: &Service, asked: Option<u16>) -> Result<u16, ExplainError> {
    let ports: Vec<String> = svc.ports.iter().map(|p| p.port.to_string()).collect();
    let name = name_of(svc);
    match (asked, svc.ports.as_slice()) {
        (_, []) => Err(ExplainError::param(
            "to",
            format!("service {name} has no ports in this proxy's config"),
        )),
        (Some(p), ports_) if ports_.iter().any(|sp| sp.port == p) => Ok(p),
        (Some(p), _) => Err(ExplainError::param(
            "to",
            format!(
                "service {name} has no port {p} (it has {}): name one, e.g. to={name}:{}",
                ports.join(", "),
                ports.first().map_or("80", String::as_str)
            ),
        )),
        (None, [only]) => Ok(only.port),
        (None, _) => Err(ExplainError::param(
            "to",
            format!(
                "service {name} has ports {}: name one, e.g. to={name}:{}",
                ports.join(", "),
                ports.first().map_or("80", String::as_str)
            ),
        )),
    }
}
