//! The AccessPolicy loop: proxies' decision counts in, evidence and automatic
//! enforcement out. While leading, each tick sums every policy's reports over its window
//! for status, and moves the policies with a rollout (see [`super::plan`]); a switch
//! reaches proxies through status, which every replica compiles with.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_api::control::AccessCount;
use braid_api::identity::WorkloadId;
use braid_crds::AccessPolicy;
use braid_crds::access_policy::{AccessPhase, DecisionCounts, DeniedSource};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::book::{AccessBook, Evidence, Refused};
use super::plan::{MAX_STEP_BACKS, Measured, Stage, Transition, Wait, step};
use crate::hub::{Hub, Published};
use crate::registry::enforced::{access_progress_of, recorded_enforcing};
use crate::registry::{Kind, ObjectKey, Snapshot};
use crate::sink::{Event, StatusSink};

/// How often the loop looks at what proxies reported.
pub const TICK: Duration = Duration::from_secs(1);
/// The window of a policy without a rollout (with one: its interval).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Reports waiting for the loop; more are dropped (proxies report again in seconds).
pub const ACCESS_QUEUE: usize = 4096;
/// How often status takes new counts when nothing else changed.
const COUNTS_EVERY: Duration = Duration::from_secs(10);
/// Refused callers named in status.
const SHOWN_SOURCES: usize = 10;

/// One proxy's report of its AccessPolicies' decisions.
#[derive(Debug)]
pub struct AccessBatch {
    /// The reporting pod.
    pub reporter: ObjectKey,
    /// What each policy decided since its last report.
    pub counts: Vec<AccessCount>,
}

/// What status shows of one AccessPolicy.
#[derive(Clone, Debug, PartialEq)]
pub struct AccessState {
    /// The mode the proxies apply.
    pub phase: AccessPhase,
    /// When a rollout's current stage began.
    pub phase_started_at: Option<Timestamp>,
    /// Decisions over the window.
    pub decisions: DecisionCounts,
    /// The callers refused most in the window.
    pub denied_sources: Vec<DeniedSource>,
    /// The `SafeToEnforce` condition: status, reason, message.
    pub safety: (&'static str, &'static str, String),
    /// For a policy with a rollout, what its phase belongs to ([`access_progress_of`] of
    /// the spec it was worked out for): status takes the phase only for that spec.
    pub progress_of: Option<String>,
}

/// The state of every accepted AccessPolicy (empty while following).
pub type AccessView = BTreeMap<ObjectKey, AccessState>;

/// The loop and what it needs.
pub struct AccessLoop {
    /// Incoming decision reports.
    pub reports: mpsc::Receiver<AccessBatch>,
    /// The compiler's output: the policies in force and the workloads (to name callers).
    pub hub: Arc<Hub>,
    /// Records Events, and holds the statuses a new leader resumes from.
    pub sink: Arc<dyn StatusSink>,
    /// Whether this replica leads; only the leader moves rollouts.
    pub leader: watch::Receiver<bool>,
    /// What status shows, made while leading.
    pub view: watch::Sender<Arc<AccessView>>,
}

/// One automatic rollout this leader drives.
struct Tracked {
    /// What its stage belongs to ([`access_progress_of`]).
    progress_of: String,
    stage: Stage,
    since: Instant,
    since_wall: Timestamp,
    /// Why it last waited, so each new reason is logged once.
    wait: Option<Wait>,
    /// Step-backs so far (this leader's; a new one starts counting again).
    step_backs: u32,
}

/// The loop's memory between ticks.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) book: AccessBook,
    /// The pods whose proxy does not hold the config in force, worked out again only
    /// when the compile or a proxy's report changes (not on every tick).
    lagging: Option<LaggingPods>,
    /// Reports received since the last tick, with when: folded into the book with the
    /// compile in force, which says whether the reporter is one the policy covers.
    pub(super) pending: Vec<(Instant, AccessBatch)>,
    tracked: HashMap<ObjectKey, Tracked>,
    /// The phase each policy showed last, for an Event when it changes.
    phases: HashMap<ObjectKey, AccessPhase>,
    counted_at: Option<Instant>,
    /// Workloads by address, for the compile they were read from.
    by_ip: Option<(Arc<Published>, HashMap<IpAddr, ObjectKey>)>,
}

