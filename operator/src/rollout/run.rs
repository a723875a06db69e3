//! The rollout loop: folds proxies' traffic reports in as they arrive and, every tick
//! while this replica leads, moves each automatic rollout on, records Events and
//! publishes what EncryptionPolicy status shows. Proxies learn of a step only from that
//! status, once written and read back (see `compiler`).

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use braid_api::control::Traffic;
use braid_api::identity::WorkloadId;
use braid_crds::EncryptionPolicy;
use braid_crds::encryption_policy::{
    AutoRollout, EncryptionPhase, EncryptionPolicySpec, PlaintextSource, TlsMode, TrafficCounts,
};
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::lagging::Lagging;
use super::plan::{Hold, Measured, Position, Safety, Transition, hold, levels, step};
use super::scope::{Covered, Scopes};
use super::traffic::{TrafficBook, service_of};
use crate::hub::Hub;
use crate::off_runtime::off_runtime;
use crate::registry::progress::{progress_of, recorded_progress};
use crate::registry::{Kind, ObjectKey, Progress, Snapshot, Workload};
use crate::sink::{Event, StatusSink};

/// How often rollouts move on.
pub const TICK: Duration = Duration::from_secs(1);
/// The window of a policy without an automatic rollout (status `traffic`).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(300);
/// Reports waiting for the loop; beyond this a proxy's report is dropped (and logged).
pub const TRAFFIC_QUEUE: usize = 4096;
/// How often status takes new request counts when nothing else changed.
const COUNTS_EVERY: Duration = Duration::from_secs(30);
/// Plaintext sources a status names.
const SHOWN_SOURCES: usize = 10;

/// One proxy's traffic report.
#[derive(Clone, Debug)]
pub struct TrafficBatch {
    /// The reporting proxy's pod.
    pub reporter: ObjectKey,
    /// What it counted.
    pub traffic: Traffic,
}

/// What an EncryptionPolicy's status shows of its rollout and traffic.
#[derive(Clone, Debug, PartialEq)]
pub struct EncryptionState {
    /// Where it stands.
    pub phase: EncryptionPhase,
    /// The share of callers originating mTLS.
    pub percent: u8,
    /// When the current step began (automatic rollouts).
    pub step_started_at: Option<Timestamp>,
    /// Requests to the covered workloads in the window.
    pub traffic: TrafficCounts,
    /// The busiest plaintext callers in the window.
    pub plaintext_sources: Vec<PlaintextSource>,
    /// Whether Strict would refuse nothing (the `SafeToEnforce` condition).
    pub safety: Safety,
    /// Why an automatic rollout whose step is over does not move on.
    pub hold: Option<Hold>,
    /// Some of the callers that do not hold the config in force (`namespace/name`), and
    /// how many more there are.
    pub callers_behind: String,
}

/// The state of every accepted EncryptionPolicy.
pub type EncryptionView = BTreeMap<ObjectKey, EncryptionState>;

/// The rollout loop and what it needs.
pub struct RolloutLoop {
    /// Incoming traffic reports.
    pub reports: mpsc::Receiver<TrafficBatch>,
    /// The compiler's output (its snapshot says which policy governs which workload,
    /// its configs who calls it) and the versions proxies applied.
    pub hub: Arc<Hub>,
    /// Records Events, and holds the statuses a new leader resumes from.
    pub sink: Arc<dyn StatusSink>,
    /// Whether this replica leads; only the leader moves rollouts.
    pub leader: watch::Receiver<bool>,
    /// What status shows, made while leading (empty while following). It is also how
    /// a step reaches proxies: every replica compiles with the progress the status
    /// records, read back by its source, so nothing is served that a successor would
    /// not resume from.
    pub view: watch::Sender<Arc<EncryptionView>>,
    /// The SPIFFE trust domain, to name meshed plaintext sources.
    pub trust_domain: String,
}

/// One automatic rollout in progress.
struct Tracked {
    spec: EncryptionPolicySpec,
    levels: Vec<u8>,
    pos: Position,
    since: Timestamp,
    /// Why it last held, so each new reason is told once.
    held: Option<Hold>,
}

