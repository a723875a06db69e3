//! Each replica's own certificate for the config stream, issued from the CA at start-up
//! and replaced before it expires — or at once when the CA changes — by swapping what
//! the TLS server presents, so open streams are not dropped.
//!
//! Every replica signs its own: the CA is in memory, so issuing is local, needs no API
//! call and no coordination, and no serving key is ever stored.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::authority::{Ca, CaError, IssuedCert, LeafRequest};
use super::validity::Validity;
use crate::stream::tls::SwappableCert;

/// How long the operator's serving certificate is valid. Short, because renewing costs
/// nothing (local signing, see the module docs) and a leaked key is then useful for a
/// day at most; renewed after 16 h, so even a renewal that failed for hours has time to
/// succeed before proxies would see an expired certificate.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A failed renewal is tried again after this long.
const RETRY: Duration = Duration::from_secs(60);
/// The longest single wait, so a clock that jumps is noticed within this long.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The chain and key of `issued`, ready to serve.
pub fn certified(issued: &IssuedCert) -> Result<CertifiedKey, CaError> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(issued.key.clone_key());
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| CaError::ReadBack(e.to_string()))?;
    Ok(CertifiedKey::new(issued.chain.clone(), signer))
}

/// Keeps the served certificate issued by the current CA and within its lifetime.
pub struct ServingRotation {
    request: LeafRequest,
    cert: Arc<SwappableCert>,
    validity: Validity,
}

impl ServingRotation {
    /// Issues the first certificate for `names` (DNS names or IPs) from `ca`; the
    /// returned resolver serves it.
    pub fn start(
        ca: &Ca,
        names: &[String],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(Self, Arc<SwappableCert>), CaError> {
        let request = LeafRequest {
            names: names.to_vec(),
            lifetime,
        };
        let issued = ca.issue(&request, now)?;
        let cert = Arc::new(SwappableCert::new(certified(&issued)?));
        let rotation = Self {
            request,
            cert: cert.clone(),
            validity: issued.validity,
        };
        Ok((rotation, cert))
    }

    /// The current certificate's validity.
    pub fn validity(&self) -> Validity {
        self.validity
    }

    /// Issues a new certificate from `ca` and serves it from the next handshake on.
    pub fn renew(&mut self, ca: &Ca, now: SystemTime) -> Result<(), CaError> {
        let issued = ca.issue(&self.request, now)?;
        self.cert.swap(certified(&issued)?);
        self.validity = issued.validity;
        tracing::info!(not_after = ?issued.validity.not_after, "serving certificate renewed");
        Ok(())
    }

    /// Renews when a third of the lifetime is left, and whenever `ca` changes, until
    /// `stop` fires.
    pub async fn run(mut self, mut ca: watch::Receiver<Arc<Ca>>, stop: CancellationToken) {
        let mut retry = false;
        loop {
            let wait = if retry {
                RETRY
            } else {
                self.validity
                    .renew_at()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .min(MAX_WAIT)
            };
            let ca_changed = tokio::select! {
                _ = stop.cancelled() => return,
                changed = ca.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    true
                }
                _ = tokio::time::sleep(wait) => false,
            };
            let now = SystemTime::now();
            if !ca_changed && !retry && !self.validity.renewal_due(now) {
                continue;
            }
            let current = ca.borrow_and_update().clone();
            retry = match self.renew(&current, now) {
                Ok(()) => false,
                Err(e) => {
                    tracing::error!(error = %e, "serving certificate not renewed; retrying");
                    true
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::ca::verify::verify_server_chain;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    #[test]
    fn a_renewal_swaps_what_is_served() {
        let ca = Ca::generate_root(now()).unwrap();
        let names = vec!["braid-operator.braid-system.svc".to_string()];
        let (mut rotation, served) =
            ServingRotation::start(&ca, &names, SERVING_LIFETIME, now()).unwrap();
        let first = served.current();
        verify_server_chain(
            ca.trust_bundle().certificates(),
            &first.cert,
            &names[0],
            now(),
        )
        .unwrap();
        assert_eq!(
            rotation.validity().renew_at(),
            now() + Duration::from_secs(57_500),
            "two thirds of 24 h 5 min (the skew allowance), counted from 5 min ago"
        );

        // A new CA: what is served next is the new CA's.
        let next = Ca::generate_root(now()).unwrap();
        let later = now() + Duration::from_secs(3600);
        rotation.renew(&next, later).unwrap();
        let second = served.current();
        assert_ne!(first.cert[0], second.cert[0]);
        verify_server_chain(
            next.trust_bundle().certificates(),
            &second.cert,
            &names[0],
            later,
        )
        .unwrap();
        assert!(
            verify_server_chain(
                ca.trust_bundle().certificates(),
                &second.cert,
                &names[0],
                later
            )
            .is_err()
        );
    }
}
