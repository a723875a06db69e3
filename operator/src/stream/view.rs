//! A proxy's view of its config, and the lines that carry it: its own sections plus
//! either every service (proxies that do not discover on demand) or only those it
//! calls. A line is written as chunks: the small per-stream part, then each service's
//! JSON, made once per compile and shared by every stream that sends it. Proxies that
//! accept deltas get, after their first whole view, only the sections and services
//! that changed (`{"delta":…}`, see `braid_api::control::delta`).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Bytes;
use braid_api::config::ProxyConfig;
use braid_api::config::routes::ServiceRoutes;
use braid_api::control::delta::{ConfigDelta, ServiceRef};

use crate::compiler::{Digest256, ServiceSet};
use crate::hub::Published;
use crate::registry::ObjectKey;

/// The name in a scope entry `namespace/*`: every service of the namespace.
pub const ALL_OF_NAMESPACE: &str = "*";

/// Which of the compile's services a view holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Included {
    /// Every one.
    All,
    /// These positions in the set, ascending.
    Some(Vec<usize>),
}

impl Included {
    fn contains(&self, i: usize) -> bool {
        match self {
            Self::All => true,
            Self::Some(v) => v.binary_search(&i).is_ok(),
        }
    }

    fn positions(&self, set: &ServiceSet) -> Vec<usize> {
        match self {
            Self::All => (0..set.len()).collect(),
            Self::Some(v) => v.clone(),
        }
    }
}

/// What one proxy holds (or is being sent): a delta's base.
#[derive(Clone, Debug)]
pub struct View {
    /// Its version: the whole config's when it holds every service.
    pub version: String,
    /// The workload's own sections (node, inbound, routes, …); the services are the set's.
    pub config: Arc<ProxyConfig>,
    /// The services it is cut from.
    pub set: Arc<ServiceSet>,
    /// Which of them it holds.
    pub included: Included,
    /// The routes of the services it holds (a proxy refuses routes for a service it
    /// does not hold).
    pub routes: Arc<[ServiceRoutes]>,
    /// Their positions in the config's routes, when not all of them.
    routes_at: Option<Vec<usize>>,
}

impl View {
    /// `pod`'s view of `published`: every service, or only those `wanted` names (those
    /// that exist; `namespace/*` names all of a namespace's).
    /// `previous`, the view last cut for the same proxy, lends its routes when they are
    /// the same ones of the same config: every stream is cut again on each change, and
    /// copying its routes each time was most of what that allocated.
    pub fn cut(
        published: &Published,
        pod: &ObjectKey,
        config: &Arc<ProxyConfig>,
        wanted: Option<&BTreeSet<ServiceRef>>,
        previous: Option<&View>,
    ) -> Self {
        let catalog = &published.catalog;
        let set = catalog.set.clone();
        let Some(wanted) = wanted else {
            return Self {
                version: catalog.version_of(pod).unwrap_or_default(),
                config: config.clone(),
                set,
                included: Included::All,
                routes: config.routes.clone(),
                routes_at: None,
            };
        };
        let mut positions: Vec<usize> = Vec::new();
        for name in wanted {
            if name.name == ALL_OF_NAMESPACE {
                positions.extend(set.namespace(&name.namespace));
            } else if let Some(i) = set.index(name) {
                positions.push(i);
            }
        }
        positions.sort_unstable();
        positions.dedup();
        let own = catalog
            .own
            .get(pod)
            .copied()
            .unwrap_or_else(|| Digest256::of(&config.version));
        // The own digest covers every route, the services' digests their names: the
        // version still says everything the view holds.
        let held = |r: &ServiceRoutes| {
            set.position(&r.namespace, &r.service)
                .is_some_and(|i| positions.binary_search(&i).is_ok())
        };
        let at: Vec<usize> = (0..config.routes.len())
            .filter(|&i| held(&config.routes[i]))
            .collect();
        let (routes, routes_at) = if at.len() == config.routes.len() {
            (config.routes.clone(), None)
        } else {
            let routes = match previous {
                Some(p) if Arc::ptr_eq(&p.config, config) && p.routes_at.as_ref() == Some(&at) => {
                    p.routes.clone()
                }
                _ => at.iter().map(|&i| config.routes[i].clone()).collect(),
            };
            (routes, Some(at))
        };
        Self {
            version: catalog.view_version(&own, &positions),
            config: config.clone(),
            set,
            included: Included::Some(positions),
            routes,
            routes_at,
        }
    }