impl AccessLoop {
    fn publish_empty(&self) {
        self.view.send_if_modified(|current| {
            let changed = !current.is_empty();
            if changed {
                *current = Arc::new(AccessView::new());
            }
            changed
        });
    }

    /// Runs until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut memory = Memory::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                batch = self.reports.recv() => match batch {
                    Some(b) if memory.pending.len() < ACCESS_QUEUE => memory.pending.push((Instant::now(), b)),
                    Some(b) => tracing::debug!(reporter = %b.reporter, "access loop behind; decisions report dropped"),
                    None => return,
                },
                _ = tick.tick() => self.tick(&mut memory, Instant::now(), Timestamp::now()).await,
            }
        }
    }

    /// Where a rollout not yet tracked stands, read afresh from its status: `None` when
    /// the status cannot be read (it waits), else the stage and when it began.
    async fn resume(
        &self,
        snapshot: &Snapshot,
        key: &ObjectKey,
        policy: &AccessPolicy,
        wall: Timestamp,
    ) -> Option<(Stage, Timestamp, bool)> {
        match self.sink.read(Kind::AccessPolicy, key).await {
            Ok(status) => {
                let generation = snapshot.access_policies.get(key).and_then(|o| o.generation);
                let recorded = status.as_ref().and_then(|s| {
                    let enforcing = recorded_enforcing(generation, Some(&policy.spec), s)?;
                    let at = s
                        .get("phaseStartedAt")
                        .and_then(|t| t.as_str())
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .unwrap_or(wall);
                    Some((enforcing, at))
                });
                Some(match recorded {
                    Some((true, at)) => (Stage::Enforcing, at, true),
                    Some((false, at)) => (Stage::Auditing, at, true),
                    None => (Stage::Auditing, wall, false),
                })
            }
            Err(e) => {
                tracing::warn!(policy = %key, error = %e, "cannot read where the AccessPolicy rollout stands; it waits until its status can be read");
                None
            }
        }
    }

    /// One tick: sum the evidence, move rollouts, publish what status shows.
    pub(super) async fn tick(&mut self, memory: &mut Memory, now: Instant, wall: Timestamp) {
        let Some(published) = self.hub.current() else {
            return;
        };
        let snapshot = &published.snapshot;
        let policies = snapshot.access_policies_oldest_first();
        if policies.is_empty() || !*self.leader.borrow() {
            // Followers move nothing and write nothing; should they lead, they listen
            // afresh (they heard only their own proxies' reports) and read the status.
            memory.tracked.clear();
            memory.phases.clear();
            // Reports a follower holds must not reach it as a leader with their old times
            // (nor fill its queue meanwhile).
            memory.pending.clear();
            if policies.is_empty() {
                memory.book.prune(now, DEFAULT_WINDOW * 2);
            } else {
                memory.book.forget();
            }
            self.publish_empty();
            return;
        }
        memory.book.listening(now);
        // Only the proxies of the pods a policy selects speak for it: a report naming a
        // policy that does not cover its reporter is dropped.
        let by_key: HashMap<&ObjectKey, &AccessPolicy> = policies.iter().copied().collect();
        for (at, batch) in std::mem::take(&mut memory.pending) {
            let Some(reporter) = snapshot.workloads.get(&batch.reporter) else {
                continue;
            };
            for count in &batch.counts {
                let covers = count
                    .policy
                    .split_once('/')
                    .map(|(ns, name)| ObjectKey::new(ns, name))
                    .and_then(|key| by_key.get(&key).map(|p| (key, *p)))
                    .is_some_and(|(key, p)| {
                        key.namespace == reporter.key.namespace
                            && p.spec.selector.matches(&reporter.labels)
                    });
                if covers {
                    memory.book.add(count, at);
                }
            }
        }
        let longest = policies
            .iter()
            .filter_map(|(_, p)| interval_of(p))
            .max()
            .unwrap_or_default()
            .max(DEFAULT_WINDOW);
        memory.book.prune(now, longest * 2);
        // An edit that keeps the rules (the interval, say) keeps the stage.
        memory.tracked.retain(|k, t| {
            policies.iter().any(|(pk, p)| {
                *pk == k && p.spec.rollout.is_some() && access_progress_of(&p.spec) == t.progress_of
            })
        });
        let mut events = Vec::new();
        let mut view = AccessView::new();
        for (key, policy) in &policies {
            let name = key.to_string();
            let window = interval_of(policy).unwrap_or(DEFAULT_WINDOW);
            let since = now.checked_sub(window).unwrap_or(now);
            let evidence = memory.book.sum(&name, since);
            let mut phase_started_at = None;
            let phase = match (&policy.spec.rollout, interval_of(policy)) {
                (Some(rollout), Some(interval)) => {
                    let tracked = match memory.tracked.entry((*key).clone()) {
                        Entry::Occupied(o) => o.into_mut(),
                        Entry::Vacant(v) => {
                            let Some((stage, at, recorded)) =
                                self.resume(snapshot, key, policy, wall).await
                            else {
                                continue;
                            };
                            events.push(started_event(
                                key,
                                stage,
                                recorded,
                                rollout.interval.as_str(),
                            ));
                            v.insert(Tracked {
                                progress_of: access_progress_of(&policy.spec),
                                stage,
                                since: now,
                                since_wall: at,
                                wait: None,
                                step_backs: 0,
                            })
                        }
                    };
                    let lagging = lagging_pods(&mut memory.lagging, &self.hub, &published);
                    let proxies_behind = behind(&published, key, policy, lagging);
                    if tracked.stage == Stage::Enforcing && proxies_behind > 0 {
                        // The watch starts once every covered proxy enforces.
                        tracked.since = now;
                    }
                    let since_stage = memory.book.sum(&name, tracked.since);
                    let measured = Measured {
                        last_interval: evidence.clone(),
                        observed_full_interval: memory.book.covers(interval, now),
                        proxies_behind,
                        step_backs: tracked.step_backs,
                        since_stage: Some(&since_stage),
                    };
                    match step(
                        tracked.stage,
                        tracked.since,
                        rollout,
                        interval,
                        &measured,
                        now,
                    ) {
                        Ok(Some(t)) => {
                            events.push(transition_event(key, &t, rollout.interval.as_str()));
                            tracked.stage = match t {
                                Transition::Enforce { .. } => Stage::Enforcing,
                                Transition::StepBack { .. } => {
                                    tracked.step_backs += 1;
                                    Stage::Auditing
                                }
                            };
                            tracked.since = now;
                            tracked.since_wall = wall;
                            tracked.wait = None;
                        }
                        Ok(None) => tracked.wait = None,
                        Err(wait) => {
                            if tracked.wait.as_ref() != Some(&wait) {
                                tracing::info!(policy = %key, ?wait, "AccessPolicy not enforced yet");
                                if wait == Wait::Halted {
                                    events.push(event(
                                        key,
                                        "RolloutHalted",
                                        format!("stepped back to Audit {MAX_STEP_BACKS} times: it stays in Audit until its spec changes (see status.deniedSources for what enforcing refused)"),
                                        true,
                                    ));
                                }
                            }
                            tracked.wait = Some(wait);
                        }
                    }
                    phase_started_at = Some(tracked.since_wall);
                    match tracked.stage {
                        Stage::Auditing => AccessPhase::Auditing,
                        Stage::Enforcing => AccessPhase::Enforcing,
                    }
                }
                _ => policy.spec.mode.into(),
            };
            match memory.phases.insert((*key).clone(), phase) {
                Some(before) if before != phase && policy.spec.rollout.is_none() => {
                    events.push(mode_event(key, phase));
                }
                _ => {}
            }
            let min_requests = policy.spec.rollout.as_ref().map_or(1, |r| r.min_requests);
            let safety = safety(
                &evidence,
                memory.book.covers(window, now),
                window,
                min_requests,
            );
            let shown = self.sources(memory, &published, &evidence);
            view.insert(
                (*key).clone(),
                AccessState {
                    phase,
                    phase_started_at,
                    decisions: DecisionCounts {
                        allowed: evidence.allowed,
                        would_deny: evidence.would_deny,
                        denied: evidence.denied,
                        window_seconds: window.as_secs(),
                    },
                    denied_sources: shown,
                    safety,
                    progress_of: policy
                        .spec
                        .rollout
                        .as_ref()
                        .map(|_| access_progress_of(&policy.spec)),
                },
            );
        }
        for e in &events {
            if let Err(err) = self.sink.event(e).await {
                tracing::warn!(error = %err, "event not recorded");
            }
        }
        let counts_due = memory
            .counted_at
            .is_none_or(|at| now.duration_since(at) >= COUNTS_EVERY);
        self.view.send_if_modified(|current| {
            let changed = match counts_due {
                true => **current != view,
                false => !same_but_counts(current, &view),
            };
            if changed {
                *current = Arc::new(view);
                memory.counted_at = Some(now);
            }
            changed
        });
    }

    /// The refused callers of `evidence` most worth showing: those let through before
    /// first, then by refusals; each named by pod and namespace when the compile knows
    /// its address.
    fn sources(
        &self,
        memory: &mut Memory,
        published: &Arc<Published>,
        evidence: &Evidence,
    ) -> Vec<DeniedSource> {
        if evidence.refused.is_empty() {
            return Vec::new();
        }
        let fresh = memory
            .by_ip
            .as_ref()
            .is_some_and(|(p, _)| Arc::ptr_eq(p, published));
        if !fresh {
            let by_ip = published
                .snapshot
                .workloads
                .values()
                .flat_map(|w| w.ips.iter().map(|ip| (*ip, w.key.clone())))
                .collect();
            memory.by_ip = Some((published.clone(), by_ip));
        }
        let by_ip = memory.by_ip.as_ref().map(|(_, m)| m);
        let mut refused: Vec<(&Refused, &(u64, u64, bool))> = evidence.refused.iter().collect();
        refused.sort_by(|(ka, a), (kb, b)| {
            (b.2, b.0 + b.1)
                .cmp(&(a.2, a.0 + a.1))
                .then_with(|| ka.cmp(kb))
        });
        refused
            .into_iter()
            .take(SHOWN_SOURCES)
            .map(|(k, &(would_deny, denied, allowed_before))| {
                let pod = k
                    .address
                    .and_then(|a| by_ip.and_then(|m| m.get(&a.to_canonical())));
                let namespace = k
                    .identity
                    .as_deref()
                    .and_then(|id| id.parse::<WorkloadId>().ok())
                    .map(|id| id.namespace)
                    .or_else(|| pod.map(|p| p.namespace.clone()));
                DeniedSource {
                    identity: k.identity.clone(),
                    address: k.address.map(|a| a.to_string()).unwrap_or_default(),
                    namespace,
                    pod: pod.map(ToString::to_string),
                    request: k.request.clone(),
                    would_deny,
                    denied,
                    allowed_before,
                }
            })
            .collect()
    }
}

