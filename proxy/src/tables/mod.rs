//! Lookup tables compiled from a `ProxyConfig`: built completely, checked, then swapped
//! in as one `Arc`, so a connection sees either the old config or the new, never a mix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

mod store;

pub use store::{ConfigError, FileSource, TableStore, load_file, parse_delta, parse_json};

use crate::balance::outlier::OutlierPolicy;
use crate::balance::{self, Endpoint, Loads, Picked, Upstream};
use crate::config::routes::ServiceRoutes;
use crate::config::{InvalidField, ListenerTarget, Protocol, ProxyConfig, Service, Side};
use crate::reports::TargetTraffic;
use crate::routing::{
    Carry, CompiledRule, RequestHead, RouteError, RouteTable, RulePolicy, RuleStates,
};
use crate::tls::{RolloutBucket, TlsContext, originate};

/// Where an outbound connection or request to one service port goes.
#[derive(Debug)]
pub struct OutboundTarget {
    /// `name.namespace:port` (or `ip:port` for a fixed address), for logs and metrics.
    pub label: Arc<str>,
    /// The port's protocol.
    pub protocol: Protocol,
    /// Every endpoint (ip:targetPort), over all groups.
    pub endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    /// The service's groups with their endpoints on this port, in config order.
    groups: Vec<GroupTarget>,
    /// The routing rules of this port, when a TrafficRoute has any.
    routes: Option<RouteTable>,
    /// When its endpoints are ejected, if ever.
    outlier: Option<OutlierPolicy>,
    /// Requests to it since the last report to the operator (carried over config
    /// versions).
    pub traffic: Arc<TargetTraffic>,
}

/// A group's endpoints on one service port.
#[derive(Debug)]
struct GroupTarget {
    name: Arc<str>,
    endpoints: Vec<Endpoint>,
}

/// Why a request has nowhere to go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The target has no endpoint at all.
    #[error("no endpoints for {0}")]
    NoEndpoints(Arc<str>),
    /// The rules sent it nowhere.
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// How one request is handled: the rule it matched (if the port has rules) and the
/// group chosen for it. Endpoints are picked from it, once per attempt.
#[derive(Debug, Clone, Copy)]
pub struct Selected<'a> {
    target: &'a OutboundTarget,
    /// The rule that matched.
    pub rule: Option<&'a CompiledRule>,
    group: Option<&'a GroupTarget>,
}

impl<'a> Selected<'a> {
    /// The rule's deadline, faults and retries (none without rules).
    pub fn policy(&self) -> RulePolicy {
        self.rule.map(|r| r.policy).unwrap_or_default()
    }

    /// The chosen group's name, if the rule chose one.
    pub fn group_name(&self) -> Option<&'a Arc<str>> {
        self.group.map(|g| &g.name)
    }

    /// The endpoints requests may go to: the chosen group's, or without a group, the
    /// service's.
    pub fn endpoints(&self) -> &'a [Endpoint] {
        match self.group {
            Some(g) => &g.endpoints,
            None => &self.target.endpoints,
        }
    }

    /// The service's outlier detection, if it has one.
    pub fn outlier(&self) -> Option<&'a OutlierPolicy> {
        self.target.outlier.as_ref()
    }

    /// The endpoint for an attempt: the less loaded of two of [`Selected::endpoints`]
    /// that are not ejected, avoiding `not` (the endpoint that just failed) when there is
    /// another.
    pub fn endpoint(&self, not: Option<SocketAddr>) -> Result<Picked<'a>, PickError> {
        let endpoints = self.endpoints();
        let ejecting = self.outlier().is_some();
        let picked = balance::pick(endpoints, ejecting).ok_or_else(|| match self.group {
            Some(g) => PickError::Route(RouteError::EmptyGroup(g.name.clone())),
            None => PickError::NoEndpoints(self.target.label.clone()),
        })?;
        match not {
            Some(addr) if picked.endpoint.addr == addr => {
                let now = std::time::Instant::now();
                let others: Vec<&Endpoint> = endpoints
                    .iter()
                    .filter(|e| e.addr != addr && !(ejecting && e.health.check(now).0))
                    .collect();
                Ok(match others.get(fastrand::usize(..others.len().max(1))) {
                    Some(other) => Picked {
                        endpoint: other,
                        ..picked
                    },
                    None => picked,
                })
            }
            _ => Ok(picked),
        }
    }

    /// Where this request's copy goes, if the rule mirrors and the request draws one;
    /// `None` also when the mirror group has no endpoint.
    pub fn mirror(&self) -> Option<(&'a Arc<str>, &'a Endpoint)> {
        let mirror = self.rule?.mirror.filter(|m| m.roll())?;
        let group = self.target.groups.get(mirror.group)?;
        balance::pick(&group.endpoints, self.outlier().is_some()).map(|p| (&group.name, p.endpoint))
    }
}

