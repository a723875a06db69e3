//! The hub between the compiler and the connected proxies: the latest compiled configs,
//! and the versions proxies report having applied.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use braid_api::config::ProxyConfig;
use tokio::sync::watch;

use crate::registry::{ObjectKey, Snapshot, Workload};

/// One published compile: what every proxy should hold now.
#[derive(Debug)]
pub struct Published {
    /// The snapshot compiled (used to check who may read which config).
    pub snapshot: Arc<Snapshot>,
    /// The config of every meshed workload.
    pub configs: BTreeMap<ObjectKey, Arc<ProxyConfig>>,
    /// When the change that led to this compile was first seen (push latency).
    pub seen_at: Instant,
}

/// Shared by the compile loop (publishes), the stream handlers (follow) and the status
/// loop (reads applied versions).
pub struct Hub {
    current: watch::Sender<Option<Arc<Published>>>,
    applied: Mutex<HashMap<ObjectKey, String>>,
    applied_changed: watch::Sender<u64>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            current: watch::Sender::new(None),
            applied: Mutex::new(HashMap::new()),
            applied_changed: watch::Sender::new(0),
        }
    }
}

impl Hub {
    /// Publishes a new compile; streams whose config changed push it.
    pub fn publish(&self, published: Published) {
        self.current.send_replace(Some(Arc::new(published)));
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
        let config = current.configs.get(pod)?;
        (config.version == version).then(|| current.seen_at.elapsed())
    }

    /// Forgets proxies whose workloads are gone.
    pub fn retain_applied(&self, live: &BTreeMap<ObjectKey, Arc<ProxyConfig>>) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.retain(|k, _| live.contains_key(k));
    }

    /// The versions proxies reported, by workload.
    pub fn applied(&self) -> HashMap<ObjectKey, String> {
        self.applied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The workloads of `configs` whose proxy has not reported holding the config there
    /// (not connected, or not applied yet), read under the lock rather than copied out.
    pub fn lagging<'a>(
        &self,
        configs: &'a BTreeMap<ObjectKey, Arc<ProxyConfig>>,
    ) -> Vec<(&'a ObjectKey, &'a ProxyConfig)> {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        configs
            .iter()
            .filter(|(pod, c)| applied.get(*pod) != Some(&c.version))
            .map(|(pod, c)| (pod, &**c))
            .collect()
    }

    /// Ticks whenever a proxy reports a new version.
    pub fn applied_changes(&self) -> watch::Receiver<u64> {
        self.applied_changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use braid_api::config::ProxyConfig;

    use super::*;

    fn publish(hub: &Hub, pod: &ObjectKey, version: &str, seen_at: Instant) {
        let config = ProxyConfig {
            version: version.into(),
            ..Default::default()
        };
        hub.publish(Published {
            snapshot: Arc::default(),
            configs: [(pod.clone(), Arc::new(config))].into(),
            seen_at,
        });
    }

    #[test]
    fn apply_latency_counts_changes_a_proxy_moved_to_and_nothing_else() {
        let hub = Hub::default();
        let pod = ObjectKey::new("shop", "payments-a");
        let noticed = Instant::now() - Duration::from_secs(3);
        publish(&hub, &pod, "v1", noticed);
        // A proxy's first config (a new pod, or one reconnecting to a restarted
        // operator) is no change: however old the compile, it says nothing of latency.
        let before = hub.report_applied(pod.clone(), "v1".into());
        assert_eq!(before, None);
        assert_eq!(hub.applied_after(&pod, "v1", before.as_deref()), None);
        // Moving to the current version: timed from when the change was noticed.
        publish(&hub, &pod, "v2", noticed);
        let before = hub.report_applied(pod.clone(), "v2".into());
        assert_eq!(before.as_deref(), Some("v1"));
        let took = hub.applied_after(&pod, "v2", before.as_deref()).unwrap();
        assert!(took >= Duration::from_secs(3), "{took:?}");
        // The same version again, or one that is no longer current: nothing.
        let before = hub.report_applied(pod.clone(), "v2".into());
        assert_eq!(hub.applied_after(&pod, "v2", before.as_deref()), None);
        publish(&hub, &pod, "v3", noticed);
        let before = hub.report_applied(pod.clone(), "v1".into());
        assert_eq!(hub.applied_after(&pod, "v1", before.as_deref()), None);
    }
}
