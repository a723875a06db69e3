//! The certificate the config server (and the webhook, on the same listener) presents:
//! given (`--tls-cert`/`--tls-key`), made at start-up, or issued by the CA and rotated
//! ([`super::serving`]); swappable while serving, so open connections carry on.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why the serving certificate cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("{flag} {path}: {message}")]
    File {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The certificate could not be made or used.
    #[error("serving certificate: {0}")]
    Cert(String),
    /// The private key is not the key of the (first) certificate, so every handshake
    /// would fail.
    #[error(
        "--tls-key {key} is not the private key of the first certificate in --tls-cert {cert}: \
         give the key that certificate was issued for (or the certificate issued for this key)"
    )]
    KeyMismatch {
        /// `--tls-cert`.
        cert: String,
        /// `--tls-key`.
        key: String,
    },
}

/// The certificate chain and key the server presents.
pub struct ServingCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM of the certificate(s) clients should trust for it.
    pub trust_pem: String,
    /// The files it was read from (`--tls-cert`, `--tls-key`), to name in errors.
    files: Option<(String, String)>,
}

impl ServingCert {
    /// Reads a PEM chain and key (`--tls-cert`, `--tls-key`).
    pub fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let file_err = |flag, path: &Path, message: String| TlsError::File {
            flag,
            path: path.display().to_string(),
            message,
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| file_err("--tls-cert", cert, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_err("--tls-cert", cert, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err("--tls-cert", cert, "no CERTIFICATE block".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| file_err("--tls-key", key, e.to_string()))?;
        let trust_pem = std::fs::read_to_string(cert)
            .map_err(|e| file_err("--tls-cert", cert, e.to_string()))?;
        Ok(Self {
            chain,
            key: key_der,
            trust_pem,
            files: Some((cert.display().to_string(), key.display().to_string())),
        })
    }

    /// A self-signed certificate for `names` (DNS names or IP addresses), made at
    /// start-up when no certificate is given. Proxies trust it through `--operator-ca`.
    pub fn self_signed(names: &[String]) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(names.to_vec())
            .map_err(|e| TlsError::Cert(e.to_string()))?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der())
            .map_err(|e| TlsError::Cert(e.to_string()))?;
        Ok(Self {
            chain: vec![certified.cert.der().clone()],
            key,
            trust_pem: certified.cert.pem(),
            files: None,
        })
    }

    /// Served as it is, never replaced. The key must be the first certificate's: a
    /// mismatch is refused here, where it can be named, rather than failing every
    /// handshake later.
    pub fn into_serving(self) -> Result<Serving, TlsError> {
        let signer = rustls::crypto::ring::sign::any_supported_type(&self.key)
            .map_err(|e| TlsError::Cert(e.to_string()))?;
        let certified = CertifiedKey::new(self.chain, signer);
        match certified.keys_match() {
            // Unknown: the key type cannot say its public key; nothing to compare.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                let (cert, key) = self
                    .files
                    .unwrap_or_else(|| ("(made at start-up)".into(), "(made at start-up)".into()));
                return Err(TlsError::KeyMismatch { cert, key });
            }
            Err(e) => return Err(TlsError::Cert(e.to_string())),
        }
        Ok(Serving {
            cert: Arc::new(SwappableCert::new(certified)),
            trust_pem: self.trust_pem,
        })
    }
}

/// What the config server presents, and what its clients must trust.
pub struct Serving {
    /// The certificate, replaceable while serving.
    pub cert: Arc<SwappableCert>,
    /// PEM of the certificate(s) that verify it (`--tls-trust-out`).
    pub trust_pem: String,
}

/// The certificate the server presents, replaceable while it serves: a new one is used
/// for new handshakes, and open connections carry on undisturbed.
#[derive(Debug)]
pub struct SwappableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl SwappableCert {
    /// Serving `cert`.
    pub fn new(cert: CertifiedKey) -> Self {
        Self {
            current: RwLock::new(Arc::new(cert)),
        }
    }

    /// Serves `cert` from the next handshake on.
    pub fn swap(&self, cert: CertifiedKey) {
        // A poisoned lock only means a writer panicked mid-assignment of an Arc: the
        // value is whole either way.
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(cert);
    }

    /// The certificate served now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["braid-operator.braid-system.svc".to_string()];
        let a = rcgen::generate_simple_self_signed(names.clone()).unwrap();
        let b = rcgen::generate_simple_self_signed(names).unwrap();
        let cert = write(dir.path(), "tls.crt", &a.cert.pem());
        let own_key = write(dir.path(), "own.key", &a.signing_key.serialize_pem());
        let other_key = write(dir.path(), "other.key", &b.signing_key.serialize_pem());

        assert!(
            ServingCert::load(&cert, &own_key)
                .unwrap()
                .into_serving()
                .is_ok()
        );
        let err = ServingCert::load(&cert, &other_key)
            .unwrap()
            .into_serving()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "--tls-key {} is not the private key of the first certificate in --tls-cert {}",
                other_key.display(),
                cert.display()
            )),
            "{err}"
        );
        assert!(
            err.contains("give the key that certificate was issued for"),
            "{err}"
        );
    }
}