    /// The view as a whole config line: `{…,"services":[…],…}\n`.
    pub fn full_line(&self) -> Vec<Bytes> {
        let own = ProxyConfig {
            version: self.version.clone(),
            services: Arc::new([]),
            routes: self.routes.clone(),
            ..ProxyConfig::clone(&self.config)
        };
        // Our types always serialise.
        let text = serde_json::to_vec(&own).unwrap_or_default();
        // Inside a JSON string every quote is escaped, so this is the field itself.
        const EMPTY: &[u8] = b"\"services\":[]";
        let Some(at) = text.windows(EMPTY.len()).position(|w| w == EMPTY) else {
            let mut whole = serde_json::to_vec(&self.materialise()).unwrap_or_default();
            whole.push(b'\n');
            return vec![Bytes::from(whole)];
        };
        let text = Bytes::from(text);
        let split = at + EMPTY.len() - 1; // just after `[`
        let mut chunks = vec![text.slice(..split)];
        self.services_into(&self.included.positions(&self.set), &mut chunks);
        let mut tail = text.slice(split..).to_vec();
        tail.push(b'\n');
        chunks.push(Bytes::from(tail));
        chunks
    }

    /// The config this view stands for, as one value (tests, and a fallback that never
    /// happens).
    pub fn materialise(&self) -> ProxyConfig {
        let services: Arc<[braid_api::config::Service]> = self
            .included
            .positions(&self.set)
            .iter()
            .filter_map(|i| self.set.service(*i).cloned())
            .collect();
        ProxyConfig {
            version: self.version.clone(),
            services,
            routes: self.routes.clone(),
            ..ProxyConfig::clone(&self.config)
        }
    }

    /// Each service at `positions`, comma-separated, as shared chunks.
    fn services_into(&self, positions: &[usize], chunks: &mut Vec<Bytes>) {
        for (n, i) in positions.iter().enumerate() {
            if n > 0 {
                chunks.push(Bytes::from_static(b","));
            }
            chunks.push(self.set.json(*i));
        }
    }

    /// The delta line taking a proxy from `self` to `to`.
    pub fn delta_line(&self, to: &View) -> Vec<Bytes> {
        fn changed<T: PartialEq + Clone>(a: &T, b: &T) -> Option<T> {
            (a != b).then(|| b.clone())
        }
        let (from_c, to_c) = (&self.config, &to.config);
        let head = ConfigDelta {
            version: to.version.clone(),
            base: self.version.clone(),
            node: changed(&from_c.node, &to_c.node),
            inbound: changed(&from_c.inbound, &to_c.inbound),
            routes: (!Arc::ptr_eq(&self.routes, &to.routes) && self.routes != to.routes)
                .then(|| to.routes.clone()),
            listeners: changed(&from_c.listeners, &to_c.listeners),
            detection: changed(&from_c.detection, &to_c.detection),
            trust_bundle: changed(&from_c.trust_bundle, &to_c.trust_bundle),
            services: Default::default(),
        };
        let (upsert, remove) = self.service_changes(to);
        // Our types always serialise; the head is an object, so it ends in `}`.
        let mut head = serde_json::to_vec(&head).unwrap_or_default();
        let mut start = b"{\"delta\":".to_vec();
        if upsert.is_empty() && remove.is_empty() {
            start.append(&mut head);
            start.extend_from_slice(b"}\n");
            return vec![Bytes::from(start)];
        }
        head.pop();
        start.append(&mut head);
        start.extend_from_slice(b",\"services\":{");
        let mut chunks = Vec::new();
        if !upsert.is_empty() {
            start.extend_from_slice(b"\"upsert\":[");
            chunks.push(Bytes::from(start));
            to.services_into(&upsert, &mut chunks);
            start = b"]".to_vec();
            if !remove.is_empty() {
                start.push(b',');
            }
        }
        if !remove.is_empty() {
            start.extend_from_slice(b"\"remove\":");
            // Names always serialise.
            start.extend(serde_json::to_vec(&remove).unwrap_or_default());
        }
        start.extend_from_slice(b"}}}\n");
        chunks.push(Bytes::from(start));
        chunks
    }

    /// The positions in `to`'s set of the services `to` holds that `self` does not hold
    /// as they are, and the names of those `self` holds and `to` does not.
    fn service_changes(&self, to: &View) -> (Vec<usize>, Vec<ServiceRef>) {
        if Arc::ptr_eq(&self.set, &to.set) && self.included == to.included {
            return (Vec::new(), Vec::new());
        }
        let held = |name: &ServiceRef| self.set.index(name).filter(|j| self.included.contains(*j));
        let upsert = to
            .included
            .positions(&to.set)
            .into_iter()
            .filter(|i| {
                let Some(name) = to.set.name(*i) else {
                    return false;
                };
                held(&name).and_then(|j| self.set.digests.get(j)) != to.set.digests.get(*i)
            })
            .collect();
        let remove = self
            .included
            .positions(&self.set)
            .into_iter()
            .filter_map(|j| self.set.name(j))
            .filter(|name| !to.set.index(name).is_some_and(|i| to.included.contains(i)))
            .collect();
        (upsert, remove)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use braid_api::config::{Endpoint, EndpointGroup, Node, Service};
    use braid_api::control::delta::DeltaLine;

    use super::*;
    use crate::compiler::Catalog;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        Service {
            name: name.into(),
            namespace: ns.into(),
            vips: vec![format!("10.96.{}", &ip[5..]).parse().unwrap()],
            groups: vec![EndpointGroup {
                name: "(default)".into(),
                endpoints: vec![Endpoint {
                    address: ip.parse().unwrap(),
                    labels: Default::default(),
                    identity: None,
                    meshed: false,
                    tls: None,
                }],
            }],
            ..Default::default()
        }
    }

