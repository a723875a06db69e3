//! The healer's plan and loop, on snapshots written as the directory source's YAML,
//! with a recording actuator and event sink.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use braid_api::control::Ejection;
use futures::future::BoxFuture;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};

use super::plan::plan;
use super::run::Memory;
use super::*;
use crate::hub::Published;
use crate::registry::{ObjectKey, Snapshot};

const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80, targetPort: 8080, protocol: http}]}
workloads:
- {name: payments-a, namespace: shop, ips: [10.0.0.1], labels: {app: payments}, serviceAccount: payments}
- {name: payments-b, namespace: shop, ips: [10.0.0.2], labels: {app: payments}, serviceAccount: payments}
- {name: payments-c, namespace: shop, ips: [10.0.0.3], labels: {app: payments, braid.dev/quarantined: "true", braid.dev/quarantined-by: heal}, serviceAccount: payments}
- {name: checkout, namespace: shop, ips: [10.0.0.9], labels: {app: checkout}, serviceAccount: checkout}
"#;

fn healing(action: &str, extra: &str) -> String {
    format!(
        "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{name: heal, namespace: shop}}\nspec:\n  selector: {{matchLabels: {{app: payments}}}}\n  outlierDetection: {{consecutiveErrors: 3}}\n  healing: {{action: {action}, cooldown: 60s, minReporters: 2{extra}}}\n"
    )
}

fn snapshot(resources: &str) -> Snapshot {
    snapshot_of(REGISTRY, resources)
}

fn snapshot_of(registry: &str, resources: &str) -> Snapshot {
    crate::source::dir::snapshot_of(registry, resources)
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + secs).unwrap()
}

fn key(name: &str) -> ObjectKey {
    ObjectKey::new("shop", name)
}

fn ejection(ip: &str) -> Ejection {
    Ejection {
        target: "payments.shop:80".into(),
        endpoint: format!("{ip}:8080").parse().unwrap(),
        reason: "consecutive_errors".into(),
        duration_ms: 120_000,
    }
}

/// `reporters` each report `ip` at `when`.
fn report(reports: &mut reports::Reports, ip: &str, reporters: &[&str], when: Timestamp) {
    for r in reporters {
        reports.record(&key(r), &ejection(ip), when);
    }
}

#[test]
fn acts_once_enough_proxies_reported_an_endpoint_for_the_cooldown() {
    let snap = snapshot(&healing("RestartPod", ""));
    let ledger = ledger::Ledger::default();
    let mut reports = reports::Reports::default();
    report(&mut reports, "10.0.0.1", &["checkout"], at(0));

    // One reporter of the two needed: listed, not acted on, even after the cooldown.
    let p = plan(&snap, &reports, &ledger, at(61));
    let unhealthy = &p.unhealthy[&key("heal")];
    assert_eq!(unhealthy.len(), 1);
    assert_eq!(unhealthy[0].pod, "payments-a");
    assert_eq!(unhealthy[0].address, "10.0.0.1:8080");
    assert_eq!(unhealthy[0].reporters, 1);
    assert!(p.due.is_empty());

    // A second reporter: due once both have reported for the cooldown.
    report(&mut reports, "10.0.0.1", &["payments-b"], at(30));
    assert!(plan(&snap, &reports, &ledger, at(89)).due.is_empty());
    let p = plan(&snap, &reports, &ledger, at(90));
    assert_eq!(p.due.len(), 1);
    assert_eq!(
        p.due[0].action,
        braid_crds::self_healing::HealingAction::RestartPod
    );
    assert_eq!(p.due[0].pod.key, key("payments-a"));
    assert_eq!(p.due[0].reporters, 2);
}

#[test]
fn the_hourly_budget_holds_and_unknown_or_quarantined_endpoints_are_left_alone() {
    let snap = snapshot(&healing("RestartPod", ", maxActionsPerHour: 1"));
    let mut ledger = ledger::Ledger::default();
    let mut reports = reports::Reports::default();
    for ip in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.9.9.9"] {
        report(&mut reports, ip, &["checkout", "other"], at(0));
    }
    let p = plan(&snap, &reports, &ledger, at(120));
    // 10.9.9.9 is no endpoint of payments; payments-c is already quarantined.
    assert_eq!(p.unhealthy[&key("heal")].len(), 3);
    assert_eq!(p.due.len(), 1);
    assert_eq!(p.over_budget.len(), 1);
    // Spent: the next hour holds nothing more.
    ledger.record(
        &key("heal"),
        ledger::record_of(
            "payments-a",
            braid_crds::self_healing::HealingAction::RestartPod,
            at(120),
        ),
    );
    let p = plan(&snap, &reports, &ledger, at(130));
    assert!(p.due.is_empty());
    assert_eq!(p.over_budget.len(), 2);
    assert!(!plan(&snap, &reports, &ledger, at(3721)).due.is_empty());
}

