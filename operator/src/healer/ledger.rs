//! What the healer did: actions per SelfHealing (for the hourly budget and status) and
//! endpoints whose last attempt failed (held back before the next try).

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use braid_crds::self_healing::{HealingAction, HealingActionRecord};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::reports::EndpointRef;
use crate::registry::ObjectKey;

/// How many recent actions each SelfHealing's status lists.
pub const KEPT_ACTIONS: usize = 20;

/// The budget's window.
const HOUR: Duration = Duration::from_secs(3600);

/// Actions taken and attempts held back.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// The last [`KEPT_ACTIONS`] actions, for status.
    taken: BTreeMap<ObjectKey, VecDeque<HealingActionRecord>>,
    /// When each changing action of the last hour was taken, for the budget (a budget
    /// may allow more in an hour than status keeps).
    spent: BTreeMap<ObjectKey, VecDeque<Timestamp>>,
    held: BTreeMap<EndpointRef, Timestamp>,
}

impl Ledger {
    /// Records an action `healing` took.
    pub fn record(&mut self, healing: &ObjectKey, record: HealingActionRecord) {
        if record.action != HealingAction::None {
            let times = self.spent.entry(healing.clone()).or_default();
            times.push_back(record.at.0);
            // The budget is at most 100 an hour: older times can go.
            while times.len() > 100 {
                times.pop_front();
            }
        }
        let list = self.taken.entry(healing.clone()).or_default();
        list.push_back(record);
        while list.len() > KEPT_ACTIONS {
            list.pop_front();
        }
    }

    /// How many actions that change something (not `None`) `healing` took in the hour
    /// before `now`.
    pub fn spent(&self, healing: &ObjectKey, now: Timestamp) -> u32 {
        let since = now.checked_sub(HOUR).unwrap_or(now);
        self.spent.get(healing).map_or(0, |times| {
            times.iter().filter(|t| **t > since).count() as u32
        })
    }

    /// `healing`'s recent actions, oldest first.
    pub fn actions(&self, healing: &ObjectKey) -> Vec<HealingActionRecord> {
        self.taken
            .get(healing)
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Holds `endpoint` back until `until` (its last attempt failed).
    pub fn hold(&mut self, endpoint: &EndpointRef, until: Timestamp) {
        self.held.insert(endpoint.clone(), until);
    }

    /// Whether `endpoint` is held back at `now`.
    pub fn is_held(&self, endpoint: &EndpointRef, now: Timestamp) -> bool {
        self.held.get(endpoint).is_some_and(|until| *until > now)
    }

    /// Forgets SelfHealings that are gone and holds that ended.
    pub fn prune(&mut self, live: impl Fn(&ObjectKey) -> bool, now: Timestamp) {
        self.taken.retain(|k, _| live(k));
        self.spent.retain(|k, _| live(k));
        self.held.retain(|_, until| *until > now);
    }
}

/// An action record for `pod` at `now`.
pub fn record_of(pod: &str, action: HealingAction, now: Timestamp) -> HealingActionRecord {
    HealingActionRecord {
        pod: pod.to_owned(),
        action,
        at: Time(now),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    #[test]
    fn the_budget_counts_changing_actions_of_the_last_hour() {
        let mut ledger = Ledger::default();
        let heal = ObjectKey::new("shop", "heal");
        ledger.record(&heal, record_of("a", HealingAction::RestartPod, at(0)));
        ledger.record(&heal, record_of("b", HealingAction::None, at(10)));
        ledger.record(
            &heal,
            record_of("c", HealingAction::RemoveFromService, at(20)),
        );
        assert_eq!(ledger.spent(&heal, at(30)), 2);
        assert_eq!(ledger.spent(&heal, at(3601)), 1);
        assert_eq!(ledger.spent(&ObjectKey::new("shop", "other"), at(30)), 0);
        for i in 0..30 {
            ledger.record(
                &heal,
                record_of("d", HealingAction::RestartPod, at(100 + i)),
            );
        }
        assert_eq!(ledger.actions(&heal).len(), KEPT_ACTIONS);
        // The budget still sees every one of them.
        assert_eq!(ledger.spent(&heal, at(200)), 32);
        ledger.prune(|_| false, at(0));
        assert!(ledger.actions(&heal).is_empty());
    }
}