    fn pod() -> ObjectKey {
        ObjectKey::new("shop", "web-0")
    }

    /// A compile holding `services`, with web-0's config at `version`.
    fn published(version: &str, services: Vec<Service>, bundle: &str) -> Published {
        let digests = services.iter().map(Digest256::of).collect();
        let set = Arc::new(ServiceSet::new(services.into(), digests));
        let config = ProxyConfig {
            version: version.into(),
            node: Node {
                workload: "web-0".into(),
                namespace: "shop".into(),
                ..Default::default()
            },
            // As the compiler makes it: the services are the catalog's.
            services: Arc::new([]),
            trust_bundle: bundle.into(),
            ..Default::default()
        };
        let own = Digest256::of(bundle);
        Published {
            snapshot: Arc::default(),
            configs: [(pod(), Arc::new(config))].into_iter().collect(),
            catalog: Arc::new(Catalog {
                set,
                own: [(pod(), own)].into_iter().collect(),
            }),
            seen_at: Instant::now(),
        }
    }

    fn view(p: &Published, wanted: Option<&[&str]>) -> View {
        let wanted: Option<BTreeSet<ServiceRef>> =
            wanted.map(|w| w.iter().map(|n| n.parse().unwrap()).collect());
        View::cut(p, &pod(), &p.configs[&pod()], wanted.as_ref(), None)
    }

    fn join(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn apply(from: &View, to: &View) -> (usize, ProxyConfig) {
        let line = join(&from.delta_line(to));
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(DeltaLine::is_delta(&line));
        let parsed: DeltaLine = serde_json::from_slice(&line).unwrap();
        (line.len(), parsed.delta.apply(&from.materialise()).unwrap())
    }

    fn before() -> Published {
        published(
            "v1",
            vec![
                svc("a", "one", "10.1.0.1"),
                svc("b", "two", "10.1.0.2"),
                svc("c", "three", "10.1.0.3"),
            ],
            "roots",
        )
    }

    fn after() -> Published {
        published(
            "v2",
            vec![
                svc("a", "one", "10.1.0.1"),
                svc("b", "two", "10.1.0.22"),
                svc("b", "zz", "10.1.0.9"),
            ],
            "new roots",
        )
    }

    #[test]
    fn a_whole_view_is_the_config_serialised_with_its_services_shared() {
        let p = before();
        let all = view(&p, None);
        let line = join(&all.full_line());
        let expected = serde_json::to_vec(&p.catalog.whole(&pod(), &p.configs[&pod()])).unwrap();
        assert_eq!(&line[..line.len() - 1], &expected[..]);
        // The services' bytes are the set's own, not copies.
        let chunks = view(&p, None).full_line();
        assert!(
            chunks
                .iter()
                .any(|c| c.as_ptr() == p.catalog.set.json(1).as_ptr())
        );

        let some = view(&p, Some(&["c/three", "a/one", "x/missing"]));
        let parsed: ProxyConfig = serde_json::from_slice(&join(&some.full_line())).unwrap();
        assert_eq!(parsed, some.materialise());
        let names: Vec<String> = parsed.services.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, ["one", "three"], "in the set's order");
        assert_ne!(parsed.version, "v1", "a view has its own version");
    }

    #[test]
    fn a_view_of_every_service_has_the_whole_configs_version() {
        let p = before();
        let whole = p.catalog.version_of(&pod()).unwrap();
        assert_eq!(view(&p, None).version, whole);
        let all_named = view(&p, Some(&["a/one", "b/two", "c/three"]));
        let own = p.catalog.own[&pod()];
        assert_eq!(all_named.version, p.catalog.view_version(&own, &[0, 1, 2]));
        assert_eq!(
            all_named.version, whole,
            "every service named is the whole config"
        );
        // Only what it holds decides a view's version.
        let (b, a) = (before(), after());
        assert_eq!(
            view(&b, Some(&["a/one"])).version,
            view(
                &published("v9", b.catalog.set.services().cloned().collect(), "roots"),
                Some(&["a/one"])
            )
            .version
        );
        assert_ne!(
            view(&b, Some(&["b/two"])).version,
            view(&a, Some(&["b/two"])).version
        );
    }

