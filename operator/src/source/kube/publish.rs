//! When to build and publish a snapshot: once every store is synced, then after each
//! burst of changes.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::off_runtime::off_runtime;
use crate::registry::{Noticed, Snapshot};

/// The kinds of object the source watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Watched {
    /// core/v1 Services.
    Services,
    /// discovery.k8s.io/v1 EndpointSlices.
    EndpointSlices,
    /// core/v1 Pods.
    Pods,
    /// core/v1 Namespaces opted into the mesh.
    Namespaces,
    /// braid.dev TrafficRoutes.
    TrafficRoutes,
    /// braid.dev EncryptionPolicies.
    EncryptionPolicies,
    /// braid.dev SelfHealings.
    SelfHealings,
    /// braid.dev AccessPolicies.
    AccessPolicies,
}

impl Watched {
    /// Every kind, each of which must be synced before the first snapshot.
    pub const ALL: [Watched; 8] = [
        Self::Services,
        Self::EndpointSlices,
        Self::Pods,
        Self::Namespaces,
        Self::TrafficRoutes,
        Self::EncryptionPolicies,
        Self::SelfHealings,
        Self::AccessPolicies,
    ];

    /// The resource's plural name, as in RBAC rules and error messages.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Services => "services",
            Self::EndpointSlices => "endpointslices.discovery.k8s.io",
            Self::Pods => "pods",
            Self::Namespaces => "namespaces",
            Self::TrafficRoutes => "trafficroutes.braid.dev",
            Self::EncryptionPolicies => "encryptionpolicies.braid.dev",
            Self::SelfHealings => "selfhealings.braid.dev",
            Self::AccessPolicies => "accesspolicies.braid.dev",
        }
    }

    /// Whether this is one of braid's own resources (missing when the CRDs are not installed).
    pub fn is_braid(self) -> bool {
        matches!(
            self,
            Self::TrafficRoutes
                | Self::EncryptionPolicies
                | Self::SelfHealings
                | Self::AccessPolicies
        )
    }
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.plural())
    }
}

/// A store changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signal {
    /// Which store.
    pub watched: Watched,
    /// The store has just been filled by a complete list (first sync, or a re-list).
    pub synced: bool,
}

