//! The access loop on snapshots written as the directory source's YAML, with a recording
//! sink: evidence in status, the switch to Enforce after a clean interval, the step back,
//! and a new leader resuming from what status records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_api::control::{AccessCount, RefusedSource};
use braid_crds::access_policy::AccessPhase;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::run::Memory;
use super::*;
use crate::compiler::{Options, compile};
use crate::hub::{Hub, Published};
use crate::registry::{Kind, ObjectKey, Snapshot};
use crate::sink::StatusSink;
use crate::sink::recorded::RecordedEvents as Events;

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
- {name: stray, namespace: shop, ips: [10.0.0.7], labels: {app: stray}, serviceAccount: stray}
"#;

const ROLLOUT: &str = "apiVersion: braid.dev/v1alpha1\nkind: AccessPolicy\nmetadata: {name: pay, namespace: shop}\nspec:\n  selector: {matchLabels: {app: payments}}\n  rollout: {interval: 10s, minRequests: 5}\n  rules: [{from: [{serviceAccount: checkout}]}]\n";

const STRAY: &str = "spiffe://cluster.local/ns/shop/sa/stray";
const CHECKOUT: &str = "spiffe://cluster.local/ns/shop/sa/checkout";

struct Rig {
    access: AccessLoop,
    events: Arc<Events>,
    view: watch::Receiver<Arc<AccessView>>,
    memory: Memory,
}

