//! Which lagging proxies a policy is waiting for: grouped once per tick by what they
//! call.

use std::collections::{BTreeSet, HashMap};

use braid_api::control::delta::ServiceRef;

use crate::registry::ObjectKey;

/// The `lagging` proxies (those not holding the config the operator serves them now, so
/// they may still call at an older percent), grouped once per tick by what they call, so
/// that each policy's callers behind are found without going over every lagging proxy
/// again (after a mass restart, that is most of the mesh).
pub struct Lagging<'a> {
    /// On-demand proxies, under each service they hold.
    by_service: HashMap<ObjectKey, Vec<&'a ObjectKey>>,
    /// Proxies holding every service of a set, by set (usually one).
    by_set: Vec<(&'a [braid_api::config::Service], Vec<&'a ObjectKey>)>,
}

impl<'a> Lagging<'a> {
    pub fn new(
        lagging: &[(&'a ObjectKey, &'a braid_api::config::ProxyConfig)],
        held: &HashMap<ObjectKey, Vec<ServiceRef>>,
    ) -> Self {
        let mut by_service: HashMap<ObjectKey, Vec<&ObjectKey>> = HashMap::new();
        let mut by_set: Vec<(&[braid_api::config::Service], Vec<&ObjectKey>)> = Vec::new();
        for (pod, config) in lagging {
            // An on-demand proxy calls what it holds; a service it finds later comes
            // with the config in force.
            if let Some(held) = held.get(*pod) {
                for s in held {
                    by_service
                        .entry(ObjectKey::new(&s.namespace, &s.name))
                        .or_default()
                        .push(pod);
                }
                continue;
            }
            let set = &config.services[..];
            match by_set.iter_mut().find(|(s, _)| std::ptr::eq(*s, set)) {
                Some((_, pods)) => pods.push(pod),
                None => by_set.push((set, vec![pod])),
            }
        }
        Self { by_service, by_set }
    }

    /// The lagging proxies that call `services`, in namespace/name order.
    pub fn calling(&self, services: &BTreeSet<ObjectKey>) -> Vec<&'a ObjectKey> {
        let mut lists: Vec<&Vec<&ObjectKey>> = services
            .iter()
            .filter_map(|s| self.by_service.get(s))
            .collect();
        for (set, pods) in &self.by_set {
            let calls = set.iter().any(|s| {
                services
                    .iter()
                    .any(|k| k.name == s.name && k.namespace == s.namespace)
            });
            if calls {
                lists.push(pods);
            }
        }
        // Each list is in order already; only several need merging.
        if let [one] = lists[..] {
            return one.clone();
        }
        let mut out: Vec<&ObjectKey> = lists.into_iter().flatten().copied().collect();
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use braid_api::config::{ProxyConfig, Service};

    use super::*;

    #[test]
    fn callers_behind_are_the_lagging_proxies_calling_a_covered_service() {
        let svc = |n: &str| Service {
            name: n.into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let every = ProxyConfig {
            services: vec![svc("payments"), svc("orders")].into(),
            ..Default::default()
        };
        let pods: Vec<ObjectKey> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| ObjectKey::new("shop", *n))
            .collect();
        let shared = std::sync::Arc::new(every.clone());
        let lagging: Vec<(&ObjectKey, &ProxyConfig)> = pods.iter().map(|p| (p, &*shared)).collect();
        // c and d hold services on demand: c calls payments, d calls orders.
        let held = HashMap::from([
            (pods[2].clone(), vec!["shop/payments".parse().unwrap()]),
            (pods[3].clone(), vec!["shop/orders".parse().unwrap()]),
        ]);
        let index = Lagging::new(&lagging, &held);
        let names = |v: Vec<&ObjectKey>| v.iter().map(|k| k.name.clone()).collect::<Vec<_>>();
        let payments = BTreeSet::from([ObjectKey::new("shop", "payments")]);
        assert_eq!(names(index.calling(&payments)), ["a", "b", "c"]);
        let both = BTreeSet::from([
            ObjectKey::new("shop", "payments"),
            ObjectKey::new("shop", "orders"),
        ]);
        assert_eq!(names(index.calling(&both)), ["a", "b", "c", "d"]);
        let none = BTreeSet::from([ObjectKey::new("shop", "ledger")]);
        assert!(index.calling(&none).is_empty());
        assert!(index.calling(&BTreeSet::new()).is_empty());
    }
}
