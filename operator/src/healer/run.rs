//! The healer's loop: folds reports in as they arrive, and every tick plans and (when
//! this replica leads) acts, records events and publishes what status shows.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use braid_api::control::Ejection;
use braid_api::control::delta::ServiceRef;
use braid_crds::self_healing::{HealingAction, HealingActionRecord, UnhealthyEndpoint};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::actuator::{Act, ActError, Actuator, Request};
use super::ledger::{Ledger, record_of};
use super::plan::{Due, Plan, plan_with, quarantined};
use super::reports::{EndpointRef, Reports};
use crate::compiler::ServiceSet;
use crate::hub::Published;
use crate::registry::{Kind, ObjectKey, Workload};
use crate::sink::{Event, StatusSink};

/// How often the healer plans.
pub const TICK: Duration = Duration::from_secs(1);
/// After a PodDisruptionBudget blocked an eviction, the next try waits this long.
const BLOCKED_RETRY: Duration = Duration::from_secs(30);
/// After an action failed, the next try waits this long.
const FAILED_RETRY: Duration = Duration::from_secs(60);
/// After an action, reports of the pod are ignored for at least this long (or its
/// cooldown, when longer): a restarting pod fails its callers for a moment, which is
/// the action settling, not a reason for another one.
const SETTLE: Duration = Duration::from_secs(30);
/// Reports waiting for the healer; beyond this a proxy's report is dropped (and logged).
pub const REPORT_QUEUE: usize = 1024;

/// The ejections one proxy reported.
#[derive(Clone, Debug)]
pub struct ReportBatch {
    /// The reporting proxy's pod.
    pub reporter: ObjectKey,
    /// What it ejected.
    pub ejections: Vec<Ejection>,
}

/// What a SelfHealing's status shows of the healer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HealingState {
    /// Endpoints proxies report now.
    pub unhealthy: Vec<UnhealthyEndpoint>,
    /// Actions taken, oldest first.
    pub actions: Vec<HealingActionRecord>,
}

/// The healer's state of every SelfHealing that has any.
pub type HealingView = BTreeMap<ObjectKey, HealingState>;

/// The healer and what it needs.
pub struct Healer {
    /// Incoming reports.
    pub reports: mpsc::Receiver<ReportBatch>,
    /// The compiler's output: its snapshot is what the healer plans against.
    pub published: watch::Receiver<Option<Arc<Published>>>,
    /// Carries actions out.
    pub actuator: Arc<dyn Actuator>,
    /// Records events.
    pub sink: Arc<dyn StatusSink>,
    /// Whether this replica leads; only the leader acts.
    pub leader: watch::Receiver<bool>,
    /// Where the healer's state is published for status.
    pub view: watch::Sender<Arc<HealingView>>,
}

/// The healer's memory between ticks.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) reports: Reports,
    pub(super) ledger: Ledger,
    /// Endpoints already told to be over budget in their current run.
    told: BTreeSet<EndpointRef>,
    /// Pods readmitted whose label removal the snapshot does not show yet.
    readmitted: BTreeSet<ObjectKey>,
    /// Pods whose readmission failed, with when to try again.
    readmit_retry: BTreeMap<ObjectKey, Timestamp>,
    /// Addresses of pods acted on, with until when their reports are ignored.
    settling: BTreeMap<IpAddr, Timestamp>,
    /// The quarantined pods of the last compile seen (held, so its address is not
    /// reused while compared).
    quarantined: Option<(Arc<Published>, Vec<Arc<Workload>>)>,
}