/// The next of `endpoints` after `next`.
fn round_robin<'a>(endpoints: &'a [Endpoint], next: &AtomicUsize) -> Option<&'a Endpoint> {
    if endpoints.is_empty() {
        return None;
    }
    let i = next.fetch_add(1, Ordering::Relaxed);
    endpoints.get(i % endpoints.len())
}

impl OutboundTarget {
    fn new(
        service: &str,
        namespace: &str,
        port: u16,
        protocol: Protocol,
        endpoints: Vec<Endpoint>,
    ) -> Self {
        let label = if namespace.is_empty() {
            format!("{service}:{port}")
        } else {
            format!("{service}.{namespace}:{port}")
        };
        Self {
            label: label.into(),
            protocol,
            endpoints,
            next: AtomicUsize::new(0),
            groups: Vec::new(),
            routes: None,
            outlier: None,
            traffic: Arc::default(),
        }
    }

    /// A target that is one fixed address (the app on the inbound side, a passthrough
    /// destination, an explicit listener's address).
    pub fn address(addr: SocketAddr, protocol: Protocol) -> Self {
        Self {
            label: addr.to_string().into(),
            protocol,
            endpoints: vec![Endpoint {
                addr,
                load: Default::default(),
                health: Default::default(),
                tls: None,
            }],
            next: AtomicUsize::new(0),
            groups: Vec::new(),
            routes: None,
            outlier: None,
            traffic: Arc::default(),
        }
    }

    /// The next endpoint, round robin over every group; `None` when the service has
    /// none. For connections (TCP), which rules do not apply to.
    pub fn pick(&self) -> Option<Upstream> {
        round_robin(&self.endpoints, &self.next).map(Endpoint::upstream)
    }

    /// How the request with head `req` is handled: through the port's rules when it has
    /// any (the first matching rule, a group by weight), else over all endpoints.
    pub fn select(&self, req: &RequestHead<'_>) -> Result<Selected<'_>, PickError> {
        let Some(routes) = &self.routes else {
            return Ok(Selected {
                target: self,
                rule: None,
                group: None,
            });
        };
        let rule = routes.select(req)?;
        let group = match rule.choose_group() {
            None => None,
            Some(i) => Some(
                self.groups
                    .get(i)
                    .ok_or_else(|| PickError::NoEndpoints(self.label.clone()))?,
            ),
        };
        Ok(Selected {
            target: self,
            rule: Some(rule),
            group,
        })
    }

    /// The compiled rules, when the port has any.
    pub fn routes(&self) -> Option<&RouteTable> {
        self.routes.as_ref()
    }

    /// The service's group `i` (as rules number them: config order), its name and its
    /// endpoints on this port.
    pub fn group(&self, i: usize) -> Option<(&Arc<str>, &[Endpoint])> {
        self.groups
            .get(i)
            .map(|g| (&g.name, g.endpoints.as_slice()))
    }

    /// The service's outlier detection, if it has one (ejections count only then).
    pub fn outlier(&self) -> Option<&OutlierPolicy> {
        self.outlier.as_ref()
    }
}

/// The routes of each service, by name and namespace, with their index in `routes`.
#[derive(Default)]
struct RoutesOf<'a>(HashMap<(&'a str, &'a str), Vec<(usize, &'a ServiceRoutes)>>);

impl<'a> RoutesOf<'a> {
    fn index(routes: &'a [ServiceRoutes]) -> Self {
        let mut by: HashMap<_, Vec<_>> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            by.entry((r.service.as_str(), r.namespace.as_str()))
                .or_default()
                .push((i, r));
        }
        Self(by)
    }

    /// The rules for port `port` of `svc`: a port-specific entry wins over an
    /// all-ports one; two of the same kind contradict each other.
    fn port(
        &self,
        svc: &Service,
        port: u16,
    ) -> Result<Option<(usize, &'a ServiceRoutes)>, ConfigError> {
        let mut found: Option<(usize, &ServiceRoutes)> = None;
        let routes = self.0.get(&(svc.name.as_str(), svc.namespace.as_str()));
        for &(i, r) in routes.into_iter().flatten() {
            match (r.port, found) {
                (Some(p), _) if p != port => {}
                (_, None) => found = Some((i, r)),
                (p, Some((j, other))) if p.is_some() == other.port.is_some() => {
                    return Err(InvalidField::new(
                        format!("routes[{i}]"),
                        format!(
                            "{} and routes[{j}] ({}) both route {}.{} port {port}; keep one",
                            r.from, other.from, svc.name, svc.namespace
                        ),
                    )
                    .into());
                }
                (Some(_), Some(_)) => found = Some((i, r)),
                (None, Some(_)) => {}
            }
        }
        Ok(found)
    }
}

