//! Statuses from a snapshot, the compiled configs and what proxies report.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use braid_api::control::delta::ServiceRef;
use braid_crds::ValidationErrors;
use braid_crds::access_policy::AccessPolicyStatus;
use braid_crds::common::WorkloadSelector;
use braid_crds::encryption_policy::EncryptionPolicyStatus;
use braid_crds::self_healing::SelfHealingStatus;
use braid_crds::traffic_route::{ProxyCounts, TrafficRouteStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::Serialize;

use super::refs::{RESOLVED_REFS, Unresolved, unresolved};
use crate::access::{AccessState, AccessView};
use crate::compiler::{conflicts, service_for_host};
use crate::healer::HealingView;
use crate::registry::enforced::access_progress_of;
use crate::registry::progress::progress_of;
use crate::registry::{Kind, LabelIndex, ObjectKey, Observed, Snapshot};
use crate::rollout::{EncryptionState, EncryptionView, Safety};
use crate::sink::{Event, StatusUpdate};

/// The condition type every braid resource carries.
pub const ACCEPTED: &str = "Accepted";
/// The condition of an EncryptionPolicy (no plaintext reaches its workloads) and of an
/// AccessPolicy (no request it would refuse does).
pub const SAFE_TO_ENFORCE: &str = "SafeToEnforce";

/// What the operator's own loops know, for status.
#[derive(Clone, Copy)]
pub struct Views<'a> {
    /// The healer's state of each SelfHealing.
    pub healing: &'a HealingView,
    /// Each EncryptionPolicy's rollout and traffic.
    pub encryption: &'a EncryptionView,
    /// Each AccessPolicy's mode and evidence.
    pub access: &'a AccessView,
}

/// What the proxies hold: the config each should have, and the version each reported.
#[derive(Clone, Copy)]
pub struct ProxyState<'a> {
    /// The compiled config of every meshed workload.
    pub configs: &'a crate::compiler::Configs,
    /// The compile's services and workloads' digests, of which config versions are made.
    pub catalog: &'a crate::compiler::Catalog,
    /// The config version each connected proxy last reported applying.
    pub applied: &'a HashMap<ObjectKey, String>,
    /// The services each on-demand proxy reported holding (a proxy not here holds every
    /// service).
    pub held: &'a HashMap<ObjectKey, Vec<ServiceRef>>,
    /// The cluster's DNS domain, to resolve TrafficRoute hosts.
    pub cluster_domain: &'a str,
}

/// Proxies counted under each service they hold, in one pass over the proxies (not one
/// per TrafficRoute): on-demand proxies under the services they reported holding, the
/// others, which hold every service, once for all.
#[derive(Default)]
struct Holders {
    by_service: HashMap<ObjectKey, ProxyCounts>,
    every: ProxyCounts,
}

impl Holders {
    /// The proxies holding `service`.
    fn of(&self, service: &ObjectKey) -> ProxyCounts {
        match self.by_service.get(service) {
            Some(some) => some.merged(&self.every),
            None => self.every.clone(),
        }
    }
}