fn rig(resources: &str, leader: bool, events: Arc<Events>) -> Rig {
    let snapshot: Snapshot = crate::source::dir::snapshot_of(REGISTRY, resources);
    let (_, reports) = mpsc::channel(1);
    let (view_tx, view) = watch::channel(Arc::new(AccessView::new()));
    let hub = Arc::new(Hub::default());
    let compiled = compile(&snapshot, &Options::default());
    // Every proxy holds the config in force.
    for pod in compiled.configs.keys() {
        if let Some(version) = compiled.catalog.version_of(pod) {
            hub.report_applied(pod.clone(), version);
        }
    }
    hub.publish(Published {
        configs: compiled.configs,
        snapshot: Arc::new(snapshot),
        catalog: compiled.catalog,
        seen_at: Instant::now(),
    });
    Rig {
        access: AccessLoop {
            reports,
            hub,
            sink: events.clone(),
            leader: watch::channel(leader).1,
            view: view_tx,
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

fn count(allowed: u64, refused: Option<(&str, u64, u64, bool)>) -> Vec<AccessCount> {
    vec![AccessCount {
        policy: "shop/pay".into(),
        allowed,
        would_deny: refused.map_or(0, |r| r.1),
        denied: refused.map_or(0, |r| r.2),
        denied_allowed_before: refused.map_or(0, |r| if r.3 { r.2 } else { 0 }),
        refused_sources: refused
            .map(|(id, would_deny, denied, allowed_before)| RefusedSource {
                identity: Some(id.into()),
                address: Some("10.0.0.7".parse().unwrap()),
                request: Some("GET /orders".into()),
                would_deny,
                denied,
                allowed_before,
            })
            .into_iter()
            .collect(),
    }]
}

impl Rig {
    /// A report from payments-a's proxy (which the policy covers) at `at`.
    fn report(&mut self, counts: Vec<AccessCount>, at: Instant) {
        self.report_from("payments-a", counts, at);
    }

    fn report_from(&mut self, pod: &str, counts: Vec<AccessCount>, at: Instant) {
        let reporter = ObjectKey::new("shop", pod);
        self.memory
            .pending
            .push((at, AccessBatch { reporter, counts }));
    }

    async fn tick(&mut self, at: Instant) -> AccessState {
        self.access
            .tick(&mut self.memory, at, Timestamp::now())
            .await;
        self.view.borrow().get(&key()).cloned().unwrap()
    }
}

#[tokio::test]
async fn audit_names_the_stray_caller_then_a_clean_interval_enforces() {
    let mut r = rig(ROLLOUT, true, Arc::default());
    let t0 = Instant::now();
    r.report(count(10, Some((STRAY, 3, 0, false))), t0);
    let s = r.tick(t0).await;
    assert_eq!(s.phase, AccessPhase::Auditing);
    assert_eq!((s.decisions.allowed, s.decisions.would_deny), (10, 3));
    assert_eq!(s.denied_sources[0].identity.as_deref(), Some(STRAY));
    assert_eq!(s.denied_sources[0].pod.as_deref(), Some("shop/stray"));
    assert_eq!(s.denied_sources[0].namespace.as_deref(), Some("shop"));
    assert_eq!(s.safety.1, "RefusalsSeen");
    assert_eq!(reasons(&r.events), ["RolloutStarted"]);
    // The stray caller goes on: a full interval later, still Audit.
    let t1 = t0 + Duration::from_secs(11);
    r.report(count(10, Some((STRAY, 1, 0, false))), t1);
    assert_eq!(r.tick(t1).await.phase, AccessPhase::Auditing);
    // It stops; once a whole interval has no would-be refusal, Enforce.
    let t2 = t1 + Duration::from_secs(11);
    r.report(count(10, None), t2);
    let s = r.tick(t2).await;
    assert_eq!(s.phase, AccessPhase::Enforcing);
    assert_eq!(s.safety.0, "True");
    assert_eq!(reasons(&r.events), ["RolloutStarted", "Enforced"]);
    // The stray caller comes back and is refused: it was never let through, so the
    // policy stays enforced.
    let t3 = t2 + Duration::from_secs(2);
    r.report(count(10, Some((STRAY, 0, 4, false))), t3);
    let s = r.tick(t3).await;
    assert_eq!(s.phase, AccessPhase::Enforcing);
    assert_eq!(s.decisions.denied, 4);
    assert_eq!(reasons(&r.events), ["RolloutStarted", "Enforced"]);
}

#[tokio::test]
async fn refusing_a_caller_let_through_while_auditing_steps_back() {
    let mut r = rig(ROLLOUT, true, Arc::default());
    let t0 = Instant::now();
    r.report(count(10, None), t0);
    r.tick(t0).await;
    let t1 = t0 + Duration::from_secs(11);
    r.report(count(10, None), t1);
    assert_eq!(r.tick(t1).await.phase, AccessPhase::Enforcing);
    let t2 = t1 + Duration::from_secs(1);
    r.report(count(10, Some((CHECKOUT, 0, 1, true))), t2);
    let s = r.tick(t2).await;
    assert_eq!(s.phase, AccessPhase::Auditing);
    assert!(s.denied_sources[0].allowed_before);
    assert_eq!(
        reasons(&r.events),
        ["RolloutStarted", "Enforced", "RolledBack"]
    );
    let events = r.events.events.lock().unwrap();
    let note = &events[2].note;
    assert!(events[2].warning);
    assert!(
        note.contains(CHECKOUT) && note.contains("back to Audit"),
        "{note}"
    );
}

#[tokio::test]
async fn a_new_leader_resumes_enforcing_from_status_and_a_follower_shows_nothing() {
    let events = Arc::new(Events::default());
    events
        .apply(&crate::sink::StatusUpdate {
            kind: Kind::AccessPolicy,
            key: key(),
            status: serde_json::json!({
                "observedGeneration": 1,
                "phase": "Enforcing",
                "phaseStartedAt": "2026-12-01T00:00:00Z",
            }),
        })
        .await
        .unwrap();
    let mut follower = rig(ROLLOUT, false, events.clone());
    follower.report(count(10, None), Instant::now());
    follower
        .access
        .tick(&mut follower.memory, Instant::now(), Timestamp::now())
        .await;
    assert!(follower.view.borrow().is_empty());
    // What it heard as a follower is let go: leading later, it does not count it.
    assert!(follower.memory.pending.is_empty());
    let mut leader = rig(ROLLOUT, true, events.clone());
    let s = leader.tick(Instant::now()).await;
    assert_eq!(
        s.phase,
        AccessPhase::Enforcing,
        "a failover never lowers protection"
    );
    assert_eq!(
        s.phase_started_at.map(|t| t.to_string()).as_deref(),
        Some("2026-12-01T00:00:00Z")
    );
    assert_eq!(reasons(&events), ["RolloutResumed"]);
    // Without a whole interval heard, the new leader claims nothing.
    assert_eq!(s.safety.1, "NotObservedYet");
}

#[tokio::test]
async fn a_policy_without_rollout_shows_its_mode_and_an_edit_of_it_is_an_event() {
    let audit = ROLLOUT.replace(
        "  rollout: {interval: 10s, minRequests: 5}\n",
        "  mode: Audit\n",
    );
    let mut r = rig(&audit, true, Arc::default());
    let t0 = Instant::now();
    assert_eq!(r.tick(t0).await.phase, AccessPhase::Auditing);
    let enforce = audit.replace("mode: Audit", "mode: Enforce");
    let mut r2 = rig(&enforce, true, r.events.clone());
    r2.memory = std::mem::take(&mut r.memory);
    assert_eq!(r2.tick(t0).await.phase, AccessPhase::Enforcing);
    assert_eq!(reasons(&r2.events), ["Enforcing"]);
}

#[tokio::test]
async fn a_report_from_a_pod_the_policy_does_not_cover_is_dropped() {
    let mut r = rig(ROLLOUT, true, Arc::default());
    let t0 = Instant::now();
    // The stray pod's own proxy claims the policy refused nothing and let 50 through.
    r.report_from("stray", count(50, None), t0);
    r.report(count(10, Some((STRAY, 3, 0, false))), t0);
    let s = r.tick(t0).await;
    assert_eq!((s.decisions.allowed, s.decisions.would_deny), (10, 3));
}