/// A service port's target, by service name, namespace and port.
type TargetKey = (String, String, u16);

/// The rules of each of a service's ports (in port order), with their index in `routes`.
type PortRoutes<'a> = [Option<(usize, &'a ServiceRoutes)>];

/// The tables a new version is built after, looked up by service.
struct Earlier<'a> {
    tables: &'a Tables,
    services: HashMap<(&'a str, &'a str), &'a Service>,
    routes: RoutesOf<'a>,
}

impl<'a> Earlier<'a> {
    fn of(tables: &'a Tables) -> Self {
        let services = tables
            .config
            .services
            .iter()
            .map(|s| ((s.name.as_str(), s.namespace.as_str()), s))
            .collect();
        Self {
            tables,
            services,
            routes: RoutesOf::index(&tables.config.routes),
        }
    }

    /// `svc`'s targets as they were, one per port, when neither the service nor the
    /// rules of any of its ports changed.
    fn kept(&self, svc: &Service, routes: &PortRoutes<'_>) -> Option<Vec<Arc<OutboundTarget>>> {
        let was = *self
            .services
            .get(&(svc.name.as_str(), svc.namespace.as_str()))?;
        if was != svc {
            return None;
        }
        let mut kept = Vec::with_capacity(svc.ports.len());
        for (port, now) in svc.ports.iter().zip(routes) {
            let then = self.routes.port(was, port.port).ok()?;
            if then.map(|(_, r)| r) != now.map(|(_, r)| r) {
                return None;
            }
            let key = (svc.name.clone(), svc.namespace.clone(), port.port);
            kept.push(self.tables.targets.get(&key)?.clone());
        }
        Some(kept)
    }
}

/// The targets of service `svc` (`services[s]`), one per port, its port rules `routes`
/// compiled, endpoint loads and rule states taken over from the previous version.
fn service_targets(
    svc: &Service,
    s: usize,
    routes: &PortRoutes<'_>,
    caller: RolloutBucket,
    loads: &mut Loads,
    carry: &mut Carry<'_>,
    counted: &HashMap<&str, &Arc<TargetTraffic>>,
) -> Result<Vec<Arc<OutboundTarget>>, ConfigError> {
    let outlier = match &svc.outlier_detection {
        Some(o) => Some(OutlierPolicy::compile(
            o,
            &format!("services[{s}].outlierDetection"),
        )?),
        None => None,
    };
    let mut targets = Vec::with_capacity(svc.ports.len());
    for (port, rules) in svc.ports.iter().zip(routes) {
        // Groups may overlap (a pod in two groups): count each endpoint once.
        let mut seen = std::collections::HashSet::new();
        let mut endpoint = |e: &crate::config::Endpoint| {
            let mut ep = loads.endpoint(SocketAddr::new(e.address, port.target()));
            ep.tls = originate(e, port.target(), caller);
            ep
        };
        let endpoints: Vec<Endpoint> = svc
            .groups
            .iter()
            .flat_map(|g| &g.endpoints)
            .filter(|e| seen.insert(e.address))
            .map(&mut endpoint)
            .collect();
        let mut target = OutboundTarget::new(
            &svc.name,
            &svc.namespace,
            port.port,
            port.protocol,
            endpoints,
        );
        target.outlier = outlier.clone();
        if let Some(traffic) = counted.get(&*target.label) {
            target.traffic = Arc::clone(traffic);
        }
        target.groups = svc
            .groups
            .iter()
            .map(|g| GroupTarget {
                name: g.name.as_str().into(),
                endpoints: g.endpoints.iter().map(&mut endpoint).collect(),
            })
            .collect();
        if let Some((i, rules)) = rules {
            let names: Vec<&str> = svc.groups.iter().map(|g| g.name.as_str()).collect();
            target.routes = Some(RouteTable::compile(
                rules,
                port.port,
                &names,
                carry,
                &format!("routes[{i}]"),
            )?);
        }
        targets.push(Arc::new(target));
    }
    Ok(targets)
}

/// An explicit listener, resolved.
#[derive(Clone, Debug)]
pub struct ListenerPlan {
    /// Its name.
    pub name: String,
    /// Where it accepts.
    pub bind: SocketAddr,
    /// The protocol spoken on it.
    pub protocol: Protocol,
    /// Where its traffic goes.
    pub target: Arc<OutboundTarget>,
    /// Which side of the mesh it serves.
    pub side: Side,
}