impl Healer {
    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut memory = Memory::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                batch = self.reports.recv() => match batch {
                    Some(b) => {
                        let published = self.published.borrow().clone();
                        fold(&mut memory.reports, published.as_deref(), &b, Timestamp::now());
                    }
                    None => return,
                },
                _ = tick.tick() => self.step(&mut memory, Timestamp::now()).await,
            }
        }
    }

    /// One tick: plan, act when leading, publish.
    pub(super) async fn step(&mut self, memory: &mut Memory, now: Timestamp) {
        memory.settling.retain(|_, until| *until > now);
        for ip in memory.settling.keys() {
            memory.reports.forget(*ip);
        }
        memory.reports.prune(now);
        // Nothing is known before the first compile: an empty registry would readmit
        // every quarantined pod.
        let Some(published) = self.published.borrow().clone() else {
            return;
        };
        let quarantined = match memory.quarantined.take() {
            Some((of, pods)) if Arc::ptr_eq(&of, &published) => (of, pods),
            _ => (published.clone(), quarantined(&published.snapshot)),
        };
        let snapshot = &published.snapshot;
        memory.ledger.prune(
            |k| {
                snapshot
                    .self_healings
                    .get(k)
                    .is_some_and(|o| o.accepted.is_some())
            },
            now,
        );
        let planned = plan_with(
            snapshot,
            &quarantined.1,
            &memory.reports,
            &memory.ledger,
            now,
        );
        let reported: BTreeSet<EndpointRef> =
            memory.reports.iter().map(|(k, _)| k.clone()).collect();
        memory.told.retain(|e| reported.contains(e));
        memory
            .readmitted
            .retain(|pod| planned.readmit.iter().any(|(_, p)| p.key == *pod));
        memory.readmit_retry.retain(|_, at| *at > now);
        let planned = if *self.leader.borrow() {
            self.carry_out(memory, &planned, now).await;
            // Acting forgets the endpoints acted on: what status lists follows that.
            plan_with(
                snapshot,
                &quarantined.1,
                &memory.reports,
                &memory.ledger,
                now,
            )
        } else {
            planned
        };
        memory.quarantined = Some(quarantined);
        let mut view = HealingView::new();
        for (key, unhealthy) in &planned.unhealthy {
            view.entry(key.clone()).or_default().unhealthy = unhealthy.clone();
        }
        for key in snapshot.self_healings.keys() {
            let actions = memory.ledger.actions(key);
            if !actions.is_empty() {
                view.entry(key.clone()).or_default().actions = actions;
            }
        }
        self.view.send_if_modified(|current| {
            let changed = **current != view;
            if changed {
                *current = Arc::new(view);
            }
            changed
        });
    }

    async fn carry_out(&self, memory: &mut Memory, planned: &Plan, now: Timestamp) {
        for due in &planned.due {
            let act = match due.action {
                HealingAction::None => {
                    memory.reports.note(&due.endpoint);
                    memory.ledger.record(
                        &due.healing,
                        record_of(&due.pod.key.name, HealingAction::None, now),
                    );
                    self.record(
                        &due.healing,
                        "EndpointUnhealthy",
                        describe(due, "no action taken (action: None)"),
                        false,
                    )
                    .await;
                    continue;
                }
                HealingAction::RestartPod => Act::Restart,
                HealingAction::RemoveFromService => Act::Quarantine,
            };
            let request = Request {
                act,
                healing: due.healing.clone(),
                pod: due.pod.clone(),
                endpoint: Some(due.endpoint.clone()),
            };
            match self.actuator.act(&request).await {
                Ok(()) => {
                    // Reports from before the action, and while it settles (a pod
                    // restarting, a label reaching the registry), do not count: a new
                    // run starts after that and needs a full cooldown.
                    let until = now.checked_add(due.cooldown.max(SETTLE)).unwrap_or(now);
                    for ip in &due.pod.ips {
                        memory.reports.forget(*ip);
                        memory.settling.insert(*ip, until);
                    }
                    memory
                        .ledger
                        .record(&due.healing, record_of(&due.pod.key.name, due.action, now));
                    let (reason, did) = match act {
                        Act::Restart => ("PodRestarted", "restarted the pod"),
                        _ => (
                            "PodQuarantined",
                            "quarantined the pod (label braid.dev/quarantined=true); remove the label to readmit it",
                        ),
                    };
                    tracing::info!(pod = %due.pod.key, endpoint = %due.endpoint, action = act.as_str(), self_healing = %due.healing, "healed");
                    self.record(&due.healing, reason, describe(due, did), false)
                        .await;
                }
                Err(ActError::Gone) => {
                    for ip in &due.pod.ips {
                        memory.reports.forget(*ip);
                    }
                }
                Err(e) => {
                    let (wait, reason) = match e {
                        ActError::Blocked(_) => (BLOCKED_RETRY, "HealingBlocked"),
                        _ => (FAILED_RETRY, "HealingFailed"),
                    };
                    memory
                        .ledger
                        .hold(&due.endpoint, now.checked_add(wait).unwrap_or(now));
                    tracing::warn!(pod = %due.pod.key, action = act.as_str(), error = %e, "healing action not taken; trying again in {}s", wait.as_secs());
                    let note = format!(
                        "{} failed: {e}; trying again in {}s",
                        act.as_str(),
                        wait.as_secs()
                    );
                    self.record(&due.healing, reason, describe(due, &note), true)
                        .await;
                }
            }
        }
        for due in &planned.over_budget {
            if memory.told.insert(due.endpoint.clone()) {
                tracing::warn!(pod = %due.pod.key, self_healing = %due.healing, "healing budget spent; not acting");
                let note =
                    "not acted on: maxActionsPerHour is spent; it will be once the budget allows";
                self.record(&due.healing, "BudgetExhausted", describe(due, note), true)
                    .await;
            }
        }
        for due in &planned.capped {
            if memory.told.insert(due.endpoint.clone()) {
                tracing::warn!(pod = %due.pod.key, self_healing = %due.healing, "quarantine capped by maxEjectionPercent");
                let note = "not quarantined: that would take more of the Service out than outlierDetection.maxEjectionPercent allows";
                self.record(&due.healing, "QuarantineCapped", describe(due, note), true)
                    .await;
            }
        }
        for (healing, pod) in &planned.readmit {
            if memory.readmit_retry.contains_key(&pod.key)
                || !memory.readmitted.insert(pod.key.clone())
            {
                continue;
            }
            let request = Request {
                act: Act::Readmit,
                healing: healing.clone(),
                pod: pod.clone(),
                endpoint: None,
            };
            let (reason, note, warning) = match self.actuator.act(&request).await {
                Ok(()) | Err(ActError::Gone) => (
                    "PodReadmitted",
                    format!(
                        "readmitted pod {}: this SelfHealing no longer quarantines it",
                        pod.key.name
                    ),
                    false,
                ),
                Err(e) => {
                    memory.readmitted.remove(&pod.key);
                    memory.readmit_retry.insert(
                        pod.key.clone(),
                        now.checked_add(FAILED_RETRY).unwrap_or(now),
                    );
                    (
                        "ReadmitFailed",
                        format!(
                            "readmitting pod {}: {e}; trying again in {}s",
                            pod.key.name,
                            FAILED_RETRY.as_secs()
                        ),
                        true,
                    )
                }
            };
            tracing::info!(pod = %pod.key, self_healing = %healing, "{note}");
            self.record(healing, reason, note, warning).await;
        }
    }

    async fn record(&self, healing: &ObjectKey, reason: &str, note: String, warning: bool) {
        let event = Event {
            kind: Kind::SelfHealing,
            key: healing.clone(),
            reason: reason.into(),
            note,
            warning,
        };
        if let Err(e) = self.sink.event(&event).await {
            tracing::warn!(error = %e, "event not recorded");
        }
    }
}

