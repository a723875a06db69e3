//! When a certificate is valid, and when to renew it: a pure function of the time.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{ASN1Time, X509Certificate};

use super::verify::{UnreadableCertificate, parse};

/// A certificate's validity period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Valid from.
    pub not_before: SystemTime,
    /// Valid until.
    pub not_after: SystemTime,
}

impl Validity {
    /// The validity of `cert` (DER).
    pub fn of(cert: &CertificateDer<'_>) -> Result<Self, UnreadableCertificate> {
        Ok(Self::of_parsed(&parse(cert)?))
    }

    /// The validity of a parsed certificate.
    pub fn of_parsed(x509: &X509Certificate<'_>) -> Self {
        let v = x509.validity();
        Self {
            not_before: system_time(v.not_before),
            not_after: system_time(v.not_after),
        }
    }

    /// The whole period (zero when it ends before it starts).
    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }

    /// When a third of the lifetime is left: late enough not to replace certificates
    /// needlessly, early enough that a renewal that keeps failing leaves a third of the
    /// lifetime for someone to notice and fix it.
    pub fn renew_at(&self) -> SystemTime {
        self.not_before + self.lifetime() * 2 / 3
    }

    /// Whether it is time to renew at `now`.
    pub fn renewal_due(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    /// Whether `now` falls within the period.
    pub fn contains(&self, now: SystemTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

fn system_time(t: ASN1Time) -> SystemTime {
    let secs = t.timestamp();
    match u64::try_from(secs) {
        Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
        Err(_) => UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn at(days: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000) + DAY * days as u32
    }

    #[test]
    fn renewal_is_due_when_a_third_is_left() {
        let v = Validity {
            not_before: at(0),
            not_after: at(90),
        };
        assert_eq!(v.lifetime(), DAY * 90);
        assert_eq!(v.renew_at(), at(60));
        assert!(!v.renewal_due(at(0)));
        assert!(!v.renewal_due(at(60) - Duration::from_secs(1)));
        assert!(v.renewal_due(at(60)));
        assert!(v.renewal_due(at(91)), "expired: certainly due");
        assert!(v.contains(at(90)) && !v.contains(at(91)));
    }

    #[test]
    fn a_backwards_period_is_due_at_once() {
        let v = Validity {
            not_before: at(10),
            not_after: at(0),
        };
        assert_eq!(v.lifetime(), Duration::ZERO);
        assert!(v.renewal_due(at(10)));
        assert!(!v.contains(at(5)));
    }
}
