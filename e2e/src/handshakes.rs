//! The bench's TLS handshake rate: full mTLS handshakes (no session resumption) against a
//! braid proxy's Strict port, as a meshed caller makes them, several at a time.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use braid_api::config::Identity;
use braid_proxy::tls::{Alpn, SpiffeServerVerifier};
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// What to handshake with, and as whom.
pub struct Handshakes<'a> {
    /// The proxy's Strict port.
    pub addr: SocketAddr,
    /// The caller's certificate chain (PEM).
    pub cert: &'a Path,
    /// Its key (PKCS#8 PEM).
    pub key: &'a Path,
    /// The mesh's root (PEM).
    pub ca: &'a Path,
    /// The identity the proxy must present.
    pub identity: &'a str,
}

impl Handshakes<'_> {
    /// Handshakes for `secs` with `concurrency` at a time; returns one line:
    /// `handshakes_per_sec=<n> p50_ms=<t> p99_ms=<t> failed=<n>`.
    pub async fn run(&self, secs: u64, concurrency: usize) -> anyhow::Result<String> {
        let config = Arc::new(self.config()?);
        let deadline = Instant::now() + Duration::from_secs(secs);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let config = config.clone();
            let addr = self.addr;
            tasks.push(tokio::spawn(async move {
                let (mut times, mut failed) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match handshake(config.clone(), addr).await {
                        Ok(()) => times.push(t.elapsed()),
                        Err(_) => failed += 1,
                    }
                }
                (times, failed)
            }));
        }
        let (mut times, mut failed) = (Vec::new(), 0);
        for t in tasks {
            let (ts, f) = t.await?;
            times.extend(ts);
            failed += f;
        }
        let took = started.elapsed().as_secs_f64();
        times.sort();
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        Ok(format!(
            "handshakes={} handshakes_per_sec={:.0} p50_ms={:.3} p99_ms={:.3} failed={failed}",
            times.len(),
            times.len() as f64 / took,
            pct(0.5),
            pct(0.99)
        ))
    }

    fn config(&self) -> anyhow::Result<ClientConfig> {
        let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(self.cert)?)
            .collect::<Result<_, _>>()
            .context("--cert")?;
        let key = PrivateKeyDer::from_pem_slice(&read(self.key)?).context("--key")?;
        let mut roots = rustls::RootCertStore::empty();
        for root in CertificateDer::pem_slice_iter(&read(self.ca)?) {
            roots.add(root.context("--ca")?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = SpiffeServerVerifier::new(
            Arc::new(roots),
            Arc::new(Identity(self.identity.to_owned())),
            provider.clone(),
        );
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(chain, key)?;
        config.alpn_protocols = vec![Alpn::Http1.wire().to_vec()];
        // Every handshake a full one: the figure is what a new caller costs.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}

async fn handshake(config: Arc<ClientConfig>, addr: SocketAddr) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let _ = tcp.set_nodelay(true);
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await?;
    drop(tls);
    Ok(())
}