    #[test]
    fn a_delta_carries_what_changed_and_applied_to_its_base_makes_the_new_view() {
        let (b, a) = (before(), after());
        for wanted in [None, Some(&["b/two", "b/zz", "c/three"][..])] {
            let (from, to) = (view(&b, wanted), view(&a, wanted));
            let (_, made) = apply(&from, &to);
            assert_eq!(made, to.materialise(), "{wanted:?}");
        }
        let line = join(&view(&b, None).delta_line(&view(&a, None)));
        let d: DeltaLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(d.delta.node, None, "unchanged sections are left out");
        assert_eq!(d.delta.trust_bundle.as_deref(), Some("new roots"));
        let upserted: Vec<String> = d
            .delta
            .services
            .upsert
            .iter()
            .map(|s| ServiceRef::of(s).to_string())
            .collect();
        assert_eq!(upserted, ["b/two", "b/zz"]);
        assert_eq!(d.delta.services.remove.len(), 1);
    }

    #[test]
    fn a_proxy_that_does_not_call_the_changed_service_gets_nothing_of_it() {
        let b = before();
        let mut changed: Vec<_> = b.catalog.set.services().cloned().collect();
        changed[1] = svc("b", "two", "10.1.0.99");
        let a = published("v2", changed, "roots");
        let (from, to) = (view(&b, Some(&["a/one"])), view(&a, Some(&["a/one"])));
        assert_eq!(from.version, to.version, "nothing to send");
        // One it calls: only that service travels.
        let (from, to) = (view(&b, Some(&["b/two"])), view(&a, Some(&["b/two"])));
        let (len, made) = apply(&from, &to);
        assert_eq!(made.services.len(), 1);
        assert!(len < 600, "{len} bytes");
        // A service discovered: the same compile, one more service.
        let (from, to) = (
            view(&a, Some(&["b/two"])),
            view(&a, Some(&["b/two", "c/three"])),
        );
        let line = join(&from.delta_line(&to));
        let d: DeltaLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(d.delta.services.upsert.len(), 1);
        assert!(d.delta.services.remove.is_empty());
    }

    #[test]
    fn a_view_holds_the_routes_of_its_services_only() {
        let mut p = before();
        let route = |ns: &str, service: &str| ServiceRoutes {
            from: format!("{ns}/{service}"),
            service: service.into(),
            namespace: ns.into(),
            port: None,
            rules: Vec::new(),
        };
        let mut config = ProxyConfig::clone(&p.configs[&pod()]);
        config.routes = vec![route("b", "two"), route("c", "three")].into();
        p.configs.insert(pod(), Arc::new(config));
        let some = view(&p, Some(&["b/two"]));
        assert_eq!(some.routes.len(), 1);
        assert_eq!(some.materialise().routes[0].service, "two");
        let parsed: ProxyConfig = serde_json::from_slice(&join(&some.full_line())).unwrap();
        assert_eq!(parsed, some.materialise());
        assert_eq!(view(&p, None).routes.len(), 2);
        // Calling the other one brings its routes, in a delta.
        let more = view(&p, Some(&["b/two", "c/three"]));
        let (_, made) = apply(&some, &more);
        assert_eq!(made.routes.len(), 2);
        // Cut again for the same config and services, it shares the last cut's routes;
        // another config's are its own.
        let wanted: BTreeSet<ServiceRef> = ["b/two".parse().unwrap()].into();
        let config = &p.configs[&pod()];
        let again = View::cut(&p, &pod(), config, Some(&wanted), Some(&some));
        assert!(Arc::ptr_eq(&again.routes, &some.routes));
        let edited = Arc::new(ProxyConfig::clone(config));
        let other = View::cut(&p, &pod(), &edited, Some(&wanted), Some(&some));
        assert!(!Arc::ptr_eq(&other.routes, &some.routes));
        assert_eq!(other.routes, some.routes);
    }

    #[test]
    fn a_namespace_in_the_scope_brings_all_of_its_services() {
        let p = before();
        let v = view(&p, Some(&["b/*", "c/three"]));
        assert_eq!(v.included, Included::Some(vec![1, 2]));
        let v = view(&p, Some(&["nowhere/*"]));
        assert_eq!(v.included, Included::Some(vec![]));
    }

    #[test]
    fn the_same_service_is_serialised_once_for_every_stream() {
        let (b, a) = (before(), after());
        let web = view(&b, None).delta_line(&view(&a, None));
        let api = view(&b, Some(&["b/two"])).delta_line(&view(&a, Some(&["b/two"])));
        let shared = a.catalog.set.json(1);
        for chunks in [&web, &api] {
            assert!(chunks.iter().any(|c| c.as_ptr() == shared.as_ptr()));
        }
    }
}