#[test]
fn a_quarantine_is_lifted_when_its_self_healing_stops_asking_for_it() {
    let mut reports = reports::Reports::default();
    report(&mut reports, "10.0.0.1", &["checkout", "other"], at(0));
    let ledger = ledger::Ledger::default();
    // Still asked for: kept.
    let p = plan(
        &snapshot(&healing("RemoveFromService", "")),
        &reports,
        &ledger,
        at(0),
    );
    assert!(p.readmit.is_empty());
    // Another action, or no SelfHealing at all: readmitted.
    let p = plan(
        &snapshot(&healing("RestartPod", "")),
        &reports,
        &ledger,
        at(0),
    );
    assert_eq!(p.readmit.len(), 1);
    assert_eq!(p.readmit[0].1.key, key("payments-c"));
    let p = plan(&snapshot(""), &reports, &ledger, at(0));
    assert_eq!(p.readmit.len(), 1);
    assert!(p.unhealthy.is_empty(), "nothing governs the endpoint");
}

#[test]
fn a_pod_reported_on_two_ports_is_acted_on_once() {
    let registry = REGISTRY.replace(
        "ports: [{port: 80, targetPort: 8080, protocol: http}]",
        "ports: [{port: 80, targetPort: 8080, protocol: http}, {port: 81, targetPort: 8081, protocol: http}]",
    );
    let snap = snapshot_of(&registry, &healing("RestartPod", ""));
    let mut reports = reports::Reports::default();
    for port in [8080, 8081] {
        for r in ["checkout", "other"] {
            let mut e = ejection("10.0.0.1");
            e.endpoint = format!("10.0.0.1:{port}").parse().unwrap();
            reports.record(&key(r), &e, at(0));
        }
    }
    let p = plan(&snap, &reports, &ledger::Ledger::default(), at(61));
    assert_eq!(p.due.len(), 1);
}

#[test]
fn quarantine_keeps_to_the_share_outlier_detection_may_eject() {
    // maxEjectionPercent 34 of three endpoints: one. payments-c is out already.
    let resources = healing("RemoveFromService", "").replace(
        "outlierDetection: {consecutiveErrors: 3}",
        "outlierDetection: {consecutiveErrors: 3, maxEjectionPercent: 34}",
    );
    let mut reports = reports::Reports::default();
    report(&mut reports, "10.0.0.1", &["checkout", "other"], at(0));
    let ledger = ledger::Ledger::default();
    let p = plan(&snapshot(&resources), &reports, &ledger, at(61));
    assert!(p.due.is_empty());
    assert_eq!(p.capped.len(), 1);
    // With payments-c back, one may go.
    let registry = REGISTRY.replace(
        ", braid.dev/quarantined: \"true\", braid.dev/quarantined-by: heal",
        "",
    );
    let p = plan(
        &snapshot_of(&registry, &resources),
        &reports,
        &ledger,
        at(61),
    );
    assert_eq!(p.due.len(), 1);
    // Two reported at once: only one of them.
    report(&mut reports, "10.0.0.2", &["checkout", "other"], at(0));
    let p = plan(
        &snapshot_of(&registry, &resources),
        &reports,
        &ledger,
        at(61),
    );
    assert_eq!((p.due.len(), p.capped.len()), (1, 1));
}

#[test]
fn without_healing_endpoints_are_only_listed() {
    let resources = "apiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {name: heal, namespace: shop}\nspec:\n  selector: {matchLabels: {app: payments}}\n  outlierDetection: {consecutiveErrors: 3}\n";
    let mut reports = reports::Reports::default();
    report(&mut reports, "10.0.0.1", &["checkout", "other"], at(0));
    let p = plan(
        &snapshot(resources),
        &reports,
        &ledger::Ledger::default(),
        at(600),
    );
    assert_eq!(p.unhealthy[&key("heal")].len(), 1);
    assert!(p.due.is_empty() && p.over_budget.is_empty());
}

