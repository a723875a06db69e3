//! The rustls configurations of this proxy's mesh connections, rebuilt whenever its
//! certificate or the trust roots change. Connections already open keep the session they
//! negotiated; only new handshakes use the new certificate, so a renewal drops nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Alpn, SpiffeServerVerifier, spiffe_id};
use crate::config::Identity;
use crate::identity::{Certified, IdentityStore};
use crate::metrics::Direction;
use crate::metrics::tls::{HandshakeResult, TlsMetrics};

/// Why a mesh connection could not be secured.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The proxy has no certificate yet.
    #[error("no certificate yet: the proxy has not obtained its identity from the operator")]
    NoCertificate,
    /// There is nothing to verify peers against.
    #[error(
        "no trust roots: neither the config's trustBundle nor the certificate's answer has one"
    )]
    NoRoots,
    /// rustls refused the certificate, key or roots.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// The handshake failed: the peer's identity or chain was refused, or the
    /// connection broke.
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
}

impl TlsError {
    /// Whether the fault is this proxy's own (no certificate, no roots, a configuration
    /// rustls refused) rather than the peer's: it must not count against the endpoint.
    pub fn is_local(&self) -> bool {
        !matches!(self, Self::Handshake(_))
    }
}

/// Why a trust bundle cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// It is not PEM.
    #[error("not PEM certificates: {0}")]
    Pem(rustls_pki_types::pem::Error),
    /// A certificate cannot be a trust root.
    #[error("certificate {number}: {source}")]
    Certificate {
        /// Which one, from 1.
        number: usize,
        /// Why rustls refused it.
        source: rustls::Error,
    },
    /// It has text but no `CERTIFICATE` block.
    #[error("no CERTIFICATE block")]
    NoCertificate,
}

/// An accepted mesh connection.
pub struct Accepted<I> {
    /// The decrypted stream.
    pub stream: tokio_rustls::server::TlsStream<I>,
    /// What it carries.
    pub alpn: Alpn,
    /// The caller's SPIFFE identity.
    pub peer: Option<Arc<str>>,
}

/// The current certificate and roots, as rustls configurations.
struct Built {
    /// What it was built from: a new certificate or bundle means a rebuild.
    certified: Arc<Certified>,
    bundle: Arc<Vec<CertificateDer<'static>>>,
    roots: Arc<RootCertStore>,
    server: Arc<ServerConfig>,
    /// One client configuration per expected peer identity and protocol, each with its
    /// own session cache, so reconnecting to a peer resumes instead of a full handshake.
    clients: Mutex<ClientConfigs>,
}

/// Client configurations by expected server identity and protocol.
type ClientConfigs = HashMap<(Arc<Identity>, Alpn), Arc<ClientConfig>>;

/// This proxy's mesh TLS: its certificate (from the [`IdentityStore`]) and the roots that
/// verify peers (the config's `trustBundle`, else those that came with the certificate).
pub struct TlsContext {
    store: Arc<IdentityStore>,
    metrics: TlsMetrics,
    bundle: ArcSwap<Vec<CertificateDer<'static>>>,
    provider: Arc<CryptoProvider>,
    built: Mutex<Option<Arc<Built>>>,
}

impl TlsContext {
    /// A context presenting the certificates `store` holds.
    pub fn new(store: Arc<IdentityStore>, metrics: TlsMetrics) -> Arc<Self> {
        Arc::new(Self {
            store,
            metrics,
            bundle: ArcSwap::from_pointee(Vec::new()),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
            built: Mutex::new(None),
        })
    }

