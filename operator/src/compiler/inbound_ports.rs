//! The ports each workload's app serves: the target ports of every service it backs,
//! kept service by service. Worked out whole, this went over every endpoint of the mesh
//! (and made a list for each of its 50,000 workloads) whenever one endpoint changed.

use std::collections::BTreeMap;

use braid_api::config::{PortProtocol, Protocol};

use super::FastMap;
use crate::registry::{ObjectKey, ServiceEntry, Snapshot};

/// What the services give each workload, counted, and the ports that makes.
#[derive(Debug, Default)]
pub struct InboundPorts {
    /// Per workload and target port: each protocol services give it, and how many do.
    given: FastMap<ObjectKey, BTreeMap<u16, Vec<(Protocol, u32)>>>,
    /// Per workload: its ports, in port order. Two services (or two ports of one) that
    /// disagree on a port's protocol leave it to detection.
    ports: FastMap<ObjectKey, Vec<PortProtocol>>,
}

impl InboundPorts {
    /// The ports of every workload `snapshot`'s services have as endpoints.
    pub fn of(snapshot: &Snapshot) -> Self {
        let mut all = Self::default();
        for svc in snapshot.services.values() {
            all.give(svc, true);
        }
        let keys: Vec<ObjectKey> = all.given.keys().cloned().collect();
        all.settle(keys.iter());
        all
    }

    /// Takes `was` away (a service changed or gone) and adds `now` (a service changed or
    /// new); then [`InboundPorts::settle`] the workloads either names.
    pub fn replace(&mut self, was: Option<&ServiceEntry>, now: Option<&ServiceEntry>) {
        if let Some(was) = was {
            self.give(was, false);
        }
        if let Some(now) = now {
            self.give(now, true);
        }
    }

    /// Works the ports of `workloads` out again from what is given to them.
    pub fn settle<'a>(&mut self, workloads: impl Iterator<Item = &'a ObjectKey>) {
        for key in workloads {
            let Some(given) = self.given.get(key) else {
                self.ports.remove(key);
                continue;
            };
            let ports = given
                .iter()
                .filter_map(|(&port, protocols)| {
                    let mut some = protocols.iter().filter(|(_, n)| *n > 0);
                    let (first, _) = some.next()?;
                    let protocol = match some.next() {
                        None => *first,
                        Some(_) => Protocol::Detect,
                    };
                    Some(PortProtocol { port, protocol })
                })
                .collect();
            self.ports.insert(key.clone(), ports);
        }
    }

    /// The ports `workload`'s app serves (none when no service has it as an endpoint).
    pub fn get(&self, workload: &ObjectKey) -> &[PortProtocol] {
        self.ports.get(workload).map_or(&[], Vec::as_slice)
    }

    /// Counts what `svc` gives its endpoints' workloads in (`add`) or out.
    fn give(&mut self, svc: &ServiceEntry, add: bool) {
        for w in svc.endpoints.iter().filter_map(|ep| ep.workload.as_ref()) {
            if !self.given.contains_key(w) {
                if !add {
                    continue;
                }
                self.given.insert(w.clone(), BTreeMap::new());
            }
            let Some(given) = self.given.get_mut(w) else {
                continue;
            };
            for p in &svc.ports {
                let protocols = given.entry(p.target_port).or_default();
                match protocols.iter_mut().find(|(pr, _)| *pr == p.protocol) {
                    Some((_, n)) if add => *n += 1,
                    Some((_, n)) => *n = n.saturating_sub(1),
                    None if add => protocols.push((p.protocol, 1)),
                    None => {}
                }
                protocols.retain(|(_, n)| *n > 0);
                let none_left = protocols.is_empty();
                if none_left {
                    given.remove(&p.target_port);
                }
            }
            if given.is_empty() {
                self.given.remove(w);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{ServiceEndpoint, ServicePort};
    use std::sync::Arc;

    fn svc(name: &str, ports: &[(u16, Protocol)], pods: &[&str]) -> Arc<ServiceEntry> {
        Arc::new(ServiceEntry {
            key: ObjectKey::new("shop", name),
            vips: Vec::new(),
            ports: ports
                .iter()
                .map(|&(target_port, protocol)| ServicePort {
                    name: None,
                    port: 80,
                    target_port,
                    protocol,
                })
                .collect(),
            endpoints: pods
                .iter()
                .enumerate()
                .map(|(i, p)| ServiceEndpoint {
                    ip: [10, 0, 0, i as u8].into(),
                    workload: Some(ObjectKey::new("shop", *p)),
                })
                .collect(),
        })
    }

    fn snapshot(services: &[&Arc<ServiceEntry>]) -> Snapshot {
        let mut s = Snapshot::default();
        for e in services {
            s.services.insert(e.key.clone(), Arc::clone(e));
        }
        s
    }

    fn ports(p: &InboundPorts, pod: &str) -> Vec<(u16, Protocol)> {
        p.get(&ObjectKey::new("shop", pod))
            .iter()
            .map(|p| (p.port, p.protocol))
            .collect()
    }

    /// Each step replaces one service, updated in place; each must equal the whole
    /// reading of the services then in force.
    #[test]
    fn kept_service_by_service_it_equals_the_whole_reading() {
        use Protocol::{Detect, Http, Http2};
        let api = svc("api", &[(8080, Http)], &["a", "b"]);
        let grpc = svc("grpc", &[(8080, Http2), (9090, Http2)], &["b"]);
        let api2 = svc("api", &[(8080, Http)], &["a", "b", "c"]);
        let api3 = svc("api", &[(8081, Http)], &["c"]);
        type Step<'a> = (Option<&'a Arc<ServiceEntry>>, Option<&'a Arc<ServiceEntry>>);
        let steps: Vec<Step<'_>> = vec![
            (None, Some(&api)),
            (None, Some(&grpc)),
            (Some(&api), Some(&api2)),
            (Some(&api2), Some(&api3)),
            (Some(&grpc), None),
        ];
        let mut inc = InboundPorts::of(&snapshot(&[]));
        let mut held: Vec<&Arc<ServiceEntry>> = Vec::new();
        for (was, now) in steps {
            inc.replace(was.map(|w| &**w), now.map(|n| &**n));
            held.retain(|h| was.is_none_or(|w| !Arc::ptr_eq(h, w)));
            held.extend(now);
            let pods = ["a", "b", "c"].map(|p| ObjectKey::new("shop", p));
            inc.settle(pods.iter());
            let whole = InboundPorts::of(&snapshot(&held));
            for pod in ["a", "b", "c"] {
                assert_eq!(ports(&inc, pod), ports(&whole, pod), "{pod} after {held:?}");
            }
            if held.len() == 2 && Arc::ptr_eq(held[0], &api) {
                // Two services disagree on b's 8080: detection decides.
                assert_eq!(ports(&inc, "b"), [(8080, Detect), (9090, Http2)]);
            }
        }
        assert_eq!(ports(&inc, "c"), [(8081, Http)]);
        assert!(ports(&inc, "b").is_empty());
        assert!(
            inc.given.len() == 1,
            "only c is given anything: {:?}",
            inc.given
        );
    }
}
