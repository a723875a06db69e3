//! Leader election on a coordination.k8s.io/v1 Lease, so only one replica writes
//! statuses, moves rollouts and acts on SelfHealing, while every replica serves config.
//!
//! Hand-written rather than taken from a crate: `kube-leader-election` patches without
//! `resourceVersion`, so two replicas taking over an expired lease can both win;
//! `kube-lease-manager` (0.12 for kube 4) relies on server-side-apply field ownership and
//! releases expired leases with unconditional patches. Here every write is a replace
//! carrying the `resourceVersion` that was read, so of two replicas acting on the same
//! read, the store accepts one and refuses the other ([`StoreError::Conflict`]). What to
//! do with the Lease is decided by a pure function, [`decide`].
//!
//! The Lease lives in a [`LeaseStore`]: the API server ([`KubeLeases`]) or, in directory
//! mode, a file every replica shares ([`FileLeases`]) — the same election either way, so
//! the e2e runs several replicas through the code a cluster runs.

mod file;
mod store;

pub use file::FileLeases;
pub use store::{KubeLeases, LeaseStore, StoreError};

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The Lease's name.
pub const LEASE_NAME: &str = "braid-operator";
/// The annotation in which the holder names the address of its config server, where
/// followers relay proxies' reports (directory mode; in a cluster the holder's pod IP
/// says it).
pub const ADDRESS_ANNOTATION: &str = "braid.dev/config-server";

/// How the election runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace (the operator's own).
    pub namespace: String,
    /// This replica's identity (its pod name), unique among replicas.
    pub identity: String,
    /// How long a lease holds without renewal; a successor waits this long after the
    /// holder's last renewal (unless the holder released it).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// The leader stops acting when it has not renewed for this long, before the lease
    /// can expire and a successor start (so two leaders never act at once).
    pub renew_deadline: Duration,
    /// How often a follower (or a leader whose renewal failed) tries again.
    pub retry_every: Duration,
    /// This replica's config server, written into the Lease while it holds it
    /// ([`ADDRESS_ANNOTATION`]).
    pub address: Option<String>,
}

impl LeaseConfig {
    /// The Lease [`LEASE_NAME`] in `namespace`, for the replica `identity`: 15 s leases,
    /// renewed every 5 s, given up after 10 s without renewal, retried every 2 s.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: LEASE_NAME.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
            address: None,
        }
    }
}

/// Whether this replica leads now, and every change of that.
#[derive(Clone, Debug)]
pub struct Leadership {
    rx: watch::Receiver<bool>,
    // Keeps `always()`'s channel open, so waiting for a change waits rather than failing.
    _tx: Option<Arc<watch::Sender<bool>>>,
}

impl Leadership {
    /// Always the leader: one operator and no election (tests, embedding).
    pub fn always() -> Self {
        let (tx, rx) = watch::channel(true);
        Self {
            rx,
            _tx: Some(Arc::new(tx)),
        }
    }

    /// Whether this replica leads now.
    pub fn is_leader(&self) -> bool {
        *self.rx.borrow()
    }

    /// A receiver of every change (`true`: leading). After the elector stops, its value
    /// is `false` and `changed()` fails.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.rx.clone()
    }
}

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it, held by me.
    Create,
    /// Free (released, or never held) or expired: take it over.
    Acquire {
        /// `leaseTransitions` after the takeover.
        transitions: i32,
    },
    /// Mine: renew it.
    Renew,
    /// Someone else holds a valid lease: wait.
    Wait {
        /// Its holder.
        holder: String,
    },
    /// I was leading, but someone else holds it now: stop at once.
    Lost {
        /// Its holder.
        holder: String,
    },
}

/// What to do given the current Lease (`None`: it does not exist), my identity, the time,
/// and whether I believed I was leading. A lease is valid until `renewTime` (else
/// `acquireTime`) plus `leaseDurationSeconds`; one lacking those is expired.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp, was_leader: bool) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.as_ref();
    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0);
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty());
    match holder {
        Some(h) if h == me => Decision::Renew,
        Some(h) if !expired(spec, now) => {
            let holder = h.to_string();
            if was_leader {
                Decision::Lost { holder }
            } else {
                Decision::Wait { holder }
            }
        }
        _ => Decision::Acquire {
            transitions: transitions.saturating_add(1),
        },
    }
}

fn expired(spec: Option<&LeaseSpec>, now: Timestamp) -> bool {
    let Some(spec) = spec else { return true };
    let (Some(since), Some(secs)) = (
        spec.renew_time.as_ref().or(spec.acquire_time.as_ref()),
        spec.lease_duration_seconds,
    ) else {
        return true;
    };
    match since
        .0
        .checked_add(SignedDuration::from_secs(i64::from(secs)))
    {
        Ok(until) => now > until,
        // Too far in the future to represent: not expired.
        Err(_) => false,
    }
}