/// Everything a connection needs to be routed, compiled from one config version.
#[derive(Debug)]
pub struct Tables {
    /// The config these tables were built from.
    pub config: Arc<ProxyConfig>,
    outbound: HashMap<SocketAddr, Arc<OutboundTarget>>,
    inbound: HashMap<u16, Arc<OutboundTarget>>,
    /// Explicit listeners.
    pub listeners: Vec<ListenerPlan>,
    /// Every endpoint with the kind of connection (plaintext or mTLS) this config uses to
    /// it: pooled connections of any other kind take no new requests.
    pub upstreams: std::collections::HashSet<Upstream>,
    /// Every service port's target.
    targets: HashMap<TargetKey, Arc<OutboundTarget>>,
    /// Whether this config accepts or originates mTLS anywhere (so the proxy is not ready
    /// without its certificate).
    pub needs_certificate: bool,
    /// The load of every service endpoint, handed on to the next version.
    loads: Loads,
    /// The rules' rate-limit buckets and retry budgets, handed on likewise.
    rule_states: RuleStates,
    /// Who may call the app, per port.
    pub access: crate::authz::Authorizer,
}

impl Tables {
    /// Compiles `config`, refusing contradictions (one VIP:port claimed by two services, a
    /// listener naming a service that does not exist) with an error that names them.
    pub fn build(config: ProxyConfig) -> Result<Self, ConfigError> {
        Self::build_after(config, None)
    }

    /// Every endpoint's latency estimate and outlier record, for a successor proxy.
    pub fn carried_balancing(
        &self,
        now: std::time::Instant,
    ) -> Vec<crate::balance::carry::Carried> {
        self.loads.carried(now)
    }

    /// Takes over what a predecessor proxy knew of the endpoints these tables have.
    pub fn resume_balancing(
        &self,
        carried: &[crate::balance::carry::Carried],
        now: std::time::Instant,
    ) {
        self.loads.resume(carried, now);
    }