impl ProxyState<'_> {
    /// Whether `pod`'s proxy reported holding its current config.
    fn current(&self, pod: &ObjectKey) -> bool {
        // Only a proxy that reported is worked out (a version digest each).
        self.applied
            .get(pod)
            .is_some_and(|v| self.catalog.version_of(pod).as_ref() == Some(v))
    }

    fn counts<'k>(&self, targets: impl Iterator<Item = &'k ObjectKey>) -> ProxyCounts {
        let mut counts = ProxyCounts::default();
        for pod in targets {
            add(&mut counts, pod, self.current(pod));
        }
        counts
    }

    /// Proxies that have not reported hold nothing as far as anyone knows: one that
    /// connects finds its services on demand (or reports holding every one). Counting
    /// them under every service made each new pod change every TrafficRoute's status,
    /// 500 status writes per pod at 500 routes.
    fn holders(&self) -> Holders {
        let mut out = Holders::default();
        for pod in self.configs.keys() {
            let current = self.current(pod);
            match self.held.get(pod) {
                None if !self.applied.contains_key(pod) => {}
                None => add(&mut out.every, pod, current),
                Some(services) => {
                    for s in services {
                        let key = ObjectKey::new(&s.namespace, &s.name);
                        add(out.by_service.entry(key).or_default(), pod, current);
                    }
                }
            }
        }
        out
    }

    /// Meshed workloads of `namespace` that `selector` picks, from the few `index` says
    /// may match rather than every workload of the mesh.
    fn selected<'s>(
        &'s self,
        index: &'s LabelIndex<'s>,
        namespace: &'s str,
        selector: &'s WorkloadSelector,
    ) -> impl Iterator<Item = &'s ObjectKey> + 's {
        index
            .candidates(namespace, &selector.match_labels)
            .iter()
            .filter(move |w| selector.matches(&w.labels) && self.configs.contains_key(&w.key))
            .map(|w| &w.key)
    }
}

/// Every resource's status, and the events worth recording.
#[derive(Debug, Default)]
pub struct Computed {
    /// Statuses by kind and key.
    pub statuses: BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    /// Events: a resource that became invalid (or changed while invalid).
    pub events: Vec<Event>,
    /// Resources whose status stands as last written: nothing here may say more of them
    /// yet (an accepted EncryptionPolicy before this leader's rollout loop has spoken).
    pub kept: BTreeSet<(Kind, ObjectKey)>,
}