/// The Lease to write for `decision` (one of Create, Acquire, Renew), built from the
/// current one so its `resourceVersion` makes the write conditional.
pub fn claimed(
    current: Option<&Lease>,
    config: &LeaseConfig,
    decision: &Decision,
    now: Timestamp,
) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        },
        spec: None,
    });
    let spec = lease.spec.get_or_insert_with(Default::default);
    let now = MicroTime(now);
    match decision {
        Decision::Create => {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(0);
        }
        Decision::Acquire { transitions } => {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(*transitions);
        }
        Decision::Renew | Decision::Wait { .. } | Decision::Lost { .. } => {}
    }
    spec.holder_identity = Some(config.identity.clone());
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds(config.lease_duration));
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    match &config.address {
        Some(address) => {
            annotations.insert(ADDRESS_ANNOTATION.into(), address.clone());
        }
        None => {
            annotations.remove(ADDRESS_ANNOTATION);
        }
    }
    if annotations.is_empty() {
        lease.metadata.annotations = None;
    }
    lease
}

/// The config server the holder of `lease` named, while it holds it.
pub fn holder_address(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_ref()?;
    lease
        .metadata
        .annotations
        .as_ref()?
        .get(ADDRESS_ANNOTATION)
        .map(String::as_str)
}

/// `lease` released: without a holder, so a successor takes it at once instead of
/// waiting for it to expire.
pub fn released(lease: &Lease) -> Lease {
    let mut lease = lease.clone();
    if let Some(spec) = &mut lease.spec {
        spec.holder_identity = None;
    }
    if let Some(a) = &mut lease.metadata.annotations {
        a.remove(ADDRESS_ANNOTATION);
    }
    lease
}

