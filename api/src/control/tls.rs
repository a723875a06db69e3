//! TLS towards the operator: its serving certificate is checked against the trust
//! anchors of `--operator-ca`, and ALPN offers only `h2`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why the operator's trust anchors cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not PEM, or a certificate in it is not usable as a trust anchor.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration trusting the PEM certificates in `ca_file` (one or more
/// `CERTIFICATE` blocks; other blocks are ignored), using the ring provider, with ALPN
/// `h2`.
pub fn client_config(ca_file: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        path: ca_file.to_owned(),
        source,
    })?;
    client_config_from_pem(&pem, ca_file)
}

/// [`client_config`] from PEM text already read; `origin` names it in errors.
pub fn client_config_from_pem(pem: &[u8], origin: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        path: origin.to_owned(),
        message,
    };
    let mut roots = RootCertStore::empty();
    for (i, cert) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let cert = cert.map_err(|e| invalid(format!("PEM: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| invalid(format!("certificate {}: {e}", i + 1)))?;
    }
    if roots.is_empty() {
        return Err(invalid("no CERTIFICATE block".to_owned()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = client_config(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let err = client_config(&empty).unwrap_err().to_string();
        assert!(err.contains("empty.pem: no CERTIFICATE block"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = client_config(&garbage).unwrap_err().to_string();
        assert!(err.contains("garbage.pem: certificate 1"), "{err}");
    }

    #[test]
    fn a_real_certificate_is_trusted() {
        let cert = rcgen::generate_simple_self_signed(vec!["operator".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, cert.cert.pem()).unwrap();
        let config = client_config(&ca).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec()]);
    }
}