impl Tracked {
    /// A rollout this leader starts tracking, where `recorded` says the last leader left
    /// it (`None`: nothing recorded, it starts), and the Event that says so.
    fn resume(
        key: &ObjectKey,
        spec: &EncryptionPolicySpec,
        start: u32,
        auto: &AutoRollout,
        recorded: Option<Progress>,
        now: Instant,
        wall: Timestamp,
    ) -> (Self, Event) {
        let levels = levels(start.min(100) as u8, auto);
        let mut pos = Position::start(now);
        if let Some(p) = recorded {
            pos.level = levels.iter().rposition(|l| *l <= p.percent).unwrap_or(0);
            pos.strict = p.strict;
        }
        let (reason, verb) = match recorded {
            Some(_) => ("RolloutResumed", "resumed at"),
            None => ("RolloutStarted", "started at"),
        };
        let note = format!(
            "automatic mTLS rollout {verb} {} % of callers; steps {:?} %, one every {}",
            levels[pos.level],
            levels,
            auto.interval.as_str()
        );
        let tracked = Self {
            spec: spec.clone(),
            levels,
            pos,
            since: wall,
            held: None,
        };
        (tracked, event(key, reason, note, false))
    }
}

/// The loop's memory between ticks.
#[derive(Default)]
pub(super) struct Memory {
    pub(super) book: TrafficBook,
    tracked: HashMap<ObjectKey, Tracked>,
    /// When status last got fresh traffic counts.
    counted_at: Option<Instant>,
    /// What each policy covers in the compile of the last tick.
    scopes: Option<Scopes>,
    /// The callers behind each policy, while neither the compile nor any proxy's report
    /// changed: worked out again every tick, it went over every proxy not connected
    /// (most of the mesh, when the operator restarts) each second with nothing to do.
    behind: Option<Behind>,
}

/// The proxies behind on each policy's services, and what they were worked out from.
struct Behind {
    compile: Arc<crate::hub::Published>,
    /// The hub's count of reports when they were.
    reports: u64,
    by_policy: HashMap<ObjectKey, Callers>,
}

/// The callers behind one policy, as status and events show them: how many, and the
/// first few by name. Not the whole list: most of a mesh is behind while its proxies
/// have not reported (an operator just restarted, a large mesh still starting), and
/// copying those keys for every policy on each report was most of what the operator
/// allocated per change.
#[derive(Debug, Default)]
struct Callers {
    count: usize,
    first: Vec<ObjectKey>,
}

impl Callers {
    fn of(pods: &[&ObjectKey]) -> Self {
        Self {
            count: pods.len(),
            first: pods
                .iter()
                .take(SHOWN_CALLERS)
                .map(|&p| p.clone())
                .collect(),
        }
    }

    /// `a, b, c and 7 more`.
    fn named(&self) -> String {
        let mut text = self
            .first
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        if self.count > self.first.len() {
            text.push_str(&format!(" and {} more", self.count - self.first.len()));
        }
        text
    }
}

impl RolloutLoop {
    /// Status shows no rollout (none is governed, or this replica follows).
    fn publish_empty(&self) {
        self.view.send_if_modified(|current| {
            let changed = !current.is_empty();
            if changed {
                *current = Arc::new(EncryptionView::new());
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
                    Some(b) => memory.book.add(b.reporter, b.traffic, Instant::now()),
                    None => return,
                },
                _ = tick.tick() => self.tick(&mut memory, Instant::now(), Timestamp::now()).await,
            }
        }
    }

    /// Where each automatic rollout not yet tracked stands, read afresh from its status
    /// (`None` inside: nothing recorded, it starts). A rollout whose status cannot be
    /// read is left out, and tried again on the next tick.
    async fn read_recorded(
        &self,
        snapshot: &Snapshot,
        policies: &[(&ObjectKey, &EncryptionPolicy)],
        memory: &Memory,
    ) -> HashMap<ObjectKey, Option<Progress>> {
        let mut out = HashMap::new();
        for (key, policy) in policies {
            if interval_of(&policy.spec).is_none() || memory.tracked.contains_key(*key) {
                continue;
            }
            match self.sink.read(Kind::EncryptionPolicy, key).await {
                Ok(status) => {
                    let generation = snapshot
                        .encryption_policies
                        .get(*key)
                        .and_then(|o| o.generation);
                    let progress =
                        status.and_then(|s| recorded_progress(generation, Some(&policy.spec), &s));
                    out.insert((*key).clone(), progress);
                }
                Err(e) => {
                    tracing::warn!(policy = %key, error = %e, "cannot read where the rollout stands; it waits until its status can be read");
                }
            }
        }
        out
    }

