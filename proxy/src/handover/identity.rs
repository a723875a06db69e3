//! The mesh identity as it is handed over: DER, base64 in the JSON, and checked again by
//! the successor as any certificate it installs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};

use super::wire::PassedIdentity;
use crate::identity::{Certified, CertifiedError};

/// `certified`, to hand over.
pub fn pass(certified: &Certified) -> PassedIdentity {
    let b64 = |der: &[u8]| STANDARD.encode(der);
    PassedIdentity {
        chain: certified.chain.iter().map(|c| b64(c)).collect(),
        key: b64(certified.key.secret_pkcs8_der()),
        trust: certified.trust.iter().map(|c| b64(c)).collect(),
    }
}

/// The identity handed over, checked as [`Certified`] checks any: its leaf names one
/// SPIFFE identity and matches the key.
pub fn receive(passed: &PassedIdentity) -> Result<Certified, CertifiedError> {
    let der = |what: &str, text: &str| {
        STANDARD.decode(text).map_err(|e| CertifiedError::Pem {
            what: format!("the handed-over {what}"),
            message: e.to_string(),
        })
    };
    let certs = |what: &str, list: &[String]| {
        list.iter()
            .map(|c| der(what, c).map(CertificateDer::from))
            .collect::<Result<Vec<_>, _>>()
    };
    Certified::from_parts(
        certs("chain", &passed.chain)?,
        PrivatePkcs8KeyDer::from(der("key", &passed.key)?),
        certs("trust bundle", &passed.trust)?,
        "the identity handed over",
    )
}
