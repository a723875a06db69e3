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

    /// Records the version a proxy applied.
    pub fn report_applied(&self, pod: ObjectKey, version: String) {
        let changed = {
            let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            applied.insert(pod, version.clone()).as_ref() != Some(&version)
        };
        if changed {
            self.applied_changed.send_modify(|n| *n += 1);
        }
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