    /// One tick: move rollouts on and publish what status shows (when leading).
    pub(super) async fn tick(&mut self, memory: &mut Memory, now: Instant, wall: Timestamp) {
        let Some(published) = self.hub.current() else {
            return;
        };
        let snapshot = &published.snapshot;
        let policies = snapshot.encryption_policies_oldest_first();
        if policies.is_empty() {
            // Nothing to move or show (the usual mesh): no per-tick work at all.
            memory.tracked.clear();
            memory.scopes = None;
            memory.book.prune(now, DEFAULT_WINDOW * 2);
            self.publish_empty();
            return;
        }
        let longest = policies
            .iter()
            .filter_map(|(_, p)| interval_of(&p.spec))
            .max()
            .unwrap_or_default()
            .max(DEFAULT_WINDOW);
        memory.book.prune(now, longest * 2);
        if !*self.leader.borrow() {
            // Followers move nothing and write nothing: they compile with what the
            // leader's status records, and should they lead, they read it afresh.
            memory.tracked.clear();
            self.publish_empty();
            return;
        }
        // An edit that keeps what the progress means (the interval, say) keeps it.
        memory.tracked.retain(|k, t| {
            policies.iter().any(|(pk, p)| {
                let same = *pk == k && progress_of(&p.spec) == progress_of(&t.spec);
                if same {
                    t.spec = p.spec.clone();
                }
                same
            })
        });
        if !memory.scopes.as_ref().is_some_and(|s| s.is_of(&published)) {
            // Every workload of the mesh, and the last ones dropped: off the workers.
            let scopes = &mut memory.scopes;
            off_runtime(|| *scopes = Some(Scopes::of(published.clone(), &policies)));
        }
        let resumable = self.read_recorded(snapshot, &policies, memory).await;
        let Some(scopes) = memory.scopes.take() else {
            return;
        };
        // Read before the lagging proxies are: a report arriving meanwhile is seen on
        // the next tick.
        let reports = self.hub.reports();
        let fresh = memory
            .behind
            .as_ref()
            .is_some_and(|b| Arc::ptr_eq(&b.compile, &published) && b.reports == reports);
        if !fresh {
            // Usually none: the callers behind each policy are looked for among these.
            let lagging = self.hub.lagging(&published);
            let held = self.hub.held();
            let lagging = Lagging::new(&lagging, &held, &published.catalog.set);
            let by_policy = policies
                .iter()
                .map(|(key, _)| {
                    let services = &scopes.covered(key).services;
                    ((*key).clone(), Callers::of(&lagging.calling(services)))
                })
                .collect();
            memory.behind = Some(Behind {
                compile: published.clone(),
                reports,
                by_policy,
            });
        }
        let none = Callers::default();
        let behind_of = |key: &ObjectKey| -> &Callers {
            memory
                .behind
                .as_ref()
                .and_then(|b| b.by_policy.get(key))
                .unwrap_or(&none)
        };
        let by_ip = &scopes.by_ip;
        let mut view = EncryptionView::new();
        let mut events = Vec::new();
        for (key, policy) in &policies {
            let Covered { pods, services } = scopes.covered(key);
            let spec = &policy.spec;
            let window = interval_of(spec).unwrap_or(DEFAULT_WINDOW);
            let behind = behind_of(key);
            let callers_behind = behind.count;
            let mut hold_now = None;
            let mut percent = static_percent(spec);
            let mut strict = spec.mode == TlsMode::Strict;
            let mut step_started_at = None;
            if let (Some(rollout), Some(interval)) = (&spec.rollout, interval_of(spec))
                && let Some(auto) = &rollout.auto
            {
                let tracked = match memory.tracked.entry((*key).clone()) {
                    Entry::Occupied(o) => o.into_mut(),
                    Entry::Vacant(v) => {
                        // Its recorded progress could not be read: nothing is known of
                        // where it stands, so nothing moves and its status is left as
                        // it is.
                        let Some(recorded) = resumable.get(*key).copied() else {
                            continue;
                        };
                        let (tracked, started) =
                            Tracked::resume(key, spec, rollout.percent, auto, recorded, now, wall);
                        events.push(started);
                        v.insert(tracked)
                    }
                };
                if !tracked.pos.settled() {
                    let in_scope = |t: &str| service_of(t).is_some_and(|s| services.contains(&s));
                    let (requests, failures) = memory.book.outbound(tracked.pos.since, in_scope);
                    let last = now.checked_sub(interval).unwrap_or(now);
                    let recent = memory.book.inbound(last, |k| pods.contains(k));
                    let measured = Measured {
                        requests,
                        failures,
                        plaintext_last_interval: recent.plaintext,
                        mtls_last_interval: recent.mtls,
                        observed_full_interval: memory.book.covers(interval, now),
                        callers_behind,
                    };
                    let before = tracked.pos.level;
                    if let Some(t) = step(
                        &mut tracked.pos,
                        &tracked.levels,
                        auto,
                        interval,
                        &measured,
                        now,
                    ) {
                        events.push(transition_event(key, &t));
                    }
                    if tracked.pos.level != before {
                        tracked.since = wall;
                    }
                    let held = hold(
                        &tracked.pos,
                        &tracked.levels,
                        auto,
                        interval,
                        &measured,
                        now,
                    );
                    if let Some(h) = held
                        && !same_reason(tracked.held, h)
                    {
                        events.push(hold_event(
                            key,
                            &h,
                            tracked.levels[tracked.pos.level],
                            &behind.named(),
                        ));
                    }
                    tracked.held = held;
                    hold_now = held;
                }
                step_started_at = Some(tracked.since);
                percent = tracked.levels[tracked.pos.level.min(tracked.levels.len() - 1)];
                strict |= tracked.pos.strict;
            }
            let since = now.checked_sub(window).unwrap_or(now);
            let inbound = memory.book.inbound(since, |k| pods.contains(k));
            let phase = phase(spec.mode, strict, percent);
            view.insert(
                (*key).clone(),
                EncryptionState {
                    phase,
                    percent,
                    step_started_at,
                    traffic: TrafficCounts {
                        mtls_requests: inbound.mtls,
                        plaintext_requests: inbound.plaintext,
                        window_seconds: window.as_secs(),
                    },
                    plaintext_sources: sources(&inbound.sources, by_ip, &self.trust_domain),
                    safety: Measured {
                        plaintext_last_interval: inbound.plaintext,
                        mtls_last_interval: inbound.mtls,
                        observed_full_interval: memory.book.covers(window, now),
                        callers_behind,
                        ..Measured::default()
                    }
                    .safety(),
                    hold: hold_now,
                    callers_behind: behind.named(),
                },
            );
        }
        // The sink logs each event too.
        for e in &events {
            if let Err(err) = self.sink.event(e).await {
                tracing::warn!(error = %err, "event not recorded");
            }
        }
        // Counts change with every report: status takes them with any other change, else
        // at most every COUNTS_EVERY, so a busy mesh does not write statuses every second.
        let counts_due = memory
            .counted_at
            .is_none_or(|at| now.duration_since(at) >= COUNTS_EVERY);
        memory.scopes = Some(scopes);
        self.view.send_if_modified(|current| {
            let changed = if counts_due {
                **current != view
            } else {
                !same_but_counts(current, &view)
            };
            if changed {
                *current = Arc::new(view);
                memory.counted_at = Some(now);
            }
            changed
        });
    }
}

