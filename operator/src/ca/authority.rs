//! The CA itself: a signing certificate and key that issue leaf certificates, and the
//! trust bundle that verifies them. Pure: no I/O, the time is an argument.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::material::{
    CaMaterial, MaterialError, SIGNING_CERT_KEY, SIGNING_KEY_KEY, TRUST_BUNDLE_KEY, TrustBundle,
    certificates,
};
use super::validity::Validity;
use super::verify::{ChainError, UnreadableCertificate, key_belongs_to, verify_server_chain};

/// How long a root the operator creates is valid: long, because replacing a root means
/// redistributing trust to every proxy and the API server.
pub const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Issued certificates start this much before they are made, so a node whose clock is a
/// little behind still accepts them.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);
/// The root's subject.
pub const ROOT_COMMON_NAME: &str = "braid root CA";
/// The name the start-up probe certificate is issued for (never served).
const PROBE_NAME: &str = "probe.braid-ca.invalid";

/// A certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A requested name is neither an IP address nor a DNS name.
    #[error("{name:?} is neither an IP address nor a DNS name")]
    BadName {
        /// The name.
        name: String,
    },
    /// A certificate was asked for no name at all.
    #[error("a certificate needs at least one name")]
    NoNames,
    /// Key generation or signing failed.
    #[error("signing: {0}")]
    Sign(#[from] rcgen::Error),
    /// A certificate just signed could not be read back (a bug).
    #[error("reading back a certificate just signed: {0}")]
    ReadBack(#[from] UnreadableCertificate),
    /// The trust bundle just built could not be read back (a bug).
    #[error("reading back the trust bundle just built: {0}")]
    ReadBackBundle(#[source] MaterialError),
    /// A key just generated cannot sign (a bug).
    #[error("a key just generated cannot sign: {0}")]
    ReadBackKey(#[source] rustls::Error),
    /// A proxy's certificate signing request is unusable.
    #[error("the CSR {0}")]
    BadCsr(String),
}

/// A proxy's certificate, signed from its CSR: its identity as the only name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedIdentity {
    /// The leaf, then the CA's signing chain, as PEM.
    pub chain_pem: String,
    /// The leaf's validity.
    pub validity: Validity,
}

/// A certificate issued now would already be due for renewal: the signing certificate
/// ends too soon (or has ended) for a useful one, so issuing again would only repeat it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the CA's signing certificate (tls.crt of the --ca-secret Secret) expires {}: a \
     certificate issued now would already be due for renewal, so none is issued until the \
     CA is replaced; put a CA valid for longer in the Secret (docs/operator.md: rotate a root)",
    timestamp(*.not_after)
)]
pub struct CaEnding {
    /// When the signing certificate expires.
    pub not_after: SystemTime,
}

/// `t` as RFC 3339 (UTC), for messages.
pub fn timestamp(t: SystemTime) -> String {
    k8s_openapi::jiff::Timestamp::try_from(t).map_or_else(|_| "?".to_string(), |t| t.to_string())
}

/// The validity of a leaf of `lifetime` issued at `now` under a signing certificate that
/// expires at `signing_not_after`: from [`CLOCK_SKEW`] before `now`, capped at the
/// signer's end.
pub fn leaf_validity(
    signing_not_after: SystemTime,
    lifetime: Duration,
    now: SystemTime,
) -> Validity {
    Validity {
        not_before: now - CLOCK_SKEW,
        not_after: (now + lifetime).min(signing_not_after),
    }
}

/// The validity of a leaf of `lifetime` issued at `now` when it is worth issuing, or
/// [`CaEnding`] when it would already be due for renewal (the signer ends within half
/// of [`CLOCK_SKEW`], or has ended).
pub fn fresh_leaf(
    signing_not_after: SystemTime,
    lifetime: Duration,
    now: SystemTime,
) -> Result<Validity, CaEnding> {
    let fresh = leaf_validity(signing_not_after, lifetime, now);
    if fresh.renewal_due(now) {
        return Err(CaEnding {
            not_after: signing_not_after,
        });
    }
    Ok(fresh)
}

/// What to issue a leaf certificate for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafRequest {
    /// Subject alternative names: DNS names or IP addresses. The first is also the
    /// common name.
    pub names: Vec<String>,
    /// How long it is valid (capped at the signing certificate's own end).
    pub lifetime: Duration,
}

