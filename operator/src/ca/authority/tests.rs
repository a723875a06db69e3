use std::time::UNIX_EPOCH;

use super::*;
use crate::ca::validity::Validity;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn request(names: &[&str], lifetime: Duration) -> LeafRequest {
    LeafRequest {
        names: names.iter().map(|n| n.to_string()).collect(),
        lifetime,
    }
}

const NAMES: [&str; 3] = [
    "braid-operator.braid-system.svc",
    "braid-operator.braid-system.svc.cluster.local",
    "127.0.0.1",
];

fn roots(ca: &Ca) -> &[CertificateDer<'static>] {
    ca.trust_bundle().certificates()
}

#[test]
fn an_issued_leaf_chains_to_the_root_for_each_of_its_names() {
    let ca = Ca::generate_root(now()).unwrap();
    let leaf = ca.issue(&request(&NAMES, DAY), now()).unwrap();
    assert_eq!(leaf.chain.len(), 2, "leaf, then the root it is signed by");
    for name in NAMES {
        verify_server_chain(roots(&ca), &leaf.chain, name, now()).unwrap();
    }
    let err = verify_server_chain(roots(&ca), &leaf.chain, "other.svc", now())
        .unwrap_err()
        .to_string();
    assert!(err.contains("not valid for name \"other.svc\""), "{err}");
    // Not before it starts (allowing for skew), not after it ends.
    verify_server_chain(roots(&ca), &leaf.chain, NAMES[0], now() - CLOCK_SKEW).unwrap();
    assert!(verify_server_chain(roots(&ca), &leaf.chain, NAMES[0], now() + DAY + HOUR).is_err());
    assert_eq!(
        leaf.validity,
        Validity {
            not_before: now() - CLOCK_SKEW,
            not_after: now() + DAY,
        }
    );
}

#[test]
fn the_root_is_an_ecdsa_ca_for_ten_years() {
    let ca = Ca::generate_root(now()).unwrap();
    let root = &roots(&ca)[0];
    let (_, x509) = X509Certificate::from_der(root).unwrap();
    assert!(x509.basic_constraints().unwrap().unwrap().value.ca);
    assert_eq!(x509.subject(), x509.issuer(), "self-signed");
    assert!(x509.subject().to_string().contains(ROOT_COMMON_NAME));
    assert_eq!(
        x509.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    assert_eq!(ca.signing_validity().not_after, now() + ROOT_LIFETIME);
    // What is stored reads back as the same CA.
    let again = Ca::from_material(ca.material().clone(), now()).unwrap();
    assert_eq!(again.material(), ca.material());
    let leaf = again.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    verify_server_chain(roots(&ca), &leaf.chain, NAMES[0], now()).unwrap();
}

#[test]
fn the_pem_matches_the_der() {
    let ca = Ca::generate_root(now()).unwrap();
    let leaf = ca.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    let from_pem = certificates("tls.crt", &leaf.chain_pem).unwrap();
    assert_eq!(from_pem, leaf.chain);
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    assert_eq!(key.secret_der(), leaf.key.secret_pkcs8_der());
    let pair = KeyPair::try_from(&key).unwrap();
    assert!(key_belongs_to(&pair, &leaf.chain[0]).unwrap());
    assert!(!key_belongs_to(&pair, &leaf.chain[1]).unwrap());
}

#[test]
fn a_leaf_does_not_outlive_its_signer() {
    let ca = Ca::generate_root(now()).unwrap();
    let late = now() + ROOT_LIFETIME - HOUR;
    let leaf = ca.issue(&request(&NAMES[..1], DAY), late).unwrap();
    assert_eq!(leaf.validity.not_after, now() + ROOT_LIFETIME);
}

#[test]
fn a_leaf_is_worth_issuing_only_while_it_would_not_be_due_at_once() {
    let end = now() + 30 * DAY;
    // Far from the signer's end: the whole lifetime.
    assert_eq!(
        fresh_leaf(end, DAY, now()),
        Ok(Validity {
            not_before: now() - CLOCK_SKEW,
            not_after: now() + DAY
        })
    );
    // An hour before it: capped, but two thirds of it are still ahead.
    let capped = fresh_leaf(end, DAY, end - HOUR).unwrap();
    assert_eq!(capped.not_after, end);
    assert!(!capped.renewal_due(end - HOUR));
    // A clock skew before it: still a third of the (skew-lengthened) lifetime ahead.
    assert!(fresh_leaf(end, DAY, end - CLOCK_SKEW).is_ok());
    // Within half a clock skew of it, or past it: due as soon as issued.
    let ending = Err(CaEnding { not_after: end });
    for at in [
        end - CLOCK_SKEW / 2,
        end - Duration::from_secs(60),
        end,
        end + DAY,
    ] {
        assert_eq!(fresh_leaf(end, DAY, at), ending, "{at:?}");
        assert_eq!(fresh_leaf(end, 90 * DAY, at), ending, "{at:?}");
    }
    let ca = Ca::generate_root(now()).unwrap();
    let ca_end = ca.signing_validity().not_after;
    assert!(ca.fresh_leaf(DAY, now()).is_ok());
    let message = ca
        .fresh_leaf(DAY, ca_end - Duration::from_secs(60))
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "the CA's signing certificate (tls.crt of the --ca-secret Secret) expires {}",
            timestamp(ca_end)
        )),
        "{message}"
    );
}