    /// As [`Tables::build`], keeping what `previous` measured: endpoint loads and
    /// ejections, rule buckets and budgets, traffic counts. A service whose config and
    /// routes are unchanged keeps its targets as they were, so a delta that changes one
    /// service rebuilds one service, not the thousands a large mesh's proxy may hold.
    pub fn build_after(
        config: ProxyConfig,
        previous: Option<&Tables>,
    ) -> Result<Self, ConfigError> {
        let mut loads = previous
            .map(|p| Loads::carried_from(&p.loads))
            .unwrap_or_default();
        let mut carry = Carry::after(previous.map(|p| &p.rule_states));
        if !config.trust_bundle.is_empty() {
            TlsContext::parse_bundle(&config.trust_bundle)
                .map_err(|e| InvalidField::new("trustBundle", e.to_string()))?;
        }
        let caller = RolloutBucket::of(&config.node);
        // Endpoints' TLS depends on the caller's rollout bucket: another bucket, every
        // target anew.
        let earlier = previous
            .filter(|p| RolloutBucket::of(&p.config.node) == caller)
            .map(Earlier::of);
        let counted: HashMap<&str, &Arc<TargetTraffic>> = previous
            .map(|p| {
                p.targets
                    .values()
                    .map(|t| (&*t.label, &t.traffic))
                    .collect()
            })
            .unwrap_or_default();
        let mut outbound = HashMap::new();
        let mut by_service: HashMap<TargetKey, Arc<OutboundTarget>> = HashMap::new();
        let mut kept_rules: std::collections::HashSet<(&str, u16)> = Default::default();
        let mut rebuilt = 0usize;
        let routes_of = RoutesOf::index(&config.routes);
        for (s, svc) in config.services.iter().enumerate() {
            let mut routes = Vec::with_capacity(svc.ports.len());
            for port in &svc.ports {
                routes.push(routes_of.port(svc, port.port)?);
            }
            let targets = match earlier.as_ref().and_then(|e| e.kept(svc, &routes)) {
                Some(kept) => {
                    for (port, r) in svc.ports.iter().zip(&routes) {
                        if let Some((_, r)) = r {
                            kept_rules.insert((&r.from, port.port));
                        }
                    }
                    kept
                }
                None => {
                    rebuilt += 1;
                    service_targets(svc, s, &routes, caller, &mut loads, &mut carry, &counted)?
                }
            };
            for (port, target) in svc.ports.iter().zip(targets) {
                for vip in &svc.vips {
                    let key = SocketAddr::new(*vip, port.port);
                    if let Some(other) = outbound.insert(key, target.clone()) {
                        return Err(InvalidField::new(
                            "services",
                            format!(
                                "{key} is claimed by both {} and {}",
                                other.label, target.label
                            ),
                        )
                        .into());
                    }
                }
                by_service.insert((svc.name.clone(), svc.namespace.clone(), port.port), target);
            }
        }
        tracing::debug!(
            rebuilt,
            kept = config.services.len() - rebuilt,
            "service targets built"
        );
        let services: std::collections::HashSet<(&str, &str)> = config
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.namespace.as_str()))
            .collect();
        if let Some((i, r)) = config
            .routes
            .iter()
            .enumerate()
            .find(|(_, r)| !services.contains(&(r.service.as_str(), r.namespace.as_str())))
        {
            return Err(InvalidField::new(
                format!("routes[{i}].service"),
                format!(
                    "no service {:?} in namespace {:?} in services",
                    r.service, r.namespace
                ),
            )
            .into());
        }
        if let Some(o) = &config.inbound.overload_protection {
            check_overload(o)?;
        }
        let access = crate::authz::Authorizer::build(
            &config.inbound.access_policies,
            previous.map(|p| &p.access),
        )?;
        let inbound = config
            .inbound
            .ports
            .iter()
            .map(|p| {
                (
                    p.port,
                    Arc::new(OutboundTarget::address(app_addr(p.port), p.protocol)),
                )
            })
            .collect();
        let mut listeners = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            if let Some(other) = config.listeners[..i]
                .iter()
                .find(|o| o.name == l.name || o.bind == l.bind)
            {
                return Err(InvalidField::new(
                    format!("listeners[{i}]"),
                    format!(
                        "{:?} on {} clashes with listener {:?} on {}: give each listener its own name and address",
                        l.name, l.bind, other.name, other.bind
                    ),
                )
                .into());
            }
            let target = match &l.target {
                ListenerTarget::Address(addr) => {
                    Arc::new(OutboundTarget::address(*addr, l.protocol))
                }
                ListenerTarget::Service {
                    name,
                    namespace,
                    port,
                } => by_service
                    .iter()
                    .find(|((n, ns, p), _)| {
                        n == name && p == port && (namespace.is_empty() || ns == namespace)
                    })
                    .map(|(_, t)| t.clone())
                    .ok_or_else(|| {
                        InvalidField::new(
                            format!("listeners[{i}].target"),
                            format!("no service {name:?} with port {port} in services"),
                        )
                    })?,
            };
            listeners.push(ListenerPlan {
                name: l.name.clone(),
                bind: l.bind,
                protocol: l.protocol,
                target,
                side: l.side,
            });
        }
        let upstreams: std::collections::HashSet<Upstream> = by_service
            .values()
            .chain(listeners.iter().map(|l| &l.target))
            .flat_map(|t| t.endpoints.iter().map(Endpoint::upstream))
            .collect();
        let live: std::collections::HashSet<SocketAddr> =
            upstreams.iter().map(|u| u.addr).collect();
        loads.retain(|addr| live.contains(addr));
        let needs_certificate = upstreams.iter().any(|u| u.tls.is_some())
            || config
                .inbound
                .tls
                .as_ref()
                .is_some_and(|t| t.needs_certificate());
        carry.keep(|key| kept_rules.contains(&(&*key.from, key.port)));
        let rule_states = carry.finish();
        drop(services);
        Ok(Self {
            config: Arc::new(config),
            outbound,
            inbound,
            listeners,
            needs_certificate,
            upstreams,
            targets: by_service,
            loads,
            rule_states,
            access,
        })
    }

    /// What inbound `port` accepts now.
    pub fn inbound_tls_mode(&self, port: u16) -> crate::config::tls::TlsMode {
        self.config
            .inbound
            .tls
            .as_ref()
            .map_or(crate::config::tls::TlsMode::Disabled, |t| t.mode_for(port))
    }

    /// The target of port `port` of service `name` in `namespace`, if the config has it.
    pub fn target(&self, name: &str, namespace: &str, port: u16) -> Option<&Arc<OutboundTarget>> {
        self.targets
            .get(&(name.to_owned(), namespace.to_owned(), port))
    }

    /// The protocol declared for inbound `port` (`detect` when the config does not
    /// declare it): that of [`Tables::inbound_target`], without making a target.
    pub fn inbound_protocol(&self, port: u16) -> Protocol {
        self.inbound
            .get(&port)
            .map_or(Protocol::Detect, |t| t.protocol)
    }

    /// Every service port's target.
    pub fn targets(&self) -> impl Iterator<Item = &Arc<OutboundTarget>> {
        self.targets.values()
    }

    /// The target of an outbound connection to `dst` (a service VIP and port), if known.
    pub fn outbound(&self, dst: SocketAddr) -> Option<&Arc<OutboundTarget>> {
        self.outbound.get(&dst)
    }

    /// Where inbound connections to `port` go: the app on loopback. Declared ports are
    /// built with the tables; others are made on the spot, with detection.
    pub fn inbound_target(&self, port: u16) -> Arc<OutboundTarget> {
        self.inbound.get(&port).cloned().unwrap_or_else(|| {
            let mut target = OutboundTarget::address(app_addr(port), Protocol::Detect);
            target.label = undeclared_label(port);
            Arc::new(target)
        })
    }
}

