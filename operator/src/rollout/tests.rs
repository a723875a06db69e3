//! The rollout loop on snapshots written as the directory source's YAML, with a
//! recording event sink: leading, following, resuming, and what status shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_api::control::{SourceCount, TargetCount, Traffic};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::run::Memory;
use super::*;
use crate::compiler::{Options, compile};
use crate::hub::{Hub, Published};
use crate::registry::Progress;
use crate::registry::{ObjectKey, Snapshot};
use braid_crds::encryption_policy::EncryptionPhase;

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
- {name: legacy, namespace: shop, ips: [10.0.0.50], labels: {app: legacy}, meshed: false}
"#;

const AUTO: &str = "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop}\nspec: {selector: {matchLabels: {app: payments}}, mode: Permissive, rollout: {percent: 0, auto: {steps: [50, 100], interval: 10s, enforceStrict: true}}}\n";

use crate::sink::recorded::RecordedEvents as Events;

struct Rig {
    rollout: RolloutLoop,
    hub: Arc<Hub>,
    events: Arc<Events>,
    view: watch::Receiver<Arc<EncryptionView>>,
    memory: Memory,
}

fn rig(snapshot: Snapshot, leader: bool) -> Rig {
    let events = Arc::new(Events::default());
    let (_, reports) = mpsc::channel(1);
    let (view_tx, view) = watch::channel(Arc::new(EncryptionView::new()));
    let hub = Arc::new(Hub::default());
    let compiled = compile(&snapshot, &Options::default());
    hub.publish(Published {
        configs: compiled.configs,
        snapshot: Arc::new(snapshot),
        catalog: compiled.catalog,
        seen_at: Instant::now(),
    });
    Rig {
        hub: hub.clone(),
        rollout: RolloutLoop {
            reports,
            hub,
            sink: events.clone(),
            leader: watch::channel(leader).1,
            view: view_tx,
            trust_domain: "cluster.local".into(),
        },
        events,
        view,
        memory: Memory::default(),
    }
}

fn key() -> ObjectKey {
    ObjectKey::new("shop", "pay")
}

fn reasons(events: &Events) -> Vec<String> {
    events
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.reason.clone())
        .collect()
}

impl Rig {
    async fn tick(&mut self, now: Instant) {
        self.rollout
            .tick(&mut self.memory, now, Timestamp::now())
            .await;
    }

    /// Where the rollout stands in what status shows (and so, once written and read
    /// back, in what every replica compiles).
    fn percent(&self) -> Option<Progress> {
        self.view.borrow().get(&key()).map(|s| Progress {
            percent: s.percent,
            strict: s.phase == EncryptionPhase::Strict,
        })
    }

    /// Status records `progress` for the policy, as the last leader wrote it.
    fn record(&self, progress: Progress) {
        let snapshot = self.hub.current().unwrap().snapshot.clone();
        let policy = snapshot.encryption_policies[&key()]
            .accepted
            .clone()
            .unwrap();
        self.events.statuses.lock().unwrap().insert(
            (crate::registry::Kind::EncryptionPolicy, key()),
            serde_json::json!({
                "currentPercent": progress.percent,
                "phase": if progress.strict { "Strict" } else { "RollingOut" },
                "progressOf": crate::registry::progress::progress_of(&policy.spec),
            }),
        );
    }

    /// Every proxy reports the config it is served now.
    fn all_applied(&self) {
        let current = self.hub.current().unwrap();
        for pod in current.configs.keys() {
            let version = current.catalog.version_of(pod).unwrap();
            self.hub.report_applied(pod.clone(), version);
        }
    }
}

/// Callers' requests to payments, `failures` of them failed.
fn calls(requests: u64, failures: u64) -> Traffic {
    Traffic {
        outbound: vec![TargetCount {
            target: "payments.shop:80".into(),
            requests,
            failures,
        }],
        ..Traffic::default()
    }
}

const S: Duration = Duration::from_secs(1);