#[test]
fn names_must_be_dns_names_or_ips() {
    let ca = Ca::generate_root(now()).unwrap();
    assert!(matches!(
        ca.issue(&request(&[], DAY), now()),
        Err(CaError::NoNames)
    ));
    for bad in ["", "not a name", "a..b"] {
        assert!(
            matches!(
                ca.issue(&request(&[bad], DAY), now()),
                Err(CaError::BadName { .. })
            ),
            "{bad:?}"
        );
    }
    ca.issue(&request(&["::1", "localhost"], DAY), now())
        .unwrap();
}

/// An intermediate signed by `root`, as an administrator might supply it.
fn intermediate(root: &Ca) -> CaMaterial {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "example intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = (now() - DAY).into();
    params.not_after = (now() + 365 * DAY).into();
    let cert = params.signed_by(&key, &root.issuer).unwrap();
    CaMaterial {
        signing_chain_pem: format!("{}{}", cert.pem(), root.material().signing_chain_pem),
        signing_key_pem: key.serialize_pem(),
        trust_bundle: root.trust_bundle().clone(),
    }
}

#[test]
fn an_intermediate_signs_and_its_chain_is_sent_along() {
    let root = Ca::generate_root(now()).unwrap();
    let ca = Ca::from_material(intermediate(&root), now()).unwrap();
    let leaf = ca.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    assert_eq!(leaf.chain.len(), 3, "leaf, intermediate, root");
    verify_server_chain(roots(&root), &leaf.chain, NAMES[0], now()).unwrap();
    // Without the intermediate, the root alone cannot verify the leaf.
    assert!(verify_server_chain(roots(&root), &leaf.chain[..1], NAMES[0], now()).is_err());
    ca.verify_issued(&leaf.chain, &[NAMES[0].to_string()], now())
        .unwrap();
}

#[test]
fn a_malformed_ca_names_the_key_at_fault() {
    let ca = Ca::generate_root(now()).unwrap();
    let other = Ca::generate_root(now()).unwrap();
    let good = ca.material().clone();

    let mut wrong_key = good.clone();
    wrong_key.signing_key_pem = other.material().signing_key_pem.clone();
    let err = Ca::from_material(wrong_key, now()).unwrap_err();
    assert_eq!(err.key, SIGNING_KEY_KEY, "{err}");
    assert!(
        err.problem.contains("not the key of the first certificate"),
        "{err}"
    );

    let mut garbage_key = good.clone();
    garbage_key.signing_key_pem =
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n".into();
    let err = Ca::from_material(garbage_key, now()).unwrap_err();
    assert_eq!(err.key, SIGNING_KEY_KEY);
    assert!(err.problem.contains("openssl pkcs8"), "{err}");

    let mut foreign_bundle = good.clone();
    foreign_bundle.trust_bundle = other.trust_bundle().clone();
    let err = Ca::from_material(foreign_bundle, now()).unwrap_err();
    assert_eq!(err.key, TRUST_BUNDLE_KEY, "{err}");
    // Same subject as the real root, another key.
    assert!(err.problem.contains("BadSignature"), "{err}");

    let leaf = ca.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    let not_a_ca = CaMaterial {
        signing_chain_pem: leaf.chain_pem.clone(),
        signing_key_pem: leaf.key_pem.clone(),
        trust_bundle: good.trust_bundle.clone(),
    };
    let err = Ca::from_material(not_a_ca, now()).unwrap_err();
    assert_eq!(err.key, SIGNING_CERT_KEY);
    assert!(err.problem.contains("not a CA certificate"), "{err}");

    let err = Ca::from_material(good.clone(), now() + ROOT_LIFETIME + DAY).unwrap_err();
    assert_eq!(err.key, SIGNING_CERT_KEY);
    assert!(err.problem.contains("not valid now"), "{err}");

    let mut no_cert = good;
    no_cert.signing_chain_pem = "nothing here".into();
    assert_eq!(
        Ca::from_material(no_cert, now()).unwrap_err(),
        MaterialError::new(SIGNING_CERT_KEY, "no CERTIFICATE block")
    );
}

