//! The webhook's serving certificate, reloaded when its files change (the operator or
//! cert-manager rotates the Secret; kubelet updates the mounted files in place).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// A certificate or key that cannot be used, naming the flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag} {path}: {message}")]
pub struct CertError {
    /// `--tls-cert` or `--tls-key`.
    pub flag: &'static str,
    /// The file.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Serves the certificate most recently read from two PEM files.
#[derive(Debug)]
pub struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<(Arc<CertifiedKey>, Option<SystemTime>)>,
}

fn stamp(cert: &Path, key: &Path) -> Option<SystemTime> {
    let a = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let b = std::fs::metadata(key).and_then(|m| m.modified()).ok()?;
    Some(a.max(b))
}

fn load(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let err = |flag, path: &Path, message: String| CertError {
        flag,
        path: path.display().to_string(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err("--tls-cert", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err("--tls-cert", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err("--tls-cert", cert, "no CERTIFICATE block".into()));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| err("--tls-key", key, e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| err("--tls-key", key, e.to_string()))?;
    Ok(Arc::new(CertifiedKey::new(chain, signer)))
}

impl ReloadingCert {
    /// Reads the files once; start-up fails on a bad pair.
    pub fn new(cert: PathBuf, key: PathBuf) -> Result<Self, CertError> {
        let loaded = load(&cert, &key)?;
        let seen = stamp(&cert, &key);
        Ok(Self {
            cert,
            key,
            current: RwLock::new((loaded, seen)),
        })
    }

    /// Re-reads the files if they changed; a bad pair is logged and the old one kept.
    pub fn refresh(&self) {
        let now = stamp(&self.cert, &self.key);
        if now.is_none() || self.current.read().map(|c| c.1 == now).unwrap_or(false) {
            return;
        }
        match load(&self.cert, &self.key) {
            Ok(fresh) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = (fresh, now);
                tracing::info!(cert = %self.cert.display(), "serving certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %e, "new serving certificate refused; keeping the current one")
            }
        }
    }

    /// Checks the files every `every` until `stop` fires.
    pub async fn watch(self: Arc<Self>, every: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => self.refresh(),
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .0
                .clone(),
        )
    }
}

/// A rustls config serving `cert`, HTTP/2 then HTTP/1.1 (the API server uses either).
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