/// The phase a status shows for a policy in `mode`, Strict enforced or not, at `percent`.
fn phase(mode: TlsMode, strict: bool, percent: u8) -> EncryptionPhase {
    match (mode, strict, percent) {
        (_, true, _) => EncryptionPhase::Strict,
        (TlsMode::Disabled, _, _) | (_, _, 0) => EncryptionPhase::Plaintext,
        (_, _, 100) => EncryptionPhase::Encrypted,
        _ => EncryptionPhase::RollingOut,
    }
}

/// Whether `a` and `b` differ in nothing but request counts.
fn same_but_counts(a: &EncryptionView, b: &EncryptionView) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((ka, sa), (kb, sb))| {
            ka == kb
                && sa.phase == sb.phase
                && sa.percent == sb.percent
                && sa.step_started_at == sb.step_started_at
                && same_safety(sa.safety, sb.safety)
                && sa.callers_behind == sb.callers_behind
                && sa.hold.as_ref().map(std::mem::discriminant)
                    == sb.hold.as_ref().map(std::mem::discriminant)
                && sa.plaintext_sources.len() == sb.plaintext_sources.len()
                && sa
                    .plaintext_sources
                    .iter()
                    .zip(&sb.plaintext_sources)
                    .all(|(x, y)| x.address == y.address)
        })
}

/// Whether two safeties differ only in counts (those change with every report).
fn same_safety(a: Safety, b: Safety) -> bool {
    std::mem::discriminant(&a) == std::mem::discriminant(&b)
}

