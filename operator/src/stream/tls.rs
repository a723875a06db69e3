//! TLS for the config server: its certificate (given, or made at start-up), and the
//! accept loop serving HTTP/2 (and HTTP/1.1 for curl) over it.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

/// The certificate chain and key the server presents.
pub struct ServingCert {
    /// Leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// PEM of the certificate(s) clients should trust for it.
    pub trust_pem: String,
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
        })
    }

    /// A rustls server config offering HTTP/2, then HTTP/1.1.
    pub fn server_config(self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Cert(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)
            .map_err(|e| TlsError::Cert(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Accepts TLS connections and serves `router` on each until `stop` fires. Connections
/// are tracked by `tracker` so shutdown can wait for them.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let service = TowerToHyperService::new(router.clone());
        let stop = stop.clone();
        tracker.spawn(async move {
            let tls = match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                acceptor.accept(tcp),
            )
            .await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(Some(std::time::Duration::from_secs(20)));
            let conn = builder.serve_connection(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, error = %e, "connection ended");
                    }
                }
                _ = stop.cancelled() => {
                    // Streams end on `stop`; let the connection say goodbye (GOAWAY).
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
                }
            }
        });
    }
}