/// Publishes `build()` on `out` once every kind in [`Watched::ALL`] has been synced, then
/// after every burst of changes: the first signal opens a window of `debounce` (fixed, so
/// constant churn cannot postpone a publication for ever) and one snapshot covers all the
/// window's changes. The first snapshot is always announced, even when empty, since it
/// marks the source synced; later ones only when they differ. (What keeps an invalid
/// resource's last valid version in force is the compile loop's.) Returns when `stop`
/// fires or `signals` ends.
pub async fn publish<S, F>(
    mut signals: S,
    debounce: Duration,
    mut build: F,
    out: &watch::Sender<Arc<Snapshot>>,
    stop: &CancellationToken,
) where
    S: Stream<Item = Signal> + Unpin,
    F: FnMut() -> Snapshot,
{
    let mut synced = BTreeSet::new();
    let mut first = true;
    loop {
        let signal = tokio::select! {
            _ = stop.cancelled() => return,
            s = signals.next() => s,
        };
        let Some(signal) = signal else { return };
        if signal.synced {
            synced.insert(signal.watched);
        }
        let noticed = Noticed::now();
        let window = tokio::time::sleep(debounce);
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = &mut window => break,
                s = signals.next() => match s {
                    Some(s) if s.synced => { synced.insert(s.watched); }
                    Some(_) => {}
                    None => return,
                },
            }
        }
        if synced.len() < Watched::ALL.len() {
            continue;
        }
        // Resolving every selector of a large cluster takes a while: off the workers.
        let mut next = off_runtime(&mut build);
        next.noticed = noticed;
        if first {
            tracing::info!(
                services = next.services.len(),
                workloads = next.workloads.len(),
                traffic_routes = next.traffic_routes.len(),
                encryption_policies = next.encryption_policies.len(),
                self_healings = next.self_healings.len(),
                "kubernetes source synced"
            );
        }
        out.send_if_modified(|cur| {
            if !std::mem::take(&mut first) && **cur == next {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::channel::mpsc;

    use super::*;
    use crate::registry::{ObjectKey, Workload};

    const DEBOUNCE: Duration = Duration::from_millis(30);

    fn workload(name: &str) -> Snapshot {
        let mut s = Snapshot::default();
        let key = ObjectKey::new("shop", name);
        s.workloads.insert(
            key.clone(),
            Arc::new(Workload {
                key,
                ips: vec![],
                labels: Default::default(),
                service_account: "default".into(),
                meshed: true,
                outbound_scope: Vec::new(),
            }),
        );
        s
    }

    struct Harness {
        signals: mpsc::UnboundedSender<Signal>,
        rx: watch::Receiver<Arc<Snapshot>>,
        builds: Arc<AtomicUsize>,
        /// When each build ran.
        built_at: Arc<std::sync::Mutex<Vec<std::time::Instant>>>,
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
    }

    /// Runs `publish` with a build that returns `snapshots[n]` on its n-th call (the last
    /// one after that).
    fn start(snapshots: Vec<Snapshot>) -> Harness {
        let (signals, stream) = mpsc::unbounded();
        let (tx, mut rx) = watch::channel(Arc::new(Snapshot::default()));
        rx.mark_unchanged();
        let builds = Arc::new(AtomicUsize::new(0));
        let built_at = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (b, s, at) = (builds.clone(), stop.clone(), built_at.clone());
        let task = tokio::spawn(async move {
            let build = || {
                at.lock().unwrap().push(std::time::Instant::now());
                let n = b.fetch_add(1, Ordering::SeqCst);
                snapshots[n.min(snapshots.len() - 1)].clone()
            };
            publish(stream, DEBOUNCE, build, &tx, &s).await;
        });
        Harness {
            signals,
            rx,
            builds,
            built_at,
            stop,
            task,
        }
    }

    impl Harness {
        fn send(&self, watched: Watched, synced: bool) {
            self.signals
                .unbounded_send(Signal { watched, synced })
                .unwrap();
        }

        fn sync_all(&self) {
            for w in Watched::ALL {
                self.send(w, true);
            }
        }

        async fn settle(&self) {
            tokio::time::sleep(DEBOUNCE * 4).await;
        }
    }

    #[tokio::test]
    async fn nothing_before_every_store_is_synced_then_the_first_even_if_empty() {
        let h = start(vec![Snapshot::default()]);
        let (last, first) = Watched::ALL.split_last().unwrap();
        for w in first {
            h.send(*w, true);
        }
        h.send(Watched::Pods, false);
        h.settle().await;
        assert_eq!(h.builds.load(Ordering::SeqCst), 0);
        assert!(!h.rx.has_changed().unwrap());

        h.send(*last, true);
        h.settle().await;
        assert_eq!(h.builds.load(Ordering::SeqCst), 1);
        // Equal to the channel's initial value, and announced all the same.
        assert!(h.rx.has_changed().unwrap());
        h.stop.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn a_burst_is_one_snapshot_and_an_unchanged_one_is_not_announced() {
        let mut h = start(vec![workload("a"), workload("b"), workload("b")]);
        h.sync_all();
        h.settle().await;
        assert_eq!(h.builds.load(Ordering::SeqCst), 1);
        assert!(
            h.rx.borrow_and_update()
                .workloads
                .contains_key(&ObjectKey::new("shop", "a"))
        );

        for _ in 0..20 {
            h.send(Watched::Pods, false);
        }
        h.settle().await;
        assert_eq!(h.builds.load(Ordering::SeqCst), 2);
        assert!(h.rx.has_changed().unwrap());
        let published = h.rx.borrow_and_update().clone();
        assert!(
            published
                .workloads
                .contains_key(&ObjectKey::new("shop", "b"))
        );
        // Latency is counted from the burst's first event, a debounce window before the
        // build, not from the build.
        let noticed = published.noticed.0.unwrap();
        let built = *h.built_at.lock().unwrap().last().unwrap();
        assert!(
            built.duration_since(noticed) >= DEBOUNCE,
            "{noticed:?} {built:?}"
        );

        h.send(Watched::Services, false);
        h.settle().await;
        assert_eq!(h.builds.load(Ordering::SeqCst), 3);
        assert!(!h.rx.has_changed().unwrap());
        h.stop.cancel();
        h.task.await.unwrap();
    }

    #[tokio::test]
    async fn ends_with_its_signals() {
        let h = start(vec![Snapshot::default()]);
        drop(h.signals);
        h.task.await.unwrap();
    }
}