#[tokio::test]
async fn the_leader_steps_through_and_enforces_strict_once_plaintext_stops() {
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, AUTO), true);
    let t0 = Instant::now();
    // The legacy pod still calls in plaintext.
    let plaintext = Traffic {
        inbound_plaintext: 30,
        plaintext_sources: vec![SourceCount {
            address: "10.0.0.50".parse().unwrap(),
            requests: 30,
        }],
        ..Traffic::default()
    };
    let server = ObjectKey::new("shop", "payments-a");
    let checkout = ObjectKey::new("shop", "checkout");
    rig.memory.book.add(server.clone(), plaintext.clone(), t0);
    rig.memory.book.add(checkout.clone(), calls(30, 0), t0);
    rig.tick(t0).await;
    assert_eq!(
        rig.percent(),
        Some(Progress {
            percent: 0,
            strict: false
        })
    );
    rig.tick(t0 + 10 * S).await;
    rig.memory
        .book
        .add(server.clone(), plaintext.clone(), t0 + 15 * S);
    rig.memory
        .book
        .add(checkout.clone(), calls(30, 0), t0 + 15 * S);
    rig.tick(t0 + 20 * S).await;
    assert_eq!(
        rig.percent(),
        Some(Progress {
            percent: 100,
            strict: false
        })
    );
    {
        let view = rig.view.borrow();
        let state = &view[&key()];
        assert_eq!(state.phase, EncryptionPhase::Encrypted);
        assert_eq!(state.traffic.plaintext_requests, 30);
        assert_eq!(state.traffic.window_seconds, 10);
        assert_eq!(
            state.plaintext_sources[0].pod.as_deref(),
            Some("shop/legacy")
        );
        assert_eq!(state.plaintext_sources[0].identity, None, "not meshed");
        assert!(
            matches!(state.safety, Safety::PlaintextSeen(_)),
            "{:?}",
            state.safety
        );
    }
    // Plaintext in the last interval: no Strict yet.
    rig.memory.book.add(server.clone(), plaintext, t0 + 25 * S);
    rig.tick(t0 + 30 * S).await;
    assert!(!rig.percent().unwrap().strict);
    // A whole interval with only mTLS, but the callers have not applied the 100 % config
    // (one may be on another replica, still at 50 %): unknown, not safe.
    let mtls = Traffic {
        inbound_mtls: 40,
        ..Traffic::default()
    };
    rig.memory.book.add(server, mtls, t0 + 33 * S);
    rig.tick(t0 + 36 * S).await;
    assert!(!rig.percent().unwrap().strict);
    assert_eq!(
        rig.view.borrow()[&key()].hold,
        Some(Hold::NotSafe(Safety::CallersBehind(2)))
    );
    rig.all_applied();
    rig.tick(t0 + 37 * S).await;
    assert_eq!(
        rig.percent(),
        Some(Progress {
            percent: 100,
            strict: true
        })
    );
    assert_eq!(rig.view.borrow()[&key()].phase, EncryptionPhase::Strict);
    assert_eq!(
        reasons(&rig.events),
        [
            "RolloutStarted",
            "RolloutAdvanced",
            "RolloutAdvanced",
            "RolloutWaiting",
            "RolloutWaiting",
            "StrictEnforced"
        ]
    );
}

#[tokio::test]
async fn a_rollout_nobody_calls_holds_and_says_why() {
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, AUTO), true);
    rig.all_applied();
    let t0 = Instant::now();
    for i in 0..=6 {
        rig.tick(t0 + 10 * i * S).await;
    }
    assert_eq!(
        rig.percent(),
        Some(Progress {
            percent: 0,
            strict: false
        }),
        "nothing measured, nothing moves"
    );
    assert_eq!(reasons(&rig.events), ["RolloutStarted", "RolloutWaiting"]);
    let view = rig.view.borrow();
    assert_eq!(
        view[&key()].hold,
        Some(Hold::TooFewRequests {
            seen: 0,
            needed: 20
        })
    );
    assert_eq!(view[&key()].safety, Safety::NotObserved);
}

#[tokio::test]
async fn callers_failing_more_send_the_rollout_back() {
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, AUTO), true);
    let t0 = Instant::now();
    let checkout = ObjectKey::new("shop", "checkout");
    rig.memory.book.add(checkout.clone(), calls(100, 0), t0);
    rig.tick(t0).await;
    rig.tick(t0 + 10 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 50);
    rig.memory.book.add(checkout, calls(100, 30), t0 + 11 * S);
    rig.tick(t0 + 11 * S).await;
    assert_eq!(
        rig.percent().unwrap().percent,
        50,
        "not on a step's first moments"
    );
    rig.tick(t0 + 13 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 0);
    assert_eq!(reasons(&rig.events).last().unwrap(), "RolloutSteppedBack");
}

#[tokio::test]
async fn followers_write_nothing_and_a_new_leader_resumes_from_a_fresh_read_of_status() {
    // This replica's source has not yet read back the last leader's final step: its
    // snapshot says 0 %, the status itself 50 %.
    let mut snapshot = crate::source::dir::snapshot_of(REGISTRY, AUTO);
    snapshot.rollout_status.insert(
        key(),
        Progress {
            percent: 0,
            strict: false,
        },
    );
    let fifty = Progress {
        percent: 50,
        strict: false,
    };
    let mut follower = rig(snapshot.clone(), false);
    follower.record(fifty);
    let t0 = Instant::now();
    follower.tick(t0).await;
    follower.tick(t0 + 60 * S).await;
    assert!(
        follower.view.borrow().is_empty(),
        "followers write no status"
    );
    assert!(
        reasons(&follower.events).is_empty(),
        "followers record nothing"
    );

    let mut leader = rig(snapshot, true);
    leader.record(fifty);
    leader.tick(t0).await;
    assert_eq!(leader.percent(), Some(fifty), "not the stale 0 %");
    assert_eq!(reasons(&leader.events), ["RolloutResumed"]);
    leader
        .memory
        .book
        .add(ObjectKey::new("shop", "checkout"), calls(25, 0), t0 + 5 * S);
    leader.tick(t0 + 10 * S).await;
    assert_eq!(leader.percent().unwrap().percent, 100);
}

