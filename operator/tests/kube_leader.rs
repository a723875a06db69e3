#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Leader election against kube-fake-client's in-memory API server, which keeps
//! resourceVersions and refuses stale writes like a real one.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use braid_operator::leader::{LEASE_NAME, LeaderElector, LeaseConfig};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube_fake_client::ClientBuilder;
use kube_fake_client::interceptor;
use tokio_util::sync::CancellationToken;

const NS: &str = "braid-system";

/// Fast rounds, so a test takes a fraction of a second; leases stay long (15 s), so
/// nothing here expires by waiting.
fn config(identity: &str) -> LeaseConfig {
    LeaseConfig {
        renew_every: Duration::from_millis(100),
        retry_every: Duration::from_millis(50),
        ..LeaseConfig::new(NS, identity)
    }
}

fn lease(holder: Option<&str>, renewed: Timestamp, transitions: i32) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: holder.map(str::to_string),
            acquire_time: Some(MicroTime(renewed)),
            renew_time: Some(MicroTime(renewed)),
            lease_duration_seconds: Some(15),
            lease_transitions: Some(transitions),
            ..Default::default()
        }),
    }
}

async fn current(client: &kube::Client) -> LeaseSpec {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
}

async fn until(rx: &mut tokio::sync::watch::Receiver<bool>, leading: bool) {
    tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|v| *v == leading))
        .await
        .unwrap_or_else(|_| panic!("never became leading={leading}"))
        .unwrap();
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_release_hands_over_at_once() {
    let client = ClientBuilder::new().build().await.unwrap();

    let stop_a = CancellationToken::new();
    let (a, task_a) =
        LeaderElector::new(client.clone(), config("operator-a")).spawn(stop_a.clone());
    let mut a_rx = a.subscribe();
    until(&mut a_rx, true).await;
    let spec = current(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-a"));
    assert_eq!(spec.lease_transitions, Some(0));

    let stop_b = CancellationToken::new();
    let (b, task_b) =
        LeaderElector::new(client.clone(), config("operator-b")).spawn(stop_b.clone());
    // Several of b's rounds and a's renewals: the lease stays a's.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!b.is_leader());
    assert!(a.is_leader());
    let renewed = current(&client).await;
    assert_eq!(renewed.holder_identity.as_deref(), Some("operator-a"));
    assert!(renewed.renew_time > spec.renew_time, "a renews");

    // a stops: it stops leading, releases, and b takes over without waiting 15 s.
    stop_a.cancel();
    task_a.await.unwrap();
    assert!(!*a_rx.borrow());
    let mut b_rx = b.subscribe();
    until(&mut b_rx, true).await;
    let spec = current(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(1));

    stop_b.cancel();
    task_b.await.unwrap();
    assert_eq!(current(&client).await.holder_identity, None);
}

#[tokio::test]
async fn an_expired_lease_is_taken_over() {
    let long_ago = Timestamp::now() - SignedDuration::from_hours(1);
    let client = ClientBuilder::new()
        .with_object(lease(Some("operator-gone"), long_ago, 4))
        .build()
        .await
        .unwrap();
    let a = LeaderElector::new(client.clone(), config("operator-a"));
    assert!(a.step(false).await.unwrap());
    let spec = current(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-a"));
    assert_eq!(spec.lease_transitions, Some(5));
}

#[tokio::test]
async fn a_valid_lease_of_another_is_left_alone() {
    let client = ClientBuilder::new()
        .with_object(lease(Some("operator-b"), Timestamp::now(), 2))
        .build()
        .await
        .unwrap();
    let a = LeaderElector::new(client.clone(), config("operator-a"));
    assert!(!a.step(false).await.unwrap());
    assert!(
        !a.step(true).await.unwrap(),
        "a leader that finds another holder has lost"
    );
    // Releasing what is not ours changes nothing.
    a.release().await.unwrap();
    let spec = current(&client).await;
    assert_eq!(spec.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(spec.lease_transitions, Some(2));
}

/// Two replicas read the same free lease; the first to write wins, and the second's
/// write, conditional on the resourceVersion it read, is refused.
#[tokio::test]
async fn of_two_replicas_acting_on_one_read_only_one_wins() {
    let free = lease(None, Timestamp::now(), 0);
    let stale = Arc::new(std::sync::Mutex::new(None::<serde_json::Value>));
    let serve_stale = Arc::new(AtomicBool::new(false));
    let (s, flag) = (stale.clone(), serve_stale.clone());
    let client = ClientBuilder::new()
        .with_object(free)
        .with_interceptor_funcs(interceptor::Funcs::new().get(move |_| {
            Ok(if flag.load(Ordering::SeqCst) {
                s.lock().unwrap().clone()
            } else {
                None
            })
        }))
        .build()
        .await
        .unwrap();
    // What b read before a wrote.
    let read = Api::<Lease>::namespaced(client.clone(), NS)
        .get(LEASE_NAME)
        .await
        .unwrap();
    *stale.lock().unwrap() = Some(serde_json::to_value(&read).unwrap());

    let a = LeaderElector::new(client.clone(), config("operator-a"));
    assert!(a.step(false).await.unwrap());

    serve_stale.store(true, Ordering::SeqCst);
    let b = LeaderElector::new(client.clone(), config("operator-b"));
    assert!(!b.step(false).await.unwrap(), "b's write must be refused");
    serve_stale.store(false, Ordering::SeqCst);
    assert_eq!(
        current(&client).await.holder_identity.as_deref(),
        Some("operator-a")
    );
}