fn seconds(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// The Lease could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{lease}: {message}")]
pub struct LeaderError {
    /// Which Lease (`lease braid-system/braid-operator`, or its file).
    pub lease: String,
    /// What went wrong.
    pub message: String,
}

/// Runs the election for one replica.
pub struct LeaderElector {
    store: Arc<dyn LeaseStore>,
    config: LeaseConfig,
}

impl LeaderElector {
    /// An elector over `config`'s Lease on the API server, through `client` (which needs
    /// get, create and update on leases in `config.namespace`).
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        let store = KubeLeases::new(client, &config.namespace, &config.name);
        Self::with_store(Arc::new(store), config)
    }

    /// An elector over the Lease in `store`.
    pub fn with_store(store: Arc<dyn LeaseStore>, config: LeaseConfig) -> Self {
        Self { store, config }
    }

    fn error(&self, e: StoreError) -> LeaderError {
        LeaderError {
            lease: self.store.describe(),
            message: e.to_string(),
        }
    }

    /// One round: reads the Lease and creates, takes over or renews it as [`decide`]s.
    /// Returns whether this replica leads now; losing a race (409) is not an error.
    pub async fn step(&self, was_leader: bool) -> Result<bool, LeaderError> {
        let current = self.store.get().await.map_err(|e| self.error(e))?;
        let now = Timestamp::now();
        let decision = decide(current.as_ref(), &self.config.identity, now, was_leader);
        // "Mine" by name, but written from another address while still valid: a second
        // replica was given this replica's identity, and both would lead.
        if decision == Decision::Renew
            && let Some(lease) = &current
            && !expired(lease.spec.as_ref(), now)
            && let (Some(there), Some(here)) = (holder_address(lease), &self.config.address)
            && there != here
        {
            return Err(LeaderError {
                lease: self.store.describe(),
                message: format!(
                    "another replica, serving at {there}, uses this replica's identity {:?}: give each replica its own --pod-name",
                    self.config.identity
                ),
            });
        }
        let lease = claimed(current.as_ref(), &self.config, &decision, now);
        let written = match &decision {
            Decision::Create => self.store.create(&lease).await,
            Decision::Acquire { .. } | Decision::Renew => self.store.replace(&lease).await,
            Decision::Wait { .. } => return Ok(false),
            Decision::Lost { holder } => {
                tracing::warn!(%holder, "leadership lost: the lease is held by another replica");
                return Ok(false);
            }
        };
        match written {
            Ok(()) => Ok(true),
            // Another replica wrote first (or created it): it leads.
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a successor need not wait for it
    /// to expire.
    pub async fn release(&self) -> Result<(), LeaderError> {
        let current = self.store.get().await.map_err(|e| self.error(e))?;
        let Some(lease) = current.filter(|l| {
            l.spec.as_ref().and_then(|s| s.holder_identity.as_deref())
                == Some(self.config.identity.as_str())
        }) else {
            return Ok(());
        };
        match self.store.replace(&released(&lease)).await {
            Ok(()) => Ok(()),
            // Changed since read: someone else holds it now, nothing of ours to release.
            Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Takes part in the election until `stop` fires, publishing on `leader` whether this
    /// replica leads. A leader whose renewals fail stops leading after
    /// `renew_deadline`, before its lease can expire. On stop it first stops leading,
    /// then releases the Lease.
    pub async fn run(self, leader: watch::Sender<bool>, stop: CancellationToken) {
        let mut leading = false;
        let mut renewed = Instant::now();
        loop {
            // A lease renewed now holds from the moment of the read, not of the answer.
            let attempted = Instant::now();
            let ok = match self.step(leading).await {
                Ok(now_leading) => {
                    if now_leading {
                        renewed = attempted;
                    }
                    if now_leading != leading {
                        tracing::info!(identity = %self.config.identity, leading = now_leading, "leadership changed");
                    }
                    leading = now_leading;
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader election");
                    if leading && renewed.elapsed() >= self.config.renew_deadline {
                        tracing::warn!(identity = %self.config.identity, "leadership given up: the lease could not be renewed in time");
                        leading = false;
                    }
                    false
                }
            };
            leader.send_if_modified(|v| std::mem::replace(v, leading) != leading);
            let wait = if leading && ok {
                self.config.renew_every
            } else {
                self.config.retry_every
            };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
        leader.send_if_modified(|v| std::mem::replace(v, false));
        if leading && let Err(e) = self.release().await {
            tracing::warn!(error = %e, "could not release the lease; a successor waits for it to expire");
        }
    }

    /// Runs [`run`](Self::run) in a task; the [`Leadership`] starts as not leading.
    pub fn spawn(self, stop: CancellationToken) -> (Leadership, JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(self.run(tx, stop));
        (Leadership { rx, _tx: None }, task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn lease(holder: Option<&str>, renewed: i64, transitions: i32) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(LEASE_NAME.into()),
                namespace: Some("braid-system".into()),
                resource_version: Some("42".into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                acquire_time: Some(MicroTime(at(renewed - 100))),
                renew_time: Some(MicroTime(at(renewed))),
                lease_duration_seconds: Some(15),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", at(0), false), Decision::Create);
    }

    #[test]
    fn someone_elses_valid_lease_is_respected() {
        let l = lease(Some("b"), 0, 3);
        assert_eq!(
            decide(Some(&l), "a", at(10), false),
            Decision::Wait { holder: "b".into() }
        );
        // Exactly at expiry it still holds.
        assert_eq!(
            decide(Some(&l), "a", at(15), false),
            Decision::Wait { holder: "b".into() }
        );
        assert_eq!(
            decide(Some(&l), "a", at(10), true),
            Decision::Lost { holder: "b".into() }
        );
    }

    #[test]
    fn an_expired_lease_is_taken_over() {
        let l = lease(Some("b"), 0, 3);
        assert_eq!(
            decide(Some(&l), "a", at(16), false),
            Decision::Acquire { transitions: 4 }
        );
    }

    #[test]
    fn a_released_or_empty_lease_is_taken_at_once() {
        let l = released(&lease(Some("b"), 0, 3));
        assert_eq!(
            decide(Some(&l), "a", at(1), false),
            Decision::Acquire { transitions: 4 }
        );
        let mut empty = lease(Some(""), 0, 0);
        assert_eq!(
            decide(Some(&empty), "a", at(1), false),
            Decision::Acquire { transitions: 1 }
        );
        empty.spec = None;
        assert_eq!(
            decide(Some(&empty), "a", at(1), false),
            Decision::Acquire { transitions: 1 }
        );
    }

    #[test]
    fn a_lease_without_times_is_expired() {
        let mut l = lease(Some("b"), 0, 0);
        let spec = l.spec.as_mut().unwrap();
        spec.renew_time = None;
        spec.acquire_time = None;
        assert_eq!(
            decide(Some(&l), "a", at(0), false),
            Decision::Acquire { transitions: 1 }
        );
    }

    #[test]
    fn my_own_lease_is_renewed() {
        let l = lease(Some("a"), 0, 3);
        assert_eq!(decide(Some(&l), "a", at(5), true), Decision::Renew);
        // Even expired: nobody took it, so it is still mine to renew.
        assert_eq!(decide(Some(&l), "a", at(60), false), Decision::Renew);
    }

    #[test]
    fn the_written_lease() {
        let config = LeaseConfig::new("braid-system", "a");
        let current = lease(Some("b"), 0, 3);
        let decision = decide(Some(&current), "a", at(20), false);
        let taken = claimed(Some(&current), &config, &decision, at(20));
        let spec = taken.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("a"));
        assert_eq!(spec.lease_transitions, Some(4));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(20))));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        // The write is conditional on what was read.
        assert_eq!(taken.metadata.resource_version.as_deref(), Some("42"));

        let renewed = claimed(Some(&taken), &config, &Decision::Renew, at(25));
        let spec = renewed.spec.as_ref().unwrap();
        assert_eq!(spec.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(25))));
        assert_eq!(spec.lease_transitions, Some(4));

        let created = claimed(None, &config, &Decision::Create, at(0));
        assert_eq!(created.metadata.name.as_deref(), Some(LEASE_NAME));
        assert_eq!(created.metadata.namespace.as_deref(), Some("braid-system"));
        assert_eq!(created.spec.as_ref().unwrap().lease_transitions, Some(0));
        assert!(created.metadata.resource_version.is_none());
    }

    #[test]
    fn always_leads() {
        let l = Leadership::always();
        assert!(l.is_leader());
        assert!(*l.subscribe().borrow());
    }
}