/// A sink whose statuses cannot be read (the API server unreachable).
struct Unreadable(Events);

impl crate::sink::StatusSink for Unreadable {
    fn apply<'a>(
        &'a self,
        update: &'a crate::sink::StatusUpdate,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::sink::StatusError>> {
        self.0.apply(update)
    }
    fn event<'a>(
        &'a self,
        event: &'a crate::sink::Event,
    ) -> futures::future::BoxFuture<'a, Result<(), crate::sink::StatusError>> {
        self.0.event(event)
    }
    fn read<'a>(
        &'a self,
        _: crate::registry::Kind,
        key: &'a ObjectKey,
    ) -> futures::future::BoxFuture<'a, Result<Option<serde_json::Value>, crate::sink::StatusError>>
    {
        Box::pin(async move {
            Err(crate::sink::StatusError {
                what: format!("status of {key}"),
                message: "connection refused".into(),
            })
        })
    }
}

#[tokio::test]
async fn a_leader_that_cannot_read_where_a_rollout_stands_neither_moves_nor_writes_it() {
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, AUTO), true);
    let unreadable = Arc::new(Unreadable(Events::default()));
    rig.rollout.sink = unreadable.clone();
    let t0 = Instant::now();
    rig.tick(t0).await;
    rig.tick(t0 + 60 * S).await;
    assert_eq!(rig.percent(), None, "no status to write: it stays as it is");
    assert!(reasons(&unreadable.0).is_empty(), "not started over");
    // Readable again (nothing recorded): it starts.
    rig.rollout.sink = rig.events.clone();
    rig.tick(t0 + 61 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 0);
    assert_eq!(reasons(&rig.events), ["RolloutStarted"]);
}

#[tokio::test]
async fn new_counts_alone_reach_status_at_most_every_thirty_seconds() {
    let statik = "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop}\nspec: {mode: Permissive}\n";
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, statik), true);
    let t0 = Instant::now();
    rig.tick(t0).await;
    let mtls = |n| Traffic {
        inbound_mtls: n,
        ..Traffic::default()
    };
    let server = ObjectKey::new("shop", "payments-a");
    rig.memory.book.add(server.clone(), mtls(5), t0 + S);
    rig.tick(t0 + 2 * S).await;
    assert_eq!(
        rig.view.borrow()[&key()].traffic.mtls_requests,
        0,
        "held back"
    );
    rig.tick(t0 + 31 * S).await;
    assert_eq!(rig.view.borrow()[&key()].traffic.mtls_requests, 5);
    assert_eq!(rig.view.borrow()[&key()].phase, EncryptionPhase::Encrypted);
}

#[tokio::test]
async fn an_edit_of_the_interval_keeps_where_the_rollout_stands() {
    let mut rig = rig(crate::source::dir::snapshot_of(REGISTRY, AUTO), true);
    let t0 = Instant::now();
    let checkout = ObjectKey::new("shop", "checkout");
    rig.memory.book.add(checkout.clone(), calls(30, 0), t0);
    rig.tick(t0).await;
    rig.tick(t0 + 10 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 50);
    // The administrator slows the rollout down: a new generation, the same meaning.
    let slower = AUTO.replace("interval: 10s", "interval: 20s");
    let snapshot = crate::source::dir::snapshot_of(REGISTRY, &slower);
    let compiled = compile(&snapshot, &Options::default());
    rig.hub.publish(Published {
        configs: compiled.configs,
        snapshot: Arc::new(snapshot),
        catalog: compiled.catalog,
        seen_at: Instant::now(),
    });
    rig.tick(t0 + 11 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 50, "not back to 0 %");
    assert_eq!(
        reasons(&rig.events),
        ["RolloutStarted", "RolloutAdvanced"],
        "not started over"
    );
    // Other steps mean another rollout: it starts over.
    let other = AUTO.replace("steps: [50, 100]", "steps: [25, 100]");
    let snapshot = crate::source::dir::snapshot_of(REGISTRY, &other);
    let compiled = compile(&snapshot, &Options::default());
    rig.hub.publish(Published {
        configs: compiled.configs,
        snapshot: Arc::new(snapshot),
        catalog: compiled.catalog,
        seen_at: Instant::now(),
    });
    rig.tick(t0 + 12 * S).await;
    assert_eq!(rig.percent().unwrap().percent, 0);
}
