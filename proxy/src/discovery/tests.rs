//! Discovery against a fake operator that answers as the real one does: the service's
//! name at once, the service itself a moment later on the stream (applied to a real
//! table store).

use std::sync::atomic::{AtomicUsize, Ordering};

use prometheus_client::registry::Registry;

use super::*;
use crate::config::{ProxyConfig, Service};
use crate::metrics::discovery::DiscoveryMetrics;

#[derive(Clone, Copy)]
enum Answer {
    Service,
    Unknown,
    Fail,
    Never,
}

struct FakeOperator {
    store: Arc<TableStore>,
    answer: Answer,
    asked: AtomicUsize,
}

impl Ask for FakeOperator {
    fn ask(&self, address: IpAddr) -> Asking<'_> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            match self.answer {
                Answer::Service => {
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        let config = ProxyConfig {
                            version: "with-payments".into(),
                            services: vec![Service {
                                name: "payments".into(),
                                namespace: "shop".into(),
                                vips: vec![address],
                                ..Default::default()
                            }]
                            .into(),
                            ..Default::default()
                        };
                        store.apply(config).unwrap();
                    });
                    Ok(Some("shop/payments".parse().unwrap()))
                }
                Answer::Unknown => Ok(None),
                Answer::Fail => Err("the operator is unreachable".into()),
                Answer::Never => std::future::pending().await,
            }
        })
    }
}

fn rig(answer: Answer) -> (Arc<Discovery>, Arc<FakeOperator>, Registry) {
    let store = Arc::new(TableStore::new(|_| {}).unwrap());
    let operator = Arc::new(FakeOperator {
        store: store.clone(),
        answer,
        asked: AtomicUsize::new(0),
    });
    let mut registry = Registry::with_prefix("braid");
    let metrics = DiscoveryMetrics::register(&mut registry);
    let discovery = Arc::new(Discovery::new(operator.clone(), store, metrics));
    (discovery, operator, registry)
}

fn vip() -> SocketAddr {
    "10.96.0.10:80".parse().unwrap()
}

#[tokio::test]
async fn a_service_is_asked_for_once_however_many_connections_wait_for_it() {
    let (discovery, operator, registry) = rig(Answer::Service);
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let d = discovery.clone();
            tokio::spawn(async move { d.resolve(vip()).await })
        })
        .collect();
    for w in waiting {
        assert!(w.await.unwrap(), "routed as a known service");
    }
    assert_eq!(operator.asked.load(Ordering::SeqCst), 1);
    // Known now: nothing more to ask, another port of the same address included.
    assert!(discovery.resolve("10.96.0.10:8080".parse().unwrap()).await);
    assert_eq!(operator.asked.load(Ordering::SeqCst), 1);
    let text = crate::metrics::encode(&registry);
    assert!(
        text.contains("braid_discoveries_total{result=\"service\"} 1\n"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_address_no_service_has_passes_through_and_is_not_asked_about_for_a_while() {
    let (discovery, operator, _) = rig(Answer::Unknown);
    assert!(!discovery.resolve(vip()).await);
    assert!(!discovery.resolve(vip()).await);
    assert_eq!(operator.asked.load(Ordering::SeqCst), 1);
    tokio::time::advance(UNKNOWN_FOR + Duration::from_secs(1)).await;
    assert!(!discovery.resolve(vip()).await);
    assert_eq!(operator.asked.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_operator_that_cannot_be_asked_lets_the_connection_pass_through() {
    let (discovery, operator, registry) = rig(Answer::Fail);
    assert!(!discovery.resolve(vip()).await);
    assert!(!discovery.resolve(vip()).await, "resting after a failure");
    assert_eq!(operator.asked.load(Ordering::SeqCst), 1);
    let text = crate::metrics::encode(&registry);
    assert!(
        text.contains("braid_discoveries_total{result=\"failed\"} 1\n"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_that_does_not_answer_holds_the_connection_at_most_the_wait() {
    let (discovery, _, registry) = rig(Answer::Never);
    let started = tokio::time::Instant::now();
    assert!(!discovery.resolve(vip()).await);
    assert_eq!(started.elapsed(), WAIT);
    let text = crate::metrics::encode(&registry);
    assert!(
        text.contains("braid_discoveries_total{result=\"failed\"} 1\n"),
        "{text}"
    );
}
