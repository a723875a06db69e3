//! The hub between the compiler and the connected proxies: the latest compiled configs,
//! and the versions proxies report having applied.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use braid_api::control::delta::ServiceRef;
use tokio::sync::{Notify, watch};

use crate::compiler::Catalog;
use crate::registry::{ObjectKey, Snapshot, Workload, siblings};

/// One published compile: what every proxy should hold now.
#[derive(Debug)]
pub struct Published {
    /// The snapshot compiled (used to check who may read which config).
    pub snapshot: Arc<Snapshot>,
    /// The config of every meshed workload.
    pub configs: crate::compiler::Configs,
    /// What proxies' views (the services each calls) are cut from.
    pub catalog: Arc<Catalog>,
    /// When the change that led to this compile was first seen (push latency).
    pub seen_at: Instant,
}

/// Shared by the compile loop (publishes), the stream handlers (follow) and the status
/// loop (reads applied versions).
pub struct Hub {
    current: watch::Sender<Option<Arc<Published>>>,
    applied: Mutex<HashMap<ObjectKey, String>>,
    applied_changed: watch::Sender<u64>,
    /// What each proxy streaming from this replica on demand calls.
    wanted: Mutex<HashMap<ObjectKey, Arc<Wanted>>>,
    /// The services each on-demand proxy reported holding: with them, the version of
    /// its view of any compile is known on every replica, and a proxy holding its view
    /// of the current compile is as current as one holding the whole config.
    held: Mutex<HashMap<ObjectKey, Vec<ServiceRef>>>,
    /// The compiles before the current one, newest last: what a proxy that missed a
    /// change holds is cut from one of them, and it is sent what changed since.
    recent: Mutex<std::collections::VecDeque<Arc<Published>>>,
    /// What this replica heard of each proxy besides its version (for `braidctl`).
    ledger: crate::debug::ProxyLedger,
}

/// How many compiles before the current one are kept. A proxy that was away for more
/// changes than this gets its whole view again. Compiles share most of what they hold
/// (persistent maps, the services' `Arc`s), so each costs little.
pub const RECENT_COMPILES: usize = 4;

impl Default for Hub {
    fn default() -> Self {
        Self {
            current: watch::Sender::new(None),
            applied: Mutex::new(HashMap::new()),
            applied_changed: watch::Sender::new(0),
            wanted: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            recent: Mutex::new(std::collections::VecDeque::new()),
            ledger: crate::debug::ProxyLedger::default(),
        }
    }
}

/// The services one on-demand proxy holds, grown by its discoveries and shrunk by what
/// it forgets; its stream wakes when they change.
#[derive(Debug, Default)]
pub struct Wanted {
    names: Mutex<BTreeSet<ServiceRef>>,
    changed: Notify,
}

impl Wanted {
    /// Starting from what the proxy says it holds.
    pub fn new(names: BTreeSet<ServiceRef>) -> Self {
        Self {
            names: Mutex::new(names),
            changed: Notify::new(),
        }
    }

    /// Adds `name`; wakes the stream if it is new.
    pub fn add(&self, name: ServiceRef) {
        let new = lock(&self.names).insert(name);
        if new {
            self.changed.notify_one();
        }
    }

    /// Removes `names`; wakes the stream if one was there.
    pub fn remove(&self, names: &[ServiceRef]) {
        let removed = {
            let mut all = lock(&self.names);
            names.iter().filter(|n| all.remove(*n)).count() > 0
        };
        if removed {
            self.changed.notify_one();
        }
    }

    /// The services wanted now.
    pub fn names(&self) -> BTreeSet<ServiceRef> {
        lock(&self.names).clone()
    }

    /// Resolves when a service was added or removed since the last call.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    /// Publishes a new compile; streams whose config changed push it. Returns the one it
    /// let go of (older than the recent ones kept), for the caller to drop where that
    /// costs the runtime nothing.
    pub fn publish(&self, published: Published) -> Option<Arc<Published>> {
        let replaced = self.current.send_replace(Some(Arc::new(published)))?;
        let mut recent = lock(&self.recent);
        recent.push_back(replaced);
        (recent.len() > RECENT_COMPILES)
            .then(|| recent.pop_front())
            .flatten()
    }

    /// The compiles before the current one, newest first.
    pub fn recent(&self) -> Vec<Arc<Published>> {
        lock(&self.recent).iter().rev().cloned().collect()
    }