/// Records what it is asked to do; fails while `fail` holds a message.
#[derive(Default)]
struct Recorder {
    done: Mutex<Vec<(Act, String)>>,
    fail: Mutex<Option<String>>,
}

impl Actuator for Recorder {
    fn act<'a>(&'a self, request: &'a Request) -> BoxFuture<'a, Result<(), ActError>> {
        Box::pin(async move {
            if let Some(msg) = self.fail.lock().unwrap().clone() {
                return Err(ActError::Blocked(msg));
            }
            self.done
                .lock()
                .unwrap()
                .push((request.act, request.pod.key.name.clone()));
            Ok(())
        })
    }
}

use crate::sink::recorded::RecordedEvents as Events;

struct Rig {
    healer: Healer,
    actuator: Arc<Recorder>,
    events: Arc<Events>,
    leader: watch::Sender<bool>,
    view: watch::Receiver<Arc<HealingView>>,
    memory: Memory,
}

/// A rig whose registry has `payments-c` quarantined by hand (the healer leaves it be).
fn rig(resources: &str, leader: bool) -> Rig {
    let registry = REGISTRY.replace(", braid.dev/quarantined-by: heal", "");
    rig_of(&registry, resources, leader)
}

impl Rig {
    /// `checkout` and `other` report payments-a's endpoint at `when`.
    fn both_report_a(&mut self, when: Timestamp) {
        report(
            &mut self.memory.reports,
            "10.0.0.1",
            &["checkout", "other"],
            when,
        );
    }
}

fn rig_of(registry: &str, resources: &str, leader: bool) -> Rig {
    let actuator = Arc::new(Recorder::default());
    let events = Arc::new(Events::default());
    let (leader_tx, leader_rx) = watch::channel(leader);
    let (view_tx, view_rx) = watch::channel(Arc::new(HealingView::new()));
    let (_, reports_rx) = mpsc::channel(1);
    let published = Published {
        snapshot: Arc::new(snapshot_of(registry, resources)),
        configs: Default::default(),
        catalog: Default::default(),
        seen_at: Instant::now(),
    };
    let (_published_tx, published_rx) = watch::channel(Some(Arc::new(published)));
    // The sender may go: the receiver keeps the last value.
    Rig {
        healer: Healer {
            reports: reports_rx,
            published: published_rx,
            actuator: actuator.clone(),
            sink: events.clone(),
            leader: leader_rx,
            view: view_tx,
        },
        actuator,
        events,
        leader: leader_tx,
        view: view_rx,
        memory: Memory::default(),
    }
}

