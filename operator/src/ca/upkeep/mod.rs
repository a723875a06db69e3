//! The leader's upkeep of what the CA hands out, as kube-runtime controllers (the
//! controller-rs shape: `reconcile` + `error_policy`): [`trust`] keeps the proxies'
//! trust ConfigMap in every opted-in namespace, [`webhook`] the injector's certificate
//! Secret and its webhooks' `caBundle`.
//!
//! Each watches what it writes, so an object deleted or edited by hand is put back at
//! once rather than on a timer, and a failing object is retried with its own backoff
//! while the others go on. Every replica runs the watches (a successor's caches are warm
//! when it takes over); only the leader writes: a follower's reconcile returns at once,
//! and gaining leadership or a new CA reconciles every object again.

pub mod trust;
pub mod webhook;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use std::future::Future;

use futures::Stream;
use kube::Resource;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Ca;

/// The first retry of an object that failed comes this soon ...
pub const RETRY_FIRST: Duration = Duration::from_secs(1);
/// ... each one after twice as late, up to this.
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// How long to wait before the `failures`-th retry in a row of one object.
pub fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1u32 << doublings).min(RETRY_MAX)
}

/// Failures in a row, per object (by its name), for [`retry_delay`].
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// `object` failed again: how long until it is retried.
    pub fn failed(&self, object: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let n = failures.entry(object.to_string()).or_default();
        *n = n.saturating_add(1);
        retry_delay(*n)
    }

    /// `object` was brought up to date: its next failure starts from the first delay.
    pub fn succeeded(&self, object: &str) {
        self.failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(object);
    }
}

/// What every reconcile of the upkeep reads: whether this replica leads, and the CA in
/// force.
#[derive(Clone, Debug)]
pub struct Leading {
    leader: watch::Receiver<bool>,
    ca: watch::Receiver<Arc<Ca>>,
}

impl Leading {
    /// Leadership as `leader` says, the CA as `ca` says.
    pub fn new(leader: watch::Receiver<bool>, ca: watch::Receiver<Arc<Ca>>) -> Self {
        Self { leader, ca }
    }

    /// The CA in force when this replica leads; `None` while it follows (it writes
    /// nothing then).
    pub fn ca(&self) -> Option<Arc<Ca>> {
        (*self.leader.borrow()).then(|| self.ca.borrow().clone())
    }

    /// Fires when this replica gains leadership and when the CA changes: then every
    /// object is reconciled again (a follower skipped them; a new CA changes them all).
    /// Every change to leading counts, even if this stream was not polled while
    /// leadership went and came back (leadership is only published when it changes).
    /// Ends when either sender is gone.
    pub fn everything_due(&self) -> impl Stream<Item = ()> + Send + 'static {
        let mut leader = self.leader.clone();
        let mut ca = self.ca.clone();
        leader.borrow_and_update();
        ca.borrow_and_update();
        futures::stream::unfold((leader, ca), |(mut leader, mut ca)| async move {
            loop {
                tokio::select! {
                    r = leader.changed() => {
                        r.ok()?;
                        if *leader.borrow_and_update() {
                            return Some(((), (leader, ca)));
                        }
                    }
                    r = ca.changed() => {
                        r.ok()?;
                        ca.borrow_and_update();
                        return Some(((), (leader, ca)));
                    }
                }
            }
        })
    }
}

/// How long a controller is given to end after `stop` before it is dropped.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Resolves when `stop` fires: a controller's graceful shutdown.
pub async fn stopped(stop: CancellationToken) {
    stop.cancelled().await
}

/// Runs `controller` until it ends, or until [`SHUTDOWN_GRACE`] after `stop`: one whose
/// first list never completed (an API server unreachable, a list refused) would not end
/// by itself.
pub async fn until_stopped(controller: impl Future<Output = ()>, stop: CancellationToken) {
    tokio::select! {
        () = controller => {}
        () = async {
            stop.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {}
    }
}

/// Logs what a controller yields that its reconcile did not log itself: a watch that
/// failed (retried with backoff; on a cluster most often RBAC of an older version).
pub fn log_outcome<K: Resource, E: std::error::Error>(
    what: &'static str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
) {
    match result {
        Err(controller::Error::QueueError(error)) => tracing::warn!(
            upkeep = what,
            %error,
            "watch failed; retrying (if forbidden: apply manifests/rbac/operator.yaml of this version)"
        ),
        Err(controller::Error::RunnerError(error)) => {
            tracing::warn!(upkeep = what, %error, "controller error")
        }
        // A reconcile that failed was logged by its error policy; one for an object
        // deleted meanwhile has nothing left to do.
        Err(controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_))
        | Ok(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use futures::StreamExt;

    use super::*;

    #[test]
    fn retries_double_from_a_second_to_five_minutes() {
        let secs: Vec<u64> = (1..=11).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn each_object_backs_off_on_its_own() {
        let backoff = Backoff::default();
        assert_eq!(backoff.failed("shop"), Duration::from_secs(1));
        assert_eq!(backoff.failed("shop"), Duration::from_secs(2));
        assert_eq!(
            backoff.failed("web"),
            Duration::from_secs(1),
            "its own count"
        );
        backoff.succeeded("shop");
        assert_eq!(
            backoff.failed("shop"),
            Duration::from_secs(1),
            "started over"
        );
    }

    fn ca() -> Arc<Ca> {
        Arc::new(Ca::generate_root(UNIX_EPOCH + Duration::from_secs(1_800_000_000)).unwrap())
    }

    #[tokio::test]
    async fn everything_is_due_on_gaining_leadership_and_on_a_new_ca_only() {
        let (leader_tx, leader_rx) = watch::channel(false);
        let (ca_tx, ca_rx) = watch::channel(ca());
        let leading = Leading::new(leader_rx, ca_rx);
        assert!(leading.ca().is_none(), "a follower writes nothing");
        let mut due = Box::pin(leading.everything_due());
        let next = |due: &mut std::pin::Pin<Box<_>>| {
            futures::FutureExt::now_or_never(StreamExt::next(due))
        };

        leader_tx.send_replace(true);
        assert_eq!(due.next().await, Some(()), "gained");
        assert!(leading.ca().is_some());
        ca_tx.send_replace(ca());
        assert_eq!(due.next().await, Some(()), "a new CA");
        assert_eq!(next(&mut due), None, "nothing new");
        leader_tx.send_replace(false);
        assert_eq!(next(&mut due), None, "lost");
        assert!(leading.ca().is_none());
        leader_tx.send_replace(true);
        assert_eq!(due.next().await, Some(()), "gained again");
        // Lost and gained again while the stream was not polled: still news.
        leader_tx.send_replace(false);
        leader_tx.send_replace(true);
        assert_eq!(
            due.next().await,
            Some(()),
            "gained again, unseen in between"
        );
        drop(leader_tx);
        assert_eq!(due.next().await, None, "ends with its sender");
    }
}