#[test]
fn a_bundle_may_hold_several_roots() {
    let old = Ca::generate_root(now()).unwrap();
    let new = Ca::generate_root(now()).unwrap();
    let mut material = new.material().clone();
    let both = format!("{}{}", old.trust_bundle().pem(), new.trust_bundle().pem());
    material.trust_bundle = TrustBundle::parse(&both).unwrap();
    let ca = Ca::from_material(material, now()).unwrap();
    assert_eq!(ca.trust_bundle().certificates().len(), 2);
    let leaf = ca.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    verify_server_chain(roots(&ca), &leaf.chain, NAMES[0], now()).unwrap();
    // A certificate of the old root still verifies with the bundle, but is not this
    // CA's: it gets replaced while both roots are trusted.
    let old_leaf = old.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    verify_server_chain(roots(&ca), &old_leaf.chain, NAMES[0], now()).unwrap();
    let names = [NAMES[0].to_string()];
    assert!(ca.verify_issued(&old_leaf.chain, &names, now()).is_err());
    ca.verify_issued(&leaf.chain, &names, now()).unwrap();
}

#[test]
fn verify_issued_checks_names_and_time() {
    let ca = Ca::generate_root(now()).unwrap();
    let leaf = ca.issue(&request(&NAMES[..1], DAY), now()).unwrap();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ca.verify_issued(&leaf.chain, &names(&NAMES[..1]), now())
        .unwrap();
    let err = ca
        .verify_issued(&leaf.chain, &names(&NAMES[..2]), now())
        .unwrap_err();
    assert_eq!(err.name, NAMES[1]);
    let err = err.to_string();
    assert!(err.starts_with(NAMES[1]), "{err}");
    assert!(
        ca.verify_issued(&leaf.chain, &names(&NAMES[..1]), now() + 2 * DAY)
            .is_err()
    );
    assert!(ca.verify_issued(&[], &names(&NAMES[..1]), now()).is_err());
}

const IDENTITY: &str = "spiffe://cluster.local/ns/shop/sa/payments";

/// A CSR from a new key of `alg`, asking for `names` (which the CA ignores).
fn csr(alg: &'static rcgen::SignatureAlgorithm, names: &[&str]) -> String {
    let key = KeyPair::generate_for(alg).unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

#[test]
fn a_proxy_csr_gets_its_identity_as_the_one_name_for_both_ends_of_mtls() {
    let ca = Ca::generate_root(now()).unwrap();
    let signed = ca
        .sign_identity(
            &csr(&PKCS_ECDSA_P256_SHA256, &["evil.example"]),
            IDENTITY,
            DAY,
            now(),
        )
        .unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(signed.chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    assert_eq!(chain.len(), 2);
    let (_, leaf) = X509Certificate::from_der(&chain[0]).unwrap();
    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(sans, [format!("URI({IDENTITY})")], "only the identity");
    assert_eq!(signed.validity, Validity::of(&chain[0]).unwrap());
    // It verifies as a client certificate against the trust bundle...
    let mut store = rustls::RootCertStore::empty();
    for root in roots(&ca) {
        store.add(root.clone()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(store.into(), provider)
            .build()
            .unwrap();
    let at = rustls_pki_types::UnixTime::since_unix_epoch(
        now().duration_since(UNIX_EPOCH).unwrap() + HOUR,
    );
    verifier
        .verify_client_cert(&chain[0], &chain[1..], at)
        .unwrap();
    // ...and its lifetime is the one asked for.
    assert_eq!(
        signed.validity.not_after,
        now() + DAY,
        "{:?}",
        signed.validity
    );
}

#[test]
fn a_bad_csr_is_refused_saying_why() {
    let ca = Ca::generate_root(now()).unwrap();
    let err = |pem: &str| {
        ca.sign_identity(pem, IDENTITY, DAY, now())
            .unwrap_err()
            .to_string()
    };
    assert!(err("not a csr").contains("does not parse"), "{}", err("x"));
    // A request whose signature does not match: one character of its last line (the
    // signature) changed.
    let good = csr(&PKCS_ECDSA_P256_SHA256, &[]);
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let last = lines.len() - 2;
    let c = if lines[last].starts_with('A') {
        "B"
    } else {
        "A"
    };
    lines[last].replace_range(0..1, c);
    let tampered = lines.join("\n");
    assert!(
        err(&tampered).contains("does not parse"),
        "{}",
        err(&tampered)
    );
    let ed = err(&csr(&rcgen::PKCS_ED25519, &[]));
    assert!(ed.contains("not ECDSA P-256"), "{ed}");
}
