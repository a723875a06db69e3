//! Which lagging proxies a policy is waiting for: grouped once per tick by what they
//! call.

use std::collections::{BTreeSet, HashMap};

use braid_api::control::delta::ServiceRef;

use crate::compiler::ServiceSet;
use crate::registry::ObjectKey;

/// The `lagging` proxies (those not holding the config the operator serves them now, so
/// they may still call at an older percent), grouped once per tick by what they call, so
/// that each policy's callers behind are found without going over every lagging proxy
/// again (after a mass restart, that is most of the mesh).
pub struct Lagging<'a> {
    /// On-demand proxies, under each service they hold.
    by_service: HashMap<ObjectKey, Vec<&'a ObjectKey>>,
    /// Proxies holding every service of `set`.
    every: Vec<&'a ObjectKey>,
    set: &'a ServiceSet,
}

impl<'a> Lagging<'a> {
    /// Groups the `lagging` proxies of a compile whose services are `set`.
    pub fn new(
        lagging: &[&'a ObjectKey],
        held: &HashMap<ObjectKey, Vec<ServiceRef>>,
        set: &'a ServiceSet,
    ) -> Self {
        let mut by_service: HashMap<ObjectKey, Vec<&ObjectKey>> = HashMap::new();
        let mut every = Vec::new();
        for pod in lagging {
            // An on-demand proxy calls what it holds; a service it finds later comes
            // with the config in force.
            match held.get(*pod) {
                Some(held) => {
                    for s in held {
                        by_service
                            .entry(ObjectKey::new(&s.namespace, &s.name))
                            .or_default()
                            .push(pod);
                    }
                }
                None => every.push(*pod),
            }
        }
        Self {
            by_service,
            every,
            set,
        }
    }

    /// The lagging proxies that call `services`, in namespace/name order.
    pub fn calling(&self, services: &BTreeSet<ObjectKey>) -> Vec<&'a ObjectKey> {
        let mut lists: Vec<&Vec<&ObjectKey>> = services
            .iter()
            .filter_map(|s| self.by_service.get(s))
            .collect();
        let in_set = services
            .iter()
            .any(|k| self.set.position(&k.namespace, &k.name).is_some());
        if in_set {
            lists.push(&self.every);
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
    use braid_api::config::Service;

    use crate::compiler::Digest256;

    use super::*;

    #[test]
    fn callers_behind_are_the_lagging_proxies_calling_a_covered_service() {
        let svc = |n: &str| Service {
            name: n.into(),
            namespace: "shop".into(),
            ..Default::default()
        };
        let services = vec![svc("payments"), svc("orders")];
        let digests = services.iter().map(Digest256::of).collect();
        let set = ServiceSet::new(services.into(), digests);
        let pods: Vec<ObjectKey> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| ObjectKey::new("shop", *n))
            .collect();
        let lagging: Vec<&ObjectKey> = pods.iter().collect();
        // c and d hold services on demand: c calls payments, d calls orders.
        let held = HashMap::from([
            (pods[2].clone(), vec!["shop/payments".parse().unwrap()]),
            (pods[3].clone(), vec!["shop/orders".parse().unwrap()]),
        ]);
        let index = Lagging::new(&lagging, &held, &set);
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
