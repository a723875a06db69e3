//! What the CA Secret holds: the signing certificate (chain), its key, and the trust
//! bundle, as PEM under the keys cert-manager uses for a CA Secret.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// The signing certificate, PEM, first in the file; an administrator's intermediate may
/// be followed by the certificates up to its root.
pub const SIGNING_CERT_KEY: &str = "tls.crt";
/// The signing certificate's private key, PEM (PKCS#8).
pub const SIGNING_KEY_KEY: &str = "tls.key";
/// The trust bundle: one or more root certificates, PEM. More than one while a root is
/// being rotated: the new root is added here first, signing moves to it, then the old
/// one is removed.
pub const TRUST_BUNDLE_KEY: &str = "ca.crt";

/// A key of the CA Secret is missing or unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("key {key}: {problem}")]
pub struct MaterialError {
    /// The Secret's key ([`SIGNING_CERT_KEY`], [`SIGNING_KEY_KEY`] or [`TRUST_BUNDLE_KEY`]).
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl MaterialError {
    /// An error about `key`.
    pub fn new(key: &'static str, problem: impl Into<String>) -> Self {
        Self {
            key,
            problem: problem.into(),
        }
    }
}

/// The CA Secret's contents, as stored (PEM text, byte for byte), so what the operator
/// writes back or compares is exactly what is there.
#[derive(Clone, PartialEq, Eq)]
pub struct CaMaterial {
    /// `tls.crt`.
    pub signing_chain_pem: String,
    /// `tls.key`.
    pub signing_key_pem: String,
    /// `ca.crt`.
    pub trust_bundle: TrustBundle,
}

impl fmt::Debug for CaMaterial {
    // Never print the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaMaterial")
            .field("signing_chain_pem", &self.signing_chain_pem)
            .field("signing_key_pem", &"<redacted>")
            .field("trust_bundle", &self.trust_bundle)
            .finish()
    }
}

impl CaMaterial {
    /// Reads a Secret's `data`: every key present, UTF-8 text, the bundle made of
    /// certificates. Whether the certificate and key fit together is [`super::Ca`]'s
    /// business.
    pub fn from_secret_data(
        data: Option<&BTreeMap<String, ByteString>>,
    ) -> Result<Self, MaterialError> {
        let text = |key: &'static str| -> Result<String, MaterialError> {
            let bytes = data
                .and_then(|d| d.get(key))
                .ok_or_else(|| MaterialError::new(key, "missing"))?;
            String::from_utf8(bytes.0.clone())
                .map_err(|_| MaterialError::new(key, "not PEM text (not UTF-8)"))
        };
        Ok(Self {
            signing_chain_pem: text(SIGNING_CERT_KEY)?,
            signing_key_pem: text(SIGNING_KEY_KEY)?,
            trust_bundle: TrustBundle::parse(&text(TRUST_BUNDLE_KEY)?)?,
        })
    }

    /// The Secret `data` holding this material.
    pub fn to_secret_data(&self) -> BTreeMap<String, ByteString> {
        [
            (SIGNING_CERT_KEY, &self.signing_chain_pem),
            (SIGNING_KEY_KEY, &self.signing_key_pem),
            (TRUST_BUNDLE_KEY, &self.trust_bundle.pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
        .collect()
    }
}

/// The root certificates that verify whatever the CA signs: what proxies and the API
/// server (as `caBundle`) trust. Holds at least one certificate.
#[derive(Clone, PartialEq, Eq)]
pub struct TrustBundle {
    pem: String,
    certificates: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustBundle({} certificates)", self.certificates.len())
    }
}

impl TrustBundle {
    /// The bundle in `pem` (the `ca.crt` key): one or more CERTIFICATE blocks.
    pub fn parse(pem: &str) -> Result<Self, MaterialError> {
        Ok(Self {
            certificates: certificates(TRUST_BUNDLE_KEY, pem)?,
            pem: pem.to_string(),
        })
    }

    /// As PEM, exactly as stored.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Its certificates, in order.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }
}

/// The CERTIFICATE blocks of `pem`, read from the Secret's `key`: at least one.
pub fn certificates(
    key: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, MaterialError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| MaterialError::new(key, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(MaterialError::new(key, "no CERTIFICATE block"));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(entries: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn every_key_is_required_and_named() {
        let err = CaMaterial::from_secret_data(None).unwrap_err();
        assert_eq!(err, MaterialError::new(SIGNING_CERT_KEY, "missing"));
        let partial = data(&[(SIGNING_CERT_KEY, b"x"), (SIGNING_KEY_KEY, b"y")]);
        let err = CaMaterial::from_secret_data(Some(&partial)).unwrap_err();
        assert_eq!(err.key, TRUST_BUNDLE_KEY);
        assert_eq!(err.to_string(), "key ca.crt: missing");
    }

    #[test]
    fn a_bundle_without_certificates_is_refused() {
        let d = data(&[
            (SIGNING_CERT_KEY, b"x"),
            (SIGNING_KEY_KEY, b"y"),
            (TRUST_BUNDLE_KEY, b"hello"),
        ]);
        let err = CaMaterial::from_secret_data(Some(&d)).unwrap_err();
        assert_eq!(
            err,
            MaterialError::new(TRUST_BUNDLE_KEY, "no CERTIFICATE block")
        );
        let d = data(&[
            (SIGNING_CERT_KEY, b"x"),
            (SIGNING_KEY_KEY, &[0xff, 0xfe]),
            (TRUST_BUNDLE_KEY, b"x"),
        ]);
        assert_eq!(
            CaMaterial::from_secret_data(Some(&d)).unwrap_err().key,
            SIGNING_KEY_KEY
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let m = CaMaterial {
            signing_chain_pem: "cert".into(),
            signing_key_pem: "SECRET".into(),
            trust_bundle: TrustBundle {
                pem: String::new(),
                certificates: vec![],
            },
        };
        assert!(!format!("{m:?}").contains("SECRET"));
    }
}