/// Whether two holds are for the same reason (counts aside).
fn same_reason(before: Option<Hold>, now: Hold) -> bool {
    before.is_some_and(|b| std::mem::discriminant(&b) == std::mem::discriminant(&now))
        && match (before, now) {
            (Some(Hold::NotSafe(a)), Hold::NotSafe(b)) => same_safety(a, b),
            _ => true,
        }
}

/// Callers named in a status or Event.
const SHOWN_CALLERS: usize = 5;

/// The interval of an automatic rollout.
fn interval_of(spec: &EncryptionPolicySpec) -> Option<Duration> {
    spec.rollout.as_ref()?.auto.as_ref()?.interval.parse().ok()
}

/// The percentage a policy states without an automatic rollout.
fn static_percent(spec: &EncryptionPolicySpec) -> u8 {
    match (&spec.rollout, spec.mode) {
        (_, TlsMode::Disabled) => 0,
        (Some(r), _) => r.percent.min(100) as u8,
        (None, _) => 100,
    }
}

/// The busiest plaintext sources, named from the registry where it knows them.
fn sources(
    counts: &HashMap<IpAddr, u64>,
    by_ip: &HashMap<IpAddr, Arc<Workload>>,
    trust_domain: &str,
) -> Vec<PlaintextSource> {
    let mut list: Vec<(&IpAddr, &u64)> = counts.iter().collect();
    list.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    list.into_iter()
        .take(SHOWN_SOURCES)
        .map(|(ip, n)| {
            let w = by_ip.get(ip);
            PlaintextSource {
                address: ip.to_string(),
                pod: w.map(|w| w.key.to_string()),
                identity: w.filter(|w| w.meshed).map(|w| {
                    WorkloadId::new(trust_domain, &w.key.namespace, &w.service_account).to_string()
                }),
                requests: *n,
            }
        })
        .collect()
}

fn event(key: &ObjectKey, reason: &str, note: String, warning: bool) -> Event {
    Event {
        kind: Kind::EncryptionPolicy,
        key: key.clone(),
        reason: reason.into(),
        note,
        warning,
    }
}

fn hold_event(key: &ObjectKey, h: &Hold, at: u8, behind: &str) -> Event {
    let note = match h {
        Hold::TooFewRequests { seen, needed } => format!(
            "mTLS rollout holds at {at} %: callers sent {seen} of the {needed} requests a step needs to judge it (rollout.auto.minRequestsPerStep); set rollout.auto.advanceWithoutTraffic to move on without traffic"
        ),
        Hold::NotSafe(Safety::PlaintextSeen(n)) => format!(
            "Strict waits: {n} plaintext requests reached the workloads in the last interval (see status.plaintextSources)"
        ),
        Hold::NotSafe(Safety::CallersBehind(n)) => format!(
            "Strict waits: {n} callers do not hold the config in force yet ({behind}), so they may still call in plaintext; a proxy that is not running or cannot reach the operator holds it up until it does"
        ),
        Hold::NotSafe(Safety::NoTraffic) => "Strict waits: no request reached the workloads in the last interval, so nothing shows who Strict would refuse; set rollout.auto.advanceWithoutTraffic to enforce it anyway".into(),
        Hold::NotSafe(Safety::NotObserved) => "Strict waits: the operator has not heard from the workloads' proxies for a whole interval yet".into(),
        Hold::NotSafe(Safety::Safe) => "Strict waits".into(),
    };
    event(key, "RolloutWaiting", note, false)
}

fn transition_event(key: &ObjectKey, t: &Transition) -> Event {
    match t {
        Transition::Advanced { from, to } => event(
            key,
            "RolloutAdvanced",
            format!("mTLS rollout advanced from {from} % to {to} % of callers"),
            false,
        ),
        Transition::SteppedBack {
            from,
            to,
            rate,
            baseline,
        } => event(
            key,
            "RolloutSteppedBack",
            format!(
                "callers' failure rate rose to {:.1} % (from {:.1} %) at {from} %: stepped back to {to} %",
                rate * 100.0,
                baseline * 100.0
            ),
            true,
        ),
        Transition::Halted { at } => event(
            key,
            "RolloutHalted",
            format!(
                "callers kept failing more as the rollout advanced: it holds at {at} % until the policy changes"
            ),
            true,
        ),
        Transition::StrictEnforced => event(
            key,
            "StrictEnforced",
            "every caller holds the 100 % config, and only mTLS arrived for a whole interval: switched to Strict".into(),
            false,
        ),
    }
}
