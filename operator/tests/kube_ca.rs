#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The CA's Kubernetes side: its Secret (created, raced for, supplied, malformed), the
//! webhook's Secret and caBundle, the proxies' trust ConfigMaps, and that only the leader
//! writes — against kube-fake-client's in-memory API server and, where the exact
//! requests matter, a scripted one.

mod kube_mock;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use braid_operator::ca::maintain::{Cause, Round, Upkeep};
use braid_operator::ca::material::{SIGNING_CERT_KEY, SIGNING_KEY_KEY, TRUST_BUNDLE_KEY};
use braid_operator::ca::secret::{CaSecret, Origin};
use braid_operator::ca::trust::{TRUST_CONFIGMAP, TrustDistributor};
use braid_operator::ca::verify::verify_server_chain;
use braid_operator::ca::webhook::{WEBHOOK_LIFETIME, WebhookNames, WebhookTls};
use braid_operator::ca::{Ca, CaMaterial, LeafRequest};
use braid_operator::registry::Snapshot;
use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube_fake_client::ClientBuilder;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const NS: &str = "braid-system";
const CA_SECRET: &str = "braid-ca";
const WEBHOOK_SECRET: &str = "braid-injector-tls";
const WEBHOOK_CONFIG: &str = "braid-injector";

fn names() -> WebhookNames {
    WebhookNames {
        namespace: NS.into(),
        service: "braid-injector".into(),
        secret: WEBHOOK_SECRET.into(),
        config: WEBHOOK_CONFIG.into(),
        cluster_domain: "cluster.local".into(),
    }
}

fn secret_of(name: &str, type_: &str, data: BTreeMap<String, ByteString>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(data),
        ..Default::default()
    }
}