/// The pods of a compile whose proxy has not reported holding its config there, as of
/// the hub's `reports` count.
struct LaggingPods {
    compile: Arc<Published>,
    reports: u64,
    pods: HashSet<ObjectKey>,
}

/// The pods of `published` whose proxy lags ([`Hub::lagging`]), reused from `slot` while
/// neither the compile nor any proxy's report changed.
fn lagging_pods<'m>(
    slot: &'m mut Option<LaggingPods>,
    hub: &Hub,
    published: &Arc<Published>,
) -> &'m HashSet<ObjectKey> {
    // Read before the lagging proxies are: a report arriving meanwhile is seen next time.
    let reports = hub.reports();
    let fresh = slot
        .as_ref()
        .is_some_and(|l| Arc::ptr_eq(&l.compile, published) && l.reports == reports);
    if !fresh {
        *slot = None;
    }
    &slot
        .get_or_insert_with(|| LaggingPods {
            compile: published.clone(),
            reports,
            pods: hub.lagging(published).into_iter().cloned().collect(),
        })
        .pods
}

/// How many of the meshed pods `policy` selects do not hold the config in force.
fn behind(
    published: &Published,
    key: &ObjectKey,
    policy: &AccessPolicy,
    lagging: &HashSet<ObjectKey>,
) -> usize {
    let from = ObjectKey::new(key.namespace.clone(), "");
    published
        .snapshot
        .workloads
        .range(from..)
        .take_while(|(k, _)| k.namespace == key.namespace)
        .filter(|(k, w)| {
            w.meshed && lagging.contains(*k) && policy.spec.selector.matches(&w.labels)
        })
        .count()
}

