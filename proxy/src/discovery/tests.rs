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
    /// What the proxy let go of, each time it did.
    forgotten: Mutex<Vec<Vec<ServiceRef>>>,
    /// Services the workload's scope names: forgetting them changes nothing.
    scope: Mutex<Vec<ServiceRef>>,
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

    fn forget(&self, services: Vec<ServiceRef>) -> Forgetting<'_> {
        Box::pin(async move {
            if matches!(self.answer, Answer::Fail | Answer::Never) {
                return Err("the operator is unreachable".into());
            }
            let scope = self.scope.lock().unwrap().clone();
            let n = {
                let mut forgotten = self.forgotten.lock().unwrap();
                forgotten.push(services.clone());
                forgotten.len()
            };
            // As the stream would: the same config without them.
            let kept: Vec<Service> = self.store.with_tables(|t| {
                t.config
                    .services
                    .iter()
                    .filter(|s| {
                        let name = ServiceRef::of(s);
                        scope.contains(&name) || !services.contains(&name)
                    })
                    .cloned()
                    .collect()
            });
            let config = ProxyConfig {
                version: format!("forgot-{n}"),
                services: kept.into(),
                ..Default::default()
            };
            self.store.apply(config).unwrap();
            Ok(())
        })
    }
}

fn rig(answer: Answer) -> (Arc<Discovery>, Arc<FakeOperator>, Registry) {
    let store = Arc::new(TableStore::new(|_| {}).unwrap());
    let operator = Arc::new(FakeOperator {
        store: store.clone(),
        answer,
        asked: AtomicUsize::new(0),
        forgotten: Mutex::new(Vec::new()),
        scope: Mutex::new(Vec::new()),
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

const HOUR: Duration = Duration::from_secs(3600);
const MINUTE: Duration = Duration::from_secs(60);

/// `discovery`'s store holding payments (10.96.0.10) and orders (10.96.0.11).
fn holding_two(discovery: &Discovery) {
    let service = |name: &str, vip: &str| Service {
        name: name.into(),
        namespace: "shop".into(),
        vips: vec![vip.parse().unwrap()],
        ..Default::default()
    };
    let config = ProxyConfig {
        version: "two".into(),
        services: vec![
            service("payments", "10.96.0.10"),
            service("orders", "10.96.0.11"),
        ]
        .into(),
        ..Default::default()
    };
    discovery.store.apply(config).unwrap();
}

/// `discovery` holding payments and orders (see [`holding_two`]), one idle check made as
/// they arrive, and an hour gone by.
async fn held_for_an_hour(discovery: &Discovery) {
    holding_two(discovery);
    discovery.forget_idle(HOUR).await;
    tokio::time::advance(HOUR).await;
}

fn held(discovery: &Discovery) -> Vec<String> {
    discovery
        .store
        .with_tables(|t| t.config.services.iter().map(|s| s.name.clone()).collect())
}

#[tokio::test(start_paused = true)]
async fn a_service_the_app_stopped_calling_is_let_go_of_and_one_it_calls_stays() {
    let (discovery, operator, _) = rig(Answer::Service);
    holding_two(&discovery);
    discovery.used(vip().ip());
    assert_eq!(discovery.forget_idle(HOUR).await, 0, "both just arrived");
    tokio::time::advance(40 * MINUTE).await;
    discovery.used(vip().ip());
    tokio::time::advance(30 * MINUTE).await;
    // orders: held 70 minutes, never called; payments: called 30 minutes ago.
    assert_eq!(discovery.forget_idle(HOUR).await, 1);
    assert_eq!(
        *operator.forgotten.lock().unwrap(),
        [vec!["shop/orders".parse::<ServiceRef>().unwrap()]]
    );
    assert_eq!(held(&discovery), ["payments"]);
    tokio::time::advance(29 * MINUTE).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 0);
    tokio::time::advance(2 * MINUTE).await;
    assert_eq!(
        discovery.forget_idle(HOUR).await,
        1,
        "payments, idle an hour now"
    );
    assert!(held(&discovery).is_empty());
}

#[tokio::test(start_paused = true)]
async fn one_the_operator_keeps_sending_is_not_asked_about_again_for_as_long() {
    let (discovery, operator, _) = rig(Answer::Service);
    *operator.scope.lock().unwrap() = vec!["shop/orders".parse().unwrap()];
    held_for_an_hour(&discovery).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 2);
    assert_eq!(held(&discovery), ["orders"], "its scope names it");
    tokio::time::advance(30 * MINUTE).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 0);
    tokio::time::advance(30 * MINUTE).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 1);
    assert_eq!(operator.forgotten.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn when_the_operator_cannot_be_told_the_services_stay() {
    let (discovery, _, _) = rig(Answer::Fail);
    held_for_an_hour(&discovery).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 0);
    assert_eq!(held(&discovery), ["payments", "orders"]);
}

#[tokio::test(start_paused = true)]
async fn a_service_with_a_connection_open_is_in_use_however_long_ago_it_opened() {
    let (discovery, _, _) = rig(Answer::Service);
    holding_two(&discovery);
    // A gRPC channel to payments, opened once and kept.
    let channel = discovery.used(vip().ip());
    discovery.forget_idle(HOUR).await;
    tokio::time::advance(2 * HOUR).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 1, "orders only");
    assert_eq!(held(&discovery), ["payments"]);
    // Closed: idle from then on.
    drop(channel);
    tokio::time::advance(HOUR - MINUTE).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 0);
    tokio::time::advance(MINUTE).await;
    assert_eq!(discovery.forget_idle(HOUR).await, 1);
}
