//! The certificate in force, swapped whole when a renewal lands.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use braid_api::control::CertificateResponse;

/// A certificate with its key and the roots that verify peers.
pub struct Certified {
    /// The SPIFFE identity it certifies.
    pub identity: String,
    /// The certificate, then the CA's chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The roots that verify peers.
    pub trust: Vec<CertificateDer<'static>>,
    /// When it stops being valid.
    pub not_after: SystemTime,
}

impl std::fmt::Debug for Certified {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certified")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl Certified {
    /// The operator's `answer` for the key `key`; an error names what is wrong with it.
    pub fn from_answer(
        answer: &CertificateResponse,
        key: PrivatePkcs8KeyDer<'static>,
    ) -> Result<Self, String> {
        let pems = |text: &str, what: &str| {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(text.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("{what}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("{what}: no certificate"));
            }
            Ok(certs)
        };
        Ok(Self {
            identity: answer.identity.clone(),
            chain: pems(&answer.chain, "chain")?,
            key,
            trust: pems(&answer.trust_bundle, "trust bundle")?,
            not_after: UNIX_EPOCH + Duration::from_secs(answer.not_after_unix),
        })
    }
}

/// The certificate in force, if any yet.
#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Certified>,
}

impl IdentityStore {
    /// The certificate in force.
    pub fn current(&self) -> Option<std::sync::Arc<Certified>> {
        self.current.load_full()
    }

    /// Puts `certified` in force; connections made from now on present it.
    pub fn install(&self, certified: Certified) {
        self.current.store(Some(std::sync::Arc::new(certified)));
    }
}