/// Computes the status of every resource in `snapshot`. `previous` holds what was last
/// written, so a condition's `lastTransitionTime` only moves when its status does, and
/// an event is raised only for a new invalid generation.
pub fn compute(
    snapshot: &Snapshot,
    proxies: ProxyState<'_>,
    views: Views<'_>,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Computed {
    let mut out = Computed::default();
    let conflicts = conflicts(snapshot, proxies.cluster_domain);
    let holders = proxies.holders();
    let index = LabelIndex::new(snapshot.workloads.values());
    for obs in snapshot.traffic_routes.values() {
        let host_service = obs.accepted.as_ref().and_then(|r| {
            service_for_host(&r.spec.host, &obs.key.namespace, proxies.cluster_domain)
                .filter(|svc| snapshot.services.contains_key(svc))
        });
        // The proxies holding the host service carry the route's rules and groups.
        let counts = host_service
            .as_ref()
            .map(|svc| holders.of(svc))
            .unwrap_or_default();
        let mut condition = accepted(obs, Kind::TrafficRoute, previous, now);
        if let Some(c) = conflicts.iter().find(|c| c.loser == obs.key) {
            conflicted(&mut condition, &c.winner, previous, &obs.key, now);
        }
        let mut conditions = vec![condition];
        if let Some(route) = &obs.accepted {
            let missing = unresolved(
                &route.spec,
                &obs.key.namespace,
                snapshot,
                proxies.cluster_domain,
            );
            conditions.push(resolved_refs(obs, missing, previous, now));
        }
        let status = TrafficRouteStatus {
            observed_generation: obs.generation,
            conditions,
            rule_count: obs.accepted.as_ref().map(|r| r.spec.rules.len() as u32),
            proxies: Some(counts),
        };
        push(&mut out, Kind::TrafficRoute, obs, &status, previous);
    }
    for obs in snapshot.encryption_policies.values() {
        let counts = obs.accepted.as_ref().map(|p| {
            proxies.counts(proxies.selected(&index, &obs.key.namespace, &p.spec.selector))
        });
        let mut conditions = vec![accepted(obs, Kind::EncryptionPolicy, previous, now)];
        let mut status = EncryptionPolicyStatus {
            observed_generation: obs.generation,
            proxies: Some(counts.unwrap_or_default()),
            ..Default::default()
        };
        if let Some(state) = views.encryption.get(&obs.key) {
            conditions.push(safe_to_enforce(
                &obs.key,
                state,
                obs.generation,
                previous,
                now,
            ));
            status.phase = Some(state.phase);
            status.current_percent = Some(u32::from(state.percent));
            status.progress_of = obs.accepted.as_ref().map(|p| progress_of(&p.spec));
            status.step_started_at = state.step_started_at.map(Time);
            status.traffic = Some(state.traffic.clone());
            status.plaintext_sources = state.plaintext_sources.clone();
        } else if obs.accepted.is_some() {
            // The rollout loop has not spoken since this replica began leading. Its
            // status records where the rollout stands, which every replica compiles
            // with and a leader resumes from; this replica's copy of it may be older
            // than the last leader's final write, so it is left alone.
            out.kept.insert((Kind::EncryptionPolicy, obs.key.clone()));
            continue;
        }
        status.conditions = conditions;
        push(&mut out, Kind::EncryptionPolicy, obs, &status, previous);
    }
    for obs in snapshot.self_healings.values() {
        let counts = obs.accepted.as_ref().map(|p| {
            proxies.counts(proxies.selected(&index, &obs.key.namespace, &p.spec.selector))
        });
        let healer = views.healing.get(&obs.key).cloned().unwrap_or_default();
        let status = SelfHealingStatus {
            observed_generation: obs.generation,
            conditions: vec![accepted(obs, Kind::SelfHealing, previous, now)],
            unhealthy_count: Some(healer.unhealthy.len() as u32),
            unhealthy: healer.unhealthy,
            actions: healer.actions,
            proxies: Some(counts.unwrap_or_default()),
        };
        push(&mut out, Kind::SelfHealing, obs, &status, previous);
    }
    for obs in snapshot.access_policies.values() {
        let counts = obs.accepted.as_ref().map(|p| {
            proxies.counts(proxies.selected(&index, &obs.key.namespace, &p.spec.selector))
        });
        let mut status = AccessPolicyStatus {
            observed_generation: obs.generation,
            proxies: Some(counts.unwrap_or_default()),
            ..Default::default()
        };
        let mut conditions = vec![accepted(obs, Kind::AccessPolicy, previous, now)];
        // The loop's state counts only for the spec it was worked out for: an edit of a
        // rollout's rules starts it again from Audit, which its next tick says.
        let state = views.access.get(&obs.key).filter(|state| {
            obs.accepted.as_ref().is_some_and(|p| {
                let progress = p.spec.rollout.as_ref().map(|_| access_progress_of(&p.spec));
                state.progress_of == progress
            })
        });
        match (state, &obs.accepted) {
            (Some(state), Some(policy)) => {
                conditions.push(access_safety(
                    &obs.key,
                    state,
                    obs.generation,
                    previous,
                    now,
                ));
                status.phase = Some(state.phase);
                status.phase_started_at = state.phase_started_at.map(Time);
                status.progress_of = policy
                    .spec
                    .rollout
                    .as_ref()
                    .map(|_| access_progress_of(&policy.spec));
                status.decisions = Some(state.decisions.clone());
                status.denied_sources = state.denied_sources.clone();
            }
            // Its rollout's stage is what its status records, which every replica
            // compiles with: until this leader's loop has read it back, it stands.
            (None, Some(policy)) if policy.spec.rollout.is_some() => {
                out.kept.insert((Kind::AccessPolicy, obs.key.clone()));
                continue;
            }
            (None, Some(policy)) => {
                status.phase = Some(policy.spec.mode.into());
            }
            (_, None) => {}
        }
        status.conditions = conditions;
        push(&mut out, Kind::AccessPolicy, obs, &status, previous);
    }
    out
}

fn add(counts: &mut ProxyCounts, pod: &ObjectKey, current: bool) {
    counts.add(&pod.namespace, &pod.name, current);
}

