#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The CA's Kubernetes side: its Secret (created, raced for, supplied, malformed), and
//! one round of the webhook's Secret and caBundle — against kube-fake-client's in-memory
//! API server and, where the exact requests matter, a scripted one. (The controllers that
//! keep them, and the trust ConfigMaps, up to date are in kube_upkeep.rs.)

mod kube_mock;

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use braid_operator::ca::material::{SIGNING_CERT_KEY, SIGNING_KEY_KEY, TRUST_BUNDLE_KEY};
use braid_operator::ca::secret::{CaSecret, Origin};
use braid_operator::ca::verify::verify_server_chain;
use braid_operator::ca::webhook::{WEBHOOK_LIFETIME, WebhookNames, WebhookTls};
use braid_operator::ca::{Ca, CaMaterial, LeafRequest};
use http::{Method, StatusCode};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube_fake_client::ClientBuilder;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

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
