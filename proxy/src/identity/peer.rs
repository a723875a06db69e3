//! The SPIFFE identity a certificate carries.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The `spiffe://` URI SAN of the DER certificate `der`, if it has exactly one.
pub fn spiffe_id(der: &[u8]) -> Option<String> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let mut uris = san.value.general_names.iter().filter_map(|n| match n {
        GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
        _ => None,
    });
    let first = uris.next()?;
    // Two identities in one certificate would make "who is this" ambiguous.
    uris.next().is_none().then(|| first.to_string())
}
