//! Deltas for proxies that accept them (`x-braid-accept: delta`): from the config a
//! stream last sent to the one now compiled, only the sections and services that
//! changed. The services part of a change is serialised once and its bytes shared by
//! every stream that moves between the same two service sets; only the small head
//! (versions, changed per-workload sections) is written per stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use braid_api::config::{ProxyConfig, Service};
use braid_api::control::delta::{ConfigDelta, ServiceRef};
use serde::Serialize;

/// How many recent service-set transitions are kept serialised. Streams a compile or
/// two behind (a watch coalesces publications) still find theirs.
const KEPT: usize = 8;

/// The serialised services part of recent transitions between service sets.
#[derive(Default)]
pub struct DeltaCache {
    /// Newest first.
    kept: Mutex<Vec<Transition>>,
}

/// From one service set to another, and the `ServicesDelta` JSON between them. The sets
/// are held so their addresses, the key, cannot be reused while cached.
type Transition = (Arc<[Service]>, Arc<[Service]>, Bytes);

impl DeltaCache {
    /// The `ServicesDelta` JSON from `from` to `to`, computed by the first stream that
    /// needs it and shared by the rest.
    pub fn services(&self, from: &Arc<[Service]>, to: &Arc<[Service]>) -> Bytes {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, _, bytes)) = kept
            .iter()
            .find(|(f, t, _)| Arc::ptr_eq(f, from) && Arc::ptr_eq(t, to))
        {
            return bytes.clone();
        }
        let bytes = Bytes::from(services_json(from, to));
        kept.insert(0, (from.clone(), to.clone(), bytes.clone()));
        kept.truncate(KEPT);
        bytes
    }
}

/// The wire form of `ServicesDelta`, borrowing the services it upserts.
#[derive(Serialize)]
struct ServicesOut<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    upsert: Vec<&'a Service>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    remove: Vec<ServiceRef>,
}

/// `ServicesDelta` JSON: the services of `to` that `from` lacks or holds otherwise, and
/// the services of `from` that `to` lacks.
pub fn services_json(from: &[Service], to: &[Service]) -> Vec<u8> {
    let before: HashMap<(&str, &str), &Service> = from
        .iter()
        .map(|s| ((s.namespace.as_str(), s.name.as_str()), s))
        .collect();
    let upsert: Vec<&Service> = to
        .iter()
        .filter(|s| before.get(&(s.namespace.as_str(), s.name.as_str())) != Some(s))
        .collect();
    let after: std::collections::HashSet<(&str, &str)> = to
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let remove: Vec<ServiceRef> = from
        .iter()
        .filter(|s| !after.contains(&(s.namespace.as_str(), s.name.as_str())))
        .map(ServiceRef::of)
        .collect();
    // Our types always serialise.
    serde_json::to_vec(&ServicesOut { upsert, remove }).unwrap_or_else(|_| b"{}".to_vec())
}

