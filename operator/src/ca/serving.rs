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

use super::authority::{Ca, CaEnding, CaError, IssuedCert, LeafRequest, timestamp};
use super::serving_cert::{Serving, SwappableCert};
use super::validity::Validity;

/// How long the operator's serving certificate is valid. Short, because renewing costs
/// nothing (local signing, see the module docs) and a leaked key is then useful for a
/// day at most; renewed after 16 h, so even a renewal that failed for hours has time to
/// succeed before proxies would see an expired certificate.
pub const SERVING_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A failed renewal is tried again after this long.
pub const RETRY: Duration = Duration::from_secs(60);
/// The longest single wait, so a clock that jumps is noticed within this long; also
/// how often a CA too close to its end is reported.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// The chain and key of `issued`, ready to serve.
pub fn certified(issued: &IssuedCert) -> Result<CertifiedKey, CaError> {
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(issued.key.clone_key());
    let signer =
        rustls::crypto::ring::sign::any_supported_type(&key).map_err(CaError::ReadBackKey)?;
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

    /// Issues the first certificate for `names` from the CA in force and renews it in a
    /// task of its own until `stop` fires: what a replica serves unless told otherwise.
    pub fn spawn(
        ca: &watch::Receiver<Arc<Ca>>,
        names: &[String],
        stop: CancellationToken,
    ) -> Result<Serving, CaError> {
        let current = ca.borrow().clone();
        let (rotation, cert) = Self::start(&current, names, SERVING_LIFETIME, SystemTime::now())?;
        tokio::spawn(rotation.run(ca.clone(), stop));
        Ok(Serving {
            cert,
            trust_pem: current.trust_bundle().pem().to_string(),
        })
    }

    /// Renews when a third of the lifetime is left, and whenever `ca` changes, until
    /// `stop` fires (see [`step`]).
    pub async fn run(mut self, mut ca: watch::Receiver<Arc<Ca>>, stop: CancellationToken) {
        let mut wake = Wake::Issued;
        loop {
            let now = SystemTime::now();
            let current = ca.borrow_and_update().clone();
            let fresh = current.fresh_leaf(self.request.lifetime, now);
            let wait = match step(self.validity, fresh, wake, now) {
                Step::Wait(wait) => wait,
                Step::CaEnding(ending) => {
                    tracing::error!(
                        served_not_after = %timestamp(self.validity.not_after),
                        "serving certificate not renewed: {ending}"
                    );
                    MAX_WAIT
                }
                Step::Renew => match self.renew(&current, now) {
                    Ok(()) => {
                        wake = Wake::Issued;
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "serving certificate not renewed; retrying");
                        // A new CA's certificate is still owed, however short it is.
                        if wake != Wake::CaChanged {
                            wake = Wake::Retry;
                        }
                        RETRY
                    }
                },
            };
            wake = tokio::select! {
                _ = stop.cancelled() => return,
                changed = ca.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    Wake::CaChanged
                }
                _ = tokio::time::sleep(wait) => match wake {
                    Wake::CaChanged | Wake::Retry => wake,
                    Wake::Issued | Wake::Timer => Wake::Timer,
                },
            };
        }
    }
}

/// Why the rotation is deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// The certificate served was issued just now.
    Issued,
    /// A wait ran out.
    Timer,
    /// The CA changed: the certificate served is another CA's.
    CaChanged,
    /// The last renewal failed.
    Retry,
}

/// What the rotation does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is due: look again after this long (at most [`MAX_WAIT`], so a clock that
    /// jumps is noticed).
    Wait(Duration),
    /// Issue a new certificate now.
    Renew,
    /// Renewal is due, but a certificate issued now would be due at once (see
    /// [`CaEnding`]): keep the one served, say so, and look again after [`MAX_WAIT`]
    /// rather than issuing one after another.
    CaEnding(CaEnding),
}

/// Decides at `now`, woken by `wake`, about the served certificate (valid `served`),
/// given what one issued now would be (`fresh`). A new CA is always renewed for,
/// however short the result; otherwise nothing is issued that would be due at once.
pub fn step(
    served: Validity,
    fresh: Result<Validity, CaEnding>,
    wake: Wake,
    now: SystemTime,
) -> Step {
    match wake {
        Wake::CaChanged => return Step::Renew,
        Wake::Retry => {}
        Wake::Issued | Wake::Timer if !served.renewal_due(now) => {
            let wait = served
                .renew_at()
                .duration_since(now)
                .unwrap_or_default()
                .min(MAX_WAIT);
            return Step::Wait(wait);
        }
        // Issued and already due: capped at the signer's end, which is too near.
        Wake::Issued => {
            return Step::CaEnding(fresh.err().unwrap_or(CaEnding {
                not_after: served.not_after,
            }));
        }
        Wake::Timer => {}
    }
    match fresh {
        Ok(_) => Step::Renew,
        Err(ending) => Step::CaEnding(ending),
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

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn renewal_waits_until_due_and_never_repeats_a_certificate_due_at_once() {
        let ca = Ca::generate_root(now()).unwrap();
        let (rotation, _) = ServingRotation::start(
            &ca,
            &["braid-operator.braid-system.svc".into()],
            SERVING_LIFETIME,
            now(),
        )
        .unwrap();
        let served = rotation.validity();
        let fresh = |at| ca.fresh_leaf(SERVING_LIFETIME, at);
        // Not due: wait, at most MAX_WAIT at a time.
        assert_eq!(
            step(served, fresh(now()), Wake::Issued, now()),
            Step::Wait(MAX_WAIT)
        );
        let near = served.renew_at() - MINUTE;
        assert_eq!(
            step(served, fresh(near), Wake::Timer, near),
            Step::Wait(MINUTE)
        );
        // Due, or the CA changed, or the last try failed: renew.
        let due = served.renew_at();
        assert_eq!(step(served, fresh(due), Wake::Timer, due), Step::Renew);
        assert_eq!(
            step(served, fresh(now()), Wake::CaChanged, now()),
            Step::Renew
        );
        assert_eq!(step(served, fresh(now()), Wake::Retry, now()), Step::Renew);

        // The signing certificate about to end: a new certificate would be due at once.
        let end = ca.signing_validity().not_after;
        let late = end - MINUTE;
        let ending = Step::CaEnding(CaEnding { not_after: end });
        let (short, _) = ServingRotation::start(
            &ca,
            &["braid-operator.braid-system.svc".into()],
            SERVING_LIFETIME,
            late,
        )
        .unwrap();
        let short = short.validity();
        assert_eq!(short.not_after, end, "capped at the signer's end");
        assert!(short.renewal_due(late), "due as soon as issued");
        // Just issued, or woken again, or retrying: no new key, no new certificate.
        for wake in [Wake::Issued, Wake::Timer, Wake::Retry] {
            assert_eq!(step(short, fresh(late), wake, late), ending, "{wake:?}");
        }
        // Even when the estimate of a fresh one disagrees by a rounded second.
        let rounded = Ok(Validity {
            not_before: late,
            not_after: end + MINUTE,
        });
        assert_eq!(
            step(short, rounded, Wake::Issued, late),
            ending,
            "issued just now and already due"
        );
        // Past its end too.
        assert_eq!(
            step(short, fresh(end + MINUTE), Wake::Timer, end + MINUTE),
            ending
        );
        // A new CA is renewed for, however short.
        assert_eq!(step(short, fresh(late), Wake::CaChanged, late), Step::Renew);
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