fn push<T, S: Serialize>(
    out: &mut Computed,
    kind: Kind,
    obs: &Observed<T>,
    status: &S,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
) {
    let id = (kind, obs.key.clone());
    if let Err(errors) = &obs.current {
        let before = previous.get(&id).map(|u| &u.status);
        let reported = before.is_some_and(|s| {
            s.get("observedGeneration").and_then(|g| g.as_i64()) == obs.generation
                && condition_status(s) == Some("False")
        });
        if !reported {
            out.events.push(Event {
                kind,
                key: obs.key.clone(),
                reason: "Invalid".into(),
                note: invalid_message(errors, obs.accepted.is_some()),
                warning: true,
            });
        }
    }
    let status = serde_json::to_value(status).unwrap_or_default();
    out.statuses.insert(
        id,
        StatusUpdate {
            kind,
            key: obs.key.clone(),
            status,
        },
    );
}

fn condition_status(status: &serde_json::Value) -> Option<&str> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(ACCEPTED))?
        .get("status")?
        .as_str()
}

fn invalid_message(errors: &ValidationErrors, previous_in_force: bool) -> String {
    let tail = if previous_in_force {
        "; the last valid generation stays in force"
    } else {
        "; nothing of it is in force"
    };
    format!("{}{tail}", errors.summary())
}

