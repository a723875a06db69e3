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

/// A chain a client would refuse, or could not check.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The chain is empty.
    #[error("no certificate")]
    Empty,
    /// A trust anchor is not a usable certificate.
    #[error("trust anchor: {0}")]
    Anchor(#[source] rustls::Error),
    /// No verifier could be built from the anchors.
    #[error("{0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    /// The name to check is neither a DNS name nor an IP address.
    #[error("name {name:?}: {source}")]
    Name {
        /// The name.
        name: String,
        /// Why.
        #[source]
        source: rustls_pki_types::InvalidDnsNameError,
    },
    /// The clock reads a time before 1970.
    #[error("the clock is before 1970")]
    Clock,
    /// The chain does not verify (signature, validity, name …).
    #[error("{0}")]
    Refused(#[source] rustls::Error),
}

/// A certificate that is not readable X.509 (DER).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UnreadableCertificate(#[from] x509_parser::nom::Err<x509_parser::error::X509Error>);

/// Parses `cert` (DER).
pub fn parse<'a>(
    cert: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, UnreadableCertificate> {
    Ok(X509Certificate::from_der(cert)?.1)
}

/// Verifies `chain` (leaf first, then intermediates) as a TLS client would for server
/// `name` at `now`, trusting `anchors` (roots, or any certificate trusted directly).
pub fn verify_server_chain(
    anchors: &[CertificateDer<'_>],
    chain: &[CertificateDer<'_>],
    name: &str,
    now: SystemTime,
) -> Result<(), ChainError> {
    let (leaf, intermediates) = chain.split_first().ok_or(ChainError::Empty)?;
    let mut roots = RootCertStore::empty();
    for anchor in anchors {
        roots
            .add(anchor.clone().into_owned())
            .map_err(ChainError::Anchor)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier =
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
    let server_name =
        ServerName::try_from(name.to_string()).map_err(|source| ChainError::Name {
            name: name.to_string(),
            source,
        })?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| ChainError::Clock)?;
    verifier
        .verify_server_cert(
            leaf,
            intermediates,
            &server_name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map(|_| ())
        .map_err(ChainError::Refused)
}

/// Whether `key` is the private key of `cert`'s public key.
pub fn key_belongs_to(
    key: &KeyPair,
    cert: &CertificateDer<'_>,
) -> Result<bool, UnreadableCertificate> {
    let x509 = parse(cert)?;
    Ok(x509.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}
