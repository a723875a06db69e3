//! The checks a client makes on a certificate chain (webpki, through rustls: signatures,
//! validity at a given time, the name), and whether a key belongs to a certificate.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::KeyPair;
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Verifies `chain` (leaf first, then intermediates) as a TLS client would for server
/// `name` at `now`, trusting `anchors` (roots, or any certificate trusted directly).
pub fn verify_server_chain(
    anchors: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    name: &str,
    now: SystemTime,
) -> Result<(), String> {
    let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        roots
            .add(anchor.clone().into_owned())
            .map_err(|e| format!("trust anchor: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|e| format!("name {name:?}: {e}"))?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970".to_string())?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &server_name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether `key` is the private key of `cert`'s public key.
pub fn key_belongs_to(key: &KeyPair, cert: &CertificateDer<'_>) -> Result<bool, String> {
    let (_, x509) = X509Certificate::from_der(cert).map_err(|e| e.to_string())?;
    Ok(x509.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}