#[tokio::test]
async fn only_the_leader_acts_and_each_action_is_an_event_and_a_status_record() {
    let mut rig = rig(&healing("RestartPod", ""), false);
    rig.both_report_a(at(0));
    rig.healer.step(&mut rig.memory, at(61)).await;
    assert!(
        rig.actuator.done.lock().unwrap().is_empty(),
        "a follower acted"
    );
    assert!(rig.events.events.lock().unwrap().is_empty());
    // The follower still knows what is unhealthy.
    assert_eq!(rig.view.borrow()[&key("heal")].unhealthy.len(), 1);

    rig.leader.send_replace(true);
    rig.healer.step(&mut rig.memory, at(62)).await;
    assert_eq!(
        *rig.actuator.done.lock().unwrap(),
        [(Act::Restart, "payments-a".to_string())]
    );
    let events = rig.events.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "PodRestarted");
    assert!(events[0].note.contains("payments-a"), "{}", events[0].note);
    let view = rig.view.borrow().clone();
    assert!(
        view[&key("heal")].unhealthy.is_empty(),
        "reports start over"
    );
    assert_eq!(view[&key("heal")].actions[0].pod, "payments-a");
    // Reports while the action settles (a cooldown here) do not count...
    rig.both_report_a(at(63));
    rig.healer.step(&mut rig.memory, at(100)).await;
    rig.healer.step(&mut rig.memory, at(124)).await;
    assert_eq!(rig.actuator.done.lock().unwrap().len(), 1);
    // ...later ones start a new run, which needs a full cooldown.
    rig.both_report_a(at(125));
    rig.healer.step(&mut rig.memory, at(184)).await;
    assert_eq!(rig.actuator.done.lock().unwrap().len(), 1);
    rig.healer.step(&mut rig.memory, at(185)).await;
    assert_eq!(rig.actuator.done.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_blocked_action_is_told_and_tried_again_later() {
    let mut rig = rig(&healing("RestartPod", ""), true);
    *rig.actuator.fail.lock().unwrap() = Some("a PodDisruptionBudget allows no disruption".into());
    rig.both_report_a(at(0));
    rig.healer.step(&mut rig.memory, at(61)).await;
    rig.healer.step(&mut rig.memory, at(62)).await;
    let events = rig.events.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "held back, not retried every tick");
    assert_eq!(events[0].reason, "HealingBlocked");
    assert!(events[0].warning);
    assert!(rig.view.borrow()[&key("heal")].actions.is_empty());
    *rig.actuator.fail.lock().unwrap() = None;
    rig.both_report_a(at(80));
    rig.healer.step(&mut rig.memory, at(92)).await;
    assert_eq!(rig.actuator.done.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn action_none_notes_an_endpoint_once_per_run() {
    let mut rig = rig(&healing("None", ""), true);
    rig.both_report_a(at(0));
    rig.healer.step(&mut rig.memory, at(61)).await;
    rig.healer.step(&mut rig.memory, at(62)).await;
    let events = rig.events.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].reason, "EndpointUnhealthy");
    assert!(rig.actuator.done.lock().unwrap().is_empty());
    // Still listed as unhealthy, with the note among the actions.
    let view = rig.view.borrow().clone();
    assert_eq!(view[&key("heal")].unhealthy.len(), 1);
    assert_eq!(view[&key("heal")].actions.len(), 1);
}

#[tokio::test]
async fn a_quarantine_no_longer_asked_for_is_lifted() {
    let mut rig = rig_of(REGISTRY, &healing("RestartPod", ""), true);
    *rig.actuator.fail.lock().unwrap() = Some("the API server is away".into());
    rig.healer.step(&mut rig.memory, at(0)).await;
    assert_eq!(rig.events.events.lock().unwrap()[0].reason, "ReadmitFailed");
    // Tried again a minute later, not every tick.
    *rig.actuator.fail.lock().unwrap() = None;
    rig.healer.step(&mut rig.memory, at(30)).await;
    assert!(rig.actuator.done.lock().unwrap().is_empty());
    rig.events.events.lock().unwrap().clear();
    rig.healer.step(&mut rig.memory, at(61)).await;
    // Until the registry shows the label gone, it is not readmitted twice.
    rig.healer.step(&mut rig.memory, at(62)).await;
    assert_eq!(
        *rig.actuator.done.lock().unwrap(),
        [(Act::Readmit, "payments-c".to_string())]
    );
    assert_eq!(rig.events.events.lock().unwrap()[0].reason, "PodReadmitted");
}

#[test]
fn only_ejections_of_endpoints_in_the_reporters_config_count() {
    let snap = snapshot(&healing("RestartPod", ""));
    let out = crate::compiler::compile(&snap, &Default::default());
    let published = Published {
        snapshot: Arc::new(snap),
        configs: out.configs,
        catalog: out.catalog,
        seen_at: Instant::now(),
    };
    let mut reports = reports::Reports::default();
    let batch = |reporter: &str, e: Ejection| run::ReportBatch {
        reporter: key(reporter),
        ejections: vec![e],
    };
    let mut foreign = ejection("10.0.0.1");
    foreign.target = "ledger.bank:80".into();
    run::fold(
        &mut reports,
        Some(&published),
        &batch("checkout", foreign),
        at(0),
    );
    run::fold(
        &mut reports,
        Some(&published),
        &batch("checkout", ejection("10.9.9.9")),
        at(0),
    );
    run::fold(
        &mut reports,
        Some(&published),
        &batch("stranger", ejection("10.0.0.1")),
        at(0),
    );
    assert_eq!(reports.iter().count(), 0);
    run::fold(
        &mut reports,
        Some(&published),
        &batch("checkout", ejection("10.0.0.1")),
        at(0),
    );
    assert_eq!(reports.iter().count(), 1);
}