/// The delta line from `from` (what this stream sent last) to `to`, as chunks: the
/// per-stream head, then the shared services part from `cache`.
pub fn line(cache: &DeltaCache, from: &ProxyConfig, to: &ProxyConfig) -> Vec<Bytes> {
    fn changed<T: PartialEq + Clone>(a: &T, b: &T) -> Option<T> {
        (a != b).then(|| b.clone())
    }
    let head = ConfigDelta {
        version: to.version.clone(),
        base: from.version.clone(),
        node: changed(&from.node, &to.node),
        inbound: changed(&from.inbound, &to.inbound),
        routes: (!Arc::ptr_eq(&from.routes, &to.routes) && from.routes != to.routes)
            .then(|| to.routes.clone()),
        listeners: changed(&from.listeners, &to.listeners),
        detection: changed(&from.detection, &to.detection),
        trust_bundle: changed(&from.trust_bundle, &to.trust_bundle),
        services: Default::default(),
    };
    // Our types always serialise; the head is an object, so it ends in `}`.
    let mut head = serde_json::to_vec(&head).unwrap_or_default();
    let services = if Arc::ptr_eq(&from.services, &to.services) {
        None
    } else {
        Some(cache.services(&from.services, &to.services)).filter(|s| &s[..] != b"{}")
    };
    let mut chunks = Vec::with_capacity(3);
    let mut start = b"{\"delta\":".to_vec();
    match services {
        None => {
            start.append(&mut head);
            start.extend_from_slice(b"}\n");
            chunks.push(Bytes::from(start));
        }
        Some(services) => {
            head.pop();
            start.append(&mut head);
            start.extend_from_slice(b",\"services\":");
            chunks.push(Bytes::from(start));
            chunks.push(services);
            chunks.push(Bytes::from_static(b"}}\n"));
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use braid_api::config::{EndpointGroup, Node};
    use braid_api::control::delta::DeltaLine;

    use super::*;

    fn svc(ns: &str, name: &str, ip: &str) -> Service {
        Service {
            name: name.into(),
            namespace: ns.into(),
            groups: vec![EndpointGroup {
                name: "(default)".into(),
                endpoints: vec![braid_api::config::Endpoint {
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

    fn config(version: &str, services: &Arc<[Service]>) -> ProxyConfig {
        ProxyConfig {
            version: version.into(),
            node: Node {
                workload: "web-0".into(),
                namespace: "shop".into(),
                ..Default::default()
            },
            services: services.clone(),
            trust_bundle: "roots".into(),
            ..Default::default()
        }
    }

    fn parse(chunks: &[Bytes]) -> (usize, DeltaLine) {
        let line: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert_eq!(line.last(), Some(&b'\n'));
        assert!(DeltaLine::is_delta(&line));
        (line.len(), serde_json::from_slice(&line).unwrap())
    }

    #[test]
    fn a_delta_carries_what_changed_and_applied_to_its_base_makes_the_new_config() {
        let before: Arc<[Service]> = vec![
            svc("a", "one", "10.1.0.1"),
            svc("b", "two", "10.1.0.2"),
            svc("c", "three", "10.1.0.3"),
        ]
        .into();
        let after: Arc<[Service]> = vec![
            svc("a", "one", "10.1.0.1"),
            svc("b", "two", "10.1.0.22"),
            svc("b", "zz", "10.1.0.9"),
        ]
        .into();
        let from = config("v1", &before);
        let mut to = config("v2", &after);
        to.trust_bundle = "new roots".into();
        let cache = DeltaCache::default();
        let (_, parsed) = parse(&line(&cache, &from, &to));
        let d = &parsed.delta;
        assert_eq!((d.base.as_str(), d.version.as_str()), ("v1", "v2"));
        assert_eq!(d.node, None, "unchanged sections are left out");
        assert_eq!(d.trust_bundle.as_deref(), Some("new roots"));
        let upserted: Vec<String> = d
            .services
            .upsert
            .iter()
            .map(|s| ServiceRef::of(s).to_string())
            .collect();
        assert_eq!(upserted, ["b/two", "b/zz"]);
        assert_eq!(d.services.remove.len(), 1);
        assert_eq!(parsed.delta.apply(&from).unwrap(), to);
    }

    #[test]
    fn the_services_part_is_serialised_once_for_every_stream_making_the_same_move() {
        let before: Arc<[Service]> = vec![svc("a", "one", "10.1.0.1")].into();
        let after: Arc<[Service]> = vec![svc("a", "one", "10.1.0.2")].into();
        let cache = DeltaCache::default();
        let web = line(&cache, &config("v1", &before), &config("v2", &after));
        let mut other = config("w1", &before);
        other.node.workload = "api-0".into();
        let mut other_to = config("w2", &after);
        other_to.node.workload = "api-0".into();
        let api = line(&cache, &other, &other_to);
        assert_eq!(web.len(), 3);
        assert_eq!(
            web[1].as_ptr(),
            api[1].as_ptr(),
            "the same bytes, not a copy"
        );
        assert_ne!(web[0], api[0], "each stream its own versions");
    }

    #[test]
    fn a_change_outside_the_services_sends_no_services_part() {
        let set: Arc<[Service]> = vec![svc("a", "one", "10.1.0.1")].into();
        let from = config("v1", &set);
        let mut to = config("v2", &set);
        to.node.service_account = "web".into();
        let chunks = line(&DeltaCache::default(), &from, &to);
        assert_eq!(chunks.len(), 1);
        let (len, parsed) = parse(&chunks);
        assert!(len < 200, "{len} bytes");
        assert!(parsed.delta.services.is_empty());
        assert_eq!(parsed.delta.apply(&from).unwrap(), to);
        // Equal sets that are different allocations (a recompile that changed nothing
        // in them) send no services either.
        let copy: Arc<[Service]> = set.iter().cloned().collect();
        let to = config("v3", &copy);
        let chunks = line(&DeltaCache::default(), &from, &to);
        assert_eq!(chunks.len(), 1);
    }
}