/// A leaf certificate and its new key.
pub struct IssuedCert {
    /// The leaf, then the CA's signing chain (`tls.crt`), as a server presents it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The same chain as PEM.
    pub chain_pem: String,
    /// The leaf's private key (PKCS#8), generated for it and never reused.
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The same key as PEM.
    pub key_pem: String,
    /// The leaf's validity.
    pub validity: Validity,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert")
            .field("certificates", &self.chain.len())
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// A certificate authority ready to sign.
pub struct Ca {
    material: CaMaterial,
    issuer: Issuer<'static, KeyPair>,
    /// `tls.crt`, signing certificate first.
    signing_chain: Vec<CertificateDer<'static>>,
    signing_validity: Validity,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("signing_validity", &self.signing_validity)
            .field("trust_bundle", &self.material.trust_bundle)
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed root (ECDSA P-256, [`ROOT_LIFETIME`] from `now`), which is also
    /// the whole trust bundle.
    pub fn generate_root(now: SystemTime) -> Result<Self, CaError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "braid");
        dn.push(DnType::CommonName, ROOT_COMMON_NAME);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + ROOT_LIFETIME).into();
        let cert = params.self_signed(&key)?;
        let pem = cert.pem();
        let material = CaMaterial {
            signing_chain_pem: pem.clone(),
            signing_key_pem: key.serialize_pem(),
            trust_bundle: TrustBundle::parse(&pem).map_err(CaError::ReadBackBundle)?,
        };
        let signing_validity = Validity::of(cert.der())?;
        Ok(Self {
            signing_chain: vec![cert.der().clone()],
            issuer: Issuer::new(params, key),
            material,
            signing_validity,
        })
    }

    /// The CA in `material` (a Secret's contents), checked so that every certificate it
    /// issues verifies: `tls.crt` starts with a CA certificate valid at `now`, `tls.key`
    /// is that certificate's key, and a certificate it signs chains to `ca.crt`.
    pub fn from_material(material: CaMaterial, now: SystemTime) -> Result<Self, MaterialError> {
        let signing_chain = certificates(SIGNING_CERT_KEY, &material.signing_chain_pem)?;
        let signing = &signing_chain[0];
        let (_, x509) = X509Certificate::from_der(signing)
            .map_err(|e| MaterialError::new(SIGNING_CERT_KEY, format!("first certificate: {e}")))?;
        let is_ca = x509
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(MaterialError::new(
                SIGNING_CERT_KEY,
                "the first certificate is not a CA certificate (it needs basicConstraints CA:TRUE)",
            ));
        }
        let signing_validity = Validity::of_parsed(&x509);
        if !signing_validity.contains(now) {
            return Err(MaterialError::new(
                SIGNING_CERT_KEY,
                format!(
                    "the first certificate is not valid now (valid from {} to {})",
                    x509.validity().not_before,
                    x509.validity().not_after
                ),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(material.signing_key_pem.as_bytes())
            .map_err(|e| MaterialError::new(SIGNING_KEY_KEY, format!("not a PEM private key: {e}")))
            .and_then(|der| {
                KeyPair::try_from(&der).map_err(|e| {
                    MaterialError::new(
                        SIGNING_KEY_KEY,
                        format!(
                            "{e}: it must be an unencrypted PKCS#8 ECDSA (P-256, P-384), Ed25519 or RSA key \
                             (convert with `openssl pkcs8 -topk8 -nocrypt`)"
                        ),
                    )
                })
            })?;
        if !key_belongs_to(&key, signing).unwrap_or(false) {
            return Err(MaterialError::new(
                SIGNING_KEY_KEY,
                format!("not the key of the first certificate in {SIGNING_CERT_KEY}"),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(signing, key)
            .map_err(|e| MaterialError::new(SIGNING_CERT_KEY, format!("first certificate: {e}")))?;
        let ca = Self {
            signing_chain,
            issuer,
            signing_validity,
            material,
        };
        // What counts is that what it signs verifies with the bundle; check exactly that.
        let probe = ca
            .issue(
                &LeafRequest {
                    names: vec![PROBE_NAME.into()],
                    lifetime: Duration::from_secs(3600),
                },
                now,
            )
            .map_err(|e| MaterialError::new(SIGNING_CERT_KEY, e.to_string()))?;
        verify_server_chain(
            ca.material.trust_bundle.certificates(),
            &probe.chain,
            PROBE_NAME,
            now,
        )
        .map_err(|e| {
            MaterialError::new(
                TRUST_BUNDLE_KEY,
                format!(
                    "what {SIGNING_CERT_KEY} signs does not verify with these roots ({e}); \
                     {TRUST_BUNDLE_KEY} must hold the root {SIGNING_CERT_KEY} chains to, and \
                     {SIGNING_CERT_KEY} any intermediates after the signing certificate"
                ),
            )
        })?;
        Ok(ca)
    }

    /// The material as stored in the Secret.
    pub fn material(&self) -> &CaMaterial {
        &self.material
    }

    /// The roots that verify what this CA issues.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.material.trust_bundle
    }

    /// The signing certificate's validity.
    pub fn signing_validity(&self) -> Validity {
        self.signing_validity
    }

    /// A server certificate for `request`'s names, with a new ECDSA P-256 key, valid
    /// from [`CLOCK_SKEW`] before `now` for `request.lifetime` (but not past the
    /// signing certificate).
    pub fn issue(&self, request: &LeafRequest, now: SystemTime) -> Result<IssuedCert, CaError> {
        let first = request.names.first().ok_or(CaError::NoNames)?;
        let sans = request
            .names
            .iter()
            .map(|n| san(n))
            .collect::<Result<_, _>>()?;
        let mut params = self.leaf_params(first, sans, request.lifetime, now);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let validity = Validity::of(cert.der())?;
        let mut chain_pem = cert.pem();
        chain_pem.push_str(&self.material.signing_chain_pem);
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.signing_chain.iter().cloned());
        Ok(IssuedCert {
            chain,
            chain_pem,
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            key_pem: key.serialize_pem(),
            validity,
        })
    }

    /// A proxy's certificate for `identity` (a `spiffe://` URI) from `csr_pem`, a PEM
    /// certificate signing request whose signature proves the proxy holds the key (ECDSA
    /// P-256; the key never leaves the proxy). What the CSR asks for beyond its key is
    /// ignored: the one name is `identity`, which the caller established, and the
    /// certificate serves both ends of a mutual TLS connection.
    pub fn sign_identity(
        &self,
        csr_pem: &str,
        identity: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<SignedIdentity, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| {
            CaError::BadCsr(format!(
                "does not parse or its signature does not verify ({e}): send a PEM CERTIFICATE REQUEST signed by the proxy's key"
            ))
        })?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(CaError::BadCsr(
                "key is not ECDSA P-256, the one kind of key braid issues for".into(),
            ));
        }
        let uri = identity
            .try_into()
            .map_err(|_| CaError::BadCsr(format!("identity {identity:?} is not a URI")))?;
        let mut params = self.leaf_params(identity, vec![SanType::URI(uri)], lifetime, now);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let signed = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)?;
        let validity = Validity::of(signed.der())?;
        let mut chain_pem = signed.pem();
        chain_pem.push_str(&self.material.signing_chain_pem);
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        Ok(SignedIdentity {
            chain_pem,
            validity,
        })
    }

    /// What every leaf has: `sans`, `common_name`, no CA rights, a digital-signature key
    /// usage, the issuer's key identifier, and a lifetime from [`CLOCK_SKEW`] before
    /// `now`, capped at the signing certificate's end. Proxy certificates signed from a
    /// CSR (a URI SAN with the SPIFFE identity, client and server use) start from here
    /// too.
    fn leaf_params(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        lifetime: Duration,
        now: SystemTime,
    ) -> CertificateParams {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let validity = leaf_validity(self.signing_validity.not_after, lifetime, now);
        params.not_before = validity.not_before.into();
        params.not_after = validity.not_after.into();
        params
    }

    /// Whether a leaf of `lifetime` issued at `now` is worth issuing (see [`fresh_leaf`]).
    pub fn fresh_leaf(&self, lifetime: Duration, now: SystemTime) -> Result<Validity, CaEnding> {
        fresh_leaf(self.signing_validity.not_after, lifetime, now)
    }

    /// Whether `chain` is a server certificate this CA's current signing certificate
    /// issued, valid at `now` for every one of `names`. A certificate signed by another
    /// CA — even one the bundle still trusts, during a rotation — is refused, so that it
    /// is replaced while the bundle still holds both.
    pub fn verify_issued(
        &self,
        chain: &[CertificateDer<'_>],
        names: &[String],
        now: SystemTime,
    ) -> Result<(), NotIssued> {
        let signing = &self.signing_chain[..1];
        let leaf_only = chain.get(..1).unwrap_or_default();
        for name in names {
            verify_server_chain(signing, leaf_only, name, now).map_err(|source| NotIssued {
                name: name.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

/// A certificate the current signing certificate did not issue for a name, or that is
/// not valid for it now.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {source}")]
pub struct NotIssued {
    /// The name it was checked for.
    pub name: String,
    /// Why it is refused.
    #[source]
    pub source: ChainError,
}

fn san(name: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let bad = || CaError::BadName {
        name: name.to_string(),
    };
    if name.is_empty() || rustls_pki_types::DnsName::try_from(name).is_err() {
        return Err(bad());
    }
    Ok(SanType::DnsName(name.try_into().map_err(|_| bad())?))
}

#[cfg(test)]
mod tests;