/// Refuses overload protection settings the controller cannot work with.
fn check_overload(o: &crate::config::overload::OverloadProtection) -> Result<(), ConfigError> {
    let at = "inbound.overloadProtection";
    let bad = |field: &str, fix: &str| Err(InvalidField::new(format!("{at}.{field}"), fix).into());
    if !(o.target.is_finite() && o.target > 0.0) {
        return bad("target", "give a setpoint above 0");
    }
    if o.min_limit == 0 {
        return bad("minLimit", "give at least 1");
    }
    if o.max_limit.is_some_and(|max| max < o.min_limit) {
        return bad("maxLimit", "give at least minLimit");
    }
    if o.sample_period_ms == 0 {
        return bad("samplePeriodMs", "give a period above 0");
    }
    Ok(())
}

/// The app, as the inbound side reaches it: loopback, on the port the caller addressed.
/// Undeclared inbound ports that get a metrics label of their own; the rest share one.
const UNDECLARED_LABELS: usize = 32;

/// The metrics label of an inbound port the config does not declare: `127.0.0.1:<port>`
/// for the first [`UNDECLARED_LABELS`] such ports the proxy sees, then
/// `127.0.0.1:undeclared` for every other. Every captured port reaches the proxy, so
/// without a bound a port scan would add series for each port it tries.
fn undeclared_label(port: u16) -> Arc<str> {
    static SEEN: std::sync::Mutex<Vec<(u16, Arc<str>)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, label)) = seen.iter().find(|(p, _)| *p == port) {
        return label.clone();
    }
    if seen.len() >= UNDECLARED_LABELS {
        return Arc::from("127.0.0.1:undeclared");
    }
    let label: Arc<str> = Arc::from(app_addr(port).to_string());
    seen.push((port, label.clone()));
    label
}

