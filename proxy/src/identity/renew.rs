//! Getting and renewing the certificate: a new key each time, a CSR to the operator,
//! renewal at half the remaining lifetime, and on failure retries with backoff while
//! the certificate in force stays (a failed renewal never drops a valid one).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls_pki_types::PrivatePkcs8KeyDer;
use std::future::Future;
use std::pin::Pin;
use tokio_util::sync::CancellationToken;

use super::certified::{Certified, CertifiedError, RunsAs};
use super::metrics::IdentityMetrics;
use super::store::IdentityStore;
use crate::backoff::Backoff;
use braid_api::control::CertificateResponse;

/// Renewal never waits less than this (a certificate about to expire is renewed at once,
/// but not in a tight loop).
const MIN_WAIT: Duration = Duration::from_secs(1);

/// A future a [`Certifier`] returns.
pub type Certifying<'a, E> =
    Pin<Box<dyn Future<Output = Result<CertificateResponse, E>> + Send + 'a>>;

/// Who signs the CSR: the operator (or a test's stand-in).
pub trait Certifier: Send + Sync + 'static {
    /// Why it did not sign.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Has `csr_pem` signed.
    fn certify(&self, csr_pem: String) -> Certifying<'_, Self::Error>;
}

/// Why one attempt at a certificate failed (the one in force stays).
#[derive(Debug, thiserror::Error)]
enum RenewError<E: std::error::Error + 'static> {
    /// The key or the CSR could not be made.
    #[error("making the key and the CSR: {0}")]
    Request(#[source] rcgen::Error),
    /// The certifier did not sign (its own message).
    #[error(transparent)]
    Certify(E),
    /// The answer is unusable: which field, and why.
    #[error(transparent)]
    Answer(CertifiedError),
}

/// A new P-256 key and a CSR signed by it.
fn new_request() -> Result<(PrivatePkcs8KeyDer<'static>, String), rcgen::Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())?;
    Ok((PrivatePkcs8KeyDer::from(key.serialize_der()), csr))
}

/// One attempt: a new key, its CSR signed by `certifier`, and the answer checked (it
/// must name `runs_as`).
async fn certify_once<C: Certifier>(
    certifier: &C,
    runs_as: Option<&RunsAs>,
) -> Result<Certified, RenewError<C::Error>> {
    let (key, csr) = new_request().map_err(RenewError::Request)?;
    let answer = certifier.certify(csr).await.map_err(RenewError::Certify)?;
    Certified::from_answer(&answer, key, runs_as).map_err(RenewError::Answer)
}

/// When to renew a certificate valid until `not_after`, at `now`: half its remaining life.
fn renew_in(not_after: SystemTime, now: SystemTime) -> Duration {
    not_after
        .duration_since(now)
        .map_or(Duration::ZERO, |left| left / 2)
        .max(MIN_WAIT)
}

/// Keeps `store` holding a valid certificate until `stop`; a certificate that does not
/// name `runs_as` is refused like a failed renewal.
pub async fn renew<C: Certifier>(
    certifier: Arc<C>,
    runs_as: Option<RunsAs>,
    store: Arc<IdentityStore>,
    metrics: IdentityMetrics,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::default();
    // A certificate already in force (handed over by the proxy this one replaced) is
    // renewed at half its remaining life, like one this loop got.
    if let Some(held) = store.current() {
        metrics.expiry(held.not_after);
        let wait = renew_in(held.not_after, SystemTime::now());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    loop {
        let wait = match certify_once(&*certifier, runs_as.as_ref()).await {
            Ok(certified) => {
                backoff.reset();
                let wait = renew_in(certified.not_after, SystemTime::now());
                tracing::info!(identity = %certified.identity, renew_in_secs = wait.as_secs(), "certificate in force");
                metrics.expiry(certified.not_after);
                store.install(certified);
                wait
            }
            Err(e) => {
                let wait = backoff.next_delay();
                tracing::warn!(error = %e, retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), held = store.current().is_some(), "no certificate from the operator; keeping the one in force");
                wait
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_comes_at_half_the_remaining_life() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_in(now + Duration::from_secs(86_400), now),
            Duration::from_secs(43_200)
        );
        assert_eq!(renew_in(now, now), MIN_WAIT);
        assert_eq!(renew_in(now - Duration::from_secs(5), now), MIN_WAIT);
    }

    /// Signs the first CSR (for shop/payments, valid `secs` from now), then fails.
    struct Once(std::sync::Mutex<u32>, u64);

    /// The stand-in's failure.
    #[derive(Debug, thiserror::Error)]
    #[error("the operator is away")]
    struct Away;

    impl Certifier for Once {
        type Error = Away;

        fn certify(&self, csr: String) -> Certifying<'_, Away> {
            Box::pin(async move {
                let mut calls = self.0.lock().unwrap();
                *calls += 1;
                if *calls > 1 {
                    return Err(Away);
                }
                let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
                let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
                ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                let root = ca.self_signed(&ca_key).unwrap();
                let issuer = rcgen::Issuer::new(ca, ca_key);
                let identity = "spiffe://cluster.local/ns/shop/sa/payments";
                let mut csr = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
                csr.params.subject_alt_names =
                    vec![rcgen::SanType::URI(identity.try_into().unwrap())];
                let not_after = SystemTime::now() + Duration::from_secs(self.1);
                csr.params.not_after = not_after.into();
                let leaf = csr.signed_by(&issuer).unwrap();
                Ok(CertificateResponse {
                    identity: identity.into(),
                    chain: leaf.pem(),
                    not_after: String::new(),
                    not_after_unix: 0,
                    trust_bundle: root.pem(),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_failed_renewal_keeps_the_certificate_in_force() {
        let certifier = Arc::new(Once(std::sync::Mutex::new(0), 2));
        let store = Arc::new(IdentityStore::default());
        let stop = CancellationToken::new();
        let runs_as = RunsAs {
            namespace: "shop".into(),
            service_account: Some("payments".into()),
        };
        let task = tokio::spawn(renew(
            certifier.clone(),
            Some(runs_as),
            store.clone(),
            IdentityMetrics::register(&mut prometheus_client::registry::Registry::default()),
            stop.clone(),
        ));
        // Renewed at half-life (after 1 s), which fails.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while *certifier.0.lock().unwrap() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "never renewed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let held = store.current().unwrap();
        assert_eq!(held.identity, "spiffe://cluster.local/ns/shop/sa/payments");
        assert_eq!(held.chain.len(), 1);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_attempt_says_which_step_failed() {
        let certifier = Once(std::sync::Mutex::new(0), 3600);
        let elsewhere = RunsAs {
            namespace: "billing".into(),
            service_account: Some("payments".into()),
        };
        let Err(RenewError::Answer(e)) = certify_once(&certifier, Some(&elsewhere)).await else {
            panic!("a certificate for another namespace was taken");
        };
        assert!(e.to_string().contains("billing"), "{e}");
        let Err(e) = certify_once(&certifier, None).await else {
            panic!("the stand-in signs once");
        };
        assert!(matches!(e, RenewError::Certify(Away)), "{e:?}");
        assert_eq!(e.to_string(), "the operator is away");
    }

    #[test]
    fn each_request_has_a_new_p256_key() {
        let (a, csr_a) = new_request().unwrap();
        let (b, _) = new_request().unwrap();
        assert_ne!(a.secret_pkcs8_der(), b.secret_pkcs8_der());
        assert!(csr_a.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }
}