/// Folds one proxy's batch into `reports`: only ejections of endpoints the reporter's
/// own config holds count, so no proxy can get pods it never calls acted on.
pub(super) fn fold(
    reports: &mut Reports,
    published: Option<&Published>,
    batch: &ReportBatch,
    now: Timestamp,
) {
    let meshed = published.filter(|p| p.configs.contains_key(&batch.reporter));
    for e in &batch.ejections {
        if !meshed.is_some_and(|p| holds(&p.catalog.set, e)) {
            tracing::debug!(reporter = %batch.reporter, endpoint = %e.endpoint, target = %e.target, "ejection of an endpoint not in the reporter's config; ignored");
            continue;
        }
        if !reports.record(&batch.reporter, e, now) {
            tracing::warn!(reporter = %batch.reporter, endpoint = %e.endpoint, "too many reported endpoints; report dropped");
        }
    }
}

/// Whether the compile's services `set` have the ejected endpoint in the service the
/// ejection names (a reporter holds the compile's services, or some of them).
fn holds(set: &ServiceSet, e: &Ejection) -> bool {
    let endpoint = EndpointRef {
        target: e.target.clone(),
        addr: e.endpoint,
    };
    let Some(service) = endpoint.service() else {
        return false;
    };
    let name = ServiceRef {
        namespace: service.namespace.clone(),
        name: service.name.clone(),
    };
    set.index(&name)
        .and_then(|i| set.service(i))
        .is_some_and(|s| {
            s.groups
                .iter()
                .flat_map(|g| &g.endpoints)
                .any(|ep| ep.address == e.endpoint.ip())
        })
}

fn describe(due: &Due, what: &str) -> String {
    format!(
        "pod {} (endpoint {}, {}): reported by {} proxies: {what}",
        due.pod.key.name, due.endpoint.addr, due.reason, due.reporters
    )
}