fn app_addr(port: u16) -> SocketAddr {
    SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Endpoint, EndpointGroup, Listener, Service, ServicePort};

    #[test]
    fn undeclared_inbound_ports_share_a_label_past_a_bound() {
        let labels: Vec<Arc<str>> = (61000..61100).map(undeclared_label).collect();
        assert!(labels.iter().any(|l| &**l == "127.0.0.1:undeclared"));
        let own = labels
            .iter()
            .filter(|l| &***l != "127.0.0.1:undeclared")
            .count();
        assert!(own <= UNDECLARED_LABELS, "{own}");
        for (port, label) in (61000..61100).zip(&labels) {
            assert!(
                &**label == "127.0.0.1:undeclared" || **label == *format!("127.0.0.1:{port}"),
                "{label}"
            );
            // A port keeps its label.
            assert_eq!(undeclared_label(port), *label);
        }
    }

    fn service(name: &str, vip: &str, ips: &[&str]) -> Service {
        Service {
            name: name.into(),
            namespace: "shop".into(),
            vips: vec![vip.parse().unwrap()],
            ports: vec![ServicePort {
                port: 80,
                target_port: Some(8080),
                protocol: Protocol::Http,
            }],
            groups: vec![EndpointGroup {
                name: "default".into(),
                endpoints: ips
                    .iter()
                    .map(|ip| Endpoint {
                        address: ip.parse().unwrap(),
                        labels: Default::default(),
                        identity: None,
                        meshed: true,
                        tls: None,
                    })
                    .collect(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn vips_map_to_endpoints_round_robin() {
        let cfg = ProxyConfig {
            services: vec![service("payments", "10.96.0.10", &["10.0.0.1", "10.0.0.2"])].into(),
            ..Default::default()
        };
        let t = Tables::build(cfg).unwrap();
        let target = t.outbound("10.96.0.10:80".parse().unwrap()).unwrap();
        assert_eq!(target.protocol, Protocol::Http);
        let picks: Vec<_> = (0..4)
            .map(|_| target.pick().unwrap().addr.to_string())
            .collect();
        assert_eq!(
            picks,
            [
                "10.0.0.1:8080",
                "10.0.0.2:8080",
                "10.0.0.1:8080",
                "10.0.0.2:8080"
            ]
        );
        assert!(t.outbound("10.96.0.10:81".parse().unwrap()).is_none());
    }

    /// The rate-limit bucket of the first rule `target` selects for a plain GET.
    fn bucket(target: &OutboundTarget) -> Arc<crate::routing::TokenBucket> {
        let headers = http::HeaderMap::new();
        let head = RequestHead {
            method: &http::Method::GET,
            path: "/",
            headers: &headers,
        };
        let selected = target.select(&head).unwrap();
        selected.rule.unwrap().rate_limit.clone().unwrap()
    }

    #[test]
    fn a_new_version_rebuilds_only_the_services_that_changed() {
        let limited = |rules: serde_json::Value| -> ServiceRoutes {
            serde_json::from_value(serde_json::json!({
                "from": "shop/payments", "service": "payments", "namespace": "shop",
                "rules": rules,
            }))
            .unwrap()
        };
        let one_rule = serde_json::json!([
            {"name": "all", "rateLimit": {"requestsPerSecond": 5}}
        ]);
        let payments = "10.96.0.10:80".parse().unwrap();
        let orders = "10.96.0.11:80".parse().unwrap();
        let v1 = ProxyConfig {
            version: "v1".into(),
            services: vec![
                service("payments", "10.96.0.10", &["10.0.0.1"]),
                service("orders", "10.96.0.11", &["10.0.1.1"]),
            ]
            .into(),
            routes: vec![limited(one_rule.clone())].into(),
            ..Default::default()
        };
        let t1 = Tables::build(v1.clone()).unwrap();

        // orders gains an endpoint: payments (and its rules) stay the very same target.
        let mut v2 = v1.clone();
        v2.version = "v2".into();
        v2.services = vec![
            service("payments", "10.96.0.10", &["10.0.0.1"]),
            service("orders", "10.96.0.11", &["10.0.1.1", "10.0.1.2"]),
        ]
        .into();
        let t2 = Tables::build_after(v2.clone(), Some(&t1)).unwrap();
        assert!(Arc::ptr_eq(
            t1.outbound(payments).unwrap(),
            t2.outbound(payments).unwrap()
        ));
        assert!(!Arc::ptr_eq(
            t1.outbound(orders).unwrap(),
            t2.outbound(orders).unwrap()
        ));
        // What orders' endpoint kept carried over; the new one starts afresh.
        let (old, new) = (t1.outbound(orders).unwrap(), t2.outbound(orders).unwrap());
        assert!(Arc::ptr_eq(&old.endpoints[0].load, &new.endpoints[0].load));
        assert_eq!(new.endpoints.len(), 2);
        assert!(
            t2.upstreams
                .iter()
                .any(|u| u.addr.to_string() == "10.0.1.2:8080")
        );

        // payments' rules change (a rule added, the first one's limit the same): the
        // table is compiled again, and its bucket is still the one v1 made, carried
        // through v2, which did not compile it.
        let mut v3 = v2.clone();
        v3.version = "v3".into();
        v3.routes = vec![limited(serde_json::json!([
            {"name": "all", "rateLimit": {"requestsPerSecond": 5}},
            {"name": "spare", "rateLimit": {"requestsPerSecond": 9}}
        ]))]
        .into();
        let t3 = Tables::build_after(v3.clone(), Some(&t2)).unwrap();
        assert!(!Arc::ptr_eq(
            t2.outbound(payments).unwrap(),
            t3.outbound(payments).unwrap()
        ));
        assert!(Arc::ptr_eq(
            &bucket(t1.outbound(payments).unwrap()),
            &bucket(t3.outbound(payments).unwrap())
        ));
        assert!(Arc::ptr_eq(
            t2.outbound(orders).unwrap(),
            t3.outbound(orders).unwrap()
        ));

        // Another caller bucket may originate mTLS where this one did not: all anew.
        let mut v4 = v3.clone();
        v4.node.workload = "another".into();
        let t4 = Tables::build_after(v4, Some(&t3)).unwrap();
        assert!(!Arc::ptr_eq(
            t3.outbound(orders).unwrap(),
            t4.outbound(orders).unwrap()
        ));

        // Kept or not, the tables equal those built from scratch.
        let scratch = Tables::build(v3).unwrap();
        assert_eq!(scratch.upstreams, t3.upstreams);
        let labels = |t: &Tables| {
            let mut l: Vec<_> = t
                .targets()
                .map(|t| (t.label.clone(), t.endpoints.len()))
                .collect();
            l.sort();
            l
        };
        assert_eq!(labels(&scratch), labels(&t3));
    }

    #[test]
    fn an_endpoint_in_two_groups_is_counted_once() {
        let mut svc = service("payments", "10.96.0.10", &["10.0.0.1", "10.0.0.2"]);
        let mut overlap = svc.groups[0].clone();
        overlap.name = "canary".into();
        overlap.endpoints.truncate(1);
        svc.groups.push(overlap);
        let t = Tables::build(ProxyConfig {
            services: vec![svc].into(),
            ..Default::default()
        })
        .unwrap();
        let target = t.outbound("10.96.0.10:80".parse().unwrap()).unwrap();
        assert_eq!(target.endpoints.len(), 2);
    }

    #[test]
    fn a_refused_config_names_the_field_in_a_typed_error() {
        let mut svc = service("payments", "10.96.0.10", &["10.0.0.1"]);
        svc.outlier_detection = Some(serde_json::from_value(serde_json::json!({"consecutiveErrors": 0, "baseEjectionTimeMs": 30000, "maxEjectionTimeMs": 300000, "maxEjectionPercent": 50})).unwrap());
        let err = Tables::build(ProxyConfig {
            services: vec![svc].into(),
            ..Default::default()
        })
        .unwrap_err();
        let ConfigError::Invalid(field) = err else {
            panic!("not a field error: {err}")
        };
        assert_eq!(
            field.field,
            "services[0].outlierDetection.consecutiveErrors"
        );
        assert_eq!(field.problem, "give at least 1");
    }

    #[test]
    fn a_vip_claimed_twice_is_refused() {
        let cfg = ProxyConfig {
            services: vec![
                service("a", "10.96.0.10", &["10.0.0.1"]),
                service("b", "10.96.0.10", &["10.0.0.2"]),
            ]
            .into(),
            ..Default::default()
        };
        let err = Tables::build(cfg).unwrap_err().to_string();
        assert!(
            err.contains("10.96.0.10:80") && err.contains("a.shop:80"),
            "{err}"
        );
    }

    #[test]
    fn listeners_resolve_services_or_fail_by_name() {
        let mut cfg = ProxyConfig {
            services: vec![service("payments", "10.96.0.10", &["10.0.0.1"])].into(),
            listeners: vec![Listener {
                name: "gw".into(),
                bind: "127.0.0.1:18080".parse().unwrap(),
                target: ListenerTarget::Service {
                    name: "payments".into(),
                    namespace: String::new(),
                    port: 80,
                },
                protocol: Protocol::Http,
                side: Default::default(),
            }],
            ..Default::default()
        };
        let t = Tables::build(cfg.clone()).unwrap();
        assert_eq!(
            t.listeners[0].target.pick().unwrap().addr.to_string(),
            "10.0.0.1:8080"
        );
        cfg.listeners[0].target = ListenerTarget::Service {
            name: "nope".into(),
            namespace: String::new(),
            port: 80,
        };
        let err = Tables::build(cfg).unwrap_err().to_string();
        assert!(
            err.contains("listeners[0].target") && err.contains("nope"),
            "{err}"
        );
    }

    #[test]
    fn listeners_must_not_share_a_name_or_an_address() {
        let listener = |name: &str, bind: &str| Listener {
            name: name.into(),
            bind: bind.parse().unwrap(),
            target: ListenerTarget::Address("127.0.0.1:9000".parse().unwrap()),
            protocol: Protocol::Http,
            side: Default::default(),
        };
        for second in [
            listener("gw", "127.0.0.1:18081"),
            listener("other", "127.0.0.1:18080"),
        ] {
            let cfg = ProxyConfig {
                listeners: vec![listener("gw", "127.0.0.1:18080"), second],
                ..Default::default()
            };
            let err = Tables::build(cfg).unwrap_err().to_string();
            assert!(
                err.contains("listeners[1]") && err.contains("clashes"),
                "{err}"
            );
        }
    }

    #[test]
    fn overload_settings_the_controller_cannot_use_are_refused_by_field() {
        use crate::config::overload::{OverloadProtection, OverloadSignal};
        let mut cfg = ProxyConfig::default();
        cfg.inbound.overload_protection = Some(OverloadProtection {
            signal: OverloadSignal::Cpu,
            target: 0.75,
            min_limit: 50,
            max_limit: Some(10),
            sample_period_ms: 1000,
        });
        let err = Tables::build(cfg.clone()).unwrap_err().to_string();
        assert!(err.contains("inbound.overloadProtection.maxLimit"), "{err}");
        if let Some(o) = cfg.inbound.overload_protection.as_mut() {
            o.max_limit = None;
        }
        Tables::build(cfg).unwrap();
    }
}
