//! Whether a certificate the CA issued earlier (and stored, e.g. in the webhook's
//! Secret) can stay, or must be issued again — and why.

use std::fmt;
use std::time::SystemTime;

use rcgen::KeyPair;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::authority::{Ca, timestamp};
use super::validity::Validity;
use super::verify::key_belongs_to;

/// The verdict on a stored certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Assessment {
    /// Good; to be renewed at `renew_at`.
    Current {
        /// When a third of its lifetime is left.
        renew_at: SystemTime,
    },
    /// To be issued again.
    Reissue(Reason),
}

/// Why a stored certificate is issued again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// There is none (no Secret, or no `tls.crt`/`tls.key`).
    Missing,
    /// The certificate or key cannot be read.
    Unreadable(String),
    /// The key is not the certificate's.
    KeyMismatch,
    /// Not issued by the current signing certificate for these names, or not valid now.
    NotValid(String),
    /// Less than a third of its lifetime is left.
    RenewalDue {
        /// When it expires.
        not_after: SystemTime,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("missing"),
            Self::Unreadable(e) => write!(f, "unreadable: {e}"),
            Self::KeyMismatch => f.write_str("the key is not the certificate's"),
            Self::NotValid(e) => write!(f, "not valid for this CA: {e}"),
            Self::RenewalDue { not_after } => write!(
                f,
                "a third of its lifetime is left (expires {})",
                timestamp(*not_after)
            ),
        }
    }
}

/// The verdict on the PEM certificate chain `cert` and key `key` (either absent) as a
/// server certificate for `names`, issued by `ca`, at `now`.
pub fn assess(
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
    ca: &Ca,
    names: &[String],
    now: SystemTime,
) -> Assessment {
    match judge(cert, key, ca, names, now) {
        Ok(renew_at) => Assessment::Current { renew_at },
        Err(reason) => Assessment::Reissue(reason),
    }
}

fn judge(
    cert: Option<&[u8]>,
    key: Option<&[u8]>,
    ca: &Ca,
    names: &[String],
    now: SystemTime,
) -> Result<SystemTime, Reason> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Err(Reason::Missing);
    };
    let unreadable = |what: &str, e: &dyn fmt::Display| Reason::Unreadable(format!("{what}: {e}"));
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable("tls.crt", &e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| Reason::Unreadable("tls.crt: no CERTIFICATE block".into()))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| unreadable("tls.key", &e))?;
    let key = KeyPair::try_from(&key).map_err(|e| unreadable("tls.key", &e))?;
    if !key_belongs_to(&key, leaf).map_err(|e| unreadable("tls.crt", &e))? {
        return Err(Reason::KeyMismatch);
    }
    ca.verify_issued(&chain, names, now)
        .map_err(|e| Reason::NotValid(e.to_string()))?;
    let validity = Validity::of(leaf).map_err(|e| unreadable("tls.crt", &e))?;
    if validity.renewal_due(now) {
        return Err(Reason::RenewalDue {
            not_after: validity.not_after,
        });
    }
    Ok(validity.renew_at())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::ca::LeafRequest;

    const DAY: Duration = Duration::from_secs(86_400);

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn names() -> Vec<String> {
        vec![
            "braid-injector.braid-system.svc".into(),
            "braid-injector.braid-system.svc.cluster.local".into(),
        ]
    }

    fn issued(ca: &Ca) -> crate::ca::IssuedCert {
        ca.issue(
            &LeafRequest {
                names: names(),
                lifetime: 90 * DAY,
            },
            now(),
        )
        .unwrap()
    }

    fn verdict(ca: &Ca, cert: &str, key: &str, at: SystemTime) -> Assessment {
        assess(
            Some(cert.as_bytes()),
            Some(key.as_bytes()),
            ca,
            &names(),
            at,
        )
    }

    #[test]
    fn a_fresh_certificate_stays_until_a_third_is_left() {
        let ca = Ca::generate_root(now()).unwrap();
        let leaf = issued(&ca);
        let renew_at = leaf.validity.renew_at();
        assert_eq!(
            verdict(&ca, &leaf.chain_pem, &leaf.key_pem, now()),
            Assessment::Current { renew_at }
        );
        assert_eq!(
            verdict(&ca, &leaf.chain_pem, &leaf.key_pem, renew_at),
            Assessment::Reissue(Reason::RenewalDue {
                not_after: leaf.validity.not_after
            })
        );
        // Expired: not valid at all.
        assert!(matches!(
            verdict(&ca, &leaf.chain_pem, &leaf.key_pem, now() + 91 * DAY),
            Assessment::Reissue(Reason::NotValid(_))
        ));
    }

    #[test]
    fn missing_unreadable_mismatched_or_foreign_certificates_are_replaced() {
        let ca = Ca::generate_root(now()).unwrap();
        let leaf = issued(&ca);
        let other = issued(&ca);
        assert_eq!(
            assess(None, Some(b"k"), &ca, &names(), now()),
            Assessment::Reissue(Reason::Missing)
        );
        assert!(matches!(
            verdict(&ca, "junk", &leaf.key_pem, now()),
            Assessment::Reissue(Reason::Unreadable(_))
        ));
        assert!(matches!(
            verdict(&ca, &leaf.chain_pem, "junk", now()),
            Assessment::Reissue(Reason::Unreadable(_))
        ));
        assert_eq!(
            verdict(&ca, &leaf.chain_pem, &other.key_pem, now()),
            Assessment::Reissue(Reason::KeyMismatch)
        );
        let foreign = issued(&Ca::generate_root(now()).unwrap());
        let Assessment::Reissue(Reason::NotValid(why)) =
            verdict(&ca, &foreign.chain_pem, &foreign.key_pem, now())
        else {
            panic!("a certificate of another CA must be replaced");
        };
        assert!(why.contains("BadSignature"), "{why}");
        // Issued for other names.
        let narrow = ca
            .issue(
                &LeafRequest {
                    names: names()[..1].to_vec(),
                    lifetime: 90 * DAY,
                },
                now(),
            )
            .unwrap();
        assert!(matches!(
            verdict(&ca, &narrow.chain_pem, &narrow.key_pem, now()),
            Assessment::Reissue(Reason::NotValid(_))
        ));
    }

    #[test]
    fn reasons_read_well() {
        assert_eq!(Reason::Missing.to_string(), "missing");
        assert!(
            Reason::RenewalDue {
                not_after: UNIX_EPOCH + Duration::from_secs(1_800_000_000)
            }
            .to_string()
            .contains("2027-01-15T08:00:00Z")
        );
    }
}