    /// Parses a PEM trust bundle; an error names what is wrong.
    pub fn parse_bundle(pem: &str) -> Result<Vec<CertificateDer<'static>>, BundleError> {
        let certs: Vec<_> = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(BundleError::Pem)?;
        let mut roots = RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots
                .add(cert.clone())
                .map_err(|source| BundleError::Certificate {
                    number: i + 1,
                    source,
                })?;
        }
        if certs.is_empty() && !pem.trim().is_empty() {
            return Err(BundleError::NoCertificate);
        }
        Ok(certs)
    }

    /// Puts the config's trust bundle in force (already checked by the config's build).
    pub fn set_trust_bundle(&self, pem: &str) {
        let certs = Self::parse_bundle(pem).unwrap_or_default();
        if **self.bundle.load() != certs {
            self.bundle.store(Arc::new(certs));
        }
    }

    /// Whether the proxy holds a certificate.
    pub fn has_certificate(&self) -> bool {
        self.store.current().is_some()
    }

    /// Secures the outgoing connection `io` to `addr`, whose server must present
    /// `expected`; ALPN says what it will carry.
    pub async fn connect<I>(
        &self,
        io: I,
        addr: SocketAddr,
        expected: &Arc<Identity>,
        alpn: Alpn,
    ) -> Result<tokio_rustls::client::TlsStream<I>, TlsError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let config = self.client_config(expected, alpn);
        let secured = match config {
            Ok(config) => tokio_rustls::TlsConnector::from(config)
                .connect(ServerName::IpAddress(addr.ip().into()), io)
                .await
                .map_err(TlsError::Handshake),
            Err(e) => Err(e),
        };
        self.count(Direction::outbound, secured.is_ok());
        secured
    }

    fn count(&self, direction: Direction, ok: bool) {
        let result = match ok {
            true => HandshakeResult::ok,
            false => HandshakeResult::failed,
        };
        self.metrics.handshake(direction, result);
    }

    /// Completes the handshake of an incoming mesh connection (its ClientHello already
    /// seen to offer a braid ALPN); the caller must present a certificate chained to the
    /// roots.
    pub async fn accept<I>(&self, io: I) -> Result<Accepted<I>, TlsError>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let accepted = match self.built() {
            Ok(built) => tokio_rustls::TlsAcceptor::from(built.server.clone())
                .accept(io)
                .await
                .map_err(TlsError::Handshake),
            Err(e) => Err(e),
        };
        self.count(Direction::inbound, accepted.is_ok());
        let stream = accepted?;
        let (_, conn) = stream.get_ref();
        let alpn = conn
            .alpn_protocol()
            .and_then(Alpn::from_wire)
            .unwrap_or(Alpn::Tcp);
        let peer = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| spiffe_id(leaf))
            .map(Arc::from);
        Ok(Accepted { stream, alpn, peer })
    }

    fn client_config(
        &self,
        expected: &Arc<Identity>,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let built = self.built()?;
        let mut clients = built
            .clients
            .lock()
            .map_err(|_| TlsError::Config("client configurations poisoned".into()))?;
        if let Some(config) = clients.get(&(expected.clone(), alpn)) {
            return Ok(config.clone());
        }
        let verifier =
            SpiffeServerVerifier::new(built.roots.clone(), expected.clone(), self.provider.clone());
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(
                built.certified.chain.clone(),
                built.certified.key.clone_key().into(),
            )
            .map_err(config_error)?;
        config.alpn_protocols = vec![alpn.wire().to_vec()];
        let config = Arc::new(config);
        clients.insert((expected.clone(), alpn), config.clone());
        Ok(config)
    }

    /// The configurations of the current certificate and roots, built when they change.
    fn built(&self) -> Result<Arc<Built>, TlsError> {
        let certified = self.store.current().ok_or(TlsError::NoCertificate)?;
        let bundle = self.bundle.load_full();
        let mut built = self
            .built
            .lock()
            .map_err(|_| TlsError::Config("TLS state poisoned".into()))?;
        if let Some(b) = built.as_ref()
            && Arc::ptr_eq(&b.certified, &certified)
            && Arc::ptr_eq(&b.bundle, &bundle)
        {
            return Ok(b.clone());
        }
        let fresh = Arc::new(self.build(certified, bundle)?);
        *built = Some(fresh.clone());
        Ok(fresh)
    }

    fn build(
        &self,
        certified: Arc<Certified>,
        bundle: Arc<Vec<CertificateDer<'static>>>,
    ) -> Result<Built, TlsError> {
        let mut roots = RootCertStore::empty();
        let anchors = if bundle.is_empty() {
            &certified.trust
        } else {
            &*bundle
        };
        for cert in anchors {
            roots
                .add(cert.clone())
                .map_err(|e| TlsError::Config(format!("trust root: {e}")))?;
        }
        if roots.is_empty() {
            return Err(TlsError::NoRoots);
        }
        let roots = Arc::new(roots);
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), self.provider.clone())
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config_error)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certified.chain.clone(), certified.key.clone_key().into())
            .map_err(config_error)?;
        server.alpn_protocols = Alpn::ALL.iter().map(|a| a.wire().to_vec()).collect();
        Ok(Built {
            certified,
            bundle,
            roots,
            server: Arc::new(server),
            clients: Mutex::new(HashMap::new()),
        })
    }
}

fn config_error(e: rustls::Error) -> TlsError {
    TlsError::Config(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_error_says_what_is_wrong() {
        assert!(TlsContext::parse_bundle("").unwrap().is_empty());
        let err = TlsContext::parse_bundle("just text").unwrap_err();
        assert!(matches!(err, BundleError::NoCertificate), "{err:?}");
        assert_eq!(err.to_string(), "no CERTIFICATE block");
        let garbled = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let err = TlsContext::parse_bundle(garbled).unwrap_err();
        assert!(
            err.to_string().starts_with("certificate 1: "),
            "{err}: {err:?}"
        );
    }
}
