//! A certificate and key from files, for hosts the operator does not certify.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Certified;
use super::spiffe_id;

impl Certified {
    /// Reads the PEM chain `cert` (leaf first, carrying one SPIFFE URI) and its PKCS#8
    /// key `key`; an error names the file and what is wrong.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, String> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", cert.display()))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{}: no CERTIFICATE block", cert.display()))?;
        let identity = spiffe_id(leaf).ok_or_else(|| {
            format!(
                "{}: the certificate carries no single spiffe:// URI SAN, so it names no mesh identity",
                cert.display()
            )
        })?;
        let (_, parsed) =
            X509Certificate::from_der(leaf).map_err(|e| format!("{}: {e}", cert.display()))?;
        let not_after =
            UNIX_EPOCH + Duration::from_secs(parsed.validity().not_after.timestamp().max(0) as u64);
        let key = PrivatePkcs8KeyDer::from_pem_slice(&read(key)?)
            .map_err(|e| format!("{}: not a PKCS#8 PEM private key: {e}", key.display()))?;
        Ok(Self {
            identity,
            chain,
            key,
            trust: Vec::new(),
            not_after,
        })
    }
}