/// A policy's rollout interval, when it has a valid one.
fn interval_of(policy: &AccessPolicy) -> Option<Duration> {
    policy.spec.rollout.as_ref()?.interval.parse().ok()
}

/// The `SafeToEnforce` condition of `evidence` over `window`.
fn safety(
    evidence: &Evidence,
    covered: bool,
    window: Duration,
    min_requests: u64,
) -> (&'static str, &'static str, String) {
    let window = humantime::format_duration(window);
    let refused = evidence.would_deny + evidence.denied;
    if refused > 0 {
        let top = evidence
            .refused
            .iter()
            .max_by_key(|(k, c)| (c.0 + c.1, std::cmp::Reverse(*k)))
            .map(|(k, _)| describe(k))
            .unwrap_or_default();
        let verb = match evidence.denied {
            0 => "would be refused",
            _ => "were refused",
        };
        return (
            "False",
            "RefusalsSeen",
            format!(
                "{refused} requests in the last {window} {verb} (see deniedSources; the most from {top}): enforcing breaks them unless the rules allow them"
            ),
        );
    }
    if !covered {
        return (
            "Unknown",
            "NotObservedYet",
            format!(
                "the operator has not heard from the covered workloads' proxies for {window} yet"
            ),
        );
    }
    if evidence.requests() < min_requests {
        return (
            "Unknown",
            "TooFewRequests",
            format!(
                "{} requests reached the covered workloads in the last {window}, fewer than {min_requests}: too little to show whom enforcing would refuse",
                evidence.requests()
            ),
        );
    }
    (
        "True",
        "NoRefusals",
        format!(
            "none of the {} requests in the last {window} would be refused: enforcing breaks no caller seen",
            evidence.requests()
        ),
    )
}

