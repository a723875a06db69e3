//! When the certificates of a PEM bundle expire.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a PEM bundle holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Bundle {
    /// Certificates, by the end of their validity.
    Certificates(Vec<SystemTime>),
    /// Not a bundle of certificates, and why.
    Unreadable(String),
}

/// The end of validity of each CERTIFICATE of `pem`.
pub fn expiries(pem: &[u8]) -> Bundle {
    let mut ends = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = match block {
            Ok(b) => b,
            Err(e) => return Bundle::Unreadable(format!("not PEM: {e}")),
        };
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = match block.parse_x509() {
            Ok(c) => c,
            Err(e) => {
                return Bundle::Unreadable(format!("a CERTIFICATE block does not parse: {e}"));
            }
        };
        let secs = cert.validity().not_after.timestamp();
        ends.push(match u64::try_from(secs) {
            Ok(s) => UNIX_EPOCH + Duration::from_secs(s),
            Err(_) => UNIX_EPOCH,
        });
    }
    if ends.is_empty() {
        return Bundle::Unreadable("no CERTIFICATE block".into());
    }
    Bundle::Certificates(ends)
}

/// `t` as RFC 3339 (UTC).
pub fn timestamp(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t).map_or_else(|_| "?".to_owned(), |t| t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_gives_each_certificates_end_and_junk_says_why() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 1, 2);
        let pem = params.self_signed(&key).unwrap().pem();
        let twice = format!("{pem}{pem}");
        let Bundle::Certificates(ends) = expiries(twice.as_bytes()) else {
            panic!("not read")
        };
        assert_eq!(ends.len(), 2);
        assert_eq!(timestamp(ends[0]), "2031-01-02T00:00:00Z");
        assert_eq!(
            expiries(b""),
            Bundle::Unreadable("no CERTIFICATE block".into())
        );
        assert!(matches!(
            expiries(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            Bundle::Unreadable(_)
        ));
    }
}