fn webhook_config(webhooks: &[&str]) -> MutatingWebhookConfiguration {
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(WEBHOOK_CONFIG.into()),
            ..Default::default()
        },
        webhooks: Some(
            webhooks
                .iter()
                .map(|name| MutatingWebhook {
                    name: name.to_string(),
                    admission_review_versions: vec!["v1".into()],
                    side_effects: "None".into(),
                    client_config: WebhookClientConfig::default(),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

fn chain(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test]
async fn the_ca_secret_is_created_when_absent_and_then_reused() {
    let client = ClientBuilder::new().build().await.unwrap();
    let secret = CaSecret::new(client.clone(), NS, CA_SECRET);
    let (ca, origin) = secret.load_or_create(SystemTime::now()).await.unwrap();
    assert_eq!(origin, Origin::Created);

    let stored = Api::<Secret>::namespaced(client.clone(), NS)
        .get(CA_SECRET)
        .await
        .unwrap();
    assert_eq!(stored.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = stored.data.unwrap();
    assert_eq!(
        data.keys().map(String::as_str).collect::<Vec<_>>(),
        [TRUST_BUNDLE_KEY, SIGNING_CERT_KEY, SIGNING_KEY_KEY]
    );
    assert_eq!(
        data[TRUST_BUNDLE_KEY].0,
        ca.trust_bundle().pem().as_bytes(),
        "the new root is the whole bundle"
    );

    // The next replica (or restart) reads the same CA.
    let (again, origin) = CaSecret::new(client, NS, CA_SECRET)
        .load_or_create(SystemTime::now())
        .await
        .unwrap();
    assert_eq!(origin, Origin::Existing);
    assert_eq!(again.material(), ca.material());
}

#[tokio::test]
async fn a_replica_that_loses_the_race_to_create_reads_the_winners() {
    let winner = Ca::generate_root(SystemTime::now()).unwrap();
    let stored = secret_of(
        CA_SECRET,
        "kubernetes.io/tls",
        winner.material().to_secret_data(),
    );
    let gets = std::sync::atomic::AtomicUsize::new(0);
    let (client, log) = kube_mock::client(move |r| match r.method {
        // Not there when first read; there (the winner's) after the create failed.
        Method::GET if gets.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => {
            kube_mock::failure(404, "NotFound", "secrets \"braid-ca\" not found")
        }
        Method::GET => (StatusCode::OK, serde_json::to_value(&stored).unwrap()),
        _ => kube_mock::failure(409, "AlreadyExists", "secrets \"braid-ca\" already exists"),
    });
    let (ca, origin) = CaSecret::new(client, NS, CA_SECRET)
        .load_or_create(SystemTime::now())
        .await
        .unwrap();
    assert_eq!(origin, Origin::Existing);
    assert_eq!(ca.material(), winner.material());
    let log = log.lock().unwrap();
    let calls: Vec<(Method, &str)> = log
        .iter()
        .map(|r| (r.method.clone(), r.path.as_str()))
        .collect();
    let path = "/api/v1/namespaces/braid-system/secrets";
    let named = format!("{path}/{CA_SECRET}");
    assert_eq!(
        calls,
        [
            (Method::GET, named.as_str()),
            (Method::POST, path),
            (Method::GET, named.as_str())
        ]
    );
    // What it tried to create was a CA of its own, which lost.
    assert_ne!(
        log[1].body["data"]["tls.crt"],
        serde_json::to_value(ByteString(
            winner.material().signing_chain_pem.clone().into_bytes()
        ))
        .unwrap()
    );
}

/// Whether re-reading the CA Secret finds nothing new for `ca`.
async fn refreshed_unchanged(secret: &CaSecret, ca: &Ca) -> bool {
    secret
        .refresh(ca, SystemTime::now())
        .await
        .unwrap()
        .is_none()
}

/// An administrator's CA: an intermediate of their own root.
fn administrators_ca() -> (CaMaterial, Ca) {
    let root = Ca::generate_root(SystemTime::now()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "platform team intermediate");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &root.material().signing_chain_pem,
        rcgen::KeyPair::from_pem(&root.material().signing_key_pem).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let material = CaMaterial {
        signing_chain_pem: cert.pem(),
        signing_key_pem: key.serialize_pem(),
        trust_bundle: root.trust_bundle().clone(),
    };
    (material, root)
}

#[tokio::test]
async fn a_supplied_ca_is_used_as_it_is() {
    let (material, root) = administrators_ca();
    let client = ClientBuilder::new()
        .with_object(secret_of(CA_SECRET, "Opaque", material.to_secret_data()))
        .build()
        .await
        .unwrap();
    let api = Api::<Secret>::namespaced(client.clone(), NS);
    let before = api.get(CA_SECRET).await.unwrap();

    let secret = CaSecret::new(client, NS, CA_SECRET);
    let (ca, origin) = secret.load_or_create(SystemTime::now()).await.unwrap();
    assert_eq!(origin, Origin::Existing);
    assert_eq!(ca.material(), &material);
    assert!(refreshed_unchanged(&secret, &ca).await);
    let after = api.get(CA_SECRET).await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
    assert_eq!(after.data, before.data);
    assert_eq!(after.type_.as_deref(), Some("Opaque"));

    // What it issues verifies with the administrator's root.
    let leaf = ca
        .issue(
            &LeafRequest {
                names: vec!["braid-operator.braid-system.svc".into()],
                lifetime: Duration::from_secs(3600),
            },
            SystemTime::now(),
        )
        .unwrap();
    verify_server_chain(
        root.trust_bundle().certificates(),
        &leaf.chain,
        "braid-operator.braid-system.svc",
        SystemTime::now(),
    )
    .unwrap();
}

#[tokio::test]
async fn a_malformed_ca_secret_stops_start_up_naming_the_secret_key_and_fix() {
    let good = Ca::generate_root(SystemTime::now()).unwrap();
    let other = Ca::generate_root(SystemTime::now()).unwrap();
    let mut data = good.material().to_secret_data();
    data.insert(
        SIGNING_KEY_KEY.into(),
        ByteString(other.material().signing_key_pem.clone().into_bytes()),
    );
    let client = ClientBuilder::new()
        .with_object(secret_of(CA_SECRET, "kubernetes.io/tls", data))
        .build()
        .await
        .unwrap();
    let err = CaSecret::new(client.clone(), NS, CA_SECRET)
        .load_or_create(SystemTime::now())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("Secret braid-system/braid-ca, key tls.key: not the key of the first certificate in tls.crt"),
        "{err}"
    );
    assert!(
        err.contains(
            "delete the Secret and restart every operator replica, which then creates a new CA"
        ),
        "{err}"
    );
    // Left alone: the administrator's to fix.
    let kept = Api::<Secret>::namespaced(client, NS)
        .get(CA_SECRET)
        .await
        .unwrap();
    assert_eq!(
        kept.data.unwrap()[SIGNING_KEY_KEY].0,
        other.material().signing_key_pem.as_bytes()
    );
}

/// An API server that refuses everything, as it does when RBAC does not name the object.
fn forbidding() -> (kube::Client, kube_mock::Log) {
    kube_mock::client(|_| kube_mock::failure(403, "Forbidden", "forbidden"))
}

/// That `err` names the refused object by its flag and value, and the role to add it to.
fn assert_names_the_grant(err: &str, flag: &str, value: &str, role: &str) {
    let want =
        format!("may not use {flag} {value}: add \"{value}\" to the resourceNames of {role}");
    assert!(err.contains(&want), "{err}");
}

/// The error of a webhook round through `client`, with the Secret and configuration
/// named `secret` and `config`.
async fn webhook_error(client: kube::Client, secret: &str, config: &str) -> String {
    let names = WebhookNames {
        secret: secret.into(),
        config: config.into(),
        ..names()
    };
    let ca = Ca::generate_root(SystemTime::now()).unwrap();
    WebhookTls::new(client, names)
        .reconcile(&ca, SystemTime::now())
        .await
        .unwrap_err()
        .to_string()
}

#[tokio::test]
async fn a_refused_renamed_object_is_named_with_the_role_to_add_it_to() {
    let (client, _) = forbidding();
    let err = CaSecret::new(client.clone(), NS, "platform-ca")
        .load_or_create(SystemTime::now())
        .await
        .unwrap_err()
        .to_string();
    assert_names_the_grant(&err, "--ca-secret", "platform-ca", "Role braid-operator-ca");

    let err = webhook_error(client, "injector-cert", WEBHOOK_CONFIG).await;
    assert_names_the_grant(
        &err,
        "--webhook-secret",
        "injector-cert",
        "Role braid-operator-ca",
    );

    // The Secret readable, the configuration refused.
    let (client, _) = kube_mock::client(|r| {
        if r.path.contains("/secrets/") {
            kube_mock::failure(404, "NotFound", "not found")
        } else if r.method == Method::POST {
            (StatusCode::CREATED, r.body.clone())
        } else {
            kube_mock::failure(403, "Forbidden", "forbidden")
        }
    });
    let err = webhook_error(client, WEBHOOK_SECRET, "mesh-injector").await;
    assert_names_the_grant(
        &err,
        "--webhook-config",
        "mesh-injector",
        "ClusterRole braid-operator",
    );
}

#[tokio::test]
async fn the_webhook_secret_is_issued_and_every_ca_bundle_set() {
    let client = ClientBuilder::new()
        .with_object(webhook_config(&["inject.braid.dev", "other.braid.dev"]))
        .build()
        .await
        .unwrap();
    let ca = Ca::generate_root(SystemTime::now()).unwrap();
    let webhook = WebhookTls::new(client.clone(), names());
    let now = SystemTime::now();

    let outcome = webhook.reconcile(&ca, now).await.unwrap();
    assert_eq!(outcome.issued.as_deref(), Some("missing"));
    assert_eq!(outcome.bundles_patched, 2);
    assert!(!outcome.config_missing);

    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let secret = secrets.get(WEBHOOK_SECRET).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let data = secret.data.unwrap();
    let served = chain(&data["tls.crt"].0);
    for name in [
        "braid-injector.braid-system.svc",
        "braid-injector.braid-system.svc.cluster.local",
    ] {
        verify_server_chain(ca.trust_bundle().certificates(), &served, name, now).unwrap();
    }
    assert!(data.contains_key("tls.key"));
    let configs = Api::<MutatingWebhookConfiguration>::all(client.clone());
    let config = configs.get(WEBHOOK_CONFIG).await.unwrap();
    for w in config.webhooks.as_ref().unwrap() {
        assert_eq!(
            w.client_config.ca_bundle.as_ref().map(|b| b.0.as_slice()),
            Some(ca.trust_bundle().pem().as_bytes()),
            "{}",
            w.name
        );
        // The rest of the webhook is untouched.
        assert_eq!(w.side_effects, "None");
    }

    // Nothing to do the second time.
    let version = secrets
        .get(WEBHOOK_SECRET)
        .await
        .unwrap()
        .metadata
        .resource_version;
    let outcome = webhook.reconcile(&ca, now).await.unwrap();
    assert_eq!(outcome, Default::default());
    assert_eq!(
        secrets
            .get(WEBHOOK_SECRET)
            .await
            .unwrap()
            .metadata
            .resource_version,
        version
    );

    // Late in its life: renewed.
    let late = now + WEBHOOK_LIFETIME * 2 / 3 + Duration::from_secs(3600);
    let outcome = webhook.reconcile(&ca, late).await.unwrap();
    assert!(
        outcome
            .issued
            .unwrap()
            .starts_with("a third of its lifetime is left")
    );
    assert_eq!(outcome.bundles_patched, 0);

    // Another CA (the administrator replaced it): reissued, caBundle follows.
    let next = Ca::generate_root(now).unwrap();
    let outcome = webhook.reconcile(&next, now).await.unwrap();
    assert!(outcome.issued.unwrap().starts_with("not valid for this CA"));
    assert_eq!(outcome.bundles_patched, 2);
    let served = chain(&secrets.get(WEBHOOK_SECRET).await.unwrap().data.unwrap()["tls.crt"].0);
    verify_server_chain(
        next.trust_bundle().certificates(),
        &served,
        "braid-injector.braid-system.svc",
        now,
    )
    .unwrap();
}

/// A root that expires at `end`, made two days ago.
fn root_ending(end: SystemTime) -> Ca {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ending root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (SystemTime::now() - Duration::from_secs(2 * 86_400)).into();
    params.not_after = end.into();
    let cert = params.self_signed(&key).unwrap();
    let material = CaMaterial {
        signing_chain_pem: cert.pem(),
        signing_key_pem: key.serialize_pem(),
        trust_bundle: braid_operator::ca::TrustBundle::parse(&cert.pem()).unwrap(),
    };
    Ca::from_material(material, SystemTime::now()).unwrap()
}

#[tokio::test]
async fn a_ca_about_to_end_does_not_have_the_webhook_secret_rewritten_every_round() {
    let now = SystemTime::now();
    let ca = root_ending(now + Duration::from_secs(60));
    // Issued a day ago; now due for renewal, which cannot give anything longer.
    let old = ca
        .issue(
            &LeafRequest {
                names: names().dns_names(),
                lifetime: WEBHOOK_LIFETIME,
            },
            now - Duration::from_secs(86_400),
        )
        .unwrap();
    let data = BTreeMap::from([
        (
            "tls.crt".to_string(),
            ByteString(old.chain_pem.into_bytes()),
        ),
        ("tls.key".to_string(), ByteString(old.key_pem.into_bytes())),
    ]);
    let client = ClientBuilder::new()
        .with_object(secret_of(WEBHOOK_SECRET, "kubernetes.io/tls", data))
        .with_object(webhook_config(&["inject.braid.dev"]))
        .build()
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let version = || async {
        secrets
            .get(WEBHOOK_SECRET)
            .await
            .unwrap()
            .metadata
            .resource_version
    };
    let before = version().await;
    let webhook = WebhookTls::new(client, names());
    for round in 0..3 {
        let outcome = webhook.reconcile(&ca, now).await.unwrap();
        assert_eq!(outcome.issued, None, "round {round}");
        let ending = outcome.ca_ending.expect("the CA's end is reported");
        assert_eq!(ending.not_after, ca.signing_validity().not_after);
        assert!(ending.to_string().contains("--ca-secret"), "{ending}");
        // caBundle is still kept.
        assert_eq!(outcome.bundles_patched, usize::from(round == 0));
    }
    assert_eq!(version().await, before, "the Secret is left as it is");
}

#[tokio::test]
async fn an_invalid_webhook_secret_is_replaced_in_place() {
    let mut data = BTreeMap::new();
    data.insert(
        "tls.crt".to_string(),
        ByteString(b"not a certificate".to_vec()),
    );
    data.insert("tls.key".to_string(), ByteString(b"nor a key".to_vec()));
    // Created by hand, as Opaque: a Secret's type cannot change, so it stays.
    let mut placeholder = secret_of(WEBHOOK_SECRET, "Opaque", data);
    placeholder.metadata.annotations = Some([("team".to_string(), "platform".to_string())].into());
    let client = ClientBuilder::new()
        .with_object(placeholder)
        .build()
        .await
        .unwrap();
    let ca = Ca::generate_root(SystemTime::now()).unwrap();
    let outcome = WebhookTls::new(client.clone(), names())
        .reconcile(&ca, SystemTime::now())
        .await
        .unwrap();
    assert!(outcome.issued.unwrap().starts_with("unreadable"));
    assert!(outcome.config_missing);
    let secret = Api::<Secret>::namespaced(client, NS)
        .get(WEBHOOK_SECRET)
        .await
        .unwrap();
    assert_eq!(
        secret.metadata.annotations.unwrap()["team"],
        "platform",
        "updated, not recreated"
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    chain(&secret.data.unwrap()["tls.crt"].0);
}

fn meshed(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| n.to_string()).collect()
}

#[tokio::test]
async fn the_trust_configmap_is_applied_to_labelled_namespaces() {
    let client = ClientBuilder::new().build().await.unwrap();
    let ca = Ca::generate_root(SystemTime::now()).unwrap();
    let mut trust = TrustDistributor::new(client.clone());
    assert_eq!(
        trust
            .reconcile(&meshed(&["shop", "web"]), ca.trust_bundle())
            .await,
        0
    );
    for ns in ["shop", "web"] {
        let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get(TRUST_CONFIGMAP)
            .await
            .unwrap();
        assert_eq!(cm.data.unwrap()["ca.crt"], ca.trust_bundle().pem(), "{ns}");
    }
    assert!(
        Api::<ConfigMap>::namespaced(client.clone(), "other")
            .get_opt(TRUST_CONFIGMAP)
            .await
            .unwrap()
            .is_none()
    );
    // A new bundle reaches them all.
    let next = Ca::generate_root(SystemTime::now()).unwrap();
    trust
        .reconcile(&meshed(&["shop", "web"]), next.trust_bundle())
        .await;
    let cm = Api::<ConfigMap>::namespaced(client, "web")
        .get(TRUST_CONFIGMAP)
        .await
        .unwrap();
    assert_eq!(cm.data.unwrap()["ca.crt"], next.trust_bundle().pem());
}

/// An API server with nothing in it that accepts every write: enough for a whole
/// upkeep round, recording each request.
fn accepting() -> (kube::Client, kube_mock::Log) {
    kube_mock::client(|r| match r.method {
        Method::GET => kube_mock::failure(404, "NotFound", "not found"),
        _ => (StatusCode::OK, r.body.clone()),
    })
}

fn snapshot(namespaces: &[&str]) -> Arc<Snapshot> {
    Arc::new(Snapshot {
        meshed_namespaces: meshed(namespaces),
        ..Default::default()
    })
}

/// How long anything asked of the upkeep loop may take on a loaded machine.
const DEADLINE: Duration = Duration::from_secs(10);

/// Waits for the loop to report a round of `cause` in which it led (or not), skipping
/// other rounds: proof that it has handled that event.
async fn round(rounds: &mut mpsc::UnboundedReceiver<Round>, cause: Cause, leading: bool) {
    let wanted = Round { cause, leading };
    tokio::time::timeout(DEADLINE, async {
        while let Some(r) = rounds.recv().await {
            if r == wanted {
                return;
            }
        }
        panic!("the upkeep loop ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted:?} within {DEADLINE:?}"));
}

/// Waits for a round in which the loop followed: one that began after leadership was
/// lost, since every round reads leadership first.
async fn following(rounds: &mut mpsc::UnboundedReceiver<Round>) {
    tokio::time::timeout(DEADLINE, async {
        while let Some(r) = rounds.recv().await {
            if !r.leading {
                return;
            }
        }
        panic!("the upkeep loop ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no round as a follower within {DEADLINE:?}"));
}

/// Polls `log` until `done` holds, for at most [`DEADLINE`].
async fn eventually(
    log: &kube_mock::Log,
    what: &str,
    done: impl Fn(&[kube_mock::Recorded]) -> bool,
) {
    let start = tokio::time::Instant::now();
    loop {
        if done(&log.lock().unwrap()) {
            return;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "not within {DEADLINE:?}: {what}; requests: {:?}",
                log.lock().unwrap()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn trust_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps/{TRUST_CONFIGMAP}")
}

fn applied(log: &[kube_mock::Recorded], ns: &str) -> bool {
    log.iter()
        .any(|r| r.method == Method::PATCH && r.path == trust_path(ns))
}

#[tokio::test]
async fn only_the_leader_writes_and_it_follows_labelled_namespaces() {
    let (client, log) = accepting();
    let ca = Ca::generate_root(SystemTime::now()).unwrap();
    let (leader_tx, leader_rx) = watch::channel(false);
    let (ca_tx, ca_rx) = watch::channel(Arc::new(ca));
    let (snap_tx, snap_rx) = watch::channel(snapshot(&["shop"]));
    let (rounds_tx, mut rounds) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let upkeep = Upkeep {
        webhook: WebhookTls::new(client.clone(), names()),
        trust: Some(TrustDistributor::new(client)),
        every: Duration::from_millis(50),
        rounds: Some(rounds_tx),
    };
    let task = tokio::spawn(upkeep.run(leader_rx, ca_rx, snap_rx, stop.clone()));

    // A follower: a namespace labelled, a new CA, a tick — each handled, and not one
    // request.
    snap_tx.send_replace(snapshot(&["shop", "web"]));
    round(&mut rounds, Cause::Snapshot, false).await;
    ca_tx.send_replace(Arc::new(Ca::generate_root(SystemTime::now()).unwrap()));
    round(&mut rounds, Cause::Ca, false).await;
    round(&mut rounds, Cause::Tick, false).await;
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    // Leading: the webhook's Secret is created, the ConfigMaps applied.
    leader_tx.send_replace(true);
    eventually(&log, "the ConfigMaps of shop and web applied", |log| {
        applied(log, "shop") && applied(log, "web")
    })
    .await;
    let bundle = ca_tx.borrow().trust_bundle().pem().to_string();
    {
        let log = log.lock().unwrap();
        let created: Vec<&str> = log
            .iter()
            .filter(|r| r.method == Method::POST)
            .map(|r| r.path.as_str())
            .collect();
        assert!(
            created
                .iter()
                .all(|p| *p == "/api/v1/namespaces/braid-system/secrets"),
            "{created:?}"
        );
        assert!(!created.is_empty());
        for ns in ["shop", "web"] {
            let path = trust_path(ns);
            let apply = log
                .iter()
                .find(|r| r.method == Method::PATCH && r.path == path)
                .unwrap_or_else(|| panic!("no apply to {path}"));
            assert_eq!(apply.content_type, "application/apply-patch+yaml");
            assert!(
                apply.query.contains("fieldManager=braid-operator"),
                "{}",
                apply.query
            );
            assert_eq!(apply.body["data"]["ca.crt"], bundle.as_str());
        }
    }

    // A namespace labelled while leading gets its ConfigMap.
    snap_tx.send_replace(snapshot(&["shop", "web", "new"]));
    eventually(&log, "the ConfigMap of new applied", |log| {
        applied(log, "new")
    })
    .await;

    // Leadership lost: silence again, through a new namespace and a tick. (Rounds
    // reported so far, some of them from before leading, are not evidence of it.)
    while rounds.try_recv().is_ok() {}
    leader_tx.send_replace(false);
    following(&mut rounds).await;
    log.lock().unwrap().clear();
    snap_tx.send_replace(snapshot(&["shop", "web", "new", "later"]));
    round(&mut rounds, Cause::Snapshot, false).await;
    round(&mut rounds, Cause::Tick, false).await;
    assert!(log.lock().unwrap().is_empty(), "{:?}", log.lock().unwrap());

    stop.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_changed_ca_secret_is_picked_up_and_a_deleted_one_written_back() {
    let client = ClientBuilder::new().build().await.unwrap();
    let secret = CaSecret::new(client.clone(), NS, CA_SECRET);
    let (ca, _) = secret.load_or_create(SystemTime::now()).await.unwrap();
    let api = Api::<Secret>::namespaced(client, NS);

    // Deleted: written back from memory, so nothing anyone trusts changes.
    api.delete(CA_SECRET, &Default::default()).await.unwrap();
    assert!(refreshed_unchanged(&secret, &ca).await);
    let restored = api.get(CA_SECRET).await.unwrap();
    assert_eq!(restored.data.unwrap(), ca.material().to_secret_data());

    // Replaced by an administrator (a second root added to the bundle): the new CA.
    let next = Ca::generate_root(SystemTime::now()).unwrap();
    let mut material = next.material().clone();
    material.trust_bundle = braid_operator::ca::TrustBundle::parse(&format!(
        "{}{}",
        ca.trust_bundle().pem(),
        next.trust_bundle().pem()
    ))
    .unwrap();
    let mut replaced = api.get(CA_SECRET).await.unwrap();
    replaced.data = Some(material.to_secret_data());
    api.replace(CA_SECRET, &Default::default(), &replaced)
        .await
        .unwrap();
    let fresh = secret
        .refresh(&ca, SystemTime::now())
        .await
        .unwrap()
        .expect("a changed Secret gives a new CA");
    assert_eq!(fresh.material(), &material);
    assert_eq!(fresh.trust_bundle().certificates().len(), 2);
    assert!(refreshed_unchanged(&secret, &fresh).await);

    // Broken by hand: an error, and the caller keeps the CA it has.
    let mut broken = api.get(CA_SECRET).await.unwrap();
    broken
        .data
        .as_mut()
        .unwrap()
        .insert(TRUST_BUNDLE_KEY.into(), ByteString(b"oops".to_vec()));
    api.replace(CA_SECRET, &Default::default(), &broken)
        .await
        .unwrap();
    let err = secret.refresh(&fresh, SystemTime::now()).await.unwrap_err();
    assert!(
        err.to_string().contains("key ca.crt: no CERTIFICATE block"),
        "{err}"
    );
}