/// A refused caller in words: `spiffe://… (10.0.0.2) GET /admin`.
fn describe(r: &Refused) -> String {
    let who = match (&r.identity, r.address) {
        (Some(id), Some(a)) => format!("{id} ({a})"),
        (Some(id), None) => id.clone(),
        (None, Some(a)) => format!("plaintext {a}"),
        (None, None) => "an unknown caller".into(),
    };
    match &r.request {
        Some(req) => format!("{who} {req}"),
        None => format!("{who} (TCP)"),
    }
}

/// Whether `a` and `b` differ in nothing but counts.
fn same_but_counts(a: &AccessView, b: &AccessView) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, sa), (kb, sb))| {
            ka == kb
                && sa.phase == sb.phase
                && sa.phase_started_at == sb.phase_started_at
                && sa.safety.0 == sb.safety.0
                && sa.safety.1 == sb.safety.1
        })
}

fn event(key: &ObjectKey, reason: &str, note: String, warning: bool) -> Event {
    Event {
        kind: Kind::AccessPolicy,
        key: key.clone(),
        reason: reason.into(),
        note,
        warning,
    }
}

fn started_event(key: &ObjectKey, stage: Stage, recorded: bool, interval: &str) -> Event {
    let note = match (recorded, stage) {
        (false, _) => format!(
            "automatic enforcement started: the policy audits, and is enforced once {interval} pass without a request it would refuse"
        ),
        (true, Stage::Auditing) => format!(
            "automatic enforcement resumed in Audit: enforced once {interval} pass without a request it would refuse"
        ),
        (true, Stage::Enforcing) => {
            "automatic enforcement resumed: the policy stays enforced".to_string()
        }
    };
    let reason = match recorded {
        true => "RolloutResumed",
        false => "RolloutStarted",
    };
    event(key, reason, note, false)
}

fn transition_event(key: &ObjectKey, t: &Transition, interval: &str) -> Event {
    match t {
        Transition::Enforce { requests } => event(
            key,
            "Enforced",
            format!(
                "none of the {requests} requests in the last {interval} would have been refused: now enforced (watching {interval} for refusals of callers it let through)"
            ),
            false,
        ),
        Transition::StepBack { caller } => event(
            key,
            "RolledBack",
            format!(
                "refused {}, which it let through while auditing: back to Audit. It is enforced again after {interval} without a request it would refuse: allow that caller, or stop it",
                describe(caller)
            ),
            true,
        ),
    }
}

fn mode_event(key: &ObjectKey, phase: AccessPhase) -> Event {
    let note = match phase {
        AccessPhase::Enforcing => {
            "spec.mode is Enforce: requests the policy does not allow are refused"
        }
        AccessPhase::Auditing => "spec.mode is Audit: nothing is refused, what would be is counted",
    };
    let reason = match phase {
        AccessPhase::Enforcing => "Enforcing",
        AccessPhase::Auditing => "Auditing",
    };
    event(key, reason, note.to_string(), false)
}