    /// The latest compile, once there is one.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.current.borrow().clone()
    }

    /// Follows publications.
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Published>>> {
        self.current.subscribe()
    }

    /// The workload `pod`, waiting for a first compile that knows it. A pod may connect
    /// before the operator's watch has seen it (it starts within milliseconds of being
    /// created), so an unknown pod is given `wait` to appear.
    pub async fn workload(
        &self,
        pod: &ObjectKey,
        wait: std::time::Duration,
    ) -> Option<Arc<Workload>> {
        let mut rx = self.subscribe();
        let found = tokio::time::timeout(wait, async {
            loop {
                if let Some(w) = rx
                    .borrow_and_update()
                    .as_ref()
                    .and_then(|p| p.snapshot.workloads.get(pod).cloned())
                {
                    return Some(w);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        found.ok().flatten()
    }

    /// Records the version a proxy applied; returns the one it held before, if any.
    pub fn report_applied(&self, pod: ObjectKey, version: String) -> Option<String> {
        let before = {
            let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            applied.insert(pod, version.clone())
        };
        if before.as_ref() != Some(&version) {
            self.applied_changed.send_modify(|n| *n += 1);
        }
        before
    }

    /// How long ago the change behind `version` was noticed, when `pod` just moved to it
    /// from another version (a proxy's first config, or one it held before a restart,
    /// is no change and says nothing of latency).
    pub fn applied_after(
        &self,
        pod: &ObjectKey,
        version: &str,
        before: Option<&str>,
    ) -> Option<std::time::Duration> {
        let before = before?;
        if before == version {
            return None;
        }
        let current = self.current()?;
        is_current(&lock(&self.held), &current, pod, version).then(|| current.seen_at.elapsed())
    }

    /// Forgets proxies whose workloads are gone.
    pub fn retain_applied(&self, live: &crate::compiler::Configs) {
        lock(&self.applied).retain(|k, _| live.contains_key(k));
        lock(&self.held).retain(|k, _| live.contains_key(k));
        self.ledger.retain(|k| live.contains_key(k));
    }

    /// What this replica heard of each proxy besides its version.
    pub fn ledger(&self) -> &crate::debug::ProxyLedger {
        &self.ledger
    }

    /// The versions proxies reported, by workload; a proxy holding its view of the
    /// current compile counts as holding that compile's whole config.
    pub fn applied(&self) -> HashMap<ObjectKey, String> {
        let mut applied = lock(&self.applied).clone();
        if let Some(current) = self.current() {
            let held = lock(&self.held);
            for (pod, version) in applied.iter_mut() {
                if let Some(whole) = whole_if_view(&held, &current, pod, version) {
                    *version = whole;
                }
            }
        }
        applied
    }

    /// The workloads of `published` whose proxy has not reported holding its config
    /// there (not connected, or not applied yet), read under the lock rather than copied
    /// out.
    pub fn lagging<'a>(&self, published: &'a Published) -> Vec<&'a ObjectKey> {
        let applied = lock(&self.applied);
        let held = lock(&self.held);
        published
            .configs
            .keys()
            .filter(|pod| {
                applied
                    .get(*pod)
                    .is_none_or(|v| !is_current(&held, published, pod, v))
            })
            .collect()
    }

    /// The services each on-demand proxy reported holding.
    pub fn held(&self) -> HashMap<ObjectKey, Vec<ServiceRef>> {
        lock(&self.held).clone()
    }

    /// The services the proxies of `workload`'s siblings hold (see [`siblings`]), as
    /// their reports say: what a new replica's app will call, given to its proxy before
    /// its first call.
    pub fn siblings_hold(&self, workload: &Workload) -> BTreeSet<ServiceRef> {
        let Some(current) = self.current() else {
            return BTreeSet::new();
        };
        let workloads = &current.snapshot.workloads;
        lock(&self.held)
            .iter()
            .filter(|(pod, _)| workloads.get(*pod).is_some_and(|w| siblings(w, workload)))
            .flat_map(|(_, names)| names.iter().cloned())
            .collect()
    }

    /// Registers what on-demand proxy `pod` holds as its stream opens (replacing a
    /// stream it had before).
    pub fn register_wanted(&self, pod: &ObjectKey, names: BTreeSet<ServiceRef>) -> Arc<Wanted> {
        let wanted = Arc::new(Wanted::new(names));
        lock(&self.wanted).insert(pod.clone(), wanted.clone());
        wanted
    }

    /// Forgets `wanted` as its stream ends (unless a newer stream replaced it).
    pub fn unregister_wanted(&self, pod: &ObjectKey, wanted: &Arc<Wanted>) {
        let mut all = lock(&self.wanted);
        if all.get(pod).is_some_and(|w| Arc::ptr_eq(w, wanted)) {
            all.remove(pod);
        }
    }

    /// Adds `name` to what `pod`'s stream sends it; `false` when `pod` has no on-demand
    /// stream open on this replica.
    pub fn want(&self, pod: &ObjectKey, name: ServiceRef) -> bool {
        self.wanted_of(pod).map(|w| w.add(name)).is_some()
    }

    /// Removes `names` from what `pod`'s stream sends it; `false` when `pod` has no
    /// on-demand stream open on this replica.
    pub fn unwant(&self, pod: &ObjectKey, names: &[ServiceRef]) -> bool {
        self.wanted_of(pod).map(|w| w.remove(names)).is_some()
    }

    /// What `pod`'s on-demand stream on this replica holds, if it has one.
    fn wanted_of(&self, pod: &ObjectKey) -> Option<Arc<Wanted>> {
        lock(&self.wanted).get(pod).cloned()
    }

    /// Records the services `pod`'s proxy holds (on demand), as its reports say.
    pub fn report_held(&self, pod: &ObjectKey, held: Vec<ServiceRef>) {
        let changed = {
            let mut all = lock(&self.held);
            let before = all.insert(pod.clone(), held.clone());
            before.as_ref() != Some(&held)
        };
        if changed {
            self.applied_changed.send_modify(|n| *n += 1);
        }
    }

    /// How many times a proxy reported a new version or new services held: what was
    /// worked out from the reports holds while this is the same.
    pub fn reports(&self) -> u64 {
        *self.applied_changed.borrow()
    }

    /// Ticks whenever a proxy reports a new version.
    pub fn applied_changes(&self) -> watch::Receiver<u64> {
        self.applied_changed.subscribe()
    }
}

/// Whether `version` is `pod`'s config in `current`: the whole config, or its view of it
/// holding the services it reported.
fn is_current(
    held: &HashMap<ObjectKey, Vec<ServiceRef>>,
    current: &Published,
    pod: &ObjectKey,
    version: &str,
) -> bool {
    current.catalog.version_of(pod).as_deref() == Some(version)
        || whole_if_view(held, current, pod, version).is_some()
}

/// The whole config's version of `pod` in `current` when `version` is the version of its
/// view of `current` holding the services it reported (the same on every replica).
fn whole_if_view(
    held: &HashMap<ObjectKey, Vec<ServiceRef>>,
    current: &Published,
    pod: &ObjectKey,
    version: &str,
) -> Option<String> {
    let names = held.get(pod)?;
    let own = current.catalog.own.get(pod)?;
    let set = &current.catalog.set;
    let mut positions: Vec<usize> = names.iter().filter_map(|n| set.index(n)).collect();
    positions.sort_unstable();
    positions.dedup();
    (current.catalog.view_version(own, &positions) == version)
        .then(|| current.catalog.whole_version(own))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use braid_api::config::ProxyConfig;

    use super::*;

    /// Publishes a compile where `pod`'s own sections are `own`; returns the version of
    /// its whole config there.
    fn publish(hub: &Hub, pod: &ObjectKey, own: &str, seen_at: Instant) -> String {
        use crate::compiler::{Catalog, Digest256};
        let catalog = Catalog {
            set: Default::default(),
            own: [(pod.clone(), Digest256::of(own))].into_iter().collect(),
        };
        let version = catalog.version_of(pod).unwrap();
        hub.publish(Published {
            snapshot: Arc::default(),
            configs: [(pod.clone(), Arc::new(ProxyConfig::default()))]
                .into_iter()
                .collect(),
            catalog: Arc::new(catalog),
            seen_at,
        });
        version
    }

    #[test]
    fn apply_latency_counts_changes_a_proxy_moved_to_and_nothing_else() {
        let hub = Hub::default();
        let pod = ObjectKey::new("shop", "payments-a");
        let noticed = Instant::now() - Duration::from_secs(3);
        let v1 = publish(&hub, &pod, "1", noticed);
        // A proxy's first config (a new pod, or one reconnecting to a restarted
        // operator) is no change: however old the compile, it says nothing of latency.
        let before = hub.report_applied(pod.clone(), v1.clone());
        assert_eq!(before, None);
        assert_eq!(hub.applied_after(&pod, &v1, before.as_deref()), None);
        // Moving to the current version: timed from when the change was noticed.
        let v2 = publish(&hub, &pod, "2", noticed);
        let before = hub.report_applied(pod.clone(), v2.clone());
        assert_eq!(before.as_deref(), Some(v1.as_str()));
        let took = hub.applied_after(&pod, &v2, before.as_deref()).unwrap();
        assert!(took >= Duration::from_secs(3), "{took:?}");
        // The same version again, or one that is no longer current: nothing.
        let before = hub.report_applied(pod.clone(), v2.clone());
        assert_eq!(hub.applied_after(&pod, &v2, before.as_deref()), None);
        publish(&hub, &pod, "3", noticed);
        let before = hub.report_applied(pod.clone(), v1.clone());
        assert_eq!(hub.applied_after(&pod, &v1, before.as_deref()), None);
    }

    /// A compile with `services` (each its own digest) and `pod`'s config.
    fn publish_with(hub: &Hub, pod: &ObjectKey, services: &[&str]) -> Arc<Published> {
        use braid_api::config::Service;

        use crate::compiler::{Catalog, Digest256, ServiceSet};
        let services: Vec<Service> = services
            .iter()
            .map(|n| {
                let r: ServiceRef = n.parse().unwrap();
                Service {
                    name: r.name,
                    namespace: r.namespace,
                    ..Default::default()
                }
            })
            .collect();
        let digests = services.iter().map(Digest256::of).collect();
        hub.publish(Published {
            snapshot: Arc::default(),
            configs: [(pod.clone(), Arc::new(ProxyConfig::default()))]
                .into_iter()
                .collect(),
            catalog: Arc::new(Catalog {
                set: Arc::new(ServiceSet::new(services.into(), digests)),
                own: [(pod.clone(), Digest256::of("own"))].into_iter().collect(),
            }),
            seen_at: Instant::now(),
        });
        hub.current().unwrap()
    }

    #[test]
    fn a_proxy_holding_its_view_of_the_current_compile_is_current_on_any_replica() {
        // The leader: the proxy streams from another replica, only its reports arrive.
        let hub = Hub::default();
        let pod = ObjectKey::new("shop", "web-0");
        let first = publish_with(&hub, &pod, &["shop/a", "shop/b"]);
        let view = first.catalog.view_version(&first.catalog.own[&pod], &[1]);
        hub.report_applied(pod.clone(), view.clone());
        assert_eq!(
            hub.applied()[&pod],
            view,
            "without what it holds: as reported"
        );
        assert_eq!(hub.lagging(&first).len(), 1);

        let mut ticks = hub.applied_changes();
        ticks.borrow_and_update();
        hub.report_held(&pod, vec!["shop/b".parse().unwrap()]);
        assert!(ticks.has_changed().unwrap(), "status looks again");
        assert_eq!(hub.applied()[&pod], first.catalog.version_of(&pod).unwrap());
        assert!(hub.lagging(&first).is_empty());

        // A compile that changes a service it does not hold: still current.
        let mut changed = vec!["shop/a", "shop/b"];
        changed.push("shop/c");
        let second = publish_with(&hub, &pod, &changed);
        assert_eq!(
            hub.applied()[&pod],
            second.catalog.version_of(&pod).unwrap()
        );
        assert!(hub.lagging(&second).is_empty());
        // One that changes what it holds (here: b is gone): behind until it applies.
        let third = publish_with(&hub, &pod, &["shop/a"]);
        assert_eq!(hub.applied()[&pod], view);
        assert_eq!(hub.lagging(&third).len(), 1);
    }

    #[test]
    fn discoveries_reach_the_stream_of_the_pod_that_asked() {
        let hub = Hub::default();
        let pod = ObjectKey::new("shop", "web-0");
        let name: ServiceRef = "shop/payments".parse().unwrap();
        assert!(!hub.want(&pod, name.clone()), "no stream open");
        let wanted = hub.register_wanted(&pod, BTreeSet::new());
        assert!(hub.want(&pod, name.clone()));
        assert_eq!(wanted.names(), BTreeSet::from([name.clone()]));
        // A newer stream of the same pod replaces it; the old one ending changes nothing.
        let newer = hub.register_wanted(&pod, BTreeSet::new());
        hub.unregister_wanted(&pod, &wanted);
        assert!(hub.want(&pod, name.clone()));
        assert_eq!(newer.names().len(), 1);
        hub.unregister_wanted(&pod, &newer);
        assert!(!hub.want(&pod, name));
    }
}