/// An AccessPolicy's `SafeToEnforce`: whether enforcing it would refuse any request the
/// covered workloads received in its window.
fn access_safety(
    key: &ObjectKey,
    state: &AccessState,
    generation: Option<i64>,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = &state.safety;
    let last_transition_time =
        transitioned_of(previous, Kind::AccessPolicy, key, SAFE_TO_ENFORCE, status)
            .unwrap_or_else(|| now.clone());
    Condition {
        type_: SAFE_TO_ENFORCE.into(),
        status: (*status).into(),
        reason: (*reason).into(),
        message: message.clone(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// What an accepted resource of `kind` does in this version, said plainly so a status
/// never claims enforcement that is not there.
fn in_force(kind: Kind) -> &'static str {
    match kind {
        Kind::TrafficRoute => {
            "the spec is valid; its groups and rules (matches, weights, timeouts, faults, retries, mirror, rateLimit) are in the callers' config"
        }
        Kind::EncryptionPolicy => {
            "the spec is valid; its mode and portOverrides are in the covered workloads' config, and its rollout in their callers'"
        }
        Kind::SelfHealing => {
            "the spec is valid; its outlierDetection is in the callers' config, its overloadProtection in the selected workloads', and the operator heals what callers report"
        }
        Kind::AccessPolicy => {
            "the spec is valid; its rules, with sources resolved to identities and pods, are in the selected workloads' config, applied in the mode status.phase names"
        }
    }
}

/// When the `Accepted` condition last written for `key` turned `status`, if it is that.
fn transitioned(
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    kind: Kind,
    key: &ObjectKey,
    status: &str,
) -> Option<Time> {
    transitioned_of(previous, kind, key, ACCEPTED, status)
}

/// When the condition `type_` last written for `key` turned `status`, if it is that.
fn transitioned_of(
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    kind: Kind,
    key: &ObjectKey,
    type_: &str,
    status: &str,
) -> Option<Time> {
    let time = previous
        .get(&(kind, key.clone()))?
        .status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| {
            c.get("type").and_then(|t| t.as_str()) == Some(type_)
                && c.get("status").and_then(|s| s.as_str()) == Some(status)
        })?
        .get("lastTransitionTime")
        .cloned()?;
    serde_json::from_value(time).ok()
}

/// Turns a valid route's `Accepted` condition into `False`/`Conflict`: an older route
/// (`winner`) already routes the same service port, and the oldest wins.
fn conflicted(
    condition: &mut Condition,
    winner: &ObjectKey,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    key: &ObjectKey,
    now: &Time,
) {
    if condition.status != "False" {
        condition.last_transition_time =
            transitioned(previous, Kind::TrafficRoute, key, "False").unwrap_or_else(|| now.clone());
    }
    condition.status = "False".into();
    condition.reason = "Conflict".into();
    condition.message = format!(
        "spec.host: TrafficRoute {winner} is older and already routes this service port, so this one is not in force; merge the rules into {winner}, or give each route its own spec.port"
    );
}

/// The `ResolvedRefs` condition of a valid route: `True`, or `False` naming what it names
/// that is not there.
fn resolved_refs<T>(
    obs: &Observed<T>,
    missing: Option<Unresolved>,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = match missing {
        None => (
            "True",
            RESOLVED_REFS,
            "the host, port and every group resolve".to_string(),
        ),
        Some(u) => ("False", u.reason, u.message),
    };
    Condition {
        type_: RESOLVED_REFS.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: obs.generation,
        last_transition_time: transitioned_of(
            previous,
            Kind::TrafficRoute,
            &obs.key,
            RESOLVED_REFS,
            status,
        )
        .unwrap_or_else(|| now.clone()),
    }
}

/// The `SafeToEnforce` condition of an EncryptionPolicy, from what its workloads' proxies
/// reported (`None`: not heard from them for a whole window yet).
fn safe_to_enforce(
    key: &ObjectKey,
    state: &EncryptionState,
    generation: Option<i64>,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Condition {
    let window = state.traffic.window_seconds;
    let (status, reason, message) = match state.safety {
        Safety::NotObserved => (
            "Unknown",
            "NotObservedYet",
            format!("the operator has not heard from the workloads' proxies for {window} s yet"),
        ),
        Safety::NoTraffic => (
            "Unknown",
            "NoTraffic",
            format!(
                "no request reached the covered workloads in the last {window} s: nothing shows whom mode Strict would refuse"
            ),
        ),
        Safety::CallersBehind(n) => (
            "Unknown",
            "CallersBehind",
            format!(
                "{n} callers do not hold the config in force yet ({}), so they may still call in plaintext: a proxy that is not running or cannot reach the operator holds this up until it does",
                state.callers_behind
            ),
        ),
        Safety::Safe => (
            "True",
            "NoPlaintext",
            format!(
                "only mTLS requests reached the covered workloads in the last {window} s and every caller holds the config in force: mode Strict would refuse nothing"
            ),
        ),
        Safety::PlaintextSeen(_) => (
            "False",
            "PlaintextSeen",
            format!(
                "{} plaintext requests reached the covered workloads in the last {window} s (see plaintextSources): mode Strict would refuse them",
                state.traffic.plaintext_requests
            ),
        ),
    };
    Condition {
        type_: SAFE_TO_ENFORCE.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: transitioned_of(
            previous,
            Kind::EncryptionPolicy,
            key,
            SAFE_TO_ENFORCE,
            status,
        )
        .unwrap_or_else(|| now.clone()),
    }
}

/// The `Accepted` condition, keeping the previous transition time when its status holds.
fn accepted<T>(
    obs: &Observed<T>,
    kind: Kind,
    previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
    now: &Time,
) -> Condition {
    let (status, reason, message) = match &obs.current {
        Ok(_) => ("True", "Accepted", in_force(kind).to_string()),
        Err(errors) => (
            "False",
            "Invalid",
            invalid_message(errors, obs.accepted.is_some()),
        ),
    };
    let last_transition_time =
        transitioned(previous, kind, &obs.key, status).unwrap_or_else(|| now.clone());
    Condition {
        type_: ACCEPTED.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: obs.generation,
        last_transition_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static NO_HEALING: HealingView = BTreeMap::new();
    static NO_ENCRYPTION: EncryptionView = BTreeMap::new();
    static NO_ACCESS: AccessView = BTreeMap::new();
    /// The operator's loops know nothing yet.
    const NO_VIEWS: Views<'static> = Views {
        healing: &NO_HEALING,
        encryption: &NO_ENCRYPTION,
        access: &NO_ACCESS,
    };
    use crate::compiler::{Options, compile};
    use crate::source::dir::registry_file;
    use crate::source::dir::resources::{Generations, parse_file};

    const REGISTRY: &str = r#"
services:
- {name: payments, namespace: shop, vips: [10.96.0.10], selector: {app: payments}, ports: [{port: 80}]}
workloads:
- {name: payments-0, namespace: shop, ips: [10.0.0.1], labels: {app: payments}}
- {name: checkout-0, namespace: shop, ips: [10.0.0.2], labels: {app: checkout}}
"#;

    fn resources(timeout: &str) -> String {
        format!(
            "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {{name: payments, namespace: shop}}\nspec: {{host: payments, rules: [{{name: all, timeout: {timeout}}}]}}\n---\napiVersion: braid.dev/v1alpha1\nkind: SelfHealing\nmetadata: {{name: heal, namespace: shop}}\nspec: {{selector: {{matchLabels: {{app: payments}}}}, outlierDetection: {{consecutiveErrors: 5}}}}\n"
        )
    }

    /// The services and workloads of [`REGISTRY`], no resources.
    fn registry_only() -> Snapshot {
        let (services, workloads) = registry_file::parse(REGISTRY).unwrap().resolve().unwrap();
        Snapshot {
            services,
            workloads,
            ..Default::default()
        }
    }

    fn snapshot(gens: &mut Generations, timeout: &str) -> Snapshot {
        let mut snap = registry_only();
        gens.insert_all(&parse_file(&resources(timeout)).unwrap(), &mut snap);
        snap
    }

    /// `snap`'s statuses at `at`, after `previous`, no proxy having applied anything.
    fn unapplied(
        snap: &Snapshot,
        previous: &BTreeMap<(Kind, ObjectKey), StatusUpdate>,
        at: &Time,
    ) -> Computed {
        let out = compile(snap, &Options::default());
        let applied = HashMap::new();
        let proxies = ProxyState {
            configs: &out.configs,
            catalog: &out.catalog,
            applied: &applied,
            held: &HashMap::new(),
            cluster_domain: "cluster.local",
        };
        compute(snap, proxies, NO_VIEWS, previous, at)
    }

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn condition(c: &Computed, kind: Kind, name: &str) -> serde_json::Value {
        c.statuses[&(kind, ObjectKey::new("shop", name))].status["conditions"][0].clone()
    }

    #[test]
    fn a_route_targets_the_proxies_holding_its_service() {
        let mut gens = Generations::default();
        let snap = snapshot(&mut gens, "2s");
        let out = compile(&snap, &Options::default());
        let configs = &out.configs;
        let (pay, checkout) = (
            ObjectKey::new("shop", "payments-0"),
            ObjectKey::new("shop", "checkout-0"),
        );
        let mut applied = HashMap::from([(pay.clone(), out.catalog.version_of(&pay).unwrap())]);
        let route = |applied: &HashMap<ObjectKey, String>,
                     held: &HashMap<ObjectKey, Vec<ServiceRef>>| {
            let proxies = ProxyState {
                configs,
                catalog: &out.catalog,
                applied,
                held,
                cluster_domain: "cluster.local",
            };
            let c = compute(
                &snap,
                proxies,
                NO_VIEWS,
                &BTreeMap::new(),
                &time("2026-11-22T00:00:00Z"),
            );
            let p = c.statuses[&(Kind::TrafficRoute, ObjectKey::new("shop", "payments"))].status
                ["proxies"]
                .clone();
            (
                p["targeted"].as_u64().unwrap(),
                p["applied"].as_u64().unwrap(),
            )
        };
        // A proxy that never reported holds nothing anyone knows of: not counted (each
        // new pod would otherwise change every route's status).
        assert_eq!(route(&applied, &HashMap::new()), (1, 1));
        // Proxies holding every service (they report no services held): both carry the
        // route, checkout-0 still on an older version.
        applied.insert(checkout.clone(), "older".into());
        assert_eq!(route(&applied, &HashMap::new()), (2, 1));
        // On demand: checkout-0 has not called payments, so the route is not its.
        let held = HashMap::from([
            (pay.clone(), vec!["shop/payments".parse().unwrap()]),
            (checkout.clone(), vec![]),
        ]);
        assert_eq!(route(&applied, &held), (1, 1));
    }

    #[test]
    fn statuses_count_proxies_and_report_invalid_specs_once() {
        let mut gens = Generations::default();
        let snap = snapshot(&mut gens, "2s");
        let out = compile(&snap, &Options::default());
        let configs = &out.configs;
        let pay = ObjectKey::new("shop", "payments-0");
        let mut applied = HashMap::from([
            (pay.clone(), out.catalog.version_of(&pay).unwrap()),
            (ObjectKey::new("shop", "checkout-0"), "older".into()),
        ]);
        let proxies = ProxyState {
            configs,
            catalog: &out.catalog,
            applied: &applied,
            held: &HashMap::new(),
            cluster_domain: "cluster.local",
        };
        let t0 = time("2026-11-22T00:00:00Z");
        let first = compute(&snap, proxies, NO_VIEWS, &BTreeMap::new(), &t0);
        assert!(first.events.is_empty(), "{:?}", first.events);
        let tr = &first.statuses[&(Kind::TrafficRoute, ObjectKey::new("shop", "payments"))].status;
        // Both meshed pods call payments; one proxy has applied its current version, and
        // the other is named.
        assert_eq!(
            tr["proxies"],
            serde_json::json!({"targeted": 2, "applied": 1, "pending": ["shop/checkout-0"]})
        );
        assert_eq!(tr["ruleCount"], 1);
        assert_eq!(
            condition(&first, Kind::TrafficRoute, "payments")["status"],
            "True"
        );
        // The SelfHealing selects payments-0 only.
        let heal = &first.statuses[&(Kind::SelfHealing, ObjectKey::new("shop", "heal"))].status;
        assert_eq!(
            heal["proxies"],
            serde_json::json!({"targeted": 1, "applied": 1})
        );

        // An invalid edit: False with the field path, one event, time of the transition.
        let bad = snapshot(&mut gens, "soon");
        applied.insert(pay.clone(), "stale".into());
        let proxies = ProxyState {
            configs,
            catalog: &out.catalog,
            applied: &applied,
            held: &HashMap::new(),
            cluster_domain: "cluster.local",
        };
        let t1 = time("2026-11-22T00:01:00Z");
        let second = compute(&bad, proxies, NO_VIEWS, &first.statuses, &t1);
        let c = condition(&second, Kind::TrafficRoute, "payments");
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("Invalid"))
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("spec.rules[0].timeout"),
            "{c}"
        );
        assert_eq!(c["lastTransitionTime"], "2026-11-22T00:01:00Z");
        assert_eq!(second.events.len(), 1);
        assert!(
            second.events[0].warning && second.events[0].note.contains("spec.rules[0].timeout")
        );
        // The SelfHealing did not change state: its transition time stays.
        assert_eq!(
            condition(&second, Kind::SelfHealing, "heal")["lastTransitionTime"],
            "2026-11-22T00:00:00Z"
        );

        // The same invalid generation again: no new event.
        let third = compute(
            &bad,
            proxies,
            NO_VIEWS,
            &second.statuses,
            &time("2026-11-22T00:02:00Z"),
        );
        assert!(third.events.is_empty());
        assert_eq!(
            condition(&third, Kind::TrafficRoute, "payments")["lastTransitionTime"],
            "2026-11-22T00:01:00Z"
        );
    }

    #[test]
    fn a_new_leader_leaves_an_encryption_status_alone_until_its_rollout_loop_speaks() {
        let mut snap = registry_only();
        let policy = "apiVersion: braid.dev/v1alpha1\nkind: EncryptionPolicy\nmetadata: {name: pay, namespace: shop}\nspec: {mode: Permissive, rollout: {percent: 0, auto: {steps: [100], interval: 10s, enforceStrict: true}}}\n";
        Generations::default().insert_all(&parse_file(policy).unwrap(), &mut snap);
        let key = ObjectKey::new("shop", "pay");
        snap.rollout_status.insert(
            key.clone(),
            crate::registry::Progress {
                percent: 100,
                strict: true,
            },
        );
        let out = unapplied(&snap, &BTreeMap::new(), &time("2026-11-22T00:00:00Z"));
        // Its copy of the status may be older than the last leader's final write: what
        // it would write could lower protection, so it writes nothing, and forgets
        // nothing either.
        let id = (Kind::EncryptionPolicy, key);
        assert!(!out.statuses.contains_key(&id), "{:?}", out.statuses);
        assert!(out.kept.contains(&id));
    }

    #[test]
    fn a_valid_route_to_a_port_the_service_lacks_says_so_and_stays_accepted() {
        let mut snap = registry_only();
        let route = "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: payments, namespace: shop}\nspec: {host: payments, port: 8080, rules: [{name: all}]}\n";
        Generations::default().insert_all(&parse_file(route).unwrap(), &mut snap);
        let at = time("2026-11-22T00:00:00Z");
        let out = unapplied(&snap, &BTreeMap::new(), &at);
        let id = (Kind::TrafficRoute, ObjectKey::new("shop", "payments"));
        let conditions = &out.statuses[&id].status["conditions"];
        assert_eq!(conditions[0]["type"], ACCEPTED);
        assert_eq!(conditions[0]["status"], "True");
        assert_eq!(conditions[1]["type"], "ResolvedRefs");
        assert_eq!(conditions[1]["status"], "False");
        assert_eq!(conditions[1]["reason"], "PortNotFound");
        assert!(
            conditions[1]["message"]
                .as_str()
                .unwrap()
                .starts_with("spec.port: Service shop/payments has no port 8080"),
            "{conditions}"
        );
        // Its transition time holds while it stays False.
        let later = unapplied(&snap, &out.statuses, &time("2026-11-22T00:05:00Z"));
        assert_eq!(
            later.statuses[&id].status["conditions"][1]["lastTransitionTime"],
            "2026-11-22T00:00:00Z"
        );
    }

    #[test]
    fn the_newer_of_two_routes_on_one_service_port_reports_the_conflict() {
        let mut snap = registry_only();
        let text = "apiVersion: braid.dev/v1alpha1\nkind: TrafficRoute\nmetadata: {name: NAME, namespace: shop}\nspec: {host: payments, rules: [{name: all}]}\n";
        let mut gens = Generations::default();
        for (name, created) in [
            ("b-old", "2026-01-01T00:00:00Z"),
            ("a-new", "2026-02-01T00:00:00Z"),
        ] {
            let mut one = Snapshot::default();
            gens.insert_all(&parse_file(&text.replace("NAME", name)).unwrap(), &mut one);
            let key = ObjectKey::new("shop", name);
            let mut obs = one.traffic_routes.remove(&key).unwrap();
            obs.created = Some(created.into());
            snap.traffic_routes.insert(key, obs);
        }
        let t0 = time("2026-11-22T00:00:00Z");
        let first = unapplied(&snap, &BTreeMap::new(), &t0);
        assert_eq!(
            condition(&first, Kind::TrafficRoute, "b-old")["status"],
            "True"
        );
        let c = condition(&first, Kind::TrafficRoute, "a-new");
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("Conflict"))
        );
        assert!(
            c["message"]
                .as_str()
                .unwrap()
                .contains("TrafficRoute shop/b-old is older"),
            "{c}"
        );
        // Still in conflict later: the transition time holds.
        let later = unapplied(&snap, &first.statuses, &time("2026-11-22T00:05:00Z"));
        assert_eq!(
            condition(&later, Kind::TrafficRoute, "a-new")["lastTransitionTime"],
            "2026-11-22T00:00:00Z"
        );
    }
}
